//! The `rsp` command line: attribute, inspect and evaluate models.
//!
//! Every failure prints one line on stderr and exits with a non-zero status.

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Ix4;
use rsp::attribution::DEFAULT_LRP_EPSILON;
use rsp::eval::benchmark::{evaluate, model_sensitivity, sensitivity_ticks, EvalOptions};
use rsp::eval::dataset::Scenes;
use rsp::io::npy::{read_npy, write_npy};
use rsp::{Float, HostileClasses, Method, Network, RspError, RspOptions, StartRule, Target};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "rsp", version, about = "Relative Sectional Propagation: bi-polar attribution maps for CNNs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Dtype {
    F32,
    F64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Start {
    /// The single-class start (the released default).
    Single,
    /// The comparative start against hostile classes.
    Comparative,
}

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    /// RSP, single-class start.
    #[value(name = "rsp")]
    Rsp,
    /// RSP, comparative start (hostile: the other classes predicted present).
    #[value(name = "rsp-comparative")]
    RspComparative,
    /// Grad-CAM at the start layer, upsampled.
    #[value(name = "gradcam")]
    Gradcam,
    /// The input gradient of the target logit.
    #[value(name = "gradient")]
    Gradient,
    /// Gradient × input.
    #[value(name = "gradient-x-input")]
    GradientXInput,
    /// LRP with the ε-rule (see --epsilon).
    #[value(name = "lrp-epsilon")]
    LrpEpsilon,
    /// LRP with the α1β0-rule.
    #[value(name = "lrp-alpha1-beta0")]
    LrpAlpha1Beta0,
}

impl MethodArg {
    fn method(self, epsilon: f64) -> Method {
        match self {
            MethodArg::Rsp => Method::Rsp(RspOptions::SINGLE_CLASS),
            MethodArg::RspComparative => Method::Rsp(RspOptions::COMPARATIVE),
            MethodArg::Gradcam => Method::GradCam,
            MethodArg::Gradient => Method::Gradient,
            MethodArg::GradientXInput => Method::GradientXInput,
            MethodArg::LrpEpsilon => Method::LrpEpsilon(epsilon),
            MethodArg::LrpAlpha1Beta0 => Method::LrpAlpha1Beta0,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Attribute the model's decision for the target class(es) of an input batch.
    Attribute {
        /// The model: a safetensors file (layers or ResNet metadata) or an ONNX file.
        #[arg(long)]
        model: PathBuf,
        /// Read the model as a torchvision `state_dict` of this architecture
        /// (vgg11/13/16/19, optionally _bn; resnet18/34/50/101/152).
        #[arg(long, value_name = "NAME")]
        arch: Option<String>,
        /// The input batch (N, C, H, W) as a float32 or float64 .npy file.
        #[arg(long)]
        input: PathBuf,
        /// The target class for every sample, a comma list with one per sample, or `predicted` (each sample's top class).
        #[arg(long)]
        target: String,
        /// Where to write the input relevance (N, C, H, W) as .npy.
        #[arg(long)]
        out: PathBuf,
        /// The float type of the computation and of the output file.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: Dtype,
        /// The start relevance.
        #[arg(long, value_enum, default_value = "single")]
        start: Start,
        /// Hostile classes of the comparative start, as a comma list.
        #[arg(long, conflicts_with = "hostile_top")]
        hostile: Option<String>,
        /// Use the K other classes with the highest logits as hostile classes.
        #[arg(long, value_name = "K")]
        hostile_top: Option<usize>,
        #[command(flatten)]
        limits: Limits,
    },
    /// Score an attribution method on a scenes file: pointing game, hostile
    /// pointing game and mIoU (definitions in data/README.md).
    Evaluate {
        /// The model file.
        #[arg(long)]
        model: PathBuf,
        /// Read the model as a torchvision `state_dict` of this architecture
        /// (vgg11/13/16/19, optionally _bn; resnet18/34/50/101/152).
        #[arg(long, value_name = "NAME")]
        arch: Option<String>,
        /// The scenes file (safetensors: input, labels, boxes, masks).
        #[arg(long)]
        scenes: PathBuf,
        /// The attribution method.
        #[arg(long, value_enum)]
        method: MethodArg,
        /// Evaluate only the first N scenes.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// The float type of the computation.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: Dtype,
        /// End the output with one line of JSON.
        #[arg(long)]
        json: bool,
        /// ε of lrp-epsilon.
        #[arg(long, default_value_t = DEFAULT_LRP_EPSILON)]
        epsilon: f64,
        /// Also measure model sensitivity (cascading randomisation from the top)
        /// and print the Spearman correlation after each step.
        #[arg(long)]
        sensitivity: bool,
        /// Seed of the weight randomisation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        limits: Limits,
    },
    /// Print the model's layers, their output shapes and the start layer.
    Info {
        /// The model file.
        #[arg(long)]
        model: PathBuf,
        /// Read the model as a torchvision `state_dict` of this architecture
        /// (vgg11/13/16/19, optionally _bn; resnet18/34/50/101/152).
        #[arg(long, value_name = "NAME")]
        arch: Option<String>,
        /// The per-sample input shape C,H,W (default: the one the file declares).
        #[arg(long)]
        input_shape: Option<String>,
    },
}

/// The limits of the pre-flight check (see docs/errors-and-limits.md).
#[derive(clap::Args, Clone)]
struct Limits {
    /// Memory budget of a call, e.g. 8G, 512M or bytes (default: 3/4 of the
    /// smallest of physical memory, the address-space limit and the cgroup limit).
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
    /// Work bound per sample, in multiply-add equivalents (default 5e11).
    #[arg(long, value_name = "OPS")]
    max_work: Option<String>,
}

impl Limits {
    fn apply<T: Float>(&self, net: &mut Network<T>) -> Result<(), RspError> {
        if let Some(text) = &self.max_memory {
            net.set_memory_budget(Some(rsp::budget::parse_size(text)?));
        }
        if let Some(text) = &self.max_work {
            let work = text.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 1.0).ok_or_else(|| {
                RspError::InvalidArgument(format!(
                    "--max-work must be a number of operations ≥ 1 (e.g. 5e11), got `{}`",
                    text.chars().take(40).collect::<String>()
                ))
            })?;
            net.set_work_bound(Some(work.min(u64::MAX as f64) as u64));
        }
        Ok(())
    }
}

fn parse_list(text: &str, what: &str) -> Result<Vec<usize>, RspError> {
    text.split(',')
        .map(|t| {
            t.trim().parse::<usize>().map_err(|_| {
                RspError::InvalidArgument(format!("{what} must be a class index or a comma list of them, got `{text}`"))
            })
        })
        .collect()
}

fn load_model<T: Float>(path: &Path, arch: Option<&str>) -> Result<Network<T>, RspError> {
    match arch {
        None => Network::<T>::load(path),
        Some(_) if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) => Err(RspError::InvalidArgument(
            "--arch names the architecture of a safetensors state_dict, not of an ONNX file".into(),
        )),
        Some(arch) => Network::<T>::load_torchvision(path, arch),
    }
}

#[allow(clippy::too_many_arguments)]
fn attribute<T: Float>(
    model: &Path,
    arch: Option<&str>,
    input: &Path,
    target: &str,
    out: &Path,
    start: Start,
    hostile: Option<&str>,
    hostile_top: Option<usize>,
    limits: &Limits,
) -> Result<(), RspError> {
    // Before any work: writing the result must never replace an input.
    rsp::io::atomic::check_not_an_input(out, &[model, input], "--out")?;
    let mut net = load_model::<T>(model, arch)?;
    limits.apply(&mut net)?;
    let x = read_npy::<T>(input)?;
    let shape = x.shape().to_vec();
    let x = x.into_dimensionality::<Ix4>().map_err(|_| RspError::Shape {
        context: input.display().to_string(),
        expected: "an (N, C, H, W) array".into(),
        found: shape,
    })?;
    let target = match target.trim() {
        "predicted" => Target::Predicted,
        list => match parse_list(list, "--target")? {
            one if one.len() == 1 => Target::Single(one[0]),
            per_sample => Target::PerSample(per_sample),
        },
    };
    let start = match (start, hostile, hostile_top) {
        (Start::Single, None, None) => StartRule::SingleClass,
        (Start::Single, _, _) => {
            return Err(RspError::InvalidArgument("--hostile and --hostile-top need --start comparative".into()));
        }
        (Start::Comparative, Some(list), _) => {
            StartRule::Comparative(HostileClasses::Explicit(parse_list(list, "--hostile")?))
        }
        (Start::Comparative, None, Some(k)) => StartRule::Comparative(HostileClasses::TopK(k)),
        (Start::Comparative, None, None) => StartRule::Comparative(HostileClasses::PredictedPresent),
    };
    let e = net.explain(&x, target, Method::Rsp(RspOptions { start, ..Default::default() }))?;
    let relevance = e.relevance.ok_or_else(|| RspError::InvalidArgument("RSP returned no input relevance".into()))?;
    write_npy(out, &relevance.into_dyn())
}

fn info<T: Float>(model: &Path, arch: Option<&str>, input_shape: Option<&str>) -> Result<(), RspError> {
    let net = load_model::<T>(model, arch)?;
    let shape = match input_shape {
        Some(text) => parse_list(text, "--input-shape")?,
        None => net.input_shape().map(<[usize]>::to_vec).ok_or_else(|| {
            RspError::InvalidArgument("the model declares no input shape; pass --input-shape C,H,W".into())
        })?,
    };
    let shapes = net.check(&shape)?;
    println!("model: {}", model.display());
    println!("input: {shape:?}");
    for (k, (node, out)) in net.nodes().iter().zip(&shapes).enumerate() {
        println!("#{k:<3} {:<70} -> {out:?}", node.describe());
    }
    match net.start_layer_setting().map(Ok).unwrap_or_else(|| net.default_start_layer()) {
        Ok(s) => println!("start layer: #{s} (output {:?})", shapes[s]),
        Err(e) => println!("start layer: none found ({e})"),
    }
    if let Some(names) = net.class_names() {
        println!("classes: {}", names.join(", "));
    }
    Ok(())
}

fn progress_bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} scenes, {elapsed} elapsed, ETA {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

struct EvaluateArgs {
    model: PathBuf,
    arch: Option<String>,
    scenes: PathBuf,
    method: Method,
    limit: Option<usize>,
    json: bool,
    sensitivity: bool,
    seed: u64,
    limits: Limits,
}

fn evaluate_command<T: Float>(args: &EvaluateArgs) -> Result<(), RspError> {
    if args.limit == Some(0) {
        return Err(RspError::InvalidArgument("--limit must be at least 1".into()));
    }
    let mut net = load_model::<T>(&args.model, args.arch.as_deref())?;
    args.limits.apply(&mut net)?;
    let scenes = Scenes::load(&args.scenes)?;
    let count = args.limit.map_or(scenes.len(), |l| l.min(scenes.len()));
    let method = &args.method;
    let started = std::time::Instant::now();
    let bar = progress_bar(count, &format!("{method}"));
    let tick = || bar.inc(1);
    let options = EvalOptions { limit: args.limit, progress: Some(&tick) };
    let report = evaluate(&net, &scenes, method, &options)?;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    println!("model: {}", args.model.display());
    println!(
        "scenes: {} ({} of {}), {} pairs, {} in scenes with ≥ 2 objects",
        args.scenes.display(),
        count,
        scenes.len(),
        report.pairs,
        report.hostile_pairs
    );
    println!("method: {method} ({})", T::NAME);
    println!("pointing game:         {:.4}", report.pointing_game);
    if report.hostile_pairs == 0 {
        println!("hostile pointing game: n/a (no scene with ≥ 2 objects)");
    } else {
        println!("hostile pointing game: {:.4}", report.hostile_pointing_game);
    }
    println!("mIoU:                  {:.4}", report.miou);
    println!("time: {elapsed:.2} s");
    if args.sensitivity {
        let ticks = sensitivity_ticks(&net, &scenes, args.limit);
        let bar = progress_bar(ticks, &format!("{method} sensitivity"));
        let tick = || bar.inc(1);
        let options = EvalOptions { limit: args.limit, progress: Some(&tick) };
        let steps = model_sensitivity(&net, &scenes, method, args.seed, &options)?;
        bar.finish_and_clear();
        println!("model sensitivity (cascading randomisation from the top, seed {}): mean Spearman of |h|", args.seed);
        for (i, step) in steps.iter().enumerate() {
            println!("  step {:>2}: randomised up to #{:<3} {:<60} {:.4}", i + 1, step.node, step.layer, step.spearman);
        }
    }
    if args.json {
        println!("{}", report.to_json());
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), RspError> {
    match cli.command {
        Command::Attribute { model, arch, input, target, out, dtype, start, hostile, hostile_top, limits } => {
            let (arch, hostile) = (arch.as_deref(), hostile.as_deref());
            match dtype {
                Dtype::F32 => {
                    attribute::<f32>(&model, arch, &input, &target, &out, start, hostile, hostile_top, &limits)
                }
                Dtype::F64 => {
                    attribute::<f64>(&model, arch, &input, &target, &out, start, hostile, hostile_top, &limits)
                }
            }
        }
        Command::Evaluate { model, arch, scenes, method, limit, dtype, json, epsilon, sensitivity, seed, limits } => {
            if !(epsilon.is_finite() && epsilon >= 0.0) {
                return Err(RspError::InvalidArgument(format!("--epsilon must be a finite number ≥ 0, got {epsilon}")));
            }
            let method = method.method(epsilon);
            let args = EvaluateArgs { model, arch, scenes, method, limit, json, sensitivity, seed, limits };
            match dtype {
                Dtype::F32 => evaluate_command::<f32>(&args),
                Dtype::F64 => evaluate_command::<f64>(&args),
            }
        }
        Command::Info { model, arch, input_shape } => info::<f32>(&model, arch.as_deref(), input_shape.as_deref()),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // clap's first line would be the program's description: say what is missing.
            eprintln!("error: a subcommand is required; see `rsp --help`");
            return ExitCode::from(2);
        }
        Err(e) => {
            // One line: clap's first line (it names the problem), without the usage block.
            let text = e.to_string();
            eprintln!("{}", text.lines().next().unwrap_or("invalid arguments").trim());
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

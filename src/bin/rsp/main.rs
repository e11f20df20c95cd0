//! The `rsp` command line: attribute, inspect and evaluate models.
//!
//! Every failure prints one line on stderr and exits with a non-zero status.

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Ix4;
use rsp::attribution::DEFAULT_LRP_EPSILON;
use rsp::eval::benchmark::{evaluate, model_sensitivity, sensitivity_ticks, EvalOptions};
use rsp::eval::dataset::Scenes;
use rsp::eval::faithfulness::FaithfulnessOptions;
use rsp::io::npy::{read_npy, write_npy};
use rsp::shard::Shard;
use rsp::{Float, HostileClasses, Method, Network, RspError, RspOptions, StartRule, Target};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod folder;
mod merge;

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
    /// RAP (Relative Attributing Propagation) as released, from the one-hot target at the logits.
    #[value(name = "rap")]
    Rap,
    /// Contrastive LRP (CLRP1): the target against all other classes.
    #[value(name = "clrp")]
    Clrp,
    /// Softmax-gradient LRP.
    #[value(name = "sglrp")]
    Sglrp,
    /// zennit's EpsilonPlusFlat LRP composite (batch norm folded first).
    #[value(name = "epsilon-plus-flat")]
    EpsilonPlusFlat,
    /// zennit's EpsilonGammaBox LRP composite (needs --low and --high).
    #[value(name = "epsilon-gamma-box")]
    EpsilonGammaBox,
}

impl MethodArg {
    /// The method, with `bounds` from [`zbox_bounds`] (given for epsilon-gamma-box).
    fn method(self, epsilon: f64, bounds: Option<(f64, f64)>) -> Method {
        match self {
            MethodArg::Rsp => Method::Rsp(RspOptions::SINGLE_CLASS),
            MethodArg::RspComparative => Method::Rsp(RspOptions::COMPARATIVE),
            MethodArg::Gradcam => Method::GradCam,
            MethodArg::Gradient => Method::Gradient,
            MethodArg::GradientXInput => Method::GradientXInput,
            MethodArg::LrpEpsilon => Method::LrpEpsilon(epsilon),
            MethodArg::LrpAlpha1Beta0 => Method::LrpAlpha1Beta0,
            MethodArg::Rap => Method::Rap,
            MethodArg::Clrp => Method::Clrp,
            MethodArg::Sglrp => Method::Sglrp,
            MethodArg::EpsilonPlusFlat => Method::EpsilonPlusFlat,
            MethodArg::EpsilonGammaBox => {
                let (low, high) = bounds.unwrap_or((f64::NAN, f64::NAN)); // refused by the method's own check
                Method::EpsilonGammaBox { low, high }
            }
        }
    }
}

/// `--low`/`--high`: required by epsilon-gamma-box (the input's bounds have
/// no safe default), refused with any other method.
fn zbox_bounds(method: MethodArg, low: Option<f64>, high: Option<f64>) -> Result<Option<(f64, f64)>, RspError> {
    match (method, low, high) {
        (MethodArg::EpsilonGammaBox, Some(low), Some(high)) => {
            if !(low.is_finite() && high.is_finite() && low < high) {
                return Err(RspError::InvalidArgument(format!(
                    "--low and --high must be finite with --low < --high, got {low} and {high}"
                )));
            }
            Ok(Some((low, high)))
        }
        (MethodArg::EpsilonGammaBox, _, _) => Err(RspError::InvalidArgument(
            "--method epsilon-gamma-box needs --low and --high: the lowest and highest value the (normalised) input \
             can take"
                .into(),
        )),
        (_, None, None) => Ok(None),
        _ => Err(RspError::InvalidArgument("--low and --high belong to --method epsilon-gamma-box".into())),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Attribute the model's decision for the target class(es) of an input
    /// batch (--input, --out), or of every image of a folder or list
    /// (--images, --out-dir: relevance, figure and a manifest per image;
    /// resumable; see docs/scaling.md).
    Attribute {
        /// The model: a safetensors file (layers or ResNet metadata) or an ONNX file.
        #[arg(long)]
        model: PathBuf,
        /// Read the model as a torchvision `state_dict` of this architecture
        /// (vgg11/13/16/19, optionally _bn; resnet18/34/50/101/152).
        #[arg(long, value_name = "NAME")]
        arch: Option<String>,
        /// The input batch (N, C, H, W) as a float32 or float64 .npy file.
        #[arg(long, required_unless_present = "images", conflicts_with = "images")]
        input: Option<PathBuf>,
        /// A folder (searched recursively) or a list file (one path per line)
        /// of PNG, JPEG or preprocessed .npy inputs.
        #[arg(long, value_name = "DIR_OR_LIST", requires = "out_dir")]
        images: Option<PathBuf>,
        /// The target class for every sample, a comma list with one per sample, or `predicted` (each sample's top class).
        #[arg(long)]
        target: String,
        /// Where to write the input relevance (N, C, H, W) as .npy.
        #[arg(long, required_unless_present = "images", conflicts_with = "images")]
        out: Option<PathBuf>,
        /// With --images: the folder of the outputs and the manifest.
        #[arg(long, value_name = "DIR", conflicts_with = "out")]
        out_dir: Option<PathBuf>,
        /// The attribution method (RSP by default; others write their map).
        #[arg(long, value_enum, default_value = "rsp")]
        method: MethodArg,
        /// ε of lrp-epsilon.
        #[arg(long, default_value_t = DEFAULT_LRP_EPSILON)]
        epsilon: f64,
        /// epsilon-gamma-box: the lowest value the (normalised) input can take.
        #[arg(long, allow_negative_numbers = true)]
        low: Option<f64>,
        /// epsilon-gamma-box: the highest value the (normalised) input can take.
        #[arg(long, allow_negative_numbers = true)]
        high: Option<f64>,
        /// The float type of the computation and of the output file.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: Dtype,
        /// RSP's start relevance (default: single, or comparative for --method rsp-comparative).
        #[arg(long, value_enum)]
        start: Option<Start>,
        /// Hostile classes of the comparative start, as a comma list.
        #[arg(long, conflicts_with = "hostile_top")]
        hostile: Option<String>,
        /// Use the K other classes with the highest logits as hostile classes.
        #[arg(long, value_name = "K")]
        hostile_top: Option<usize>,
        /// With --images: images per batch (memory grows with it, not with the folder).
        #[arg(long, default_value_t = 8, requires = "images")]
        batch: usize,
        /// With --images: resize images to HxW (default: the model's declared input size).
        #[arg(long, value_name = "HxW", requires = "images")]
        size: Option<String>,
        /// With --images: `imagenet`, `none`, or MEAN,MEAN,MEAN/STD,STD,STD
        /// (default: the model's declared normalisation).
        #[arg(long, value_name = "STATS", requires = "images")]
        normalize: Option<String>,
        /// With --images: run only shard I of N (1-based); default: the
        /// scheduler's (Slurm array, Kubernetes indexed Job), else all.
        #[arg(long, value_name = "I/N", requires = "images")]
        shard: Option<String>,
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
        /// epsilon-gamma-box: the lowest value the (normalised) input can take.
        #[arg(long, allow_negative_numbers = true)]
        low: Option<f64>,
        /// epsilon-gamma-box: the highest value the (normalised) input can take.
        #[arg(long, allow_negative_numbers = true)]
        high: Option<f64>,
        /// Also measure model sensitivity (cascading randomisation from the top)
        /// and print the Spearman correlation after each step.
        #[arg(long)]
        sensitivity: bool,
        /// Seed of the weight randomisation and of the random-logit test's classes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also compute the faithfulness measures (docs/evaluation.md): pixel
        /// flipping (deletion, insertion, LeRF), positive mass in the target's
        /// mask, hostile mass on the other objects, random-logit test. Costs
        /// about 100 forward passes per pair.
        #[arg(long)]
        faithfulness: bool,
        /// Pixels replaced per pixel-flipping step (default: 1/32 of the image's pixels).
        #[arg(long, value_name = "PIXELS", requires = "faithfulness")]
        flip_step: Option<usize>,
        /// The value (normalised input units) that replaces a flipped pixel in every channel.
        #[arg(long, value_name = "V", default_value_t = 0.0, allow_negative_numbers = true, requires = "faithfulness")]
        flip_baseline: f64,
        /// Evaluate only shard I of N (1-based) of the scenes; --json then
        /// prints what `rsp merge` needs. Default: the scheduler's (Slurm
        /// array, Kubernetes indexed Job), else all.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        #[command(flatten)]
        limits: Limits,
    },
    /// Combine the outputs of sharded runs: `rsp evaluate --shard I/N --json`
    /// outputs into the unsharded report, or `rsp attribute --images` shard
    /// manifests into one manifest.
    Merge {
        /// The shards' outputs (each shard exactly once).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// End an evaluation's report with its one-line JSON.
        #[arg(long)]
        json: bool,
        /// Write the result to this file (atomically) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
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

/// The method `--method`, `--start`, `--hostile`, `--hostile-top` and
/// `--epsilon` ask for, with its options as the manifest records them.
fn method_of(
    method: MethodArg,
    epsilon: f64,
    bounds: Option<(f64, f64)>,
    start: Option<Start>,
    hostile: Option<&str>,
    hostile_top: Option<usize>,
) -> Result<(Method, serde_json::Value), RspError> {
    check_epsilon(epsilon)?;
    let start = match (method, start) {
        (MethodArg::Rsp, s) => s.unwrap_or(Start::Single),
        (MethodArg::RspComparative, None | Some(Start::Comparative)) => Start::Comparative,
        (MethodArg::RspComparative, Some(Start::Single)) => {
            return Err(RspError::InvalidArgument("--method rsp-comparative cannot take --start single".into()));
        }
        (_, None) if hostile.is_none() && hostile_top.is_none() => {
            let recorded = match (method, bounds) {
                (MethodArg::LrpEpsilon, _) => serde_json::json!({ "epsilon": epsilon }),
                (_, Some((low, high))) => serde_json::json!({ "low": low, "high": high }),
                _ => serde_json::json!({}),
            };
            return Ok((method.method(epsilon, bounds), recorded));
        }
        _ => {
            return Err(RspError::InvalidArgument(
                "--start, --hostile and --hostile-top belong to the RSP methods".into(),
            ));
        }
    };
    let (start, recorded) = match (start, hostile, hostile_top) {
        (Start::Single, None, None) => (StartRule::SingleClass, serde_json::json!({ "start": "single" })),
        (Start::Single, _, _) => {
            return Err(RspError::InvalidArgument("--hostile and --hostile-top need --start comparative".into()));
        }
        (Start::Comparative, Some(list), _) => {
            let classes = parse_list(list, "--hostile")?;
            let recorded = serde_json::json!({ "start": "comparative", "hostile": classes });
            (StartRule::Comparative(HostileClasses::Explicit(classes)), recorded)
        }
        (Start::Comparative, None, Some(k)) => (
            StartRule::Comparative(HostileClasses::TopK(k)),
            serde_json::json!({ "start": "comparative", "hostile_top": k }),
        ),
        (Start::Comparative, None, None) => (
            StartRule::Comparative(HostileClasses::PredictedPresent),
            serde_json::json!({ "start": "comparative", "hostile": "predicted present" }),
        ),
    };
    Ok((Method::Rsp(RspOptions { start, ..Default::default() }), recorded))
}

fn check_epsilon(epsilon: f64) -> Result<(), RspError> {
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(RspError::InvalidArgument(format!("--epsilon must be a finite number ≥ 0, got {epsilon}")));
    }
    Ok(())
}

/// `--input` mode: one .npy batch in, its relevance (or, for Grad-CAM, its maps) out.
fn attribute<T: Float>(
    model: &Path,
    arch: Option<&str>,
    input: &Path,
    target: &str,
    out: &Path,
    method: &Method,
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
    let e = net.explain(&x, target, method)?;
    match e.relevance {
        Some(relevance) => write_npy(out, &relevance.into_dyn()),
        None => write_npy(out, &e.heatmaps.into_dyn()),
    }
}

/// `--images` mode: the target is one class or `predicted`.
fn folder_target(text: &str) -> Result<Option<usize>, RspError> {
    match text.trim() {
        "predicted" => Ok(None),
        t => match parse_list(t, "--target")?.as_slice() {
            [one] => Ok(Some(*one)),
            _ => Err(RspError::InvalidArgument("with --images, --target is one class or `predicted`".into())),
        },
    }
}

fn parse_size(text: &str) -> Result<(usize, usize), RspError> {
    let bad =
        || RspError::InvalidArgument(format!("--size must be HxW with positive numbers (e.g. 224x224), got `{text}`"));
    let (h, w) = text.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    let (h, w) = (h.trim().parse::<usize>().map_err(|_| bad())?, w.trim().parse::<usize>().map_err(|_| bad())?);
    if h == 0 || w == 0 || h > rsp::limits::MAX_SPATIAL || w > rsp::limits::MAX_SPATIAL {
        return Err(bad());
    }
    Ok((h, w))
}

fn parse_normalize(text: &str) -> Result<rsp::network::InputNormalization, RspError> {
    use rsp::network::InputNormalization;
    let norm = match text.trim() {
        "imagenet" => InputNormalization { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] },
        "none" => InputNormalization { mean: vec![0.0; 3], std: vec![1.0; 3] },
        stats => {
            let bad = || {
                RspError::InvalidArgument(format!(
                    "--normalize must be imagenet, none or MEAN,MEAN,MEAN/STD,STD,STD, got `{}`",
                    stats.chars().take(60).collect::<String>()
                ))
            };
            let (mean, std) = stats.split_once('/').ok_or_else(bad)?;
            let list = |t: &str| {
                t.split(',').map(|v| v.trim().parse::<f32>().map_err(|_| bad())).collect::<Result<Vec<_>, _>>()
            };
            InputNormalization { mean: list(mean)?, std: list(std)? }
        }
    };
    norm.validate()?;
    Ok(norm)
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

fn progress_bar(total: usize, what: &str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    let template = format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{elapsed}} elapsed, ETA {{eta}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
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
    shard: Shard,
    faithfulness: Option<FaithfulnessOptions>,
    /// `--method` as the CLI names it, and its options, for the shard output.
    method_name: String,
    epsilon: f64,
    limits: Limits,
}

fn evaluate_command<T: Float>(args: &EvaluateArgs) -> Result<(), RspError> {
    if args.limit == Some(0) {
        return Err(RspError::InvalidArgument("--limit must be at least 1".into()));
    }
    let shard = args.shard;
    if args.sensitivity && !shard.is_whole() {
        return Err(RspError::InvalidArgument("--sensitivity runs on the whole set of scenes, not on a shard".into()));
    }
    let mut net = load_model::<T>(&args.model, args.arch.as_deref())?;
    args.limits.apply(&mut net)?;
    let scenes = Scenes::load(&args.scenes)?;
    let count = args.limit.map_or(scenes.len(), |l| l.min(scenes.len()));
    let method = &args.method;
    let started = std::time::Instant::now();
    let bar = progress_bar(shard.share_of(count), &format!("{method}"), "scenes");
    let tick = || bar.inc(1);
    let options = EvalOptions { limit: args.limit, progress: Some(&tick), shard, faithfulness: args.faithfulness };
    let pairs =
        if shard.is_whole() { None } else { Some(rsp::eval::benchmark::score_pairs(&net, &scenes, method, &options)?) };
    let report = match &pairs {
        None => evaluate(&net, &scenes, method, &options)?,
        Some(p) => rsp::eval::benchmark::Report::from_pairs(method.to_string(), shard.share_of(count), p),
    };
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    println!("model: {}", args.model.display());
    let selection = if shard.is_whole() { String::new() } else { format!(", shard {shard}: {} scenes", report.scenes) };
    println!(
        "scenes: {} ({} of {}{selection}), {} pairs, {} in scenes with ≥ 2 objects",
        args.scenes.display(),
        count,
        scenes.len(),
        report.pairs,
        report.hostile_pairs
    );
    println!("method: {method} ({})", T::NAME);
    if report.pairs == 0 {
        println!("pointing game:         n/a (no objects in this shard)");
    } else {
        println!("pointing game:         {:.4}", report.pointing_game);
    }
    if report.hostile_pairs == 0 {
        println!("hostile pointing game: n/a (no scene with ≥ 2 objects)");
    } else {
        println!("hostile pointing game: {:.4}", report.hostile_pointing_game);
    }
    println!("mIoU:                  {:.4}", report.miou);
    if let Some(f) = &report.faithfulness {
        f.lines().iter().for_each(|l| println!("{l}"));
    }
    println!("time: {elapsed:.2} s");
    if args.sensitivity {
        let ticks = sensitivity_ticks(&net, &scenes, args.limit);
        let bar = progress_bar(ticks, &format!("{method} sensitivity"), "steps");
        let tick = || bar.inc(1);
        let options = EvalOptions { limit: args.limit, progress: Some(&tick), shard, faithfulness: None };
        let steps = model_sensitivity(&net, &scenes, method, args.seed, &options)?;
        bar.finish_and_clear();
        println!("model sensitivity (cascading randomisation from the top, seed {}): mean Spearman of |h|", args.seed);
        for (i, step) in steps.iter().enumerate() {
            println!("  step {:>2}: randomised up to #{:<3} {:<60} {:.4}", i + 1, step.node, step.layer, step.spearman);
        }
    }
    match (&pairs, args.json) {
        (Some(pairs), true) => {
            let mut options = serde_json::json!({ "epsilon": args.epsilon, "limit": args.limit, "arch": args.arch });
            if let Method::EpsilonGammaBox { low, high } = args.method {
                options["low"] = low.into();
                options["high"] = high.into();
            }
            // What `rsp merge` needs: every pair's outcome and what identifies the run.
            let mut line = serde_json::json!({
                "kind": "evaluate-shard",
                "shard": shard.to_string(),
                "model_sha256": folder::sha256_file(&args.model)?,
                "scenes_sha256": folder::sha256_file(&args.scenes)?,
                "method": args.method_name,
                "dtype": T::NAME,
                "options": options,
                "scenes_total": count,
                "scenes": report.scenes,
                "pair_scores": pairs,
                "pointing_game": report.pointing_game,
                "hostile_pointing_game": report.hostile_pointing_game,
                "miou": report.miou,
                "pairs": report.pairs,
            });
            if let Some(options) = &args.faithfulness {
                line["faithfulness_options"] = serde_json::json!(options);
            }
            if let Some(Ok(serde_json::Value::Object(keys))) = report.faithfulness.as_ref().map(serde_json::to_value) {
                keys.into_iter().for_each(|(k, v)| line[k] = v);
            }
            println!("{line}");
        }
        (None, true) => println!("{}", report.to_json()),
        (_, false) => {}
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), RspError> {
    match cli.command {
        Command::Attribute {
            model,
            arch,
            input,
            images,
            target,
            out,
            out_dir,
            method,
            epsilon,
            low,
            high,
            dtype,
            start,
            hostile,
            hostile_top,
            batch,
            size,
            normalize,
            shard,
            limits,
        } => {
            let method_name = method_name(method);
            let bounds = zbox_bounds(method, low, high)?;
            let (method, method_options) = method_of(method, epsilon, bounds, start, hostile.as_deref(), hostile_top)?;
            match (input, out, images, out_dir) {
                (Some(input), Some(out), None, None) => {
                    let arch = arch.as_deref();
                    match dtype {
                        Dtype::F32 => attribute::<f32>(&model, arch, &input, &target, &out, &method, &limits),
                        Dtype::F64 => attribute::<f64>(&model, arch, &input, &target, &out, &method, &limits),
                    }
                }
                (None, None, Some(images), Some(out_dir)) => {
                    let args = folder::FolderArgs {
                        model,
                        arch,
                        images,
                        out_dir,
                        method,
                        method_name,
                        target: folder_target(&target)?,
                        batch,
                        size: size.as_deref().map(parse_size).transpose()?,
                        normalize: normalize.as_deref().map(parse_normalize).transpose()?,
                        method_options,
                        shard: Shard::resolve(shard.as_deref())?,
                        limits,
                    };
                    match dtype {
                        Dtype::F32 => folder::run::<f32>(&args),
                        Dtype::F64 => folder::run::<f64>(&args),
                    }
                }
                _ => Err(RspError::InvalidArgument(
                    "pass either --input and --out (one .npy batch) or --images and --out-dir (a folder or list)"
                        .into(),
                )),
            }
        }
        Command::Evaluate {
            model,
            arch,
            scenes,
            method,
            limit,
            dtype,
            json,
            epsilon,
            low,
            high,
            sensitivity,
            seed,
            faithfulness,
            flip_step,
            flip_baseline,
            shard,
            limits,
        } => {
            check_epsilon(epsilon)?;
            let faithfulness =
                faithfulness.then_some(FaithfulnessOptions { step: flip_step, baseline: flip_baseline, seed });
            if let Some(f) = &faithfulness {
                f.step_for(1)?;
            }
            let method_name = method_name(method);
            let bounds = zbox_bounds(method, low, high)?;
            let method = method.method(epsilon, bounds);
            let shard = Shard::resolve(shard.as_deref())?;
            let args = EvaluateArgs {
                model,
                arch,
                scenes,
                method,
                limit,
                json,
                sensitivity,
                seed,
                shard,
                faithfulness,
                method_name,
                epsilon,
                limits,
            };
            match dtype {
                Dtype::F32 => evaluate_command::<f32>(&args),
                Dtype::F64 => evaluate_command::<f64>(&args),
            }
        }
        Command::Merge { files, json, out } => merge::run(&files, json, out.as_deref()),
        Command::Info { model, arch, input_shape } => info::<f32>(&model, arch.as_deref(), input_shape.as_deref()),
    }
}

/// The name the CLI gives a method (`--method`'s value).
fn method_name(method: MethodArg) -> String {
    method.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
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
            // One line: clap's message up to its usage block, its lines joined
            // (a missing argument's name is on the second line).
            let text = e.to_string();
            let message: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .collect();
            let message = if message.is_empty() { "error: invalid arguments".to_string() } else { message.join(" ") };
            eprintln!("{message}");
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

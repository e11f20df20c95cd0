//! The `rsp` command line: attribute, inspect and evaluate models.
//!
//! Every failure prints one line on stderr and exits with a non-zero status.

use clap::{Parser, Subcommand, ValueEnum};
use ndarray::Ix4;
use rsp::io::npy::{read_npy, write_npy};
use rsp::{ExplainOptions, Float, HostileClasses, Network, RspError, StartRule, Target};
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

#[derive(Subcommand)]
enum Command {
    /// Attribute the model's decision for the target class(es) of an input batch.
    Attribute {
        /// The model: a safetensors file (layers or ResNet metadata) or an ONNX file.
        #[arg(long)]
        model: PathBuf,
        /// The input batch (N, C, H, W) as a float32 or float64 .npy file.
        #[arg(long)]
        input: PathBuf,
        /// The target class for every sample, or a comma list with one per sample.
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
    },
    /// Print the model's layers, their output shapes and the start layer.
    Info {
        /// The model file.
        #[arg(long)]
        model: PathBuf,
        /// The per-sample input shape C,H,W (default: the one the file declares).
        #[arg(long)]
        input_shape: Option<String>,
    },
}

fn parse_list(text: &str, what: &str) -> Result<Vec<usize>, RspError> {
    text.split(',')
        .map(|t| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| RspError::InvalidArgument(format!("{what} must be a class index or a comma list of them, got `{text}`")))
        })
        .collect()
}

fn load_model<T: Float>(path: &Path) -> Result<Network<T>, RspError> {
    Network::<T>::load(path)
}

#[allow(clippy::too_many_arguments)]
fn attribute<T: Float>(
    model: &Path,
    input: &Path,
    target: &str,
    out: &Path,
    start: Start,
    hostile: Option<&str>,
    hostile_top: Option<usize>,
) -> Result<(), RspError> {
    let net = load_model::<T>(model)?;
    let x = read_npy::<T>(input)?;
    let shape = x.shape().to_vec();
    let x = x.into_dimensionality::<Ix4>().map_err(|_| RspError::Shape {
        context: input.display().to_string(),
        expected: "an (N, C, H, W) array".into(),
        found: shape,
    })?;
    let targets = parse_list(target, "--target")?;
    let target = if targets.len() == 1 { Target::Single(targets[0]) } else { Target::PerSample(targets) };
    let start = match (start, hostile, hostile_top) {
        (Start::Single, None, None) => StartRule::SingleClass,
        (Start::Single, _, _) => {
            return Err(RspError::InvalidArgument("--hostile and --hostile-top need --start comparative".into()));
        }
        (Start::Comparative, Some(list), _) => StartRule::Comparative(HostileClasses::Explicit(parse_list(list, "--hostile")?)),
        (Start::Comparative, None, Some(k)) => StartRule::Comparative(HostileClasses::TopK(k)),
        (Start::Comparative, None, None) => StartRule::Comparative(HostileClasses::PredictedPresent),
    };
    let e = net.explain(x.view(), target, &ExplainOptions { start, ..Default::default() })?;
    write_npy(out, &e.relevance.into_dyn())
}

fn info<T: Float>(model: &Path, input_shape: Option<&str>) -> Result<(), RspError> {
    let net = load_model::<T>(model)?;
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

fn run(cli: Cli) -> Result<(), RspError> {
    match cli.command {
        Command::Attribute { model, input, target, out, dtype, start, hostile, hostile_top } => match dtype {
            Dtype::F32 => attribute::<f32>(&model, &input, &target, &out, start, hostile.as_deref(), hostile_top),
            Dtype::F64 => attribute::<f64>(&model, &input, &target, &out, start, hostile.as_deref(), hostile_top),
        },
        Command::Info { model, input_shape } => info::<f32>(&model, input_shape.as_deref()),
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

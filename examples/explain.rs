//! Explain a CNN's decisions with RSP and draw the maps.
//!
//! With no arguments it explains the embedded digits model on the first six
//! public scenes and writes one figure per scene into `rsp-output/`:
//!
//! ```text
//! cargo run --release --example explain
//! ```
//!
//! Each figure shows the scene and, for every digit in it, the RSP map with the
//! comparative start (hostile classes: the other digits the model predicts),
//! the single-class RSP map and Grad-CAM (red: evidence for the digit, blue:
//! hostile evidence, white: none).
//!
//! With arguments it explains your own image (and model):
//!
//! ```text
//! cargo run --release --example explain -- --image cat.png [--model resnet.onnx] [--target 281]
//!     [--method rsp|rsp-comparative|gradcam|gradient|gradient-x-input|lrp-epsilon|lrp-alpha1-beta0|rap|clrp|sglrp]
//!     [--normalization imagenet|scenes|none] [--size H,W] [--out figure.png]
//! ```
//!
//! `--model` defaults to the embedded digits model, `--target` to the class
//! with the highest logit, `--method` to `rsp`, `--normalization` to `scenes`
//! for the embedded model and `imagenet` otherwise, `--size` to the model's
//! declared input size, `--out` to `rsp-output/explanation.png`.

use ndarray::{Array4, ArrayView1, Axis};
use rsp::eval::benchmark::scene_heatmaps;
use rsp::eval::dataset::Scenes;
use rsp::image_io::{load_image, tensor_to_rgb, Normalization};
use rsp::render::{heatmap_rgb, overlay, Figure, Scale};
use rsp::{Method, Network, RspError, RspOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The digits model, embedded at compile time.
const MODEL: &[u8] = include_bytes!("../data/digits_vgg.safetensors");
const MODEL_NAME: &str = "digits_vgg.safetensors (embedded)";
/// The public scenes, next to the model.
const SCENES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/scenes_public.safetensors");
const OUT_DIR: &str = "rsp-output";
const SCENES_SHOWN: usize = 6;
const PANEL: u32 = 192;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.is_empty() { scenes_demo() } else { Options::parse(&args).and_then(|o| own_image(&o)) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn class_name(net: &Network<f32>, c: usize) -> String {
    net.class_names().and_then(|n| n.get(c).cloned()).unwrap_or_else(|| format!("class {c}"))
}

/// `name (logit)` of every class with logit > 0, best first.
fn predictions(net: &Network<f32>, logits: ArrayView1<f32>) -> String {
    let mut present: Vec<(usize, f32)> = logits.iter().copied().enumerate().filter(|&(_, v)| v > 0.0).collect();
    present.sort_by(|a, b| b.1.total_cmp(&a.1));
    if present.is_empty() {
        return "none (no logit > 0)".into();
    }
    present.iter().map(|&(c, v)| format!("{} ({v:.2})", class_name(net, c))).collect::<Vec<_>>().join(", ")
}

/// The default: figures for the first public scenes with the embedded model.
fn scenes_demo() -> Result<(), RspError> {
    let net = rsp::io::safetensors::from_bytes::<f32>(MODEL, MODEL_NAME)?;
    let scenes = Scenes::load(SCENES)?;
    std::fs::create_dir_all(OUT_DIR).map_err(|source| RspError::Io { path: OUT_DIR.into(), source })?;
    println!("model: {MODEL_NAME}; scenes: {SCENES}");
    let methods = [Method::Rsp(RspOptions::COMPARATIVE), Method::default(), Method::GradCam];
    for i in 0..SCENES_SHOWN.min(scenes.len()) {
        let x = scenes.input(i).insert_axis(Axis(0));
        let logits = net.forward(x)?;
        let mut fig = Figure::new(PANEL);
        fig.add_panel(tensor_to_rgb(scenes.input(i), &Normalization::Scenes)?, format!("scene {i}"));
        let mut maps = Vec::new();
        for method in &methods {
            maps.push(scene_heatmaps(&net, &scenes, i, method)?);
        }
        let (slots, _) = &maps[0];
        for (j, (_, object)) in slots.iter().enumerate() {
            let name = class_name(&net, object.class);
            for (method, (_, h)) in methods.iter().zip(&maps) {
                let map = h.index_axis(Axis(0), j);
                fig.add_panel(heatmap_rgb(map, Scale::Percentile(99.5)), format!("{name}: {}", method.label()));
            }
        }
        let path = Path::new(OUT_DIR).join(format!("scene_{i:03}.png"));
        fig.save_png(&path)?;
        let digits: Vec<String> = slots.iter().map(|(_, b)| class_name(&net, b.class)).collect();
        println!(
            "wrote {}: digits {}; predicted {}",
            path.display(),
            digits.join(", "),
            predictions(&net, logits.row(0))
        );
    }
    println!("panels: the scene, then per digit: RSP (comparative start), RSP (single-class start), Grad-CAM");
    println!("colours: red = evidence for the digit, blue = hostile evidence, white = none");
    Ok(())
}

/// Command-line options of the own-image mode.
struct Options {
    model: Option<PathBuf>,
    image: PathBuf,
    target: Option<String>,
    method: Method,
    normalization: Option<Normalization>,
    size: Option<(u32, u32)>,
    out: PathBuf,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, RspError> {
        let bad = |m: String| RspError::InvalidArgument(m);
        let mut model = None;
        let mut image = None;
        let mut target = None;
        let mut method = Method::default();
        let mut normalization = None;
        let mut size = None;
        let mut out = PathBuf::from(OUT_DIR).join("explanation.png");
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().cloned().ok_or_else(|| bad(format!("{flag} needs a value")));
            match flag.as_str() {
                "--model" => model = Some(PathBuf::from(value()?)),
                "--image" => image = Some(PathBuf::from(value()?)),
                "--target" => target = Some(value()?),
                "--method" => method = value()?.parse()?,
                "--normalization" => {
                    normalization = Some(match value()?.as_str() {
                        "imagenet" => Normalization::ImageNet,
                        "scenes" => Normalization::Scenes,
                        "none" => Normalization::None,
                        other => return Err(bad(format!("--normalization must be imagenet, scenes or none, got `{other}`"))),
                    })
                }
                "--size" => {
                    let text = value()?;
                    let parts: Vec<Option<u32>> = text.split(',').map(|t| t.trim().parse().ok()).collect();
                    size = match parts.as_slice() {
                        [Some(h), Some(w)] if *h > 0 && *w > 0 => Some((*h, *w)),
                        _ => return Err(bad(format!("--size must be H,W (two positive integers), got `{text}`"))),
                    }
                }
                "--out" => out = PathBuf::from(value()?),
                "-h" | "--help" => {
                    return Err(bad("usage: explain [--model M] --image I [--target T] [--method M] [--normalization imagenet|scenes|none] [--size H,W] [--out F]".into()))
                }
                other => return Err(bad(format!("unknown argument `{other}` (see --help)"))),
            }
        }
        let image = image.ok_or_else(|| bad("--image is required when arguments are given".into()))?;
        Ok(Options { model, image, target, method, normalization, size, out })
    }
}

/// Explains the user's image.
fn own_image(o: &Options) -> Result<(), RspError> {
    let (net, shown, default_norm) = match &o.model {
        Some(p) => (Network::<f32>::load(p)?, p.display().to_string(), Normalization::ImageNet),
        None => {
            (rsp::io::safetensors::from_bytes::<f32>(MODEL, MODEL_NAME)?, MODEL_NAME.to_string(), Normalization::Scenes)
        }
    };
    let norm = o.normalization.unwrap_or(default_norm);
    let size = o.size.or_else(|| match net.input_shape() {
        Some([_, h, w]) => Some((u32::try_from(*h).ok()?, u32::try_from(*w).ok()?)),
        _ => None,
    });
    let x: Array4<f32> = load_image(&o.image, size, &norm)?;
    let logits = net.forward(x.view())?;
    let classes = logits.shape()[1];
    let target = match &o.target {
        Some(t) => match t.parse::<usize>() {
            Ok(c) => c,
            Err(_) => net.class_names().and_then(|names| names.iter().position(|n| n == t)).ok_or_else(|| {
                RspError::InvalidArgument(format!(
                    "--target `{t}` is neither a class index nor a class name of the model"
                ))
            })?,
        },
        None => logits.row(0).iter().enumerate().fold(0, |best, (c, &v)| if v > logits[[0, best]] { c } else { best }),
    };
    if target >= classes {
        return Err(RspError::TargetOutOfRange { target, classes });
    }
    let a = net.explain(&x, target, &o.method)?;
    let map = a.heatmaps.index_axis(Axis(0), 0);
    let picture = tensor_to_rgb(x.index_axis(Axis(0), 0), &norm)?;
    let heat = heatmap_rgb(map, Scale::Percentile(99.5));
    let name = class_name(&net, target);
    let mut fig = Figure::new(PANEL);
    fig.add_panel(picture.clone(), "input")
        .add_panel(heat.clone(), format!("{name}: {}", o.method.label()))
        .add_panel(overlay(&heat, &picture, 0.6), "overlay");
    if let Some(dir) = o.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| RspError::Io { path: dir.display().to_string(), source })?;
    }
    fig.save_png(&o.out)?;
    println!("model: {shown}");
    println!("predicted (logit > 0): {}", predictions(&net, logits.row(0)));
    println!("explained {name} (class {target}, logit {:.3}) with {}", logits[[0, target]], o.method);
    println!("wrote {}", o.out.display());
    Ok(())
}

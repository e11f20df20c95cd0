//! The bi-polar family side by side: RSP (both starts), RAP, CLRP, SGLRP and,
//! for reference, plain LRP-α1β0, on the same public scenes with the embedded
//! digits model.
//!
//! ```text
//! cargo run --release --example bipolar_family [-- --scenes N] [--out FILE]
//! ```
//!
//! One row per (scene, digit) pair of the first `N` scenes (default 4): the
//! scene, then each method's map for that digit (red: evidence for the digit,
//! blue: hostile evidence, white: none; each map scaled by its own 99.5th
//! percentile of |value|). Writes `rsp-output/bipolar_family.png` by default.
//! The numbers behind the pictures (every method × every metric on all 200
//! scenes) are in `docs/evaluation.md`.

use ndarray::Axis;
use rsp::eval::benchmark::scene_heatmaps;
use rsp::eval::dataset::Scenes;
use rsp::image_io::{tensor_to_rgb, Normalization};
use rsp::render::{heatmap_rgb, Figure, Scale};
use rsp::{Method, RspError};
use std::path::PathBuf;
use std::process::ExitCode;

const MODEL: &[u8] = include_bytes!("../data/digits_vgg.safetensors");
const SCENES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/scenes_public.safetensors");
/// The methods, by their command-line names, in column order.
const METHODS: [&str; 6] = ["rsp-comparative", "rsp", "rap", "clrp", "sglrp", "lrp-alpha1-beta0"];
const PANEL: u32 = 128;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), RspError> {
    let (mut shown, mut out) = (4usize, PathBuf::from("rsp-output/bipolar_family.png"));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| RspError::InvalidArgument(format!("{flag} needs a value")))?;
        match flag.as_str() {
            "--scenes" => {
                shown = value.parse().map_err(|_| RspError::InvalidArgument(format!("--scenes: `{value}`")))?
            }
            "--out" => out = PathBuf::from(value),
            _ => return Err(RspError::InvalidArgument(format!("unknown option {flag}"))),
        }
    }
    let net = rsp::io::safetensors::from_bytes::<f32>(MODEL, "digits_vgg.safetensors (embedded)")?;
    let scenes = Scenes::load(SCENES)?;
    let methods: Vec<Method> = METHODS.iter().map(|m| m.parse()).collect::<Result<_, _>>()?;
    let mut rows: Vec<image::RgbImage> = Vec::new();
    for i in 0..shown.min(scenes.len()) {
        let maps: Vec<_> = methods.iter().map(|m| scene_heatmaps(&net, &scenes, i, m)).collect::<Result<_, _>>()?;
        let slots = &maps[0].0;
        for (j, (_, object)) in slots.iter().enumerate() {
            let mut fig = Figure::new(PANEL);
            fig.add_panel(
                tensor_to_rgb(scenes.input(i), &Normalization::Scenes)?,
                format!("scene {i}: {}", object.class),
            );
            for (method, (_, h)) in methods.iter().zip(&maps) {
                fig.add_panel(heatmap_rgb(h.index_axis(Axis(0), j), Scale::Percentile(99.5)), method.label());
            }
            rows.push(fig.render());
        }
    }
    let width = rows.iter().map(|r| r.width()).max().unwrap_or(1);
    let height = rows.iter().map(|r| r.height()).sum::<u32>().max(1);
    let mut sheet = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let mut top = 0i64;
    for row in &rows {
        image::imageops::replace(&mut sheet, row, 0, top);
        top += i64::from(row.height());
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| RspError::Io { path: dir.display().to_string(), source })?;
    }
    rsp::render::save_png(&sheet, &out)?;
    println!("wrote {} ({} rows: the scene, then {})", out.display(), rows.len(), METHODS.join(", "));
    Ok(())
}

//! Per layer of the shipped trained digits model: the density of `[R⁺; R⁻]`
//! that RSP's sectional rule sees, the kernels the CPU backend chooses for it
//! and their time against the dense GEMMs (`DenseCpuBackend`), over a number
//! of evaluation scenes (one attribution per scene, the backends alternated).
//! `bench_vgg16 --layers` gives the same for VGG16 with random weights.
//!
//! ```text
//! cargo run --release --example layer_density -- --scenes 16 --threads 2
//! ```
//!
//! One line per layer (medians over the scenes), then one JSON object per
//! layer.

use clap::Parser;
use rsp::backend::{record_sectional_calls, DenseCpuBackend, SectionalRecord};
use rsp::eval::dataset::Scenes;
use rsp::ndarray::Axis;
use rsp::{Network, RspOptions, Target};

/// Per-layer density and time of the sectional kernels on the digits model.
#[derive(Parser, Debug)]
struct Args {
    /// Scenes to explain (the first ones of the shipped public set).
    #[arg(long, default_value_t = 16)]
    scenes: usize,
    /// Threads of the rayon pool.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let root = env!("CARGO_MANIFEST_DIR");
    let net = Network::<f32>::load(format!("{root}/data/digits_vgg.safetensors"))?;
    let dense = net.clone().with_backend(DenseCpuBackend);
    let scenes = Scenes::load(format!("{root}/data/scenes_public.safetensors"))?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build()?;
    // Per scene: the calls of the automatic backend and of the dense one, layer by layer.
    let mut runs: Vec<(Vec<SectionalRecord>, Vec<SectionalRecord>)> = Vec::new();
    for n in 0..args.scenes.min(scenes.len()) {
        let scene = scenes.input(n).insert_axis(Axis(0)).to_owned();
        let explain = |net: &Network<f32>| {
            pool.install(|| record_sectional_calls(|| net.explain(&scene, Target::Predicted, RspOptions::default())))
        };
        let (result, auto) = explain(&net);
        result?;
        let (result, dense_calls) = explain(&dense);
        result?;
        runs.push((auto, dense_calls));
    }
    let layers = runs.first().map_or(0, |r| r.0.len());
    println!("digits model, f32, batch 1, {} threads, {} scenes (medians)", args.threads, runs.len());
    println!("layer (input -> output)        density  sparse  auto ms  dense ms");
    let mut json = Vec::new();
    for l in 0..layers {
        let calls: Vec<(&SectionalRecord, &SectionalRecord)> =
            runs.iter().filter(|r| r.0.len() == layers && r.1.len() == layers).map(|r| (&r.0[l], &r.1[l])).collect();
        let (first, _) = calls[0];
        let density = median(calls.iter().map(|c| c.0.density).collect());
        let sparse = calls.iter().filter(|c| c.0.sparse).count();
        let auto_ms = median(calls.iter().map(|c| c.0.seconds * 1e3).collect());
        let dense_ms = median(calls.iter().map(|c| c.1.seconds * 1e3).collect());
        let (i, o) = (first.input, first.output);
        println!(
            "  {:>4}x{:<3}x{:<3} -> {:>4}x{:<3}x{:<3} {density:6.3}  {sparse:>3}/{:<3} {auto_ms:7.2}  {dense_ms:7.2}",
            i.0,
            i.1,
            i.2,
            o.0,
            o.1,
            o.2,
            calls.len()
        );
        json.push(format!(
            "{{\"layer\":{l},\"input\":[{},{},{}],\"output\":[{},{},{}],\"density\":{density:.4},\"sparse_runs\":{sparse},\"runs\":{},\"auto_ms\":{auto_ms:.3},\"dense_ms\":{dense_ms:.3}}}",
            i.0, i.1, i.2, o.0, o.1, o.2, calls.len()
        ));
    }
    for line in json {
        println!("{line}");
    }
    Ok(())
}

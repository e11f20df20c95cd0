//! Times RSP attributions of a ResNet-50 (torchvision layout, He-normal random
//! weights) on one 224×224 image, in f32.
//!
//! ```text
//! cargo run --release --example resnet50_time [runs]
//! ```

use ndarray::Array4;
use rsp::models::{ResNetConfig, WeightSource};
use rsp::{Method, Network};
use std::time::Instant;

fn main() -> rsp::Result<()> {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let t = Instant::now();
    let net: Network<f32> = ResNetConfig::resnet50().build(&WeightSource::HeNormal { seed: 2021 })?;
    println!("built ResNet-50 ({} nodes) in {:.2?}", net.len(), t.elapsed());
    let mut s = 12345u64;
    let image = Array4::from_shape_simple_fn((1, 3, 224, 224), || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    });
    let t = Instant::now();
    let logits = net.forward(image.view())?;
    println!("forward: {:.2?}", t.elapsed());
    let target = logits.row(0).iter().enumerate().fold(0, |best, (i, &v)| if v > logits[[0, best]] { i } else { best });
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs {
        let t = Instant::now();
        let e = net.explain(&image, target, Method::default())?;
        let dt = t.elapsed();
        println!(
            "attribution {run}: {dt:.2?} (start layer #{:?}, Σ start {:.4}, Σ input {:.4})",
            e.start_layer,
            e.start_relevance.as_ref().map_or(0.0, |r| r.sum()),
            e.relevance.as_ref().map_or(0.0, |r| r.sum())
        );
        times.push(dt.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    if let (Some(min), Some(median)) = (times.first(), times.get(times.len() / 2)) {
        println!(
            "ResNet-50 224×224 f32, {} threads: min {:.3} s, median {:.3} s over {runs} runs",
            rayon::current_num_threads(),
            min,
            median
        );
    }
    Ok(())
}

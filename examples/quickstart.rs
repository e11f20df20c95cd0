//! Quickstart: load the shipped digits model, explain its decision for each
//! digit present in one scene, and print where the evidence lies.
//!
//! `cargo run --release --example quickstart`

use rsp::eval::dataset::Scenes;
use rsp::ndarray::Axis;
use rsp::{Method, Network, RspOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = env!("CARGO_MANIFEST_DIR");
    let net = Network::<f32>::load(format!("{root}/data/digits_vgg.safetensors"))?;

    // One evaluation scene (3×64×64, already normalised) from the shipped set, as a batch of one.
    let scenes = Scenes::load(format!("{root}/data/scenes_public.safetensors"))?;
    let scene = scenes.input(0).insert_axis(Axis(0)).to_owned();

    let logits = net.forward(&scene)?;
    let present: Vec<usize> = (0..logits.ncols()).filter(|&c| logits[[0, c]] > 0.0).collect();
    println!("digits predicted present: {present:?}");

    for &digit in &present {
        // The short form: positive and hostile evidence for one class.
        let (positive, hostile) = rsp::attribute(&net, &scene, digit)?;
        // The full call: the comparative start weighs the digit against the others present.
        let explanation = net.explain(&scene, digit, Method::Rsp(RspOptions::COMPARATIVE))?;
        let heat = explanation.heatmap(0).expect("one sample");
        let (mut best, mut worst) = ((0, 0), (0, 0));
        for ((i, j), &v) in heat.indexed_iter() {
            if v > heat[best] {
                best = (i, j);
            }
            if v < heat[worst] {
                worst = (i, j);
            }
        }
        println!(
            "digit {digit}: Σ positive {:.3}, Σ hostile {:.3}; comparative map peaks at {best:?}, most hostile at {worst:?}",
            positive.sum(),
            hostile.sum()
        );
    }
    Ok(())
}

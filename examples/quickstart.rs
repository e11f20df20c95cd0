//! Quickstart: load the shipped digits model, explain its decision for each
//! digit present in one scene, and print where the evidence lies.
//!
//! `cargo run --release --example quickstart`

use ndarray::{s, Array4, Axis};
use rsp::{ExplainOptions, HostileClasses, Network, StartRule};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = env!("CARGO_MANIFEST_DIR");
    let net = Network::<f32>::load(format!("{root}/data/digits_vgg.safetensors"))?;

    // One evaluation scene (3×64×64, already normalised) from the shipped set.
    let bytes = std::fs::read(format!("{root}/data/scenes_public.safetensors"))?;
    let scenes = safetensors::SafeTensors::deserialize(&bytes)?;
    let t = scenes.tensor("input")?;
    let values: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let all = Array4::from_shape_vec((t.shape()[0], 3, 64, 64), values)?;
    let scene = all.slice(s![0..1, .., .., ..]).to_owned();

    let logits = net.forward(scene.view())?;
    let present: Vec<usize> = (0..10).filter(|&c| logits[[0, c]] > 0.0).collect();
    println!("digits predicted present: {present:?}");

    for &digit in &present {
        // The short form: positive and hostile evidence for one class.
        let (positive, hostile) = rsp::attribute(&net, &scene, digit)?;
        // The comparative start weighs the digit against the others present.
        let options =
            ExplainOptions { start: StartRule::Comparative(HostileClasses::PredictedPresent), ..Default::default() };
        let explanation = net.explain(scene.view(), digit, &options)?;
        let heat = explanation.heatmap().index_axis_move(Axis(0), 0);
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

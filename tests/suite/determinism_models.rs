//! Reproducible bits on the shipped models: the same relevance, logits and
//! start relevance, bit for bit, for 1, 2 and 8 threads, across repeated runs,
//! and for a batch and for each of its samples alone. On the digits model
//! (several public scenes, f32 and f64, single-class and comparative starts)
//! and on the golden bottleneck ResNet (batch 2).

use ndarray::{s, Array4, ArrayD, Axis, Ix4, IxDyn};
use rsp::{Explanation, Float, HostileClasses, Network, RspOptions, StartRule, Target};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use std::path::PathBuf;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Tensor `name` of a safetensors file (f32 data) as `T`.
fn tensor<T: Float>(path: &str, name: &str) -> ArrayD<T> {
    let bytes = std::fs::read(repo(path)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), Dtype::F32);
    let values = t.data().chunks_exact(4).map(|c| T::of(f32::from_le_bytes(c.try_into().unwrap()) as f64)).collect();
    ArrayD::from_shape_vec(IxDyn(t.shape()), values).unwrap()
}

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

/// The bits of everything an explanation returns.
fn bits<T: Float>(e: &Explanation<T>) -> Vec<u64> {
    e.relevance
        .as_ref()
        .unwrap()
        .iter()
        .chain(e.logits.iter())
        .chain(e.start_relevance.as_ref().unwrap().iter())
        .map(|v| v.to_f64_exact().to_bits())
        .collect()
}

fn assert_deterministic<T: Float>(what: &str, net: &Network<T>, x: &Array4<T>, target: Target, opts: &RspOptions) {
    let run = |threads: usize| in_pool(threads, || net.explain(x.view(), target.clone(), opts).unwrap());
    let reference = run(1);
    assert!(reference.relevance.as_ref().unwrap().iter().all(|v| v.is_finite()), "{what}");
    let reference_bits = bits(&reference);
    for threads in [1, 2, 8] {
        assert!(bits(&run(threads)) == reference_bits, "{what}: {threads} threads differ from 1 thread");
    }
    // Repeated runs in the global pool.
    for _ in 0..2 {
        assert!(
            bits(&net.explain(x.view(), target.clone(), opts).unwrap()) == reference_bits,
            "{what}: a repeated run differs"
        );
    }
    // Each sample alone, on 2 threads.
    for (n, &t) in reference.targets.iter().enumerate() {
        let one = x.slice(s![n..n + 1, .., .., ..]);
        let alone = in_pool(2, || net.explain(one, t, opts).unwrap());
        assert!(
            alone.relevance.as_ref().unwrap().index_axis(Axis(0), 0).iter().map(|v| v.to_f64_exact().to_bits()).eq(
                reference.relevance.as_ref().unwrap().index_axis(Axis(0), n).iter().map(|v| v.to_f64_exact().to_bits())
            ),
            "{what}: sample {n} alone differs from the batch"
        );
        assert!(alone
            .logits
            .row(0)
            .iter()
            .zip(reference.logits.row(n))
            .all(|(a, b)| a.to_f64_exact().to_bits() == b.to_f64_exact().to_bits()));
        assert_eq!(alone.hostile_classes[0], reference.hostile_classes[n], "{what}: sample {n}");
    }
}

fn digits<T: Float>() {
    let net = Network::<T>::load(repo("data/digits_vgg.safetensors")).unwrap();
    let scenes: Array4<T> =
        tensor::<T>("data/scenes_public.safetensors", "input").into_dimensionality::<Ix4>().unwrap();
    let x = scenes.slice(s![0..4, .., .., ..]).to_owned();
    let labels = tensor::<f64>("data/scenes_public.safetensors", "labels");
    // Per scene, the first digit present.
    let targets: Vec<usize> = (0..4).map(|n| (0..10).find(|&c| labels[[n, c]] > 0.5).unwrap()).collect();
    assert_deterministic(
        &format!("digits {} single", T::NAME),
        &net,
        &x,
        Target::PerSample(targets.clone()),
        &RspOptions::default(),
    );
    let comparative =
        RspOptions { start: StartRule::Comparative(HostileClasses::PredictedPresent), ..Default::default() };
    assert_deterministic(
        &format!("digits {} comparative", T::NAME),
        &net,
        &x,
        Target::PerSample(targets),
        &comparative,
    );
}

#[test]
fn the_digits_model_is_bit_reproducible_in_f32() {
    digits::<f32>();
}

#[test]
fn the_digits_model_is_bit_reproducible_in_f64() {
    digits::<f64>();
}

#[test]
fn the_golden_bottleneck_resnet_is_bit_reproducible() {
    let golden = "tests/data/golden/resnet_bottleneck_tiny.safetensors";
    let x = tensor::<f64>(golden, "input").into_dimensionality::<Ix4>().unwrap();
    assert_eq!(x.shape()[0], 2, "the golden ResNet case is a batch of 2");
    let bytes = std::fs::read(repo(golden)).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let targets: Vec<usize> = serde_json::from_str(&header.metadata().as_ref().unwrap()["target"]).unwrap();
    // The network from both routes: its safetensors file and its ONNX export.
    let nets = [
        ("safetensors", Network::<f64>::load(repo(golden)).expect("the golden ResNet loads from safetensors")),
        (
            "onnx",
            Network::<f64>::load(repo("tests/data/golden/onnx/resnet_bottleneck_tiny.onnx"))
                .expect("the golden ResNet loads from ONNX"),
        ),
    ];
    for (format, net) in nets {
        let what = format!("resnet_bottleneck_tiny ({format})");
        assert_deterministic(&what, &net, &x, Target::PerSample(targets.clone()), &RspOptions::default());
        let comparative = RspOptions { start: StartRule::Comparative(HostileClasses::TopK(2)), ..Default::default() };
        assert_deterministic(&what, &net, &x, Target::PerSample(targets.clone()), &comparative);
    }
}

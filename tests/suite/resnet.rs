//! Residual networks: golden parity of the ResNet builders (files computed by
//! an independent float64 implementation of the method page), the VGG
//! builder against the VGG goldens, the Add rule by hand, conservation
//! across residual blocks, and batch = per sample.

use crate::common;

use common::{data, read_tensors, rel_err, F32_TOL, F64_TOL};
use ndarray::{Array4, ArrayD, Axis, Ix4};
use proptest::prelude::*;
use rsp::io::safetensors::Weights;
use rsp::layers::add_rule;
use rsp::layers::{Layer, LayerKind};
use rsp::models::{Architecture, BlockKind, ResNetConfig, VggConfig, VggLayer, WeightSource};
use rsp::network::NodeOp;
use rsp::{Float, Network, RspError, RspOptions};

const RESNET_CASES: &[&str] = &["resnet_basic_tiny", "resnet_bottleneck_tiny"];

struct Outcome {
    relevance: f64,
    logits: f64,
    start: f64,
}

fn widen<T: Float>(a: &ArrayD<T>) -> ArrayD<f64> {
    a.mapv(|v| v.to_f64_exact())
}

fn run_resnet<T: Float>(case: &str) -> Outcome {
    let path = data(&format!("golden/{case}.safetensors"));
    let file = read_tensors(&path);
    let net = rsp::io::safetensors::load::<T>(&path).unwrap();
    let targets: Vec<usize> = serde_json::from_str(&file.metadata["target"]).unwrap();
    let input = file.tensors["input"].mapv(T::of).into_dimensionality::<Ix4>().unwrap();
    assert_eq!(targets.len(), input.shape()[0]);
    let e = net.explain(input.view(), targets, RspOptions::default()).unwrap();
    Outcome {
        relevance: rel_err(&widen(&e.relevance.clone().unwrap().into_dyn()), &file.tensors["relevance_f64"]),
        logits: rel_err(&widen(&e.logits.into_dyn()), &file.tensors["logits_f64"]),
        start: rel_err(&widen(e.start_relevance.as_ref().unwrap()), &file.tensors["start_relevance_f64"]),
    }
}

#[test]
fn resnet_float64_matches_the_golden_files_within_1e13() {
    for case in RESNET_CASES {
        let o = run_resnet::<f64>(case);
        println!("{case} f64: relevance {:.2e} logits {:.2e} start {:.2e}", o.relevance, o.logits, o.start);
        assert!(o.logits <= F64_TOL, "{case}: logits differ by {:.3e}", o.logits);
        assert!(o.start <= F64_TOL, "{case}: start relevance differs by {:.3e}", o.start);
        assert!(o.relevance <= F64_TOL, "{case}: relevance differs by {:.3e}", o.relevance);
    }
}

#[test]
fn resnet_float32_matches_the_golden_files_within_1e5() {
    for case in RESNET_CASES {
        let o = run_resnet::<f32>(case);
        println!("{case} f32: relevance {:.2e} logits {:.2e} start {:.2e}", o.relevance, o.logits, o.start);
        assert!(o.logits <= F32_TOL, "{case}: logits differ by {:.3e}", o.logits);
        assert!(o.start <= F32_TOL, "{case}: start relevance differs by {:.3e}", o.start);
        assert!(o.relevance <= F32_TOL, "{case}: relevance differs by {:.3e}", o.relevance);
    }
}

#[test]
fn resnet_golden_files_build_the_expected_graph() {
    let path = data("golden/resnet_bottleneck_tiny.safetensors");
    let net = rsp::io::safetensors::load::<f64>(&path).unwrap();
    // stem 4 + layer1.0 (8 main + 2 downsample + add + relu) + 2 × 12 or 10 + pool, flatten, fc
    let adds: Vec<usize> = (0..net.len()).filter(|&k| matches!(net.nodes()[k].op(), NodeOp::Add)).collect();
    assert_eq!(adds.len(), 3);
    let start = net.default_start_layer().unwrap();
    assert_eq!(start, net.len() - 4);
    assert_eq!(net.nodes()[start].layer().unwrap().kind(), LayerKind::Relu);
    assert_eq!(net.nodes()[start].inputs(), vec![rsp::network::Source::Node(*adds.last().unwrap())]);
    // The input shape is the one the file declares.
    assert_eq!(net.input_shape(), Some(&[3usize, 40, 40][..]));
    assert_eq!(net.check(&[3, 40, 40]).unwrap()[start], vec![32, 5, 5]);
}

#[test]
fn the_torchvision_loader_reads_a_golden_file_by_architecture_name() {
    // The basic golden file is a ResNet with widths [8, 16]; `resnet18` has
    // other shapes, so loading it by that name must fail with a typed error.
    let path = data("golden/resnet_basic_tiny.safetensors");
    match Network::<f32>::load_torchvision(&path, "resnet18") {
        Err(RspError::Shape { context, .. }) => {
            assert!(context.contains("conv1.weight"), "{context}")
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    // Built by hand from the same config, it equals the metadata route.
    let bytes = std::fs::read(&path).unwrap();
    let (weights, metadata) = Weights::parse(&bytes, "basic").unwrap();
    let config = ResNetConfig::from_metadata(&metadata, "basic").unwrap();
    assert_eq!(
        config,
        ResNetConfig {
            block: BlockKind::Basic,
            layers: vec![1, 1],
            widths: vec![8, 16],
            stem_width: 8,
            num_classes: 10
        }
    );
    let a = config.build::<f64>(&WeightSource::File(&weights)).unwrap();
    let b = rsp::io::safetensors::load::<f64>(&path).unwrap();
    let x = read_tensors(&path).tensors["input"].clone().into_dimensionality::<Ix4>().unwrap();
    assert_eq!(a.forward(x.view()).unwrap(), b.forward(x.view()).unwrap());
}

#[test]
fn bad_resnet_files_give_typed_errors() {
    let path = data("golden/resnet_basic_tiny.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, metadata) = Weights::parse(&bytes, "basic").unwrap();
    let with = |key: &str, value: &str| {
        let mut m = metadata.clone();
        m.insert(key.to_string(), value.to_string());
        ResNetConfig::from_metadata(&m, "edited")
    };
    assert!(matches!(with("block", "wide"), Err(RspError::Format { .. })));
    assert!(matches!(with("layers", "[1, 1, 1]"), Err(RspError::Format { .. })));
    assert!(matches!(with("widths", "[0, 16]"), Err(RspError::Format { .. })));
    assert!(matches!(with("stem_width", "eight"), Err(RspError::Format { .. })));
    // A bottleneck of width 2^62 has 2^62 · 4 output channels, which
    // overflows: an error, not a panic.
    let mut big = metadata.clone();
    big.insert("block".into(), "bottleneck".into());
    big.insert("widths".into(), "[8, 4611686018427387904]".into());
    assert!(matches!(ResNetConfig::from_metadata(&big, "edited"), Err(RspError::Format { .. })));
    let mut m = metadata.clone();
    m.remove("widths");
    assert!(matches!(ResNetConfig::from_metadata(&m, "edited"), Err(RspError::Format { .. })));
    // A file cut short is not a safetensors file.
    assert!(matches!(
        rsp::io::safetensors::from_bytes::<f32>(&bytes[..bytes.len() / 2], "cut"),
        Err(RspError::Format { .. })
    ));
    // A missing tensor is named.
    let (weights, _) = Weights::parse(&bytes, "basic").unwrap();
    let wrong = ResNetConfig {
        layers: vec![1, 1, 1],
        widths: vec![8, 16, 32],
        ..ResNetConfig::from_metadata(&metadata, "b").unwrap()
    };
    match wrong.build::<f32>(&WeightSource::File(&weights)) {
        Err(RspError::MissingWeight(name)) => assert_eq!(name, "layer3.0.conv1.weight"),
        other => panic!("expected a missing weight, got {other:?}"),
    }
    assert!(matches!(Architecture::from_name("vgg17"), Err(RspError::InvalidArgument(_))));
}

/// The VGG builder reproduces the VGG golden files (whose `layers` metadata
/// is torchvision's VGG layout with narrow widths).
#[test]
fn vgg_builder_matches_the_vgg_golden_files() {
    for (case, batch_norm) in [("vgg_tiny", false), ("vgg_tiny_bn", true)] {
        let path = data(&format!("golden/{case}.safetensors"));
        let file = read_tensors(&path);
        let bytes = std::fs::read(&path).unwrap();
        let (weights, _) = Weights::parse(&bytes, case).unwrap();
        let config = VggConfig {
            features: vec![
                VggLayer::Conv(8),
                VggLayer::MaxPool,
                VggLayer::Conv(16),
                VggLayer::Conv(16),
                VggLayer::MaxPool,
                VggLayer::Conv(32),
                VggLayer::MaxPool,
            ],
            batch_norm,
            in_channels: 3,
            pool_output: (4, 4),
            hidden: 32,
            num_classes: 10,
        };
        let net = config.build::<f64>(&WeightSource::File(&weights)).unwrap();
        let start = net.default_start_layer().unwrap();
        assert_eq!(start, file.metadata["start_layer"].parse::<usize>().unwrap());
        let target: usize = file.metadata["target"].parse().unwrap();
        let x = file.tensors["input"].clone().into_dimensionality::<Ix4>().unwrap();
        let e = net.explain(x.view(), target, RspOptions::default()).unwrap();
        let err = rel_err(&e.relevance.clone().unwrap().into_dyn(), &file.tensors["relevance_f64"]);
        println!("{case} via VggConfig f64: relevance {err:.2e}");
        assert!(err <= F64_TOL, "{case}: {err:.3e}");
    }
}

#[test]
fn torchvision_presets_have_torchvision_shapes() {
    let w = WeightSource::HeNormal { seed: 0 };
    let r18 = ResNetConfig::resnet18().build::<f32>(&w).unwrap();
    let shapes = r18.check(&[3, 224, 224]).unwrap();
    assert_eq!(shapes[r18.default_start_layer().unwrap()], vec![512, 7, 7]);
    assert_eq!(shapes.last().unwrap(), &vec![1000]);
    // ResNet-18: 20 convolutions + fc; 8 residual sums.
    let count = |net: &Network<f32>, kind: LayerKind| {
        net.nodes().iter().filter(|n| n.layer().is_some_and(|l| l.kind() == kind)).count()
    };
    assert_eq!(count(&r18, LayerKind::Conv2d), 20);
    assert_eq!(r18.nodes().iter().filter(|n| matches!(n.op(), NodeOp::Add)).count(), 8);
    for (config, convs, blocks) in [(ResNetConfig::resnet101(), 104, 33), (ResNetConfig::resnet152(), 155, 50)] {
        let net = config.build::<f32>(&w).unwrap();
        assert_eq!(count(&net, LayerKind::Conv2d), convs);
        assert_eq!(net.nodes().iter().filter(|n| matches!(n.op(), NodeOp::Add)).count(), blocks);
    }
    let vgg = VggConfig::vgg11(true);
    assert_eq!(vgg.conv_count(), 8);
    // torchvision's vgg16_bn: the last convolution is features.40, the last pool features.43.
    let v16 = Architecture::from_name("vgg16_bn").unwrap().build::<f32>(&w).unwrap();
    let names: Vec<&str> =
        v16.nodes().iter().filter_map(|n| n.layer()).map(|l| l.name()).filter(|n| !n.is_empty()).collect();
    assert!(names.contains(&"features.40") && names.contains(&"features.41") && !names.contains(&"features.42"));
    assert_eq!(v16.check(&[3, 224, 224]).unwrap().last().unwrap(), &vec![1000]);
    assert_eq!(v16.default_start_layer().unwrap(), 42); // the ReLU features.42 before the last pool
}

/// The Add rule on numbers worked out by hand.
///
/// a = [3, −1, 0, 5], b = [1, 2, 0, 5], R = [4, 1, 2, 0]:
/// * 0: ã = 3 + 1e-9, b̃ = 1 + 1e-9, ã + b̃ = 4 + 2e-9, R ⊘ (ã + b̃) = 1/(1 + 5e-10);
///   R_a = (3 + 1e-9)/(1 + 5e-10) = 3 − 5e-10 (to first order), R_b = 1 + 5e-10.
/// * 1: ã = 1e-9 (a < 0 clamps), b̃ = 2 + 1e-9, R ⊘ (ã + b̃) = 1/(2 + 2e-9);
///   R_a = 1e-9/(2 + 2e-9) = 5e-10, R_b = (2 + 1e-9)/(2 + 2e-9) = 1 − 5e-10.
/// * 2: ã = b̃ = 1e-9: an even split, R_a = R_b = 2 · 1e-9/2e-9 = 1.
/// * 3: R = 0 gives R_a = R_b = 0.
#[test]
fn the_add_rule_on_a_hand_computed_example() {
    let a = ndarray::arr1(&[3.0f64, -1.0, 0.0, 5.0]).into_dyn();
    let b = ndarray::arr1(&[1.0, 2.0, 0.0, 5.0]).into_dyn();
    let r = ndarray::arr1(&[4.0, 1.0, 2.0, 0.0]).into_dyn();
    let (ra, rb) = add_rule(a.view(), b.view(), r.view());
    let expect_a: [f64; 4] = [3.0 - 5e-10, 5e-10, 1.0, 0.0];
    let expect_b: [f64; 4] = [1.0 + 5e-10, 1.0 - 5e-10, 1.0, 0.0];
    for i in 0..4 {
        // First-order values: the neglected terms are ~1e-18.
        assert!((ra[i] - expect_a[i]).abs() < 1e-15, "R_a[{i}] = {}", ra[i]);
        assert!((rb[i] - expect_b[i]).abs() < 1e-15, "R_b[{i}] = {}", rb[i]);
        assert!((ra[i] + rb[i] - r[i]).abs() < 1e-15);
    }
}

/// A small random ResNet with positive convolution weights: on a positive
/// input every activation is then strictly positive, so no safe division
/// meets a zero denominator and RSP must conserve relevance exactly (to
/// rounding) from the start layer down to the input. (With signed weights
/// some ReLU outputs are 0, safe divisions meet zero denominators and the
/// error was ~3e-5 relative on 20 such networks, against ~2e-15 here.)
fn positive_resnet(block: BlockKind, layers: Vec<usize>, widths: Vec<usize>, seed: u64) -> Network<f64> {
    let config = ResNetConfig { block, layers, widths, stem_width: 4, num_classes: 5 };
    let mut net = config.build::<f64>(&WeightSource::HeNormal { seed }).unwrap();
    for k in 0..net.len() {
        let Some(layer) = net.layer_mut(k) else {
            continue;
        };
        if layer.kind() == LayerKind::Conv2d {
            for (_, mut p) in layer.parameters_mut() {
                p.mapv_inplace(f64::abs);
            }
        }
    }
    net
}

fn positive_input(seed: u64, n: usize, hw: usize) -> Array4<f64> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    Array4::from_shape_simple_fn((n, 3, hw, hw), || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        0.05 + ((s >> 11) as f64 / (1u64 << 53) as f64)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn relevance_is_conserved_across_residual_blocks(
        bottleneck in any::<bool>(),
        layers in prop::collection::vec(1usize..3, 1..4),
        width in 1usize..5,
        seed in any::<u64>(),
        target in 0usize..5,
        hw in 24usize..40,
    ) {
        let block = if bottleneck { BlockKind::Bottleneck } else { BlockKind::Basic };
        let widths: Vec<usize> = (0..layers.len()).map(|i| width + 2 * i).collect();
        let net = positive_resnet(block, layers, widths, seed);
        let x = positive_input(seed, 1, hw);
        let e = net.explain(x.view(), target, RspOptions::default()).unwrap();
        let start: f64 = e.start_relevance.as_ref().unwrap().sum();
        let input: f64 = e.relevance.as_ref().unwrap().sum();
        let scale = e.start_relevance.as_ref().unwrap().iter().fold(0.0f64, |m, v| m.max(v.abs())).max(start.abs());
        prop_assert!(scale > 0.0);
        prop_assert!((input - start).abs() <= 1e-9 * scale, "Σ input {input} vs Σ start {start}");
    }
}

#[test]
fn a_batch_equals_its_samples_bitwise() {
    for block in [BlockKind::Basic, BlockKind::Bottleneck] {
        let config = ResNetConfig { block, layers: vec![2, 1], widths: vec![4, 6], stem_width: 6, num_classes: 7 };
        let net = config.build::<f32>(&WeightSource::HeNormal { seed: 11 }).unwrap();
        let x = positive_input(5, 3, 33).mapv(|v| v as f32 - 0.5);
        let targets = vec![0, 6, 3];
        let batch = net.explain(x.view(), targets.clone(), RspOptions::default()).unwrap();
        for (i, &t) in targets.iter().enumerate() {
            let one = x.index_axis(Axis(0), i).insert_axis(Axis(0)).to_owned();
            let single = net.explain(one.view(), t, RspOptions::default()).unwrap();
            assert_eq!(
                batch.relevance.as_ref().unwrap().index_axis(Axis(0), i),
                single.relevance.as_ref().unwrap().index_axis(Axis(0), 0)
            );
            assert_eq!(batch.logits.row(i), single.logits.row(0));
        }
    }
}

/// Writes a network's weights as torchvision's `state_dict` would be saved by
/// `safetensors.torch.save_file` (float32, with the int64
/// `num_batches_tracked` tensors of every batch norm).
fn save_like_torchvision(
    net: &Network<f32>,
    path: &std::path::Path,
    metadata: Option<std::collections::HashMap<String, String>>,
) {
    use rsp::layers::{BatchNorm2d, Conv2d, Linear};
    use safetensors::tensor::{Dtype, TensorView};
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut put = |name: String, a: ndarray::ArrayViewD<f32>| {
        tensors.push((name, Dtype::F32, a.shape().to_vec(), a.iter().flat_map(|v| v.to_le_bytes()).collect()));
    };
    let mut counters = Vec::new();
    for layer in net.nodes().iter().filter_map(|n| n.layer()) {
        let any: &dyn std::any::Any = layer;
        if let Some(c) = any.downcast_ref::<Conv2d<f32>>() {
            put(format!("{}.weight", c.name()), c.weight().view().into_dyn());
        } else if let Some(l) = any.downcast_ref::<Linear<f32>>() {
            put(format!("{}.weight", l.name()), l.weight().view().into_dyn());
            put(format!("{}.bias", l.name()), l.bias().unwrap().view().into_dyn());
        } else if let Some(b) = any.downcast_ref::<BatchNorm2d<f32>>() {
            let (g, beta, m, v, _) = b.parameters();
            for (suffix, t) in [("weight", g), ("bias", beta), ("running_mean", m), ("running_var", v)] {
                put(format!("{}.{suffix}", b.name()), t.view().into_dyn());
            }
            counters.push(format!("{}.num_batches_tracked", b.name()));
        }
    }
    for name in counters {
        tensors.push((name, Dtype::I64, vec![], 100i64.to_le_bytes().to_vec()));
    }
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, metadata, path).unwrap();
}

#[test]
fn a_torchvision_state_dict_file_loads_by_name_and_by_metadata() {
    let dir = std::env::temp_dir();
    // ResNet-18 at full size, random weights, loaded by architecture name.
    let original = ResNetConfig::resnet18().build::<f32>(&WeightSource::HeNormal { seed: 4 }).unwrap();
    let path = dir.join(format!("rsp-test-resnet18-{}.safetensors", std::process::id()));
    save_like_torchvision(&original, &path, None);
    let loaded = Network::<f32>::load_torchvision(&path, "resnet18");
    std::fs::remove_file(&path).ok();
    let loaded = loaded.unwrap();
    let x = positive_input(1, 1, 64).mapv(|v| v as f32);
    assert_eq!(loaded.forward(x.view()).unwrap(), original.forward(x.view()).unwrap());
    // A narrow bottleneck ResNet with the metadata of the golden README.
    let config = ResNetConfig {
        block: BlockKind::Bottleneck,
        layers: vec![2, 1],
        widths: vec![3, 5],
        stem_width: 6,
        num_classes: 4,
    };
    let original = config.build::<f32>(&WeightSource::HeNormal { seed: 9 }).unwrap();
    let path = dir.join(format!("rsp-test-bottleneck-{}.safetensors", std::process::id()));
    save_like_torchvision(&original, &path, Some(config.to_metadata()));
    let loaded = rsp::io::safetensors::load::<f32>(&path);
    std::fs::remove_file(&path).ok();
    let loaded = loaded.unwrap();
    let a = original.explain(x.view(), 2, RspOptions::default()).unwrap();
    let b = loaded.explain(x.view(), 2, RspOptions::default()).unwrap();
    assert_eq!(a.relevance, b.relevance);
}

//! The ONNX reader on the shipped PyTorch exports, and on damaged copies of
//! them. Expected ops, attributes and values were read with the Python
//! `onnx` package (1.23.2).

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rsp::io::onnx::{parse_onnx_bytes, read_onnx, OnnxGraph, OnnxOp};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden(name: &str) -> PathBuf {
    root().join("tests/data/golden/onnx").join(name)
}

fn load(path: &Path) -> OnnxGraph {
    read_onnx(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ops(g: &OnnxGraph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.op_type()).collect()
}

fn count(g: &OnnxGraph, op: &str) -> usize {
    g.nodes.iter().filter(|n| n.op.op_type() == op).count()
}

/// Every `.onnx` file shipped with the crate.
fn all_onnx_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("data/digits_vgg.onnx")];
    for entry in std::fs::read_dir(root().join("tests/data/golden/onnx")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "onnx") {
            files.push(p);
        }
    }
    files.sort();
    files
}

#[test]
fn every_shipped_model_parses() {
    let files = all_onnx_files();
    assert_eq!(files.len(), 7, "{files:?}");
    for f in files {
        let g = load(&f);
        assert_eq!(g.opset, 17, "{}", f.display());
        assert_eq!(g.input.name, "input");
        assert_eq!(g.input.dims[0], None, "dynamic batch");
        assert_eq!(g.input.dims[1], Some(3));
        assert_eq!(g.output, "logits");
        assert!(g.int_initializers.is_empty());
        // Every node input is defined before use.
        let mut known: std::collections::HashSet<&str> = g.initializers.keys().map(String::as_str).collect();
        known.insert(&g.input.name);
        for n in &g.nodes {
            for i in &n.inputs {
                assert!(known.contains(i.as_str()), "{}: {i} used before definition", f.display());
            }
            known.extend(n.outputs.iter().map(String::as_str));
        }
    }
}

#[test]
fn vgg_tiny_structure_and_values() {
    let g = load(&golden("vgg_tiny.onnx"));
    #[rustfmt::skip]
    let want = [
        "Conv", "Relu", "MaxPool", "Conv", "Relu", "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool",
        "AveragePool", "Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm",
    ];
    assert_eq!(ops(&g), want);
    assert_eq!(g.input.dims, [None, Some(3), Some(32), Some(32)]);
    let first = &g.nodes[0];
    assert_eq!(first.name, "/0/Conv");
    assert_eq!(first.inputs, ["input", "0.weight", "0.bias"]);
    assert_eq!(first.op, OnnxOp::Conv { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1] });
    assert_eq!(g.nodes[2].op, OnnxOp::MaxPool { kernel_shape: [2, 2], strides: [2, 2], pads: [0; 4] });
    // PyTorch's AdaptiveAvgPool2d((1,1)) on a 1x1 map, exported without
    // count_include_pad: the default (false) applies.
    assert_eq!(
        g.nodes[11].op,
        OnnxOp::AveragePool { kernel_shape: [1, 1], strides: [1, 1], pads: [0; 4], count_include_pad: false }
    );
    assert_eq!(g.nodes[12].op, OnnxOp::Flatten { axis: 1 });
    assert_eq!(g.nodes[13].op, OnnxOp::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: true });

    assert_eq!(g.initializers.len(), 14);
    #[rustfmt::skip]
    let shapes: [(&str, &[usize]); 14] = [
        ("0.weight", &[8, 3, 3, 3]), ("0.bias", &[8]), ("3.weight", &[16, 8, 3, 3]), ("3.bias", &[16]),
        ("5.weight", &[16, 16, 3, 3]), ("5.bias", &[16]), ("8.weight", &[32, 16, 3, 3]), ("8.bias", &[32]),
        ("13.weight", &[32, 512]), ("13.bias", &[32]), ("16.weight", &[32, 32]), ("16.bias", &[32]),
        ("19.weight", &[10, 32]), ("19.bias", &[10]),
    ];
    for (name, shape) in shapes {
        assert_eq!(g.initializers[name].shape(), shape, "{name}");
    }
    let w = &g.initializers["0.weight"];
    assert_eq!(w[[0, 0, 0, 0]], -0.25426599383354187);
    assert_eq!(w[[7, 2, 2, 2]], 0.06070635840296745);
    assert!((w.sum() - 0.2914798851707019).abs() < 1e-12);
    let b = &g.initializers["19.bias"];
    assert_eq!(b[0], 0.0028987897094339132);
    assert!((b.sum() - -0.05258319294080138).abs() < 1e-12);
}

#[test]
fn avgpool_stride_rect_attributes() {
    let g = load(&golden("avgpool_stride_rect.onnx"));
    assert_eq!(g.input.dims, [None, Some(3), Some(40), Some(48)]);
    assert_eq!(
        g.nodes[2].op,
        OnnxOp::AveragePool { kernel_shape: [2, 2], strides: [2, 2], pads: [0; 4], count_include_pad: true }
    );
    assert_eq!(g.nodes[3].op, OnnxOp::Conv { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] });
    assert_eq!(count(&g, "Conv"), 4);
    assert_eq!(count(&g, "Gemm"), 3);
}

#[test]
fn vgg_tiny_bn_batchnorm() {
    let g = load(&golden("vgg_tiny_bn.onnx"));
    assert_eq!(count(&g, "BatchNormalization"), 4);
    assert_eq!(g.initializers.len(), 30);
    let bn = &g.nodes[1];
    assert_eq!(bn.inputs, ["/0/Conv_output_0", "1.weight", "1.bias", "1.running_mean", "1.running_var"]);
    // The exporter writes epsilon as f32 1e-5.
    assert_eq!(bn.op, OnnxOp::BatchNormalization { epsilon: 9.999999747378752e-06 });
}

#[test]
fn resnet_basic_tiny_structure() {
    let g = load(&golden("resnet_basic_tiny.onnx"));
    assert_eq!(g.initializers.len(), 32);
    assert_eq!(count(&g, "Conv"), 6);
    assert_eq!(count(&g, "BatchNormalization"), 6);
    assert_eq!(count(&g, "Add"), 2);
    let stem = &g.nodes[0];
    assert_eq!(stem.inputs, ["input", "m.conv1.weight"], "no bias");
    assert_eq!(stem.op, OnnxOp::Conv { kernel_shape: [7, 7], strides: [2, 2], pads: [3, 3, 3, 3] });
    assert_eq!(g.nodes[3].op, OnnxOp::MaxPool { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] });
    let add = g.nodes.iter().find(|n| n.name == "/Add").unwrap();
    assert_eq!(add.inputs, ["/bn2/BatchNormalization_output_0", "/MaxPool_output_0"]);
    let tail: Vec<_> = ops(&g).into_iter().rev().take(3).collect();
    assert_eq!(tail, ["Gemm", "Flatten", "GlobalAveragePool"]);
    let down = g.nodes.iter().find(|n| n.name == "/downsample/downsample.0/Conv").unwrap();
    assert_eq!(down.op, OnnxOp::Conv { kernel_shape: [1, 1], strides: [2, 2], pads: [0; 4] });
    let var = &g.initializers["m.bn1.running_var"];
    assert_eq!(var[0], 1.2957032918930054);
    assert!((var.sum() - 8.292490005493164).abs() < 1e-12);
    assert!((g.initializers["m.fc.weight"].sum() - -1.6324169469298795).abs() < 1e-12);
}

#[test]
fn resnet_bottleneck_tiny_structure() {
    let g = load(&golden("resnet_bottleneck_tiny.onnx"));
    assert_eq!(g.input.dims, [None, Some(3), Some(40), Some(40)]);
    assert_eq!(g.initializers.len(), 62);
    assert_eq!(count(&g, "Conv"), 12);
    assert_eq!(count(&g, "Add"), 3);
    assert_eq!(count(&g, "GlobalAveragePool"), 1);
}

#[test]
fn vgg16_narrow_and_digits() {
    let g = load(&golden("vgg16_narrow_224.onnx"));
    assert_eq!(g.input.dims, [None, Some(3), Some(224), Some(224)]);
    assert_eq!(count(&g, "Conv"), 13);
    assert_eq!(count(&g, "MaxPool"), 5);
    assert_eq!(g.initializers.len(), 32);

    let g = load(&root().join("data/digits_vgg.onnx"));
    assert_eq!(g.input.dims, [None, Some(3), Some(64), Some(64)]);
    assert_eq!(count(&g, "Conv"), 7);
    assert_eq!(count(&g, "Gemm"), 2);
    let w = &g.initializers["0.weight"];
    assert_eq!(w.shape(), [16, 3, 3, 3]);
    assert_eq!(w[[0, 0, 0, 0]], 0.09864774346351624);
    assert!((w.sum() - 7.399145238712663).abs() < 1e-12);
    assert_eq!(g.initializers["20.weight"].shape(), [128, 1024]);
}

#[test]
fn missing_file_is_an_io_error() {
    let e = read_onnx(&root().join("tests/data/no_such_model.onnx")).unwrap_err();
    assert!(matches!(e, rsp::RspError::Io { .. }), "{e}");
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = std::fs::read(golden("resnet_basic_tiny.onnx")).unwrap();
    // All short prefixes, then cut points spread over the file, and the
    // last bytes one by one (where the opset import lives).
    let cuts = (0..256).chain((256..bytes.len()).step_by(97)).chain(bytes.len() - 64..bytes.len());
    for cut in cuts {
        assert!(parse_onnx_bytes(&bytes[..cut], "<truncated>").is_err(), "cut at {cut} parsed");
    }
    assert!(parse_onnx_bytes(&bytes, "<whole>").is_ok());
}

fn flip_source() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(golden("resnet_basic_tiny.onnx")).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Random byte changes never panic; whatever parses is still valid.
    #[test]
    fn byte_flips_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = flip_source().to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(g) = parse_onnx_bytes(&bytes, "<flipped>") {
            prop_assert!(!g.nodes.is_empty());
            prop_assert!(g.nodes.len() <= rsp::limits::MAX_NODES);
        }
    }

    /// Flips confined to the graph structure (before the weight bytes, which
    /// flip harmlessly) exercise the validation paths more often.
    #[test]
    fn header_flips_never_panic(at in 0usize..2048, value in any::<u8>(), cut in 0usize..64) {
        let mut bytes = flip_source().to_vec();
        let i = at.min(bytes.len() - 1);
        bytes[i] = value;
        bytes.truncate(bytes.len() - cut);
        let _ = parse_onnx_bytes(&bytes, "<flipped>");
    }
}

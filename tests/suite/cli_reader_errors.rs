//! The CLI on the reader cases of issue 9: each bad file is exit status 1 and
//! exactly one short stderr line naming the problem (never a panic, abort or
//! a megabyte of quoted header); torchvision files load by `--arch` or by
//! their `arch` metadata.

use ndarray::Array4;
use rsp::io::npy::write_npy;
use rsp::layers::{BatchNorm2d, Conv2d, Layer, Linear};
use rsp::models::{ResNetConfig, WeightSource};
use rsp::Network;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path).to_str().unwrap().to_string()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn rsp(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rsp")).args(args).output().expect("the binary runs")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

/// A version-1 `.npy` file with the given header dictionary and data.
fn raw_npy(path: &Path, dict: &str, data: &[u8]) {
    let mut text = dict.as_bytes().to_vec();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(b' ');
    }
    text.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

/// Checks one failing run: status 1, one line, the expected words, bounded length.
fn assert_one_line(what: &str, o: &Output, words: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{what}: status {:?}, stderr {stderr:?}", o.status);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: stderr was {stderr:?}");
    assert!(stderr.contains(words), "{what}: expected `{words}` in {stderr:?}");
    assert!(stderr.len() < 1500, "{what}: a {}-byte message", stderr.len());
}

#[test]
fn bad_reader_inputs_are_one_line_and_exit_1() {
    let scratch_dir = crate::common::scratch("cli-reader-errors-bad");
    let dir = scratch_dir.path().to_path_buf();
    let p = |name: &str| dir.join(name);
    let model = repo("data/digits_vgg.safetensors");
    let out = s(&p("out.npy"));
    let attribute = |model: &str, input: &Path, dtype: &str| {
        args(&["attribute", "--model", model, "--input", &s(input), "--target", "1", "--out", &out, "--dtype", dtype])
    };

    let max = u64::MAX;
    raw_npy(
        &p("overflow.npy"),
        &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': (1, 0, {max}, {max}), }}"),
        &[],
    );
    raw_npy(
        &p("half.npy"),
        "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 3, 64, 64), }",
        &vec![0; 2 * 3 * 64 * 64],
    );
    let mut trailing = vec![0u8; 4 * 3 * 64 * 64];
    trailing.extend_from_slice(b"tail");
    raw_npy(&p("trailing.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 64, 64), }", &trailing);
    let big = Array4::<f64>::from_elem((1, 3, 64, 64), 1e300).into_dyn();
    write_npy(&p("big.npy"), &big).unwrap();
    // A 20 MB header: the message must not quote it.
    let junk = "x".repeat(20 << 20);
    let mut huge = b"\x93NUMPY\x02\x00".to_vec();
    huge.extend_from_slice(&((junk.len() + 1) as u32).to_le_bytes());
    huge.extend_from_slice(junk.as_bytes());
    huge.push(b'\n');
    std::fs::write(p("huge_header.npy"), huge).unwrap();
    let dims = vec!["1"; 20_000].join(", ");
    raw_npy(&p("rank.npy"), &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}"), &[0; 4]);
    // ONNX of 5 million empty initializers (10 MB).
    let mut onnx = vec![0x42, 2, 0x10, 13, 0x3A, 0x80, 0xAD, 0xE2, 0x04]; // graph of 10,000,000 bytes
    onnx.extend([0x2A, 0x00].repeat(5_000_000));
    std::fs::write(p("empty.onnx"), onnx).unwrap();
    // A model whose `arch` names an architecture its weights do not fit.
    let bytes = std::fs::read(&model).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st.tensors();
    let metadata = HashMap::from([("arch".to_string(), "vgg16".to_string())]);
    safetensors::serialize_to_file(tensors, Some(metadata), &p("vgg16_meta.safetensors")).unwrap();

    // A `layers` entry of 10 MB: the message quotes it, cut short.
    let layers = format!(r#"[{{"type": "gelu", "note": "{}"}}]"#, "y".repeat(10 << 20));
    let metadata = HashMap::from([("layers".to_string(), layers)]);
    safetensors::serialize_to_file(st.tensors(), Some(metadata), &p("long_layer.safetensors")).unwrap();

    let good = p("good.npy");
    write_npy(&good, &Array4::<f32>::zeros((1, 3, 64, 64)).into_dyn()).unwrap();
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "npy shape past the address space",
            attribute(&model, &p("overflow.npy"), "f32"),
            "overflows the address space",
        ),
        ("f16 npy", attribute(&model, &p("half.npy"), "f32"), "dtype '<f2' is not supported"),
        ("bytes after the npy data", attribute(&model, &p("trailing.npy"), "f32"), "4 bytes follow"),
        ("1e300 read as f32", attribute(&model, &p("big.npy"), "f32"), "overflows f32"),
        ("20 MB npy header", attribute(&model, &p("huge_header.npy"), "f32"), "malformed file"),
        ("npy of rank 20000", attribute(&model, &p("rank.npy"), "f32"), "rank 20000, more than the limit of 32"),
        ("a 10 MB layer entry", attribute(&s(&p("long_layer.safetensors")), &good, "f32"), "unknown variant `gelu`"),
        ("ONNX that expands in memory", args(&["info", "--model", &s(&p("empty.onnx"))]), "would need about"),
        (
            "arch metadata that does not fit",
            attribute(&s(&p("vgg16_meta.safetensors")), &good, "f32"),
            "features.0.weight",
        ),
        (
            "--arch that does not fit",
            {
                let mut a = attribute(&model, &good, "f32");
                a.extend(args(&["--arch", "vgg16"]));
                a
            },
            "features.0.weight",
        ),
        ("unknown --arch", args(&["info", "--model", &model, "--arch", "alexnet"]), "unknown architecture `alexnet`"),
        (
            "--arch with ONNX",
            args(&["info", "--model", &repo("data/digits_vgg.onnx"), "--arch", "vgg16"]),
            "not of an ONNX file",
        ),
        (
            "write error",
            {
                let mut a = attribute(&model, &good, "f32");
                a[8] = "/dev/full".into();
                a
            },
            "/dev/full: it exists and is not a regular file",
        ),
    ];
    for (what, a, words) in cases {
        assert_one_line(what, &rsp(&a), words);
    }
}

#[test]
fn evaluate_refuses_scenes_without_objects_and_never_prints_nan() {
    use safetensors::tensor::{Dtype, TensorView};
    let scratch_dir = crate::common::scratch("cli-reader-errors-eval");
    let dir = scratch_dir.path().to_path_buf();
    let input: Vec<u8> = vec![0; 4 * 3 * 64 * 64];
    let labels: Vec<u8> = vec![0; 4 * 10];
    let boxes: Vec<u8> = [-1i32, 0, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let masks = vec![0u8; 64 * 64];
    let views = vec![
        ("input", TensorView::new(Dtype::F32, vec![1, 3, 64, 64], &input).unwrap()),
        ("labels", TensorView::new(Dtype::F32, vec![1, 10], &labels).unwrap()),
        ("boxes", TensorView::new(Dtype::I32, vec![1, 1, 5], &boxes).unwrap()),
        ("masks", TensorView::new(Dtype::U8, vec![1, 1, 64, 64], &masks).unwrap()),
    ];
    let path = dir.join("no_objects.safetensors");
    safetensors::serialize_to_file(views, None::<HashMap<String, String>>, &path).unwrap();
    let o = rsp(&args(&[
        "evaluate",
        "--model",
        &repo("data/digits_vgg.safetensors"),
        "--scenes",
        &s(&path),
        "--method",
        "rsp",
    ]));
    assert_one_line("scenes without objects", &o, "hold no objects");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("NaN"));
}

/// Writes `net` (a torchvision-built network) as a `state_dict` file with
/// torchvision's tensor names.
fn save_state_dict(net: &Network<f32>, path: &Path, metadata: Option<HashMap<String, String>>) {
    use safetensors::tensor::{Dtype, TensorView};
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut put = |name: String, a: ndarray::ArrayViewD<f32>| {
        tensors.push((name, a.shape().to_vec(), a.iter().flat_map(|v| v.to_le_bytes()).collect()));
    };
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
        }
    }
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, sh, b)| (n.clone(), TensorView::new(Dtype::F32, sh.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, metadata, path).unwrap();
}

#[test]
fn torchvision_files_load_by_arch_flag_and_by_arch_metadata() {
    let scratch_dir = crate::common::scratch("cli-reader-errors-arch");
    let dir = scratch_dir.path().to_path_buf();
    let original = ResNetConfig::resnet18().build::<f32>(&WeightSource::HeNormal { seed: 5 }).unwrap();
    let plain = dir.join("resnet18.safetensors");
    save_state_dict(&original, &plain, None);
    let tagged = dir.join("resnet18_tagged.safetensors");
    save_state_dict(&original, &tagged, Some(HashMap::from([("arch".to_string(), "resnet18".to_string())])));

    // Library: the metadata route builds the same network as naming it.
    let by_name = Network::<f32>::load_torchvision(&plain, "resnet18").unwrap();
    let by_metadata = Network::<f32>::load(&tagged).unwrap();
    let x = Array4::from_shape_fn((1, 3, 32, 32), |(_, c, i, j)| ((c * 7 + i * 3 + j) % 13) as f32 / 13.0);
    assert_eq!(by_metadata.forward(x.view()).unwrap(), original.forward(x.view()).unwrap());
    assert_eq!(by_name.forward(x.view()).unwrap(), original.forward(x.view()).unwrap());

    // CLI: `--arch` on the plain file and the metadata on the tagged one print the same layers.
    let info = |model: &Path, extra: &[&str]| {
        let mut a = args(&["info", "--model", &s(model), "--input-shape", "3,32,32"]);
        a.extend(args(extra));
        let o = rsp(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).lines().skip(1).map(str::to_string).collect::<Vec<_>>()
    };
    let flagged = info(&plain, &["--arch", "resnet18"]);
    assert!(flagged.iter().any(|l| l.contains("conv1")), "{flagged:?}");
    assert_eq!(flagged, info(&tagged, &[]));
    // Without either, the message says how to name the architecture.
    let o = rsp(&args(&["info", "--model", &s(&plain), "--input-shape", "3,32,32"]));
    assert_one_line("no arch", &o, "--arch vgg16");
}

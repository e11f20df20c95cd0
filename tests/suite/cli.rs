//! The `rsp` binary: results through the CLI match the goldens, and every bad
//! input gives a non-zero status and exactly one line on stderr.

use crate::common;

use common::{data, read_tensors, rel_err, F32_TOL, F64_ONNX_BN_TOL, F64_TOL};
use ndarray::{concatenate, ArrayD, Axis};
use rsp::io::npy::{read_npy, write_npy};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rsp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rsp")).args(args).output().expect("the binary runs")
}

fn golden_input(case: &str, dir: &Path) -> (PathBuf, common::TensorFile) {
    let file = read_tensors(&data(&format!("golden/{case}.safetensors")));
    let x = file.tensors["input"].mapv(|v| v as f32);
    let path = dir.join("input.npy");
    write_npy(&path, &x).unwrap();
    (path, file)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn attribute_matches_the_golden_in_f64_and_f32() {
    let scratch_dir = crate::common::scratch("cli-golden");
    let dir = scratch_dir.path().to_path_buf();
    for case in ["vgg_tiny", "vgg_tiny_bn", "avgpool_stride_rect"] {
        let (input, file) = golden_input(case, &dir);
        let model = data(&format!("golden/{case}.safetensors"));
        let out = dir.join("r.npy");
        let target = &file.metadata["target"];
        let o = rsp(&[
            "attribute",
            "--model",
            s(&model),
            "--input",
            s(&input),
            "--target",
            target,
            "--out",
            s(&out),
            "--dtype",
            "f64",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: ArrayD<f64> = read_npy(&out).unwrap();
        assert!(rel_err(&r, &file.tensors["relevance_f64"]) <= F64_TOL, "{case} f64");
        let o = rsp(&["attribute", "--model", s(&model), "--input", s(&input), "--target", target, "--out", s(&out)]);
        assert!(o.status.success());
        let bytes = std::fs::read(&out).unwrap();
        assert!(String::from_utf8_lossy(&bytes[..128]).contains("<f4"), "f32 output by default");
        let r: ArrayD<f64> = read_npy(&out).unwrap();
        assert!(rel_err(&r, &file.tensors["relevance_f64"]) <= F32_TOL, "{case} f32");
    }
}

#[test]
fn attribute_reads_onnx_and_per_sample_targets() {
    let scratch_dir = crate::common::scratch("cli-onnx");
    let dir = scratch_dir.path().to_path_buf();
    let file = read_tensors(&data("golden/resnet_bottleneck_tiny.safetensors"));
    let input = dir.join("x.npy");
    write_npy(&input, &file.tensors["input"]).unwrap();
    let out = dir.join("r.npy");
    let model = data("golden/onnx/resnet_bottleneck_tiny.onnx");
    let o = rsp(&[
        "attribute",
        "--model",
        s(&model),
        "--input",
        s(&input),
        "--target",
        "3,3",
        "--out",
        s(&out),
        "--dtype",
        "f64",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: ArrayD<f64> = read_npy(&out).unwrap();
    assert!(rel_err(&r, &file.tensors["relevance_f64"]) <= F64_ONNX_BN_TOL);
}

#[test]
fn a_comma_list_gives_one_target_per_sample() {
    let scratch_dir = crate::common::scratch("cli-batch");
    let dir = scratch_dir.path().to_path_buf();
    let file = read_tensors(&data("golden/vgg_tiny.safetensors"));
    let x = &file.tensors["input"];
    let pair = concatenate(Axis(0), &[x.view(), x.view()]).unwrap();
    let input = dir.join("pair.npy");
    write_npy(&input, &pair).unwrap();
    let out = dir.join("r.npy");
    let model = data("golden/vgg_tiny.safetensors");
    let o = rsp(&[
        "attribute",
        "--model",
        s(&model),
        "--input",
        s(&input),
        "--target",
        "0,5",
        "--out",
        s(&out),
        "--dtype",
        "f64",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: ArrayD<f64> = read_npy(&out).unwrap();
    assert_eq!(r.shape(), &[2, 3, 32, 32]);
    // The golden target is 0: the first sample is the golden; the second (class 5) differs.
    let first = r.index_axis(Axis(0), 0).to_owned().insert_axis(Axis(0));
    assert!(rel_err(&first, &file.tensors["relevance_f64"]) <= F64_TOL);
    assert_ne!(r.index_axis(Axis(0), 0), r.index_axis(Axis(0), 1));
}

#[test]
fn the_comparative_start_options_run_and_change_the_map() {
    let scratch_dir = crate::common::scratch("cli-comparative");
    let dir = scratch_dir.path().to_path_buf();
    let (input, _) = golden_input("vgg_tiny", &dir);
    let model = data("golden/vgg_tiny.safetensors");
    let run = |extra: &[&str], name: &str| -> ArrayD<f64> {
        let out = dir.join(name);
        let mut args = vec!["attribute", "--model", s(&model), "--input", s(&input), "--target", "0", "--out", s(&out)];
        args.extend_from_slice(extra);
        let o = rsp(&args);
        assert!(o.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&o.stderr));
        read_npy(&out).unwrap()
    };
    let single = run(&[], "single.npy");
    let explicit = run(&["--start", "comparative", "--hostile", "3,5"], "explicit.npy");
    let top = run(&["--start", "comparative", "--hostile-top", "2"], "top.npy");
    assert_ne!(single, explicit);
    assert_ne!(single, top);
    assert!(explicit.iter().all(|v| v.is_finite()));
}

#[test]
fn info_lists_the_layers_and_the_start_layer() {
    let o = rsp(&["info", "--model", s(&common::repo("data/digits_vgg.safetensors"))]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("conv2d features.0 3→16"), "{text}");
    assert!(text.contains("start layer: #16 (output [64, 8, 8])"), "{text}");
    let o = rsp(&["info", "--model", s(&data("golden/onnx/resnet_basic_tiny.onnx"))]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8(o.stdout).unwrap().contains("add ←"));
}

#[test]
fn bad_input_gives_one_line_on_stderr_and_a_failure_status() {
    let scratch_dir = crate::common::scratch("cli-bad");
    let dir = scratch_dir.path().to_path_buf();
    let (input, _) = golden_input("vgg_tiny", &dir);
    let model = data("golden/vgg_tiny.safetensors");
    let out = dir.join("r.npy");
    let rank3 = dir.join("rank3.npy");
    write_npy(&rank3, &ndarray::Array3::<f32>::zeros((3, 32, 32)).into_dyn()).unwrap();
    let nan = dir.join("nan.npy");
    let mut x: ArrayD<f32> = read_npy(&input).unwrap();
    x[[0, 0, 0, 0]] = f32::NAN;
    write_npy(&nan, &x).unwrap();
    let junk = dir.join("junk.npy");
    std::fs::write(&junk, b"\x93NUMPY\x01\x00garbage").unwrap();
    let not_model = dir.join("not_a_model.safetensors");
    std::fs::write(&not_model, b"hello").unwrap();
    // `rsp attribute` with a model, an input, a target and extra flags.
    let attribute = |model: &str, input: &Path, target: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> =
            ["attribute", "--model", model, "--input", s(input), "--target", target, "--out", s(&out)]
                .iter()
                .map(|a| a.to_string())
                .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let m = s(&model);
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("missing model", attribute("nope.safetensors", &input, "0", &[])),
        ("corrupt model", attribute(s(&not_model), &input, "0", &[])),
        ("bad target", attribute(m, &input, "x", &[])),
        ("target out of range", attribute(m, &input, "12", &[])),
        ("too many targets", attribute(m, &input, "1,2", &[])),
        ("rank 3 input", attribute(m, &rank3, "0", &[])),
        ("NaN input", attribute(m, &nan, "0", &[])),
        ("corrupt npy", attribute(m, &junk, "0", &[])),
        ("hostile without comparative", attribute(m, &input, "0", &["--hostile", "1"])),
        ("bad dtype", attribute(m, &input, "0", &["--dtype", "f16"])),
        ("unwritable output", {
            let mut args = attribute(m, &input, "0", &[]);
            *args.last_mut().unwrap() = "/no/such/dir/r.npy".into();
            args
        }),
        ("unknown subcommand", vec!["explode".into()]),
        ("missing argument", vec!["attribute".into(), "--model".into(), m.into()]),
    ];
    for (what, args) in cases {
        let o = rsp(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: succeeded");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: stderr was {stderr:?}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}

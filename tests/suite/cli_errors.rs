//! Every kind of bad input to the `rsp` binary: a non-zero exit status and
//! exactly one line on stderr that names the problem, never a panic.

use ndarray::{Array2, Array4, ArrayD};
use rsp::io::npy::write_npy;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A `.npy` file with a hand-written header and raw data.
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

fn scene(n: usize, c: usize, h: usize, w: usize) -> ArrayD<f32> {
    Array4::from_shape_fn((n, c, h, w), |(n, c, i, j)| ((n + c * 3 + i * 5 + j * 7) % 11) as f32 / 11.0 - 0.4)
        .into_dyn()
}

#[test]
fn every_kind_of_bad_input_is_one_line_and_a_failure() {
    let scratch_dir = crate::common::scratch("cli-errors");
    let dir = scratch_dir.path().to_path_buf();
    let p = |name: &str| dir.join(name);
    let model = s(&repo("data/digits_vgg.safetensors"));
    let onnx = s(&repo("data/digits_vgg.onnx"));

    let good = p("good.npy");
    write_npy(&good, &scene(1, 3, 64, 64)).unwrap();
    let model_bytes = std::fs::read(&model).unwrap();
    let onnx_bytes = std::fs::read(&onnx).unwrap();

    // Damaged model files of each format.
    std::fs::write(p("truncated.safetensors"), &model_bytes[..model_bytes.len() / 2]).unwrap();
    std::fs::write(p("header_only.safetensors"), &model_bytes[..20]).unwrap();
    std::fs::write(p("empty.safetensors"), b"").unwrap();
    let mut huge_header = model_bytes.clone();
    huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(p("huge_header.safetensors"), huge_header).unwrap();
    std::fs::write(p("truncated.onnx"), &onnx_bytes[..onnx_bytes.len() / 3]).unwrap();
    std::fs::write(p("garbage.onnx"), b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").unwrap();
    // An unsupported operator: every Relu becomes a Selu (same length, names stay consistent).
    let mut selu = onnx_bytes.clone();
    for k in 0..selu.len() - 4 {
        if &selu[k..k + 4] == b"Relu" {
            selu[k] = b'S';
        }
    }
    std::fs::write(p("selu.onnx"), selu).unwrap();
    // A safetensors model whose layers metadata declares a padding of 10⁶:
    // the feature map would exceed the per-sample limit.
    let text =
        String::from_utf8_lossy(&model_bytes[8..8 + u64::from_le_bytes(model_bytes[..8].try_into().unwrap()) as usize])
            .to_string();
    let n = u64::from_le_bytes(model_bytes[..8].try_into().unwrap()) as usize;
    let huge_text = text.replacen("\\\"padding\\\": 1", "\\\"padding\\\": 1000000", 1).replacen(
        "\\\"padding\\\":1",
        "\\\"padding\\\":1000000",
        1,
    );
    let mut huge_pad = (huge_text.len() as u64).to_le_bytes().to_vec();
    huge_pad.extend_from_slice(huge_text.as_bytes());
    huge_pad.extend_from_slice(&model_bytes[8 + n..]);
    std::fs::write(p("huge_pad.safetensors"), huge_pad).unwrap();

    // Bad inputs.
    raw_npy(
        &p("huge_shape.npy"),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 3, 1000, 1000), }",
        &[0; 64],
    );
    raw_npy(
        &p("int64.npy"),
        "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 3, 64, 64), }",
        &vec![0; 8 * 3 * 64 * 64],
    );
    write_npy(&p("rank2.npy"), &Array2::<f32>::zeros((64, 64)).into_dyn()).unwrap();
    write_npy(&p("channels.npy"), &scene(1, 4, 64, 64)).unwrap();
    write_npy(&p("small.npy"), &scene(1, 3, 4, 4)).unwrap();
    write_npy(&p("empty_batch.npy"), &scene(0, 3, 64, 64)).unwrap();
    let mut nan = scene(1, 3, 64, 64);
    nan[[0, 2, 10, 10]] = f32::NAN;
    write_npy(&p("nan.npy"), &nan).unwrap();
    let mut inf = scene(1, 3, 64, 64);
    inf[[0, 0, 0, 1]] = f32::NEG_INFINITY;
    write_npy(&p("inf.npy"), &inf).unwrap();
    std::fs::write(p("truncated.npy"), &std::fs::read(&good).unwrap()[..500]).unwrap();

    let (good, out) = (s(&good), s(&p("out.npy")));
    let run_with = |model: &str, input: &str| -> Vec<String> {
        ["attribute", "--model", model, "--input", input, "--target", "1", "--out", &out]
            .iter()
            .map(|a| a.to_string())
            .collect()
    };
    let with_model = |name: &str| run_with(&s(&p(name)), &good);
    let with_input = |name: &str| run_with(&model, &s(&p(name)));
    let extra = |args: &[&str]| {
        let mut v = run_with(&model, &good);
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };

    // (what, arguments, a word the message must contain)
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("truncated safetensors", with_model("truncated.safetensors"), "malformed"),
        ("safetensors cut in its header", with_model("header_only.safetensors"), "malformed"),
        ("empty safetensors", with_model("empty.safetensors"), "malformed"),
        ("safetensors header length 2^64-1", with_model("huge_header.safetensors"), "malformed"),
        ("truncated ONNX", with_model("truncated.onnx"), "truncated.onnx"),
        ("garbage ONNX", with_model("garbage.onnx"), "garbage.onnx"),
        ("ONNX with an unsupported operator", with_model("selu.onnx"), "Selu"),
        ("a padding making a huge feature map", with_model("huge_pad.safetensors"), "limit"),
        ("model is a directory", run_with(&s(&dir), &good), "cannot access"),
        ("missing model", with_model("no_such_model.safetensors"), "cannot access"),
        ("missing input", with_input("no_such_input.npy"), "cannot access"),
        ("npy with a huge declared shape", with_input("huge_shape.npy"), "declares shape"),
        ("int64 npy", with_input("int64.npy"), "float32 or float64"),
        ("truncated npy", with_input("truncated.npy"), "malformed"),
        ("2-D input", with_input("rank2.npy"), "(N, C, H, W)"),
        (
            "wrong channel count",
            with_input("channels.npy"),
            "expected N×3×H×W (the model's input channels), found [1, 4, 64, 64]",
        ),
        ("input too small for the kernels", with_input("small.npy"), "does not fit"),
        ("empty batch", with_input("empty_batch.npy"), "empty"),
        ("NaN input", with_input("nan.npy"), "non-finite"),
        ("infinite input", with_input("inf.npy"), "non-finite"),
        (
            "target out of range",
            {
                let mut v = run_with(&model, &good);
                v[6] = "10".into();
                v
            },
            "out of range",
        ),
        (
            "unwritable output",
            {
                let mut v = run_with(&model, &good);
                v[8] = "/proc/rsp-cannot-write-here/out.npy".into();
                v
            },
            "cannot access",
        ),
        (
            "output is a directory",
            {
                let mut v = run_with(&model, &good);
                v[8] = s(&dir);
                v
            },
            "not a regular file",
        ),
        ("unknown flag", extra(&["--bogus"]), "--bogus"),
        ("bad dtype", extra(&["--dtype", "f16"]), "f16"),
        ("bad start", extra(&["--start", "sideways"]), "sideways"),
        ("negative --hostile-top", extra(&["--start", "comparative", "--hostile-top", "-1"]), "-1"),
        (
            "conflicting hostile flags",
            extra(&["--start", "comparative", "--hostile", "2", "--hostile-top", "1"]),
            "cannot be used",
        ),
        ("hostile class out of range", extra(&["--start", "comparative", "--hostile", "12"]), "out of range"),
        ("bad hostile list", extra(&["--start", "comparative", "--hostile", "2,,x"]), "--hostile"),
        (
            "bad --input-shape",
            vec!["info".into(), "--model".into(), model.clone(), "--input-shape".into(), "3,x".into()],
            "--input-shape",
        ),
        (
            "huge --input-shape",
            vec!["info".into(), "--model".into(), model.clone(), "--input-shape".into(), "3,100000,100000".into()],
            "limit",
        ),
        (
            "2-D --input-shape",
            vec!["info".into(), "--model".into(), model.clone(), "--input-shape".into(), "64,64".into()],
            "3×H×W, found [64, 64]",
        ),
        ("no subcommand", vec![], "subcommand is required"),
        ("a required argument missing", vec!["attribute".into(), "--input".into(), good.clone()], "--model"),
        (
            "--flip-baseline without --faithfulness",
            vec!["evaluate".into(), "--model".into(), model.clone(), "--flip-baseline".into(), "0.5".into()],
            "--faithfulness",
        ),
    ];
    for (what, args, word) in cases {
        let o = Command::new(env!("CARGO_BIN_EXE_rsp")).args(&args).output().expect("the binary runs");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: succeeded");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: stderr was {stderr:?}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(stderr.contains(word), "{what}: expected `{word}` in {stderr:?}");
    }
}

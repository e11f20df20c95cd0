//! The ONNX import paths MatMul (+Add bias), Reshape, Identity and Dropout on
//! small graphs made by `tools/make_onnx_cases.py`: each reads as its
//! Flatten/Gemm equivalent (bit for bit, forward and attribution) and gives
//! onnxruntime's recorded outputs; graphs that onnxruntime reads otherwise
//! (a column bias, a rank-3 bias, a Reshape that merges or splits samples,
//! allowzero) or that a fused bias would change (a MatMul output used twice)
//! are refused.

use ndarray::{ArrayD, Ix4};
use rsp::io::npy::read_npy;
use rsp::{Float, RspError, RspOptions, Target};
use std::path::PathBuf;

fn case(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx_ops").join(name)
}

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(case("cases.json")).unwrap()).unwrap()
}

fn cases(expect: &str) -> Vec<serde_json::Value> {
    let all = manifest()["cases"].as_array().unwrap().clone();
    all.into_iter().filter(|c| c["expect"] == expect).collect()
}

fn input<T: Float>() -> ndarray::Array4<T> {
    read_npy::<T>(&case("input.npy")).unwrap().into_dimensionality::<Ix4>().unwrap()
}

#[test]
fn every_supported_graph_gives_onnxruntimes_outputs() {
    let ok = cases("ok");
    assert_eq!(ok.len(), 6, "the generator's six supported graphs");
    for c in ok {
        let name = c["name"].as_str().unwrap();
        let expected: ArrayD<f64> = read_npy(&case(&format!("{name}.ort.npy"))).unwrap();
        let shape: Vec<usize> =
            c["onnxruntime_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(expected.shape(), shape.as_slice(), "{name}");
        let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let f64_logits =
            rsp::io::onnx::load::<f64>(case(&format!("{name}.onnx"))).unwrap().forward(input::<f64>().view());
        let f32_logits =
            rsp::io::onnx::load::<f32>(case(&format!("{name}.onnx"))).unwrap().forward(input::<f32>().view());
        let (f64_logits, f32_logits) = (f64_logits.unwrap(), f32_logits.unwrap().mapv(f64::from));
        for (what, got, tol) in [("f64", f64_logits, 1e-6), ("f32", f32_logits, 1e-6)] {
            assert_eq!(got.shape(), expected.shape(), "{name} {what}");
            let d = got.iter().zip(&expected).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            // onnxruntime computes in f32: agreement to f32 rounding of the sums.
            assert!(d <= tol * scale, "{name} {what}: max |ours − onnxruntime| = {d:.3e} (scale {scale:.3})");
        }
    }
}

#[test]
fn matmul_reshape_identity_and_dropout_read_exactly_as_flatten_and_gemm() {
    let reference = rsp::io::onnx::load::<f64>(case("flatten_gemm.onnx")).unwrap();
    let x = input::<f64>();
    let options = RspOptions::default();
    let expected = reference.explain(x.view(), Target::PerSample(vec![0, 2, 3]), &options).unwrap();
    let with_equivalent: Vec<_> = cases("ok").into_iter().filter(|c| c.get("equivalent").is_some()).collect();
    assert_eq!(with_equivalent.len(), 5);
    for c in with_equivalent {
        let name = c["name"].as_str().unwrap();
        assert_eq!(c["equivalent"], "flatten_gemm");
        let net = rsp::io::onnx::load::<f64>(case(&format!("{name}.onnx"))).unwrap();
        // Same layers (Identity and Dropout are aliases, the bias is fused into the linear layer).
        assert_eq!(net.len(), reference.len(), "{name}");
        let got = net.explain(x.view(), Target::PerSample(vec![0, 2, 3]), &options).unwrap();
        assert_eq!(got.logits, expected.logits, "{name}: logits");
        assert_eq!(got.relevance, expected.relevance, "{name}: relevance");
    }
}

#[test]
fn graphs_onnxruntime_reads_otherwise_are_refused() {
    let refused = cases("refused");
    let words = [
        ("matmul_add_column", "a constant of shape [4, 1] broadcast with the [N, 4] product would change its shape"),
        ("matmul_add_rank3", "a constant of shape [1, 1, 4]"),
        ("reshape_merge_batch", "reshape to [1, -1]: the first dimension must keep the batch size"),
        ("reshape_split_samples", "asks for 9 features, its input has [18]"),
        ("reshape_allowzero", "with allowzero a 0 is an empty dimension"),
        ("matmul_output_reused", "whose output feeds nothing else"),
    ];
    assert_eq!(refused.len(), words.len());
    for c in refused {
        let name = c["name"].as_str().unwrap();
        // onnxruntime either fails on the recorded batch or gives something other than [N, 4].
        let ort_differs = c.get("onnxruntime_error").is_some()
            || c["onnxruntime_shape"] != serde_json::json!([3, 4])
            || name == "matmul_output_reused";
        assert!(ort_differs, "{name}: {c}");
        let (_, word) = words.iter().find(|(n, _)| *n == name).unwrap();
        match rsp::io::onnx::load::<f64>(case(&format!("{name}.onnx"))) {
            Err(RspError::Model(m)) => assert!(m.contains(word), "{name}: {m}"),
            Err(e) => panic!("{name}: expected a model error, got {e}"),
            Ok(_) => panic!("{name}: loaded"),
        }
    }
}

//! Every ONNX export of a golden case gives the golden relevance through
//! `rsp::io::onnx::load` (float64 within 1e-13, or 1e-11 where the exporter
//! stored a batch norm's ε as float32; float32 within 1e-5; see `tests/suite/common`).

use crate::common;

use common::{data, read_tensors, rel_err, F32_TOL, F64_ONNX_BN_TOL, F64_TOL};
use ndarray::Ix4;
use rsp::{Float, RspOptions, Target};

/// (case, float64 tolerance).
const CASES: &[(&str, f64)] = &[
    ("vgg_tiny", F64_TOL),
    ("vgg_tiny_bn", F64_ONNX_BN_TOL),
    ("avgpool_stride_rect", F64_TOL),
    ("vgg16_narrow_224", F64_TOL),
    ("resnet_basic_tiny", F64_ONNX_BN_TOL),
    ("resnet_bottleneck_tiny", F64_ONNX_BN_TOL),
];

fn errors<T: Float>(case: &str) -> (f64, f64) {
    let file = read_tensors(&data(&format!("golden/{case}.safetensors")));
    let net = rsp::io::onnx::load::<T>(data(&format!("golden/onnx/{case}.onnx"))).unwrap();
    let target: Target = match serde_json::from_str::<serde_json::Value>(&file.metadata["target"]).unwrap() {
        serde_json::Value::Array(list) => {
            Target::PerSample(list.iter().map(|v| v.as_u64().unwrap() as usize).collect())
        }
        v => Target::Single(v.as_u64().unwrap() as usize),
    };
    let input = file.tensors["input"].mapv(T::of).into_dimensionality::<Ix4>().unwrap();
    let e = net.explain(input.view(), target, RspOptions::default()).unwrap();
    let widen = |a: ndarray::ArrayD<T>| a.mapv(|v| v.to_f64_exact());
    (
        rel_err(&widen(e.relevance.clone().unwrap().into_dyn()), &file.tensors["relevance_f64"]),
        rel_err(&widen(e.logits.into_dyn()), &file.tensors["logits_f64"]),
    )
}

#[test]
fn onnx_imports_match_the_goldens_in_float64() {
    for (case, tol) in CASES {
        let (rel, logits) = errors::<f64>(case);
        println!("{case} onnx f64: relevance {rel:.2e} logits {logits:.2e}");
        assert!(logits <= *tol, "{case}: logits differ by {logits:.3e}");
        assert!(rel <= *tol, "{case}: relevance differs by {rel:.3e}");
    }
}

#[test]
fn onnx_imports_match_the_goldens_in_float32() {
    for (case, _) in CASES {
        let (rel, logits) = errors::<f32>(case);
        println!("{case} onnx f32: relevance {rel:.2e} logits {logits:.2e}");
        assert!(logits <= F32_TOL, "{case}: logits differ by {logits:.3e}");
        assert!(rel <= F32_TOL, "{case}: relevance differs by {rel:.3e}");
    }
}

#[test]
fn the_digits_model_is_the_same_through_onnx_and_safetensors() {
    let a = rsp::io::onnx::load::<f64>(common::repo("data/digits_vgg.onnx")).unwrap();
    let b = rsp::io::safetensors::load::<f64>(common::repo("data/digits_vgg.safetensors")).unwrap();
    let scenes = read_tensors(&common::repo("data/scenes_public.safetensors"));
    let x = scenes.tensors["input"].slice(ndarray::s![0..2, .., .., ..]).to_owned();
    let ea = a.explain(x.view(), 3, RspOptions::default()).unwrap();
    let eb = b.explain(x.view(), 3, RspOptions::default()).unwrap();
    assert_eq!(ea.start_layer, eb.start_layer);
    assert!(rel_err(&ea.relevance.clone().unwrap().into_dyn(), &eb.relevance.clone().unwrap().into_dyn()) < 1e-12);
}

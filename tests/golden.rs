//! Golden parity: every case computed by the authors' released code
//! (`tests/data/golden/*.safetensors` with `layers` metadata) is reproduced in
//! float64 within 1e-9 and in float32 within 1e-5 (3e-3 at 224×224), relative max-norm.

mod common;

use common::{data, read_tensors, rel_err};
use ndarray::{ArrayD, Ix4};
use rsp::{Float, RspOptions};

const CASES: &[&str] = &["vgg_tiny", "vgg_tiny_bn", "avgpool_stride_rect", "vgg16_narrow_224"];

fn f32_tolerance(case: &str) -> f64 {
    if case == "vgg16_narrow_224" {
        3e-3
    } else {
        1e-5
    }
}

struct Outcome {
    relevance: f64,
    logits: f64,
    start: f64,
    traces: Vec<(usize, f64)>,
}

fn run<T: Float>(case: &str) -> Outcome {
    let path = data(&format!("golden/{case}.safetensors"));
    let file = read_tensors(&path);
    let net = rsp::io::safetensors::load::<T>(&path).unwrap();
    let target: usize = file.metadata["target"].parse().unwrap();
    let input = file.tensors["input"].mapv(T::of).into_dimensionality::<Ix4>().unwrap();
    let opts = RspOptions { keep_layer_relevances: true, ..Default::default() };
    let e = net.explain(input.view(), target, &opts).unwrap();
    assert_eq!(e.start_layer, Some(file.metadata["start_layer"].parse::<usize>().unwrap()));
    let widen = |a: &ArrayD<T>| a.mapv(|v| v.to_f64_exact());
    let mut traces = Vec::new();
    for (k, rel) in e.layer_relevances[0].iter().enumerate() {
        if let (Some(rel), Some(expected)) = (rel, file.tensors.get(&format!("trace.{k}_f64"))) {
            traces.push((k, rel_err(&widen(rel).insert_axis(ndarray::Axis(0)), expected)));
        }
    }
    Outcome {
        relevance: rel_err(&widen(&e.relevance.clone().unwrap().into_dyn()), &file.tensors["relevance_f64"]),
        logits: rel_err(&widen(&e.logits.into_dyn()), &file.tensors["logits_f64"]),
        start: rel_err(&widen(e.start_relevance.as_ref().unwrap()), &file.tensors["start_relevance_f64"]),
        traces,
    }
}

#[test]
fn float64_matches_the_reference_within_1e9() {
    for case in CASES {
        let o = run::<f64>(case);
        println!("{case} f64: relevance {:.2e} logits {:.2e} start {:.2e}", o.relevance, o.logits, o.start);
        for (k, err) in &o.traces {
            assert!(*err <= 1e-9, "{case}: trace.{k} differs by {err:.3e}");
        }
        assert!(o.logits <= 1e-9, "{case}: logits differ by {:.3e}", o.logits);
        assert!(o.start <= 1e-9, "{case}: start relevance differs by {:.3e}", o.start);
        assert!(o.relevance <= 1e-9, "{case}: relevance differs by {:.3e}", o.relevance);
    }
}

#[test]
fn float32_matches_the_reference() {
    for case in CASES {
        let o = run::<f32>(case);
        let tol = f32_tolerance(case);
        println!("{case} f32: relevance {:.2e} logits {:.2e} start {:.2e}", o.relevance, o.logits, o.start);
        assert!(o.logits <= 1e-5, "{case}: logits differ by {:.3e}", o.logits);
        assert!(o.start <= tol, "{case}: start relevance differs by {:.3e}", o.start);
        assert!(o.relevance <= tol, "{case}: relevance differs by {:.3e} (tolerance {tol:.0e})", o.relevance);
    }
}

#[test]
fn the_automatic_start_layer_is_the_reference_one() {
    for case in CASES {
        let path = data(&format!("golden/{case}.safetensors"));
        let file = read_tensors(&path);
        let mut net = rsp::io::safetensors::load::<f64>(&path).unwrap();
        net.set_start_layer(None);
        assert_eq!(
            net.default_start_layer().unwrap(),
            file.metadata["start_layer"].parse::<usize>().unwrap(),
            "{case}"
        );
    }
}

//! The CUDA backend (feature `cuda`). The tests that need a device are
//! ignored by default and run by `scripts/device-check.sh` on a GPU machine
//! (`cargo test --features cuda -- --ignored cuda`); the one that runs
//! everywhere checks that a machine without CUDA gets a typed error.
//!
//! Parity (the bar): every golden case, RSP with both starts, in
//! float64 within 1e-9 of the reference and in float32 within the CPU's
//! float32 tolerance; the ONNX exports the same; every other method within
//! 1e-9 of the CPU backend (which matches its own goldens); two runs give the
//! same bits.

use crate::common;

use common::{data, read_tensors, rel_err, F32_TOL};
use rsp::backend::{Backend, CudaBackend};
use rsp::ndarray::{ArrayD, Ix4};
use rsp::{Float, HostileClasses, Method, Network, RspError, RspOptions, StartRule, Target};

/// The float64 bar against the reference.
const CUDA_F64_TOL: f64 = 1e-9;

const CASES: &[&str] = &[
    "vgg_tiny",
    "vgg_tiny_bn",
    "avgpool_stride_rect",
    "vgg16_narrow_224",
    "resnet_basic_tiny",
    "resnet_bottleneck_tiny",
];

fn gpu() -> CudaBackend {
    CudaBackend::new(0).expect("a CUDA device (these tests are run by scripts/device-check.sh)")
}

#[test]
fn without_cuda_the_backend_is_a_typed_error_not_a_crash() {
    // On a machine with a device this builds the backend; without one (CI)
    // it must say so with a typed error rather than panic in the loader.
    match CudaBackend::new(0) {
        Ok(gpu) => assert!(!gpu.device_name().is_empty()),
        Err(e) => {
            assert!(matches!(e, RspError::Backend { .. }), "{e:?}");
            assert!(e.to_string().contains("cuda"), "{e}");
        }
    }
}

fn target_of(metadata: &str) -> Target {
    match serde_json::from_str::<serde_json::Value>(metadata).unwrap() {
        serde_json::Value::Array(list) => {
            Target::PerSample(list.iter().map(|v| v.as_u64().unwrap() as usize).collect())
        }
        v => Target::Single(v.as_u64().unwrap() as usize),
    }
}

/// Relevance, start relevance and logits of `case` on the GPU against the
/// reference's float64 values.
fn golden_errors<T: Float>(case: &str, onnx: bool) -> [f64; 3]
where
    CudaBackend: Backend<T>,
{
    let path = data(&format!("golden/{case}.safetensors"));
    let file = read_tensors(&path);
    let net: Network<T> = if onnx {
        #[cfg(feature = "onnx")]
        let net = rsp::io::onnx::load::<T>(data(&format!("golden/onnx/{case}.onnx"))).unwrap();
        #[cfg(not(feature = "onnx"))]
        let net = unreachable!("the ONNX cases need the onnx feature");
        net
    } else {
        rsp::io::safetensors::load::<T>(&path).unwrap()
    };
    let net = net.with_backend(gpu());
    let input = file.tensors["input"].mapv(T::of).into_dimensionality::<Ix4>().unwrap();
    let e = net.explain(input.view(), target_of(&file.metadata["target"]), RspOptions::default()).unwrap();
    let widen = |a: ArrayD<T>| a.mapv(|v| v.to_f64_exact());
    [
        rel_err(&widen(e.relevance.unwrap().into_dyn()), &file.tensors["relevance_f64"]),
        rel_err(&widen(e.start_relevance.unwrap()), &file.tensors["start_relevance_f64"]),
        rel_err(&widen(e.logits.into_dyn()), &file.tensors["logits_f64"]),
    ]
}

#[test]
#[ignore = "needs a CUDA device"]
fn cuda_golden_parity_in_float64_and_float32() {
    let mut worst = [0.0f64; 2];
    for case in CASES {
        let f64_errs = golden_errors::<f64>(case, false);
        let f32_errs = golden_errors::<f32>(case, false);
        println!("cuda golden {case}: f64 {f64_errs:?} f32 {f32_errs:?} (relevance, start, logits)");
        assert!(f64_errs.iter().all(|&e| e <= CUDA_F64_TOL), "{case} f64: {f64_errs:?}");
        assert!(f32_errs.iter().all(|&e| e <= F32_TOL), "{case} f32: {f32_errs:?}");
        worst[0] = worst[0].max(f64_errs[0]);
        worst[1] = worst[1].max(f32_errs[0]);
    }
    println!(
        "{{\"check\":\"cuda_golden\",\"cases\":{},\"worst_f64\":{:.3e},\"worst_f32\":{:.3e}}}",
        CASES.len(),
        worst[0],
        worst[1]
    );
}

#[test]
#[ignore = "needs a CUDA device"]
#[cfg(feature = "onnx")]
fn cuda_onnx_exports_match_the_goldens() {
    let mut worst = 0.0f64;
    for case in CASES {
        let errs = golden_errors::<f64>(case, true);
        println!("cuda onnx {case}: f64 {errs:?}");
        // The exporter stores a batch norm's ε in float32 (1e-11 on the CPU).
        assert!(errs.iter().all(|&e| e <= CUDA_F64_TOL), "{case} onnx: {errs:?}");
        worst = worst.max(errs[0]);
    }
    println!("{{\"check\":\"cuda_onnx\",\"cases\":{},\"worst_f64\":{worst:.3e}}}", CASES.len());
}

/// Every method, with RSP's two starts.
fn methods() -> Vec<Method> {
    let mut m = Method::ALL.to_vec();
    m.push(Method::Rsp(RspOptions { start: StartRule::Comparative(HostileClasses::TopK(2)), ..Default::default() }));
    m
}

#[test]
#[ignore = "needs a CUDA device"]
fn cuda_every_method_agrees_with_the_cpu_backend() {
    let mut worst = 0.0f64;
    let mut count = 0;
    for case in ["vgg_tiny_bn", "avgpool_stride_rect", "resnet_basic_tiny", "resnet_bottleneck_tiny"] {
        let path = data(&format!("golden/{case}.safetensors"));
        let x = read_tensors(&path).tensors["input"].clone().into_dimensionality::<Ix4>().unwrap();
        let shifted = x.mapv(|v| 0.8 * v - 0.05);
        let x = rsp::ndarray::concatenate(rsp::ndarray::Axis(0), &[x.view(), shifted.view()]).unwrap();
        let cpu = Network::<f64>::load(&path).unwrap();
        let dev = cpu.clone().with_backend(gpu());
        for method in methods() {
            let a = dev.explain(&x, Target::Predicted, &method).unwrap();
            let b = cpu.explain(&x, Target::Predicted, &method).unwrap();
            assert_eq!(a.targets, b.targets, "{case} {method}");
            let rel = match (&a.relevance, &b.relevance) {
                (Some(a), Some(b)) => rel_err(&a.clone().into_dyn(), &b.clone().into_dyn()),
                _ => 0.0,
            };
            let maps = rel_err(&a.heatmaps.into_dyn(), &b.heatmaps.into_dyn());
            println!("cuda vs cpu {case} {method}: relevance {rel:.2e} maps {maps:.2e}");
            assert!(rel <= CUDA_F64_TOL && maps <= CUDA_F64_TOL, "{case} {method}: {rel:.3e} {maps:.3e}");
            worst = worst.max(rel).max(maps);
            count += 1;
        }
    }
    println!("{{\"check\":\"cuda_methods\",\"runs\":{count},\"worst_vs_cpu\":{worst:.3e}}}");
}

#[test]
#[ignore = "needs a CUDA device"]
fn cuda_two_runs_give_the_same_bits() {
    let path = data("golden/vgg16_narrow_224.safetensors");
    let x = read_tensors(&path).tensors["input"].mapv(|v| v as f32).into_dimensionality::<Ix4>().unwrap();
    let x = rsp::ndarray::concatenate(rsp::ndarray::Axis(0), &[x.view(), x.mapv(|v| 0.5 * v).view()]).unwrap();
    let net = rsp::io::safetensors::load::<f32>(&path).unwrap().with_backend(gpu());
    let runs: Vec<_> = (0..2).map(|_| net.explain(&x, 0, RspOptions::default()).unwrap().relevance.unwrap()).collect();
    assert_eq!(runs[0], runs[1]);
    // The same sample alone: within rounding of its row in the batch (cuBLAS
    // may choose another algorithm for another batch size).
    let alone = net.explain(x.slice(rsp::ndarray::s![0..1, .., .., ..]), 0, RspOptions::default()).unwrap();
    let alone = alone.relevance.unwrap().mapv(f64::from).into_dyn();
    let row = runs[0].slice(rsp::ndarray::s![0..1, .., .., ..]).mapv(f64::from).into_dyn();
    let err = rel_err(&alone, &row);
    println!("{{\"check\":\"cuda_determinism\",\"same_bits\":true,\"alone_vs_batch\":{err:.3e}}}");
    assert!(err <= F32_TOL, "sample alone vs in its batch: {err:.3e}");
}

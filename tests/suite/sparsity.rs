//! The CPU backend's sparse sectional kernels (issue #12) against the dense
//! GEMMs (`DenseCpuBackend`, an independent formulation of the same products):
//! on a VGG-like network and on the shipped trained digits model, the
//! automatic choice takes the sparse kernels where the relevance is sparse
//! (below each max-pool) and gives the dense results up to summation order.
//! `backend_suite!(dense_cpu, …)` adds the goldens and every method.

use ndarray::{s, Array1, Array2, Array4, Ix4};
use rsp::backend::{record_sectional_calls, ConvGeometry, DenseCpuBackend, SPARSE_DENSITY};
use rsp::layers::{Conv2d, Flatten, Linear, MaxPool2d, Relu};
use rsp::{Float, Network, RspOptions};
use std::path::PathBuf;

use crate::common::noise;

/// conv-relu-conv-relu-pool twice, then a classifier: 32×32 inputs.
fn network<T: Float>() -> Network<T> {
    let mut net = Network::<T>::new();
    let mut seed = 11u64;
    let mut conv = |net: &mut Network<T>, o: usize, c: usize| {
        let scale = (2.0 / (9 * c) as f64).sqrt();
        let w = Array4::from_shape_fn((o, c, 3, 3), |_| {
            seed += 1;
            T::of(noise(seed) * scale)
        });
        let b = Array1::from_shape_fn(o, |k| T::of(0.02 * noise(k as u64 + 500)));
        net.push(Conv2d::new(format!("c{o}x{c}"), w, Some(b), ConvGeometry::square(1, 1)).unwrap());
        net.push(Relu);
    };
    conv(&mut net, 24, 3);
    conv(&mut net, 40, 24);
    net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
    conv(&mut net, 72, 40);
    conv(&mut net, 72, 72);
    net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
    net.push(Flatten);
    let fc = Array2::from_shape_fn((6, 72 * 64), |(i, j)| T::of(noise(9000 + (i * 4608 + j) as u64) * 0.05));
    net.push(Linear::new("fc", fc, None).unwrap());
    net
}

fn max_rel<T: Float>(a: &ndarray::Array4<T>, b: &ndarray::Array4<T>) -> f64 {
    let scale = b.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.to_f64_exact().abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x.to_f64_exact() - y.to_f64_exact()).abs())) / scale
}

/// Explains `x` on the CPU backend (recording the sectional calls) and on the
/// dense one; returns (sparse calls seen, automatic result, dense result).
fn both<T: Float>(net: &Network<T>, x: &Array4<T>, targets: Vec<usize>) -> (usize, Array4<T>, Array4<T>) {
    let dense_net = net.clone().with_backend(DenseCpuBackend);
    let (auto, calls) = record_sectional_calls(|| net.explain(x, targets.clone(), RspOptions::default()).unwrap());
    let dense = dense_net.explain(x, targets, RspOptions::default()).unwrap();
    // Other tests may run meanwhile: count only calls on this input's shapes.
    let sparse = calls.iter().filter(|c| c.sparse && c.density < SPARSE_DENSITY).count();
    (sparse, auto.relevance.unwrap(), dense.relevance.unwrap())
}

#[test]
fn below_a_max_pool_the_sparse_kernels_run_and_give_the_dense_results() {
    let net = network::<f64>();
    let x = Array4::from_shape_fn((2, 3, 32, 32), |(n, c, i, j)| noise((((n * 3 + c) * 32 + i) * 32 + j) as u64 + 3));
    let (sparse, auto, dense) = both(&net, &x, vec![1, 4]);
    assert!(sparse >= 2, "the layers before both pools of both samples take the sparse kernels ({sparse} calls)");
    let err = max_rel(&auto, &dense);
    assert!(err <= 1e-12, "sparse and dense kernels differ by {err:e}");
    assert_ne!(auto, dense, "the bits differ: the sparse kernels did run");
    // Conservation (the rules' own law) holds on the sparse path as on the dense.
    let total: f64 = auto.slice(s![0, .., .., ..]).sum();
    let dense_total: f64 = dense.slice(s![0, .., .., ..]).sum();
    assert!((total - dense_total).abs() <= 1e-12 * dense_total.abs().max(1.0));
    // f32 through both paths stays within f32 rounding of the f64 result.
    let net32 = network::<f32>();
    let (_, auto32, dense32) = both(&net32, &x.mapv(|v| v as f32), vec![1, 4]);
    let auto32 = auto32.mapv(|v| v as f64);
    assert!(max_rel(&auto32, &auto) <= 1e-4 && max_rel(&dense32.mapv(|v| v as f64), &dense) <= 1e-4);
}

#[test]
fn the_trained_digits_model_agrees_on_both_kernels() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let net = Network::<f64>::load(root.join("data/digits_vgg.safetensors")).unwrap();
    let bytes = std::fs::read(root.join("data/scenes_public.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("input").unwrap();
    let values: Vec<f64> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect();
    let scenes = ndarray::ArrayD::from_shape_vec(t.shape(), values).unwrap().into_dimensionality::<Ix4>().unwrap();
    let x = scenes.slice(s![0..2, .., .., ..]).to_owned();
    let (sparse, auto, dense) = both(&net, &x, vec![3, 7]);
    assert!(sparse >= 1, "a trained network's relevance is sparse below its pools");
    let err = max_rel(&auto, &dense);
    assert!(err <= 1e-12, "digits: sparse and dense kernels differ by {err:e}");
}

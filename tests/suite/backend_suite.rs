//! One suite for every backend (as burn's backend tests): `backend_suite!`
//! instantiates the same checks for each backend, so a new backend (a CUDA
//! one) adds one line at the bottom and inherits them all:
//! * the golden parity cases computed by the authors' released code (VGG and
//!   ResNet graphs), in float64 within the golden tolerance (an independent oracle);
//!   The batch forward pass (on the backend's tensors) gives the reference's
//!   logits, and each sample's bits alone;
//! * every method on a VGG and a ResNet graph against the CPU backend (the
//!   default; for the CPU backend itself the comparison is with a second run,
//!   so it must be bit-identical).

use crate::common;

use common::{data, read_tensors, rel_err, F64_TOL};
use rsp::backend::Backend;
use rsp::ndarray::{Array4, ArrayD, Axis, Ix4};
use rsp::{HostileClasses, Method, Network, RspOptions, StartRule, Target};

/// Every method, with RSP's two starts and LRP-0.
fn methods() -> Vec<Method> {
    let mut m = Method::ALL.to_vec();
    m.push(Method::LrpEpsilon(0.0));
    m.push(Method::Rsp(RspOptions { start: StartRule::Comparative(HostileClasses::TopK(2)), ..Default::default() }));
    m
}

/// The golden case's network and a batch of two: its input and a shifted copy.
fn golden_batch(case: &str) -> (Network<f64>, Array4<f64>) {
    let path = data(&format!("golden/{case}.safetensors"));
    let x = read_tensors(&path).tensors["input"].clone().into_dimensionality::<Ix4>().unwrap();
    let shifted = x.mapv(|v| 0.8 * v - 0.05);
    (Network::load(&path).unwrap(), rsp::ndarray::concatenate(Axis(0), &[x.view(), shifted.view()]).unwrap())
}

fn golden_parity(backend: impl Backend<f64> + Clone + 'static) {
    for case in ["vgg_tiny", "vgg_tiny_bn", "avgpool_stride_rect", "resnet_basic_tiny", "resnet_bottleneck_tiny"] {
        let path = data(&format!("golden/{case}.safetensors"));
        let file = read_tensors(&path);
        let net = Network::<f64>::load(&path).unwrap().with_backend(backend.clone());
        // One class (VGG cases) or one per sample (ResNet cases).
        let target: Vec<usize> = match file.metadata["target"].parse::<usize>() {
            Ok(t) => vec![t],
            Err(_) => serde_json::from_str(&file.metadata["target"]).unwrap(),
        };
        let input = file.tensors["input"].clone().into_dimensionality::<Ix4>().unwrap();
        let e = net.explain(&input, target, RspOptions::default()).unwrap();
        let err = rel_err(&e.relevance.unwrap().into_dyn(), &file.tensors["relevance_f64"]);
        assert!(
            err <= F64_TOL,
            "{case} on {}: relevance differs from the reference by {err:.3e}",
            net.backend().name()
        );
        let err = rel_err(e.start_relevance.as_ref().unwrap(), &file.tensors["start_relevance_f64"]);
        assert!(err <= F64_TOL, "{case}: start relevance differs by {err:.3e}");
        // The batch forward pass on the backend: the reference's logits, the
        // bits of the attribution's forward pass, and each sample's alone.
        let logits = net.forward(&input).unwrap();
        let err = rel_err(&logits.clone().into_dyn(), &file.tensors["logits_f64"]);
        assert!(err <= F64_TOL, "{case}: batch forward logits differ by {err:.3e}");
        assert_eq!(logits, e.logits, "{case}: the forward pass and the attribution's differ");
        for n in 0..input.shape()[0] {
            let alone = net.forward(input.slice(rsp::ndarray::s![n..n + 1, .., .., ..])).unwrap();
            assert_eq!(alone.row(0), logits.row(n), "{case}: sample {n} alone differs from its batch");
        }
    }
}

/// Relative max-norm distance of two optional results (both absent: 0).
fn distance(a: &Option<ArrayD<f64>>, b: &Option<ArrayD<f64>>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => rel_err(a, b),
        (None, None) => 0.0,
        _ => f64::INFINITY,
    }
}

fn methods_agree_with_the_cpu_backend(backend: impl Backend<f64> + Clone + 'static, tolerance: f64) {
    for case in ["vgg_tiny_bn", "resnet_basic_tiny", "resnet_bottleneck_tiny"] {
        let (cpu, x) = golden_batch(case);
        let other = cpu.clone().with_backend(backend.clone());
        for method in methods() {
            let a = other.explain(&x, Target::Predicted, &method).unwrap();
            let b = cpu.explain(&x, Target::Predicted, &method).unwrap();
            let what = format!("{case}, {method} on {}", other.backend().name());
            assert_eq!(a.targets, b.targets, "{what}");
            assert_eq!(a.hostile_classes, b.hostile_classes, "{what}");
            let errs = [
                distance(&a.relevance.map(|r| r.into_dyn()), &b.relevance.map(|r| r.into_dyn())),
                rel_err(&a.heatmaps.into_dyn(), &b.heatmaps.into_dyn()),
                rel_err(&a.logits.into_dyn(), &b.logits.into_dyn()),
                distance(&a.start_relevance, &b.start_relevance),
            ];
            assert!(errs.iter().all(|&e| e <= tolerance), "{what}: relevance, maps, logits, start differ by {errs:?}");
        }
    }
}

/// The suite for one backend: `$backend` is an expression of its type,
/// `$tolerance` how far (relative max-norm) it may be from the CPU backend.
macro_rules! backend_suite {
    ($name:ident, $backend:expr, $tolerance:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn golden_parity_in_float64() {
                golden_parity($backend);
            }

            #[test]
            fn every_method_agrees_with_the_cpu_backend() {
                methods_agree_with_the_cpu_backend($backend, $tolerance);
            }
        }
    };
}

backend_suite!(cpu, rsp::backend::CpuBackend, 0.0);
// The reference sums in another order (rounding ~1e-16 relative); LRP-0 divides
// by unstabilised z, which amplifies that where z is near 0 (6.8e-12 seen on
// the bottleneck ResNet), hence 1e-10 rather than the golden 1e-13.
backend_suite!(reference, rsp::backend::ReferenceBackend, 1e-10);
// The dense GEMMs only: the CPU backend's sparse kernels sum in another order.
backend_suite!(dense_cpu, rsp::backend::DenseCpuBackend, 1e-10);

/// A host backend with the required kernels only (the CPU's): every fused
/// rule runs as the trait's default composes it from the primitives
/// (`rsp::backend::composed`), which a new backend inherits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PrimitivesOnly;

impl rsp::backend::Backend<f64> for PrimitivesOnly {
    fn name(&self) -> &'static str {
        "primitives-only"
    }
    fn conv2d(
        &self,
        x: rsp::ndarray::ArrayView3<f64>,
        w: rsp::ndarray::ArrayView4<f64>,
        g: &rsp::backend::ConvGeometry,
    ) -> rsp::Result<rsp::ndarray::Array3<f64>> {
        rsp::backend::CpuBackend.conv2d(x, w, g)
    }
    fn conv2d_input_adjoint(
        &self,
        s: rsp::ndarray::ArrayView3<f64>,
        w: rsp::ndarray::ArrayView4<f64>,
        g: &rsp::backend::ConvGeometry,
        hw: (usize, usize),
    ) -> rsp::Result<rsp::ndarray::Array3<f64>> {
        rsp::backend::CpuBackend.conv2d_input_adjoint(s, w, g, hw)
    }
    fn conv2d_weight_grad(
        &self,
        x: rsp::ndarray::ArrayView3<f64>,
        r: rsp::ndarray::ArrayView3<f64>,
        g: &rsp::backend::ConvGeometry,
        k: (usize, usize),
    ) -> rsp::Result<rsp::ndarray::Array4<f64>> {
        rsp::backend::CpuBackend.conv2d_weight_grad(x, r, g, k)
    }
    fn matmul(
        &self,
        a: rsp::ndarray::ArrayView2<f64>,
        b: rsp::ndarray::ArrayView2<f64>,
    ) -> rsp::Result<rsp::ndarray::Array2<f64>> {
        rsp::backend::CpuBackend.matmul(a, b)
    }
}

// The composition sums in another order than the fused kernels (rounding
// ~1e-16 relative), amplified as for the reference backend.
backend_suite!(primitives_only, PrimitivesOnly, 1e-10);

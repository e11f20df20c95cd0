//! RAP (Relative Attributing Propagation) against its authors' released code:
//! the goldens of `tests/data/golden/rap/` (computed by the released
//! `RAP_relprop`, README in `tests/data/golden/README.md`), conservation of the
//! target's logit (also through residual sums), the library's two entry points
//! and the CLI.

use crate::common;

use common::{data, read_tensors, rel_err, F32_TOL, F64_TOL};
use ndarray::{Array4, ArrayD, Axis, Ix4};
use rsp::attribution::Rap;
use rsp::io::npy::{read_npy, write_npy};
use rsp::{Float, Method, Network};
use std::process::Command;

const CASES: &[&str] = &["rap_vgg_tiny", "rap_vgg_tiny_bn", "rap_avgpool_stride_rect"];

/// The golden README's tolerances (relative max-norm) for RAP: float64 against
/// `relevance_f64`, and float32 against it (the reference's own float32 run is
/// ≤ 1.2e-6 away from its float64 one). Achieved: ≤ 1.0e-15 in float64 and
/// ≤ 4.4e-7 in float32 on the three cases.
const RAP_F64_TOL: f64 = 1e-9;
const RAP_F32_TOL: f64 = 1e-4;

struct Case<T: Float> {
    net: Network<T>,
    input: Array4<T>,
    target: usize,
    file: common::TensorFile,
}

fn case<T: Float>(name: &str) -> Case<T> {
    let path = data(&format!("golden/rap/{name}.safetensors"));
    let file = read_tensors(&path);
    assert_eq!(file.metadata["method"], "rap");
    let net = Network::<T>::load(&path).unwrap();
    let target = file.metadata["target"].parse().unwrap();
    let input = file.tensors["input"].mapv(T::of).into_dimensionality::<Ix4>().unwrap();
    Case { net, input, target, file }
}

fn widen<T: Float>(a: &ArrayD<T>) -> ArrayD<f64> {
    a.mapv(|v| v.to_f64_exact())
}

#[test]
fn float64_matches_the_released_code() {
    for name in CASES {
        let c = case::<f64>(name);
        let e = c.net.explain(c.input.view(), c.target, Method::Rap).unwrap();
        let relevance = e.relevance.unwrap().into_dyn();
        let err = rel_err(&relevance, &c.file.tensors["relevance_f64"]);
        let logits = rel_err(&e.logits.into_dyn(), &c.file.tensors["logits_f64"]);
        println!("{name} f64: relevance {err:.2e} logits {logits:.2e}");
        assert!(logits <= F64_TOL, "{name}: logits differ by {logits:.3e}");
        assert!(err <= RAP_F64_TOL, "{name}: relevance differs by {err:.3e}");
        // RAP's rules composed from the primitives (a new backend's defaults).
        let composed = c.net.clone().with_backend(crate::backend_suite::PrimitivesOnly);
        let e = composed.explain(c.input.view(), c.target, Method::Rap).unwrap();
        let err = rel_err(&e.relevance.unwrap().into_dyn(), &c.file.tensors["relevance_f64"]);
        assert!(err <= RAP_F64_TOL, "{name}: relevance by the composed rules differs by {err:.3e}");
    }
}

#[test]
fn float32_matches_the_released_code() {
    for name in CASES {
        let c = case::<f32>(name);
        let e = c.net.explain(c.input.view(), c.target, Method::Rap).unwrap();
        let relevance = widen(&e.relevance.unwrap().into_dyn());
        let err = rel_err(&relevance, &c.file.tensors["relevance_f64"]);
        let vs_f32_run = rel_err(&relevance, &c.file.tensors["relevance_f32"]);
        let logits = rel_err(&widen(&e.logits.into_dyn()), &c.file.tensors["logits_f64"]);
        println!("{name} f32: relevance {err:.2e} (vs the reference's f32 run {vs_f32_run:.2e}) logits {logits:.2e}");
        assert!(logits <= F32_TOL, "{name}: logits differ by {logits:.3e}");
        assert!(err <= RAP_F32_TOL, "{name}: relevance differs by {err:.3e}");
        assert!(vs_f32_run <= RAP_F32_TOL, "{name}: {vs_f32_run:.3e} from the reference's own float32 run");
    }
}

/// RAP conserves the target's logit: the first propagation hands on the
/// logit (bias included), every later rule shifts its result back to the
/// sum it received (golden README: the input relevance sums to the logit).
#[test]
fn the_input_relevance_sums_to_the_target_logit() {
    for name in CASES {
        let c = case::<f64>(name);
        let e = c.net.explain(c.input.view(), c.target, Method::Rap).unwrap();
        let total = e.relevance.as_ref().unwrap().sum();
        let logit = e.logits[[0, c.target]];
        println!("{name}: Σ relevance {total} logit {logit}");
        assert!((total - logit).abs() <= 1e-10 * logit.abs().max(1.0), "{name}: {total} vs {logit}");
        // The reference's own float64 result conserves it too (the property is the method's, not ours).
        let reference = c.file.tensors["relevance_f64"].sum();
        assert!((reference - logit).abs() <= 1e-10 * logit.abs().max(1.0), "{name}: reference {reference}");
    }
}

/// `Network::explain(.., Method::Rap)` and `explain_rules(.., &Rap)` are the
/// same computation, for a batch of two samples with their own targets.
#[test]
fn explain_and_explain_rules_agree_on_a_batch() {
    let c = case::<f64>("rap_vgg_tiny_bn");
    let second = c.input.mapv(|v| 0.5 - v);
    let batch = ndarray::concatenate(Axis(0), &[c.input.view(), second.view()]).unwrap();
    let a = c.net.explain(batch.view(), vec![c.target, 3], Method::Rap).unwrap();
    let b = c.net.explain_rules(batch.view(), vec![c.target, 3], &Rap).unwrap();
    assert_eq!(a.relevance, b.relevance);
    assert_eq!(a.heatmaps, b.heatmaps);
    assert_eq!(a.method, Method::Rap);
    assert_eq!(b.method, Method::Custom("rap"));
    // Each sample is computed alone: the first one is the golden one.
    let first = a.relevance.unwrap().index_axis(Axis(0), 0).to_owned().insert_axis(Axis(0)).into_dyn();
    assert!(rel_err(&first, &c.file.tensors["relevance_f64"]) <= RAP_F64_TOL);
    // The map is the channel sum of the relevance.
    let r = b.relevance.unwrap();
    let sum = r.sum_axis(Axis(1));
    assert!(sum.iter().zip(&b.heatmaps).all(|(p, q)| (p - q).abs() <= 1e-12 * p.abs().max(1.0)));
}

/// Residual networks: the Add rule (`RelPropSimple`, in proportion to the
/// summands) and the branch point's sum keep the logit. On a ResNet built
/// here (convolutions with bias, batch norm, an identity and a downsampling
/// shortcut) every denominator is nonzero, so the conservation is exact.
#[test]
fn a_residual_network_conserves_the_target_logit() {
    use rsp::backend::ConvGeometry;
    use rsp::layers::{AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, Relu};
    use rsp::ndarray::{Array1, Array2};
    // Deterministic pseudo-random parameters in [−1, 1) (no two layers alike).
    let value = |seed: usize, i: usize| ((seed * 7919 + i * 104_729) % 1000) as f64 / 500.0 - 1.0;
    let conv = |seed: usize, i: usize, o: usize, k: usize, stride: usize, pad: usize| {
        let w = Array4::from_shape_fn((o, i, k, k), |(a, b, c, d)| 0.5 * value(seed, ((a * i + b) * k + c) * k + d));
        let b = Array1::from_shape_fn(o, |a| 0.1 * value(seed + 1, a));
        Conv2d::new(format!("conv{seed}"), w, Some(b), ConvGeometry::square(stride, pad)).unwrap()
    };
    let bn = |seed: usize, c: usize| {
        let v = |s: usize| Array1::from_shape_fn(c, |a| value(seed + s, a));
        BatchNorm2d::new(format!("bn{seed}"), v(0) + 1.5, v(1) * 0.2, v(2) * 0.1, v(3) * 0.4 + 0.6, 1e-5).unwrap()
    };
    let mut net = Network::<f64>::new();
    net.push(conv(1, 3, 6, 3, 1, 1));
    net.push(bn(2, 6));
    net.push(Relu);
    net.residual(|net, x| {
        net.push_from(conv(3, 6, 6, 3, 1, 1), x);
        net.push(bn(4, 6));
        net.push(Relu);
        net.push(conv(5, 6, 6, 3, 1, 1));
        Ok(net.push(bn(6, 6)))
    })
    .unwrap();
    net.push(Relu);
    net.residual_with(
        |net, x| {
            net.push_from(conv(7, 6, 8, 3, 2, 1), x);
            net.push(Relu);
            Ok(net.push(conv(8, 8, 8, 3, 1, 1)))
        },
        |net, x| Ok(net.push_from(conv(9, 6, 8, 1, 2, 0), x)),
    )
    .unwrap();
    net.push(Relu);
    net.push(AdaptiveAvgPool2d::new((1, 1)));
    net.push(Flatten);
    let fc = Linear::new(
        "fc",
        Array2::from_shape_fn((5, 8), |(a, b)| value(10, a * 8 + b)),
        Some(Array1::from_shape_fn(5, |a| 0.3 * value(11, a))),
    );
    net.push(fc.unwrap());
    let x = Array4::from_shape_fn((2, 3, 12, 12), |(n, c, i, j)| {
        ((n * 5 + c * 7 + i * 13 + j * 3) % 17) as f64 / 8.0 - 1.0
    });
    for target in 0..5 {
        let e = net.explain(x.view(), target, Method::Rap).unwrap();
        let r = e.relevance.unwrap();
        for n in 0..2 {
            let total = r.index_axis(Axis(0), n).sum();
            let logit = e.logits[[n, target]];
            assert!(
                (total - logit).abs() <= 1e-10 * logit.abs().max(1.0),
                "class {target} sample {n}: {total} vs {logit}"
            );
        }
    }
}

/// The same on the torchvision-style BasicBlock ResNet of the RSP goldens
/// (convolutions without bias). (On its Bottleneck sibling the total falls
/// short: a bias-free convolution over an all-zero window outputs exactly 0,
/// and the released batch-norm rule drops the relevance at a zero input,
/// `x ⊙ (R ⊘ (x·w))·w`; see docs/method-rap.md.)
#[test]
fn the_basic_block_resnet_conserves_the_target_logit() {
    let path = data("golden/resnet_basic_tiny.safetensors");
    let file = read_tensors(&path);
    let net = Network::<f64>::load(&path).unwrap();
    let input = file.tensors["input"].clone().into_dimensionality::<Ix4>().unwrap();
    let targets: Vec<usize> = file.metadata["target"]
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|t| t.trim().parse().unwrap())
        .collect();
    let e = net.explain(input.view(), targets.clone(), Method::Rap).unwrap();
    let r = e.relevance.unwrap();
    for (n, &t) in targets.iter().enumerate() {
        let total = r.index_axis(Axis(0), n).sum();
        let logit = e.logits[[n, t]];
        assert!((total - logit).abs() <= 1e-10 * logit.abs().max(1.0), "sample {n}: {total} vs {logit}");
        // Not a trivial map: relevance of both signs at the input.
        assert!(r.index_axis(Axis(0), n).iter().any(|&v| v > 0.0));
        assert!(r.index_axis(Axis(0), n).iter().any(|&v| v < 0.0));
    }
}

#[test]
fn the_cli_computes_what_the_library_does() {
    let scratch_dir = crate::common::scratch("rap-cli");
    let dir = scratch_dir.path().to_path_buf();
    for name in ["rap_vgg_tiny", "rap_avgpool_stride_rect"] {
        let c = case::<f64>(name);
        let model = data(&format!("golden/rap/{name}.safetensors"));
        let (input, out) = (dir.join("x.npy"), dir.join("r.npy"));
        write_npy(&input, &c.input.clone().into_dyn()).unwrap();
        for dtype in ["f64", "f32"] {
            let o = Command::new(env!("CARGO_BIN_EXE_rsp"))
                .args(["attribute", "--method", "rap", "--model", model.to_str().unwrap()])
                .args(["--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()])
                .args(["--target", &c.target.to_string(), "--dtype", dtype])
                .output()
                .unwrap();
            assert!(o.status.success(), "{name} {dtype}: {}", String::from_utf8_lossy(&o.stderr));
            if dtype == "f64" {
                let r: ArrayD<f64> = read_npy(&out).unwrap();
                let lib = c.net.explain(c.input.view(), c.target, Method::Rap).unwrap().relevance.unwrap();
                assert_eq!(r, lib.into_dyn(), "{name}: the CLI's f64 result is the library's");
                assert!(rel_err(&r, &c.file.tensors["relevance_f64"]) <= RAP_F64_TOL);
            } else {
                let r: ArrayD<f32> = read_npy(&out).unwrap();
                let c32 = case::<f32>(name);
                let lib = c32.net.explain(c32.input.view(), c32.target, Method::Rap).unwrap().relevance.unwrap();
                assert_eq!(r, lib.into_dyn(), "{name}: the CLI's f32 result is the library's");
            }
        }
        // RSP-only options are refused with RAP.
        let o = Command::new(env!("CARGO_BIN_EXE_rsp"))
            .args(["attribute", "--method", "rap", "--start", "comparative", "--model", model.to_str().unwrap()])
            .args(["--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--target", "0"])
            .output()
            .unwrap();
        assert!(!o.status.success());
    }
}

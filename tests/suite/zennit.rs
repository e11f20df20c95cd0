//! zennit's LRP composites, number for number: `epsilon-plus-flat` and
//! `epsilon-gamma-box` against zennit 0.5.1's own results
//! (`tests/data/golden/lrp/`, made by zennit's `Gradient` attributor with the
//! one-hot target; tolerances from the golden README: float64 ≤ 1e-9, float32
//! ≤ 1e-4 against zennit's float64 run), hand-computed cases of the rules, and
//! the batch-norm canonizer.

use crate::common;

use common::{data, read_tensors, rel_err};
use rsp::attribution::{Rules, ZennitComposite};
use rsp::backend::{ConvGeometry, CpuBackend};
use rsp::layers::{BatchNorm2d, Conv2d, RuleContext};
use rsp::ndarray::{arr1, Array3, Array4, ArrayD, Axis, Ix4};
use rsp::{Float, Method, Network};
use std::path::PathBuf;

const CASES: &[&str] = &["lrp_vgg_tiny", "lrp_vgg_tiny_bn", "lrp_avgpool_stride_rect"];

/// The golden README's tolerances (against zennit's float64 run).
const F64_TOL: f64 = 1e-9;
const F32_TOL: f64 = 1e-4;

/// zennit's two composites as the golden file names them, with the file's ZBox bounds.
fn composites(file: &common::TensorFile) -> [(&'static str, Method); 2] {
    let (low, high) = file.metadata["zbox_bounds"].split_once(',').unwrap();
    let (low, high) = (low.trim().parse().unwrap(), high.trim().parse().unwrap());
    [("epsilon_plus_flat", Method::EpsilonPlusFlat), ("epsilon_gamma_box", Method::EpsilonGammaBox { low, high })]
}

fn path(case: &str) -> PathBuf {
    data(&format!("golden/lrp/{case}.safetensors"))
}

/// `(composite, relevance error, logits error)` of every composite on `case`, in `T`.
fn errors<T: Float>(case: &str) -> Vec<(&'static str, f64, f64)> {
    let file = read_tensors(&path(case));
    let net = rsp::io::safetensors::load::<T>(&path(case)).unwrap();
    let target: usize = file.metadata["target"].parse().unwrap();
    let x = file.tensors["input"].mapv(T::of).into_dimensionality::<Ix4>().unwrap();
    composites(&file)
        .into_iter()
        .map(|(name, method)| {
            let e = net.explain(x.view(), target, &method).unwrap();
            let r = e.relevance.unwrap().into_dyn().mapv(|v| v.to_f64_exact());
            let logits = e.logits.into_dyn().mapv(|v| v.to_f64_exact());
            (name, rel_err(&r, &file.tensors[&format!("{name}_f64")]), rel_err(&logits, &file.tensors["logits_f64"]))
        })
        .collect()
}

#[test]
fn float64_matches_zennit_within_1e9() {
    for case in CASES {
        for (name, err, logits) in errors::<f64>(case) {
            println!("{case} {name} f64: relevance {err:.2e}, logits {logits:.2e}");
            assert!(err <= F64_TOL, "{case} {name}: relevance differs by {err:.3e}");
            assert!(logits <= F64_TOL, "{case} {name}: logits differ by {logits:.3e}");
        }
    }
}

#[test]
fn float32_matches_zennit_within_1e4() {
    for case in CASES {
        for (name, err, logits) in errors::<f32>(case) {
            println!("{case} {name} f32: relevance {err:.2e}, logits {logits:.2e}");
            assert!(err <= F32_TOL, "{case} {name}: relevance differs by {err:.3e}");
            assert!(logits <= F32_TOL, "{case} {name}: logits differ by {logits:.3e}");
        }
    }
}

/// The golden values are not trivially close to each other: the two composites
/// differ, and each differs from plain LRP-α1β0 (which the f64 tolerance would tell).
#[test]
fn the_goldens_tell_the_composites_apart() {
    let file = read_tensors(&path("lrp_vgg_tiny_bn"));
    let (flat, gamma) = (&file.tensors["epsilon_plus_flat_f64"], &file.tensors["epsilon_gamma_box_f64"]);
    assert!(rel_err(flat, gamma) > 1e-2);
    let net = rsp::io::safetensors::load::<f64>(&path("lrp_vgg_tiny_bn")).unwrap();
    let x = file.tensors["input"].clone().into_dimensionality::<Ix4>().unwrap();
    let target: usize = file.metadata["target"].parse().unwrap();
    let lrp = net.explain(x.view(), target, Method::LrpAlpha1Beta0).unwrap().relevance.unwrap().into_dyn();
    assert!(rel_err(&lrp, flat) > 1e-2);
}

/// Through the CLI: `rsp attribute --method epsilon-gamma-box --low -3 --high 3`
/// on the batch-norm case gives zennit's map; `--low` with another method and
/// epsilon-gamma-box without bounds are refused with one line.
#[cfg(feature = "cli")]
#[test]
fn the_cli_gives_zennits_map() {
    use rsp::io::npy::{read_npy, write_npy};
    let scratch_dir = crate::common::scratch("zennit-cli");
    let dir = scratch_dir.path().to_path_buf();
    let case = "lrp_vgg_tiny_bn";
    let file = read_tensors(&path(case));
    let input = dir.join("input.npy");
    write_npy(&input, &file.tensors["input"].mapv(|v| v as f32)).unwrap();
    let out = dir.join("r.npy");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let base = [
        "attribute".to_string(),
        "--model".into(),
        s(&path(case)),
        "--input".into(),
        s(&input),
        "--target".into(),
        file.metadata["target"].clone(),
        "--out".into(),
        s(&out),
        "--dtype".into(),
        "f64".into(),
    ];
    let rsp = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rsp"))
            .args(base.iter().map(String::as_str).chain(extra.iter().copied()))
            .output()
            .unwrap()
    };
    let o = rsp(&["--method", "epsilon-gamma-box", "--low", "-3", "--high", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: ArrayD<f64> = read_npy(&out).unwrap();
    let err = rel_err(&r, &file.tensors["epsilon_gamma_box_f64"]);
    assert!(err <= F64_TOL, "CLI epsilon-gamma-box: {err:.3e}");
    let o = rsp(&["--method", "epsilon-plus-flat"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: ArrayD<f64> = read_npy(&out).unwrap();
    assert!(rel_err(&r, &file.tensors["epsilon_plus_flat_f64"]) <= F64_TOL);
    for (extra, says) in [
        (&["--method", "epsilon-plus-flat", "--low", "-3"][..], "belong to --method epsilon-gamma-box"),
        (&["--method", "epsilon-gamma-box"][..], "needs --low and --high"),
        (&["--method", "epsilon-gamma-box", "--low", "3", "--high", "-3"][..], "--low < --high"),
    ] {
        let o = rsp(extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?}");
        assert_eq!(stderr.lines().count(), 1, "{extra:?}: {stderr}");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
    }
}

/// Folding batch norm into the convolution before it leaves the network's
/// function unchanged (≤ 1e-12 in f64, relative), drops the batch norm nodes,
/// and moves the start layer with the nodes.
#[test]
fn merging_batch_norm_keeps_the_forward_pass() {
    let file = read_tensors(&path("lrp_vgg_tiny_bn"));
    let mut net = rsp::io::safetensors::load::<f64>(&path("lrp_vgg_tiny_bn")).unwrap();
    net.set_start_layer(Some(13)); // the ReLU after the last batch norm (#12)
    let folded = rsp::canonize::merge_batch_norm(&net).unwrap();
    let bn = |n: &Network<f64>| {
        n.nodes().iter().filter(|n| n.layer().is_some_and(|l| l.kind() == rsp::layers::LayerKind::BatchNorm2d)).count()
    };
    assert_eq!((bn(&net), bn(&folded)), (4, 0));
    assert_eq!(folded.len(), net.len() - 4);
    assert_eq!(folded.start_layer_setting(), Some(9));
    let x = file.tensors["input"].clone().into_dimensionality::<Ix4>().unwrap();
    let batch = rsp::ndarray::concatenate(Axis(0), &[x.view(), x.mapv(|v| 0.5 - v).view()]).unwrap();
    let (a, b) = (net.forward(&batch).unwrap(), folded.forward(&batch).unwrap());
    let err = rel_err(&b.into_dyn(), &a.into_dyn());
    println!("folded forward pass: {err:.2e}");
    assert!(err <= 1e-12, "{err:.3e}");
    // zennit's residue: the batch norms stay with identity statistics and their ε.
    let zennit = rsp::canonize::merge_batch_norm_as_zennit(&net).unwrap();
    assert_eq!((zennit.len(), bn(&zennit), zennit.start_layer_setting()), (net.len(), 4, Some(13)));
    for node in zennit.nodes() {
        if let Some(bn) = node.layer().and_then(|l| l.downcast_ref::<BatchNorm2d<f64>>()) {
            let (g, b, m, v, eps) = bn.parameters();
            assert!(g.iter().chain(v).all(|&t| t == 1.0) && b.iter().chain(m).all(|&t| t == 0.0));
            assert_eq!(eps, 1e-5);
        }
    }
    let mut plain = net.clone();
    plain.set_start_layer(None);
    assert!(rsp::canonize::merge_batch_norm(&plain).unwrap().start_layer_setting().is_none());
}

/// A batch norm after a convolution without bias gets a bias; one whose
/// convolution's output is read by another node too, or one after anything
/// but a convolution, stays.
#[test]
fn merging_batch_norm_folds_only_what_it_can() {
    let bn = || {
        BatchNorm2d::new("bn", arr1(&[2.0, -1.0]), arr1(&[0.5, 0.25]), arr1(&[0.1, -0.2]), arr1(&[4.0, 0.5]), 1e-5)
            .unwrap()
    };
    let conv = || {
        let w = Array4::from_shape_fn((2, 1, 3, 3), |(o, _, u, v)| {
            (o as f64 + 1.0) * 0.3 - u as f64 * 0.2 + v as f64 * 0.1
        });
        Conv2d::new("c", w, None, ConvGeometry::square(1, 1)).unwrap()
    };
    let x = Array4::from_shape_fn((1, 1, 5, 5), |(_, _, i, j)| (i as f64 - 2.0) * 0.7 + j as f64 * 0.3);
    // conv (no bias) → bn: folded, with a bias.
    let mut net = Network::<f64>::new();
    net.push(conv());
    net.push(bn());
    net.push(rsp::layers::Flatten);
    let folded = rsp::canonize::merge_batch_norm(&net).unwrap();
    assert_eq!(folded.len(), 2);
    let c = folded.nodes()[0].layer().unwrap().downcast_ref::<Conv2d<f64>>().unwrap();
    // b' = (0 − μ)·s + β with s = γ/sqrt(σ² + ε).
    let s0 = 2.0 / (4.0f64 + 1e-5).sqrt();
    assert!((c.bias().unwrap()[0] - (-0.1 * s0 + 0.5)).abs() < 1e-15);
    let err = rel_err(&folded.forward(&x).unwrap().into_dyn(), &net.forward(&x).unwrap().into_dyn());
    assert!(err <= 1e-12, "{err:.3e}");
    // conv read by bn and by a residual sum: nothing folds; bn after a ReLU: nothing folds.
    let mut net = Network::<f64>::new();
    let c = net.push(conv());
    let b = net.push(bn());
    net.add(b, c);
    net.push(rsp::layers::Relu);
    net.push(bn());
    net.push(rsp::layers::Flatten);
    let folded = rsp::canonize::merge_batch_norm(&net).unwrap();
    assert_eq!(folded.len(), net.len());
    assert_eq!(folded.forward(&x).unwrap(), net.forward(&x).unwrap());
}

/// Without batch norm, `explain` with the method and `explain_rules` with the
/// composite's rules are the same walk: identical bits.
#[test]
fn the_method_and_its_rules_agree_without_batch_norm() {
    let net = rsp::io::safetensors::load::<f64>(&path("lrp_vgg_tiny")).unwrap();
    let x = read_tensors(&path("lrp_vgg_tiny")).tensors["input"].clone().into_dimensionality::<Ix4>().unwrap();
    for (method, rules) in [
        (Method::EpsilonPlusFlat, ZennitComposite::EpsilonPlusFlat),
        (Method::EpsilonGammaBox { low: -4.0, high: 4.0 }, ZennitComposite::EpsilonGammaBox { low: -4.0, high: 4.0 }),
    ] {
        let a = net.explain(x.view(), 3, &method).unwrap();
        let b = net.explain_rules(x.view(), 3, &rules).unwrap();
        assert_eq!(a.relevance, b.relevance, "{method}");
        assert_eq!(b.method, Method::Custom(Rules::<f64>::name(&rules)));
    }
}

/// `rules` with only [`Rules::layer`]: the walk's `layer_given_output` falls
/// back to it, so every `z` is computed afresh instead of taken from the
/// forward pass.
struct Recomputing<'a, T>(&'a dyn Rules<T>);

impl<T: Float> Rules<T> for Recomputing<'_, T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn layer(
        &self,
        backend: &dyn rsp::backend::Backend<T>,
        layer: &dyn rsp::layers::Layer<T>,
        x: rsp::ndarray::ArrayViewD<T>,
        relevance: rsp::ndarray::ArrayViewD<T>,
        ctx: RuleContext,
    ) -> rsp::Result<ArrayD<T>> {
        self.0.layer(backend, layer, x, relevance, ctx)
    }

    fn add(
        &self,
        a: rsp::ndarray::ArrayViewD<T>,
        b: rsp::ndarray::ArrayViewD<T>,
        r: rsp::ndarray::ArrayViewD<T>,
    ) -> rsp::Result<(ArrayD<T>, ArrayD<T>)> {
        self.0.add(a, b, r)
    }

    fn seed(&self, logits: rsp::ndarray::ArrayView1<T>, target: usize) -> ArrayD<T> {
        self.0.seed(logits, target)
    }
}

/// The rules that reuse the layer's forward output as their `z` (ε, Gamma,
/// ZBox; conv and linear layers, with biases, batch norm and average pools)
/// give the same bits as computing `z` again.
fn reuse_equals_recomputing<T: Float>() {
    for case in CASES {
        let net = rsp::io::safetensors::load::<T>(&path(case)).unwrap();
        let x = read_tensors(&path(case)).tensors["input"].mapv(T::of).into_dimensionality::<Ix4>().unwrap();
        let all: [&dyn Rules<T>; 4] = [
            &ZennitComposite::EpsilonPlusFlat,
            &ZennitComposite::EpsilonGammaBox { low: -4.0, high: 4.0 },
            &rsp::attribution::Lrp::epsilon(0.25),
            &rsp::attribution::Lrp::alpha1_beta0(),
        ];
        for rules in all {
            let reused = net.explain_rules(x.view(), 1, rules).unwrap().relevance.unwrap();
            let recomputed = net.explain_rules(x.view(), 1, &Recomputing(rules)).unwrap().relevance.unwrap();
            assert!(reused.iter().any(|&v| v != T::zero()), "{case} {}", rules.name());
            assert_eq!(reused, recomputed, "{case} {} {}", rules.name(), T::NAME);
        }
    }
}

#[test]
fn reusing_the_forward_output_gives_the_same_bits() {
    reuse_equals_recomputing::<f64>();
    reuse_equals_recomputing::<f32>();
}

fn conv(weight: Array4<f64>, bias: Option<f64>, padding: usize) -> Conv2d<f64> {
    let o = weight.dim().0;
    Conv2d::new("c", weight, bias.map(|b| rsp::ndarray::Array1::from_elem(o, b)), ConvGeometry::square(1, padding))
        .unwrap()
}

const FIRST: RuleContext = RuleContext { is_input_layer: true, receives_seed: false };
const INNER: RuleContext = RuleContext { is_input_layer: false, receives_seed: false };
const EPS: f64 = 1e-6;

/// Flat on a first convolution (2×2 kernel, padding 1, a 2×2 input, two output
/// channels with R = 1 and 2): the windows hold z = 1 (corners), 2 (edges) or
/// 4 (centre) input cells, so each input cell, inside one corner, two edge and
/// the centre window of each channel, gets `3·(1/(1+ε) + 2/(2+ε) + 1/(4+ε))`,
/// whatever x, W and b are.
#[test]
fn flat_by_hand() {
    let layer =
        conv(Array4::from_shape_fn((2, 1, 2, 2), |(o, _, u, v)| o as f64 - u as f64 * 3.0 + v as f64), Some(7.0), 1);
    let x = Array3::from_shape_vec((1, 2, 2), vec![0.3, -5.0, 2.0, 0.0]).unwrap().into_dyn();
    let r = Array3::from_shape_fn((2, 3, 3), |(o, _, _)| o as f64 + 1.0).into_dyn();
    let rin = ZennitComposite::EpsilonPlusFlat.layer(&CpuBackend, &layer, x.view(), r.view(), FIRST).unwrap();
    let each = 3.0 * (1.0 / (1.0 + EPS) + 2.0 / (2.0 + EPS) + 1.0 / (4.0 + EPS));
    assert_eq!(rin.shape(), &[1, 2, 2]);
    for v in &rin {
        assert!((v - each).abs() < 1e-14, "{v} vs {each}");
    }
}

/// Gamma(0.25) on a 1×1 convolution of two inputs, `W = (1, −1)`, `b = 0.5`,
/// R = 3. Positive input `x = (2, 1)`: `z = 1.5 > 0`, `W_p = (1.25, −1)`,
/// `b_p = 0.625`, `z_p = 2.5 − 1 + 0.625 = 2.125`, `R_in = x ⊙ W_p · 3/(2.125+ε)`.
/// Mixed signs `x = (1, −2)`, `W = (1, 1)`, `b = 0`: `z = −1 < 0`,
/// `z_n = x⁺·W_n + x⁻·W_p = 1 − 2.5 = −1.5`, `R_in = (1, −2.5) · 3/(−1.5−ε)`.
#[test]
fn gamma_by_hand() {
    let gamma_box = ZennitComposite::EpsilonGammaBox { low: -3.0, high: 3.0 };
    let r = Array3::from_elem((1, 1, 1), 3.0).into_dyn();
    let layer = conv(Array4::from_shape_vec((1, 2, 1, 1), vec![1.0, -1.0]).unwrap(), Some(0.5), 0);
    let x = Array3::from_shape_vec((2, 1, 1), vec![2.0, 1.0]).unwrap().into_dyn();
    let rin = gamma_box.layer(&CpuBackend, &layer, x.view(), r.view(), INNER).unwrap();
    let s = 3.0 / (2.125 + EPS);
    close(&rin, &[2.5 * s, -s]);
    let layer = conv(Array4::from_shape_vec((1, 2, 1, 1), vec![1.0, 1.0]).unwrap(), Some(0.0), 0);
    let x = Array3::from_shape_vec((2, 1, 1), vec![1.0, -2.0]).unwrap().into_dyn();
    let rin = gamma_box.layer(&CpuBackend, &layer, x.view(), r.view(), INNER).unwrap();
    let s = 3.0 / (-1.5 - EPS);
    close(&rin, &[s, -2.5 * s]);
}

/// ZPlus keeps the positive part of the bias in its denominator:
/// `x = (2, 1)`, `W = (1, −1)`, `b = 0.5`: `z⁺ = 2 + 0.5`, `R_in = (2, 0)·R/(2.5+ε)`;
/// with `b = −0.5` the bias drops out: `R_in = (2, 0)·R/(2+ε)`.
#[test]
fn z_plus_by_hand() {
    let r = Array3::from_elem((1, 1, 1), 3.0).into_dyn();
    let x = Array3::from_shape_vec((2, 1, 1), vec![2.0, 1.0]).unwrap().into_dyn();
    for (b, z) in [(0.5, 2.5), (-0.5, 2.0)] {
        let layer = conv(Array4::from_shape_vec((1, 2, 1, 1), vec![1.0, -1.0]).unwrap(), Some(b), 0);
        let rin = ZennitComposite::EpsilonPlusFlat.layer(&CpuBackend, &layer, x.view(), r.view(), INNER).unwrap();
        close(&rin, &[2.0 * 3.0 / (z + EPS), 0.0]);
    }
}

/// ZBox on a first 1×1 convolution, `W = (1, −2)`, `b = 1`, bounds [−1, 2],
/// `x = (0.5, 1)`: `Z = (0.5 − 2 + 1) − ((−1·1 + 1) + (2·(−2) + 0)) = 3.5`,
/// `R_in = x ⊙ W·S − (ℓ·W⁺ + h·W⁻)·S = (0.5 + 1, −2 + 4)·S` with `S = R/(3.5+ε)`.
#[test]
fn z_box_by_hand() {
    let r = Array3::from_elem((1, 1, 1), 3.0).into_dyn();
    let layer = conv(Array4::from_shape_vec((1, 2, 1, 1), vec![1.0, -2.0]).unwrap(), Some(1.0), 0);
    let x = Array3::from_shape_vec((2, 1, 1), vec![0.5, 1.0]).unwrap().into_dyn();
    let rin = ZennitComposite::EpsilonGammaBox { low: -1.0, high: 2.0 }
        .layer(&CpuBackend, &layer, x.view(), r.view(), FIRST)
        .unwrap();
    let s = 3.0 / (3.5 + EPS);
    close(&rin, &[1.5 * s, 2.0 * s]);
}

fn close(a: &ArrayD<f64>, expected: &[f64]) {
    let got: Vec<f64> = a.iter().copied().collect();
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(expected) {
        assert!((g - e).abs() <= 1e-14 * e.abs().max(1.0), "{got:?} vs {expected:?}");
    }
}

#[test]
fn names_parse_and_bounds_are_checked() {
    assert_eq!("epsilon-plus-flat".parse::<Method>().unwrap(), Method::EpsilonPlusFlat);
    let m = Method::EpsilonGammaBox { low: -2.5, high: 3.0 };
    assert_eq!(m.to_string(), "epsilon-gamma-box=-2.5,3");
    assert_eq!(m.to_string().parse::<Method>().unwrap(), m);
    assert!(Method::ALL.contains(&Method::EpsilonPlusFlat));
    for bad in [
        "epsilon-gamma-box",
        "epsilon-gamma-box=3,-3",
        "epsilon-gamma-box=1",
        "epsilon-gamma-box=a,b",
        "epsilon-gamma-box=-inf,1",
    ] {
        assert!(bad.parse::<Method>().is_err(), "{bad}");
    }
    let net = rsp::io::safetensors::load::<f64>(&path("lrp_vgg_tiny")).unwrap();
    let x = Array4::<f64>::zeros((1, 3, 32, 32));
    let bad = Method::EpsilonGammaBox { low: 1.0, high: f64::NAN };
    assert!(matches!(net.explain(x.view(), 0, &bad), Err(rsp::RspError::InvalidArgument(_))));
}

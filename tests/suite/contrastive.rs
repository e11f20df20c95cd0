//! CLRP and SGLRP: hand-computed cases, their defining properties (the
//! softmax-gradient seed, the zero total of CLRP), and linearity against
//! LRP-α1β0 walks seeded one class at a time.

use crate::common;

use ndarray::{arr2, Array1, Array2, Array4, ArrayD, ArrayView1, ArrayViewD, IxDyn};
use rsp::attribution::{Lrp, Rules, Sglrp};
use rsp::backend::{Backend, ConvGeometry};
use rsp::layers::{Conv2d, Flatten, Layer, Linear, MaxPool2d, Relu, RuleContext};
use rsp::{Method, Network};

/// `Flatten` and one bias-free linear layer with weights `w`: every rule is
/// then a hand-computable share of `z = w x`.
fn linear_net(w: Array2<f64>) -> Network<f64> {
    let mut net = Network::new();
    net.push(Flatten);
    net.push(Linear::new("fc", w, None).unwrap());
    net
}

fn input(values: &[f64]) -> Array4<f64> {
    Array4::from_shape_vec((1, values.len(), 1, 1), values.to_vec()).unwrap()
}

fn relevance(net: &Network<f64>, x: &Array4<f64>, target: usize, method: Method) -> ArrayD<f64> {
    net.explain(x, target, method).unwrap().relevance.unwrap().into_dyn()
}

#[test]
fn sglrp_on_a_linear_layer_is_the_hand_computed_share_of_the_softmax_gradient() {
    // z = (3, 4): p₀ = 1/(1+e), so the seed is s·(1, −1) with s = p₀p₁ = e/(1+e)².
    let net = linear_net(arr2(&[[1.0, 2.0], [3.0, 1.0]]));
    let r = relevance(&net, &input(&[1.0, 1.0]), 0, Method::Sglrp);
    let e = std::f64::consts::E;
    let s = e / ((1.0 + e) * (1.0 + e));
    // R_j = x_j (w₀ⱼ s / z₀ − w₁ⱼ s / z₁).
    let expected = [s * (1.0 / 3.0 - 3.0 / 4.0), s * (2.0 / 3.0 - 1.0 / 4.0)];
    for (got, want) in r.iter().zip(expected) {
        assert!((got - want).abs() < 1e-15, "{got} vs {want}");
    }
    assert!(r.sum().abs() < 1e-15, "the seed sums to zero and z⁺ = z conserves it");
}

#[test]
fn clrp_on_a_linear_layer_is_the_hand_computed_contrast() {
    // z = (3, 4, 2), target 0: R_target = x ⊙ w₀ = (1, 2); the dual class
    // (classes 1 and 2, seeded |z|) gives (3 + 1, 1 + 1) = (4, 2), total 6,
    // rescaled by 3/6: R = (1 − 2, 2 − 1).
    let net = linear_net(arr2(&[[1.0, 2.0], [3.0, 1.0], [1.0, 1.0]]));
    let r = relevance(&net, &input(&[1.0, 1.0]), 0, Method::Clrp);
    assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![-1.0, 1.0]);
    // The paper's CLRP map is the positive part.
    let e = net.explain(&input(&[1.0, 1.0]), 0, Method::Clrp).unwrap();
    assert_eq!(e.positive().unwrap().iter().copied().collect::<Vec<_>>(), vec![0.0, 1.0]);
}

#[test]
fn the_sglrp_seed_is_the_gradient_of_the_target_probability() {
    let logits = Array1::from(vec![1.5, -0.5, 0.25, 3.0]);
    let p = |y: &Array1<f64>, k: usize| y.mapv(f64::exp)[k] / y.mapv(f64::exp).sum();
    for target in 0..4 {
        let seed = Rules::<f64>::seed(&Sglrp, logits.view(), target);
        assert!(seed.sum().abs() < 1e-15);
        for n in 0..4 {
            // Central differences of p_target in logit n.
            let h = 1e-6;
            let (mut up, mut down) = (logits.clone(), logits.clone());
            up[n] += h;
            down[n] -= h;
            let numeric = (p(&up, target) - p(&down, target)) / (2.0 * h);
            assert!((seed[[n]] - numeric).abs() < 1e-9, "target {target}, logit {n}");
        }
    }
    // Huge logits do not overflow (the softmax is taken from y − max y).
    let seed = Rules::<f64>::seed(&Sglrp, Array1::from(vec![1e4, 1e4 - 1.0]).view(), 1);
    assert!(seed.iter().all(|v| v.is_finite()) && seed[[1]] > 0.0);
}

/// LRP-α1β0 seeded with an arbitrary vector at the logits.
struct SeededLrp(ArrayD<f64>);

impl Rules<f64> for SeededLrp {
    fn name(&self) -> &'static str {
        "seeded-lrp"
    }
    fn layer(
        &self,
        backend: &dyn Backend<f64>,
        layer: &dyn Layer<f64>,
        x: ArrayViewD<f64>,
        relevance: ArrayViewD<f64>,
        ctx: RuleContext,
    ) -> rsp::Result<ArrayD<f64>> {
        Lrp::alpha1_beta0().layer(backend, layer, x, relevance, ctx)
    }
    fn add(
        &self,
        a: ArrayViewD<f64>,
        b: ArrayViewD<f64>,
        r: ArrayViewD<f64>,
    ) -> rsp::Result<(ArrayD<f64>, ArrayD<f64>)> {
        Rules::<f64>::add(&Lrp::alpha1_beta0(), a, b, r)
    }
    fn seed(&self, _logits: ArrayView1<f64>, _target: usize) -> ArrayD<f64> {
        self.0.clone()
    }
}

/// A small CNN with biases whose first convolution reads the input (z^B there).
fn cnn() -> Network<f64> {
    let w4 = |shape: (usize, usize, usize, usize), seed: usize| {
        Array4::from_shape_fn(shape, |(o, c, u, v)| {
            (((o * 131 + c * 31 + u * 7 + v * 3 + seed * 17) % 97) as f64 / 48.0 - 1.0) * 0.7
        })
    };
    let mut net = Network::new();
    net.push(
        Conv2d::new("c1", w4((4, 3, 3, 3), 1), Some(Array1::from_elem(4, 0.05)), ConvGeometry::square(1, 1)).unwrap(),
    );
    net.push(Relu);
    net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
    net.push(
        Conv2d::new("c2", w4((5, 4, 3, 3), 2), Some(Array1::from_elem(5, -0.02)), ConvGeometry::square(1, 1)).unwrap(),
    );
    net.push(Relu);
    net.push(Flatten);
    net.push(
        Linear::new(
            "fc",
            Array2::from_shape_fn((4, 80), |(i, j)| (((i * 37 + j * 11) % 89) as f64 / 44.0 - 1.0) * 0.5),
            None,
        )
        .unwrap(),
    );
    net
}

/// Input relevance of LRP-α1β0 seeded with `seed`.
fn seeded(net: &Network<f64>, x: &Array4<f64>, seed: ArrayD<f64>) -> ArrayD<f64> {
    net.explain_rules(x, 0, &SeededLrp(seed)).unwrap().relevance.unwrap().into_dyn()
}

fn one_hot(classes: usize, k: usize, value: f64) -> ArrayD<f64> {
    let mut e = ArrayD::zeros(IxDyn(&[classes]));
    e[[k]] = value;
    e
}

#[test]
fn both_are_linear_combinations_of_lrp_walks_seeded_one_class_at_a_time() {
    let net = cnn();
    let x = Array4::from_shape_fn((1, 3, 8, 8), |(_, c, i, j)| ((c * 64 + i * 8 + j) * 7919 % 101) as f64 / 50.0 - 1.0);
    let logits = net.forward(&x).unwrap().row(0).to_owned();
    let classes = logits.len();
    let per_class: Vec<ArrayD<f64>> = (0..classes).map(|k| seeded(&net, &x, one_hot(classes, k, 1.0))).collect();
    let combine = |weights: &dyn Fn(usize) -> f64| {
        per_class.iter().enumerate().fold(ArrayD::zeros(per_class[0].raw_dim()), |acc, (k, r)| acc + r * weights(k))
    };
    let close = |a: &ArrayD<f64>, b: &ArrayD<f64>| {
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        a.iter().zip(b).all(|(u, v)| (u - v).abs() <= 1e-12 * scale)
    };
    for target in 0..classes {
        let seed = Rules::<f64>::seed(&Sglrp, logits.view(), target);
        let sglrp = relevance(&net, &x, target, Method::Sglrp);
        assert!(close(&sglrp, &combine(&|k| seed[[k]])), "SGLRP, target {target}");

        let r_target = combine(&|k| if k == target { logits[k].abs() } else { 0.0 });
        let r_dual = combine(&|k| if k == target { 0.0 } else { logits[k].abs() });
        let expected = &r_target - &(&r_dual * (r_target.sum() / r_dual.sum()));
        let clrp = relevance(&net, &x, target, Method::Clrp);
        assert!(close(&clrp, &expected), "CLRP, target {target}");
        // Rescaled to the target's total, the contrast sums to zero.
        assert!(clrp.sum().abs() <= 1e-12 * r_target.sum().abs().max(1.0), "CLRP total, target {target}");
    }
}

#[test]
fn the_cli_runs_them_and_refuses_rsp_options() {
    let scratch_dir = crate::common::scratch("contrastive");
    let dir = scratch_dir.path().to_path_buf();
    let model = common::data("golden/vgg_tiny.safetensors");
    let file = common::read_tensors(&model);
    let input = dir.join("input.npy");
    rsp::io::npy::write_npy(&input, &file.tensors["input"]).unwrap();
    let net = Network::<f64>::load(&model).unwrap();
    let x: Array4<f64> = file.tensors["input"].clone().into_dimensionality().unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rsp"))
            .args(["attribute", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap()])
            .args(["--target", "1", "--dtype", "f64"])
            .args(extra)
            .output()
            .unwrap()
    };
    for (name, method) in [("clrp", Method::Clrp), ("sglrp", Method::Sglrp)] {
        let out = dir.join(format!("{name}.npy"));
        let o = run(&["--method", name, "--out", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got: ArrayD<f64> = rsp::io::npy::read_npy(&out).unwrap();
        assert_eq!(got, relevance(&net, &x, 1, method), "{name}: the CLI equals the library");
        let o = run(&["--method", name, "--start", "single", "--out", out.to_str().unwrap()]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("belong to the RSP methods"));
    }
}

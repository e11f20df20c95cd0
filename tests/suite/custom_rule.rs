//! A rule and a method written outside the crate: LRP-γ (Montavon et al.,
//! 2019) as one `Rules` implementation, using only the public API; no layer
//! and no file of the crate knows about it. Then the same rule on backend
//! tensors (`TensorRules`), as a device would run it.
//!
//! LRP-γ on convolutions and linear layers: `W' = W + γ·W⁺`,
//! `R_in = x ⊙ W'ᵀ(R ⊘ W'x)`; the z^B rule on the input convolution; every
//! other layer as in the built-in LRP composite.

use rsp::attribution::{LayerStep, Lrp, Rules, TensorRules};
use rsp::backend::{Backend, ConvGeometry, Tensor};
use rsp::layers::{AdaptiveAvgPool2d, Conv2d, Flatten, Layer, Linear, MaxPool2d, Relu, RuleContext};
use rsp::ndarray::{Array3, Array4, ArrayD, ArrayView1, ArrayView3, ArrayView4, ArrayViewD, Ix3, Zip};
use rsp::{Method, Network};

struct LrpGamma {
    gamma: f64,
}

impl LrpGamma {
    /// `x ⊙ W'ᵀ(R ⊘ conv(x, W'))`, divisions by zero giving zero.
    fn conv(
        &self,
        backend: &dyn Backend<f64>,
        x: ArrayView3<f64>,
        r: ArrayView3<f64>,
        w: ArrayView4<f64>,
        g: &ConvGeometry,
    ) -> rsp::Result<Array3<f64>> {
        let w = w.mapv(|v| v + self.gamma * v.max(0.0));
        let z = backend.conv2d(x, w.view(), g)?;
        let s = Zip::from(&r).and(&z).map_collect(|&rv, &zv| if zv == 0.0 { 0.0 } else { rv / zv });
        let back = backend.conv2d_input_adjoint(s.view(), w.view(), g, (x.dim().1, x.dim().2))?;
        Ok(Zip::from(&x).and(&back).map_collect(|&xv, &b| xv * b))
    }
}

impl Rules<f64> for LrpGamma {
    fn name(&self) -> &'static str {
        "lrp-gamma"
    }

    fn layer(
        &self,
        backend: &dyn Backend<f64>,
        layer: &dyn Layer<f64>,
        x: ArrayViewD<f64>,
        r: ArrayViewD<f64>,
        ctx: RuleContext,
    ) -> rsp::Result<ArrayD<f64>> {
        if let Some(conv) = layer.downcast_ref::<Conv2d<f64>>() {
            let (x, r) = (x.into_dimensionality::<Ix3>().unwrap(), r.into_dimensionality::<Ix3>().unwrap());
            return Ok(if ctx.is_input_layer {
                conv.zb_rule(backend, x, r)?
            } else {
                self.conv(backend, x, r, conv.weight().view(), conv.geometry())?
            }
            .into_dyn());
        }
        if let Some(fc) = layer.downcast_ref::<Linear<f64>>() {
            let (o, i) = fc.weight().dim();
            let w = fc.weight().view().into_shape_with_order((o, i, 1, 1)).unwrap();
            let x = x.into_shape_with_order((i, 1, 1)).unwrap();
            let r = r.into_shape_with_order((o, 1, 1)).unwrap();
            let rin = self.conv(backend, x, r, w, &ConvGeometry::square(1, 0))?;
            return Ok(rin.into_shape_with_order(i).unwrap().into_dyn());
        }
        Rules::layer(&Lrp::epsilon(0.0), backend, layer, x, r, ctx)
    }

    fn add(
        &self,
        a: ArrayViewD<f64>,
        b: ArrayViewD<f64>,
        r: ArrayViewD<f64>,
    ) -> rsp::Result<(ArrayD<f64>, ArrayD<f64>)> {
        Rules::add(&Lrp::epsilon(0.0), a, b, r)
    }

    fn seed(&self, logits: ArrayView1<f64>, target: usize) -> ArrayD<f64> {
        Rules::<f64>::seed(&Lrp::epsilon(0.0), logits, target)
    }
}

/// The same LRP-γ on whole batches of backend tensors (what a device runs
/// without a transfer per node), written with the public backend operations
/// only and offered through `Rules::on_tensors`.
struct LrpGammaOnTensors(LrpGamma);

impl LrpGammaOnTensors {
    /// `x ⊙ W'ᵀ(R ⊘ conv(x, W'))` of every sample, `W' = W + γ·W⁺`.
    fn conv(
        &self,
        step: &LayerStep<'_, f64>,
        x: &Tensor<f64>,
        r: &Tensor<f64>,
        w: &Tensor<f64>,
        g: &ConvGeometry,
    ) -> rsp::Result<Tensor<f64>> {
        let b = step.backend;
        let w = b.scaled_add(w, self.0.gamma, &b.clamp(w, Some(0.0), None)?)?;
        let z = b.conv2d_batch(x, &w, None, g)?;
        let s = b.stabilised_divide_batch(r, &z, None)?;
        let back = b.conv2d_input_adjoint_batch(&s, &w, g, (x.shape()[2], x.shape()[3]))?;
        b.mul_batch(x, &back)
    }
}

impl TensorRules<f64> for LrpGammaOnTensors {
    fn layer(&self, step: &LayerStep<'_, f64>) -> rsp::Result<Tensor<f64>> {
        let (x, r) = (step.input, step.relevance);
        if let Some(conv) = step.layer.downcast_ref::<Conv2d<f64>>() {
            let w = &step.parameters[0]; // a convolution's weight, then its bias
            if step.ctx.is_input_layer {
                return step.backend.zb_rule_batch(x, r, w, conv.geometry());
            }
            return self.conv(step, x, r, w, conv.geometry());
        }
        if step.layer.downcast_ref::<Linear<f64>>().is_some() {
            let w = &step.parameters[0];
            let (n, i, o) = (x.shape()[0], x.shape()[1], r.shape()[1]);
            let (x4, r4, w4) =
                (x.reshaped(vec![n, i, 1, 1])?, r.reshaped(vec![n, o, 1, 1])?, w.reshaped(vec![o, i, 1, 1])?);
            return self.conv(step, &x4, &r4, &w4, &ConvGeometry::square(1, 0))?.reshaped(vec![n, i]);
        }
        TensorRules::layer(&Lrp::epsilon(0.0), step)
    }

    fn add(
        &self,
        backend: &dyn Backend<f64>,
        a: &Tensor<f64>,
        b: &Tensor<f64>,
        r: &Tensor<f64>,
    ) -> rsp::Result<(Tensor<f64>, Tensor<f64>)> {
        TensorRules::add(&Lrp::epsilon(0.0), backend, a, b, r)
    }
}

impl Rules<f64> for LrpGammaOnTensors {
    fn name(&self) -> &'static str {
        "lrp-gamma"
    }

    fn layer(
        &self,
        backend: &dyn Backend<f64>,
        layer: &dyn Layer<f64>,
        x: ArrayViewD<f64>,
        r: ArrayViewD<f64>,
        ctx: RuleContext,
    ) -> rsp::Result<ArrayD<f64>> {
        self.0.layer(backend, layer, x, r, ctx)
    }

    fn add(
        &self,
        a: ArrayViewD<f64>,
        b: ArrayViewD<f64>,
        r: ArrayViewD<f64>,
    ) -> rsp::Result<(ArrayD<f64>, ArrayD<f64>)> {
        self.0.add(a, b, r)
    }

    fn on_tensors(&self) -> Option<&dyn TensorRules<f64>> {
        Some(self)
    }
}

/// conv → relu → conv → relu → max pool → adaptive pool → flatten → linear, no biases.
fn network() -> Network<f64> {
    let w = |shape: (usize, usize, usize, usize), seed: usize| {
        Array4::from_shape_fn(shape, |(o, c, u, v)| (((o * 7 + c * 5 + u * 3 + v + seed) % 11) as f64 - 5.0) * 0.07)
    };
    let mut net = Network::new();
    net.push(Conv2d::new("c0", w((6, 3, 3, 3), 1), None, ConvGeometry::square(1, 1)).unwrap());
    net.push(Relu);
    net.push(Conv2d::new("c1", w((6, 6, 3, 3), 2), None, ConvGeometry::square(1, 1)).unwrap());
    net.push(Relu);
    net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
    net.push(AdaptiveAvgPool2d::new((2, 2)));
    net.push(Flatten);
    let fc = rsp::ndarray::Array2::from_shape_fn((4, 24), |(i, j)| ((i * 5 + j) % 7) as f64 * 0.1 - 0.3);
    net.push(Linear::new("fc", fc, None).unwrap());
    net
}

fn input() -> Array4<f64> {
    Array4::from_shape_fn((2, 3, 8, 8), |(n, c, i, j)| (((n + c * 3 + i * 5 + j * 7) % 13) as f64) / 13.0 - 0.2)
}

#[test]
fn lrp_gamma_zero_is_lrp_zero_bit_for_bit() {
    // With γ = 0, W' = W: the rule is LRP-0, the built-in ε-rule with ε = 0 on a
    // network without biases, computed by the same operations.
    let (net, x) = (network(), input());
    let ours = net.explain_rules(&x, [1, 2], &LrpGamma { gamma: 0.0 }).unwrap();
    let builtin = net.explain(&x, [1, 2], Method::LrpEpsilon(0.0)).unwrap();
    assert_eq!(ours.relevance, builtin.relevance);
    assert_eq!(ours.heatmaps, builtin.heatmaps);
    assert_eq!(ours.method, Method::Custom("lrp-gamma"));
    assert_eq!(ours.method.name(), "lrp-gamma");
}

#[test]
fn lrp_gamma_conserves_the_target_logit_and_differs_from_lrp_zero() {
    // Every layer above the input reads ReLU outputs (x ≥ 0), so z' = W'x ≥ Wx > 0
    // wherever relevance arrives: each layer conserves it, and so does z^B at the
    // input (no biases). The input relevance sums to the target's logit.
    let (net, x) = (network(), input());
    let e = net.explain_rules(&x, [1, 2], &LrpGamma { gamma: 0.25 }).unwrap();
    let r = e.relevance.as_ref().unwrap();
    let lrp0 = net.explain(&x, [1, 2], Method::LrpEpsilon(0.0)).unwrap().relevance.unwrap();
    for (n, &t) in [1usize, 2].iter().enumerate() {
        let logit = e.logits[[n, t]];
        let total: f64 = r.index_axis(rsp::ndarray::Axis(0), n).sum();
        assert!((total - logit).abs() <= 1e-9 * logit.abs().max(1.0), "sample {n}: {total} vs logit {logit}");
    }
    // γ > 0 favours positive contributions: a different map.
    let diff = (r - &lrp0).mapv(f64::abs).sum();
    assert!(diff > 1e-6, "LRP-γ equals LRP-0");
}

#[test]
fn explain_refuses_a_method_given_by_rules() {
    let (net, x) = (network(), input());
    let err = net.explain(&x, 1, Method::Custom("lrp-gamma")).unwrap_err();
    assert!(err.to_string().contains("explain_rules"), "{err}");
}

#[test]
fn lrp_gamma_on_tensors_gives_the_bits_of_its_host_rules() {
    // The two forms of the user's rule, one per sample on host arrays, one on
    // backend tensors: the same operations in the same order, the same bits.
    let (net, x) = (network(), input());
    for gamma in [0.0, 0.25] {
        let host = net.explain_rules(&x, [1, 2], &LrpGamma { gamma }).unwrap();
        let tensors = net.explain_rules(&x, [1, 2], &LrpGammaOnTensors(LrpGamma { gamma })).unwrap();
        let bits =
            |e: &rsp::Explanation<f64>| e.relevance.as_ref().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&tensors), bits(&host), "γ = {gamma}");
        assert_eq!(tensors.method, Method::Custom("lrp-gamma"));
    }
}

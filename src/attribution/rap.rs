//! RAP, Relative Attributing Propagation (Nam, Gur, Choi, Wolf & Lee, AAAI
//! 2020), as its authors' released code computes it (repository
//! `wjNam/Relative_Attributing_Propagation`, `modules/layers.py`, the
//! `RAP_relprop` methods): a [`Rules`] implementation for the one graph walk,
//! and the same rules on backend tensors ([`TensorRules`]; the relative rule
//! and the first propagation are backend operations whose per-sample kernels
//! are in `backend/rap.rs`).
//! Written from that code, not copied; every rule, constant and quirk is
//! described in `docs/method-rap.md`.
//!
//! | layer | rule (released name) |
//! |---|---|
//! | `Linear` the walk starts at (the logits) | `first_prop`: four sign sections, the bias shared between the "positive" and "negative" sections, then `redistribute` |
//! | `Linear` elsewhere | `pos_prop` on both input signs, each followed by `shift_rel` (`S1n` divided by `Za1`) |
//! | `Conv2d` reading the network input | `final_backward`: the z^B rule ([`Conv2d::zb_rule`]) |
//! | `Conv2d` elsewhere | `pos_prop` as for `Linear`, but `S1n` divided by (and propagated through) `Za2` |
//! | `BatchNorm2d` | bias share removed and added back, `w = γ/sqrt(σ²² + ε)` (the variance squared, as released) |
//! | `MaxPool2d`, `AvgPool2d`, `AdaptiveAvgPool2d`, residual `Add` | `RelPropSimple`: `x ⊙ ∇(R ⊘ z)` |
//! | `Relu`, `Dropout`, `Flatten` | identity (reshaped back) |

use super::walk::{LayerStep, Rules, TensorRules};
use crate::backend::rap::{first_propagation, relative_rule};
use crate::backend::rules::batch_norm_rule;
use crate::backend::{Backend, ConvGeometry, RapFlavour, Tensor};
use crate::error::{Result, RspError};
use crate::float::{safe_div, Float};
use crate::layers::{
    as_chw, check_same_shape, AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, Layer, LayerKind, Linear, MaxPool2d,
    RuleContext,
};
use ndarray::{Array1, Array3, ArrayD, ArrayView1, ArrayView3, ArrayViewD};
use ndarray::{Ix1, IxDyn, Zip};

/// RAP as released: seeded with the one-hot of the target at the logits (what
/// the released `main.py` feeds), walked through the whole network, the
/// classifier included. The input relevance sums to the target's logit (up to
/// the relevance of a zero denominator, which is dropped).
///
/// The released code recognises its "first propagation" (the last `Linear`)
/// by the relevance it receives, `R.max() == 1`; here it is structural: the
/// `Linear` node the walk starts at ([`RuleContext::receives_seed`]). The two
/// differ only when the logits' relevance is not the one-hot (another seed,
/// or a `Linear` inside the network receiving a relevance whose maximum
/// happens to be exactly 1). Likewise its test for the input convolution,
/// "three input channels", is here the convolution reading the network input
/// ([`RuleContext::is_input_layer`]).
///
/// ```
/// use rsp::attribution::{Rap, Rules};
/// use rsp::backend::CpuBackend;
/// use rsp::layers::{Layer, Linear, RuleContext};
/// // The logits layer y = x₀ − x₁ + 1 at x = (2, 1): y = 2.
/// let fc = Linear::new("fc", rsp::ndarray::arr2(&[[1.0f64, -1.0]]), Some(rsp::ndarray::arr1(&[1.0]))).unwrap();
/// let x = rsp::ndarray::arr1(&[2.0, 1.0]).into_dyn();
/// let y = fc.forward(&CpuBackend, x.view()).unwrap();
/// let seed = Rules::<f64>::seed(&Rap, y.view().into_dimensionality().unwrap(), 0);
/// assert_eq!(seed, rsp::ndarray::arr1(&[1.0]).into_dyn()); // the one-hot, not the logit
/// let ctx = RuleContext { receives_seed: true, ..Default::default() };
/// let r = Rap.layer(&CpuBackend, &fc, x.view(), seed.view(), ctx).unwrap();
/// // Sections W⁺x⁺ = 2 and W⁻x⁺ = −1; the bias 1 split as Pos/(Pos+Neg) = 2 and
/// // Neg/(Pos+Neg) = −1 between them: C = (2 + 2, −1 − 1) = (4, −2), sum y = 2;
/// // redistributed as |C|·ΣC/Σ|C| = (4/3, 2/3).
/// assert!((r[0] - 4.0 / 3.0).abs() < 1e-12 && (r[1] - 2.0 / 3.0).abs() < 1e-12);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rap;

impl<T: Float> Rules<T> for Rap {
    fn name(&self) -> &'static str {
        "rap"
    }

    fn layer(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        let out = layer.output_shape(x.shape())?;
        check_same_shape(&format!("relevance at the output of {}", layer.describe()), &out, relevance.shape())?;
        if let Some(conv) = layer.downcast_ref::<Conv2d<T>>() {
            let (x, r) = (as_chw(x, "RAP rule")?, as_chw(relevance, "RAP rule")?);
            let rin = if ctx.is_input_layer {
                conv.zb_rule(backend, x, r)?
            } else {
                relative_rule(backend, x, r, conv.weight().view(), conv.geometry(), RapFlavour::Conv2d)?
            };
            return Ok(rin.into_dyn());
        }
        if let Some(fc) = layer.downcast_ref::<Linear<T>>() {
            let (o, i) = fc.weight().dim();
            if ctx.receives_seed {
                let x = x.into_dimensionality::<Ix1>().expect("checked vector");
                let r = relevance.into_dimensionality::<Ix1>().expect("checked vector");
                return Ok(
                    first_propagation(backend, x, r, fc.weight().view(), fc.bias().map(|b| b.view()))?.into_dyn()
                );
            }
            // A 1×1 convolution on a 1×1 map, with the Linear version of `pos_prop`.
            let x_map = x.into_shape_with_order((i, 1, 1)).expect("checked vector");
            let r_map = relevance.into_shape_with_order((o, 1, 1)).expect("checked vector");
            let w = fc.weight().view().into_shape_with_order((o, i, 1, 1)).expect("standard layout");
            let rin = relative_rule(backend, x_map, r_map, w, &ConvGeometry::square(1, 0), RapFlavour::Linear)?;
            return Ok(rin.into_shape_with_order(i).expect("i×1×1").into_dyn());
        }
        if let Some(bn) = layer.downcast_ref::<BatchNorm2d<T>>() {
            return Ok(rap_batch_norm_rule(bn, as_chw(x, "RAP rule")?, as_chw(relevance, "RAP rule")?).into_dyn());
        }
        let is_pool = layer.downcast_ref::<MaxPool2d>().is_some()
            || layer.downcast_ref::<AvgPool2d>().is_some()
            || layer.downcast_ref::<AdaptiveAvgPool2d>().is_some();
        if is_pool {
            // `RelPropSimple`: S = R ⊘ z, R_in = x ⊙ ∇z(S) (for max pooling, the gradient's routing).
            let z = layer.forward(backend, x.view())?;
            let s = Zip::from(&relevance).and(&z).map_collect(|&r, &z| safe_div(r, z));
            let g = layer.gradient(backend, x.view(), s.view())?;
            return Ok(Zip::from(&x).and(&g).map_collect(|&x, &g| x * g));
        }
        match layer.kind() {
            LayerKind::Relu | LayerKind::Dropout | LayerKind::Flatten => Ok(relevance
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(x.shape()))
                .expect("same number of elements")),
            _ => Err(RspError::Model(format!("layer `{}` has no RAP rule", layer.describe()))),
        }
    }

    /// `RelPropSimple` on the sum `z = a + b`: `S = R ⊘ z`, `R_a = a ⊙ S`,
    /// `R_b = b ⊙ S` (the released `Add`); the branch point sums its
    /// readers' relevances (the released Bottleneck's `x1 + x`).
    fn add(&self, a: ArrayViewD<T>, b: ArrayViewD<T>, r: ArrayViewD<T>) -> Result<(ArrayD<T>, ArrayD<T>)> {
        check_same_shape("relevance of a residual sum", a.shape(), r.shape())?;
        check_same_shape("summand of a residual sum", a.shape(), b.shape())?;
        let s = Zip::from(&a).and(&b).and(&r).map_collect(|&a, &b, &r| safe_div(r, a + b));
        Ok((&a * &s, &b * &s))
    }

    /// The one-hot of the target (value 1), as the released `main.py` feeds it.
    fn seed(&self, logits: ArrayView1<T>, target: usize) -> ArrayD<T> {
        let mut seed = ArrayD::zeros(IxDyn(&[logits.len()]));
        seed[[target]] = T::one();
        seed
    }

    fn check_every_node(&self) -> bool {
        true
    }

    fn on_tensors(&self) -> Option<&dyn TensorRules<T>> {
        Some(self)
    }
}

/// RAP on whole batches of backend tensors: the walk keeps every tensor on
/// the backend. Each rule is the host rule's, on the same per-sample kernels
/// on the host backends (the same bits); the convolutions' and the logits
/// layer's rules are backend operations of their own
/// ([`Backend::rap_relative_rule_batch`], [`Backend::rap_first_propagation_batch`]),
/// batch norm shares RSP's ([`Backend::batch_norm_rule_batch`]) and the
/// input layer LRP's z^B rule ([`Backend::zb_rule_batch`]).
impl<T: Float> TensorRules<T> for Rap {
    fn layer(&self, step: &LayerStep<'_, T>) -> Result<Tensor<T>> {
        step.check_relevance()?;
        let (backend, layer, x, r) = (step.backend, step.layer, step.input, step.relevance);
        if let Some(conv) = layer.downcast_ref::<Conv2d<T>>() {
            let w = &step.parameters[0];
            if step.ctx.is_input_layer {
                return backend.zb_rule_batch(x, r, w, conv.geometry());
            }
            return backend.rap_relative_rule_batch(x, r, w, conv.geometry(), RapFlavour::Conv2d);
        }
        if layer.downcast_ref::<Linear<T>>().is_some() {
            let (w, bias) = (&step.parameters[0], step.parameters.get(1));
            if step.ctx.receives_seed {
                return backend.rap_first_propagation_batch(x, r, w, bias);
            }
            // A 1×1 convolution on a 1×1 map, as on the host.
            let (n, i, o) = (x.shape()[0], x.shape()[1], r.shape()[1]);
            let (x_map, r_map) = (x.reshaped(vec![n, i, 1, 1])?, r.reshaped(vec![n, o, 1, 1])?);
            let w = w.reshaped(vec![o, i, 1, 1])?;
            let geometry = ConvGeometry::square(1, 0);
            let rin = backend.rap_relative_rule_batch(&x_map, &r_map, &w, &geometry, RapFlavour::Linear)?;
            return rin.reshaped(vec![n, i]);
        }
        if layer.downcast_ref::<BatchNorm2d<T>>().is_some() {
            // The parameters: mean, forward scale, shift β, rule weight.
            return backend.batch_norm_rule_batch(x, r, &step.parameters[3], &step.parameters[2]);
        }
        let is_pool = layer.downcast_ref::<MaxPool2d>().is_some()
            || layer.downcast_ref::<AvgPool2d>().is_some()
            || layer.downcast_ref::<AdaptiveAvgPool2d>().is_some();
        if is_pool {
            // `RelPropSimple` with the forward pass's output as `z`.
            let s = backend.stabilised_divide_batch(r, step.output, None)?;
            let g = layer.gradient_batch(backend, x, &s, step.parameters)?;
            return backend.mul_batch(x, &g);
        }
        match layer.kind() {
            LayerKind::Relu | LayerKind::Dropout | LayerKind::Flatten => r.reshaped(x.shape().to_vec()),
            _ => Err(RspError::Model(format!("layer `{}` has no RAP rule", layer.describe()))),
        }
    }

    /// `RelPropSimple` on the sum, as on the host.
    fn add(
        &self,
        backend: &dyn Backend<T>,
        a: &Tensor<T>,
        b: &Tensor<T>,
        relevance: &Tensor<T>,
    ) -> Result<(Tensor<T>, Tensor<T>)> {
        let s = backend.stabilised_divide_batch(relevance, &backend.add_batch(a, b)?, None)?;
        Ok((backend.mul_batch(a, &s)?, backend.mul_batch(b, &s)?))
    }

    /// The one-hot of each sample's target.
    fn seed(&self, backend: &dyn Backend<T>, logits: &Tensor<T>, classes: &[usize]) -> Result<Tensor<T>> {
        let width = logits.shape().get(1).copied().unwrap_or(0);
        backend.one_hot_batch(classes, width)
    }
}

/// The released `BatchNorm2d.RAP_relprop`: `w_c = γ_c / sqrt(σ²_c² + ε)` (the
/// running variance squared, as released), the bias share
/// `b = β_c·[R ≠ 0] ⊘ n_c` (`n_c` the nonzero relevances of channel `c`)
/// removed and added back: `R_in = x ⊙ ((R − b) ⊘ (x·w))·w + x ⊙ (b ⊘ (x·w))·w`,
/// i.e. `R` where `x·w ≠ 0`, else 0. This is RSP's batch-norm rule, with the
/// same weight ([`BatchNorm2d`]'s rule weight), so both share one kernel.
fn rap_batch_norm_rule<T: Float>(bn: &BatchNorm2d<T>, x: ArrayView3<T>, r: ArrayView3<T>) -> Array3<T> {
    let (gamma, beta, _, var, eps) = bn.parameters();
    let w: Array1<T> = Zip::from(gamma).and(var).map_collect(|&g, &v| g / (v * v + eps).sqrt());
    batch_norm_rule(x, r, w.view(), beta.view())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;
    use ndarray::{arr1, arr2};

    #[test]
    fn the_residual_sum_shares_in_proportion_to_the_summands() {
        let (a, b, r) = (arr1(&[3.0, -1.0, 0.0]).into_dyn(), arr1(&[1.0, 2.0, 0.0]).into_dyn(), arr1(&[4.0, 1.0, 5.0]));
        let (ra, rb) = Rules::<f64>::add(&Rap, a.view(), b.view(), r.into_dyn().view()).unwrap();
        assert_eq!(ra, arr1(&[3.0, -1.0, 0.0]).into_dyn());
        assert_eq!(rb, arr1(&[1.0, 2.0, 0.0]).into_dyn()); // a zero sum passes nothing
    }

    /// A hand-computed hidden `Linear`: `W = [[1, −2]]`, `x = (1, 1)`, `R = 3`.
    /// Z1 = 1 (through W⁺), Z2 = 2 (the magnitude through W⁻): `S1 = 3`,
    /// `S2 = 3·(2/3)/2 = 1`; `C = x·(W⁺ᵀS1) + x·(−W⁻ᵀS2) = (3, 2)`, then
    /// shifted by `(5 − 3)/2 = 1` each: `(2, 1)`.
    #[test]
    fn a_hidden_linear_layer_shares_by_magnitude_and_conserves() {
        let fc = Linear::new("fc", arr2(&[[1.0f64, -2.0]]), Some(arr1(&[7.0]))).unwrap();
        let x = arr1(&[1.0, 1.0]).into_dyn();
        let r = arr1(&[3.0]).into_dyn();
        let rin = Rules::<f64>::layer(&Rap, &CpuBackend, &fc, x.view(), r.view(), RuleContext::default()).unwrap();
        assert_eq!(rin, arr1(&[2.0, 1.0]).into_dyn());
        // Negative relevance: Linear divides S1n by Z1 = 1: S1n = −3, S2n = −1: C = (−3, −2), shifted by −1.
        let r = arr1(&[-3.0]).into_dyn();
        let rin = Rules::<f64>::layer(&Rap, &CpuBackend, &fc, x.view(), r.view(), RuleContext::default()).unwrap();
        assert_eq!(rin, arr1(&[-2.0, -1.0]).into_dyn());
    }

    /// The Conv2d version of `pos_prop` sends the negative relevance's first
    /// share through `Z2` (divided by `Z2`), unlike the Linear version: the same
    /// numbers as the Linear test above as a 1×1 convolution. With `R = −3`:
    /// `S1n = −3/2`, `S2n = −1`, both through `−W⁻`: `C = (0, −5)`, then the
    /// excess −2 goes to the one nonzero entry: `(0, −3)`.
    #[test]
    fn a_hidden_convolution_sends_negative_relevance_through_the_negative_weights() {
        let conv = Conv2d::new(
            "c",
            ndarray::Array4::from_shape_vec((1, 2, 1, 1), vec![1.0f64, -2.0]).unwrap(),
            None,
            ConvGeometry::square(1, 0),
        )
        .unwrap();
        let x = ndarray::Array3::from_elem((2, 1, 1), 1.0).into_dyn();
        let run = |r: f64| {
            let r = ndarray::Array3::from_elem((1, 1, 1), r).into_dyn();
            Rules::<f64>::layer(&Rap, &CpuBackend, &conv, x.view(), r.view(), RuleContext::default())
                .unwrap()
                .into_raw_vec_and_offset()
                .0
        };
        assert_eq!(run(3.0), vec![2.0, 1.0]);
        assert_eq!(run(-3.0), vec![0.0, -3.0]);
    }

    /// Inputs of both signs: each sign's half is shifted to `ΣR` on its own, so
    /// the result sums to `2·ΣR` (the released code's behaviour, kept).
    /// `W = [[1, −2]]`, `x = (1, −1)`, `R = 3`: `x⁺` passes 3 through `W⁺`,
    /// `x⁻` passes `(−1)·(−2)·(3/2) = 3` through `W⁻`.
    #[test]
    fn inputs_of_both_signs_are_shifted_separately() {
        let fc = Linear::new("fc", arr2(&[[1.0f64, -2.0]]), None).unwrap();
        let x = arr1(&[1.0, -1.0]).into_dyn();
        let r = arr1(&[3.0]).into_dyn();
        let rin = Rules::<f64>::layer(&Rap, &CpuBackend, &fc, x.view(), r.view(), RuleContext::default()).unwrap();
        assert_eq!(rin, arr1(&[3.0, 3.0]).into_dyn());
    }

    /// The first propagation (logits layer) vs the hidden rule on the same
    /// layer: the structural flag decides, not the relevance's values.
    #[test]
    fn the_first_propagation_is_chosen_by_the_walk_start() {
        let fc = Linear::new("fc", arr2(&[[1.0f64, -1.0]]), Some(arr1(&[1.0]))).unwrap();
        let x = arr1(&[2.0, 1.0]).into_dyn();
        let r = arr1(&[1.0]).into_dyn();
        let seeded = RuleContext { receives_seed: true, ..Default::default() };
        let first = Rules::<f64>::layer(&Rap, &CpuBackend, &fc, x.view(), r.view(), seeded).unwrap();
        let hidden = Rules::<f64>::layer(&Rap, &CpuBackend, &fc, x.view(), r.view(), RuleContext::default()).unwrap();
        // First: (4, −2) redistributed to (4/3, 2/3), sum = the logit 2.
        assert!((first[0] - 4.0 / 3.0).abs() < 1e-15 && (first[1] - 2.0 / 3.0).abs() < 1e-15);
        // Hidden (bias ignored): Z1 = 2, Z2 = 1, T = 3: S1 = 1/2, S2 = (1/3)/1, C = (1, 1/3);
        // the excess 1/3 is taken back evenly: (5/6, 1/6).
        assert!((hidden[0] - 5.0 / 6.0).abs() < 1e-15 && (hidden[1] - 1.0 / 6.0).abs() < 1e-15);
    }
}

//! LRP-ε and LRP-α1β0 as composites: each layer kind mapped to its rule (as
//! zennit's composites do), so that the layers hold no LRP code and a new rule
//! is a new [`Rules`] implementation, not a change to every layer.
//!
//! | layer | ε | α1β0 |
//! |---|---|---|
//! | `Conv2d` reading the network input | z^B ([`Conv2d::zb_rule`], RSP's) | z^B |
//! | `Conv2d` elsewhere, `Linear` anywhere | `R_in = x ⊙ Wᵀ(R ⊘ (z + ε·sign z))` | `R_in = x⁺ ⊙ W⁺ᵀ(R ⊘ z⁺) + x⁻ ⊙ W⁻ᵀ(R ⊘ z⁺)` |
//! | `MaxPool2d` | winner-take-all (the gradient's routing) | same |
//! | `AvgPool2d`, `AdaptiveAvgPool2d` | `x ⊙ poolᵀ(R ⊘ (pool(x) + ε·sign))` | `x⁺ ⊙ poolᵀ(R ⊘ pool(x⁺))` |
//! | residual `Add` | `S = R ⊘ (a + b + ε·sign)`, `R_a = a ⊙ S` | `S = R ⊘ (a⁺ + b⁺)`, `R_a = a⁺ ⊙ S` |
//! | `BatchNorm2d`, `Relu`, `Dropout`, `Flatten` | identity (reshaped back) | same |
//!
//! The formulas and the reasons for the choices are in `docs/methods.md`.

use super::walk::{LayerStep, Rules, TensorRules};
use crate::backend::{rules::stabilise, Backend, ConvGeometry, PoolWindows, Tensor};
use crate::error::{Result, RspError};
use crate::float::{safe_div, Float};
use crate::layers::{
    check_same_shape, AdaptiveAvgPool2d, AvgPool2d, Conv2d, Layer, LayerKind, Linear, MaxPool2d, RuleContext,
};
use ndarray::{Array1, Array3, ArrayD, ArrayView3, ArrayView4, ArrayViewD, Axis, CowArray, Ix3, IxDyn, Zip};

/// The rule LRP applies to convolutions, linear layers, average pooling and
/// residual sums.
///
/// ```
/// use rsp::attribution::LrpRule;
/// assert_eq!(LrpRule::Epsilon(0.25).epsilon(), Some(0.25));
/// assert_eq!(LrpRule::Alpha1Beta0.epsilon(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrpRule {
    /// The ε-rule: `R_in = x ⊙ Wᵀ(R ⊘ (z + ε·sign(z)))`, with `z = Wx + b`
    /// (bias included) and `sign(0) = 1`. `ε = 0` is LRP-0 (a zero `z` then
    /// passes no relevance).
    Epsilon(f64),
    /// The α1β0-rule: only positive contributions `(x_j w_jk)⁺` count,
    /// `z⁺_k = Σ_j (x_j w_jk)⁺` (no bias), `R_in = Σ_k (x_j w_jk)⁺ R_k / z⁺_k`.
    Alpha1Beta0,
}

impl LrpRule {
    /// The ε of the ε-rule, `None` for α1β0.
    pub fn epsilon(self) -> Option<f64> {
        match self {
            LrpRule::Epsilon(e) => Some(e),
            LrpRule::Alpha1Beta0 => None,
        }
    }

    /// The stabilised denominator of the ε-rule, `z + ε·sign(z)` with
    /// `sign(0) = 1`; `z` itself for α1β0 (whose `z⁺` needs no stabiliser:
    /// it is ≥ 0 and a zero passes no relevance).
    fn stabilise<T: Float>(self, z: T) -> T {
        stabilise(z, self.epsilon_as())
    }

    /// The ε as a `T` (what [`Backend::stabilised_divide_batch`] takes).
    fn epsilon_as<T: Float>(self) -> Option<T> {
        self.epsilon().map(T::of)
    }
}

/// LRP with one [`LrpRule`]: the composite of the table above, as [`Rules`]
/// for the one graph walk. Seeded with the target's logit alone.
///
/// ```
/// use rsp::attribution::{Lrp, Rules};
/// use rsp::backend::CpuBackend;
/// use rsp::layers::{Linear, RuleContext};
/// // y = 1·x₀ + 3·x₁ at x = (1, 1): z = 4, relevance 4 splits 1 : 3.
/// let fc = Linear::new("fc", rsp::ndarray::arr2(&[[1.0f64, 3.0]]), None).unwrap();
/// let x = rsp::ndarray::arr1(&[1.0, 1.0]).into_dyn();
/// let r = rsp::ndarray::arr1(&[4.0]).into_dyn();
/// let rin = Lrp::epsilon(0.0).layer(&CpuBackend, &fc, x.view(), r.view(), RuleContext::default()).unwrap();
/// assert_eq!(rin, rsp::ndarray::arr1(&[1.0, 3.0]).into_dyn());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lrp {
    /// The rule on convolutions, linear layers, average pooling and residual sums.
    pub rule: LrpRule,
}

impl Lrp {
    /// LRP-ε.
    pub fn epsilon(epsilon: f64) -> Self {
        Lrp { rule: LrpRule::Epsilon(epsilon) }
    }

    /// LRP-α1β0.
    pub fn alpha1_beta0() -> Self {
        Lrp { rule: LrpRule::Alpha1Beta0 }
    }
}

impl<T: Float> Rules<T> for Lrp {
    fn name(&self) -> &'static str {
        match self.rule {
            LrpRule::Epsilon(_) => "lrp-epsilon",
            LrpRule::Alpha1Beta0 => "lrp-alpha1-beta0",
        }
    }

    fn layer(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        self.rule_at(backend, layer, x, None, relevance, ctx)
    }

    /// The ε-rule's `z = Wx + b` is the layer's output: reused, not recomputed.
    fn layer_given_output(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        output: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        self.rule_at(backend, layer, x, Some(output), relevance, ctx)
    }

    /// In proportion to the inputs (ε), or to their positive parts (α1β0).
    fn add(&self, a: ArrayViewD<T>, b: ArrayViewD<T>, r: ArrayViewD<T>) -> Result<(ArrayD<T>, ArrayD<T>)> {
        let rule = self.rule;
        let mut ra = ArrayD::zeros(r.raw_dim());
        let mut rb = ArrayD::zeros(r.raw_dim());
        Zip::from(&mut ra).and(&mut rb).and(&a).and(&b).and(&r).for_each(|ra, rb, &av, &bv, &rv| {
            let (at, bt) = match rule {
                LrpRule::Epsilon(_) => (av, bv),
                LrpRule::Alpha1Beta0 => (av.max(T::zero()), bv.max(T::zero())),
            };
            let s = safe_div(rv, rule.stabilise(at + bt));
            *ra = at * s;
            *rb = bt * s;
        });
        Ok((ra, rb))
    }

    fn on_tensors(&self) -> Option<&dyn TensorRules<T>> {
        Some(self)
    }
}

/// The same composite on whole batches of backend tensors: the walk keeps
/// every tensor on the backend. Each step is the host rule's, in the same
/// order, with the same per-sample kernels on the host backends (same bits).
impl<T: Float> TensorRules<T> for Lrp {
    fn layer(&self, step: &LayerStep<'_, T>) -> Result<Tensor<T>> {
        step.check_relevance()?;
        let (backend, layer, x, r) = (step.backend, step.layer, step.input, step.relevance);
        let rule = self.rule;
        if let Some(conv) = layer.downcast_ref::<Conv2d<T>>() {
            let (w, bias) = (&step.parameters[0], step.parameters.get(1));
            if step.ctx.is_input_layer {
                return backend.zb_rule_batch(x, r, w, conv.geometry());
            }
            return conv_rule_batch(backend, x, Some(step.output), r, w, bias, conv.geometry(), rule);
        }
        if layer.downcast_ref::<Linear<T>>().is_some() {
            // A 1×1 convolution on a 1×1 map, as on the host (the same kernels, the same bits).
            let (n, i, o) = (x.shape()[0], x.shape()[1], r.shape()[1]);
            let w = step.parameters[0].reshaped(vec![o, i, 1, 1])?;
            let x_map = x.reshaped(vec![n, i, 1, 1])?;
            let z = step.output.reshaped(vec![n, o, 1, 1])?;
            let r_map = r.reshaped(vec![n, o, 1, 1])?;
            let geometry = ConvGeometry::square(1, 0);
            let rin = conv_rule_batch(backend, &x_map, Some(&z), &r_map, &w, step.parameters.get(1), &geometry, rule)?;
            return rin.reshaped(vec![n, i]);
        }
        if layer.downcast_ref::<MaxPool2d>().is_some() {
            // Winner-take-all: routed as the gradient is.
            return layer.gradient_batch(backend, x, r, step.parameters);
        }
        if let Some(pool) = layer.downcast_ref::<AvgPool2d>() {
            return avg_pool_rule_batch(backend, &pool.pool_windows(&x.shape()[1..])?, x, r, rule);
        }
        if let Some(pool) = layer.downcast_ref::<AdaptiveAvgPool2d>() {
            return avg_pool_rule_batch(backend, &pool.pool_windows(&x.shape()[1..])?, x, r, rule);
        }
        match layer.kind() {
            LayerKind::Relu | LayerKind::Dropout | LayerKind::BatchNorm2d | LayerKind::Flatten => {
                r.reshaped(x.shape().to_vec())
            }
            _ => Err(RspError::Model(format!("layer `{}` has no LRP rule", layer.describe()))),
        }
    }

    fn add(
        &self,
        backend: &dyn Backend<T>,
        a: &Tensor<T>,
        b: &Tensor<T>,
        relevance: &Tensor<T>,
    ) -> Result<(Tensor<T>, Tensor<T>)> {
        let (a, b) = match self.rule {
            LrpRule::Epsilon(_) => (a.clone(), b.clone()),
            LrpRule::Alpha1Beta0 => {
                (backend.clamp(a, Some(T::zero()), None)?, backend.clamp(b, Some(T::zero()), None)?)
            }
        };
        let s = backend.stabilised_divide_batch(relevance, &backend.add_batch(&a, &b)?, self.rule.epsilon_as())?;
        Ok((backend.mul_batch(&a, &s)?, backend.mul_batch(&b, &s)?))
    }
}

impl Lrp {
    /// The rule of `layer` at input `x`, with the layer's forward `output` when known.
    fn rule_at<T: Float>(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        output: Option<ArrayViewD<T>>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        let out = layer.output_shape(x.shape())?;
        check_same_shape(&format!("relevance at the output of {}", layer.describe()), &out, relevance.shape())?;
        let rule = self.rule;
        if let Some(conv) = layer.downcast_ref::<Conv2d<T>>() {
            let (x, r) = (chw(x)?, chw(relevance)?);
            let rin = if ctx.is_input_layer {
                conv.zb_rule(backend, x, r)?
            } else {
                let z = output.map(chw).transpose()?;
                conv_rule(backend, x, z, r, conv.weight().view(), conv.bias(), conv.geometry(), rule)?
            };
            return Ok(rin.into_dyn());
        }
        if let Some(fc) = layer.downcast_ref::<Linear<T>>() {
            // A 1×1 convolution on a 1×1 map (also on the input layer: z^B is for convolutions).
            let (o, i) = fc.weight().dim();
            let x_map = x.into_shape_with_order((i, 1, 1)).expect("checked vector");
            let r_map = relevance.into_shape_with_order((o, 1, 1)).expect("checked vector");
            let w = fc.weight().view().into_shape_with_order((o, i, 1, 1)).expect("standard layout");
            let z = output.map(|z| z.into_shape_with_order((o, 1, 1)).expect("the layer's output"));
            let rin = conv_rule(backend, x_map, z, r_map, w, fc.bias(), &ConvGeometry::square(1, 0), rule)?;
            return Ok(rin.into_shape_with_order(i).expect("i×1×1").into_dyn());
        }
        if layer.downcast_ref::<MaxPool2d>().is_some() {
            // Winner-take-all: routed as the gradient is.
            return layer.gradient(backend, x, relevance);
        }
        if let Some(pool) = layer.downcast_ref::<AvgPool2d>() {
            return avg_pool_rule(backend, &pool.pool_windows(x.shape())?, x, relevance, rule);
        }
        if let Some(pool) = layer.downcast_ref::<AdaptiveAvgPool2d>() {
            return avg_pool_rule(backend, &pool.pool_windows(x.shape())?, x, relevance, rule);
        }
        match layer.kind() {
            // Batch norm: our choice, see docs/methods.md; flatten: reshaped back.
            LayerKind::Relu | LayerKind::Dropout | LayerKind::BatchNorm2d | LayerKind::Flatten => Ok(relevance
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(x.shape()))
                .expect("same number of elements")),
            _ => Err(RspError::Model(format!("layer `{}` has no LRP rule", layer.describe()))),
        }
    }
}

fn chw<T>(x: ArrayViewD<'_, T>) -> Result<ArrayView3<'_, T>> {
    let shape = x.shape().to_vec();
    x.into_dimensionality::<Ix3>().map_err(|_| RspError::shape("LRP rule", "a C×H×W sample (rank 3)", &shape))
}

/// The LRP ε- and α1β0-rules of a convolution `z = conv(x, W) + b` (one
/// sample); a linear layer is a 1×1 convolution on a 1×1 map.
///
/// * ε: `S = R ⊘ (z + ε·sign(z))` (bias in `z`), `R_in = x ⊙ convᵀ(S, W)`;
/// * α1β0: with `x⁺ = max(x,0)`, `x⁻ = min(x,0)`, `W^± ` likewise, the positive
///   contributions are `x⁺W⁺` and `x⁻W⁻`: `z⁺ = conv(x⁺,W⁺) + conv(x⁻,W⁻)`,
///   `S = R ⊘ z⁺`, `R_in = x⁺ ⊙ convᵀ(S,W⁺) + x⁻ ⊙ convᵀ(S,W⁻)` (no bias):
///   one convolution and one adjoint when `x ≥ 0`, two of each otherwise.
///
/// `output`, when given, is the layer's forward output `conv(x, W) + b` (the
/// ε-rule's `z`, reused). Divisions by zero give zero (safe division).
#[allow(clippy::too_many_arguments)]
fn conv_rule<T: Float>(
    backend: &dyn Backend<T>,
    x: ArrayView3<T>,
    output: Option<ArrayView3<T>>,
    r: ArrayView3<T>,
    weight: ArrayView4<T>,
    bias: Option<&Array1<T>>,
    geometry: &ConvGeometry,
    rule: LrpRule,
) -> Result<Array3<T>> {
    let hw = (x.dim().1, x.dim().2);
    match rule {
        LrpRule::Epsilon(_) => {
            let z = match output {
                Some(z) => CowArray::from(z),
                None => {
                    let mut z = backend.conv2d(x, weight, geometry)?;
                    if let Some(b) = bias {
                        for (mut plane, &bv) in z.axis_iter_mut(Axis(0)).zip(b) {
                            plane += bv;
                        }
                    }
                    CowArray::from(z)
                }
            };
            let s = Zip::from(&r).and(&z).map_collect(|&rv, &zv| safe_div(rv, rule.stabilise(zv)));
            let back = backend.conv2d_input_adjoint(s.view(), weight, geometry, hw)?;
            Ok(Zip::from(&x).and(&back).map_collect(|&xv, &b| xv * b))
        }
        LrpRule::Alpha1Beta0 => {
            let w_pos = weight.mapv(|v| v.max(T::zero()));
            let x_pos = x.mapv(|v| v.max(T::zero()));
            let mut z = backend.conv2d(x_pos.view(), w_pos.view(), geometry)?;
            // After a ReLU there is no negative input: the x⁻ terms are exact
            // zeros, and their convolution and adjoint are skipped.
            let negative = x
                .iter()
                .any(|&v| v < T::zero())
                .then(|| (x.mapv(|v| v.min(T::zero())), weight.mapv(|v| v.min(T::zero()))));
            if let Some((x_neg, w_neg)) = &negative {
                z += &backend.conv2d(x_neg.view(), w_neg.view(), geometry)?;
            }
            let s = Zip::from(&r).and(&z).map_collect(|&rv, &zv| safe_div(rv, zv));
            let back_pos = backend.conv2d_input_adjoint(s.view(), w_pos.view(), geometry, hw)?;
            let mut rin = Zip::from(&x_pos).and(&back_pos).map_collect(|&xp, &bp| xp * bp);
            if let Some((x_neg, w_neg)) = &negative {
                let back_neg = backend.conv2d_input_adjoint(s.view(), w_neg.view(), geometry, hw)?;
                Zip::from(&mut rin).and(x_neg).and(&back_neg).for_each(|r, &xn, &bn| *r += xn * bn);
            }
            Ok(rin)
        }
    }
}

/// [`conv_rule`] of a whole batch on the backend (`weight` and `bias` as the
/// backend holds them).
#[allow(clippy::too_many_arguments)]
fn conv_rule_batch<T: Float>(
    backend: &dyn Backend<T>,
    x: &Tensor<T>,
    output: Option<&Tensor<T>>,
    r: &Tensor<T>,
    weight: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    geometry: &ConvGeometry,
    rule: LrpRule,
) -> Result<Tensor<T>> {
    let hw = (x.shape()[2], x.shape()[3]);
    let zero = Some(T::zero());
    match rule {
        LrpRule::Epsilon(_) => {
            let z = match output {
                Some(z) => z.clone(),
                None => backend.conv2d_batch(x, weight, bias, geometry)?,
            };
            let s = backend.stabilised_divide_batch(r, &z, rule.epsilon_as())?;
            let back = backend.conv2d_input_adjoint_batch(&s, weight, geometry, hw)?;
            backend.mul_batch(x, &back)
        }
        LrpRule::Alpha1Beta0 => {
            let (w_pos, x_pos) = (backend.clamp(weight, zero, None)?, backend.clamp(x, zero, None)?);
            let mut z = backend.conv2d_batch(&x_pos, &w_pos, None, geometry)?;
            // After a ReLU no sample has a negative input: the x⁻ terms are
            // exact zeros, and their convolution and adjoint are skipped. (A
            // batch where only some samples have negative inputs computes them
            // for all: zeros, which can turn a -0.0 of the others into +0.0.)
            let negative = backend.samples_with_negatives(x)?.contains(&true);
            let negative = if negative {
                let (x_neg, w_neg) = (backend.clamp(x, None, zero)?, backend.clamp(weight, None, zero)?);
                z = backend.add_batch(&z, &backend.conv2d_batch(&x_neg, &w_neg, None, geometry)?)?;
                Some((x_neg, w_neg))
            } else {
                None
            };
            let s = backend.stabilised_divide_batch(r, &z, None)?;
            let back_pos = backend.conv2d_input_adjoint_batch(&s, &w_pos, geometry, hw)?;
            let rin = backend.mul_batch(&x_pos, &back_pos)?;
            match negative {
                Some((x_neg, w_neg)) => {
                    let back_neg = backend.conv2d_input_adjoint_batch(&s, &w_neg, geometry, hw)?;
                    backend.add_batch(&rin, &backend.mul_batch(&x_neg, &back_neg)?)
                }
                None => Ok(rin),
            }
        }
    }
}

/// [`avg_pool_rule`] of a whole batch on the backend.
fn avg_pool_rule_batch<T: Float>(
    backend: &dyn Backend<T>,
    win: &PoolWindows,
    x: &Tensor<T>,
    r: &Tensor<T>,
    rule: LrpRule,
) -> Result<Tensor<T>> {
    let x = match rule {
        LrpRule::Epsilon(_) => x.clone(),
        LrpRule::Alpha1Beta0 => backend.clamp(x, Some(T::zero()), None)?,
    };
    let z = backend.avg_pool_batch(&x, win)?;
    let s = backend.stabilised_divide_batch(r, &z, rule.epsilon_as())?;
    let back = backend.avg_pool_adjoint_batch(&s, win)?;
    backend.mul_batch(&x, &back)
}

/// LRP of an average pool (a linear layer with positive weights): the relevance
/// is shared in proportion to the inputs. ε: `R_in = x ⊙ poolᵀ(R ⊘ (z + ε·sign z))`
/// with `z = pool(x)`; α1β0: the same with `x⁺` in place of `x` and no ε.
fn avg_pool_rule<T: Float>(
    backend: &dyn Backend<T>,
    win: &PoolWindows,
    x: ArrayViewD<T>,
    r: ArrayViewD<T>,
    rule: LrpRule,
) -> Result<ArrayD<T>> {
    let x = chw(x)?;
    let x = match rule {
        LrpRule::Epsilon(_) => x.to_owned(),
        LrpRule::Alpha1Beta0 => x.mapv(|v| v.max(T::zero())),
    };
    let z = backend.avg_pool(x.view(), win)?;
    let s = Zip::from(&chw(r)?).and(&z).map_collect(|&rv, &zv| safe_div(rv, rule.stabilise(zv)));
    let back = backend.avg_pool_adjoint(s.view(), win)?;
    Ok(Zip::from(&x).and(&back).map_collect(|&xv, &b| xv * b).into_dyn())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr1;

    #[test]
    fn lrp_shares_the_sum_in_proportion_to_the_inputs() {
        let (a, b, r) = (arr1(&[3.0, -1.0]).into_dyn(), arr1(&[1.0, 2.0]).into_dyn(), arr1(&[4.0, 1.0]).into_dyn());
        let (ra, rb) = Rules::<f64>::add(&Lrp::epsilon(0.0), a.view(), b.view(), r.view()).unwrap();
        assert_eq!((ra[0], rb[0]), (3.0, 1.0));
        assert_eq!((ra[1], rb[1]), (-1.0, 2.0)); // a negative input takes negative relevance
        let (ra, rb) = Rules::<f64>::add(&Lrp::alpha1_beta0(), a.view(), b.view(), r.view()).unwrap();
        assert_eq!((ra[1], rb[1]), (0.0, 1.0));
    }
}

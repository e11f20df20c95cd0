//! RAP, Relative Attributing Propagation (Nam, Gur, Choi, Wolf & Lee, AAAI
//! 2020), as its authors' released code computes it (repository
//! `wjNam/Relative_Attributing_Propagation`, `modules/layers.py`, the
//! `RAP_relprop` methods): a [`Rules`] implementation for the one graph walk.
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

use super::walk::Rules;
use crate::backend::{Backend, ConvGeometry};
use crate::error::{Result, RspError};
use crate::float::{safe_div, Float};
use crate::layers::{
    as_chw, check_same_shape, AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, Layer, LayerKind, Linear, MaxPool2d,
    RuleContext,
};
use ndarray::{Array1, Array2, Array3, ArrayD, ArrayView1, ArrayView2, ArrayView3, ArrayView4, ArrayViewD, Axis};
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
                relative_rule(backend, x, r, conv.weight().view(), conv.geometry(), Flavour::Conv2d)?
            };
            return Ok(rin.into_dyn());
        }
        if let Some(fc) = layer.downcast_ref::<Linear<T>>() {
            let (o, i) = fc.weight().dim();
            if ctx.receives_seed {
                let x = x.into_dimensionality::<Ix1>().expect("checked vector");
                let r = relevance.into_dimensionality::<Ix1>().expect("checked vector");
                return Ok(first_propagation(backend, x, r, fc.weight().view(), fc.bias())?.into_dyn());
            }
            // A 1×1 convolution on a 1×1 map, with the Linear version of `pos_prop`.
            let x_map = x.into_shape_with_order((i, 1, 1)).expect("checked vector");
            let r_map = relevance.into_shape_with_order((o, 1, 1)).expect("checked vector");
            let w = fc.weight().view().into_shape_with_order((o, i, 1, 1)).expect("standard layout");
            let rin = relative_rule(backend, x_map, r_map, w, &ConvGeometry::square(1, 0), Flavour::Linear)?;
            return Ok(rin.into_shape_with_order(i).expect("i×1×1").into_dyn());
        }
        if let Some(bn) = layer.downcast_ref::<BatchNorm2d<T>>() {
            return Ok(batch_norm_rule(bn, as_chw(x, "RAP rule")?, as_chw(relevance, "RAP rule")?).into_dyn());
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
}

/// Where the released Linear and Conv2d versions of `pos_prop` differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavour {
    /// `S1n = R⁻·[Za1+Za2 ≠ 0] ⊘ Za1`, propagated through `Za1`.
    Linear,
    /// `S1n = R⁻·[Za1+Za2 ≠ 0] ⊘ Za2`, propagated through `Za2`.
    Conv2d,
}

/// The released `backward`/`f` of Linear and Conv2d (bias ignored): `pos_prop`
/// on the positive inputs and on the negative ones, each shifted to conserve
/// `Σ R` on its own, summed. With `x ≥ 0` (after a ReLU) the negative half is
/// zero and skipped (its `shift_rel` finds no nonzero entry to shift).
fn relative_rule<T: Float>(
    backend: &dyn Backend<T>,
    x: ArrayView3<T>,
    r: ArrayView3<T>,
    weight: ArrayView4<T>,
    geometry: &ConvGeometry,
    flavour: Flavour,
) -> Result<Array3<T>> {
    let w_pos = weight.mapv(|v| v.max(T::zero()));
    let w_neg = weight.mapv(|v| v.min(T::zero()));
    let x_pos = x.mapv(|v| v.max(T::zero()));
    let mut c = relative_half(backend, x_pos.view(), r, (w_pos.view(), w_neg.view()), geometry, T::one(), flavour)?;
    if x.iter().any(|&v| v < T::zero()) {
        let x_neg = x.mapv(|v| v.min(T::zero()));
        let sections = (w_pos.view(), w_neg.view());
        c += &relative_half(backend, x_neg.view(), r, sections, geometry, -T::one(), flavour)?;
    }
    Ok(c)
}

/// One `pos_prop` call followed by `shift_rel`, for inputs `x1` of one sign
/// (`sign` = +1 for `x⁺`, −1 for `x⁻`). The two denominators, both ≥ 0, are
/// the magnitudes of the contributions through `W⁺` and `W⁻`, kept where
/// `R ≠ 0`: `Z1 = sign·conv(x1, W⁺)`, `Z2 = −sign·conv(x1, W⁻)`. With
/// `k = [Z1+Z2 ≠ 0]`:
/// `S1 = R⁺k ⊘ Z1`, `S1n = R⁻k ⊘ Z1` (Linear) or `⊘ Z2` (Conv2d),
/// `S2 = R⁺(Z2 ⊘ (Z1+Z2)) ⊘ Z2`, `S2n = R⁻(Z2 ⊘ (Z1+Z2)) ⊘ Z2`,
/// `C = x1 ⊙ ∇Z1(S1 [+ S1n]) + x1 ⊙ ∇Z2(S2 + S2n [+ S1n])`,
/// then `shift_rel`: `(ΣC − ΣR) / #{C ≠ 0}` subtracted from every nonzero entry.
fn relative_half<T: Float>(
    backend: &dyn Backend<T>,
    x1: ArrayView3<T>,
    r: ArrayView3<T>,
    (w_pos, w_neg): (ArrayView4<T>, ArrayView4<T>),
    geometry: &ConvGeometry,
    sign: T,
    flavour: Flavour,
) -> Result<Array3<T>> {
    let mut z1 = backend.conv2d(x1, w_pos, geometry)?;
    let mut z2 = backend.conv2d(x1, w_neg, geometry)?;
    Zip::from(&mut z1).and(&mut z2).and(&r).for_each(|z1, z2, &r| {
        let kept = r != T::zero();
        *z1 = if kept { sign * *z1 } else { T::zero() };
        *z2 = if kept { -sign * *z2 } else { T::zero() };
    });
    // z1 becomes the signal through Z1, z2 the one through Z2 (each already
    // times ∂Z/∂conv = ±1, so that the adjoints below are plain transposed convolutions).
    Zip::from(&mut z1).and(&mut z2).and(&r).for_each(|z1, z2, &r| {
        let (a, b) = (*z1, *z2);
        let total = a + b;
        let (r_pos, r_neg) = (r.max(T::zero()), r.min(T::zero()));
        let kept = safe_div(total, total);
        let share2 = safe_div(b, total);
        let s1 = safe_div(r_pos * kept, a);
        let s2 = safe_div(r_pos * share2, b);
        let s2n = safe_div(r_neg * share2, b);
        let (through1, through2) = match flavour {
            Flavour::Linear => (s1 + safe_div(r_neg * kept, a), s2 + s2n),
            Flavour::Conv2d => (s1, s2 + s2n + safe_div(r_neg * kept, b)),
        };
        *z1 = sign * through1;
        *z2 = -sign * through2;
    });
    let hw = (x1.dim().1, x1.dim().2);
    let g1 = backend.conv2d_input_adjoint(z1.view(), w_pos, geometry, hw)?;
    let mut c = backend.conv2d_input_adjoint(z2.view(), w_neg, geometry, hw)?;
    Zip::from(&mut c).and(&x1).and(&g1).for_each(|c, &x, &g1| *c = x * g1 + x * *c);
    shift_rel(&mut c, r.sum());
    Ok(c)
}

/// The released `shift_rel`: `(ΣC − target)` spread evenly over the nonzero
/// entries of `C` (nothing happens when there are none).
fn shift_rel<T: Float, D: ndarray::Dimension>(c: &mut ndarray::Array<T, D>, target: T) {
    let excess = c.sum() - target;
    let nonzero = c.iter().filter(|&&v| v != T::zero()).count();
    let shift = safe_div(excess, T::of(nonzero as f64));
    c.mapv_inplace(|v| if v != T::zero() { v - shift } else { v });
}

/// `Wᵀ s` for a vector `s`.
fn transposed_times<T: Float>(backend: &dyn Backend<T>, w: ArrayView2<T>, s: &Array1<T>) -> Result<Array1<T>> {
    let column = s.view().insert_axis(Axis(1));
    Ok(backend.matmul(w.t(), column)?.remove_axis(Axis(1)))
}

/// `W x` for a vector `x`.
fn times<T: Float>(backend: &dyn Backend<T>, w: ArrayView2<T>, x: &Array1<T>) -> Result<Array1<T>> {
    Ok(backend.matmul(w, x.view().insert_axis(Axis(1)))?.remove_axis(Axis(1)))
}

/// The released `first_prop` and `redistribute` of the Linear layer the walk
/// starts at, with the relevance `pd` at its output (the one-hot). The four
/// sections `Z1 = W⁺x⁺`, `Z2 = W⁻x⁺`, `Z3 = W⁺x⁻`, `Z4 = W⁻x⁻` (no bias) each
/// pass `pd` where they are nonzero; the bias goes in proportion
/// `Pos : Neg = Σ(Z1 + Z4)pd : Σ(Z2 + Z3)pd` to the sections `Z1` and `Z2`.
/// `redistribute` then gives every input `|C|·ΣC / Σ|C|`.
fn first_propagation<T: Float>(
    backend: &dyn Backend<T>,
    x: ArrayView1<T>,
    pd: ArrayView1<T>,
    weight: ArrayView2<T>,
    bias: Option<&Array1<T>>,
) -> Result<Array1<T>> {
    let w_pos = weight.mapv(|v| v.max(T::zero()));
    let w_neg = weight.mapv(|v| v.min(T::zero()));
    let x_pos = x.mapv(|v| v.max(T::zero()));
    let x_neg = x.mapv(|v| v.min(T::zero()));
    let z1 = times(backend, w_pos.view(), &x_pos)?;
    let z2 = times(backend, w_neg.view(), &x_pos)?;
    let z3 = times(backend, w_pos.view(), &x_neg)?;
    let z4 = times(backend, w_neg.view(), &x_neg)?;
    let (rpp, rpn, rnp, rnn) = (&z1 * &pd, &z2 * &pd, &z3 * &pd, &z4 * &pd);
    let pos = (&rpp + &rnn).sum();
    let neg = (&rpn + &rnp).sum();
    let divide = |a: &Array1<T>, b: &Array1<T>| Zip::from(a).and(b).map_collect(|&a, &b| safe_div(a, b));
    let back = |w: &Array2<T>, x: &Array1<T>, s: Array1<T>| -> Result<Array1<T>> {
        Ok(x * &transposed_times(backend, w.view(), &s)?)
    };
    let c1 = back(&w_pos, &x_pos, divide(&rpp, &z1))?;
    let c2 = back(&w_neg, &x_pos, divide(&rpn, &z2))?;
    let c3 = back(&w_pos, &x_neg, divide(&rnp, &z3))?;
    let c4 = back(&w_neg, &x_neg, divide(&rnn, &z4))?;
    let mut c = c1 + &c4;
    if let Some(b) = bias {
        let b_pd = b * &pd;
        let b_pos = &b_pd * safe_div(pos, pos + neg);
        let b_neg = &b_pd * safe_div(neg, pos + neg);
        c += &back(&w_pos, &x_pos, divide(&b_pos, &z1))?;
        c += &c2;
        c += &c3;
        c += &back(&w_neg, &x_pos, divide(&b_neg, &z2))?;
    } else {
        c += &c2;
        c += &c3;
    }
    Ok(redistribute(c))
}

/// The released `redistribute`: `C⁺ ⊘ Σ|C| · ΣC − C⁻ ⊘ Σ|C| · ΣC`.
fn redistribute<T: Float>(c: Array1<T>) -> Array1<T> {
    let magnitude = c.iter().fold(T::zero(), |acc, &v| acc + (v.max(T::zero()) - v.min(T::zero())));
    let total = c.iter().fold(T::zero(), |acc, &v| acc + (v.max(T::zero()) + v.min(T::zero())));
    c.mapv(|v| {
        let (p, n) = (v.max(T::zero()), v.min(T::zero()));
        safe_div(p, magnitude) * total + -safe_div(n, magnitude) * total
    })
}

/// The released `BatchNorm2d.RAP_relprop`: `w_c = γ_c / sqrt(σ²_c² + ε)` (the
/// running variance squared, as released), the bias share
/// `b = β_c·[R ≠ 0] ⊘ n_c` (`n_c` the nonzero relevances of channel `c`)
/// removed and added back: `R_in = x ⊙ ((R − b) ⊘ (x·w))·w + x ⊙ (b ⊘ (x·w))·w`,
/// i.e. `R` where `x·w ≠ 0`, else 0.
fn batch_norm_rule<T: Float>(bn: &BatchNorm2d<T>, x: ArrayView3<T>, r: ArrayView3<T>) -> Array3<T> {
    let (gamma, beta, _, var, eps) = bn.parameters();
    let mut out = Array3::zeros(r.raw_dim());
    for (c, mut plane) in out.axis_iter_mut(Axis(0)).enumerate() {
        let w = gamma[c] / (var[c] * var[c] + eps).sqrt();
        let r_c = r.index_axis(Axis(0), c);
        let nonzero = T::of(r_c.iter().filter(|&&v| v != T::zero()).count() as f64);
        let share = safe_div(beta[c], nonzero);
        Zip::from(&mut plane).and(x.index_axis(Axis(0), c)).and(r_c).for_each(|o, &x, &r| {
            let b = if r != T::zero() { share } else { T::zero() };
            let xw = x * w;
            *o = x * (safe_div(r - b, xw) * w) + x * (safe_div(b, xw) * w);
        });
    }
    out
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
        let rin = Rap.layer(&CpuBackend, &fc, x.view(), r.view(), RuleContext::default()).unwrap();
        assert_eq!(rin, arr1(&[2.0, 1.0]).into_dyn());
        // Negative relevance: Linear divides S1n by Z1 = 1: S1n = −3, S2n = −1: C = (−3, −2), shifted by −1.
        let r = arr1(&[-3.0]).into_dyn();
        let rin = Rap.layer(&CpuBackend, &fc, x.view(), r.view(), RuleContext::default()).unwrap();
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
            Rap.layer(&CpuBackend, &conv, x.view(), r.view(), RuleContext::default())
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
        let rin = Rap.layer(&CpuBackend, &fc, x.view(), r.view(), RuleContext::default()).unwrap();
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
        let first = Rap.layer(&CpuBackend, &fc, x.view(), r.view(), seeded).unwrap();
        let hidden = Rap.layer(&CpuBackend, &fc, x.view(), r.view(), RuleContext::default()).unwrap();
        // First: (4, −2) redistributed to (4/3, 2/3), sum = the logit 2.
        assert!((first[0] - 4.0 / 3.0).abs() < 1e-15 && (first[1] - 2.0 / 3.0).abs() < 1e-15);
        // Hidden (bias ignored): Z1 = 2, Z2 = 1, T = 3: S1 = 1/2, S2 = (1/3)/1, C = (1, 1/3);
        // the excess 1/3 is taken back evenly: (5/6, 1/6).
        assert!((hidden[0] - 5.0 / 6.0).abs() < 1e-15 && (hidden[1] - 1.0 / 6.0).abs() < 1e-15);
    }
}

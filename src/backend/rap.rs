//! RAP's kernels for one sample (Relative Attributing Propagation, the
//! authors' earlier method; the rules are described in `docs/method-rap.md`
//! and mapped to layers in [`crate::attribution::Rap`]). The host backends'
//! batch operations [`Backend::rap_relative_rule_batch`] and
//! [`Backend::rap_first_propagation_batch`] run them per sample, as RAP's
//! host rules do, so both give the same bits.

use super::{Backend, ConvGeometry};
use crate::error::Result;
use crate::float::{safe_div, Float};
use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayView3, ArrayView4, Axis, Zip};

/// Where the released Linear and Conv2d versions of RAP's `pos_prop` differ
/// ([`Backend::rap_relative_rule_batch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RapFlavour {
    /// `S1n = R⁻·[Za1+Za2 ≠ 0] ⊘ Za1`, propagated through `Za1`.
    Linear,
    /// `S1n = R⁻·[Za1+Za2 ≠ 0] ⊘ Za2`, propagated through `Za2`.
    Conv2d,
}

/// The released `backward`/`f` of Linear and Conv2d (bias ignored): `pos_prop`
/// on the positive inputs and on the negative ones, each shifted to conserve
/// `Σ R` on its own, summed. With `x ≥ 0` (after a ReLU) the negative half is
/// zero and skipped (its `shift_rel` finds no nonzero entry to shift).
pub(crate) fn relative_rule<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    x: ArrayView3<T>,
    r: ArrayView3<T>,
    weight: ArrayView4<T>,
    geometry: &ConvGeometry,
    flavour: RapFlavour,
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
fn relative_half<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    x1: ArrayView3<T>,
    r: ArrayView3<T>,
    (w_pos, w_neg): (ArrayView4<T>, ArrayView4<T>),
    geometry: &ConvGeometry,
    sign: T,
    flavour: RapFlavour,
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
            RapFlavour::Linear => (s1 + safe_div(r_neg * kept, a), s2 + s2n),
            RapFlavour::Conv2d => (s1, s2 + s2n + safe_div(r_neg * kept, b)),
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
fn transposed_times<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    w: ArrayView2<T>,
    s: &Array1<T>,
) -> Result<Array1<T>> {
    let column = s.view().insert_axis(Axis(1));
    Ok(backend.matmul(w.t(), column)?.remove_axis(Axis(1)))
}

/// `W x` for a vector `x`.
fn times<T: Float, B: Backend<T> + ?Sized>(backend: &B, w: ArrayView2<T>, x: &Array1<T>) -> Result<Array1<T>> {
    Ok(backend.matmul(w, x.view().insert_axis(Axis(1)))?.remove_axis(Axis(1)))
}

/// The released `first_prop` and `redistribute` of the Linear layer the walk
/// starts at, with the relevance `pd` at its output (the one-hot). The four
/// sections `Z1 = W⁺x⁺`, `Z2 = W⁻x⁺`, `Z3 = W⁺x⁻`, `Z4 = W⁻x⁻` (no bias) each
/// pass `pd` where they are nonzero; the bias goes in proportion
/// `Pos : Neg = Σ(Z1 + Z4)pd : Σ(Z2 + Z3)pd` to the sections `Z1` and `Z2`.
/// `redistribute` then gives every input `|C|·ΣC / Σ|C|`.
pub(crate) fn first_propagation<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    x: ArrayView1<T>,
    pd: ArrayView1<T>,
    weight: ArrayView2<T>,
    bias: Option<ArrayView1<T>>,
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
        let b_pd = &b * &pd;
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

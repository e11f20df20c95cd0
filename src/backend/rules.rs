//! The rules' kernels for one sample, which the layers' rules call and the
//! host backends' batch operations run per sample (so a layer's rule and its
//! batch form give the same bits). Each formula is the method page's.
//!
//! **The sectional rule**, shared by [`Conv2d`](crate::layers::Conv2d) (every
//! layer but the input layer) and [`Linear`](crate::layers::Linear) (a 1×1
//! convolution on a 1×1 map). With `x⁺ = max(x, 0)` and the comparative gradient kernels `G^±` (weight
//! gradients of the convolution with `R^±` as upstream gradient, so the
//! layer's own weights never enter), the backend computes `C⁺ − C⁻`. Then:
//! * kernel height 1: `R_in = C⁺ − C⁻`;
//! * otherwise double and shift uniformly over the whole sample:
//!   `C = 2 (C⁺ − C⁻)`, `R_in = C − [C ≠ 0] · (Σ R ⊘ #{C ≠ 0})`,
//!   which conserves `Σ R` and makes below-average contributors hostile.

use crate::backend::ConvGeometry;
use crate::error::Result;
use crate::float::{safe_div, Float};
use ndarray::parallel::prelude::*;
use ndarray::{Array3, ArrayD, ArrayView1, ArrayView3, ArrayView4, ArrayViewD, Axis, Zip};

/// Relevance at the input of a convolution-like layer by the sectional rule.
///
/// `x` is the layer's input sample (`C×H×W`), `r` the relevance at its output
/// (`O×Ho×Wo`); `kernel_hw` and `geom` describe the convolution.
///
pub(crate) fn sectional_rule<T: Float, B: super::Backend<T> + ?Sized>(
    backend: &B,
    x: ArrayView3<T>,
    r: ArrayView3<T>,
    geom: &ConvGeometry,
    kernel_hw: (usize, usize),
) -> Result<Array3<T>> {
    let mut x_pos = x.to_owned();
    x_pos.par_mapv_inplace(|v| v.max(T::zero()));
    let mut c = backend.sectional_contributions(x_pos.view(), r, geom, kernel_hw)?;
    if kernel_hw.0 == 1 {
        return Ok(c);
    }
    let total: T = r.iter().copied().sum();
    // An integer count: the same whatever the order, so it may run in parallel.
    let nonzero = c.par_iter().filter(|&&v| v != T::zero()).count();
    let shift = safe_div(total, T::of(nonzero as f64));
    let two = T::of(2.0);
    Zip::from(&mut c).par_for_each(|v| {
        if *v != T::zero() {
            *v = two * *v - shift;
        }
    });
    Ok(c)
}

/// The z^B rule for one sample `x` (`C×H×W`) of a convolution with weights
/// `w`, relevance `r` at its output, bounds `ℓ = min x`, `h = max x`:
/// `Z = conv(x,W) − conv(ℓ,W⁺) − conv(h,W⁻)`, `S = R ⊘ Z`,
/// `R_in = x ⊙ convᵀ(S,W) − ℓ ⊙ convᵀ(S,W⁺) − h ⊙ convᵀ(S,W⁻)`.
pub(crate) fn zb_rule<T: Float, B: super::Backend<T> + ?Sized>(
    backend: &B,
    x: ArrayView3<T>,
    r: ArrayView3<T>,
    w: ArrayView4<T>,
    g: &ConvGeometry,
) -> Result<Array3<T>> {
    let low = x.iter().copied().fold(T::infinity(), T::min);
    let high = x.iter().copied().fold(T::neg_infinity(), T::max);
    let w_pos = w.mapv(|v| v.max(T::zero()));
    let w_neg = w.mapv(|v| v.min(T::zero()));
    let lows = Array3::from_elem(x.raw_dim(), low);
    let highs = Array3::from_elem(x.raw_dim(), high);
    let z = backend.conv2d(x, w, g)?
        - backend.conv2d(lows.view(), w_pos.view(), g)?
        - backend.conv2d(highs.view(), w_neg.view(), g)?;
    let s = Zip::from(&r).and(&z).map_collect(|&rv, &zv| safe_div(rv, zv));
    let hw = (x.dim().1, x.dim().2);
    let through_w = backend.conv2d_input_adjoint(s.view(), w, g, hw)?;
    let through_pos = backend.conv2d_input_adjoint(s.view(), w_pos.view(), g, hw)?;
    let through_neg = backend.conv2d_input_adjoint(s.view(), w_neg.view(), g, hw)?;
    let mut out = Zip::from(&x).and(&through_w).map_collect(|&xv, &a| xv * a);
    Zip::from(&mut out).and(&through_pos).and(&through_neg).for_each(|o, &p, &n| *o = *o - low * p - high * n);
    Ok(out)
}

/// The batch-norm rule for one sample: per channel `c` with the rule's weight
/// `w[c]` (as released, `γ / sqrt(σ⁴ + ε)`: the variance squared) and shift
/// `β[c]`, the bias share `b = β / #{R_c ≠ 0}` is removed where `R ≠ 0`:
/// `R_in = x ⊙ ((R − b) ⊘ (x·w)) · w + x ⊙ (b ⊘ (x·w)) · w`.
pub(crate) fn batch_norm_rule<T: Float>(
    x: ArrayView3<T>,
    r: ArrayView3<T>,
    w: ArrayView1<T>,
    beta: ArrayView1<T>,
) -> Array3<T> {
    let mut out = r.to_owned();
    for c in 0..w.len() {
        let w = w[c];
        let r_c = r.index_axis(Axis(0), c);
        let n_c = T::of(r_c.iter().filter(|&&v| v != T::zero()).count() as f64);
        let share = safe_div(beta[c], n_c);
        Zip::from(out.index_axis_mut(Axis(0), c)).and(x.index_axis(Axis(0), c)).and(r_c).for_each(|o, &xv, &rv| {
            let b = if rv != T::zero() { share } else { T::zero() };
            let xw = xv * w;
            *o = xv * (safe_div(rv - b, xw) * w) + xv * (safe_div(b, xw) * w);
        });
    }
    out
}

/// The residual sum's rule: the relevance `r` of `a + b` split in proportion
/// to `ã = max(a,0) + 1e-9` and `b̃ = max(b,0) + 1e-9`.
pub(crate) fn add_rule<T: Float>(a: ArrayViewD<T>, b: ArrayViewD<T>, r: ArrayViewD<T>) -> (ArrayD<T>, ArrayD<T>) {
    let eps = T::eps9();
    let mut ra = ArrayD::zeros(r.raw_dim());
    let mut rb = ArrayD::zeros(r.raw_dim());
    Zip::from(&mut ra).and(&mut rb).and(&a).and(&b).and(&r).for_each(|ra, rb, &av, &bv, &rv| {
        let at = av.max(T::zero()) + eps;
        let bt = bv.max(T::zero()) + eps;
        let s = safe_div(rv, at + bt);
        *ra = at * s;
        *rb = bt * s;
    });
    (ra, rb)
}

/// The ReLU's gradient: `g` where `x > 0`, else 0.
pub(crate) fn relu_gradient<T: Float>(x: ArrayViewD<T>, g: ArrayViewD<T>) -> ArrayD<T> {
    Zip::from(&x).and(&g).map_collect(|&xv, &gv| if xv > T::zero() { gv } else { T::zero() })
}

/// Each channel `c` of `g` (`C×…`) times `scale[c]` (the batch norm's gradient).
pub(crate) fn channel_scale<T: Float>(g: ArrayViewD<T>, scale: ArrayView1<T>) -> ArrayD<T> {
    let mut g = g.to_owned();
    for (mut plane, &s) in g.axis_iter_mut(Axis(0)).zip(scale) {
        plane *= s;
    }
    g
}

/// LRP's stabilised denominator `z + ε·sign(z)`, `sign(0) = +1`; `z` itself
/// without `ε`.
pub(crate) fn stabilise<T: Float>(z: T, epsilon: Option<T>) -> T {
    match epsilon {
        Some(e) if z >= T::zero() => z + e,
        Some(e) => z - e,
        None => z,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;

    #[test]
    fn the_sectional_rule_conserves_relevance() {
        let x = Array3::from_shape_fn((2, 4, 4), |(c, i, j)| (c + i + j) as f64 * 0.1);
        let r = Array3::from_shape_fn((3, 4, 4), |(o, i, j)| (o as f64 - 1.0) * 0.2 + (i * j) as f64 * 0.01);
        let rin = sectional_rule(&CpuBackend, x.view(), r.view(), &ConvGeometry::square(1, 1), (3, 3)).unwrap();
        assert!((rin.sum() - r.sum()).abs() < 1e-12);
    }
}

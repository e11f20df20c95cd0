//! Start relevance at the start layer (method page, section 2): the
//! single-class start and the comparative start with hostile classes.

use crate::error::{Result, RspError};
use crate::float::{safe_div, Float};
use ndarray::{Array3, ArrayView3, Axis, Zip};

/// `A ⊙ α` with `α_c` the spatial mean of the gradient `g` (Grad-CAM's
/// weighting, per channel, no channel sum, no ReLU, not normalised).
pub fn weighted_activation<T: Float>(a: ArrayView3<T>, g: ArrayView3<T>) -> Array3<T> {
    let (_, h, w) = g.dim();
    let area = T::of((h * w) as f64);
    let mut out = a.to_owned();
    for (mut plane, g_c) in out.axis_iter_mut(Axis(0)).zip(g.axis_iter(Axis(0))) {
        let alpha = g_c.iter().copied().sum::<T>() / area;
        plane *= alpha;
    }
    out
}

fn max_of<T: Float>(x: &Array3<T>) -> T {
    x.iter().copied().fold(T::neg_infinity(), T::max)
}

/// The single-class start: `A ⊙ α` divided by `max + 1e-9`; if the maximum
/// is ≤ 0, divided by `max |·|` instead (our choice: the released code would
/// flip signs); an all-zero map stays zero.
pub fn single_class_start<T: Float>(a: ArrayView3<T>, g: ArrayView3<T>) -> Array3<T> {
    let mut r = weighted_activation(a, g);
    let max = max_of(&r);
    let denom = if max > T::zero() { max + T::eps9() } else { r.iter().fold(T::zero(), |m, v| m.max(v.abs())) };
    r.mapv_inplace(|v| safe_div(v, denom));
    r
}

/// The comparative start with hostile classes. `target_grad` and
/// `hostile_grads` are the gradients of the target's and of each hostile
/// class's logit at the start layer's output `a`.
pub fn comparative_start<T: Float>(
    a: ArrayView3<T>,
    target_grad: ArrayView3<T>,
    hostile_grads: &[ArrayView3<T>],
) -> Result<Array3<T>> {
    if hostile_grads.is_empty() {
        return Ok(single_class_start(a, target_grad));
    }
    let eps = T::eps9();
    let cam = |g: ArrayView3<T>| {
        let mut m = weighted_activation(a, g);
        let denom = max_of(&m) + eps;
        m.mapv_inplace(|v| safe_div(v, denom));
        m
    };
    // D = |H|·CAM_t − Σ_h CAM_h
    let mut d = cam(target_grad) * T::of(hostile_grads.len() as f64);
    for &g in hostile_grads {
        d -= &cam(g);
    }
    // P: the positive part, normalised to sum ~1; Q: the negative part scaled to the same mass.
    let pos_sum: T = d.iter().map(|&v| v.max(T::zero())).sum();
    let p = d.mapv(|v| v.max(T::zero()) / (pos_sum + eps));
    let min_d = d.iter().copied().fold(T::infinity(), T::min);
    let mut q = d.mapv(|v| if min_d < T::zero() { v.min(T::zero()) / min_d } else { T::zero() });
    let q_sum: T = q.iter().copied().sum();
    let p_sum: T = p.iter().copied().sum();
    q.mapv_inplace(|v| v / (q_sum + eps) * p_sum);
    let d_prime = p - q;
    // Purge to one spatial map, positive part summing to 2, negative to −1.
    let m = d_prime.sum_axis(Axis(0));
    let m_pos_sum: T = m.iter().filter(|&&v| v > T::zero()).copied().sum();
    let m_neg_sum: T = m.iter().filter(|&&v| v <= T::zero()).copied().sum();
    let two = T::of(2.0);
    let channels = a.dim().0;
    if channels == 0 {
        return Err(RspError::InvalidArgument("the start layer has no channels".into()));
    }
    let c = T::of(channels as f64);
    let r = m.mapv(|v| {
        let (mp, mn) = if v > T::zero() { (v, T::zero()) } else { (T::zero(), v) };
        (two * safe_div(mp, m_pos_sum + eps) - safe_div(mn, m_neg_sum + eps)) / c
    });
    let mut out = Array3::zeros(a.raw_dim());
    Zip::from(out.lanes_mut(Axis(0))).and(&r).for_each(|mut lane, &v| lane.fill(v));
    Ok(out)
}

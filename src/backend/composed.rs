//! The fused rules composed from the primitives: the defaults of
//! [`Backend::sectional_rule_batch`], [`Backend::max_pool_rule_batch`],
//! [`Backend::add_rule_batch`] (RSP) and [`Backend::rap_relative_rule_batch`],
//! [`Backend::rap_first_propagation_batch`] (RAP). A new backend that implements the primitives
//! (the convolutions, pooling and their adjoints, the element-wise steps, the
//! per-sample sums, counts and shifts) runs RSP without writing a fused
//! kernel; it overrides a fused operation only where one kernel is faster
//! than the composition (the CPU backend runs its per-sample kernels, the
//! CUDA backend its own). Public, so that a backend which overrides an
//! operation can still fall back to the composition, and tests can compare
//! both.
//!
//! The composition computes the method page's formulas step by step, so it
//! agrees with the fused kernels up to rounding (sums in another order), not
//! bit for bit.
//!
//! ```
//! use rsp::backend::{composed, Backend, ConvGeometry, CpuBackend};
//! use rsp::ndarray::Array4;
//! let x = Array4::from_shape_fn((2, 3, 6, 6), |(n, c, i, j)| ((n + 2 * c + i * j) % 5) as f64 * 0.3 - 0.4);
//! let r = Array4::from_shape_fn((2, 4, 6, 6), |(n, o, i, j)| ((n + o * 3 + i + 2 * j) % 7) as f64 * 0.1 - 0.3);
//! let cpu = CpuBackend;
//! let (xt, rt) = (Backend::<f64>::upload(&cpu, x.view().into_dyn())?, cpu.upload(r.view().into_dyn())?);
//! let geom = ConvGeometry::square(1, 1);
//! let fused = cpu.download(&cpu.sectional_rule_batch(&xt, &rt, &geom, (3, 3))?)?;
//! let steps = cpu.download(&composed::sectional_rule_batch(&cpu, &xt, &rt, &geom, (3, 3))?)?;
//! assert!(fused.iter().zip(&steps).all(|(a, b)| (a - b).abs() < 1e-12));
//! // Both conserve each sample's relevance.
//! for n in 0..2 {
//!     let (total, kept) = (r.index_axis(rsp::ndarray::Axis(0), n).sum(), steps.index_axis(rsp::ndarray::Axis(0), n).sum());
//!     assert!((total - kept).abs() < 1e-12);
//! }
//! # Ok::<(), rsp::RspError>(())
//! ```

use super::{Backend, ConvGeometry, PoolWindows, RapFlavour, Tensor};
use crate::error::{Result, RspError};
use crate::float::Float;

/// The sectional rule of every sample (`x` of `N×C×H×W`, `r` of
/// `N×O×Ho×Wo`): with `x⁺ = max(x, 0)`, for each section `R^± = max(±R, 0)`
/// the comparative kernels `G^± = ∇_W ⟨conv(x⁺, W), R^±⟩` (one per sample),
/// `A^± = conv(x⁺, G^±)`, `C^± = x⁺ ⊙ convᵀ(R^± ⊘ A^±, G^±)` (the quotient
/// is 0 where `R^± = 0`, the mask); then `C = C⁺ − C⁻`, and for kernels
/// taller than 1 the doubling and shift `2C − Σ R ⊘ #{C ≠ 0}` at the nonzero
/// entries of each sample.
pub fn sectional_rule_batch<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    x: &Tensor<T>,
    r: &Tensor<T>,
    geom: &ConvGeometry,
    kernel_hw: (usize, usize),
) -> Result<Tensor<T>> {
    let (xs, rs) = (x.shape(), r.shape());
    if xs.len() != 4 || rs.len() != 4 || xs[0] != rs[0] {
        return Err(RspError::shape("the sectional rule's input and relevance", "N×C×H×W and N×O×Ho×Wo", rs));
    }
    let input_hw = (xs[2], xs[3]);
    let x_pos = backend.relu_batch(x)?;
    let r_pos = backend.clamp(r, Some(T::zero()), None)?;
    let r_neg = backend.clamp(&backend.scale(r, -T::one())?, Some(T::zero()), None)?;
    let section = |part: &Tensor<T>| -> Result<Tensor<T>> {
        let g = backend.conv2d_weight_grad_batch(&x_pos, part, geom, kernel_hw)?;
        let a = backend.conv2d_sample_weights_batch(&x_pos, &g, geom)?;
        // Safe division gives 0 where R^± = 0: the mask M^± = [R^± > 0].
        let s = backend.stabilised_divide_batch(part, &a, None)?;
        let back = backend.conv2d_input_adjoint_sample_weights_batch(&s, &g, geom, input_hw)?;
        backend.mul_batch(&x_pos, &back)
    };
    let c = backend.sub_batch(&section(&r_pos)?, &section(&r_neg)?)?;
    if kernel_hw.0 == 1 {
        return Ok(c);
    }
    let totals = backend.sample_sums_batch(r)?;
    let counts = backend.nonzero_counts_batch(&c)?;
    let shifts = backend.stabilised_divide_batch(&totals, &counts, None)?;
    backend.shift_nonzero_batch(&c, T::of(2.0), &shifts)
}

/// The max-pooling RSP rule of every sample: with `x̃ = x + 1e-9` and its
/// window maxima `z`, the positive and negative parts of `R ⊘ z` are each
/// routed to their window's first maximum of `x̃` and multiplied by `x̃`, then
/// added.
pub fn max_pool_rule_batch<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    x: &Tensor<T>,
    r: &Tensor<T>,
    windows: &PoolWindows,
) -> Result<Tensor<T>> {
    let x_t = backend.add_batch(x, &backend.full(x.shape(), T::eps9())?)?;
    let z = backend.max_pool_batch(&x_t, windows)?;
    let routed = |part: Tensor<T>| -> Result<Tensor<T>> {
        let s = backend.stabilised_divide_batch(&part, &z, None)?;
        backend.mul_batch(&x_t, &backend.max_pool_adjoint_batch(&x_t, &s, windows)?)
    };
    let pos = routed(backend.clamp(r, Some(T::zero()), None)?)?;
    let neg = routed(backend.clamp(r, None, Some(T::zero()))?)?;
    backend.add_batch(&pos, &neg)
}

/// The residual sum's RSP rule of every sample: `r` split in proportion to
/// `ã = max(a, 0) + 1e-9` and `b̃ = max(b, 0) + 1e-9`.
pub fn add_rule_batch<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    a: &Tensor<T>,
    b: &Tensor<T>,
    r: &Tensor<T>,
) -> Result<(Tensor<T>, Tensor<T>)> {
    if a.shape() != r.shape() || b.shape() != r.shape() {
        return Err(RspError::shape("summands of a residual sum", format!("{:?}", r.shape()), a.shape()));
    }
    let eps = backend.full(r.shape(), T::eps9())?;
    let a_t = backend.add_batch(&backend.relu_batch(a)?, &eps)?;
    let b_t = backend.add_batch(&backend.relu_batch(b)?, &eps)?;
    let s = backend.stabilised_divide_batch(r, &backend.add_batch(&a_t, &b_t)?, None)?;
    Ok((backend.mul_batch(&a_t, &s)?, backend.mul_batch(&b_t, &s)?))
}

/// RAP's rule of a hidden convolution (or of a linear layer as a 1×1
/// convolution on a 1×1 map) of every sample, step by step as
/// `docs/method-rap.md` gives it: `pos_prop` on `x⁺` and, when the batch has
/// negative inputs, on `x⁻`, each followed by `shift_rel`, summed. (A sample
/// without negative inputs gets a zero second half, which leaves it as it is.)
pub fn rap_relative_rule_batch<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    x: &Tensor<T>,
    r: &Tensor<T>,
    w: &Tensor<T>,
    geom: &ConvGeometry,
    flavour: RapFlavour,
) -> Result<Tensor<T>> {
    let (xs, rs) = (x.shape(), r.shape());
    if xs.len() != 4 || rs.len() != 4 || xs[0] != rs[0] {
        return Err(RspError::shape("RAP's input and relevance", "N×C×H×W and N×O×Ho×Wo", rs));
    }
    let weights = (backend.clamp(w, Some(T::zero()), None)?, backend.clamp(w, None, Some(T::zero()))?);
    let half = |x1: &Tensor<T>, sign: T| rap_relative_half(backend, x1, r, &weights, geom, sign, flavour);
    let c = half(&backend.relu_batch(x)?, T::one())?;
    if !backend.samples_with_negatives(x)?.contains(&true) {
        return Ok(c);
    }
    backend.add_batch(&c, &half(&backend.clamp(x, None, Some(T::zero()))?, -T::one())?)
}

/// One `pos_prop` and `shift_rel` for the inputs `x1` of one sign `sign`,
/// with `weights = (W⁺, W⁻)`.
fn rap_relative_half<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    x1: &Tensor<T>,
    r: &Tensor<T>,
    (w_pos, w_neg): &(Tensor<T>, Tensor<T>),
    geom: &ConvGeometry,
    sign: T,
    flavour: RapFlavour,
) -> Result<Tensor<T>> {
    let b = backend;
    let div = |a: &Tensor<T>, z: &Tensor<T>| b.stabilised_divide_batch(a, z, None);
    // The magnitudes through W⁺ and W⁻, kept where R ≠ 0 (R ⊘ R is that mask).
    let kept_r = div(r, r)?;
    let z1 = b.scale(&b.mul_batch(&b.conv2d_batch(x1, w_pos, None, geom)?, &kept_r)?, sign)?;
    let z2 = b.scale(&b.mul_batch(&b.conv2d_batch(x1, w_neg, None, geom)?, &kept_r)?, -sign)?;
    let total = b.add_batch(&z1, &z2)?;
    let (kept, share2) = (div(&total, &total)?, div(&z2, &total)?);
    let (r_pos, r_neg) = (b.clamp(r, Some(T::zero()), None)?, b.clamp(r, None, Some(T::zero()))?);
    let s1 = div(&b.mul_batch(&r_pos, &kept)?, &z1)?;
    let s2 = div(&b.mul_batch(&r_pos, &share2)?, &z2)?;
    let s2n = div(&b.mul_batch(&r_neg, &share2)?, &z2)?;
    let r_neg_kept = b.mul_batch(&r_neg, &kept)?;
    let (through1, through2) = match flavour {
        RapFlavour::Linear => (b.add_batch(&s1, &div(&r_neg_kept, &z1)?)?, b.add_batch(&s2, &s2n)?),
        RapFlavour::Conv2d => (s1, b.add_batch(&b.add_batch(&s2, &s2n)?, &div(&r_neg_kept, &z2)?)?),
    };
    let hw = (x1.shape()[2], x1.shape()[3]);
    let g1 = b.conv2d_input_adjoint_batch(&b.scale(&through1, sign)?, w_pos, geom, hw)?;
    let g2 = b.conv2d_input_adjoint_batch(&b.scale(&through2, -sign)?, w_neg, geom, hw)?;
    let c = b.add_batch(&b.mul_batch(x1, &g1)?, &b.mul_batch(x1, &g2)?)?;
    // shift_rel: (ΣC − ΣR) spread over the nonzero entries of C.
    let excess = b.sub_batch(&b.sample_sums_batch(&c)?, &b.sample_sums_batch(r)?)?;
    let shifts = div(&excess, &b.nonzero_counts_batch(&c)?)?;
    b.shift_nonzero_batch(&c, T::one(), &shifts)
}

/// RAP's first propagation at the logits layer `x·wᵀ + bias` of every sample
/// (`x` of `N×I`, `pd` the relevance `N×O` at its output): the four sign
/// sections, the bias shared between the "positive" and "negative" ones,
/// then `redistribute` (`|C|·ΣC ⊘ Σ|C|` per sample).
pub fn rap_first_propagation_batch<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    x: &Tensor<T>,
    pd: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&Tensor<T>>,
) -> Result<Tensor<T>> {
    let b = backend;
    if x.shape().len() != 2 || pd.shape().len() != 2 || x.shape()[0] != pd.shape()[0] {
        return Err(RspError::shape("RAP's first propagation", "N×I and N×O", pd.shape()));
    }
    let div = |a: &Tensor<T>, z: &Tensor<T>| b.stabilised_divide_batch(a, z, None);
    let (w_pos, w_neg) = (b.clamp(w, Some(T::zero()), None)?, b.clamp(w, None, Some(T::zero()))?);
    let (x_pos, x_neg) = (b.relu_batch(x)?, b.clamp(x, None, Some(T::zero()))?);
    let z1 = b.linear_batch(&x_pos, &w_pos, None)?;
    let z2 = b.linear_batch(&x_pos, &w_neg, None)?;
    let z3 = b.linear_batch(&x_neg, &w_pos, None)?;
    let z4 = b.linear_batch(&x_neg, &w_neg, None)?;
    let (rpp, rpn, rnp, rnn) =
        (b.mul_batch(&z1, pd)?, b.mul_batch(&z2, pd)?, b.mul_batch(&z3, pd)?, b.mul_batch(&z4, pd)?);
    // x ⊙ (s · W) per sample.
    let back = |w: &Tensor<T>, x: &Tensor<T>, s: Tensor<T>| b.mul_batch(x, &b.linear_adjoint_batch(&s, w)?);
    let c2 = back(&w_neg, &x_pos, div(&rpn, &z2)?)?;
    let c3 = back(&w_pos, &x_neg, div(&rnp, &z3)?)?;
    let mut c = b.add_batch(&back(&w_pos, &x_pos, div(&rpp, &z1)?)?, &back(&w_neg, &x_neg, div(&rnn, &z4)?)?)?;
    if let Some(bias) = bias {
        let pos = b.sample_sums_batch(&b.add_batch(&rpp, &rnn)?)?;
        let neg = b.sample_sums_batch(&b.add_batch(&rpn, &rnp)?)?;
        let both = b.add_batch(&pos, &neg)?;
        let b_pd = b.channel_scale_batch(pd, bias)?;
        let zeros = b.zeros(pd.shape())?;
        let b_pos = b.scaled_add_per_sample(&zeros, &div(&pos, &both)?, &b_pd)?;
        let b_neg = b.scaled_add_per_sample(&zeros, &div(&neg, &both)?, &b_pd)?;
        c = b.add_batch(&c, &back(&w_pos, &x_pos, div(&b_pos, &z1)?)?)?;
        c = b.add_batch(&b.add_batch(&c, &c2)?, &c3)?;
        c = b.add_batch(&c, &back(&w_neg, &x_pos, div(&b_neg, &z2)?)?)?;
    } else {
        c = b.add_batch(&b.add_batch(&c, &c2)?, &c3)?;
    }
    // redistribute: C⁺ ⊘ Σ|C| · ΣC − C⁻ ⊘ Σ|C| · ΣC = |C| · (ΣC ⊘ Σ|C|).
    let magnitude = b.abs(&c)?;
    let factor = div(&b.sample_sums_batch(&c)?, &b.sample_sums_batch(&magnitude)?)?;
    b.scaled_add_per_sample(&b.zeros(c.shape())?, &factor, &magnitude)
}

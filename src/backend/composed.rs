//! The fused rules composed from the primitives: the defaults of
//! [`Backend::sectional_rule_batch`], [`Backend::max_pool_rule_batch`] and
//! [`Backend::add_rule_batch`]. A new backend that implements the primitives
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

use super::{Backend, ConvGeometry, PoolWindows, Tensor};
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

//! The matrix product behind [`super::CpuBackend`]: the `gemm` crate's
//! kernels (AVX-512 / AVX2+FMA, chosen at run time) on blocks of the output
//! that rayon computes in parallel.
//!
//! **Determinism.** The output is cut into blocks whose sizes depend only on
//! the shapes, never on the number of threads, and every block is one
//! single-threaded `gemm` call over the whole reduction dimension. So each
//! output element is computed by the same sequence of operations whatever the
//! pool size, and results are bit-identical for 1, 2 or 64 threads.
//!
//! **Why `gemm` and not `matrixmultiply`** (ndarray's `general_mat_mul`): on
//! most VGG16 shapes `gemm` is faster on this machine kind (it has AVX-512
//! kernels, `matrixmultiply` stops at AVX2). The exception is a product whose
//! reduction is far longer than both output sides (the weight gradient of
//! conv1_2: 128×576 outputs over 50176 positions), where the two are even or
//! `matrixmultiply` is ahead (by up to 1.18× on 2 threads); there
//! `matrixmultiply` is used. See `benches/gemm.rs` and `docs/performance.md`.

use crate::float::Float;
use ndarray::linalg::general_mat_mul;
use ndarray::parallel::prelude::*;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis};
use std::any::TypeId;

/// Below this many multiply–adds a product is one call on the calling thread.
pub(crate) const SERIAL_WORK: usize = 1 << 18;

/// Reductions at least this many times longer than both output sides go to
/// `matrixmultiply` (`benches/gemm.rs`, 2026-11-26: at ratio 87 the kernels are
/// even or `matrixmultiply` leads by ≤ 1.18×; at 22 and 11 `gemm` leads by 1.15–1.35×).
const LONG_REDUCTION: usize = 32;

/// The kernel that computes each output block of a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The `gemm` crate (AVX-512 / AVX2+FMA kernels chosen at run time).
    Gemm,
    /// `matrixmultiply`, through ndarray's `general_mat_mul`.
    MatrixMultiply,
}

impl Kernel {
    /// The kernel [`super::CpuBackend`] uses for a product of `m×k` by `k×n`
    /// (chosen from the whole product's shape, so all its blocks use the same one).
    pub fn for_shape(m: usize, k: usize, n: usize) -> Kernel {
        if k >= LONG_REDUCTION * m.max(n) {
            Kernel::MatrixMultiply
        } else {
            Kernel::Gemm
        }
    }
}

/// `c = a · b` on the calling thread with the kernel of choice.
pub(crate) fn block_product<T: Float>(a: ArrayView2<T>, b: ArrayView2<T>, mut c: ArrayViewMut2<T>, kernel: Kernel) {
    match kernel {
        Kernel::MatrixMultiply => general_mat_mul(T::one(), &a, &b, T::zero(), &mut c),
        Kernel::Gemm => gemm_serial(a, b, c),
    }
}

/// `c = a · b` on the calling thread, by the `gemm` crate (f32 and f64;
/// any other float type falls back to `matrixmultiply`).
///
/// This is the crate's only `unsafe` block. It is sound because:
/// * the dimensions are checked: `a` is `m×k`, `b` is `k×n`, `c` is `m×n`;
/// * ndarray views guarantee that `ptr + i·stride_0 + j·stride_1` is in bounds
///   for every `(i, j)` within their dimensions, for any (even negative)
///   strides, which is exactly the addressing `gemm` uses (strides in elements);
/// * `c` is a mutable borrow, so it cannot overlap `a` or `b` (shared borrows);
/// * the `gemm` family's kernels are called with `T` equal to `f32` or `f64`
///   only (checked by `TypeId`), the types they implement;
/// * with `read_dst = false` the old contents of `c` are never read, so `c`
///   may hold anything (it is fully overwritten).
pub(crate) fn gemm_serial<T: Float>(a: ArrayView2<T>, b: ArrayView2<T>, mut c: ArrayViewMut2<T>) {
    let (m, k) = a.dim();
    let (kb, n) = b.dim();
    assert_eq!(k, kb, "gemm: inner dimensions differ");
    assert_eq!(c.dim(), (m, n), "gemm: output shape");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(T::zero());
        return;
    }
    let supported = TypeId::of::<T>() == TypeId::of::<f32>() || TypeId::of::<T>() == TypeId::of::<f64>();
    if !supported {
        general_mat_mul(T::one(), &a, &b, T::zero(), &mut c);
        return;
    }
    let (c_rs, c_cs) = (c.strides()[0], c.strides()[1]);
    let (a_rs, a_cs) = (a.strides()[0], a.strides()[1]);
    let (b_rs, b_cs) = (b.strides()[0], b.strides()[1]);
    // SAFETY: see the function documentation.
    unsafe {
        gemm_typed(m, n, k, c.as_mut_ptr(), c_cs, c_rs, a.as_ptr(), a_cs, a_rs, b.as_ptr(), b_cs, b_rs);
    }
}

/// `dst = lhs · rhs` by the f32 or f64 kernel of the `gemm` family, with the
/// operand normalisation of `gemm::gemm` (the umbrella crate's entry point,
/// which would also compile its complex-number kernels): a column-oriented
/// destination is handled as the transposed product, and negative strides
/// are turned positive, as the kernels require.
///
/// # Safety
/// The pointers and strides address valid, non-overlapping `m×k`, `k×n` and
/// `m×n` matrices of `T`, and `T` is `f32` or `f64`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_typed<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_cs: isize,
    dst_rs: isize,
    lhs: *const T,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const T,
    rhs_cs: isize,
    rhs_rs: isize,
) {
    let transpose = dst_cs.abs() < dst_rs.abs();
    let (m, n, mut dst, mut dst_cs, mut dst_rs, mut lhs, mut lhs_cs, mut lhs_rs, mut rhs, mut rhs_cs, mut rhs_rs) =
        if transpose {
            (n, m, dst, dst_rs, dst_cs, rhs, rhs_rs, rhs_cs, lhs, lhs_rs, lhs_cs)
        } else {
            (m, n, dst, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs)
        };
    if dst_rs < 0 && m > 0 {
        dst = dst.wrapping_offset((m - 1) as isize * dst_rs);
        dst_rs = -dst_rs;
        lhs = lhs.wrapping_offset((m - 1) as isize * lhs_rs);
        lhs_rs = -lhs_rs;
    }
    if dst_cs < 0 && n > 0 {
        dst = dst.wrapping_offset((n - 1) as isize * dst_cs);
        dst_cs = -dst_cs;
        rhs = rhs.wrapping_offset((n - 1) as isize * rhs_cs);
        rhs_cs = -rhs_cs;
    }
    if lhs_cs < 0 && k > 0 {
        lhs = lhs.wrapping_offset((k - 1) as isize * lhs_cs);
        lhs_cs = -lhs_cs;
        rhs = rhs.wrapping_offset((k - 1) as isize * rhs_rs);
        rhs_rs = -rhs_rs;
    }
    let parallelism = gemm_common::Parallelism::None;
    if TypeId::of::<T>() == TypeId::of::<f64>() {
        gemm_f64::gemm::f64::get_gemm_fn()(
            m,
            n,
            k,
            dst as *mut f64,
            dst_cs,
            dst_rs,
            false,
            lhs as *const f64,
            lhs_cs,
            lhs_rs,
            rhs as *const f64,
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    } else {
        gemm_f32::gemm::f32::get_gemm_fn()(
            m,
            n,
            k,
            dst as *mut f32,
            dst_cs,
            dst_rs,
            false,
            lhs as *const f32,
            lhs_cs,
            lhs_rs,
            rhs as *const f32,
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Length of the blocks a dimension of `len` is cut into: 16, 8, 4 or 2 equal
/// parts, as many as keep blocks at least 128 long (fewer parts means less
/// repacking of the other operand). Depends on `len` alone.
pub(crate) fn block_len(len: usize) -> usize {
    let mut parts = 16;
    while parts > 1 && len / parts < 128 {
        parts /= 2;
    }
    len.div_ceil(parts).max(1)
}

/// `c = a · b` (overwriting `c`), parallel over blocks of the larger output
/// dimension; see the module documentation for why the bits do not depend on
/// the number of threads.
pub(crate) fn gemm_into<T: Float>(a: ArrayView2<T>, b: ArrayView2<T>, c: ArrayViewMut2<T>) {
    let (m, k) = a.dim();
    blocked_product(a, b, c, Kernel::for_shape(m, k, b.ncols()));
}

/// `c = a · b` in the backend's output blocks, every block by `kernel`.
fn blocked_product<T: Float>(a: ArrayView2<T>, b: ArrayView2<T>, mut c: ArrayViewMut2<T>, kernel: Kernel) {
    let (m, k) = a.dim();
    let n = b.ncols();
    if m.saturating_mul(n).saturating_mul(k) < SERIAL_WORK {
        block_product(a, b, c, kernel);
        return;
    }
    if n >= m {
        let block = block_len(n);
        c.axis_chunks_iter_mut(Axis(1), block).into_par_iter().enumerate().for_each(|(i, cb)| {
            let bb = b.slice(s![.., i * block..i * block + cb.ncols()]);
            block_product(a, bb, cb, kernel);
        });
    } else {
        let block = block_len(m);
        c.axis_chunks_iter_mut(Axis(0), block).into_par_iter().enumerate().for_each(|(i, cb)| {
            let ab = a.slice(s![i * block..i * block + cb.nrows(), ..]);
            block_product(ab, b, cb, kernel);
        });
    }
}

/// `a · b` in a new matrix.
pub(crate) fn gemm<T: Float>(a: ArrayView2<T>, b: ArrayView2<T>) -> Array2<T> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    gemm_into(a, b, c.view_mut());
    c
}

/// `a · b` exactly as [`super::CpuBackend`] computes it (the same
/// thread-count-independent output blocks, run in the current rayon pool)
/// but with every block computed by `kernel`, whatever the shape: what
/// `benches/gemm.rs` compares to choose [`Kernel::for_shape`]'s threshold.
///
/// ```
/// use rsp::backend::{matmul_with_kernel, Kernel};
/// let a = ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]);
/// let b = ndarray::arr2(&[[1.0f32, 0.0], [0.0, 1.0]]);
/// for kernel in [Kernel::Gemm, Kernel::MatrixMultiply] {
///     assert_eq!(matmul_with_kernel(kernel, a.view(), b.view()), a);
/// }
/// ```
///
/// # Panics
/// If the inner dimensions differ.
pub fn matmul_with_kernel<T: Float>(kernel: Kernel, a: ArrayView2<T>, b: ArrayView2<T>) -> Array2<T> {
    assert_eq!(a.ncols(), b.nrows(), "matmul_with_kernel: inner dimensions differ");
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    blocked_product(a, b, c.view_mut(), kernel);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
        Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| (0..a.ncols()).map(|t| a[[i, t]] * b[[t, j]]).sum())
    }

    #[test]
    fn matches_the_naive_product_for_odd_shapes_and_strides() {
        for &(m, k, n) in &[(1, 1, 1), (3, 0, 2), (7, 13, 300), (300, 9, 5), (130, 257, 129), (3, 200, 2), (4, 9000, 5)]
        {
            let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 11) as f64 - 5.0);
            let b = Array2::from_shape_fn((n, k), |(i, j)| ((i * 5 + j) % 13) as f64 - 6.0);
            let expect = naive(&a, &b.t().to_owned());
            // b transposed: a non-contiguous operand; (3, 200, 2) and (4, 9000, 5) take matrixmultiply.
            assert_eq!(gemm(a.view(), b.t()), expect, "{m}×{k}×{n}");
            let c32 = gemm(a.mapv(|v| v as f32).view(), b.t().mapv(|v| v as f32).view());
            assert_eq!(c32.mapv(|v| v as f64), expect);
        }
    }

    #[test]
    fn block_lengths_cover_the_dimension() {
        for len in [1, 127, 128, 576, 4608, 50176] {
            let b = block_len(len);
            assert!(b >= 1 && len.div_ceil(b) <= 16);
        }
        assert_eq!(block_len(576), 144);
        assert_eq!(block_len(50176), 3136);
    }
}

//! Backends: the heavy kernels (convolutions, matrix products, pooling) behind
//! one trait, so that layers and rules never depend on how they are computed.
//!
//! * [`CpuBackend`] (the default): im2col + cache-blocked GEMM, parallel with rayon.
//! * [`ReferenceBackend`]: direct loops, obviously correct and slow; the oracle
//!   the tests compare every other backend against.
//!
//! Every kernel works on **one sample** (`C×H×W` views); the network maps
//! samples in parallel. Every kernel returns a [`Result`]: a
//! device backend reports out-of-memory and driver failures as
//! [`RspError::Backend`](crate::RspError::Backend) (the CPU backends never fail). A new backend implements the five required methods;
//! the derived ones (pooling, the fused sectional rule) have default
//! implementations built from those and may be overridden when a faster fused
//! version exists. See `docs/architecture.md` ("Adding a backend").

mod cpu;
mod im2col;
mod matmul;
pub(crate) mod pooling;
mod reference;
pub(crate) mod workspace;

pub use cpu::CpuBackend;
pub use matmul::{matmul_with_kernel, Kernel};
pub use pooling::PoolWindows;
pub use reference::ReferenceBackend;

use crate::error::Result;
use crate::float::{safe_div, Float};
use ndarray::{Array2, Array3, Array4, ArrayView2, ArrayView3, ArrayView4, Zip};
use std::fmt::Debug;

/// Stride and (possibly asymmetric) zero padding of a 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    /// Vertical and horizontal stride (≥ 1).
    pub stride: [usize; 2],
    /// Zero padding `[top, left, bottom, right]`.
    pub padding: [usize; 4],
}

impl ConvGeometry {
    /// Symmetric padding and equal strides, as PyTorch's `Conv2d(stride=s, padding=p)`.
    ///
    /// ```
    /// let g = rsp::backend::ConvGeometry::square(2, 1);
    /// assert_eq!(g.output_size((224, 224), (3, 3)), Some((112, 112)));
    /// ```
    pub fn square(stride: usize, padding: usize) -> Self {
        ConvGeometry { stride: [stride, stride], padding: [padding; 4] }
    }

    /// Output height and width for an input of `input_hw` and a kernel of
    /// `kernel_hw` (rounded down, as PyTorch), or `None` if the kernel does not
    /// fit in the padded input or the stride is zero.
    pub fn output_size(&self, input_hw: (usize, usize), kernel_hw: (usize, usize)) -> Option<(usize, usize)> {
        let [sh, sw] = self.stride;
        let [pt, pl, pb, pr] = self.padding;
        if sh == 0 || sw == 0 || kernel_hw.0 == 0 || kernel_hw.1 == 0 {
            return None;
        }
        let ph = input_hw.0.checked_add(pt)?.checked_add(pb)?;
        let pw = input_hw.1.checked_add(pl)?.checked_add(pr)?;
        if ph < kernel_hw.0 || pw < kernel_hw.1 {
            return None;
        }
        Some(((ph - kernel_hw.0) / sh + 1, (pw - kernel_hw.1) / sw + 1))
    }
}

/// The kernels an RSP computation needs, for one float type.
///
/// Shapes: `x` is an input sample `C×H×W`, `w` a weight `O×C×kh×kw`, `s` and
/// `r` are output-shaped `O×Ho×Wo`. Callers (the layers) validate shapes
/// before calling; kernels may panic on inconsistent shapes. Every kernel
/// returns a [`Result`], so that a device's failures (out of memory, a driver
/// error) are typed errors ([`RspError::Backend`](crate::RspError::Backend)).
///
/// ```
/// use rsp::backend::{Backend, ConvGeometry, CpuBackend, ReferenceBackend};
/// use ndarray::{Array3, Array4};
/// let x = Array3::from_shape_fn((2, 5, 4), |(c, i, j)| (c + i * j) as f64);
/// let w = Array4::from_shape_fn((3, 2, 3, 3), |(o, c, u, v)| (o + c) as f64 - (u * v) as f64);
/// let g = ConvGeometry::square(1, 1);
/// let fast = Backend::<f64>::conv2d(&CpuBackend::default(), x.view(), w.view(), &g)?;
/// let slow = Backend::<f64>::conv2d(&ReferenceBackend, x.view(), w.view(), &g)?;
/// assert_eq!(fast.dim(), (3, 5, 4));
/// assert!((&fast - &slow).iter().all(|d| d.abs() < 1e-12));
/// # Ok::<(), rsp::RspError>(())
/// ```
pub trait Backend<T: Float>: Send + Sync + Debug {
    /// A short name for messages and benchmarks.
    fn name(&self) -> &'static str;

    /// Cross-correlation without bias: `O×Ho×Wo`.
    fn conv2d(&self, x: ArrayView3<T>, w: ArrayView4<T>, geom: &ConvGeometry) -> Result<Array3<T>>;

    /// Adjoint of [`Backend::conv2d`] with respect to its input (a transposed
    /// convolution): the gradient of `Σ conv(x, w) ⊙ s` with respect to `x`,
    /// of shape `C×H×W` with `(H, W) = input_hw`.
    fn conv2d_input_adjoint(
        &self,
        s: ArrayView3<T>,
        w: ArrayView4<T>,
        geom: &ConvGeometry,
        input_hw: (usize, usize),
    ) -> Result<Array3<T>>;

    /// Weight gradient of [`Backend::conv2d`] with `r` as upstream gradient:
    /// `G[o,i,u,v] = Σ_{p,q} r[o,p,q] · x_pad[i, p·sh+u, q·sw+v]`, shape `O×C×kh×kw`.
    fn conv2d_weight_grad(
        &self,
        x: ArrayView3<T>,
        r: ArrayView3<T>,
        geom: &ConvGeometry,
        kernel_hw: (usize, usize),
    ) -> Result<Array4<T>>;

    /// Matrix product `a · b`.
    fn matmul(&self, a: ArrayView2<T>, b: ArrayView2<T>) -> Result<Array2<T>>;

    /// The two sections of the sectional rule, already subtracted:
    /// `C⁺ − C⁻` with `C^± = x⁺ ⊙ convᵀ(R^± ⊘ A^±, G^±)`, where `G^±` are the
    /// weight gradients of `x⁺` with `R^±` and `A^± = conv(x⁺, G^±) ⊙ M^±`.
    /// `x_pos` must already be `max(x, 0)`. The layer applies the doubling and shift.
    fn sectional_contributions(
        &self,
        x_pos: ArrayView3<T>,
        r: ArrayView3<T>,
        geom: &ConvGeometry,
        kernel_hw: (usize, usize),
    ) -> Result<Array3<T>> {
        let input_hw = (x_pos.dim().1, x_pos.dim().2);
        let r_pos = r.mapv(|v| v.max(T::zero()));
        let r_neg = r.mapv(|v| (-v).max(T::zero()));
        let section = |r_part: &Array3<T>| -> Result<Array3<T>> {
            let g = self.conv2d_weight_grad(x_pos, r_part.view(), geom, kernel_hw)?;
            let a = self.conv2d(x_pos, g.view(), geom)?;
            // The mask M^± is [R^± > 0]; outside it the quotient is 0 anyway.
            let s = Zip::from(r_part).and(&a).map_collect(
                |&rv, &av| {
                    if rv > T::zero() {
                        safe_div(rv, av)
                    } else {
                        T::zero()
                    }
                },
            );
            let back = self.conv2d_input_adjoint(s.view(), g.view(), geom, input_hw)?;
            Ok(Zip::from(&back).and(&x_pos).map_collect(|&b, &xv| xv * b))
        };
        let c_pos = section(&r_pos)?;
        let c_neg = section(&r_neg)?;
        Ok(c_pos - c_neg)
    }

    /// Max pooling over `windows`: the maxima and, for each output, the flat
    /// `(h, w)` index of its window's first maximal element in row-major order.
    fn max_pool(&self, x: ArrayView3<T>, windows: &PoolWindows) -> Result<(Array3<T>, Array3<u32>)> {
        Ok(pooling::max_pool(x, windows))
    }

    /// Adjoint of max pooling: routes each `s` value to its winner (accumulating).
    fn max_pool_adjoint(
        &self,
        s: ArrayView3<T>,
        argmax: ArrayView3<u32>,
        input_hw: (usize, usize),
    ) -> Result<Array3<T>> {
        Ok(pooling::max_pool_adjoint(s, argmax, input_hw))
    }

    /// The max-pooling RSP rule in one pass (no pooled or routed intermediate
    /// tensors): `x̃ = x + 1e-9`, each output's `P ⊘ z` and `N ⊘ z` routed to its
    /// window's first maximum of `x̃`, times `x̃`. Bit-identical to composing
    /// [`Backend::max_pool`] and [`Backend::max_pool_adjoint`] as the formula reads.
    fn max_pool_rule(&self, x: ArrayView3<T>, r: ArrayView3<T>, windows: &PoolWindows) -> Result<Array3<T>> {
        Ok(pooling::max_pool_rule(x, r, windows))
    }

    /// Average pooling over `windows`.
    fn avg_pool(&self, x: ArrayView3<T>, windows: &PoolWindows) -> Result<Array3<T>> {
        Ok(pooling::avg_pool(x, windows))
    }

    /// Adjoint of average pooling: spreads each `s / |window|` over its window.
    fn avg_pool_adjoint(&self, s: ArrayView3<T>, windows: &PoolWindows) -> Result<Array3<T>> {
        Ok(pooling::avg_pool_adjoint(s, windows))
    }
}

//! Backends: the heavy kernels (convolutions, matrix products, pooling) behind
//! one trait, so that layers and rules never depend on how they are computed.
//!
//! * [`CpuBackend`] (the default): im2col + cache-blocked GEMM, parallel with rayon.
//! * [`ReferenceBackend`]: direct loops, obviously correct and slow; the oracle
//!   the tests compare every other backend against.
//!
//! Two levels of operations, both fallible ([`RspError::Backend`] for a
//! device's out-of-memory and driver failures; the CPU backends never fail):
//!
//! * **Whole batches of backend-owned [`Tensor`]s** (engine v2): `upload`,
//!   `download`, the parameters' upload (once per network, cached by the
//!   network) and the operations of the batch forward pass
//!   ([`Backend::conv2d_batch`], [`Backend::linear_batch`], pooling, the
//!   channel-wise affine map, the residual sum, the finiteness check). A
//!   tensor is opaque: only the backend that made it reads it.
//! * **Per-sample kernels** on host views (`C×H×W`): the convolution, its
//!   input adjoint and weight gradient, the matrix product (required), and
//!   pooling and the fused sectional and max-pool rules (derived, with
//!   defaults). The batch operations' host defaults call them one sample at
//!   a time, as do the host rules ([`crate::attribution::Rules`]: a user's
//!   own).
//!
//! The fused rules (sectional, max-pool, residual sum, RAP's two) default
//! to compositions of the batch primitives ([`composed`]); the host backends
//! override them with their per-sample kernels, a device with its own.
//!
//! The batch operations have defaults for the host backends, built from the
//! per-sample kernels, so a host backend implements the five required
//! methods; a device backend overrides the batch operations. See
//! `docs/architecture.md` ("Data flow of one attribution").

pub mod composed;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod im2col;
mod matmul;
pub(crate) mod pooling;
pub(crate) mod rap;
mod reference;
pub(crate) mod rules;
mod sparse;
pub(crate) mod start;
mod tensor;
mod winograd;
pub(crate) mod workspace;

pub use cpu::{
    conv2d_with, record_sectional_calls, sectional_contributions_with, ConvKernels, CpuBackend, DenseCpuBackend,
    SectionalKernels, SectionalRecord, SPARSE_DENSITY,
};
#[cfg(feature = "cuda")]
pub use cuda::{CudaBackend, CudaFloat};
pub use matmul::{matmul_with_kernel, Kernel};
pub use pooling::PoolWindows;
pub use rap::RapFlavour;
pub use reference::ReferenceBackend;
pub use tensor::{HostBuffer, HostParameter, HostStorage, Tensor};

use crate::error::{Result, RspError};
use crate::float::{safe_div, Float};
use ndarray::parallel::prelude::*;
use ndarray::{
    Array2, Array3, Array4, ArrayD, ArrayView1, ArrayView2, ArrayView3, ArrayView4, ArrayViewD, Axis, Dimension, Ix1,
    Ix2, Ix3, Ix4, IxDyn, Zip,
};
use std::fmt::Debug;
use std::sync::Arc;
use tensor::{host_samples, host_tensor, host_tensor_samples, host_tensor_shared, host_view};

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
/// error) are typed errors ([`RspError::Backend`]).
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

    // Whole batches of backend-owned tensors (engine v2). The defaults serve
    // the host backends: they read `HostStorage` and run the per-sample
    // kernels above on the samples in parallel, so each sample's bits are
    // the same whatever the batch. A device backend overrides all of them.

    /// How many samples of a batch an attribution runs at once on this
    /// backend. `None` (the host backends): as many as the rayon pool has
    /// threads, since their batch operations run one sample per thread and
    /// more at once would only hold more memory. A device returns the batch
    /// it runs best (the memory budget still splits larger ones).
    fn samples_at_once(&self) -> Option<usize> {
        None
    }

    /// For a device backend: the bytes of device memory its tensors may take
    /// (what the pre-flight check holds an attribution's activations and
    /// relevances to, beside the network's memory budget). `None` (the host
    /// backends): tensors live in host memory, under the memory budget alone.
    fn memory_for_tensors(&self) -> Option<u64> {
        None
    }

    /// Copies a host array to the backend.
    fn upload(&self, host: ArrayViewD<T>) -> Result<Tensor<T>> {
        Ok(host_tensor(host.as_standard_layout().into_owned()))
    }

    /// Makes a layer's parameter available to the backend. The host backends
    /// share the layer's buffer (no copy); a device copies it. The network
    /// calls this once per parameter, network and backend, and caches the result.
    fn upload_parameter(&self, parameter: &HostParameter<T>) -> Result<Tensor<T>> {
        host_tensor_shared(&parameter.shape, Arc::clone(&parameter.buffer))
    }

    /// Copies a tensor back to the host.
    fn download(&self, t: &Tensor<T>) -> Result<ArrayD<T>> {
        let samples = host_samples(self.name(), t)?;
        let mut data = Vec::with_capacity(t.len());
        for s in &samples {
            match s.as_slice() {
                Some(slice) => data.extend_from_slice(slice),
                None => data.extend(s.iter().copied()),
            }
        }
        ArrayD::from_shape_vec(IxDyn(t.shape()), data)
            .map_err(|_| RspError::shape("downloaded tensor", format!("{} elements", t.len()), t.shape()))
    }

    /// [`Backend::conv2d`] of every sample of `x` (`N×C×H×W`) with `w`, plus
    /// `bias` (one value per output channel) if given: `N×O×Ho×Wo`.
    fn conv2d_batch(
        &self,
        x: &Tensor<T>,
        w: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        geom: &ConvGeometry,
    ) -> Result<Tensor<T>> {
        let w = view_as::<T, Ix4>(self.name(), w, "convolution weight")?;
        let bias = bias.map(|b| view_as::<T, Ix1>(self.name(), b, "convolution bias")).transpose()?;
        per_sample(self.name(), x, |xs| {
            let xs =
                xs.into_dimensionality::<Ix3>().map_err(|_| RspError::shape("conv2d input", "N×C×H×W", x.shape()))?;
            let mut z = self.conv2d(xs, w.view(), geom)?;
            if let Some(b) = &bias {
                Zip::from(z.outer_iter_mut()).and(b).par_for_each(|mut plane, &bv| plane += bv);
            }
            Ok(z.into_dyn())
        })
    }

    /// `x · wᵀ + bias` for `x` of `N×I` and `w` of `O×I`: `N×O`.
    fn linear_batch(&self, x: &Tensor<T>, w: &Tensor<T>, bias: Option<&Tensor<T>>) -> Result<Tensor<T>> {
        let w = view_as::<T, Ix2>(self.name(), w, "linear weight")?;
        let bias = bias.map(|b| view_as::<T, Ix1>(self.name(), b, "linear bias")).transpose()?;
        per_sample(self.name(), x, |xs| {
            let column = xs
                .into_shape_with_order((w.ncols(), 1))
                .map_err(|_| RspError::shape("linear input", format!("N×{}", w.ncols()), x.shape()))?;
            let mut y = self.matmul(w.view(), column)?.remove_axis(Axis(1));
            if let Some(b) = &bias {
                y += b;
            }
            Ok(y.into_dyn())
        })
    }

    /// `max(x, 0)` element-wise.
    fn relu_batch(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        per_sample_n(self.name(), &[x], |v| {
            let mut out = v[0].to_owned();
            out.par_mapv_inplace(|v| v.max(T::zero()));
            Ok(out)
        })
    }

    /// [`Backend::max_pool`] of every sample (the maxima only).
    fn max_pool_batch(&self, x: &Tensor<T>, windows: &PoolWindows) -> Result<Tensor<T>> {
        per_sample(self.name(), x, |xs| {
            let xs = xs
                .into_dimensionality::<Ix3>()
                .map_err(|_| RspError::shape("max pooling input", "N×C×H×W", x.shape()))?;
            Ok(self.max_pool(xs, windows)?.0.into_dyn())
        })
    }

    /// [`Backend::avg_pool`] of every sample.
    fn avg_pool_batch(&self, x: &Tensor<T>, windows: &PoolWindows) -> Result<Tensor<T>> {
        per_sample(self.name(), x, |xs| {
            let xs = xs
                .into_dimensionality::<Ix3>()
                .map_err(|_| RspError::shape("average pooling input", "N×C×H×W", x.shape()))?;
            Ok(self.avg_pool(xs, windows)?.into_dyn())
        })
    }

    /// Per channel `c` of every sample: `(x − mean[c]) · scale[c] + shift[c]`
    /// (inference batch norm).
    fn channel_affine_batch(
        &self,
        x: &Tensor<T>,
        mean: &Tensor<T>,
        scale: &Tensor<T>,
        shift: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        let [mean, scale, shift] =
            [mean, scale, shift].map(|p| view_as::<T, Ix1>(self.name(), p, "per-channel parameter"));
        let (mean, scale, shift) = (mean?, scale?, shift?);
        per_sample(self.name(), x, |xs| {
            let mut z = xs.to_owned();
            if z.ndim() == 0 || z.shape()[0] != mean.len() || scale.len() != mean.len() || shift.len() != mean.len() {
                return Err(RspError::shape("channel-wise affine input", format!("N×{}×…", mean.len()), x.shape()));
            }
            for (c, mut plane) in z.axis_iter_mut(Axis(0)).enumerate() {
                let (m, s, b) = (mean[c], scale[c], shift[c]);
                plane.mapv_inplace(|v| (v - m) * s + b);
            }
            Ok(z)
        })
    }

    /// `a + b` element-wise (the residual sum).
    fn add_batch(&self, a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
        if a.shape() != b.shape() {
            return Err(RspError::shape("second summand", format!("{:?}", a.shape()), b.shape()));
        }
        per_sample_n(self.name(), &[a, b], |v| Ok(&v[0] + &v[1]))
    }

    /// A zero tensor of `shape`.
    fn zeros(&self, shape: &[usize]) -> Result<Tensor<T>> {
        Ok(host_tensor(ArrayD::zeros(IxDyn(shape))))
    }

    /// Row `n` one-hot at `classes[n]`: `N×width` (the gradient's seed).
    fn one_hot_batch(&self, classes: &[usize], width: usize) -> Result<Tensor<T>> {
        let mut seed = Array2::zeros((classes.len(), width));
        for (n, &c) in classes.iter().enumerate() {
            if c >= width {
                return Err(RspError::TargetOutOfRange { target: c, classes: width });
            }
            seed[[n, c]] = T::one();
        }
        Ok(host_tensor(seed.into_dyn()))
    }

    /// `a ⊙ b` element-wise (gradient × input).
    fn mul_batch(&self, a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
        if a.shape() != b.shape() {
            return Err(RspError::shape("second factor", format!("{:?}", a.shape()), b.shape()));
        }
        per_sample_n(self.name(), &[a, b], |v| Ok(&v[0] * &v[1]))
    }

    // Element-wise steps and queries of the rules given as tensor rules
    // (LRP's, [`crate::attribution::TensorRules`]).

    /// `t` clamped element-wise to `[low, high]`, a bound given as `None`
    /// being open: LRP's `x⁺ = max(x, 0)` and `W⁻ = min(W, 0)`. Any tensor,
    /// an uploaded parameter too.
    fn clamp(&self, t: &Tensor<T>, low: Option<T>, high: Option<T>) -> Result<Tensor<T>> {
        host_elementwise(self.name(), t, move |v| {
            let v = low.map_or(v, |l| v.max(l));
            high.map_or(v, |h| v.min(h))
        })
    }

    /// `r ⊘ (z + ε·sign z)` element-wise, with `sign(0) = +1` and `0` where
    /// the denominator is zero (safe division); `epsilon = None` divides by
    /// `z` itself. LRP's stabilised share of each output.
    fn stabilised_divide_batch(&self, r: &Tensor<T>, z: &Tensor<T>, epsilon: Option<T>) -> Result<Tensor<T>> {
        if r.shape() != z.shape() {
            return Err(RspError::shape("denominator", format!("{:?}", r.shape()), z.shape()));
        }
        per_sample_n(self.name(), &[r, z], |v| {
            Ok(Zip::from(&v[0]).and(&v[1]).map_collect(|&rv, &zv| safe_div(rv, rules::stabilise(zv, epsilon))))
        })
    }

    /// `a − b` element-wise.
    fn sub_batch(&self, a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
        if a.shape() != b.shape() {
            return Err(RspError::shape("subtrahend", format!("{:?}", a.shape()), b.shape()));
        }
        per_sample_n(self.name(), &[a, b], |v| Ok(&v[0] - &v[1]))
    }

    /// `factor · t` element-wise. Any tensor, an uploaded parameter too.
    fn scale(&self, t: &Tensor<T>, factor: T) -> Result<Tensor<T>> {
        host_elementwise(self.name(), t, move |v| factor * v)
    }

    /// `a + factor · b` element-wise (zennit's Gamma weights `W + γW⁺`). Any
    /// two tensors of one shape, uploaded parameters too.
    fn scaled_add(&self, a: &Tensor<T>, factor: T, b: &Tensor<T>) -> Result<Tensor<T>> {
        if a.shape() != b.shape() {
            return Err(RspError::shape("second term", format!("{:?}", a.shape()), b.shape()));
        }
        match (host_view(self.name(), a), host_view(self.name(), b)) {
            (Ok(av), Ok(bv)) => {
                let mut out = av.to_owned();
                Zip::from(&mut out).and(&bv).par_for_each(|o, &bv| *o += factor * bv);
                Ok(host_tensor(out))
            }
            _ => per_sample_n(self.name(), &[a, b], |v| {
                Ok(Zip::from(&v[0]).and(&v[1]).map_collect(|&av, &bv| av + factor * bv))
            }),
        }
    }

    /// A tensor of `shape` with every element `value`.
    fn full(&self, shape: &[usize], value: T) -> Result<Tensor<T>> {
        Ok(host_tensor(ArrayD::from_elem(IxDyn(shape), value)))
    }

    /// `t` where `z` has the sign `sign` (`Greater`: `z > 0`, `Less`:
    /// `z < 0`, `Equal`: `z = 0`), `0` elsewhere (zennit's Gamma rule splits
    /// the outputs by the sign of `z`).
    fn keep_where_sign_batch(&self, t: &Tensor<T>, z: &Tensor<T>, sign: std::cmp::Ordering) -> Result<Tensor<T>> {
        if t.shape() != z.shape() {
            return Err(RspError::shape("sign mask", format!("{:?}", t.shape()), z.shape()));
        }
        per_sample_n(self.name(), &[t, z], |v| {
            Ok(Zip::from(&v[0]).and(&v[1]).map_collect(|&tv, &zv| {
                if zv.partial_cmp(&T::zero()) == Some(sign) {
                    tv
                } else {
                    T::zero()
                }
            }))
        })
    }

    /// `Σ_c r[:, c] ⊘ (z + ε·sign z)` over the channels of `r` (`N×C×H×W`),
    /// added in channel order from zero, for a one-channel `z` (`N×1×H×W`)
    /// that every channel shares: `N×1×H×W`. zennit's Flat rule, whose
    /// denominator does not depend on the output channel.
    fn channel_shares_sum_batch(&self, r: &Tensor<T>, z: &Tensor<T>, epsilon: Option<T>) -> Result<Tensor<T>> {
        let (rs, zs) = (r.shape(), z.shape());
        if rs.len() != 4 || zs.len() != 4 || zs[0] != rs[0] || zs[1] != 1 || zs[2..] != rs[2..] {
            return Err(RspError::shape("shared denominator", format!("{}×1×{:?}", rs[0], rs.get(2..)), zs));
        }
        per_sample_n(self.name(), &[r, z], |v| {
            let (r, z) = (chw(&v[0], r)?, chw(&v[1], z)?);
            let z = z.index_axis(Axis(0), 0);
            let mut s = ndarray::Array2::zeros(z.raw_dim());
            for r_c in r.outer_iter() {
                Zip::from(&mut s).and(&r_c).and(&z).for_each(|sv, &rv, &zv| {
                    *sv += safe_div(rv, rules::stabilise(zv, epsilon));
                });
            }
            Ok(s.insert_axis(Axis(0)).into_dyn())
        })
    }

    /// `|t|` element-wise (CLRP's seeds are the logits' magnitudes).
    fn abs(&self, t: &Tensor<T>) -> Result<Tensor<T>> {
        host_elementwise(self.name(), t, |v| v.abs())
    }

    /// The sum of each sample of `t`: an `N` tensor (CLRP rescales the dual
    /// class's relevance to the target's total).
    fn sample_sums_batch(&self, t: &Tensor<T>) -> Result<Tensor<T>> {
        let sums: Vec<T> = host_samples(self.name(), t)?.iter().map(|s| s.sum()).collect();
        Ok(host_tensor(ndarray::Array1::from(sums).into_dyn()))
    }

    /// `a + f_n · b` for every sample `n`, with `factors` an `N` tensor (one
    /// factor per sample).
    fn scaled_add_per_sample(&self, a: &Tensor<T>, factors: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
        if a.shape() != b.shape() || factors.shape() != &a.shape()[..1] {
            return Err(RspError::shape("per-sample factors and second term", format!("{:?}", a.shape()), b.shape()));
        }
        per_sample_n(self.name(), &[a, factors, b], |v| {
            let f = v[1].first().copied().unwrap_or_else(T::zero);
            Ok(Zip::from(&v[0]).and(&v[2]).map_collect(|&av, &bv| av + f * bv))
        })
    }

    /// Row `n` of the `N×K` logits `y` mapped to the gradient of the softmax
    /// probability `p_t` of class `t = classes[n]`: `p_t (1 − p_t)` at `t`,
    /// `−p_t p_k` elsewhere, `p = softmax(y − max y)` (SGLRP's seed).
    fn softmax_gradient_batch(&self, y: &Tensor<T>, classes: &[usize]) -> Result<Tensor<T>> {
        let width = match y.shape() {
            [n, k] if *n == classes.len() => *k,
            other => return Err(RspError::shape("logits", format!("{}×K", classes.len()), other)),
        };
        if let Some(&c) = classes.iter().find(|&&c| c >= width) {
            return Err(RspError::TargetOutOfRange { target: c, classes: width });
        }
        let rows = host_samples(self.name(), y)?;
        let mut out = Array2::zeros((classes.len(), width));
        for ((&target, row), mut seed) in classes.iter().zip(&rows).zip(out.outer_iter_mut()) {
            let top = row.iter().copied().fold(T::neg_infinity(), T::max);
            let exp: Vec<T> = row.iter().map(|&v| (v - top).exp()).collect();
            let total: T = exp.iter().copied().sum();
            let p_target = exp[target] / total;
            for (k, &e) in exp.iter().enumerate() {
                seed[k] = if k == target { p_target * (T::one() - p_target) } else { -(p_target * (e / total)) };
            }
        }
        Ok(host_tensor(out.into_dyn()))
    }

    /// Whether each sample of `t` has a negative entry (LRP-α1β0 skips the
    /// negative inputs' terms of a sample that has none).
    fn samples_with_negatives(&self, t: &Tensor<T>) -> Result<Vec<bool>> {
        Ok(host_samples(self.name(), t)?.iter().map(|s| s.iter().any(|&v| v < T::zero())).collect())
    }

    /// Row `n` of the `N×K` tensor `t` kept at column `classes[n]`, zero
    /// elsewhere: LRP's seed, the target's logit alone.
    fn class_entries_batch(&self, t: &Tensor<T>, classes: &[usize]) -> Result<Tensor<T>> {
        let width = match t.shape() {
            [n, k] if *n == classes.len() => *k,
            other => return Err(RspError::shape("logits", format!("{}×K", classes.len()), other)),
        };
        if let Some(&c) = classes.iter().find(|&&c| c >= width) {
            return Err(RspError::TargetOutOfRange { target: c, classes: width });
        }
        let rows = host_samples(self.name(), t)?;
        let mut out = Array2::zeros((classes.len(), width));
        for (n, (&c, row)) in classes.iter().zip(&rows).enumerate() {
            out[[n, c]] = row[[c]];
        }
        Ok(host_tensor(out.into_dyn()))
    }

    // The gradient's vector–Jacobian products, whole batches.

    /// The ReLU's gradient: `g` where `x > 0`, else 0.
    fn relu_gradient_batch(&self, x: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
        per_sample_n(self.name(), &[x, g], |v| Ok(rules::relu_gradient(v[0].view(), v[1].view())))
    }

    /// `g · w` per sample, for `g` of `N×O` and `w` of `O×I` (a linear layer's gradient): `N×I`.
    fn linear_adjoint_batch(&self, g: &Tensor<T>, w: &Tensor<T>) -> Result<Tensor<T>> {
        let w = view_as::<T, Ix2>(self.name(), w, "linear weight")?;
        per_sample_n(self.name(), &[g], |v| {
            let column = v[0]
                .view()
                .into_shape_with_order((w.nrows(), 1))
                .map_err(|_| RspError::shape("linear gradient", format!("N×{}", w.nrows()), g.shape()))?;
            Ok(self.matmul(w.t(), column)?.remove_axis(Axis(1)).into_dyn())
        })
    }

    /// [`Backend::conv2d_input_adjoint`] of every sample of `g`.
    fn conv2d_input_adjoint_batch(
        &self,
        g: &Tensor<T>,
        w: &Tensor<T>,
        geom: &ConvGeometry,
        input_hw: (usize, usize),
    ) -> Result<Tensor<T>> {
        let w = view_as::<T, Ix4>(self.name(), w, "convolution weight")?;
        per_sample_n(self.name(), &[g], |v| {
            Ok(self.conv2d_input_adjoint(chw(&v[0], g)?, w.view(), geom, input_hw)?.into_dyn())
        })
    }

    /// Max pooling's gradient: each `g` value routed to its window's first
    /// maximum of `x`.
    fn max_pool_adjoint_batch(&self, x: &Tensor<T>, g: &Tensor<T>, windows: &PoolWindows) -> Result<Tensor<T>> {
        per_sample_n(self.name(), &[x, g], |v| {
            let (_, argmax) = self.max_pool(chw(&v[0], x)?, windows)?;
            Ok(self.max_pool_adjoint(chw(&v[1], g)?, argmax.view(), windows.input_hw)?.into_dyn())
        })
    }

    /// [`Backend::avg_pool_adjoint`] of every sample.
    fn avg_pool_adjoint_batch(&self, g: &Tensor<T>, windows: &PoolWindows) -> Result<Tensor<T>> {
        per_sample_n(self.name(), &[g], |v| Ok(self.avg_pool_adjoint(chw(&v[0], g)?, windows)?.into_dyn()))
    }

    /// Each channel `c` of every sample times `scale[c]` (batch norm's gradient).
    fn channel_scale_batch(&self, g: &Tensor<T>, scale: &Tensor<T>) -> Result<Tensor<T>> {
        let scale = view_as::<T, Ix1>(self.name(), scale, "per-channel scale")?;
        per_sample_n(self.name(), &[g], |v| {
            if v[0].ndim() == 0 || v[0].shape()[0] != scale.len() {
                return Err(RspError::shape("channel-wise scale input", format!("N×{}×…", scale.len()), g.shape()));
            }
            Ok(rules::channel_scale(v[0].view(), scale.view()))
        })
    }

    // The primitives the fused rules are composed from by default
    // ([`composed`]): convolutions with one weight per sample, and the
    // per-sample counts and shifts of the sectional rule and RAP.

    /// [`Backend::conv2d_weight_grad`] of every sample: `N×O×C×kh×kw` for
    /// `x` of `N×C×H×W` and the upstream gradient `r` of `N×O×Ho×Wo`.
    fn conv2d_weight_grad_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        geom: &ConvGeometry,
        kernel_hw: (usize, usize),
    ) -> Result<Tensor<T>> {
        per_sample_n(self.name(), &[x, r], |v| {
            Ok(self.conv2d_weight_grad(chw(&v[0], x)?, chw(&v[1], r)?, geom, kernel_hw)?.into_dyn())
        })
    }

    /// Every sample `n` of `x` (`N×C×H×W`) convolved with its own weight
    /// `w[n]` (`w` of `N×O×C×kh×kw`, as [`Backend::conv2d_weight_grad_batch`]
    /// makes it): `N×O×Ho×Wo`.
    fn conv2d_sample_weights_batch(&self, x: &Tensor<T>, w: &Tensor<T>, geom: &ConvGeometry) -> Result<Tensor<T>> {
        per_sample_n(self.name(), &[x, w], |v| Ok(self.conv2d(chw(&v[0], x)?, oihw(&v[1], w)?, geom)?.into_dyn()))
    }

    /// [`Backend::conv2d_input_adjoint`] of every sample `n` of `s` with its
    /// own weight `w[n]` (`N×O×C×kh×kw`): `N×C×H×W`, `(H, W) = input_hw`.
    fn conv2d_input_adjoint_sample_weights_batch(
        &self,
        s: &Tensor<T>,
        w: &Tensor<T>,
        geom: &ConvGeometry,
        input_hw: (usize, usize),
    ) -> Result<Tensor<T>> {
        per_sample_n(self.name(), &[s, w], |v| {
            Ok(self.conv2d_input_adjoint(chw(&v[0], s)?, oihw(&v[1], w)?, geom, input_hw)?.into_dyn())
        })
    }

    /// The number of nonzero entries of each sample of `t`, as an `N` tensor.
    fn nonzero_counts_batch(&self, t: &Tensor<T>) -> Result<Tensor<T>> {
        let counts: Vec<T> = host_samples(self.name(), t)?
            .iter()
            .map(|s| T::of(s.iter().filter(|&&v| v != T::zero()).count() as f64))
            .collect();
        Ok(host_tensor(ndarray::Array1::from(counts).into_dyn()))
    }

    /// `factor · c − shifts[n]` at the nonzero entries of each sample `n` of
    /// `c`, zeros kept: the sectional rule's doubling and shift (`factor` 2)
    /// and RAP's `shift_rel` (`factor` 1). `shifts` is an `N` tensor.
    fn shift_nonzero_batch(&self, c: &Tensor<T>, factor: T, shifts: &Tensor<T>) -> Result<Tensor<T>> {
        let n = c.shape().first().copied().unwrap_or(0);
        if shifts.shape() != [n] {
            return Err(RspError::shape("shift per sample", format!("[{n}]"), shifts.shape()));
        }
        // Read per sample: an `N` tensor may be kept whole or per sample.
        let shifts = host_samples(self.name(), shifts)?;
        let samples = host_samples(self.name(), c)?;
        let out = map_samples(n, |i| {
            let shift = shifts[i].first().copied().unwrap_or_else(T::zero);
            Ok(samples[i].mapv(|v| if v != T::zero() { factor * v - shift } else { v }))
        })?;
        host_tensor_samples(out)
    }

    // RSP's rules and start, whole batches (each the per-sample kernel of
    // `rules.rs`, `pooling.rs` or `start.rs` by default).

    /// The sectional rule (both sections, the doubling and the shift) of
    /// every sample. A fused operation: by default composed from the
    /// primitives ([`composed::sectional_rule_batch`]); the host backends
    /// run their per-sample kernel instead, a device its own fused kernels.
    fn sectional_rule_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        geom: &ConvGeometry,
        kernel_hw: (usize, usize),
    ) -> Result<Tensor<T>> {
        composed::sectional_rule_batch(self, x, r, geom, kernel_hw)
    }

    /// The z^B rule (the input layer's) of every sample, with each sample's own bounds.
    fn zb_rule_batch(&self, x: &Tensor<T>, r: &Tensor<T>, w: &Tensor<T>, geom: &ConvGeometry) -> Result<Tensor<T>> {
        let w = view_as::<T, Ix4>(self.name(), w, "convolution weight")?;
        per_sample_n(self.name(), &[x, r], |v| {
            Ok(rules::zb_rule(self, chw(&v[0], x)?, chw(&v[1], r)?, w.view(), geom)?.into_dyn())
        })
    }

    /// [`Backend::max_pool_rule`] of every sample. A fused operation: by
    /// default composed from the primitives ([`composed::max_pool_rule_batch`]).
    fn max_pool_rule_batch(&self, x: &Tensor<T>, r: &Tensor<T>, windows: &PoolWindows) -> Result<Tensor<T>> {
        composed::max_pool_rule_batch(self, x, r, windows)
    }

    /// The average-pooling RSP rule of every sample.
    fn avg_pool_rule_batch(&self, x: &Tensor<T>, r: &Tensor<T>, windows: &PoolWindows) -> Result<Tensor<T>> {
        per_sample_n(self.name(), &[x, r], |v| {
            Ok(pooling::avg_pool_rule(self, chw(&v[0], x)?, chw(&v[1], r)?, windows)?.into_dyn())
        })
    }

    /// The batch-norm RSP rule of every sample, with the rule's per-channel
    /// weight `w` and shift `beta`.
    fn batch_norm_rule_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        w: &Tensor<T>,
        beta: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        let w = view_as::<T, Ix1>(self.name(), w, "batch-norm rule weight")?;
        let beta = view_as::<T, Ix1>(self.name(), beta, "batch-norm shift")?;
        per_sample_n(self.name(), &[x, r], |v| {
            Ok(rules::batch_norm_rule(chw(&v[0], x)?, chw(&v[1], r)?, w.view(), beta.view()).into_dyn())
        })
    }

    /// The residual sum's RSP rule: the shares of `a` and `b` in `r`. A
    /// fused operation: by default composed from the primitives
    /// ([`composed::add_rule_batch`]).
    fn add_rule_batch(&self, a: &Tensor<T>, b: &Tensor<T>, r: &Tensor<T>) -> Result<(Tensor<T>, Tensor<T>)> {
        composed::add_rule_batch(self, a, b, r)
    }

    // RAP's rules, whole batches (the host backends run the per-sample
    // kernels of `rap.rs`); its other rules are the operations above.

    /// RAP's rule of a hidden convolution with weight `w` (`O×C×kh×kw`) for
    /// every sample of `x` (`N×C×H×W`) and the relevance `r` at its output:
    /// the released `pos_prop` on the positive inputs and, in a sample that
    /// has any, on the negative ones, each followed by `shift_rel`, summed. A
    /// linear layer is a 1×1 convolution on a 1×1 map with
    /// [`RapFlavour::Linear`]. See `docs/method-rap.md`. A fused operation:
    /// by default composed from the primitives
    /// ([`composed::rap_relative_rule_batch`]).
    fn rap_relative_rule_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        w: &Tensor<T>,
        geom: &ConvGeometry,
        flavour: RapFlavour,
    ) -> Result<Tensor<T>> {
        composed::rap_relative_rule_batch(self, x, r, w, geom, flavour)
    }

    /// RAP's first propagation (the released `first_prop` and
    /// `redistribute`) at the linear layer `x·wᵀ + bias` that produces the
    /// logits, for every sample of `x` (`N×I`) and the relevance `r` (`N×O`)
    /// at its output: `N×I`. A fused operation: by default composed from the
    /// primitives ([`composed::rap_first_propagation_batch`]).
    fn rap_first_propagation_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        w: &Tensor<T>,
        bias: Option<&Tensor<T>>,
    ) -> Result<Tensor<T>> {
        composed::rap_first_propagation_batch(self, x, r, w, bias)
    }

    /// `f` of each sample of `inputs` (tensors of one batch size), run on the
    /// host: `f` returns `outputs` arrays per sample, which become `outputs`
    /// tensors. The rules given only as host rules (a user's own
    /// [`Rules`](crate::attribution::Rules) without tensor rules) run
    /// through it. The host
    /// backends read their tensors in place (no copy); for any other backend
    /// this default downloads the inputs and uploads the results: correct on
    /// every backend, fast only on the host.
    fn map_on_host(&self, inputs: &[&Tensor<T>], outputs: usize, f: &HostMap<'_, T>) -> Result<Vec<Tensor<T>>> {
        let n = inputs.first().and_then(|t| t.shape().first()).copied().unwrap_or(0);
        if n == 0 || inputs.iter().any(|t| t.shape().first() != Some(&n)) {
            let shape = inputs.first().map(|t| t.shape().to_vec()).unwrap_or_default();
            return Err(RspError::shape("batch", format!("{n} samples in every operand (at least one)"), &shape));
        }
        let in_place: Option<Vec<Vec<ArrayViewD<T>>>> =
            inputs.iter().map(|t| host_samples(self.name(), t).ok()).collect();
        let on_host = in_place.is_some();
        let downloaded: Vec<ArrayD<T>> =
            if on_host { Vec::new() } else { inputs.iter().map(|t| self.download(t)).collect::<Result<_>>()? };
        let views = in_place.unwrap_or_else(|| downloaded.iter().map(|d| d.outer_iter().collect()).collect());
        let results = (0..n)
            .into_par_iter()
            .map(|i| {
                let samples: Vec<ArrayViewD<T>> = views.iter().map(|v| v[i].view()).collect();
                let r = f(&samples)?;
                if r.len() != outputs {
                    return Err(RspError::InvalidArgument(format!(
                        "a host map returned {} results for {outputs}",
                        r.len()
                    )));
                }
                Ok(r)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut per_output: Vec<Vec<ArrayD<T>>> = (0..outputs).map(|_| Vec::with_capacity(n)).collect();
        for sample in results {
            for (o, a) in sample.into_iter().enumerate() {
                per_output[o].push(a);
            }
        }
        per_output
            .into_iter()
            .map(
                |samples| {
                    if on_host {
                        host_tensor_samples(samples)
                    } else {
                        self.upload(stack_samples(samples)?.view())
                    }
                },
            )
            .collect()
    }

    /// Grad-CAM's `A ⊙ α` of every sample: the activation `a` with each
    /// channel scaled by the spatial mean of the gradient `g` there.
    fn weighted_activation_batch(&self, a: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
        per_sample_n(
            self.name(),
            &[a, g],
            |v| Ok(start::weighted_activation(chw(&v[0], a)?, chw(&v[1], g)?).into_dyn()),
        )
    }

    /// RSP's comparative start of every sample from the start layer's
    /// activation `a` (`N×C×H×W`) and the class gradients `grads` there: the
    /// rows of `grads` come in `groups` of consecutive rows, one group per
    /// sample, the target's gradient first and then each hostile class's
    /// (a group of one is the single-class start).
    fn comparative_start_batch(&self, a: &Tensor<T>, grads: &Tensor<T>, groups: &[usize]) -> Result<Tensor<T>> {
        let (a_samples, g_rows) = (host_samples(self.name(), a)?, host_samples(self.name(), grads)?);
        let offsets = group_offsets(groups, a_samples.len(), g_rows.len(), grads)?;
        let out = map_samples(a_samples.len(), |i| {
            let rows = &g_rows[offsets[i]..offsets[i] + groups[i]];
            let target = chw(&rows[0], grads)?;
            let hostile = rows[1..].iter().map(|g| chw(g, grads)).collect::<Result<Vec<_>>>()?;
            Ok(start::comparative_start(chw(&a_samples[i], a)?, target, &hostile)?.into_dyn())
        })?;
        host_tensor_samples(out)
    }

    /// The samples `rows` of `t`, in that order (a sample may repeat): a
    /// `rows.len()×…` tensor. The comparative start's class gradients read
    /// each sample's activations once per class.
    fn gather_samples(&self, t: &Tensor<T>, rows: &[usize]) -> Result<Tensor<T>> {
        let samples = host_samples(self.name(), t)?;
        let out = rows
            .iter()
            .map(|&r| {
                samples.get(r).map(|s| s.to_owned()).ok_or_else(|| {
                    RspError::InvalidArgument(format!("sample {r} gathered from a batch of {}", samples.len()))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        host_tensor_samples(out)
    }

    /// [`Backend::linear_adjoint_batch`] of rows that come in `groups` of
    /// consecutive rows sharing one sample (the gradients of several classes
    /// of one sample): each group is one matrix product `wᵀ·G`, its rows the
    /// columns of `G`, which reads the weights once per group instead of once
    /// per row.
    fn linear_adjoint_grouped(&self, g: &Tensor<T>, w: &Tensor<T>, groups: &[usize]) -> Result<Tensor<T>> {
        let w = view_as::<T, Ix2>(self.name(), w, "linear weight")?;
        let rows = host_samples(self.name(), g)?;
        let offsets = group_offsets(groups, groups.len(), rows.len(), g)?;
        let parts = map_samples(groups.len(), |i| {
            let group = &rows[offsets[i]..offsets[i] + groups[i]];
            let mut columns = Array2::zeros((w.nrows(), group.len()));
            for (mut column, row) in columns.axis_iter_mut(Axis(1)).zip(group) {
                let row = row
                    .view()
                    .into_shape_with_order(w.nrows())
                    .map_err(|_| RspError::shape("linear gradient", format!("N×{}", w.nrows()), g.shape()))?;
                column.assign(&row);
            }
            let back = self.matmul(w.t(), columns.view())?;
            Ok(back.axis_iter(Axis(1)).map(|c| c.to_owned().into_dyn()).collect::<Vec<_>>())
        })?;
        host_tensor_samples(parts.into_iter().flatten().collect())
    }

    /// RSP's single-class start of every sample from the start layer's
    /// activation `a` and the target's gradient `g` there.
    fn single_class_start_batch(&self, a: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
        per_sample_n(self.name(), &[a, g], |v| Ok(start::single_class_start(chw(&v[0], a)?, chw(&v[1], g)?).into_dyn()))
    }

    /// The flat index of the first non-finite element, if any (a scalar
    /// result: the forward pass checks every node's output with it).
    fn first_non_finite(&self, t: &Tensor<T>) -> Result<Option<usize>> {
        let is_bad = |x: &T| !x.is_finite();
        let mut offset = 0;
        for v in host_samples(self.name(), t)? {
            let found = match v.as_slice() {
                Some(slice) => first_non_finite_in(slice),
                None => v.iter().position(is_bad),
            };
            if let Some(i) = found {
                return Ok(Some(offset + i));
            }
            offset += v.len();
        }
        Ok(None)
    }
}

/// A host backend's tensor viewed with the dimensionality `D`, or a shape error naming `what`.
fn view_as<'t, T: Float, D: Dimension>(
    backend: &str,
    t: &'t Tensor<T>,
    what: &str,
) -> Result<ndarray::ArrayView<'t, T, D>> {
    let v = host_view(backend, t)?;
    let shape = v.shape().to_vec();
    v.into_dimensionality::<D>().map_err(|_| RspError::shape(what, format!("rank {}", D::NDIM.unwrap_or(0)), &shape))
}

/// A function of one sample's views returning its results
/// ([`Backend::map_on_host`]).
pub type HostMap<'f, T> = dyn Fn(&[ArrayViewD<T>]) -> Result<Vec<ArrayD<T>>> + Sync + 'f;

/// The first row of each group of `groups` (consecutive rows, one group per
/// sample of a batch of `samples`), checked against the `rows` of `t`.
fn group_offsets<T: Float>(groups: &[usize], samples: usize, rows: usize, t: &Tensor<T>) -> Result<Vec<usize>> {
    let total: usize = groups.iter().sum();
    if groups.len() != samples || total != rows || groups.contains(&0) {
        return Err(RspError::shape(
            "rows grouped by sample",
            format!("{samples} non-empty groups of {total} rows in all"),
            t.shape(),
        ));
    }
    Ok(groups.iter().scan(0, |next, &k| Some(std::mem::replace(next, *next + k))).collect())
}

/// `f` of every sample (the first axis) of a host backend's tensor, stacked
/// into one tensor; samples run in parallel as [`map_samples`] runs them.
fn per_sample<T: Float>(
    backend: &str,
    x: &Tensor<T>,
    f: impl Fn(ArrayViewD<T>) -> Result<ArrayD<T>> + Sync,
) -> Result<Tensor<T>> {
    per_sample_n(backend, &[x], |v| f(v[0].view()))
}

/// Samples of equal shapes stacked along a new first axis.
pub(crate) fn stack_samples<T: Float>(mut samples: Vec<ArrayD<T>>) -> Result<ArrayD<T>> {
    if samples.len() == 1 {
        // One sample: a new axis, no copy.
        return Ok(samples.pop().expect("one sample").insert_axis(Axis(0)));
    }
    let sample_shape = samples.first().map(|s| s.shape().to_vec()).unwrap_or_default();
    let mut data = Vec::with_capacity(samples.len() * samples.first().map_or(0, |s| s.len()));
    for s in &samples {
        if s.shape() != sample_shape.as_slice() {
            return Err(RspError::shape("sample of a batch", format!("{sample_shape:?}"), s.shape()));
        }
        // Element-wise iteration over a dynamic-rank array is slow: copy slices.
        match s.as_slice_memory_order().filter(|_| s.is_standard_layout()) {
            Some(slice) => data.extend_from_slice(slice),
            None => data.extend(s.iter().copied()),
        }
    }
    let mut shape = vec![samples.len()];
    shape.extend(sample_shape);
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), data).expect("counted elements"))
}

/// `f` of every sample index of a batch of `n`, in parallel but at most as many
/// at once as the rayon pool has threads (what the memory estimate assumes:
/// rayon's work stealing could otherwise start further samples inside a waiting
/// one). Each sample's result does not depend on the scheduling.
pub(crate) fn map_samples<R: Send>(n: usize, f: impl Fn(usize) -> Result<R> + Sync) -> Result<Vec<R>> {
    let chunk = rayon::current_num_threads().max(1);
    let mut out = Vec::with_capacity(n);
    for first in (0..n).step_by(chunk) {
        let part: Vec<R> = (first..(first + chunk).min(n)).into_par_iter().map(&f).collect::<Result<_>>()?;
        out.extend(part);
    }
    Ok(out)
}

/// `f` of every element of a host backend's tensor, kept as it is stored:
/// whole (an upload, a parameter) or per sample.
fn host_elementwise<T: Float>(backend: &str, t: &Tensor<T>, f: impl Fn(T) -> T + Sync + Send) -> Result<Tensor<T>> {
    match host_view(backend, t) {
        Ok(whole) => {
            let mut out = whole.to_owned();
            out.par_mapv_inplace(&f);
            Ok(host_tensor(out))
        }
        Err(_) => per_sample_n(backend, &[t], |v| Ok(v[0].mapv(&f))),
    }
}

/// One sample's view as `C×H×W`, or a shape error naming the batch tensor's shape.
fn chw<'v, T: Float>(v: &'v ArrayViewD<'_, T>, batch: &Tensor<T>) -> Result<ArrayView3<'v, T>> {
    v.view().into_dimensionality::<Ix3>().map_err(|_| RspError::shape("a batch tensor", "N×C×H×W", batch.shape()))
}

/// The sectional rule of every sample by the per-sample kernel (the host
/// backends' [`Backend::sectional_rule_batch`]: the bits of a layer's own rule).
pub(crate) fn host_sectional_rule_batch<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    x: &Tensor<T>,
    r: &Tensor<T>,
    geom: &ConvGeometry,
    kernel_hw: (usize, usize),
) -> Result<Tensor<T>> {
    per_sample_n(backend.name(), &[x, r], |v| {
        Ok(rules::sectional_rule(backend, chw(&v[0], x)?, chw(&v[1], r)?, geom, kernel_hw)?.into_dyn())
    })
}

/// [`Backend::max_pool_rule`] of every sample (the host backends' batch form).
pub(crate) fn host_max_pool_rule_batch<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    x: &Tensor<T>,
    r: &Tensor<T>,
    windows: &PoolWindows,
) -> Result<Tensor<T>> {
    per_sample_n(backend.name(), &[x, r], |v| {
        Ok(backend.max_pool_rule(chw(&v[0], x)?, chw(&v[1], r)?, windows)?.into_dyn())
    })
}

/// The residual sum's rule of every sample (the host backends' batch form).
pub(crate) fn host_add_rule_batch<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    a: &Tensor<T>,
    b: &Tensor<T>,
    r: &Tensor<T>,
) -> Result<(Tensor<T>, Tensor<T>)> {
    if a.shape() != r.shape() || b.shape() != r.shape() {
        return Err(RspError::shape("summands of a residual sum", format!("{:?}", r.shape()), a.shape()));
    }
    let name = backend.name();
    let (av, bv, rv) = (host_samples(name, a)?, host_samples(name, b)?, host_samples(name, r)?);
    let shares = map_samples(rv.len(), |i| Ok(rules::add_rule(av[i].view(), bv[i].view(), rv[i].view())))?;
    let (ra, rb): (Vec<_>, Vec<_>) = shares.into_iter().unzip();
    Ok((host_tensor_samples(ra)?, host_tensor_samples(rb)?))
}

/// RAP's relative rule of every sample by the per-sample kernel (the host
/// backends' [`Backend::rap_relative_rule_batch`]: the bits of RAP's host rule).
pub(crate) fn host_rap_relative_rule_batch<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    x: &Tensor<T>,
    r: &Tensor<T>,
    w: &Tensor<T>,
    geom: &ConvGeometry,
    flavour: RapFlavour,
) -> Result<Tensor<T>> {
    let w = view_as::<T, Ix4>(backend.name(), w, "convolution weight")?;
    per_sample_n(backend.name(), &[x, r], |v| {
        Ok(rap::relative_rule(backend, chw(&v[0], x)?, chw(&v[1], r)?, w.view(), geom, flavour)?.into_dyn())
    })
}

/// RAP's first propagation of every sample by the per-sample kernel (the
/// host backends' [`Backend::rap_first_propagation_batch`]).
pub(crate) fn host_rap_first_propagation_batch<T: Float, B: Backend<T> + ?Sized>(
    backend: &B,
    x: &Tensor<T>,
    r: &Tensor<T>,
    w: &Tensor<T>,
    bias: Option<&Tensor<T>>,
) -> Result<Tensor<T>> {
    let w = view_as::<T, Ix2>(backend.name(), w, "linear weight")?;
    let bias = bias.map(|b| view_as::<T, Ix1>(backend.name(), b, "linear bias")).transpose()?;
    per_sample_n(backend.name(), &[x, r], |v| {
        let rin = rap::first_propagation(backend, vector(&v[0], x)?, vector(&v[1], r)?, w.view(), bias)?;
        Ok(rin.into_dyn())
    })
}

/// One sample's `O×C×kh×kw` weight of a batch of per-sample weights.
fn oihw<'v, T: Float>(v: &'v ArrayViewD<'_, T>, batch: &Tensor<T>) -> Result<ArrayView4<'v, T>> {
    v.view()
        .into_dimensionality::<Ix4>()
        .map_err(|_| RspError::shape("per-sample weights", "N×O×C×kh×kw", batch.shape()))
}

/// One sample of a batch of vectors (`N×I`) as a vector.
fn vector<'v, T: Float>(v: &'v ArrayViewD<'_, T>, batch: &Tensor<T>) -> Result<ArrayView1<'v, T>> {
    v.view().into_dimensionality::<Ix1>().map_err(|_| RspError::shape("a batch of vectors", "N×I", batch.shape()))
}

/// `f` of the samples `n` of every tensor in `inputs` (same batch size),
/// stacked into one tensor; samples run in parallel as [`map_samples`] runs them.
fn per_sample_n<T: Float>(
    backend: &str,
    inputs: &[&Tensor<T>],
    f: impl Fn(&[ArrayViewD<T>]) -> Result<ArrayD<T>> + Sync,
) -> Result<Tensor<T>> {
    let n = inputs[0].shape().first().copied().unwrap_or(0);
    if n == 0 || inputs.iter().any(|t| t.shape().first() != Some(&n)) {
        return Err(RspError::shape(
            "batch",
            format!("{n} samples in every operand (at least one)"),
            inputs[0].shape(),
        ));
    }
    let views = inputs.iter().map(|t| host_samples(backend, t)).collect::<Result<Vec<_>>>()?;
    // Every sample of the batch at once: the caller sized the batch to the
    // memory budget (an attribution passes `samples_at_once` samples).
    let outputs = (0..n)
        .into_par_iter()
        .map(|i| {
            let samples: Vec<ArrayViewD<T>> = views.iter().map(|v| v[i].view()).collect();
            f(&samples)
        })
        .collect::<Result<Vec<_>>>()?;
    // Kept per sample: stacking would copy every output once more.
    host_tensor_samples(outputs)
}

/// The index of the first non-finite value of `values`: blocks are scanned
/// without an early exit (a loop the compiler vectorises), and only the block
/// that has one is searched element by element.
fn first_non_finite_in<T: Float>(values: &[T]) -> Option<usize> {
    const BLOCK: usize = 4096;
    values.chunks(BLOCK).enumerate().find_map(|(k, block)| {
        let any_bad = block.iter().fold(false, |bad, v| bad | !v.is_finite());
        if any_bad {
            block.iter().position(|v| !v.is_finite()).map(|i| k * BLOCK + i)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod finite_tests {
    use super::first_non_finite_in;

    #[test]
    fn finds_the_first_non_finite_value_in_any_block() {
        let mut v = vec![1.0f32; 10_000];
        assert_eq!(first_non_finite_in(&v), None);
        v[9_999] = f32::NEG_INFINITY;
        assert_eq!(first_non_finite_in(&v), Some(9_999));
        v[5_000] = f32::NAN;
        v[5_001] = f32::INFINITY;
        assert_eq!(first_non_finite_in(&v), Some(5_000));
        v[0] = f32::INFINITY;
        assert_eq!(first_non_finite_in(&v), Some(0));
        assert_eq!(first_non_finite_in(&[f64::MAX, -f64::MAX, f64::MIN_POSITIVE]), None);
        assert_eq!(first_non_finite_in::<f64>(&[]), None);
    }
}

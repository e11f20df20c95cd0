//! The reference backend: direct loops that read like the formulas. It is the
//! oracle the tests compare the fast backend against; do not optimise it.

use super::{Backend, ConvGeometry, PoolWindows, RapFlavour, Tensor};
use crate::error::Result;
use crate::float::Float;
use ndarray::{Array2, Array3, Array4, ArrayView2, ArrayView3, ArrayView4};

/// Direct-loop kernels: slow and obviously correct.
///
/// ```
/// use rsp::backend::{Backend, ReferenceBackend};
/// let a = ndarray::arr2(&[[1.0, 2.0], [3.0, 4.0]]);
/// let b = ndarray::arr2(&[[5.0], [6.0]]);
/// assert_eq!(Backend::<f64>::matmul(&ReferenceBackend, a.view(), b.view()).unwrap(), ndarray::arr2(&[[17.0], [39.0]]));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceBackend;

/// The input position read by output `p` and kernel offset `u` along one axis,
/// or `None` when it falls in the zero padding.
#[inline]
fn source(p: usize, u: usize, stride: usize, pad_before: usize, n: usize) -> Option<usize> {
    (p * stride + u).checked_sub(pad_before).filter(|&i| i < n)
}

impl<T: Float> Backend<T> for ReferenceBackend {
    fn name(&self) -> &'static str {
        "reference"
    }

    // The fused rules by the per-sample kernels (faster here than the
    // composition of the trait's defaults, and the bits of a layer's own rule).
    fn sectional_rule_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        geom: &ConvGeometry,
        kernel_hw: (usize, usize),
    ) -> Result<Tensor<T>> {
        super::host_sectional_rule_batch(self, x, r, geom, kernel_hw)
    }

    fn max_pool_rule_batch(&self, x: &Tensor<T>, r: &Tensor<T>, windows: &PoolWindows) -> Result<Tensor<T>> {
        super::host_max_pool_rule_batch(self, x, r, windows)
    }

    fn add_rule_batch(&self, a: &Tensor<T>, b: &Tensor<T>, r: &Tensor<T>) -> Result<(Tensor<T>, Tensor<T>)> {
        super::host_add_rule_batch(self, a, b, r)
    }

    fn rap_relative_rule_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        w: &Tensor<T>,
        geom: &ConvGeometry,
        flavour: RapFlavour,
    ) -> Result<Tensor<T>> {
        super::host_rap_relative_rule_batch(self, x, r, w, geom, flavour)
    }

    fn rap_first_propagation_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        w: &Tensor<T>,
        bias: Option<&Tensor<T>>,
    ) -> Result<Tensor<T>> {
        super::host_rap_first_propagation_batch(self, x, r, w, bias)
    }

    fn conv2d(&self, x: ArrayView3<T>, w: ArrayView4<T>, g: &ConvGeometry) -> Result<Array3<T>> {
        let (c, h, wd) = x.dim();
        let (o, _, kh, kw) = w.dim();
        let (oh, ow) = g.output_size((h, wd), (kh, kw)).expect("validated by the layer");
        Ok(Array3::from_shape_fn((o, oh, ow), |(oc, p, q)| {
            let mut acc = T::zero();
            for ic in 0..c {
                for u in 0..kh {
                    let Some(i) = source(p, u, g.stride[0], g.padding[0], h) else { continue };
                    for v in 0..kw {
                        let Some(j) = source(q, v, g.stride[1], g.padding[1], wd) else { continue };
                        acc += w[[oc, ic, u, v]] * x[[ic, i, j]];
                    }
                }
            }
            acc
        }))
    }

    fn conv2d_input_adjoint(
        &self,
        s: ArrayView3<T>,
        w: ArrayView4<T>,
        g: &ConvGeometry,
        input_hw: (usize, usize),
    ) -> Result<Array3<T>> {
        let (o, oh, ow) = s.dim();
        let (_, c, kh, kw) = w.dim();
        let (h, wd) = input_hw;
        let mut out = Array3::zeros((c, h, wd));
        for oc in 0..o {
            for p in 0..oh {
                for q in 0..ow {
                    let sv = s[[oc, p, q]];
                    for ic in 0..c {
                        for u in 0..kh {
                            let Some(i) = source(p, u, g.stride[0], g.padding[0], h) else { continue };
                            for v in 0..kw {
                                let Some(j) = source(q, v, g.stride[1], g.padding[1], wd) else { continue };
                                out[[ic, i, j]] += w[[oc, ic, u, v]] * sv;
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn conv2d_weight_grad(
        &self,
        x: ArrayView3<T>,
        r: ArrayView3<T>,
        g: &ConvGeometry,
        kernel_hw: (usize, usize),
    ) -> Result<Array4<T>> {
        let (c, h, wd) = x.dim();
        let (o, oh, ow) = r.dim();
        let (kh, kw) = kernel_hw;
        Ok(Array4::from_shape_fn((o, c, kh, kw), |(oc, ic, u, v)| {
            let mut acc = T::zero();
            for p in 0..oh {
                let Some(i) = source(p, u, g.stride[0], g.padding[0], h) else { continue };
                for q in 0..ow {
                    let Some(j) = source(q, v, g.stride[1], g.padding[1], wd) else { continue };
                    acc += r[[oc, p, q]] * x[[ic, i, j]];
                }
            }
            acc
        }))
    }

    fn matmul(&self, a: ArrayView2<T>, b: ArrayView2<T>) -> Result<Array2<T>> {
        let (m, k) = a.dim();
        let n = b.dim().1;
        Ok(Array2::from_shape_fn((m, n), |(i, j)| (0..k).fold(T::zero(), |acc, t| acc + a[[i, t]] * b[[t, j]])))
    }
}

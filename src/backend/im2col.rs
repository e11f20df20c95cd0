//! im2col / col2im: with the GEMM of `matmul.rs`, the building blocks of [`super::CpuBackend`].

use super::ConvGeometry;
use crate::float::Float;
use ndarray::parallel::prelude::*;
use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3, Axis};

/// Unfolds `x` (C×H×W) into the `(C·kh·kw) × (Ho·Wo)` matrix whose column `p`
/// holds the (zero-padded) receptive field of output position `p`.
pub(crate) fn im2col<T: Float>(
    x: ArrayView3<T>,
    kernel_hw: (usize, usize),
    g: &ConvGeometry,
    out_hw: (usize, usize),
) -> Array2<T> {
    let (c, h, w) = x.dim();
    let (kh, kw) = kernel_hw;
    let (oh, ow) = out_hw;
    let mut cols = Array2::zeros((c * kh * kw, oh * ow));
    cols.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(row, mut line)| {
            let (ic, u, v) = (row / (kh * kw), (row / kw) % kh, row % kw);
            let line = line
                .as_slice_mut()
                .expect("rows of a fresh matrix are contiguous");
            for p in 0..oh {
                let Some(i) = (p * g.stride[0] + u)
                    .checked_sub(g.padding[0])
                    .filter(|&i| i < h)
                else {
                    continue;
                };
                let src = x.slice(s![ic, i, ..]);
                let dst = &mut line[p * ow..(p + 1) * ow];
                for (q, d) in dst.iter_mut().enumerate() {
                    if let Some(j) = (q * g.stride[1] + v)
                        .checked_sub(g.padding[1])
                        .filter(|&j| j < w)
                    {
                        *d = src[j];
                    }
                }
            }
        });
    cols
}

/// The adjoint of [`im2col`]: sums every column entry back onto the input
/// position it was read from. Parallel over channels, each channel summed in a
/// fixed order, so the result does not depend on the number of threads.
pub(crate) fn col2im<T: Float>(
    cols: ArrayView2<T>,
    channels: usize,
    input_hw: (usize, usize),
    kernel_hw: (usize, usize),
    g: &ConvGeometry,
    out_hw: (usize, usize),
) -> Array3<T> {
    let (h, w) = input_hw;
    let (kh, kw) = kernel_hw;
    let (oh, ow) = out_hw;
    let mut out = Array3::zeros((channels, h, w));
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(ic, mut plane)| {
            for u in 0..kh {
                for v in 0..kw {
                    let line = cols.row(ic * kh * kw + u * kw + v);
                    for p in 0..oh {
                        let Some(i) = (p * g.stride[0] + u)
                            .checked_sub(g.padding[0])
                            .filter(|&i| i < h)
                        else {
                            continue;
                        };
                        for q in 0..ow {
                            if let Some(j) = (q * g.stride[1] + v)
                                .checked_sub(g.padding[1])
                                .filter(|&j| j < w)
                            {
                                plane[[i, j]] += line[p * ow + q];
                            }
                        }
                    }
                }
            }
        });
    out
}

//! im2col / col2im: with the GEMM of `matmul.rs`, the building blocks of [`super::CpuBackend`].

use super::ConvGeometry;
use crate::float::Float;
use ndarray::parallel::prelude::*;
use ndarray::{s, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis};
use std::ops::Range;

/// Writes into `cols` (`(C·kh·kw) × (Ho·Wo)`, every entry overwritten) the
/// unfolded `x` (C×H×W): column `p` holds the zero-padded receptive field of
/// output position `p`.
pub(crate) fn im2col_into<T: Float>(
    x: ArrayView3<T>,
    kernel_hw: (usize, usize),
    g: &ConvGeometry,
    out_hw: (usize, usize),
    mut cols: ArrayViewMut2<T>,
) {
    let (c, kh, kw) = (x.dim().0, kernel_hw.0, kernel_hw.1);
    let positions = out_hw.0 * out_hw.1;
    assert_eq!(cols.dim(), (c * kh * kw, positions), "im2col: buffer shape");
    cols.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(row, mut line)| {
        let line = line.as_slice_mut().expect("rows of a standard-layout buffer are contiguous");
        unfold_row(x, kernel_hw, g, out_hw, row, 0..positions, line);
    });
}

/// The columns `positions` of [`im2col_into`]'s matrix, on the calling
/// thread: `cols` is `(C·kh·kw) × positions.len()`, every entry overwritten.
/// What a column block of a convolution's GEMM reads, unfolded just before
/// it is used (while it is in cache).
pub(crate) fn im2col_columns_into<T: Float>(
    x: ArrayView3<T>,
    kernel_hw: (usize, usize),
    g: &ConvGeometry,
    out_hw: (usize, usize),
    positions: Range<usize>,
    mut cols: ArrayViewMut2<T>,
) {
    let (c, kh, kw) = (x.dim().0, kernel_hw.0, kernel_hw.1);
    assert_eq!(cols.dim(), (c * kh * kw, positions.len()), "im2col: buffer shape");
    for (row, mut line) in cols.axis_iter_mut(Axis(0)).enumerate() {
        let line = line.as_slice_mut().expect("rows of a standard-layout buffer are contiguous");
        unfold_row(x, kernel_hw, g, out_hw, row, positions.clone(), line);
    }
}

/// Row `row` (input channel, kernel row, kernel column) of the unfolded `x`,
/// at the output positions `positions` (row-major over `out_hw`), into `line`.
fn unfold_row<T: Float>(
    x: ArrayView3<T>,
    (kh, kw): (usize, usize),
    g: &ConvGeometry,
    (_, ow): (usize, usize),
    row: usize,
    positions: Range<usize>,
    line: &mut [T],
) {
    let (_, h, w) = x.dim();
    let (ic, u, v) = (row / (kh * kw), (row / kw) % kh, row % kw);
    let contiguous = x.as_slice();
    // Output columns q whose input column j = q·sw + v − pl lies inside the input.
    let q_first = g.padding[1].saturating_sub(v).div_ceil(g.stride[1]);
    let q_end = ((w + g.padding[1]).saturating_sub(v)).div_ceil(g.stride[1]).min(ow);
    let mut position = positions.start;
    while position < positions.end {
        // The part of output row p in this range: columns a..b.
        let (p, a) = (position / ow, position % ow);
        let b = ow.min(a + (positions.end - position));
        let dst = &mut line[position - positions.start..position - positions.start + (b - a)];
        position += b - a;
        let Some(i) = (p * g.stride[0] + u).checked_sub(g.padding[0]).filter(|&i| i < h) else {
            dst.fill(T::zero());
            continue;
        };
        // Valid columns of this part: first..end (relative to the row).
        let (first, end) = (q_first.clamp(a, b), q_end.clamp(a, b).max(q_first.clamp(a, b)));
        dst[..first - a].fill(T::zero());
        if first < end {
            let j0 = first * g.stride[1] + v - g.padding[1];
            let part = &mut dst[first - a..end - a];
            // Input row `i` of channel `ic`: a plain slice where `x` is contiguous
            // (an ndarray slice per output row cost more than the copy on VGG16).
            match (g.stride[1], contiguous) {
                (1, Some(xs)) => part.copy_from_slice(&xs[(ic * h + i) * w + j0..][..part.len()]),
                _ => {
                    let src = x.slice(s![ic, i, ..]);
                    for (k, d) in part.iter_mut().enumerate() {
                        *d = src[j0 + k * g.stride[1]];
                    }
                }
            }
        }
        dst[end - a..].fill(T::zero());
    }
}

/// The adjoint of [`im2col_into`]: writes into `out` (C×H×W, overwritten) the
/// sum of every column entry on the input position it was read from, times
/// `scale` at that position if given. Parallel over channels, each channel
/// summed in a fixed order, so the result does not depend on the number of threads.
pub(crate) fn col2im_into<T: Float>(
    cols: ArrayView2<T>,
    kernel_hw: (usize, usize),
    g: &ConvGeometry,
    out_hw: (usize, usize),
    scale: Option<ArrayView3<T>>,
    mut out: ArrayViewMut3<T>,
) {
    let (_, h, w) = out.dim();
    let (kh, kw) = kernel_hw;
    let (oh, ow) = out_hw;
    out.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(ic, mut plane)| {
        plane.fill(T::zero());
        for u in 0..kh {
            for v in 0..kw {
                let line = cols.row(ic * kh * kw + u * kw + v);
                let line = line.as_slice().expect("standard layout");
                let q_first = g.padding[1].saturating_sub(v).div_ceil(g.stride[1]);
                let q_end = ((w + g.padding[1]).saturating_sub(v)).div_ceil(g.stride[1]).min(ow);
                if q_first >= q_end {
                    continue;
                }
                for p in 0..oh {
                    let Some(i) = (p * g.stride[0] + u).checked_sub(g.padding[0]).filter(|&i| i < h) else {
                        continue;
                    };
                    let mut row = plane.row_mut(i);
                    let j0 = q_first * g.stride[1] + v - g.padding[1];
                    let src = &line[p * ow + q_first..p * ow + q_end];
                    match (g.stride[1], row.as_slice_mut()) {
                        (1, Some(dst)) => {
                            for (d, &s) in dst[j0..j0 + src.len()].iter_mut().zip(src) {
                                *d += s;
                            }
                        }
                        (sw, _) => {
                            for (k, &s) in src.iter().enumerate() {
                                row[j0 + k * sw] += s;
                            }
                        }
                    }
                }
            }
        }
        if let Some(scale) = &scale {
            plane.zip_mut_with(&scale.index_axis(Axis(0), ic), |o, &x| *o *= x);
        }
    });
}

//! Pooling kernels shared by every backend (they are memory-bound and cheap
//! next to the convolutions, so one implementation serves all).

use crate::float::Float;
use ndarray::{Array3, ArrayView3, Zip};
use std::ops::Range;

/// The windows of a 2-D pooling: for each output row the input rows it reads,
/// for each output column the input columns (separable, clipped to the
/// unpadded input), and the divisor of an average.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolWindows {
    /// Input rows read by each output row (`rows.len()` = output height).
    pub rows: Vec<Range<usize>>,
    /// Input columns read by each output column.
    pub cols: Vec<Range<usize>>,
    /// The divisor of an average: `None` for the window's own size, or a fixed
    /// count (the full kernel area, when padding cells count as zeros).
    pub divisor: Option<usize>,
    /// Input height and width.
    pub input_hw: (usize, usize),
}

impl PoolWindows {
    /// Windows of a strided pooling with kernel `k`, stride `s` and padding
    /// `[top, left, bottom, right]`; output size rounded down. Padding cells
    /// are left out of the windows (they never win a max). `None` if the kernel
    /// does not fit, a window would be empty, or the kernel or stride exceeds
    /// [`MAX_SPATIAL`](crate::limits::MAX_SPATIAL).
    ///
    /// ```
    /// let w = rsp::backend::PoolWindows::strided((5, 5), (2, 2), (2, 2), [0; 4]).unwrap();
    /// assert_eq!(w.output_hw(), (2, 2));
    /// assert_eq!(w.rows[1], 2..4);
    /// ```
    pub fn strided(
        input_hw: (usize, usize),
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: [usize; 4],
    ) -> Option<Self> {
        let axis = |n: usize, k: usize, s: usize, before: usize, after: usize| -> Option<Vec<Range<usize>>> {
            if k == 0
                || s == 0
                || before >= k
                || after >= k
                || k > crate::limits::MAX_SPATIAL
                || s > crate::limits::MAX_SPATIAL
            {
                return None;
            }
            let padded = n + before + after;
            if padded < k {
                return None;
            }
            let out = (padded - k) / s + 1;
            (0..out)
                .map(|o| {
                    let start = (o * s).saturating_sub(before);
                    let end = (o * s + k).saturating_sub(before).min(n);
                    (start < end).then_some(start..end)
                })
                .collect()
        };
        Some(PoolWindows {
            rows: axis(input_hw.0, kernel.0, stride.0, padding[0], padding[2])?,
            cols: axis(input_hw.1, kernel.1, stride.1, padding[1], padding[3])?,
            divisor: None,
            input_hw,
        })
    }

    /// Windows of PyTorch's adaptive pooling: output `o` spans
    /// `floor(o·In/Out) .. ceil((o+1)·In/Out)`.
    ///
    /// ```
    /// let w = rsp::backend::PoolWindows::adaptive((5, 7), (2, 3)).unwrap();
    /// assert_eq!(w.rows, vec![0..3, 2..5]);
    /// assert_eq!(w.cols, vec![0..3, 2..5, 4..7]);
    /// ```
    pub fn adaptive(input_hw: (usize, usize), output_hw: (usize, usize)) -> Option<Self> {
        let axis = |n: usize, out: usize| -> Option<Vec<Range<usize>>> {
            if out == 0 || n == 0 || out > crate::limits::MAX_SPATIAL {
                return None;
            }
            Some((0..out).map(|o| (o * n / out)..((o + 1) * n).div_ceil(out)).collect())
        };
        Some(PoolWindows {
            rows: axis(input_hw.0, output_hw.0)?,
            cols: axis(input_hw.1, output_hw.1)?,
            divisor: None,
            input_hw,
        })
    }

    /// Output height and width.
    pub fn output_hw(&self) -> (usize, usize) {
        (self.rows.len(), self.cols.len())
    }

    fn divisor_of(&self, rows: &Range<usize>, cols: &Range<usize>) -> usize {
        self.divisor.unwrap_or(rows.len() * cols.len())
    }
}

// Every kernel runs in parallel over channels; each channel is computed in
// a fixed order, so the bits do not depend on the number of threads.

pub(crate) fn max_pool<T: Float>(x: ArrayView3<T>, win: &PoolWindows) -> (Array3<T>, Array3<u32>) {
    let (c, _, w_in) = x.dim();
    let (oh, ow) = win.output_hw();
    let mut out = Array3::zeros((c, oh, ow));
    let mut arg = Array3::zeros((c, oh, ow));
    Zip::from(out.outer_iter_mut()).and(arg.outer_iter_mut()).and(x.outer_iter()).par_for_each(
        |mut out, mut arg, plane| {
            for (i, rows) in win.rows.iter().enumerate() {
                for (j, cols) in win.cols.iter().enumerate() {
                    let mut best = T::neg_infinity();
                    let mut best_at = rows.start * w_in + cols.start;
                    // Row-major scan, strict `>`: ties go to the first maximal element.
                    for r in rows.clone() {
                        for q in cols.clone() {
                            let v = plane[[r, q]];
                            if v > best {
                                best = v;
                                best_at = r * w_in + q;
                            }
                        }
                    }
                    out[[i, j]] = best;
                    arg[[i, j]] = best_at as u32;
                }
            }
        },
    );
    (out, arg)
}

pub(crate) fn max_pool_adjoint<T: Float>(
    s: ArrayView3<T>,
    arg: ArrayView3<u32>,
    input_hw: (usize, usize),
) -> Array3<T> {
    let c = s.dim().0;
    let mut out = Array3::zeros((c, input_hw.0, input_hw.1));
    Zip::from(out.outer_iter_mut()).and(s.outer_iter()).and(arg.outer_iter()).par_for_each(|mut plane, s, arg| {
        let flat = plane.as_slice_mut().expect("fresh array is contiguous");
        for (&v, &at) in s.iter().zip(arg.iter()) {
            flat[at as usize] += v;
        }
    });
    out
}

pub(crate) fn avg_pool<T: Float>(x: ArrayView3<T>, win: &PoolWindows) -> Array3<T> {
    let c = x.dim().0;
    let (oh, ow) = win.output_hw();
    let mut out = Array3::zeros((c, oh, ow));
    Zip::from(out.outer_iter_mut()).and(x.outer_iter()).par_for_each(|mut out, plane| {
        for (i, rows) in win.rows.iter().enumerate() {
            for (j, cols) in win.cols.iter().enumerate() {
                let mut sum = T::zero();
                for r in rows.clone() {
                    for q in cols.clone() {
                        sum += plane[[r, q]];
                    }
                }
                out[[i, j]] = sum / T::of(win.divisor_of(rows, cols) as f64);
            }
        }
    });
    out
}

pub(crate) fn avg_pool_adjoint<T: Float>(s: ArrayView3<T>, win: &PoolWindows) -> Array3<T> {
    let c = s.dim().0;
    let mut out = Array3::zeros((c, win.input_hw.0, win.input_hw.1));
    Zip::from(out.outer_iter_mut()).and(s.outer_iter()).par_for_each(|mut plane, s| {
        for (i, rows) in win.rows.iter().enumerate() {
            for (j, cols) in win.cols.iter().enumerate() {
                let share = s[[i, j]] / T::of(win.divisor_of(rows, cols) as f64);
                for r in rows.clone() {
                    for q in cols.clone() {
                        plane[[r, q]] += share;
                    }
                }
            }
        }
    });
    out
}

//! Pooling kernels shared by every backend (they are memory-bound and cheap
//! next to the convolutions, so one implementation serves all).

use crate::error::Result;
use crate::float::{safe_div, Float};
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

    /// The input cells all windows of one channel read together (a cell read
    /// by two windows counts twice): the steps of one pooling scan.
    ///
    /// ```
    /// let w = rsp::backend::PoolWindows::strided((5, 5), (3, 3), (1, 1), [0; 4]).unwrap();
    /// assert_eq!(w.window_cells(), 9 * 9);
    /// ```
    pub fn window_cells(&self) -> u64 {
        let total = |ranges: &[Range<usize>]| ranges.iter().map(|r| r.len() as u64).fold(0u64, u64::saturating_add);
        total(&self.rows).saturating_mul(total(&self.cols))
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

pub(crate) fn max_pool_rule<T: Float>(x: ArrayView3<T>, r: ArrayView3<T>, win: &PoolWindows) -> Array3<T> {
    let (c, h, w) = x.dim();
    let eps = T::eps9();
    let mut out = Array3::zeros((c, h, w));
    Zip::from(out.outer_iter_mut()).and(x.outer_iter()).and(r.outer_iter()).par_for_each(|mut out, plane, r| {
        // Routed P ⊘ z and N ⊘ z, accumulated separately (overlapping windows
        // add up) in the same order as the composed formula.
        let mut routed_pos = vec![T::zero(); h * w];
        let mut routed_neg = vec![T::zero(); h * w];
        for (i, rows) in win.rows.iter().enumerate() {
            for (j, cols) in win.cols.iter().enumerate() {
                let mut best = T::neg_infinity();
                let mut best_at = rows.start * w + cols.start;
                for row in rows.clone() {
                    for q in cols.clone() {
                        let v = plane[[row, q]] + eps;
                        if v > best {
                            best = v;
                            best_at = row * w + q;
                        }
                    }
                }
                let rv = r[[i, j]];
                routed_pos[best_at] += crate::float::safe_div(rv.max(T::zero()), best);
                routed_neg[best_at] += crate::float::safe_div(rv.min(T::zero()), best);
            }
        }
        for ((o, &xv), (&p, &n)) in out.iter_mut().zip(plane.iter()).zip(routed_pos.iter().zip(&routed_neg)) {
            let xt = xv + eps;
            *o = xt * p + xt * n;
        }
    });
    out
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

// The RSP rule shared by max and average pooling:
// `x̃ = x + 1e-9`, `z = pool(x̃)`, with the signed parts `P = max(R,0)`, `N = min(R,0)`:
// `R_in = x̃ ⊙ poolᵀ(P ⊘ z) + x̃ ⊙ poolᵀ(N ⊘ z)` (the multiplier is `x̃`, not `x`).
// Max pooling has a fused kernel (`max_pool_rule` above); average pooling composes it.

/// `x + 1e-9`: the shifted input the pooling rules divide by.
pub(crate) fn shifted<T: Float>(x: ArrayView3<T>) -> Array3<T> {
    let eps = T::eps9();
    let mut out = x.to_owned();
    out.par_mapv_inplace(|v| v + eps);
    out
}

/// Applies the pooling rule given `x̃`, `z = pool(x̃)`, the output relevance
/// and the pool's adjoint.
pub(crate) fn pooling_rule<T: Float>(
    x_tilde: ArrayView3<T>,
    z: ArrayView3<T>,
    r: ArrayView3<T>,
    adjoint: impl Fn(ArrayView3<T>) -> Result<Array3<T>>,
) -> Result<Array3<T>> {
    let pos = Zip::from(&r).and(&z).par_map_collect(|&rv, &zv| safe_div(rv.max(T::zero()), zv));
    let neg = Zip::from(&r).and(&z).par_map_collect(|&rv, &zv| safe_div(rv.min(T::zero()), zv));
    let back_pos = adjoint(pos.view())?;
    let back_neg = adjoint(neg.view())?;
    Ok(Zip::from(&x_tilde).and(&back_pos).and(&back_neg).par_map_collect(|&xv, &p, &n| xv * p + xv * n))
}

/// The average-pooling RSP rule for one sample, composed as the formula reads.
pub(crate) fn avg_pool_rule<T: Float, B: super::Backend<T> + ?Sized>(
    backend: &B,
    x: ArrayView3<T>,
    r: ArrayView3<T>,
    windows: &PoolWindows,
) -> crate::error::Result<Array3<T>> {
    let x_tilde = shifted(x);
    let z = backend.avg_pool(x_tilde.view(), windows)?;
    pooling_rule(x_tilde.view(), z.view(), r, |s| backend.avg_pool_adjoint(s, windows))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused rule against the formula composed from the pooling kernels.
    #[test]
    fn the_fused_max_pool_rule_is_the_composed_formula_bit_for_bit() {
        let mut state = 7u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % 9) as f64 * 0.25 - 0.5
        };
        for (k, s, p) in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0)] {
            let x = Array3::from_shape_fn((3, 9, 7), |_| next());
            let win = PoolWindows::strided((9, 7), (k, k), (s, s), [p; 4]).unwrap();
            let (oh, ow) = win.output_hw();
            let r = Array3::from_shape_fn((3, oh, ow), |_| next());
            let x_tilde = x.mapv(|v| v + 1e-9);
            let (z, arg) = max_pool(x_tilde.view(), &win);
            let pos = Zip::from(&r).and(&z).map_collect(|&rv, &zv| crate::float::safe_div(rv.max(0.0), zv));
            let neg = Zip::from(&r).and(&z).map_collect(|&rv, &zv| crate::float::safe_div(rv.min(0.0), zv));
            let back_pos = max_pool_adjoint(pos.view(), arg.view(), (9, 7));
            let back_neg = max_pool_adjoint(neg.view(), arg.view(), (9, 7));
            let composed = Zip::from(&x_tilde).and(&back_pos).and(&back_neg).map_collect(|&xv, &a, &b| xv * a + xv * b);
            assert_eq!(max_pool_rule(x.view(), r.view(), &win), composed, "kernel {k} stride {s} padding {p}");
        }
    }
}

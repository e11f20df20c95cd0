//! The paper's evaluation measures on single attribution maps.
//!
//! Every heatmap is an `H x W` array indexed `[row (y), column (x)]`. The
//! functions are generic over `f32` and `f64` (any [`num_traits::Float`]).
//! Heatmaps are expected to be finite (callers validate); NaN never causes a
//! panic: it is never an extreme, and sorts below every number.

use std::cmp::Ordering;

use ndarray::ArrayView2;
use num_traits::Float;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RspError};

/// An axis-aligned box around one object (e.g. one digit of a multi-digit
/// image): rows `y0..y1`, columns `x0..x1` (`y1`, `x1` exclusive).
///
/// ```
/// use rsp::eval::metrics::BoxRegion;
/// let b = BoxRegion { class: 7, y0: 2, x0: 3, y1: 4, x1: 6 };
/// assert!(b.contains(3, 5));
/// assert!(!b.contains(4, 5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BoxRegion {
    /// Class label of the object in the box.
    pub class: usize,
    /// First row.
    pub y0: usize,
    /// First column.
    pub x0: usize,
    /// One past the last row.
    pub y1: usize,
    /// One past the last column.
    pub x1: usize,
}

impl BoxRegion {
    /// The box grown by `margin` pixels on every side, clipped to an image of
    /// `h` rows and `w` columns. Pointing games use a margin to forgive
    /// maxima that land just outside a tight box.
    ///
    /// ```
    /// use rsp::eval::metrics::BoxRegion;
    /// let b = BoxRegion { class: 0, y0: 1, x0: 2, y1: 3, x1: 5 };
    /// let e = b.enlarged(2, 4, 6);
    /// assert_eq!((e.y0, e.x0, e.y1, e.x1), (0, 0, 4, 6));
    /// ```
    pub fn enlarged(&self, margin: usize, h: usize, w: usize) -> BoxRegion {
        let y1 = self.y1.saturating_add(margin).min(h);
        let x1 = self.x1.saturating_add(margin).min(w);
        BoxRegion {
            class: self.class,
            // A box lying outside the image stays empty (y0 == y1).
            y0: self.y0.saturating_sub(margin).min(y1),
            x0: self.x0.saturating_sub(margin).min(x1),
            y1,
            x1,
        }
    }

    /// Whether pixel `(y, x)` lies in the box.
    ///
    /// ```
    /// use rsp::eval::metrics::BoxRegion;
    /// let b = BoxRegion { class: 0, y0: 0, x0: 0, y1: 1, x1: 1 };
    /// assert!(b.contains(0, 0) && !b.contains(0, 1));
    /// ```
    pub fn contains(&self, y: usize, x: usize) -> bool {
        (self.y0..self.y1).contains(&y) && (self.x0..self.x1).contains(&x)
    }
}

/// First position (row-major) of the largest value, or `None` if `h` is empty
/// or all NaN. Ties go to the lowest row-major index.
///
/// ```
/// use ndarray::array;
/// use rsp::eval::metrics::first_argmax;
/// let h = array![[0.0, 3.0], [3.0, 1.0]];
/// assert_eq!(first_argmax(h.view()), Some((0, 1)));
/// ```
pub fn first_argmax<T: Float>(h: ArrayView2<T>) -> Option<(usize, usize)> {
    first_extreme(h, |v, best| v > best)
}

/// First position (row-major) of the smallest value, or `None` if `h` is
/// empty or all NaN. Ties go to the lowest row-major index.
///
/// ```
/// use ndarray::array;
/// use rsp::eval::metrics::first_argmin;
/// let h = array![[0.0, -3.0], [-3.0, 1.0]];
/// assert_eq!(first_argmin(h.view()), Some((0, 1)));
/// ```
pub fn first_argmin<T: Float>(h: ArrayView2<T>) -> Option<(usize, usize)> {
    first_extreme(h, |v, best| v < best)
}

/// Scans in logical row-major order (whatever the memory layout), replacing
/// the best only on a strict improvement so the first extreme wins.
fn first_extreme<T: Float>(h: ArrayView2<T>, better: impl Fn(T, T) -> bool) -> Option<(usize, usize)> {
    let mut best: Option<((usize, usize), T)> = None;
    for (idx, &v) in h.indexed_iter() {
        if v.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if !better(v, b) => {}
            _ => best = Some((idx, v)),
        }
    }
    best.map(|(idx, _)| idx)
}

/// Pointing game: whether the first maximum of `h` lies in `b` enlarged by
/// `margin` pixels on each side (clipped to the map). An empty or all-NaN map
/// points nowhere and misses.
///
/// ```
/// use ndarray::Array2;
/// use rsp::eval::metrics::{pointing_hit, BoxRegion};
/// let mut h = Array2::<f64>::zeros((5, 5));
/// h[[1, 3]] = 1.0;
/// let b = BoxRegion { class: 0, y0: 0, x0: 0, y1: 2, x1: 2 };
/// assert!(!pointing_hit(h.view(), &b, 1));
/// assert!(pointing_hit(h.view(), &b, 2));
/// ```
pub fn pointing_hit<T: Float>(h: ArrayView2<T>, b: &BoxRegion, margin: usize) -> bool {
    let (rows, cols) = h.dim();
    first_argmax(h).is_some_and(|(y, x)| b.enlarged(margin, rows, cols).contains(y, x))
}

/// Hostile pointing game: whether the first minimum of `h` lies in the
/// enlarged box of any of the *other* objects, i.e. whether the most negative
/// relevance points at a competing object. No other boxes means no hit.
///
/// ```
/// use ndarray::Array2;
/// use rsp::eval::metrics::{hostile_pointing_hit, BoxRegion};
/// let mut h = Array2::<f32>::zeros((4, 8));
/// h[[2, 6]] = -1.0;
/// let other = BoxRegion { class: 3, y0: 0, x0: 4, y1: 4, x1: 8 };
/// assert!(hostile_pointing_hit(h.view(), &[other], 0));
/// assert!(!hostile_pointing_hit(h.view(), &[], 0));
/// ```
pub fn hostile_pointing_hit<T: Float>(h: ArrayView2<T>, others: &[BoxRegion], margin: usize) -> bool {
    let (rows, cols) = h.dim();
    first_argmin(h).is_some_and(|(y, x)| others.iter().any(|b| b.enlarged(margin, rows, cols).contains(y, x)))
}

/// Top-k intersection over union: with `k` the number of nonzero pixels of
/// `mask`, the predicted region is the `k` pixels with the highest `h` (ties:
/// lower row-major index first), compared with the mask by IoU.
///
/// An empty mask (`k = 0`) returns `0.0`: there is no object to localise, and
/// an empty-vs-empty IoU of 1 would reward maps for nothing.
///
/// # Errors
/// [`RspError::Shape`] if `mask` and `h` differ in shape.
///
/// ```
/// use ndarray::array;
/// use rsp::eval::metrics::top_k_iou;
/// let h = array![[0.9, 0.1], [0.5, 0.2]];
/// let mask = array![[1u8, 0], [0, 1]];
/// // top-2 = {(0,0), (1,0)}; intersection 1, union 3
/// assert!((top_k_iou(h.view(), mask.view())? - 1.0 / 3.0).abs() < 1e-12);
/// # Ok::<(), rsp::RspError>(())
/// ```
pub fn top_k_iou<T: Float>(h: ArrayView2<T>, mask: ArrayView2<u8>) -> Result<f64> {
    if h.dim() != mask.dim() {
        return Err(RspError::shape("top_k_iou mask", format!("the heatmap's shape {:?}", h.shape()), mask.shape()));
    }
    let in_mask: Vec<bool> = mask.iter().map(|&m| m != 0).collect();
    let k = in_mask.iter().filter(|&&m| m).count();
    if k == 0 {
        return Ok(0.0);
    }
    let values: Vec<T> = h.iter().copied().collect();
    let mut order: Vec<usize> = (0..values.len()).collect();
    // Stable sort on descending value keeps lower indices first among ties.
    order.sort_by(|&i, &j| cmp_nan_lowest(values[j], values[i]));
    let inter = order[..k].iter().filter(|&&i| in_mask[i]).count();
    // Both regions have k pixels, so the union is 2k - intersection.
    Ok(inter as f64 / (2 * k - inter) as f64)
}

/// Relevance mass accuracy of the positive map: Σ over the nonzero pixels of
/// `mask` of `h⁺ = max(h, 0)` / Σ over the map of `h⁺` (sums in f64,
/// row-major). `0.0` when the map has no positive part: nothing points at the
/// object. Negative relevance is left out (it would cancel positive evidence
/// in the mask).
///
/// # Errors
/// [`RspError::Shape`] if `mask` and `h` differ in shape.
///
/// ```
/// use ndarray::array;
/// use rsp::eval::metrics::positive_mass_in;
/// let h = array![[3.0, -5.0], [1.0, 0.0]];
/// let mask = array![[1u8, 1], [0, 0]];
/// assert_eq!(positive_mass_in(h.view(), mask.view())?, 0.75);
/// # Ok::<(), rsp::RspError>(())
/// ```
pub fn positive_mass_in<T: Float>(h: ArrayView2<T>, mask: ArrayView2<u8>) -> Result<f64> {
    Ok(mass_in(h, mask, |v| v.max(0.0), "positive_mass_in")?.unwrap_or(0.0))
}

/// The share of the negative map that falls in `region`: Σ over the nonzero
/// pixels of `region` of `h⁻ = max(−h, 0)` / Σ over the map of `h⁻` (sums in
/// f64, row-major); `None` when the map has no negative part (the share is
/// undefined, e.g. for Grad-CAM).
///
/// # Errors
/// [`RspError::Shape`] if `region` and `h` differ in shape.
///
/// ```
/// use ndarray::array;
/// use rsp::eval::metrics::negative_mass_in;
/// let h = array![[3.0, -6.0], [-2.0, 0.0]];
/// assert_eq!(negative_mass_in(h.view(), array![[0u8, 1], [0, 1]].view())?, Some(0.75));
/// assert_eq!(negative_mass_in(h.mapv(f64::abs).view(), array![[1u8, 1], [1, 1]].view())?, None);
/// # Ok::<(), rsp::RspError>(())
/// ```
pub fn negative_mass_in<T: Float>(h: ArrayView2<T>, region: ArrayView2<u8>) -> Result<Option<f64>> {
    mass_in(h, region, |v| (-v).max(0.0), "negative_mass_in")
}

/// Σ over `region` of `part(h)` / Σ `part(h)`, `None` if the total is 0.
fn mass_in<T: Float>(
    h: ArrayView2<T>,
    region: ArrayView2<u8>,
    part: fn(f64) -> f64,
    what: &str,
) -> Result<Option<f64>> {
    if h.dim() != region.dim() {
        return Err(RspError::shape(
            format!("{what} region"),
            format!("the heatmap's shape {:?}", h.shape()),
            region.shape(),
        ));
    }
    let (mut inside, mut total) = (0.0, 0.0);
    for (&v, &m) in h.iter().zip(region.iter()) {
        let p = part(v.to_f64().unwrap_or(f64::NAN));
        total += p;
        if m != 0 {
            inside += p;
        }
    }
    Ok((total > 0.0).then(|| (inside / total).clamp(0.0, 1.0)))
}

/// A total order on floats where NaN sorts below everything (and equals NaN),
/// so sorting can never panic on an inconsistent comparison.
fn cmp_nan_lowest<T: Float>(a: T, b: T) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// 1-based ranks with ties sharing their average rank (scipy's
/// `rankdata(method="average")`).
fn average_ranks<T: Float>(values: &[T]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| cmp_nan_lowest(values[i], values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && cmp_nan_lowest(values[order[end]], values[order[start]]) == Ordering::Equal {
            end += 1;
        }
        // Positions start..end hold ranks start+1 ..= end; share their mean.
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman rank correlation of two maps, flattened row-major: the Pearson
/// correlation of their average ranks, as `scipy.stats.spearmanr`.
///
/// If either map is constant (or has fewer than two pixels) the correlation
/// is undefined; this returns `0.0` instead of scipy's NaN so that averages
/// over many maps stay finite: a constant map carries no ranking information
/// and counts as uncorrelated.
///
/// # Errors
/// [`RspError::Shape`] if `a` and `b` differ in shape.
///
/// ```
/// use ndarray::array;
/// use rsp::eval::metrics::spearman;
/// let a = array![[1.0, 2.0], [3.0, 4.0]];
/// let b = array![[10.0, 20.0], [40.0, 30.0]];
/// assert!((spearman(a.view(), b.view())? - 0.8).abs() < 1e-12);
/// # Ok::<(), rsp::RspError>(())
/// ```
pub fn spearman<T: Float>(a: ArrayView2<T>, b: ArrayView2<T>) -> Result<f64> {
    if a.dim() != b.dim() {
        return Err(RspError::shape(
            "spearman second map",
            format!("the first map's shape {:?}", a.shape()),
            b.shape(),
        ));
    }
    let ra = average_ranks(&a.iter().copied().collect::<Vec<_>>());
    let rb = average_ranks(&b.iter().copied().collect::<Vec<_>>());
    let n = ra.len();
    if n < 2 {
        return Ok(0.0);
    }
    let mean = (n as f64 + 1.0) / 2.0; // the mean of any average-rank vector
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        let (dx, dy) = (x - mean, y - mean);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        return Ok(0.0);
    }
    Ok((sab / (saa * sbb).sqrt()).clamp(-1.0, 1.0))
}

/// The bilinear resize Grad-CAM uses (it lives with the attribution methods;
/// re-exported here for the metrics that compare maps of different sizes).
pub use crate::attribution::upsample_bilinear;

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::{array, Array2};

    #[test]
    fn enlarged_clips_to_image() {
        let b = BoxRegion { class: 4, y0: 3, x0: 0, y1: 5, x1: 2 };
        assert_eq!(b.enlarged(1, 10, 10), BoxRegion { class: 4, y0: 2, x0: 0, y1: 6, x1: 3 });
        assert_eq!(b.enlarged(0, 10, 10), b);
        assert_eq!(b.enlarged(100, 6, 7), BoxRegion { class: 4, y0: 0, x0: 0, y1: 6, x1: 7 });
        assert_eq!(b.enlarged(usize::MAX, 6, 7), BoxRegion { class: 4, y0: 0, x0: 0, y1: 6, x1: 7 });
        // A box entirely outside the image stays empty.
        let far = BoxRegion { class: 0, y0: 20, x0: 20, y1: 30, x1: 30 };
        let e = far.enlarged(1, 10, 10);
        assert!(!(0..10).any(|y| (0..10).any(|x| e.contains(y, x))));
    }

    #[test]
    fn extremes_take_first_in_row_major_order() {
        let h = array![[1.0, 5.0, -2.0], [5.0, -2.0, 0.0]];
        assert_eq!(first_argmax(h.view()), Some((0, 1)));
        assert_eq!(first_argmin(h.view()), Some((0, 2)));
        // Logical order, not memory order: the transpose's first max is (0, 1)
        // of the transposed view, i.e. original (1, 0).
        assert_eq!(first_argmax(h.t()), Some((0, 1)));
        assert_eq!(first_argmin(h.t()), Some((1, 1)));
        let flat = Array2::<f32>::zeros((2, 2));
        assert_eq!(first_argmax(flat.view()), Some((0, 0)));
        assert_eq!(first_argmin(flat.view()), Some((0, 0)));
    }

    #[test]
    fn extremes_survive_nan_and_empty() {
        let h = array![[f64::NAN, 1.0], [2.0, f64::NAN]];
        assert_eq!(first_argmax(h.view()), Some((1, 0)));
        assert_eq!(first_argmin(h.view()), Some((0, 1)));
        let all_nan = array![[f32::NAN]];
        assert_eq!(first_argmax(all_nan.view()), None);
        let empty = Array2::<f64>::zeros((0, 3));
        assert_eq!(first_argmin(empty.view()), None);
        assert!(!pointing_hit(empty.view(), &BoxRegion { class: 0, y0: 0, x0: 0, y1: 9, x1: 9 }, 0));
    }

    #[test]
    fn pointing_uses_first_max_and_margin() {
        let mut h = Array2::<f64>::zeros((6, 6));
        h[[1, 3]] = 2.0;
        h[[4, 0]] = 2.0; // tie, later in row-major order: ignored
        let left = BoxRegion { class: 1, y0: 3, x0: 0, y1: 6, x1: 2 };
        let top_right = BoxRegion { class: 2, y0: 0, x0: 4, y1: 3, x1: 6 };
        assert!(!pointing_hit(h.view(), &left, 0));
        assert!(!pointing_hit(h.view(), &left, 1)); // enlarged rows 2..6 miss row 1
        assert!(pointing_hit(h.view(), &left, 2));
        assert!(!pointing_hit(h.view(), &top_right, 0));
        assert!(pointing_hit(h.view(), &top_right, 1)); // columns 3..6
    }

    #[test]
    fn hostile_pointing_checks_any_other_box() {
        let mut h = Array2::<f32>::zeros((4, 12));
        h[[2, 9]] = -3.0;
        h[[0, 0]] = 1.0;
        let a = BoxRegion { class: 1, y0: 0, x0: 0, y1: 4, x1: 4 };
        let b = BoxRegion { class: 5, y0: 0, x0: 4, y1: 4, x1: 8 };
        let c = BoxRegion { class: 9, y0: 0, x0: 8, y1: 4, x1: 12 };
        assert!(hostile_pointing_hit(h.view(), &[b, c], 0));
        assert!(!hostile_pointing_hit(h.view(), &[a, b], 0));
        assert!(hostile_pointing_hit(h.view(), &[a, b], 2)); // b grows to columns 2..10
    }

    #[test]
    fn top_k_iou_hand_values_and_ties() {
        let h = array![[0.9, 0.1, 0.5], [0.5, 0.2, 0.0]];
        // k = 3: top = {0, 2, 3}; mask {0, 4, 5}: 1 / (6 - 1).
        let mask = array![[1u8, 0, 0], [0, 1, 1]];
        assert_abs_diff_eq!(top_k_iou(h.view(), mask.view()).unwrap(), 0.2);
        // k = 2 with a tie at the cut (indices 2 and 3 both 0.5): the lower
        // index 2 wins, so top = {0, 2}; mask {0, 3}: 1 / 3.
        let mask = array![[1u8, 0, 0], [255, 0, 0]];
        assert_abs_diff_eq!(top_k_iou(h.view(), mask.view()).unwrap(), 1.0 / 3.0);
        let mask = array![[1u8, 0, 7], [0, 0, 0]];
        assert_abs_diff_eq!(top_k_iou(h.view(), mask.view()).unwrap(), 1.0);
        let all = Array2::<u8>::ones((2, 3));
        assert_abs_diff_eq!(top_k_iou(h.view(), all.view()).unwrap(), 1.0);
        let none = Array2::<u8>::zeros((2, 3));
        assert_eq!(top_k_iou(h.view(), none.view()).unwrap(), 0.0);
        let wrong = Array2::<u8>::ones((3, 2));
        assert!(matches!(top_k_iou(h.view(), wrong.view()), Err(RspError::Shape { .. })));
        let with_nan = array![[f32::NAN, 1.0]];
        assert_eq!(top_k_iou(with_nan.view(), array![[0u8, 1]].view()).unwrap(), 1.0);
    }

    #[test]
    fn average_ranks_match_scipy_rankdata() {
        // scipy.stats.rankdata([5, 6, 7, 8, 7]) = [1, 2, 3.5, 5, 3.5]
        assert_eq!(average_ranks(&[5.0, 6.0, 7.0, 8.0, 7.0]), vec![1.0, 2.0, 3.5, 5.0, 3.5]);
        // rankdata([2, 2, 2, 1]) = [3, 3, 3, 1]
        assert_eq!(average_ranks(&[2.0f32, 2.0, 2.0, 1.0]), vec![3.0, 3.0, 3.0, 1.0]);
    }

    #[test]
    fn spearman_hand_values() {
        // spearmanr([1,2,3,4,5], [5,6,7,8,7]) = 8 / sqrt(10 * 9.5)
        let a = array![[1.0, 2.0, 3.0, 4.0, 5.0]];
        let b = array![[5.0, 6.0, 7.0, 8.0, 7.0]];
        assert_abs_diff_eq!(spearman(a.view(), b.view()).unwrap(), 8.0 / 95f64.sqrt(), epsilon = 1e-12);
        assert_abs_diff_eq!(spearman(a.view(), a.view()).unwrap(), 1.0, epsilon = 1e-12);
        let rev = a.mapv(|v| -v * v);
        assert_abs_diff_eq!(spearman(a.view(), rev.view()).unwrap(), -1.0, epsilon = 1e-12);
        // Ties in both: ranks [1.5, 1.5, 3, 4] and [1, 2.5, 2.5, 4]:
        // d = [-1,-1,.5,1.5], e = [-1.5,0,0,1.5]; 3.75 / sqrt(4.5 * 4.5).
        let c = array![[0.0f32, 0.0], [1.0, 2.0]];
        let d = array![[-1.0f32, 3.0], [3.0, 9.0]];
        assert_abs_diff_eq!(spearman(c.view(), d.view()).unwrap(), 3.75 / 4.5, epsilon = 1e-12);
    }

    #[test]
    fn spearman_degenerate_inputs() {
        let a = array![[1.0, 2.0], [3.0, 4.0]];
        let flat = Array2::<f64>::from_elem((2, 2), 3.0);
        assert_eq!(spearman(a.view(), flat.view()).unwrap(), 0.0);
        assert_eq!(spearman(flat.view(), flat.view()).unwrap(), 0.0);
        let one = array![[1.0]];
        assert_eq!(spearman(one.view(), one.view()).unwrap(), 0.0);
        let wrong = Array2::<f64>::zeros((4, 1));
        assert!(matches!(spearman(a.view(), wrong.view()), Err(RspError::Shape { .. })));
    }

    #[test]
    fn upsample_2x2_to_4x4_matches_pytorch() {
        // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]),
        //     size=(4, 4), mode="bilinear", align_corners=False)
        let x = array![[1.0, 2.0], [3.0, 4.0]];
        let y = upsample_bilinear(x.view(), 4, 4).unwrap();
        let expected =
            array![[1.0, 1.25, 1.75, 2.0], [1.5, 1.75, 2.25, 2.5], [2.5, 2.75, 3.25, 3.5], [3.0, 3.25, 3.75, 4.0]];
        assert_eq!(y, expected);
        let yf = upsample_bilinear(x.mapv(|v| v as f32).view(), 4, 4).unwrap();
        assert_eq!(yf, expected.mapv(|v| v as f32));
    }

    #[test]
    fn upsample_non_integer_and_downsampling() {
        // 3 -> 2: scale 1.5, src = 0.25 and 1.75.
        let x = array![[0.0, 4.0, 8.0]];
        let y = upsample_bilinear(x.view(), 1, 2).unwrap();
        assert_eq!(y, array![[1.0, 7.0]]);
        // 4 -> 2: src = 0.5 and 2.5 (no antialiasing).
        let x = array![[0.0], [1.0], [2.0], [3.0]];
        assert_eq!(upsample_bilinear(x.view(), 2, 1).unwrap(), array![[0.5], [2.5]]);
        // 2 -> 3: scale 2/3; src = -1/6 -> 0, 0.5, 7/6 -> clamped to the edge.
        let x = array![[0.0, 6.0]];
        let y = upsample_bilinear(x.view(), 1, 3).unwrap();
        assert_abs_diff_eq!(y[[0, 0]], 0.0);
        assert_abs_diff_eq!(y[[0, 1]], 3.0, epsilon = 1e-12);
        assert_abs_diff_eq!(y[[0, 2]], 6.0);
        // 1x1 broadcasts; identity size is the identity.
        let one = array![[2.5]];
        assert_eq!(upsample_bilinear(one.view(), 2, 3).unwrap(), Array2::from_elem((2, 3), 2.5));
        let m = array![[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]];
        assert_eq!(upsample_bilinear(m.view(), 2, 3).unwrap(), m);
    }

    #[test]
    fn upsample_7_to_224_is_a_convex_blend() {
        let x = Array2::from_shape_fn((7, 7), |(i, j)| (i * 7 + j) as f64);
        let y = upsample_bilinear(x.view(), 224, 224).unwrap();
        // scale 1/32: dst 0..=15 clamp to src 0; dst 16 -> src 1/64.
        assert_eq!(y[[0, 15]], 0.0);
        assert_abs_diff_eq!(y[[0, 16]], 1.0 / 64.0, epsilon = 1e-12);
        assert_abs_diff_eq!(y[[16, 0]], 7.0 / 64.0, epsilon = 1e-12);
        assert_eq!(y[[223, 223]], 48.0);
    }

    #[test]
    fn upsample_empty_cases() {
        let empty = Array2::<f64>::zeros((0, 0));
        assert!(matches!(upsample_bilinear(empty.view(), 2, 2), Err(RspError::InvalidArgument(_))));
        assert_eq!(upsample_bilinear(empty.view(), 0, 5).unwrap().dim(), (0, 5));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn map(rows: usize, cols: usize) -> impl Strategy<Value = Array2<f64>> {
            // Few distinct values so that ties are common.
            proptest::collection::vec(-3i8..=3, rows * cols).prop_map(move |v| {
                Array2::from_shape_vec((rows, cols), v.into_iter().map(f64::from).collect()).unwrap()
            })
        }

        proptest! {
            #[test]
            fn spearman_is_symmetric_and_bounded(a in map(3, 4), b in map(3, 4)) {
                let ab = spearman(a.view(), b.view()).unwrap();
                let ba = spearman(b.view(), a.view()).unwrap();
                prop_assert!((ab - ba).abs() < 1e-12);
                prop_assert!((-1.0..=1.0).contains(&ab));
                // Ranks ignore strictly increasing transforms.
                let c = a.mapv(|v| v * v * v + 10.0);
                prop_assert!((spearman(c.view(), b.view()).unwrap() - ab).abs() < 1e-12);
            }

            #[test]
            fn top_k_iou_is_a_fraction(h in map(4, 4), m in proptest::collection::vec(0u8..2, 16)) {
                let mask = Array2::from_shape_vec((4, 4), m).unwrap();
                let iou = top_k_iou(h.view(), mask.view()).unwrap();
                prop_assert!((0.0..=1.0).contains(&iou));
            }

            #[test]
            fn upsampling_stays_within_input_range(h in map(3, 5), oh in 1usize..12, ow in 1usize..12) {
                let y = upsample_bilinear(h.view(), oh, ow).unwrap();
                let lo = h.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = h.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                prop_assert!(y.iter().all(|&v| v >= lo - 1e-12 && v <= hi + 1e-12));
            }

            #[test]
            fn argmax_is_a_maximum_with_no_equal_before_it(h in map(3, 3)) {
                let (y, x) = first_argmax(h.view()).unwrap();
                let best = h[[y, x]];
                prop_assert!(h.iter().all(|&v| v <= best));
                prop_assert!(h.iter().take(y * 3 + x).all(|&v| v < best));
            }
        }
    }
}

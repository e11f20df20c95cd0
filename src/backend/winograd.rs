//! Winograd's F(2×2, 3×3) for the forward pass's 3×3 stride-1 convolutions
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
//! each 2×2 block of outputs ("tile") costs 16 multiplications per channel
//! pair instead of im2col's 36, so the GEMM work drops 2.25×.
//!
//! With `d` a 4×4 input patch and `g` a 3×3 filter, a tile is
//! `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over input channels, the 16 products
//! `⊙` become 16 GEMMs `M[ξ] = U[ξ] · V[ξ]` (`U[ξ]`: O×C transformed filters,
//! `V[ξ]`: C×tiles transformed patches), one per entry ξ of the 4×4 tile.
//!
//! **Numerics.** The transforms only add, subtract and halve, so the result
//! differs from the direct sum by rounding alone (a few units in the last
//! place more than im2col's; tested against it in f64 and f32).
//!
//! **Determinism.** The tiles are cut into blocks of whole tile rows whose
//! size depends on the shapes only, and every GEMM runs over all input
//! channels at once on one thread, so the bits never depend on the number of
//! threads (or on a sample's batch).

use super::matmul::gemm_serial;
use super::workspace::Scratch;
use crate::float::Float;
use ndarray::parallel::prelude::*;
use ndarray::{Array3, ArrayView2, ArrayView3, ArrayView4, ArrayViewMut2, ArrayViewMut3, Axis};
use rayon::slice::{ParallelSlice, ParallelSliceMut};

/// Entries of a transformed tile (4×4).
const XI: usize = 16;

/// At most this many bytes of transformed patches and products (`V` and `M`)
/// per block, so that the transforms and GEMMs find them in cache (VGG16,
/// 2026-11-28: 1 and 2 MB alike, 4 MB and more up to 1.4× slower on the
/// 224×224 layers), unless that leaves fewer than [`MIN_TILES`] tiles.
const BLOCK_BYTES: usize = 1 << 20;

/// Fewer input channels than this go to im2col: the GEMMs over so short a
/// reduction are slow (VGG16's first layer, 3 → 64 channels at 224×224, took
/// 1.8× im2col's time), and that layer is cheap either way.
const MIN_CHANNELS: usize = 16;

/// At least this many tiles per block (the GEMMs' columns), where
/// [`BLOCK_BYTES`] allows fewer: every block's GEMMs pack the transformed
/// filters again, 16 × O × C values (16 MB for 512 channels), and without
/// this floor the 512-channel layers were 1.2–1.3× slower.
const MIN_TILES: usize = 128;

/// Whether [`conv3x3`] takes a convolution of `c` input channels with a
/// `kernel_hw` kernel, strides `stride` and output `out_hw`.
pub(crate) fn applies(c: usize, kernel_hw: (usize, usize), stride: [usize; 2], out_hw: (usize, usize)) -> bool {
    possible(kernel_hw, stride) && c >= MIN_CHANNELS && out_hw.0 >= 2 && out_hw.1 >= 2
}

/// Whether [`conv3x3`] can compute a convolution at all.
pub(crate) fn possible(kernel_hw: (usize, usize), stride: [usize; 2]) -> bool {
    kernel_hw == (3, 3) && stride == [1, 1]
}

/// The 3×3 stride-1 convolution (cross-correlation, as CNNs) of `x` (C×H×W)
/// by `w` (O×C×3×3) with zero padding `top` and `left` (the bottom and right
/// padding are implied by `out_hw`), by Winograd's F(2×2, 3×3).
pub(crate) fn conv3x3<T: Float>(
    x: ArrayView3<T>,
    w: ArrayView4<T>,
    (top, left): (usize, usize),
    out_hw: (usize, usize),
) -> Array3<T> {
    let (c, _, _) = x.dim();
    let o = w.dim().0;
    assert_eq!(w.dim(), (o, c, 3, 3), "winograd: weights must be O×C×3×3");
    let (oh, ow) = out_hw;
    let (tiles_h, tiles_w) = (oh.div_ceil(2), ow.div_ceil(2));
    let filters = transformed_filters(w);
    let row_bytes = XI * (c + o) * tiles_w * std::mem::size_of::<T>();
    let rows_per_block = (BLOCK_BYTES / row_bytes).max(MIN_TILES.div_ceil(tiles_w)).clamp(1, tiles_h);
    let mut out = Array3::zeros((o, oh, ow));
    out.axis_chunks_iter_mut(Axis(1), 2 * rows_per_block).into_par_iter().enumerate().for_each(|(b, mut out_rows)| {
        let first = b * rows_per_block;
        let rows = rows_per_block.min(tiles_h - first);
        let tiles = rows * tiles_w;
        // V[c][ξ][t] and M[o][ξ][t]: each input channel's patches and each
        // output channel's products are contiguous, for the transforms.
        let mut patches = Scratch::take(c * XI * tiles);
        let mut products = Scratch::take(o * XI * tiles);
        let patches = &mut patches[..c * XI * tiles];
        let products = &mut products[..o * XI * tiles];
        patches.par_chunks_mut(XI * tiles).zip(x.axis_iter(Axis(0)).into_par_iter()).for_each_init(
            || PatchRows::new(tiles_w),
            |buffers, (v, plane)| buffers.transform(plane, (top, left), first..first + rows, tiles_w, v),
        );
        let v = ArrayView3::from_shape((c, XI, tiles), &*patches).expect("patch blocks");
        let u = ArrayView3::from_shape((o, XI, c), &filters[..o * XI * c]).expect("filter blocks");
        let mut m = ArrayViewMut3::from_shape((o, XI, tiles), products).expect("product blocks");
        m.axis_iter_mut(Axis(1)).into_par_iter().enumerate().for_each(|(xi, m)| {
            gemm_serial(u.index_axis(Axis(1), xi), v.index_axis(Axis(1), xi), m);
        });
        let m = m.into_slice().expect("products are contiguous");
        let m = &*m;
        m.par_chunks(XI * tiles).zip(out_rows.axis_iter_mut(Axis(0)).into_par_iter()).for_each(|(m, plane)| {
            untransform_products(m, rows, tiles_w, plane);
        });
    });
    out
}

/// `U[o][ξ][c] = (G g Gᵀ)[ξ]` for every filter `g = w[o][c]`, with
/// `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`: each output channel's
/// 16 rows are contiguous, so that the channels are transformed in parallel
/// straight into place.
fn transformed_filters<T: Float>(w: ArrayView4<T>) -> Scratch<T> {
    let (o, c, _, _) = w.dim();
    let w = w.as_standard_layout();
    let w = w.as_slice().expect("standard layout");
    let half = T::of(0.5);
    let mut u = Scratch::take(o * XI * c);
    u[..o * XI * c].par_chunks_mut(XI * c).zip(w.par_chunks(9 * c)).for_each(|(u, w)| {
        for (ci, g) in w.chunks_exact(9).enumerate() {
            // G g: 4×3, then (G g) Gᵀ: 4×4.
            let mut gg = [[T::zero(); 3]; 4];
            for l in 0..3 {
                let (g0, g1, g2) = (g[l], g[3 + l], g[6 + l]);
                gg[0][l] = g0;
                gg[1][l] = (g0 + g1 + g2) * half;
                gg[2][l] = (g0 - g1 + g2) * half;
                gg[3][l] = g2;
            }
            for (a, r) in gg.iter().enumerate() {
                let t = [r[0], (r[0] + r[1] + r[2]) * half, (r[0] - r[1] + r[2]) * half, r[2]];
                for (b, &value) in t.iter().enumerate() {
                    u[(a * 4 + b) * c + ci] = value;
                }
            }
        }
    });
    u
}

/// `V[ξ][c][t] = (Bᵀ d B)[ξ]` for the patches `d` of the tile rows `rows`
/// (tile `t` counts row-major within them), with
/// `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`.
///
/// Every step is an element-wise operation on contiguous slices (one lane
/// per column or tile), so that it vectorises: the 4 zero-padded input rows
/// of a tile row are combined (`Bᵀ d`, per column), split into even and odd
/// columns, and tile `j`'s columns are then `even[j], odd[j], even[j + 1],
/// odd[j + 1]` (`· B`).
struct PatchRows<T> {
    padded: Vec<T>,
    combined: Vec<T>,
    even: Vec<T>,
    odd: Vec<T>,
}

impl<T: Float> PatchRows<T> {
    fn new(tiles_w: usize) -> Self {
        let (width, lanes) = (2 * (tiles_w + 1), tiles_w + 1);
        PatchRows {
            padded: vec![T::zero(); 4 * width],
            combined: vec![T::zero(); 4 * width],
            even: vec![T::zero(); 4 * lanes],
            odd: vec![T::zero(); 4 * lanes],
        }
    }

    /// `v` (`16 × tiles`): the transformed patches of one input channel
    /// `plane` (H×W) over the tile rows `rows`.
    fn transform(
        &mut self,
        plane: ArrayView2<T>,
        (top, left): (usize, usize),
        rows: std::ops::Range<usize>,
        tiles_w: usize,
        v: &mut [T],
    ) {
        let (h, w) = plane.dim();
        let tiles = rows.len() * tiles_w;
        let n = tiles_w;
        let width = 2 * (n + 1);
        let PatchRows { padded, combined, even, odd } = self;
        for (r, tile_row) in rows.enumerate() {
            for (k, row) in padded.chunks_exact_mut(width).enumerate() {
                // Padded row 2·tile_row + k is input row 2·tile_row + k − top.
                let Some(y) = (2 * tile_row + k).checked_sub(top).filter(|&y| y < h) else {
                    row.fill(T::zero());
                    continue;
                };
                let end = (left + w).min(width);
                row[..left.min(width)].fill(T::zero());
                row[end..].fill(T::zero());
                let line = plane.row(y);
                match line.as_slice() {
                    Some(line) => row[left..end].copy_from_slice(&line[..end - left]),
                    None => row[left..end].iter_mut().zip(line.iter()).for_each(|(d, &s)| *d = s),
                }
            }
            {
                let (r0, rest) = padded.split_at(width);
                let (r1, rest) = rest.split_at(width);
                let (r2, r3) = rest.split_at(width);
                let (d0, rest) = combined.split_at_mut(width);
                let (d1, rest) = rest.split_at_mut(width);
                let (d2, d3) = rest.split_at_mut(width);
                for q in 0..width {
                    d0[q] = r0[q] - r2[q];
                    d1[q] = r1[q] + r2[q];
                    d2[q] = r2[q] - r1[q];
                    d3[q] = r1[q] - r3[q];
                }
            }
            for ((row, e), od) in
                combined.chunks_exact(width).zip(even.chunks_exact_mut(n + 1)).zip(odd.chunks_exact_mut(n + 1))
            {
                for ((pair, e), od) in row.chunks_exact(2).zip(e.iter_mut()).zip(od.iter_mut()) {
                    *e = pair[0];
                    *od = pair[1];
                }
            }
            let at = r * n;
            for (a, four) in v.chunks_exact_mut(4 * tiles).enumerate() {
                let (p0, rest) = four.split_at_mut(tiles);
                let (p1, rest) = rest.split_at_mut(tiles);
                let (p2, p3) = rest.split_at_mut(tiles);
                let (v0, v1) = (&mut p0[at..at + n], &mut p1[at..at + n]);
                let (v2, v3) = (&mut p2[at..at + n], &mut p3[at..at + n]);
                let (e0, e1) = (&even[a * (n + 1)..a * (n + 1) + n], &even[a * (n + 1) + 1..(a + 1) * (n + 1)]);
                let (o0, o1) = (&odd[a * (n + 1)..a * (n + 1) + n], &odd[a * (n + 1) + 1..(a + 1) * (n + 1)]);
                for j in 0..n {
                    v0[j] = e0[j] - e1[j];
                    v1[j] = o0[j] + e1[j];
                    v2[j] = e1[j] - o0[j];
                    v3[j] = o0[j] - o1[j];
                }
            }
        }
    }
}

/// Writes the output rows of a block of tile rows: `Y = Aᵀ m A` for each
/// tile's products `m` (`M[ξ][o][t]`), with `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`;
/// outputs past the last row or column (odd sizes) are dropped. Element-wise
/// over the tiles of a tile row, as [`PatchRows::transform`].
fn untransform_products<T: Float>(m: &[T], rows: usize, tiles_w: usize, mut plane: ArrayViewMut2<T>) {
    let tiles = rows * tiles_w;
    let n = tiles_w;
    let (out_h, out_w) = plane.dim();
    // Aᵀ m over the 4 rows of m: s[i][b] (i = 0, 1), then across columns.
    let mut s = vec![T::zero(); 8 * n];
    let mut y = vec![T::zero(); 4 * n];
    for r in 0..rows {
        let at = r * n;
        let entry = |xi: usize| &m[xi * tiles + at..xi * tiles + at + n];
        let (s_top, s_bottom) = s.split_at_mut(4 * n);
        for (b, (s0, s1)) in s_top.chunks_exact_mut(n).zip(s_bottom.chunks_exact_mut(n)).enumerate() {
            let (m0, m1, m2, m3) = (entry(b), entry(4 + b), entry(8 + b), entry(12 + b));
            for j in 0..n {
                s0[j] = m0[j] + m1[j] + m2[j];
                s1[j] = m1[j] - m2[j] - m3[j];
            }
        }
        for (half, pair) in y.chunks_exact_mut(2 * n).enumerate() {
            let (y0, y1) = pair.split_at_mut(n);
            let q = &s[half * 4 * n..(half + 1) * 4 * n];
            let (q0, q1, q2, q3) = (&q[..n], &q[n..2 * n], &q[2 * n..3 * n], &q[3 * n..]);
            for j in 0..n {
                y0[j] = q0[j] + q1[j] + q2[j];
                y1[j] = q1[j] - q2[j] - q3[j];
            }
        }
        for (half, pair) in y.chunks_exact(2 * n).enumerate() {
            let out_row = 2 * r + half;
            if out_row >= out_h {
                continue;
            }
            let (y0, y1) = pair.split_at(n);
            let mut line = plane.row_mut(out_row);
            let line = line.as_slice_mut().expect("rows of a new array are contiguous");
            for ((dst, &a), &b) in line.chunks_exact_mut(2).zip(y0).zip(y1) {
                dst[0] = a;
                dst[1] = b;
            }
            if out_w % 2 == 1 {
                line[out_w - 1] = y0[n - 1];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, Array4};

    /// The direct sum, term by term.
    fn direct(x: &Array3<f64>, w: &Array4<f64>, (top, left): (usize, usize), (oh, ow): (usize, usize)) -> Array3<f64> {
        let (c, h, wd) = x.dim();
        let o = w.dim().0;
        Array3::from_shape_fn((o, oh, ow), |(oi, yy, xx)| {
            let mut sum = 0.0;
            for ci in 0..c {
                for k in 0..3 {
                    for l in 0..3 {
                        let (py, px) = ((yy + k) as isize - top as isize, (xx + l) as isize - left as isize);
                        if py >= 0 && px >= 0 && (py as usize) < h && (px as usize) < wd {
                            sum += x[[ci, py as usize, px as usize]] * w[[oi, ci, k, l]];
                        }
                    }
                }
            }
            sum
        })
    }

    fn noise(seed: u64, n: usize) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    #[test]
    fn bits_do_not_depend_on_the_number_of_threads() {
        // 20 tile rows of 20 tiles: blocks of 17 rows and 3 (BLOCK_BYTES).
        let (c, o, side) = (16, 8, 40);
        let x = Array3::from_shape_vec((c, side, side), noise(3, c * side * side)).unwrap();
        let w = Array4::from_shape_vec((o, c, 3, 3), noise(4, o * c * 9)).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| conv3x3(x.view(), w.view(), (1, 1), (side, side)))
        };
        let one = run(1);
        for threads in [2, 3, 5] {
            assert!(one.iter().zip(run(threads).iter()).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads");
        }
    }

    #[test]
    fn equals_the_direct_sum_for_odd_sizes_and_any_padding() {
        // (channels, outputs, height, width, top, left, bottom, right)
        for &(c, o, h, w, top, left, bottom, right) in &[
            (3, 2, 5, 7, 1, 1, 1, 1),
            (4, 3, 6, 6, 0, 0, 0, 0),
            (5, 4, 9, 4, 2, 0, 1, 3),
            (2, 5, 3, 3, 1, 1, 1, 1),
            (17, 6, 12, 11, 1, 1, 1, 1),
        ] {
            let x = Array3::from_shape_vec((c, h, w), noise(1, c * h * w)).unwrap();
            let wt = Array4::from_shape_vec((o, c, 3, 3), noise(2, o * c * 9)).unwrap();
            let out_hw = (h + top + bottom - 2, w + left + right - 2);
            let expected = direct(&x, &wt, (top, left), out_hw);
            let got = conv3x3(x.view(), wt.view(), (top, left), out_hw);
            assert_eq!(got.dim(), expected.dim());
            for (g, e) in got.iter().zip(&expected) {
                assert!((g - e).abs() <= 1e-14, "{c} {o} {h}×{w}: {g} vs {e}");
            }
            // f32: the same sums within f32 rounding.
            let got32 = conv3x3(x.mapv(|v| v as f32).view(), wt.mapv(|v| v as f32).view(), (top, left), out_hw);
            for (g, e) in got32.iter().zip(&expected) {
                assert!((*g as f64 - e).abs() <= 1e-5, "f32 {c} {o} {h}×{w}: {g} vs {e}");
            }
        }
    }
}

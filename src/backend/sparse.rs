//! The sectional rule's three products with work in proportion to the
//! nonzeros of the relevance (issue #12): the CPU backend runs them instead of
//! the dense GEMMs when a layer's relevance is sparse enough
//! ([`SectionalKernel::Auto`](super::SectionalKernel)).
//!
//! Why it pays: `R⁺` and `R⁻` have disjoint supports, so the stacked
//! `[R⁺; R⁻]` is at least half zeros; relevance is zero wherever the layer's
//! output was not positive; and below a max-pool only one position in each
//! window receives any. With the nonzeros of `[R⁺; R⁻]` as a sparse matrix
//! `S` (row `i` = a channel and a sign), the three products become
//!
//! 1. `G = S·colsᵀ`: each nonzero adds its input patch, scaled, to its row's
//!    kernel (a sparse-times-dense product);
//! 2. `A = G·cols` **only where `S ≠ 0`** (a sampled product: the quotient
//!    `R ⊘ A` is masked by `S`), fused with the quotient `Q = ±S ⊘ A`;
//! 3. `Gᵀ·Q` folded straight back onto the input (col2im), gathered per input
//!    pixel from the nonzeros of `Q` that reach it, times `x⁺`.
//!
//! The unfolded input is never formed: the kernels read `x⁺` in a padded
//! channels-last copy, where a patch row is `C` contiguous values, so the
//! kernel `G` has its columns in `(dy, dx, c)` order (it never leaves this
//! module). Each result element is a sum in a fixed order (positions, then
//! kernel offsets, then rows, ascending; dot products in fixed lanes), so the
//! bits do not depend on the number of threads or on the machine's SIMD width;
//! they differ from the dense path's only by summation order.

use super::workspace::Scratch;
use super::ConvGeometry;
use crate::float::{safe_div, Float};
use ndarray::{Array3, ArrayView2, ArrayView3, Axis};
use rayon::prelude::*;

/// Bytes of padded input rows one band of output rows should read (an L2's
/// worth): the products run band by band so that the input stays in cache
/// while every row of `S` visits it.
const BAND_BYTES: usize = 1 << 18;

/// The nonzeros of `[R⁺; R⁻]`, row by row, positions ascending.
struct Sections<T> {
    /// Row `i` holds entries `start[i]..start[i + 1]`.
    start: Vec<usize>,
    /// Output position `oy·Wo + ox`.
    position: Vec<u32>,
    /// Padded input pixel of the patch's top-left corner: `oy·sy·Wp + ox·sx`.
    pixel: Vec<u32>,
    /// `|R|` (positive).
    value: Vec<T>,
}

/// The shapes one call works on.
#[derive(Clone, Copy)]
struct Shape {
    channels: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padded_width: usize,
    out_hw: (usize, usize),
}

impl Shape {
    /// Columns of a kernel row of `G`: `kh·kw·C`.
    fn kernel_len(&self) -> usize {
        self.kernel.0 * self.kernel.1 * self.channels
    }
}

/// Whether the sparse kernels can index this layer with 32-bit positions.
pub(crate) fn fits(x_dim: (usize, usize, usize), g: &ConvGeometry, out_hw: (usize, usize)) -> bool {
    let padded = (x_dim.1 + g.padding[0] + g.padding[2]) * (x_dim.2 + g.padding[1] + g.padding[3]);
    padded < u32::MAX as usize && out_hw.0 * out_hw.1 < u32::MAX as usize
}

/// `C⁺ − C⁻ = x⁺ ⊙ col2im(Gᵀ·Q)` of the sectional rule, by the sparse kernels.
///
/// `r` is the relevance as `O × (Ho·Wo)`; `rows` are the nonzero rows of
/// `[R⁺; R⁻]` as (channel, negative section?), positive sections first;
/// `counts` the positive and negative entries of each channel.
pub(crate) fn sectional_contributions<T: Float>(
    x_pos: ArrayView3<T>,
    r: ArrayView2<T>,
    rows: &[(usize, bool)],
    counts: &[(usize, usize)],
    g: &ConvGeometry,
    kernel_hw: (usize, usize),
    out_hw: (usize, usize),
) -> Array3<T> {
    let (c, h, w) = x_pos.dim();
    let shape = Shape {
        channels: c,
        kernel: kernel_hw,
        stride: (g.stride[0], g.stride[1]),
        padded_width: w + g.padding[1] + g.padding[3],
        out_hw,
    };
    let sections = gather_sections(r, rows, |k, negative| if negative { counts[k].1 } else { counts[k].0 }, &shape);
    let padded = padded_channels_last(x_pos, g);
    let bands = bands::<T>(&shape);
    let kernels = kernel_rows(&sections, &padded, &shape, &bands);
    let quotients = sampled_quotients(&sections, rows, &padded, &kernels, &shape, &bands);
    let mut out = Array3::zeros((c, h, w));
    fold_back(&sections, &quotients, &kernels, x_pos, g, &shape, &mut out);
    out
}

/// The nonzeros of `[R⁺; R⁻]`, collected per row in parallel.
fn gather_sections<T: Float>(
    r: ArrayView2<T>,
    rows: &[(usize, bool)],
    nonzeros: impl Fn(usize, bool) -> usize + Sync,
    shape: &Shape,
) -> Sections<T> {
    let wo = shape.out_hw.1;
    let (sy, sx) = shape.stride;
    let wp = shape.padded_width;
    type Row<T> = (Vec<u32>, Vec<u32>, Vec<T>);
    let per_row: Vec<Row<T>> = rows
        .par_iter()
        .map(|&(k, negative)| {
            // Branch-free compaction (the signs are unpredictable): every
            // value is written, the cursor moves on past the kept ones only.
            let len = nonzeros(k, negative) + 1;
            let mut row: Row<T> = (vec![0; len], vec![0; len], vec![T::zero(); len]);
            let mut kept = 0;
            for (j, &v) in r.row(k).iter().enumerate() {
                let m = if negative { -v } else { v };
                row.0[kept] = j as u32;
                row.1[kept] = ((j / wo) * sy * wp + (j % wo) * sx) as u32;
                row.2[kept] = m;
                kept += (m > T::zero()) as usize;
            }
            row.0.truncate(kept);
            row.1.truncate(kept);
            row.2.truncate(kept);
            row
        })
        .collect();
    let mut start = Vec::with_capacity(rows.len() + 1);
    start.push(0);
    for row in &per_row {
        start.push(start.last().expect("non-empty") + row.0.len());
    }
    Sections {
        position: per_row.iter().map(|row| &row.0[..]).collect::<Vec<_>>().concat(),
        pixel: per_row.iter().map(|row| &row.1[..]).collect::<Vec<_>>().concat(),
        value: per_row.iter().map(|row| &row.2[..]).collect::<Vec<_>>().concat(),
        start,
    }
}

/// `x⁺` zero-padded and channels-last: `(H + pt + pb) × (W + pl + pr) × C`.
fn padded_channels_last<T: Float>(x: ArrayView3<T>, g: &ConvGeometry) -> Scratch<T> {
    let (c, h, w) = x.dim();
    let [pt, pl, _, pr] = g.padding;
    let wp = w + pl + pr;
    let hp = h + pt + g.padding[2];
    let mut buf = Scratch::take(hp * wp * c);
    buf.par_chunks_mut(wp * c).enumerate().for_each(|(y, row)| {
        row.fill(T::zero());
        if y < pt || y >= pt + h {
            return;
        }
        for (ch, src) in x.index_axis(Axis(1), y - pt).axis_iter(Axis(0)).enumerate() {
            for (xx, &v) in src.iter().enumerate() {
                row[(pl + xx) * c + ch] = v;
            }
        }
    });
    buf
}

/// Output rows per band, so that a band's input rows take about [`BAND_BYTES`].
fn bands<T>(shape: &Shape) -> Vec<std::ops::Range<usize>> {
    let row_bytes = shape.padded_width * shape.channels * std::mem::size_of::<T>();
    let per_band = (BAND_BYTES / row_bytes.max(1) / shape.stride.0.max(1)).max(1);
    let ho = shape.out_hw.0;
    (0..ho).step_by(per_band).map(|y0| y0..(y0 + per_band).min(ho)).collect()
}

/// The entries of row `i` whose output row lies in `band`.
fn band_entries<T>(s: &Sections<T>, i: usize, band: &std::ops::Range<usize>, wo: usize) -> std::ops::Range<usize> {
    let row = &s.position[s.start[i]..s.start[i + 1]];
    let lo = row.partition_point(|&j| (j as usize) < band.start * wo);
    let hi = row.partition_point(|&j| (j as usize) < band.end * wo);
    s.start[i] + lo..s.start[i] + hi
}

/// Accumulators per block: 8 AVX2 registers of `f32` (or `f64`), so a block's
/// sum stays in registers across all the entries it visits.
fn lanes<T>() -> usize {
    if std::mem::size_of::<T>() == 4 {
        64
    } else {
        32
    }
}

/// Runs a kernel with the best instruction set the CPU offers (AVX2, or
/// AVX-512 where present): the loops are written for autovectorisation, and
/// the crate is built for the baseline x86-64 (SSE2) otherwise. The kernel's
/// body must be inlined into pulp's `#[target_feature]` function, hence a
/// `WithSimd` type per kernel with an `#[inline(always)]` body rather than a
/// closure (whose body LLVM compiles on its own, for SSE2).
macro_rules! vectorised {
    ($name:ident { $($field:ident: $ty:ty),* $(,)? } => $body:expr) => {
        struct $name<'a, T: Float, const L: usize> {
            $($field: $ty,)*
        }
        impl<'a, T: Float, const L: usize> pulp::WithSimd for $name<'a, T, L> {
            type Output = ();
            #[inline(always)]
            fn with_simd<S: pulp::Simd>(self, _: S) {
                let $name { $($field),* } = self;
                $body
            }
        }
    };
}

/// Calls `$kernel::<T, L>` through pulp with `L` the lane block of `T`.
macro_rules! dispatch {
    ($kernel:ident { $($field:ident: $value:expr),* $(,)? }) => {
        if lanes::<T>() == 64 {
            pulp::Arch::new().dispatch($kernel::<T, 64> { $($field: $value),* })
        } else {
            pulp::Arch::new().dispatch($kernel::<T, 32> { $($field: $value),* })
        }
    };
}

vectorised!(AddPatches { pixels: &'a [u32], values: &'a [T], padded: &'a [T], shape: &'a Shape, out: &'a mut [T] }
    => add_patches::<T, L>(pixels, values, padded, shape, out));
vectorised!(QuotientsOf {
    pixels: &'a [u32], values: &'a [T], negative: bool, kernel: &'a [T], padded: &'a [T], shape: &'a Shape, q: &'a mut [T],
} => quotients_of::<T, L>(pixels, values, negative, kernel, padded, shape, q));
vectorised!(GatherRow {
    by_position: &'a ByPosition<T>, kernels: &'a [T], shape: &'a Shape, py: usize, pl: usize, row: &'a mut [T],
} => {
    for (xx, acc) in row.chunks_exact_mut(shape.channels).enumerate() {
        gather_pixel::<T, L>(by_position, kernels, shape, (py, xx + pl), acc);
    }
});

/// `G = S·colsᵀ`: row `i` of `G` (`kh·kw·C`, in `(dy, dx, c)` order) is the
/// sum of the entries' input patches, each scaled by its `|R|`.
fn kernel_rows<T: Float>(s: &Sections<T>, padded: &[T], shape: &Shape, bands: &[std::ops::Range<usize>]) -> Scratch<T> {
    let n = s.start.len() - 1;
    let len = shape.kernel_len();
    let mut kernels = Scratch::take(n * len);
    kernels.fill(T::zero());
    for band in bands {
        kernels.par_chunks_mut(len).enumerate().for_each(|(i, out)| {
            let range = band_entries(s, i, band, shape.out_hw.1);
            if range.is_empty() {
                return;
            }
            let pixels = &s.pixel[range.clone()];
            let values = &s.value[range];
            dispatch!(AddPatches { pixels: pixels, values: values, padded: padded, shape: shape, out: out });
        });
    }
    kernels
}

/// `out[(dy, dx, c)] += Σ_e value[e] · padded[pixel[e] + (dy, dx), c]`, the
/// entries in order, `L` channels at a time in registers.
#[inline(always)]
fn add_patches<T: Float, const L: usize>(pixels: &[u32], values: &[T], padded: &[T], shape: &Shape, out: &mut [T]) {
    let (kh, kw) = shape.kernel;
    let (c, wp) = (shape.channels, shape.padded_width);
    for dy in 0..kh {
        for dx in 0..kw {
            let offset = dy * wp + dx;
            let segment = &mut out[(dy * kw + dx) * c..][..c];
            let mut cb = 0;
            while cb + L <= c {
                let mut acc = [T::zero(); L];
                for (&p, &v) in pixels.iter().zip(values) {
                    let x: &[T; L] = padded[(p as usize + offset) * c + cb..][..L].try_into().expect("L values");
                    for l in 0..L {
                        acc[l] += v * x[l];
                    }
                }
                for (o, a) in segment[cb..cb + L].iter_mut().zip(acc) {
                    *o += a;
                }
                cb += L;
            }
            // The channels beyond the last full block, one at a time.
            for ch in cb..c {
                let mut acc = T::zero();
                for (&p, &v) in pixels.iter().zip(values) {
                    acc += v * padded[(p as usize + offset) * c + ch];
                }
                segment[ch] += acc;
            }
        }
    }
}

/// `Q = ±S ⊘ A` at the entries of `S`, with `A = G·cols` computed only there
/// (sign `−` for the rows of `R⁻`), in the entries' order.
fn sampled_quotients<T: Float>(
    s: &Sections<T>,
    rows: &[(usize, bool)],
    padded: &[T],
    kernels: &[T],
    shape: &Shape,
    bands: &[std::ops::Range<usize>],
) -> Vec<T> {
    let len = shape.kernel_len();
    let mut quotients = vec![T::zero(); s.value.len()];
    // One mutable slice per row of S.
    let mut per_row: Vec<&mut [T]> = Vec::with_capacity(rows.len());
    let mut rest = quotients.as_mut_slice();
    for i in 0..rows.len() {
        let (head, tail) = rest.split_at_mut(s.start[i + 1] - s.start[i]);
        per_row.push(head);
        rest = tail;
    }
    for band in bands {
        per_row.par_iter_mut().enumerate().for_each(|(i, q)| {
            let range = band_entries(s, i, band, shape.out_hw.1);
            if range.is_empty() {
                return;
            }
            let kernel = &kernels[i * len..][..len];
            let negative = rows[i].1;
            let base = s.start[i];
            let q = &mut q[range.start - base..range.end - base];
            let (pixels, values) = (&s.pixel[range.clone()], &s.value[range]);
            dispatch!(QuotientsOf {
                pixels: pixels,
                values: values,
                negative: negative,
                kernel: kernel,
                padded: padded,
                shape: shape,
                q: q,
            });
        });
    }
    quotients
}

#[inline(always)]
fn quotients_of<T: Float, const L: usize>(
    pixels: &[u32],
    values: &[T],
    negative: bool,
    kernel: &[T],
    padded: &[T],
    shape: &Shape,
    q: &mut [T],
) {
    // Four entries at a time share each load of the kernel row; `L / 4`
    // lanes each keep the four sums in registers.
    if L == 64 {
        quotients_by_four::<T, 16>(pixels, values, negative, kernel, padded, shape, q)
    } else {
        quotients_by_four::<T, 8>(pixels, values, negative, kernel, padded, shape, q)
    }
}

/// The dot products `A = G[i]·patch(e)` of four entries at once (`one`
/// repeats the first pixel for a lone entry): each in `Q` lanes over the
/// channel blocks of every kernel offset, the channels beyond the last block
/// in one more sum, then added in order, so that every entry gets the same
/// arithmetic whatever its group.
#[inline(always)]
fn dot_products<T: Float, const Q: usize>(pixels: [u32; 4], kernel: &[T], padded: &[T], shape: &Shape) -> [T; 4] {
    let (kh, kw) = shape.kernel;
    let (c, wp) = (shape.channels, shape.padded_width);
    let full = c / Q * Q;
    let (mut l0, mut l1, mut l2, mut l3) = ([T::zero(); Q], [T::zero(); Q], [T::zero(); Q], [T::zero(); Q]);
    let mut rest = [T::zero(); 4];
    for dy in 0..kh {
        for dx in 0..kw {
            let offset = dy * wp + dx;
            let k = &kernel[(dy * kw + dx) * c..][..c];
            let x0 = &padded[(pixels[0] as usize + offset) * c..][..c];
            let x1 = &padded[(pixels[1] as usize + offset) * c..][..c];
            let x2 = &padded[(pixels[2] as usize + offset) * c..][..c];
            let x3 = &padded[(pixels[3] as usize + offset) * c..][..c];
            for (((kb, b0), (b1, b2)), b3) in k[..full]
                .chunks_exact(Q)
                .zip(x0[..full].chunks_exact(Q))
                .zip(x1[..full].chunks_exact(Q).zip(x2[..full].chunks_exact(Q)))
                .zip(x3[..full].chunks_exact(Q))
            {
                let kb: &[T; Q] = kb.try_into().expect("Q values");
                let (b0, b1): (&[T; Q], &[T; Q]) = (b0.try_into().expect("Q"), b1.try_into().expect("Q"));
                let (b2, b3): (&[T; Q], &[T; Q]) = (b2.try_into().expect("Q"), b3.try_into().expect("Q"));
                for l in 0..Q {
                    l0[l] += kb[l] * b0[l];
                    l1[l] += kb[l] * b1[l];
                    l2[l] += kb[l] * b2[l];
                    l3[l] += kb[l] * b3[l];
                }
            }
            for ch in full..c {
                rest[0] += k[ch] * x0[ch];
                rest[1] += k[ch] * x1[ch];
                rest[2] += k[ch] * x2[ch];
                rest[3] += k[ch] * x3[ch];
            }
        }
    }
    let total = |lanes: [T; Q], rest: T| lanes.iter().fold(T::zero(), |sum, &v| sum + v) + rest;
    [total(l0, rest[0]), total(l1, rest[1]), total(l2, rest[2]), total(l3, rest[3])]
}

#[inline(always)]
fn quotients_by_four<T: Float, const Q: usize>(
    pixels: &[u32],
    values: &[T],
    negative: bool,
    kernel: &[T],
    padded: &[T],
    shape: &Shape,
    q: &mut [T],
) {
    let quotient = |v: T, a: T| if negative { -safe_div(v, a) } else { safe_div(v, a) };
    let mut groups = pixels.chunks_exact(4);
    let mut e = 0;
    for group in &mut groups {
        let a = dot_products::<T, Q>(group.try_into().expect("4 entries"), kernel, padded, shape);
        for k in 0..4 {
            q[e + k] = quotient(values[e + k], a[k]);
        }
        e += 4;
    }
    for &p in groups.remainder() {
        let [a, ..] = dot_products::<T, Q>([p; 4], kernel, padded, shape);
        q[e] = quotient(values[e], a);
        e += 1;
    }
}

/// `x⁺ ⊙ col2im(Gᵀ·Q)`: each input pixel gathers, per kernel offset that
/// reaches it from a nonzero of `Q`, that entry's quotient times the kernel
/// row's segment; parallel over input rows, each sum in a fixed order.
fn fold_back<T: Float>(
    s: &Sections<T>,
    quotients: &[T],
    kernels: &[T],
    x_pos: ArrayView3<T>,
    g: &ConvGeometry,
    shape: &Shape,
    out: &mut Array3<T>,
) {
    let (ho, wo) = shape.out_hw;
    // The entries of each output position (rows ascending), by counting sort.
    let mut start = vec![0usize; ho * wo + 1];
    for &j in &s.position {
        start[j as usize + 1] += 1;
    }
    for k in 0..ho * wo {
        start[k + 1] += start[k];
    }
    let mut fill = start.clone();
    let mut entries: Vec<(u32, T)> = vec![(0, T::zero()); s.position.len()];
    for (i, bounds) in s.start.windows(2).enumerate() {
        let range = bounds[0]..bounds[1];
        for (&j, &q) in s.position[range.clone()].iter().zip(&quotients[range]) {
            entries[fill[j as usize]] = (i as u32, q);
            fill[j as usize] += 1;
        }
    }
    let by_position = ByPosition { start, entries };
    let (pt, pl) = (g.padding[0], g.padding[1]);
    let w = x_pos.dim().2;
    out.axis_iter_mut(Axis(1)).into_par_iter().enumerate().for_each(|(y, mut out_row)| {
        // The row channels-last, then multiplied by x⁺ into the output's layout.
        let mut row = Scratch::take(w * shape.channels);
        dispatch!(GatherRow {
            by_position: &by_position,
            kernels: kernels,
            shape: shape,
            py: y + pt,
            pl: pl,
            row: &mut row
        });
        let row = ndarray::ArrayView2::from_shape((w, shape.channels), &row[..]).expect("w × C");
        ndarray::Zip::from(&mut out_row)
            .and(&x_pos.index_axis(Axis(1), y))
            .and(row.t())
            .for_each(|o, &x, &b| *o = x * b);
    });
}

/// The nonzeros of `Q` by output position: `(row of S, quotient)`.
struct ByPosition<T> {
    start: Vec<usize>,
    entries: Vec<(u32, T)>,
}

/// `acc[c] = Σ_{dy, dx} Σ_{entries at the position that reaches (py, px)
/// through (dy, dx)} q · G[row, (dy, dx, c)]`, at padded pixel `(py, px)`.
#[inline(always)]
fn gather_pixel<T: Float, const L: usize>(
    by_position: &ByPosition<T>,
    kernels: &[T],
    shape: &Shape,
    (py, px): (usize, usize),
    acc_out: &mut [T],
) {
    let (kh, kw) = shape.kernel;
    let (sy, sx) = shape.stride;
    let (ho, wo) = shape.out_hw;
    let c = shape.channels;
    let len = shape.kernel_len();
    // The (position, kernel offset) pairs that reach this pixel, in order.
    let mut reaching = [(0usize, 0usize); 64];
    let mut count = 0;
    let mut overflow = false;
    for dy in 0..kh.min(py + 1) {
        let ty = py - dy;
        if ty % sy != 0 || ty / sy >= ho {
            continue;
        }
        for dx in 0..kw.min(px + 1) {
            let tx = px - dx;
            if tx % sx != 0 || tx / sx >= wo {
                continue;
            }
            let j = (ty / sy) * wo + tx / sx;
            if by_position.start[j] == by_position.start[j + 1] {
                continue;
            }
            if count == reaching.len() {
                overflow = true;
                break;
            }
            reaching[count] = (j, (dy * kw + dx) * c);
            count += 1;
        }
    }
    if overflow {
        // Kernels with more than 64 offsets: the same sum without the list.
        acc_out.fill(T::zero());
        for dy in 0..kh.min(py + 1) {
            let ty = py - dy;
            if ty % sy != 0 || ty / sy >= ho {
                continue;
            }
            for dx in 0..kw.min(px + 1) {
                let tx = px - dx;
                if tx % sx != 0 || tx / sx >= wo {
                    continue;
                }
                let j = (ty / sy) * wo + tx / sx;
                let offset = (dy * kw + dx) * c;
                for &(i, q) in &by_position.entries[by_position.start[j]..by_position.start[j + 1]] {
                    let k = &kernels[i as usize * len + offset..][..c];
                    for (a, &kv) in acc_out.iter_mut().zip(k) {
                        *a += q * kv;
                    }
                }
            }
        }
        return;
    }
    let reaching = &reaching[..count];
    let mut cb = 0;
    while cb + L <= c {
        let mut acc = [T::zero(); L];
        for &(j, offset) in reaching {
            for &(i, q) in &by_position.entries[by_position.start[j]..by_position.start[j + 1]] {
                let k: &[T; L] = kernels[i as usize * len + offset + cb..][..L].try_into().expect("L values");
                for l in 0..L {
                    acc[l] += q * k[l];
                }
            }
        }
        acc_out[cb..cb + L].copy_from_slice(&acc);
        cb += L;
    }
    for (ch, a) in acc_out.iter_mut().enumerate().skip(cb) {
        let mut sum = T::zero();
        for &(j, offset) in reaching {
            for &(i, q) in &by_position.entries[by_position.start[j]..by_position.start[j + 1]] {
                sum += q * kernels[i as usize * len + offset + ch];
            }
        }
        *a = sum;
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::{sectional_contributions_with, ConvGeometry, SectionalKernels};
    use ndarray::Array3;

    /// A small deterministic generator (no dependency on the test order).
    fn values(seed: u64, len: usize) -> Vec<f64> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    /// Relevance with about `density` of its entries nonzero, of both signs.
    fn relevance(seed: u64, dim: (usize, usize, usize), density: f64) -> Array3<f64> {
        let keep = values(seed ^ 0x5eed, dim.0 * dim.1 * dim.2);
        let v = values(seed, dim.0 * dim.1 * dim.2);
        Array3::from_shape_vec(
            dim,
            v.iter().zip(&keep).map(|(&v, &k)| if (k + 1.0) / 2.0 < density { v } else { 0.0 }).collect(),
        )
        .unwrap()
    }

    /// The sparse kernels against the dense GEMMs (an independent formulation:
    /// im2col and three dense products) over kernel sizes (1×1 to 9×9, beyond
    /// the 64 offsets of the gather list), strides, asymmetric padding,
    /// channel counts off the lane blocks and densities from 1% to all.
    #[test]
    fn the_sparse_kernels_agree_with_the_dense_products() {
        let cases = [
            // (C, H, W, O, kernel, stride, padding [t, l, b, r])
            (3, 9, 8, 4, (3, 3), [1, 1], [1, 1, 1, 1]),
            (70, 7, 7, 5, (3, 3), [1, 1], [1, 1, 1, 1]),
            (130, 6, 5, 3, (3, 2), [2, 1], [0, 1, 2, 0]),
            (8, 11, 11, 6, (1, 1), [2, 2], [0, 0, 0, 0]),
            (5, 12, 12, 2, (9, 9), [1, 1], [4, 4, 4, 4]),
            (64, 1, 1, 40, (1, 1), [1, 1], [0, 0, 0, 0]),
            (33, 10, 9, 7, (5, 3), [3, 2], [2, 1, 1, 2]),
        ];
        for (n, &(c, h, w, o, kernel, stride, padding)) in cases.iter().enumerate() {
            let g = ConvGeometry { stride, padding };
            let out_hw = g.output_size((h, w), kernel).unwrap();
            let x = Array3::from_shape_vec((c, h, w), values(n as u64, c * h * w)).unwrap().mapv(|v| v.max(0.0));
            for (k, density) in [0.01, 0.1, 0.3, 1.0].into_iter().enumerate() {
                let r = relevance((n * 10 + k) as u64, (o, out_hw.0, out_hw.1), density);
                let dense =
                    sectional_contributions_with(SectionalKernels::Dense, x.view(), r.view(), &g, kernel).unwrap();
                let sparse =
                    sectional_contributions_with(SectionalKernels::Sparse, x.view(), r.view(), &g, kernel).unwrap();
                let scale = dense.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                let worst = dense.iter().zip(&sparse).fold(0.0f64, |m, (d, s)| m.max((d - s).abs()));
                assert!(worst <= 1e-12 * scale, "case {n}, density {density}: {worst:e} (scale {scale:e})");
                // Zero exactly where the dense result is zero (x⁺ = 0 or no relevance reaches).
                assert!(dense.iter().zip(&sparse).all(|(d, s)| (*d == 0.0) == (*s == 0.0) || d.abs() < 1e-9 * scale));
                // f32 through the same kernels, against f64.
                let sparse32 = sectional_contributions_with(
                    SectionalKernels::Sparse,
                    x.mapv(|v| v as f32).view(),
                    r.mapv(|v| v as f32).view(),
                    &g,
                    kernel,
                )
                .unwrap();
                let worst32 = dense.iter().zip(&sparse32).fold(0.0f64, |m, (d, s)| m.max((d - *s as f64).abs()));
                assert!(worst32 <= 1e-3 * scale, "case {n}, density {density}, f32: {worst32:e}");
            }
        }
    }

    /// The sums have a fixed order: 1 and 2 threads give the same bits.
    #[test]
    fn the_sparse_kernels_do_not_depend_on_the_thread_count() {
        let g = ConvGeometry::square(1, 1);
        let x = Array3::from_shape_vec((96, 20, 20), values(7, 96 * 400)).unwrap().mapv(|v| v.max(0.0) as f32);
        let r = relevance(8, (80, 20, 20), 0.1).mapv(|v| v as f32);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                sectional_contributions_with(SectionalKernels::Sparse, x.view(), r.view(), &g, (3, 3)).unwrap()
            })
        };
        let one = run(1);
        assert!(one.iter().any(|&v| v != 0.0));
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }
}

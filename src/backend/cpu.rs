//! The default CPU backend: im2col + GEMM, parallel with rayon.

use super::im2col::{col2im_into, im2col_columns_into, im2col_into};
use super::matmul::{block_len, block_product, gemm, gemm_into, Kernel, SERIAL_WORK};
use super::workspace::Scratch;
use super::{Backend, ConvGeometry, PoolWindows, RapFlavour, Tensor};
use crate::error::{Result, RspError};
use crate::float::{safe_div, Float};
use ndarray::parallel::prelude::*;
use ndarray::{Array2, Array3, Array4, ArrayView2, ArrayView3, ArrayView4, ArrayViewMut2, Axis, Zip};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// im2col + blocked GEMM kernels, parallel over output blocks with rayon.
/// Results are bit-identical for any number of threads.
///
/// ```
/// use rsp::backend::{Backend, CpuBackend};
/// let a = ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]);
/// let id = ndarray::arr2(&[[1.0f32, 0.0], [0.0, 1.0]]);
/// assert_eq!(CpuBackend::default().matmul(a.view(), id.view()).unwrap(), a);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

/// At most this many bytes of unfolded columns per forward GEMM block (VGG16,
/// 2026-11-28: 256 KB to 1 MB alike; conv1_2's 7 MB blocks were 1.4× slower).
const COLUMN_BLOCK_BYTES: usize = 1 << 20;

fn weight_matrix<T: Float>(w: ArrayView4<T>) -> ArrayView2<T> {
    let (o, c, kh, kw) = w.dim();
    w.into_shape_with_order((o, c * kh * kw)).expect("weights are contiguous")
}

fn output_hw(g: &ConvGeometry, input_hw: (usize, usize), kernel_hw: (usize, usize)) -> (usize, usize) {
    g.output_size(input_hw, kernel_hw).expect("validated by the layer")
}

/// A `rows × cols` matrix view of the start of a scratch buffer.
fn matrix<T: Float>(buf: &mut [T], rows: usize, cols: usize) -> ArrayViewMut2<'_, T> {
    ArrayViewMut2::from_shape((rows, cols), &mut buf[..rows * cols]).expect("buffer is large enough")
}

/// `x` unfolded into a reusable scratch buffer: `(C·kh·kw) × (Ho·Wo)`.
fn unfold<T: Float>(
    x: ArrayView3<T>,
    kernel_hw: (usize, usize),
    g: &ConvGeometry,
    out_hw: (usize, usize),
) -> Scratch<T> {
    let rows = x.dim().0 * kernel_hw.0 * kernel_hw.1;
    let mut buf = Scratch::take(rows * out_hw.0 * out_hw.1);
    im2col_into(x, kernel_hw, g, out_hw, matrix(&mut buf, rows, out_hw.0 * out_hw.1));
    buf
}

/// The `Backend` implementation of the CPU backends, which differ only in how
/// they choose the sectional rule's kernels.
macro_rules! cpu_backend {
    ($backend:ty, $name:expr, $kernels:expr) => {
        impl<T: Float> Backend<T> for $backend {
            fn name(&self) -> &'static str {
                $name
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
                conv2d_with(ConvKernels::Auto, x, w, g)
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
                let w = w.as_standard_layout();
                let s = s.as_standard_layout();
                let s2 = s.view().into_shape_with_order((o, oh * ow)).expect("contiguous");
                let mut cols = Scratch::take(c * kh * kw * oh * ow);
                let mut cols = matrix(&mut cols, c * kh * kw, oh * ow);
                gemm_into(weight_matrix(w.view()).t(), s2, cols.view_mut());
                let mut out = Array3::zeros((c, input_hw.0, input_hw.1));
                col2im_into(cols.view(), (kh, kw), g, (oh, ow), None, out.view_mut());
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
                let mut cols = unfold(x, kernel_hw, g, output_hw(g, (h, wd), kernel_hw));
                let cols = matrix(&mut cols, c * kernel_hw.0 * kernel_hw.1, oh * ow);
                let r = r.as_standard_layout();
                let r2 = r.view().into_shape_with_order((o, oh * ow)).expect("contiguous");
                let grad = gemm(r2, cols.t());
                Ok(grad.into_shape_with_order((o, c, kernel_hw.0, kernel_hw.1)).expect("contiguous"))
            }

            fn matmul(&self, a: ArrayView2<T>, b: ArrayView2<T>) -> Result<Array2<T>> {
                Ok(gemm(a, b))
            }

            fn sectional_contributions(
                &self,
                x_pos: ArrayView3<T>,
                r: ArrayView3<T>,
                g: &ConvGeometry,
                kernel_hw: (usize, usize),
            ) -> Result<Array3<T>> {
                sectional_contributions_with($kernels, x_pos, r, g, kernel_hw)
            }
        }
    };
}

cpu_backend!(CpuBackend, "cpu", SectionalKernels::Auto);
cpu_backend!(DenseCpuBackend, "cpu-dense", SectionalKernels::Dense);

/// Which kernel computes a forward convolution on the CPU backends.
///
/// ```
/// use ndarray::{Array3, Array4};
/// use rsp::backend::{conv2d_with, ConvGeometry, ConvKernels};
/// let x = Array3::from_shape_fn((32, 9, 9), |(c, y, x)| ((c + 2 * y + 3 * x) % 7) as f64 - 3.0);
/// let w = Array4::from_shape_fn((8, 32, 3, 3), |(o, c, u, v)| ((o + c + u * v) % 5) as f64 - 2.0);
/// let g = ConvGeometry::square(1, 1);
/// let im2col = conv2d_with(ConvKernels::Im2col, x.view(), w.view(), &g)?;
/// let winograd = conv2d_with(ConvKernels::Winograd, x.view(), w.view(), &g)?;
/// // Integers: both sums are exact.
/// assert_eq!(im2col, winograd);
/// # Ok::<(), rsp::RspError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConvKernels {
    /// In f32, Winograd's F(2×2, 3×3) for 3×3 stride-1 convolutions of at
    /// least 16 input channels, im2col + GEMM for the rest; in f64 im2col +
    /// GEMM always (what [`CpuBackend`] does).
    ///
    /// f64 is the type for parity with the reference, and im2col rounds
    /// like it: identical input patches give bit-identical outputs wherever
    /// they are. Winograd rounds a patch by its place in a 2×2 tile, so where
    /// an input repeats exactly (a flat region), max-pool windows whose
    /// values were tied can pick another maximum (routing relevance to a
    /// neighbouring pixel). Elsewhere the two agree to rounding.
    #[default]
    Auto,
    /// im2col + GEMM always (the direct sum's terms, in one GEMM).
    Im2col,
    /// Winograd's F(2×2, 3×3) wherever the kernel is 3×3 with stride 1
    /// (im2col + GEMM elsewhere): 2.25× fewer multiplications, rounding a few
    /// units in the last place apart from the direct sum.
    Winograd,
}

/// The forward convolution of one sample `x` (C×H×W) by `w` (O×C×kh×kw) by
/// the given kernels (what [`Backend::conv2d`] runs on the CPU backends with
/// [`ConvKernels::Auto`]). Bit-identical for any number of threads.
pub fn conv2d_with<T: Float>(
    kernels: ConvKernels,
    x: ArrayView3<T>,
    w: ArrayView4<T>,
    g: &ConvGeometry,
) -> Result<Array3<T>> {
    let (c, h, wd) = x.dim();
    let (o, wc, kh, kw) = w.dim();
    if wc != c {
        return Err(RspError::shape("conv2d weights", format!("O×{c}×kh×kw (the input's {c} channels)"), w.shape()));
    }
    let Some(out_hw) = g.output_size((h, wd), (kh, kw)) else {
        return Err(RspError::shape("conv2d input", format!("at least the {kh}×{kw} kernel after padding"), x.shape()));
    };
    let p = out_hw.0 * out_hw.1;
    let w = w.as_standard_layout();
    let winograd = match kernels {
        // f64 keeps im2col's rounding (see `ConvKernels::Auto`).
        ConvKernels::Auto => T::NAME == "f32" && super::winograd::applies(c, (kh, kw), g.stride, out_hw),
        ConvKernels::Winograd => c > 0 && o > 0 && super::winograd::possible((kh, kw), g.stride),
        ConvKernels::Im2col => false,
    };
    if winograd {
        return Ok(super::winograd::conv3x3(x, w.view(), (g.padding[0], g.padding[1]), out_hw));
    }
    let out = if p >= o && o * p * c * kh * kw >= SERIAL_WORK {
        // Unfolded block by block, each block right before its GEMM (while
        // in cache) instead of the whole `(C·kh·kw)×(Ho·Wo)` matrix first,
        // 1.2–1.6× faster on VGG16's large early maps. A block's unfolded
        // columns are at most COLUMN_BLOCK_BYTES (but at least as many
        // columns as the weights have rows), so that they are still in
        // cache when the GEMM packs them (conv1_2's were 7 MB).
        let (m, k) = (o, c * kh * kw);
        let kernel = Kernel::for_shape(m, k, p);
        let mut out = Array2::zeros((o, p));
        // Capped where the weights are small: every block packs them again.
        let capped = (COLUMN_BLOCK_BYTES / (k * std::mem::size_of::<T>())).max(m);
        let block = block_len(p).min(capped);
        out.axis_chunks_iter_mut(Axis(1), block).into_par_iter().enumerate().for_each(|(i, out_block)| {
            let columns = i * block..i * block + out_block.ncols();
            let mut cols = Scratch::take(k * columns.len());
            let mut cols = matrix(&mut cols, k, columns.len());
            im2col_columns_into(x, (kh, kw), g, out_hw, columns, cols.view_mut());
            block_product(weight_matrix(w.view()), cols.view(), out_block, kernel);
        });
        out
    } else {
        let mut cols = unfold(x, (kh, kw), g, out_hw);
        gemm(weight_matrix(w.view()), matrix(&mut cols, c * kh * kw, p).view())
    };
    Ok(out.into_shape_with_order((o, out_hw.0, out_hw.1)).expect("gemm output is contiguous"))
}

/// How the CPU backends run the sectional rule's three products.
///
/// ```
/// use ndarray::{Array3, Axis};
/// use rsp::backend::{sectional_contributions_with, ConvGeometry, SectionalKernels};
/// let x_pos = Array3::from_shape_fn((4, 6, 6), |(c, y, x)| ((c + 2 * y + 3 * x) % 5) as f64);
/// // Relevance on a third of the positions, of both signs.
/// let r = Array3::from_shape_fn((3, 6, 6), |(o, y, x)| match (o + y + x) % 3 {
///     0 => 1.0 + o as f64,
///     1 => -0.5,
///     _ => 0.0,
/// });
/// let g = ConvGeometry::square(1, 1);
/// let dense = sectional_contributions_with(SectionalKernels::Dense, x_pos.view(), r.view(), &g, (3, 3))?;
/// let sparse = sectional_contributions_with(SectionalKernels::Sparse, x_pos.view(), r.view(), &g, (3, 3))?;
/// assert!(dense.iter().zip(&sparse).all(|(d, s)| (d - s).abs() <= 1e-12 * (1.0 + d.abs())));
/// # Ok::<(), rsp::RspError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SectionalKernels {
    /// Per layer and sample, by the measured density of `[R⁺; R⁻]`: the
    /// sparse kernels below [`SPARSE_DENSITY`], the dense GEMMs above (what
    /// [`CpuBackend`] does).
    #[default]
    Auto,
    /// Always the dense GEMMs over the nonzero rows of `[R⁺; R⁻]` (what
    /// [`DenseCpuBackend`] does).
    Dense,
    /// Always the sparse kernels: work in proportion to the nonzeros.
    Sparse,
}

/// The density of `[R⁺; R⁻]` (nonzeros over the entries of its nonzero rows)
/// below which [`SectionalKernels::Auto`] takes the sparse kernels. In
/// `benches/sparsity.rs` they and the dense GEMMs took the same time near
/// 0.25 on VGG16's 64- and 256-channel layers and near 0.125 on its
/// 512-channel ones (see `docs/performance.md`); this lies between.
pub const SPARSE_DENSITY: f64 = 0.2;

/// The CPU backend with the dense kernels only: the engine as it was before
/// the sparse kernels, kept as a baseline for benchmarks (`bench_vgg16
/// --kernels dense`) and as a second path to check them against. Everything
/// else is [`CpuBackend`]'s.
///
/// ```
/// use rsp::backend::{Backend, DenseCpuBackend};
/// let a = ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]);
/// assert_eq!(Backend::<f32>::name(&DenseCpuBackend), "cpu-dense");
/// assert_eq!(DenseCpuBackend.matmul(a.view(), a.view()).unwrap(), ndarray::arr2(&[[7.0, 10.0], [15.0, 22.0]]));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct DenseCpuBackend;

/// `C⁺ − C⁻ = x⁺ ⊙ col2im(Gᵀ·Q)` of the sectional rule for one sample by the
/// given kernels (what [`Backend::sectional_contributions`] returns on the
/// CPU backends): `x_pos` is the layer's input after `max(·, 0)`
/// (`C×H×W`), `r` the relevance at its output (`O×Ho×Wo`).
///
/// Both kernels compute the same sums in different orders; for
/// [`SectionalKernels::Auto`] the choice depends only on the sample, so a
/// batch still gives its samples' bits, for any number of threads.
pub fn sectional_contributions_with<T: Float>(
    kernels: SectionalKernels,
    x_pos: ArrayView3<T>,
    r: ArrayView3<T>,
    g: &ConvGeometry,
    kernel_hw: (usize, usize),
) -> Result<Array3<T>> {
    let (c, h, wd) = x_pos.dim();
    let (o, oh, ow) = r.dim();
    let p = oh * ow;
    let r = r.as_standard_layout();
    let r2 = r.view().into_shape_with_order((o, p)).expect("contiguous");
    // Per channel: the nonzeros of its positive and of its negative section.
    let counts: Vec<(usize, usize)> = r2
        .axis_iter(Axis(0))
        .into_par_iter()
        .map(|row| {
            row.iter().fold((0, 0), |(pos, neg), &v| (pos + (v > T::zero()) as usize, neg + (v < T::zero()) as usize))
        })
        .collect();
    // The non-zero rows of [R⁺; R⁻]: (channel, negative section?).
    let rows: Vec<(usize, bool)> = (0..o)
        .filter(|&k| counts[k].0 > 0)
        .map(|k| (k, false))
        .chain((0..o).filter(|&k| counts[k].1 > 0).map(|k| (k, true)))
        .collect();
    if rows.is_empty() {
        return Ok(Array3::zeros((c, h, wd)));
    }
    let nonzeros: usize = counts.iter().map(|&(pos, neg)| pos + neg).sum();
    let density = nonzeros as f64 / (rows.len() * p) as f64;
    let sparse = match kernels {
        SectionalKernels::Dense => false,
        SectionalKernels::Sparse => true,
        SectionalKernels::Auto => density < SPARSE_DENSITY,
    } && super::sparse::fits((c, h, wd), g, (oh, ow));
    let clock = std::time::Instant::now();
    let out = if sparse {
        super::sparse::sectional_contributions(x_pos, r2, &rows, &counts, g, kernel_hw, (oh, ow))
    } else {
        dense_sectional_contributions(x_pos, r2, &rows, g, kernel_hw, (oh, ow))
    };
    if RECORDING.load(Ordering::Relaxed) > 0 {
        let record = SectionalRecord {
            input: (c, h, wd),
            output: (o, oh, ow),
            kernel_hw,
            density,
            sparse,
            seconds: clock.elapsed().as_secs_f64(),
        };
        RECORDS.lock().unwrap_or_else(|e| e.into_inner()).push(record);
    }
    Ok(out)
}

/// One call of the sectional products on a CPU backend, as
/// [`record_sectional_calls`] reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SectionalRecord {
    /// The layer's input, `C×H×W`.
    pub input: (usize, usize, usize),
    /// The relevance at its output, `O×Ho×Wo`.
    pub output: (usize, usize, usize),
    /// The kernel's height and width.
    pub kernel_hw: (usize, usize),
    /// Nonzeros of `[R⁺; R⁻]` over the entries of its nonzero rows.
    pub density: f64,
    /// Whether the sparse kernels ran (else the dense GEMMs).
    pub sparse: bool,
    /// Wall-clock time of the three products, in seconds.
    pub seconds: f64,
}

/// How many recordings are under way (a call records while it is not zero).
static RECORDING: AtomicUsize = AtomicUsize::new(0);
static RECORDS: Mutex<Vec<SectionalRecord>> = Mutex::new(Vec::new());

/// Runs `f` and returns, beside its result, every call of the sectional
/// products on a CPU backend made meanwhile: the density each layer had, the
/// kernels chosen and the time they took (what `bench_vgg16 --layers`
/// prints). Recording is process-wide: calls made by other threads in the
/// meantime are recorded too, and concurrent recordings see each other's.
///
/// ```
/// use ndarray::Array3;
/// use rsp::backend::{record_sectional_calls, sectional_contributions_with, ConvGeometry, SectionalKernels};
/// let x_pos = Array3::<f32>::ones((2, 4, 4));
/// let r = Array3::from_shape_fn((3, 4, 4), |(o, y, x)| if (o + y + x) % 4 == 0 { 1.0 } else { 0.0 });
/// let (out, calls) = record_sectional_calls(|| {
///     sectional_contributions_with(SectionalKernels::Auto, x_pos.view(), r.view(), &ConvGeometry::square(1, 1), (3, 3))
/// });
/// assert!(out.is_ok());
/// let call = calls.iter().find(|c| c.output == (3, 4, 4)).unwrap();
/// assert_eq!(call.density, 0.25); // 12 of the 48 entries of the three positive rows
/// assert!(!call.sparse); // above SPARSE_DENSITY
/// ```
pub fn record_sectional_calls<R>(f: impl FnOnce() -> R) -> (R, Vec<SectionalRecord>) {
    let before = {
        let records = RECORDS.lock().unwrap_or_else(|e| e.into_inner());
        RECORDING.fetch_add(1, Ordering::SeqCst);
        records.len()
    };
    let result = f();
    let mut records = RECORDS.lock().unwrap_or_else(|e| e.into_inner());
    let mine = records[before.min(records.len())..].to_vec();
    if RECORDING.fetch_sub(1, Ordering::SeqCst) == 1 {
        records.clear();
    }
    (result, mine)
}

/// The sectional rule's products as three GEMMs: one im2col of `x⁺` shared by
/// all products, and the positive and negative sections stacked so that each
/// step is one GEMM: `[G⁺; G⁻] = [R⁺; R⁻]·colsᵀ`, `[A⁺; A⁻] = [G⁺; G⁻]·cols`,
/// `C⁺ − C⁻ = x⁺ ⊙ col2im([G⁺; G⁻]ᵀ·[S⁺; −S⁻])`.
///
/// Rows of `[R⁺; R⁻]` that are all zero (a channel with no positive, or no
/// negative, relevance) give zero rows of `G` and `A` and a zero quotient,
/// so they are left out of all three products (`rows` are the others): exact,
/// and it halves the work where the relevance of a channel has one sign (as
/// at the start layer, where it is the activation times one weight per
/// channel). Scratch buffers are reused across calls, and the unfolded `x⁺`
/// buffer receives `Gᵀ·S` once it is no longer needed.
fn dense_sectional_contributions<T: Float>(
    x_pos: ArrayView3<T>,
    r2: ArrayView2<T>,
    rows: &[(usize, bool)],
    g: &ConvGeometry,
    kernel_hw: (usize, usize),
    (oh, ow): (usize, usize),
) -> Array3<T> {
    let (c, h, wd) = x_pos.dim();
    let (p, ck) = (oh * ow, c * kernel_hw.0 * kernel_hw.1);
    let mut out = Array3::zeros((c, h, wd));
    let n = rows.len();
    let mut sections_buf = Scratch::take(n * p);
    let mut sections = matrix(&mut sections_buf, n, p);
    sections.axis_iter_mut(Axis(0)).into_par_iter().zip(rows.par_iter()).for_each(|(mut dst, &(k, negative))| {
        let src = r2.row(k);
        if negative {
            Zip::from(&mut dst).and(&src).for_each(|d, &v| *d = (-v).max(T::zero()));
        } else {
            Zip::from(&mut dst).and(&src).for_each(|d, &v| *d = v.max(T::zero()));
        }
    });
    let mut cols_buf = unfold(x_pos, kernel_hw, g, (oh, ow));
    let mut cols = matrix(&mut cols_buf, ck, p);
    let kernels = gemm(sections.view(), cols.t());
    let mut quotients_buf = Scratch::take(n * p);
    let mut quotients = matrix(&mut quotients_buf, n, p);
    gemm_into(kernels.view(), cols.view(), quotients.view_mut());
    // S⁺ = R⁺ ⊘ A⁺ on M⁺ and −(R⁻ ⊘ A⁻) on M⁻, in place of A.
    quotients.axis_iter_mut(Axis(0)).into_par_iter().zip(sections.axis_iter(Axis(0))).zip(rows.par_iter()).for_each(
        |((mut a, rv), &(_, negative))| {
            Zip::from(&mut a).and(&rv).for_each(|a, &rv| {
                *a = match (rv > T::zero(), negative) {
                    (false, _) => T::zero(),
                    (true, false) => safe_div(rv, *a),
                    (true, true) => -safe_div(rv, *a),
                };
            });
        },
    );
    // cols is not needed any more: it receives Gᵀ·S.
    gemm_into(kernels.t(), quotients.view(), cols.view_mut());
    col2im_into(cols.view(), kernel_hw, g, (oh, ow), Some(x_pos), out.view_mut());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ReferenceBackend;

    fn close(a: &Array3<f64>, b: &Array3<f64>) -> bool {
        let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        a.dim() == b.dim() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-12 * scale)
    }

    /// The convolution that unfolds its input block by block, right before each
    /// block's GEMM, gives the same bits as unfolding the whole input first and
    /// multiplying (the same blocks and products), on maps large enough to take
    /// that path, with blocks that end mid-row, and strided, padded geometries.
    #[test]
    fn blockwise_unfolding_equals_the_whole_unfolding_bit_for_bit() {
        let geoms = [ConvGeometry::square(1, 1), ConvGeometry { stride: [2, 1], padding: [1, 0, 2, 1] }];
        for g in &geoms {
            for kernel in [(3, 3), (1, 1), (2, 5)] {
                let x =
                    Array3::from_shape_fn((40, 41, 37), |(c, i, j)| ((c * 31 + i * 7 + j * 3) % 17) as f32 * 0.1 - 0.6);
                let w = Array4::from_shape_fn((8, 40, kernel.0, kernel.1), |(o, c, u, v)| {
                    ((o * 5 + c * 3 + u * 2 + v) % 11) as f32 * 0.07 - 0.3
                });
                let out_hw = g.output_size((41, 37), kernel).unwrap();
                let p = out_hw.0 * out_hw.1;
                assert!(p >= 8 && 8 * p * 40 * kernel.0 * kernel.1 >= SERIAL_WORK, "the blockwise path is taken");
                assert_ne!(block_len(p) % out_hw.1, 0, "blocks end mid-row");
                let mut cols = unfold(x.view(), kernel, g, out_hw);
                let rows = 40 * kernel.0 * kernel.1;
                let whole = gemm(weight_matrix(w.view()), matrix(&mut cols, rows, p).view());
                let blockwise = conv2d_with(ConvKernels::Im2col, x.view(), w.view(), g).unwrap();
                assert_eq!(blockwise.into_shape_with_order((8, p)).unwrap(), whole, "{g:?} {kernel:?}");
            }
        }
    }

    /// `ConvKernels::Auto` keeps im2col's rounding in f64: identical input
    /// patches give bit-identical outputs wherever they lie (so max-pool ties
    /// stay ties, as in the reference), and f32 takes Winograd's kernels,
    /// which agree with im2col to rounding.
    #[test]
    fn auto_keeps_ties_in_f64_and_takes_winograd_in_f32() {
        // Period 5 in both directions; the padding differs only at the border.
        let x =
            Array3::from_shape_fn((16, 30, 30), |(c, i, j)| ((c * 7 + (i % 5) * 3 + (j % 5) * 11) % 13) as f64 / 7.0);
        let w =
            Array4::from_shape_fn((4, 16, 3, 3), |(o, c, u, v)| ((o * 5 + c * 3 + u * 2 + v) % 11) as f64 * 0.07 - 0.3);
        let g = ConvGeometry::square(1, 1);
        let out = conv2d_with(ConvKernels::Auto, x.view(), w.view(), &g).unwrap();
        for (o, y, xx) in [(0, 1, 1), (1, 2, 3), (3, 7, 4)] {
            for (dy, dx) in [(0, 5), (5, 0), (10, 15)] {
                assert_eq!(out[[o, y, xx]].to_bits(), out[[o, y + dy, xx + dx]].to_bits());
            }
        }
        let im2col = conv2d_with(ConvKernels::Im2col, x.view(), w.view(), &g).unwrap();
        assert_eq!(out, im2col);
        let (x32, w32) = (x.mapv(|v| v as f32), w.mapv(|v| v as f32));
        let fast = conv2d_with(ConvKernels::Auto, x32.view(), w32.view(), &g).unwrap();
        let winograd = conv2d_with(ConvKernels::Winograd, x32.view(), w32.view(), &g).unwrap();
        assert_eq!(fast, winograd);
        assert!(fast.iter().zip(&im2col).all(|(&f, &e)| (f as f64 - e).abs() <= 1e-5 * (1.0 + e.abs())));
    }

    /// Empty channel dimensions give zeros (or an empty output), not a panic,
    /// whichever kernel is asked for.
    #[test]
    fn empty_channels_are_handled_by_every_kernel() {
        let g = ConvGeometry::square(1, 1);
        for kernels in [ConvKernels::Auto, ConvKernels::Im2col, ConvKernels::Winograd] {
            let none_in =
                conv2d_with(kernels, Array3::<f32>::zeros((0, 6, 6)).view(), Array4::zeros((3, 0, 3, 3)).view(), &g);
            assert_eq!(none_in.unwrap(), Array3::<f32>::zeros((3, 6, 6)));
            let none_out =
                conv2d_with(kernels, Array3::<f32>::ones((20, 6, 6)).view(), Array4::zeros((0, 20, 3, 3)).view(), &g);
            assert_eq!(none_out.unwrap().dim(), (0, 6, 6));
        }
    }

    /// Every kernel against the reference on strided, asymmetrically padded,
    /// rectangular geometries, with relevance of both signs and zero rows.
    #[test]
    fn kernels_match_the_reference_backend() {
        let geoms = [
            ConvGeometry::square(1, 1),
            ConvGeometry { stride: [2, 3], padding: [0, 2, 1, 0] },
            ConvGeometry { stride: [1, 2], padding: [2, 0, 0, 1] },
        ];
        for (t, g) in geoms.iter().enumerate() {
            for kernel in [(3, 3), (2, 4), (1, 1)] {
                let x = Array3::from_shape_fn((5, 11, 13), |(c, i, j)| {
                    ((c * 31 + i * 7 + j * 3 + t) % 17) as f64 * 0.1 - 0.6
                });
                let w = Array4::from_shape_fn((6, 5, kernel.0, kernel.1), |(o, c, u, v)| {
                    ((o * 5 + c * 3 + u + v) % 7) as f64 * 0.2 - 0.5
                });
                let out_hw = g.output_size((11, 13), kernel).unwrap();
                let cpu: Array3<f64> = CpuBackend.conv2d(x.view(), w.view(), g).unwrap();
                assert!(
                    close(&cpu, &ReferenceBackend.conv2d(x.view(), w.view(), g).unwrap()),
                    "conv2d {g:?} {kernel:?}"
                );
                let r = Array3::from_shape_fn((6, out_hw.0, out_hw.1), |(o, i, j)| {
                    if o == 2 {
                        0.0
                    } else if o == 4 {
                        ((i + j) % 3) as f64 * 0.3
                    } else {
                        ((o * 13 + i * 5 + j * 11) % 9) as f64 * 0.25 - 1.0
                    }
                });
                let adj: Array3<f64> = CpuBackend.conv2d_input_adjoint(r.view(), w.view(), g, (11, 13)).unwrap();
                assert!(
                    close(&adj, &ReferenceBackend.conv2d_input_adjoint(r.view(), w.view(), g, (11, 13)).unwrap()),
                    "adjoint {g:?}"
                );
                let wg: Array4<f64> = CpuBackend.conv2d_weight_grad(x.view(), r.view(), g, kernel).unwrap();
                let wg_ref = ReferenceBackend.conv2d_weight_grad(x.view(), r.view(), g, kernel).unwrap();
                assert!(wg.iter().zip(&wg_ref).all(|(a, b)| (a - b).abs() < 1e-12), "weight grad {g:?}");
                let x_pos = x.mapv(|v| v.max(0.0));
                let sec = CpuBackend.sectional_contributions(x_pos.view(), r.view(), g, kernel).unwrap();
                let sec_ref = ReferenceBackend.sectional_contributions(x_pos.view(), r.view(), g, kernel).unwrap();
                assert!(close(&sec, &sec_ref), "sectional {g:?} {kernel:?}");
            }
        }
    }
}

//! PyTorch-compatible bilinear resizing, which brings Grad-CAM's feature-level
//! map to the input's resolution.

use crate::error::{Result, RspError};
use ndarray::{Array2, ArrayView2};
use num_traits::Float;

/// Bilinear resize matching PyTorch's
/// `F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False)`.
///
/// Per axis: `src = (dst + 0.5) * in / out - 0.5`, clamped below at 0;
/// `i0 = floor(src)`, `i1 = min(i0 + 1, in - 1)`, `lambda = src - i0`, and the
/// output blends `x[i0]` and `x[i1]` with weights `1 - lambda` and `lambda`.
/// Arithmetic is done in `T`, as PyTorch does for `f32`/`f64` tensors. Note
/// this does not antialias when shrinking (neither does PyTorch by default).
///
/// # Errors
/// [`RspError::InvalidArgument`] if `h` is empty but the output is not.
///
/// ```
/// use ndarray::array;
/// use rsp::attribution::upsample_bilinear;
/// let x = array![[1.0, 2.0], [3.0, 4.0]];
/// let y = upsample_bilinear(x.view(), 4, 4)?;
/// assert_eq!(y.row(0).to_vec(), vec![1.0, 1.25, 1.75, 2.0]);
/// # Ok::<(), rsp::RspError>(())
/// ```
pub fn upsample_bilinear<T: Float>(h: ArrayView2<T>, out_h: usize, out_w: usize) -> Result<Array2<T>> {
    let (in_h, in_w) = h.dim();
    if out_h == 0 || out_w == 0 {
        return Ok(Array2::zeros((out_h, out_w)));
    }
    if in_h == 0 || in_w == 0 {
        return Err(RspError::InvalidArgument(format!(
            "cannot interpolate an empty {in_h}x{in_w} map to {out_h}x{out_w}"
        )));
    }
    let ys = axis_weights::<T>(in_h, out_h);
    let xs = axis_weights::<T>(in_w, out_w);
    Ok(Array2::from_shape_fn((out_h, out_w), |(oy, ox)| {
        let (y0, y1, ly) = ys[oy];
        let (x0, x1, lx) = xs[ox];
        let one = T::one();
        let top = (one - lx) * h[[y0, x0]] + lx * h[[y0, x1]];
        let bottom = (one - lx) * h[[y1, x0]] + lx * h[[y1, x1]];
        (one - ly) * top + ly * bottom
    }))
}

/// PyTorch's source indices and weight for each output index of one axis
/// (`align_corners=False`, no explicit scale factor).
fn axis_weights<T: Float>(input: usize, output: usize) -> Vec<(usize, usize, T)> {
    let cast = |n: usize| T::from(n).unwrap_or_else(T::infinity);
    let half = T::from(0.5).unwrap_or_else(T::zero);
    let scale = cast(input) / cast(output);
    (0..output)
        .map(|dst| {
            let src = (scale * (cast(dst) + half) - half).max(T::zero());
            // src >= 0, so truncation is floor; min() guards float rounding.
            let i0 = src.to_usize().unwrap_or(0).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            let lambda = (src - cast(i0)).max(T::zero()).min(T::one());
            (i0, i1, lambda)
        })
        .collect()
}

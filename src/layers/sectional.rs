//! The sectional rule, shared by [`Conv2d`](super::Conv2d) (every layer but
//! the input layer) and [`Linear`](super::Linear) (a 1×1 convolution on a 1×1 map).
//!
//! With `x⁺ = max(x, 0)` and the comparative gradient kernels `G^±` (weight
//! gradients of the convolution with `R^±` as upstream gradient, so the
//! layer's own weights never enter), the backend computes `C⁺ − C⁻`. Then:
//! * kernel height 1: `R_in = C⁺ − C⁻`;
//! * otherwise double and shift uniformly over the whole sample:
//!   `C = 2 (C⁺ − C⁻)`, `R_in = C − [C ≠ 0] · (Σ R ⊘ #{C ≠ 0})`,
//!   which conserves `Σ R` and makes below-average contributors hostile.

use crate::backend::{Backend, ConvGeometry};
use crate::error::Result;
use crate::float::{safe_div, Float};
use ndarray::parallel::prelude::*;
use ndarray::{Array3, ArrayView3, Zip};

/// Relevance at the input of a convolution-like layer by the sectional rule.
///
/// `x` is the layer's input sample (`C×H×W`), `r` the relevance at its output
/// (`O×Ho×Wo`); `kernel_hw` and `geom` describe the convolution.
///
pub(crate) fn sectional_rule<T: Float>(
    backend: &dyn Backend<T>,
    x: ArrayView3<T>,
    r: ArrayView3<T>,
    geom: &ConvGeometry,
    kernel_hw: (usize, usize),
) -> Result<Array3<T>> {
    let mut x_pos = x.to_owned();
    x_pos.par_mapv_inplace(|v| v.max(T::zero()));
    let mut c = backend.sectional_contributions(x_pos.view(), r, geom, kernel_hw)?;
    if kernel_hw.0 == 1 {
        return Ok(c);
    }
    let total: T = r.iter().copied().sum();
    // An integer count: the same whatever the order, so it may run in parallel.
    let nonzero = c.par_iter().filter(|&&v| v != T::zero()).count();
    let shift = safe_div(total, T::of(nonzero as f64));
    let two = T::of(2.0);
    Zip::from(&mut c).par_for_each(|v| {
        if *v != T::zero() {
            *v = two * *v - shift;
        }
    });
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;

    #[test]
    fn the_sectional_rule_conserves_relevance() {
        let x = Array3::from_shape_fn((2, 4, 4), |(c, i, j)| (c + i + j) as f64 * 0.1);
        let r = Array3::from_shape_fn((3, 4, 4), |(o, i, j)| (o as f64 - 1.0) * 0.2 + (i * j) as f64 * 0.01);
        let rin = sectional_rule(&CpuBackend, x.view(), r.view(), &ConvGeometry::square(1, 1), (3, 3)).unwrap();
        assert!((rin.sum() - r.sum()).abs() < 1e-12);
    }
}

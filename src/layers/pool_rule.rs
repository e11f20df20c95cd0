//! The RSP rule shared by max and average pooling:
//! `x̃ = x + 1e-9`, `z = pool(x̃)`, with the signed parts `P = max(R,0)`, `N = min(R,0)`:
//! `R_in = x̃ ⊙ poolᵀ(P ⊘ z) + x̃ ⊙ poolᵀ(N ⊘ z)` (the multiplier is `x̃`, not `x`).

use crate::error::Result;
use crate::float::{safe_div, Float};
use ndarray::{Array3, ArrayView3, Zip};

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

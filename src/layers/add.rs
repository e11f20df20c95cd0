//! The residual sum `z = a + b` (a graph node, not a [`Layer`](super::Layer)):
//! forward, gradient and its RSP rule.
//!
//! RSP rule: `ã = max(a,0) + 1e-9`, `b̃ = max(b,0) + 1e-9`,
//! `R_a = ã ⊙ (R ⊘ (ã + b̃))`, `R_b = b̃ ⊙ (R ⊘ (ã + b̃))`: the signed
//! relevance is split in proportion to the clamped inputs, and conserved.

use crate::float::Float;
use ndarray::{ArrayD, ArrayViewD};

/// Relevance of the two summands of `a + b` given the relevance `r` of the sum.
///
/// ```
/// use rsp::layers::add_rule;
/// use rsp::ndarray::arr1;
/// let (ra, rb) = add_rule(arr1(&[3.0f64, -1.0]).into_dyn().view(), arr1(&[1.0, 2.0]).into_dyn().view(),
///                         arr1(&[4.0, 1.0]).into_dyn().view());
/// assert!((ra[0] - 3.0).abs() < 1e-8 && (rb[0] - 1.0).abs() < 1e-8); // 3:1
/// assert!(ra[1].abs() < 1e-8 && (rb[1] - 1.0).abs() < 1e-8);         // a ≤ 0 gets ~nothing
/// ```
pub fn add_rule<T: Float>(a: ArrayViewD<T>, b: ArrayViewD<T>, r: ArrayViewD<T>) -> (ArrayD<T>, ArrayD<T>) {
    crate::backend::rules::add_rule(a, b, r)
}

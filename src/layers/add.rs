//! The residual sum `z = a + b` (a graph node, not a [`Layer`](super::Layer)):
//! forward, gradient and its RSP rule.
//!
//! RSP rule: `ã = max(a,0) + 1e-9`, `b̃ = max(b,0) + 1e-9`,
//! `R_a = ã ⊙ (R ⊘ (ã + b̃))`, `R_b = b̃ ⊙ (R ⊘ (ã + b̃))`: the signed
//! relevance is split in proportion to the clamped inputs, and conserved.
//!
//! LRP rule ([`add_lrp_rule`]): in proportion to the inputs themselves (ε),
//! or to their positive parts (α1β0).

use super::LrpRule;
use crate::float::{safe_div, Float};
use ndarray::{ArrayD, ArrayViewD, Zip};

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
    let eps = T::eps9();
    let mut ra = ArrayD::zeros(r.raw_dim());
    let mut rb = ArrayD::zeros(r.raw_dim());
    Zip::from(&mut ra).and(&mut rb).and(&a).and(&b).and(&r).for_each(|ra, rb, &av, &bv, &rv| {
        let at = av.max(T::zero()) + eps;
        let bt = bv.max(T::zero()) + eps;
        let s = safe_div(rv, at + bt);
        *ra = at * s;
        *rb = bt * s;
    });
    (ra, rb)
}

/// LRP of the residual sum `z = a + b`: the relevance `r` of the sum is shared
/// in proportion to the contributions. ε: `S = R ⊘ (a + b + ε·sign(a + b))`,
/// `R_a = a ⊙ S`, `R_b = b ⊙ S`; α1β0: `S = R ⊘ (a⁺ + b⁺)`, `R_a = a⁺ ⊙ S`,
/// `R_b = b⁺ ⊙ S`.
///
pub(crate) fn add_lrp_rule<T: Float>(
    a: ArrayViewD<T>,
    b: ArrayViewD<T>,
    r: ArrayViewD<T>,
    rule: LrpRule,
) -> (ArrayD<T>, ArrayD<T>) {
    let mut ra = ArrayD::zeros(r.raw_dim());
    let mut rb = ArrayD::zeros(r.raw_dim());
    Zip::from(&mut ra).and(&mut rb).and(&a).and(&b).and(&r).for_each(|ra, rb, &av, &bv, &rv| {
        let (at, bt) = match rule {
            LrpRule::Epsilon(_) => (av, bv),
            LrpRule::Alpha1Beta0 => (av.max(T::zero()), bv.max(T::zero())),
        };
        let s = safe_div(rv, rule.stabilise(at + bt));
        *ra = at * s;
        *rb = bt * s;
    });
    (ra, rb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr1;

    #[test]
    fn lrp_shares_the_sum_in_proportion_to_the_inputs() {
        let (a, b, r) = (arr1(&[3.0, -1.0]).into_dyn(), arr1(&[1.0, 2.0]).into_dyn(), arr1(&[4.0, 1.0]).into_dyn());
        let (ra, rb) = add_lrp_rule(a.view(), b.view(), r.view(), LrpRule::Epsilon(0.0));
        assert_eq!((ra[0], rb[0]), (3.0, 1.0));
        assert_eq!((ra[1], rb[1]), (-1.0, 2.0)); // a negative input takes negative relevance
        let (ra, rb) = add_lrp_rule(a.view(), b.view(), r.view(), LrpRule::Alpha1Beta0);
        assert_eq!((ra[1], rb[1]), (0.0, 1.0));
    }
}

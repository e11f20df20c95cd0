//! The class-contrastive members of the LRP family: CLRP (Gu, Yang & Tresp,
//! ACCV 2018) and SGLRP (Iwana, Kuroki & Uchida, ICCV Workshops 2019).
//!
//! Both propagate with the LRP-α1β0 composite of `lrp.rs` ([`Lrp::alpha1_beta0`]):
//! the z⁺ rule on every convolution and linear layer whose input is
//! non-negative (every layer after a ReLU) and z^B on the input convolution —
//! bounded Deep Taylor decomposition, the propagation both papers build on.
//! What makes them contrastive is the relevance they start from at the logits:
//!
//! * **SGLRP** ([`Sglrp`], one walk): the gradient of the target's softmax
//!   probability `p_t` with respect to the logits, `R_t = p_t (1 − p_t)` and
//!   `R_n = −p_t p_n` for `n ≠ t`. The seed sums to zero; the other classes
//!   enter with negative relevance in proportion to their probability.
//! * **CLRP** (two walks, [`clrp_seeds_batch`], [`clrp_combine_batch`]): the target's relevance `R_target`, seeded with
//!   `|y_t|` at the target, minus the relevance of the *dual* virtual class,
//!   seeded with `|y_n|` at every other class (the paper's CLRP1 and its
//!   released code's default), rescaled to the same total:
//!   `R = R_target − (Σ R_target / Σ R_dual) · R_dual`. The paper's CLRP map is
//!   its positive part ([`Explanation::positive`](crate::Explanation::positive));
//!   the negative part is where the other classes' evidence outweighs the target's.
//!
//! The formulas, and where these differ from the authors' released code, are in
//! `docs/methods.md`.

use super::lrp::Lrp;
use super::walk::{LayerStep, Rules, TensorRules};
use crate::backend::{Backend, Tensor};
use crate::error::Result;
use crate::float::Float;
use crate::layers::{Layer, RuleContext};
use ndarray::{ArrayD, ArrayView1, ArrayViewD, IxDyn};

/// SGLRP: the LRP-α1β0 composite seeded with the softmax gradient of the
/// target (see the module's documentation). Also usable with
/// [`crate::Network::explain_rules`]; [`crate::Method::Sglrp`] runs it.
///
/// ```
/// use rsp::attribution::{Rules, Sglrp};
/// let logits = rsp::ndarray::arr1(&[0.0f64, 0.0]);
/// // Two equal logits: p = (½, ½), so the seed is (¼, −¼).
/// let seed = Rules::<f64>::seed(&Sglrp, logits.view(), 0);
/// assert_eq!(seed.into_raw_vec_and_offset().0, vec![0.25, -0.25]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Sglrp;

impl<T: Float> Rules<T> for Sglrp {
    fn name(&self) -> &'static str {
        "sglrp"
    }

    fn layer(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        Rules::<T>::layer(&Lrp::alpha1_beta0(), backend, layer, x, relevance, ctx)
    }

    fn add(&self, a: ArrayViewD<T>, b: ArrayViewD<T>, relevance: ArrayViewD<T>) -> Result<(ArrayD<T>, ArrayD<T>)> {
        Rules::<T>::add(&Lrp::alpha1_beta0(), a, b, relevance)
    }

    fn on_tensors(&self) -> Option<&dyn TensorRules<T>> {
        Some(self)
    }

    /// `∂p_t/∂y`: `p_t (1 − p_t)` at the target, `−p_t p_n` elsewhere, with
    /// `p = softmax(y)` computed from `y − max y` (no overflow).
    fn seed(&self, logits: ArrayView1<T>, target: usize) -> ArrayD<T> {
        let top = logits.iter().copied().fold(T::neg_infinity(), T::max);
        let exp: Vec<T> = logits.iter().map(|&y| (y - top).exp()).collect();
        let total: T = exp.iter().copied().sum();
        let p_target = exp[target] / total;
        let mut seed = ArrayD::zeros(IxDyn(&[logits.len()]));
        for (n, &e) in exp.iter().enumerate() {
            seed[[n]] = if n == target { p_target * (T::one() - p_target) } else { -(p_target * (e / total)) };
        }
        seed
    }
}

/// SGLRP on the backend: LRP-α1β0's tensor rules from the softmax gradient.
impl<T: Float> TensorRules<T> for Sglrp {
    fn layer(&self, step: &LayerStep<'_, T>) -> Result<Tensor<T>> {
        TensorRules::<T>::layer(&Lrp::alpha1_beta0(), step)
    }

    fn add(
        &self,
        backend: &dyn Backend<T>,
        a: &Tensor<T>,
        b: &Tensor<T>,
        relevance: &Tensor<T>,
    ) -> Result<(Tensor<T>, Tensor<T>)> {
        TensorRules::<T>::add(&Lrp::alpha1_beta0(), backend, a, b, relevance)
    }

    fn seed(&self, backend: &dyn Backend<T>, logits: &Tensor<T>, classes: &[usize]) -> Result<Tensor<T>> {
        backend.softmax_gradient_batch(logits, classes)
    }
}

/// CLRP's two seeds at the logits of every sample (`N×K`): `|y_t|` at the
/// target, and the dual virtual class, `|y_n|` at every other class.
pub(crate) fn clrp_seeds_batch<T: Float>(
    backend: &dyn Backend<T>,
    logits: &Tensor<T>,
    classes: &[usize],
) -> Result<(Tensor<T>, Tensor<T>)> {
    let magnitudes = backend.abs(logits)?;
    let target_seed = backend.class_entries_batch(&magnitudes, classes)?;
    // |y_t| − |y_t| = 0 at the target, |y_n| − 0 = |y_n| elsewhere: the host seed's bits.
    let dual_seed = backend.sub_batch(&magnitudes, &target_seed)?;
    Ok((target_seed, dual_seed))
}

/// CLRP of every sample from the relevance of its two walks (LRP-α1β0 from
/// each of [`clrp_seeds_batch`]): `R_target − (Σ R_target / Σ R_dual) · R_dual`,
/// computed as `R_target + (−scale) · R_dual` (the same bits).
pub(crate) fn clrp_combine_batch<T: Float>(
    backend: &dyn Backend<T>,
    target_relevance: &Tensor<T>,
    dual_relevance: &Tensor<T>,
) -> Result<Tensor<T>> {
    let (t, d) = (backend.sample_sums_batch(target_relevance)?, backend.sample_sums_batch(dual_relevance)?);
    let scale = backend.stabilised_divide_batch(&t, &d, None)?;
    backend.scaled_add_per_sample(target_relevance, &backend.scale(&scale, -T::one())?, dual_relevance)
}

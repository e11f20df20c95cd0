//! RSP for one sample: the forward pass, the start relevance at the start
//! layer (single-class or comparative, `backend/start.rs`), then the layers' RSP rules
//! back to the input (`walk.rs`, each layer's `rsp_backward`).

use super::walk::RspRules;
use super::{HostileClasses, Plan, RspOptions, Sample, StartRule, Target};
use crate::backend::start::{comparative_start, single_class_start};
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::network::{Activations, Network, Source};
use ndarray::{Array3, ArrayD, ArrayView1, ArrayViewD, Axis, Ix3, IxDyn};

/// The hostile classes of one sample.
fn hostile_set<T: Float>(rule: &HostileClasses, logits: ArrayView1<T>, target: usize) -> Result<Vec<usize>> {
    let classes = logits.len();
    let others = (0..classes).filter(|&c| c != target);
    Ok(match rule {
        HostileClasses::PredictedPresent => others.filter(|&c| logits[c] > T::zero()).collect(),
        HostileClasses::TopK(k) => {
            let mut ranked: Vec<usize> = others.collect();
            // Stable sort: ties keep the lower index first.
            ranked.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap_or(std::cmp::Ordering::Equal));
            ranked.truncate(*k);
            ranked
        }
        HostileClasses::Explicit(list) => {
            let mut out = Vec::new();
            for &c in list {
                if c >= classes {
                    return Err(RspError::TargetOutOfRange { target: c, classes });
                }
                if c != target && !out.contains(&c) {
                    out.push(c);
                }
            }
            out
        }
    })
}

/// The start relevance of one sample and its hostile classes.
pub(crate) struct Start<T: Float> {
    pub relevance: ArrayD<T>,
    pub hostile: Vec<usize>,
}

impl<T: Float> Network<T> {
    /// RSP on one sample `x` (`C×H×W`), the `n`-th of its batch.
    pub(crate) fn rsp_sample(
        &self,
        x: ArrayViewD<'_, T>,
        n: usize,
        target: &Target,
        options: &RspOptions,
        plan: Plan,
    ) -> Result<Sample<T>> {
        let acts = self.forward_sample(x)?;
        let class = target.class_of(n, self.logits_of(&acts)?);
        let start = self.rsp_start(&acts, class, plan, options)?;
        self.rsp_propagate(&acts, class, start, plan, options)
    }

    /// The logits of one sample's activations, refused if the forward pass overflowed.
    pub(crate) fn logits_of<'s>(&self, acts: &'s Activations<'_, T>) -> Result<ArrayView1<'s, T>> {
        let logits = acts.outputs.last().expect("non-empty");
        // Finite inputs and weights can still overflow (values near the float's range).
        ensure_finite(logits, "logits (the forward pass overflowed the float range)")?;
        Ok(logits.view().into_dimensionality().expect("checked logits vector"))
    }

    /// The start relevance of one sample (and its hostile classes) from its activations.
    pub(crate) fn rsp_start(
        &self,
        acts: &Activations<'_, T>,
        target: usize,
        plan: Plan,
        options: &RspOptions,
    ) -> Result<Start<T>> {
        let start = plan.start.expect("RSP has a start layer");
        let logits = self.logits_of(acts)?;
        let grad_of = |class: usize| -> Result<Array3<T>> {
            let mut seed = ArrayD::zeros(IxDyn(&[logits.len()]));
            seed[[class]] = T::one();
            let g = self.gradient_to(acts, seed, Source::Node(start))?;
            Ok(g.into_dimensionality::<Ix3>().expect("checked C×H×W"))
        };
        let a = acts.outputs[start].view().into_dimensionality::<Ix3>().expect("checked C×H×W");
        let (relevance, hostile) = match &options.start {
            StartRule::SingleClass => (single_class_start(a, grad_of(target)?.view()), Vec::new()),
            StartRule::Comparative(rule) => {
                let hostile = hostile_set(rule, logits, target)?;
                // The target's and every hostile class's gradient in one backward pass.
                let classes: Vec<usize> = std::iter::once(target).chain(hostile.iter().copied()).collect();
                let grads = self.gradients_to(acts, &classes, Source::Node(start))?;
                let grads: Vec<Array3<T>> =
                    grads.into_iter().map(|g| g.into_dimensionality().expect("checked C×H×W")).collect();
                let views: Vec<_> = grads[1..].iter().map(|g| g.view()).collect();
                (comparative_start(a, grads[0].view(), &views)?, hostile)
            }
        };
        let relevance = relevance.into_dyn();
        ensure_finite(&relevance, "start relevance (the gradient overflowed the float range)")?;
        Ok(Start { relevance, hostile })
    }

    /// The RSP walk of one sample from its start relevance.
    pub(crate) fn rsp_propagate(
        &self,
        acts: &Activations<'_, T>,
        target: usize,
        start: Start<T>,
        plan: Plan,
        options: &RspOptions,
    ) -> Result<Sample<T>> {
        let node = plan.start.expect("RSP has a start layer");
        let (relevance, trace) =
            self.walk(acts, node, start.relevance.clone(), Source::Input, &RspRules, options.keep_layer_relevances)?;
        ensure_finite(&relevance, "input relevance (an intermediate value overflowed the float range)")?;
        let heatmap = relevance.view().into_dimensionality::<Ix3>().expect("C×H×W input").sum_axis(Axis(0));
        Ok(Sample {
            relevance: Some(relevance),
            start_relevance: Some(start.relevance),
            heatmap,
            logits: acts.outputs.last().expect("non-empty").clone(),
            target,
            hostile: start.hostile,
            trace,
        })
    }
}

/// Turns a non-finite result into an error instead of returning NaN.
pub(crate) fn ensure_finite<T: Float>(a: &ArrayD<T>, what: &str) -> Result<()> {
    match a.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(RspError::NonFinite { tensor: what.to_string(), index }),
        None => Ok(()),
    }
}

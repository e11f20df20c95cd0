//! The baselines RSP is compared with that still run one sample at a time
//! (Grad-CAM, the gradient and gradient × input run on whole batches,
//! `batch.rs`): LRP-ε, LRP-α1β0 (formulas in
//! `docs/methods.md`; LRP's rules are the composites of `lrp.rs`), RAP
//! (`rap.rs`, `docs/method-rap.md`), CLRP and SGLRP (their seeds in
//! `contrastive.rs`) and zennit's composites `epsilon-plus-flat` and
//! `epsilon-gamma-box` (`zennit.rs`). Each
//! walks the graph with the one walk of `walk.rs`.

use super::contrastive::{clrp, Sglrp};
use super::lrp::Lrp;
use super::rap::Rap;
use super::rsp::ensure_finite;
use super::walk::Rules;
use super::zennit::ZennitComposite;
use super::{Method, Sample, Target};
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::network::{Activations, Network, Source};
use ndarray::{Array2, ArrayD, ArrayViewD, Axis, Ix3, IxDyn};

impl<T: Float> Network<T> {
    /// One sample of a baseline method (everything but RSP).
    pub(crate) fn baseline_sample(
        &self,
        x: ArrayViewD<'_, T>,
        n: usize,
        target: &Target,
        method: &Method,
    ) -> Result<Sample<T>> {
        let acts = self.forward_sample(x.view())?;
        let target = target.class_of(n, self.logits_of(&acts)?);
        let logits = acts.outputs.last().expect("non-empty").clone();
        let mut one_hot = ArrayD::zeros(IxDyn(&[logits.len()]));
        one_hot[[target]] = T::one();
        let channel_sum = |r: &ArrayD<T>| -> Array2<T> {
            r.view().into_dimensionality::<Ix3>().map(|r| r.sum_axis(Axis(0))).unwrap_or_else(|_| Array2::zeros((0, 0)))
        };
        let (relevance, start_relevance, heatmap) = match *method {
            Method::LrpEpsilon(e) => {
                let r = self.walk_from_output(&acts, target, &Lrp::epsilon(e))?;
                let map = channel_sum(&r);
                (Some(r), None, map)
            }
            Method::LrpAlpha1Beta0 => {
                let r = self.walk_from_output(&acts, target, &Lrp::alpha1_beta0())?;
                let map = channel_sum(&r);
                (Some(r), None, map)
            }
            Method::Rap => {
                let r = self.walk_from_output(&acts, target, &Rap)?;
                let map = channel_sum(&r);
                (Some(r), None, map)
            }
            Method::Clrp => {
                let r = clrp(self, &acts, target)?;
                let map = channel_sum(&r);
                (Some(r), None, map)
            }
            Method::Sglrp => {
                let r = self.walk_from_output(&acts, target, &Sglrp)?;
                let map = channel_sum(&r);
                (Some(r), None, map)
            }
            Method::EpsilonPlusFlat | Method::EpsilonGammaBox { .. } => {
                let composite = match *method {
                    Method::EpsilonGammaBox { low, high } => ZennitComposite::EpsilonGammaBox { low, high },
                    _ => ZennitComposite::EpsilonPlusFlat,
                };
                let r = self.walk_from_output(&acts, target, &composite)?;
                let map = channel_sum(&r);
                (Some(r), None, map)
            }
            Method::Custom(name) => {
                return Err(RspError::InvalidArgument(format!(
                    "the method `{name}` is given by its rules: run it with Network::explain_rules"
                )));
            }
            Method::Rsp(_) | Method::GradCam | Method::Gradient | Method::GradientXInput => {
                return Err(RspError::InvalidArgument(format!(
                    "{} runs on whole batches (attribution/batch.rs)",
                    method.label()
                )));
            }
        };
        if let Some(r) = &relevance {
            ensure_finite(r, "input relevance (an intermediate value overflowed the float range)")?;
        }
        Ok(Sample { relevance, start_relevance, heatmap, logits, target, hostile: Vec::new(), trace: Vec::new() })
    }

    /// The network `method` runs on when it is not this one: zennit's
    /// composites fold batch norm into the convolution before it first, as
    /// zennit 0.5.1's `SequentialMergeBatchNorm` canonizer leaves the network
    /// ([`crate::canonize::merge_batch_norm_as_zennit`]); `None` for every
    /// other method and for networks without batch norm.
    pub(crate) fn canonized_for(&self, method: &Method) -> Result<Option<Network<T>>> {
        let has_batch_norm =
            self.nodes().iter().any(|n| n.layer().is_some_and(|l| l.kind() == crate::layers::LayerKind::BatchNorm2d));
        match method {
            Method::EpsilonPlusFlat | Method::EpsilonGammaBox { .. } if has_batch_norm => {
                crate::canonize::merge_batch_norm_as_zennit(self).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// One sample of a baseline run on `canonized` (see [`Network::canonized_for`]),
    /// with this network's own logits and predicted class (the canonized
    /// network's differ in the last digits).
    pub(crate) fn canonized_sample(
        &self,
        canonized: &Network<T>,
        x: ArrayViewD<'_, T>,
        n: usize,
        target: &Target,
        method: &Method,
    ) -> Result<Sample<T>> {
        let acts = self.forward_sample(x.view())?;
        let class = target.class_of(n, self.logits_of(&acts)?);
        let logits = acts.outputs.last().expect("non-empty").clone();
        drop(acts);
        let mut sample = canonized.baseline_sample(x, n, &Target::Single(class), method)?;
        sample.logits = logits;
        Ok(sample)
    }

    /// One sample of a method given by its [`Rules`], walked from the output
    /// (seeded by [`Rules::seed`]) to the input.
    pub(crate) fn rules_sample(
        &self,
        x: ArrayViewD<'_, T>,
        n: usize,
        target: &Target,
        rules: &dyn Rules<T>,
    ) -> Result<Sample<T>> {
        let acts = self.forward_sample(x.view())?;
        let target = target.class_of(n, self.logits_of(&acts)?);
        let logits = acts.outputs.last().expect("non-empty").clone();
        let r = self.walk_from_output(&acts, target, rules)?;
        ensure_finite(&r, "input relevance (an intermediate value overflowed the float range)")?;
        let heatmap = r.view().into_dimensionality::<Ix3>().expect("C×H×W input").sum_axis(Axis(0));
        Ok(Sample {
            relevance: Some(r),
            start_relevance: None,
            heatmap,
            logits,
            target,
            hostile: Vec::new(),
            trace: Vec::new(),
        })
    }

    /// The walk from the output (seeded by `rules`) to the input.
    fn walk_from_output(&self, acts: &Activations<'_, T>, target: usize, rules: &dyn Rules<T>) -> Result<ArrayD<T>> {
        let seed = rules.seed(self.logits_of(acts)?, target);
        Ok(self.walk(acts, self.nodes().len() - 1, seed, Source::Input, rules, false)?.0)
    }
}

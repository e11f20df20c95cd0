//! Every attribution runs here, on whole batches of backend tensors (engine
//! v2): the input is uploaded once, the batch forward pass keeps every
//! activation on the backend, the walks run on tensors (`walk.rs`,
//! [`BatchRules`]), and only the results come back (logits, relevance, start
//! relevance, RSP's layer trace). RSP (both starts), Grad-CAM, the gradient,
//! gradient × input, the LRP family (CLRP and SGLRP included), zennit's
//! composites and RAP use backend operations only (the last ones through
//! their [`TensorRules`](super::TensorRules), [`BatchRules::Tensor`]); a
//! method given only by host [`Rules`] runs its rules sample by sample on
//! the host ([`BatchRules::Host`]). The host
//! backends run each sample with the per-sample kernels, so each sample's
//! bits do not depend on the batch.

use super::contrastive::{clrp_combine_batch, clrp_seeds_batch, Sglrp};
use super::lrp::Lrp;
use super::rap::Rap;
use super::rsp::hostile_set;
use super::walk::{BatchRules, Rules};
use super::zennit::ZennitComposite;
use super::{upsample_bilinear, Method, PhaseTimes, Plan, Sample, StartRule, Target};
use crate::backend::{stack_samples, Tensor};
use crate::budget::Pass;
use crate::error::{format_bytes, Result, RspError};
use crate::float::Float;
use crate::network::{check_finite_batch, Network, Source};
use ndarray::{Array2, ArrayView4, Axis, Ix2, Ix3, Slice};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The rules of the methods that walk from the logits with a [`Rules`]
/// implementation run on the host ([`BatchRules::Host`]); `None` for the
/// others (RSP, the gradients, Grad-CAM, CLRP's two walks, a custom method).
fn method_rules<T: Float>(method: &Method) -> Option<Box<dyn Rules<T>>> {
    Some(match *method {
        Method::LrpEpsilon(e) => Box::new(Lrp::epsilon(e)),
        Method::LrpAlpha1Beta0 => Box::new(Lrp::alpha1_beta0()),
        Method::Rap => Box::new(Rap),
        Method::Sglrp => Box::new(Sglrp),
        Method::EpsilonPlusFlat => Box::new(ZennitComposite::EpsilonPlusFlat),
        Method::EpsilonGammaBox { low, high } => Box::new(ZennitComposite::EpsilonGammaBox { low, high }),
        _ => return None,
    })
}

impl<T: Float> Network<T> {
    /// `method` (one that [`runs_on_batches`]) on `input`, as many
    /// samples at once as the plan says (the backend's choice,
    /// [`Network::samples_at_once`], or fewer to fit the memory budget).
    pub(crate) fn explain_batches(
        &self,
        input: ArrayView4<'_, T>,
        target: &Target,
        method: &Method,
        custom: Option<&dyn Rules<T>>,
        plan: Plan,
    ) -> Result<Vec<Sample<T>>> {
        let n = input.shape()[0];
        let at_once = plan.samples_at_once.clamp(1, n.max(1));
        let canonized = self.canonized_for(method)?;
        let mut samples = Vec::with_capacity(n);
        for first in (0..n).step_by(at_once) {
            let part = first..(first + at_once).min(n);
            self.explain_part(input, part, target, method, custom, plan, canonized.as_deref(), &mut samples)?;
        }
        Ok(samples)
    }

    /// The samples `range` of `input`, appended to `samples`. RSP's
    /// comparative start knows its class rows only after the forward pass
    /// and refuses rows over the memory budget: a part so refused is halved
    /// and each half explained on its own (each sample's result does not
    /// depend on its batch), so only a single sample over the budget is refused.
    #[allow(clippy::too_many_arguments)] // crate-private: the call's parts, each needed
    fn explain_part(
        &self,
        input: ArrayView4<'_, T>,
        range: std::ops::Range<usize>,
        target: &Target,
        method: &Method,
        custom: Option<&dyn Rules<T>>,
        plan: Plan,
        canonized: Option<&Network<T>>,
        samples: &mut Vec<Sample<T>>,
    ) -> Result<()> {
        let first = range.start;
        let part = input.slice_axis(Axis(0), Slice::from(range.clone()));
        let result = (|| {
            let x = self.backend().upload(part.into_dyn())?;
            let Some(canonized) = canonized else {
                return self.explain_batch(x, first, target, method, custom, plan, None);
            };
            // This network's logits and predicted classes (the canonized
            // network's differ in the last digits), the canonized relevance.
            let logits = self.download_matrix(&self.forward_batch(&x)?)?;
            let classes = logits.outer_iter().enumerate().map(|(i, row)| target.class_of(first + i, row)).collect();
            let mut part_samples =
                canonized.explain_batch(x, 0, &Target::PerSample(classes), method, custom, plan, None)?;
            for (sample, row) in part_samples.iter_mut().zip(logits.outer_iter()) {
                sample.logits = row.to_owned().into_dyn();
            }
            Ok(part_samples)
        })();
        match result {
            Ok(part_samples) => {
                samples.extend(part_samples);
                Ok(())
            }
            Err(RspError::MemoryBudget { .. }) if range.len() > 1 => {
                let middle = first + range.len() / 2;
                self.explain_part(input, first..middle, target, method, custom, plan, canonized, samples)?;
                self.explain_part(input, middle..range.end, target, method, custom, plan, canonized, samples)
            }
            Err(e) => Err(e),
        }
    }

    /// One part of a batch, uploaded (`x`, `N×C×H×W`), its first sample
    /// being the batch's `first`; `times` (if given) receives the time of
    /// each phase.
    #[allow(clippy::too_many_arguments)] // crate-private: the call's parts, each needed
    pub(crate) fn explain_batch(
        &self,
        x: Tensor<T>,
        first: usize,
        target: &Target,
        method: &Method,
        custom: Option<&dyn Rules<T>>,
        plan: Plan,
        mut times: Option<&mut PhaseTimes>,
    ) -> Result<Vec<Sample<T>>> {
        let backend = self.backend();
        let mut clock = Instant::now();
        let mut lap = |phase: fn(&mut PhaseTimes) -> &mut Duration| {
            if let Some(t) = times.as_deref_mut() {
                *phase(t) += clock.elapsed();
            }
            clock = Instant::now();
        };
        let outputs = self.forward_batch_outputs(&x)?;
        lap(|t| &mut t.forward);
        let last = outputs.len() - 1;
        let logits = self.download_matrix(&outputs[last])?;
        let classes: Vec<usize> =
            logits.outer_iter().enumerate().map(|(i, row)| target.class_of(first + i, row)).collect();
        let seed = backend.one_hot_batch(&classes, logits.ncols())?;
        let gradient_to_input = |seed| self.walk_batch(&x, &outputs, last, seed, Source::Input, BatchRules::Gradient);
        let mut hostile = vec![Vec::new(); classes.len()];
        let mut trace = Vec::new();
        let (relevance, start_relevance) = match method {
            Method::Rsp(options) => {
                let s = plan.start.expect("RSP has a start layer");
                let start = match &options.start {
                    StartRule::SingleClass => {
                        let g = self.walk_batch(&x, &outputs, last, seed, Source::Node(s), BatchRules::Gradient)?;
                        backend.single_class_start_batch(&outputs[s], &g)?
                    }
                    StartRule::Comparative(rule) => {
                        for (i, h) in hostile.iter_mut().enumerate() {
                            *h = hostile_set(rule, logits.row(i), classes[i])?;
                        }
                        let grads = self.class_gradients(&x, &outputs, &classes, &hostile, s)?;
                        let groups: Vec<usize> = hostile.iter().map(|h| 1 + h.len()).collect();
                        backend.comparative_start_batch(&outputs[s], &grads, &groups)?
                    }
                };
                check_finite_batch(backend, &start, || {
                    "start relevance (the gradient overflowed the float range)".into()
                })?;
                lap(|t| &mut t.start);
                let keep = options.keep_layer_relevances;
                let (r, t) =
                    self.walk_batch_traced(&x, &outputs, s, start.clone(), Source::Input, BatchRules::Rsp, keep)?;
                trace = t;
                (Some(r), Some(start))
            }
            Method::GradCam => {
                let s = plan.start.expect("resolved for Grad-CAM");
                let g = self.walk_batch(&x, &outputs, last, seed, Source::Node(s), BatchRules::Gradient)?;
                // No input relevance: the map is the channel sum of A ⊙ α, upsampled (below).
                (None, Some(backend.weighted_activation_batch(&outputs[s], &g)?))
            }
            Method::Gradient => (Some(gradient_to_input(seed)?), None),
            Method::GradientXInput => (Some(backend.mul_batch(&gradient_to_input(seed)?, &x)?), None),
            Method::Clrp => {
                // Two LRP-α1β0 walks, from the target and from the dual class.
                let (target_seed, dual_seed) = clrp_seeds_batch(backend, &outputs[last], &classes)?;
                let rules = BatchRules::Tensor(&Lrp::alpha1_beta0(), false);
                let walk = |seed| self.walk_batch(&x, &outputs, last, seed, Source::Input, rules);
                let (target_relevance, dual_relevance) = (walk(target_seed)?, walk(dual_seed)?);
                (Some(clrp_combine_batch(backend, &target_relevance, &dual_relevance)?), None)
            }
            Method::Custom(name) => {
                let rules = custom.ok_or_else(|| {
                    RspError::InvalidArgument(format!(
                        "the method `{name}` is given by its rules: run it with Network::explain_rules"
                    ))
                })?;
                (Some(self.rules_walk(&x, &outputs, &logits, &classes, rules)?), None)
            }
            other => {
                let rules = method_rules(other).expect("every other method has its rules");
                (Some(self.rules_walk(&x, &outputs, &logits, &classes, rules.as_ref())?), None)
            }
        };
        if let Some(relevance) = &relevance {
            check_finite_batch(backend, relevance, || {
                "input relevance (an intermediate value overflowed the float range)".into()
            })?;
        }
        // The results: the only downloads besides the logits.
        let relevance = relevance.map(|r| backend.download(&r)).transpose()?;
        let start_relevance = start_relevance.map(|s| backend.download(&s)).transpose()?;
        let trace =
            trace.iter().map(|t| t.as_ref().map(|t| backend.download(t)).transpose()).collect::<Result<Vec<_>>>()?;
        lap(|t| &mut t.propagation);
        let (height, width) = (x.shape()[2], x.shape()[3]);
        let channel_sum = |r: ndarray::ArrayViewD<T>| {
            r.into_dimensionality::<Ix3>().map(|r| r.sum_axis(Axis(0))).unwrap_or_else(|_| Array2::zeros((0, 0)))
        };
        classes
            .iter()
            .enumerate()
            .map(|(i, &target)| {
                let relevance = relevance.as_ref().map(|r| r.index_axis(Axis(0), i).to_owned());
                let start_relevance = start_relevance.as_ref().map(|s| s.index_axis(Axis(0), i).to_owned());
                let heatmap = match (&relevance, &start_relevance) {
                    (Some(r), _) => channel_sum(r.view()),
                    // Grad-CAM: ReLU of the channel sum of A ⊙ α, resized to the input.
                    (None, Some(cam)) => {
                        let map = channel_sum(cam.view()).mapv(|v| v.max(T::zero()));
                        upsample_bilinear(map.view(), height, width)?
                    }
                    (None, None) => Array2::zeros((0, 0)),
                };
                Ok(Sample {
                    relevance,
                    start_relevance,
                    heatmap,
                    logits: logits.row(i).to_owned().into_dyn(),
                    target,
                    hostile: std::mem::take(&mut hostile[i]),
                    trace: trace.iter().map(|t| t.as_ref().map(|t| t.index_axis(Axis(0), i).to_owned())).collect(),
                })
            })
            .collect()
    }

    /// The network `method` runs on when it is not this one: zennit's
    /// composites fold batch norm into the convolution before it first, as
    /// zennit 0.5.1's `SequentialMergeBatchNorm` canonizer leaves the network
    /// ([`crate::canonize::merge_batch_norm_as_zennit`]); `None` for every
    /// other method and for networks without batch norm.
    /// Made once per network and kept (with its uploaded weights) until the
    /// network changes.
    pub(crate) fn canonized_for(&self, method: &Method) -> Result<Option<Arc<Network<T>>>> {
        let has_batch_norm =
            self.nodes().iter().any(|n| n.layer().is_some_and(|l| l.kind() == crate::layers::LayerKind::BatchNorm2d));
        match method {
            Method::EpsilonPlusFlat | Method::EpsilonGammaBox { .. } if has_batch_norm => {
                // Made once (with its uploaded weights) until this network changes.
                self.uploaded.zennit_canonized(|| crate::canonize::merge_batch_norm_as_zennit(self)).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The walk of a method given by its `rules` from its seed at the logits
    /// ([`Rules::seed`] of each sample's `logits` and class) to the input.
    pub(crate) fn rules_walk(
        &self,
        x: &Tensor<T>,
        outputs: &[Tensor<T>],
        logits: &Array2<T>,
        classes: &[usize],
        rules: &dyn Rules<T>,
    ) -> Result<Tensor<T>> {
        let last = outputs.len() - 1;
        if let Some(on_tensors) = rules.on_tensors() {
            let seed = on_tensors.seed(self.backend(), &outputs[last], classes)?;
            let rules = BatchRules::Tensor(on_tensors, rules.check_every_node());
            return self.walk_batch(x, outputs, last, seed, Source::Input, rules);
        }
        let seeds = classes.iter().enumerate().map(|(i, &c)| rules.seed(logits.row(i), c)).collect();
        let seed = self.backend().upload(stack_samples(seeds)?.view())?;
        self.walk_batch(x, outputs, last, seed, Source::Input, BatchRules::Host(rules))
    }

    /// The gradients at the output of node `start` of each sample's target
    /// (`classes`) and then of each of its `hostile` classes: one row per
    /// class, the rows of a sample consecutive. The walk reads each sample's
    /// activations after `start` once per class (gathered rows); where the
    /// nodes after `start` form a chain, a linear layer computes the rows of
    /// one sample as one matrix product (the bits of the former per-sample
    /// walk, which stacked the classes as the columns of one matrix).
    pub(crate) fn class_gradients(
        &self,
        x: &Tensor<T>,
        outputs: &[Tensor<T>],
        classes: &[usize],
        hostile: &[Vec<usize>],
        start: usize,
    ) -> Result<Tensor<T>> {
        let backend = self.backend();
        let mut owners = Vec::new();
        let mut row_classes = Vec::new();
        for (i, (&target, h)) in classes.iter().zip(hostile).enumerate() {
            for c in std::iter::once(target).chain(h.iter().copied()) {
                owners.push(i);
                row_classes.push(c);
            }
        }
        let width = outputs.last().and_then(|l| l.shape().get(1)).copied().unwrap_or(0);
        let seed = backend.one_hot_batch(&row_classes, width)?;
        // What the walk from the logits down to `start` reads: the inputs of the nodes after it.
        let mut read = vec![false; outputs.len()];
        let mut reads_input = false;
        for node in &self.nodes()[start + 1..] {
            for src in &node.inputs {
                match *src {
                    Source::Input => reads_input = true,
                    Source::Node(j) => read[j] = true,
                }
            }
        }
        self.check_class_rows(x, outputs, &read, reads_input, start, owners.len())?;
        let gathered = outputs
            .iter()
            .zip(&read)
            .map(|(t, &r)| if r { backend.gather_samples(t, &owners) } else { Ok(t.clone()) })
            .collect::<Result<Vec<_>>>()?;
        let x = if reads_input { backend.gather_samples(x, &owners)? } else { x.clone() };
        let groups: Vec<usize> = hostile.iter().map(|h| 1 + h.len()).collect();
        let rules = if self.is_chain_after(Source::Node(start)) {
            BatchRules::GradientGrouped(&groups)
        } else {
            BatchRules::Gradient
        };
        self.walk_batch(&x, &gathered, outputs.len() - 1, seed, Source::Node(start), rules)
    }

    /// Refuses class gradients (`rows` of them, see [`Network::class_gradients`])
    /// whose memory, on top of the attribution's own estimate, exceeds the
    /// memory budget: each row holds the activations the walk reads after
    /// `start` (`read`, and the input if `reads_input`) and up to two pending
    /// gradients of the largest node after it. The comparative start with
    /// hundreds of hostile classes would otherwise allocate beyond the budget
    /// that the plan checked.
    fn check_class_rows(
        &self,
        x: &Tensor<T>,
        outputs: &[Tensor<T>],
        read: &[bool],
        reads_input: bool,
        start: usize,
        rows: usize,
    ) -> Result<()> {
        let per_sample = |t: &Tensor<T>| (t.len() / t.shape().first().copied().unwrap_or(1).max(1)) as u128;
        let held: u128 = outputs.iter().zip(read).filter(|(_, &r)| r).map(|(t, _)| per_sample(t)).sum::<u128>()
            + if reads_input { per_sample(x) } else { 0 };
        let largest = outputs[start..].iter().map(per_sample).max().unwrap_or(0);
        let size = std::mem::size_of::<T>() as u128;
        let per_row = (held + 2 * largest) * size;
        let own = u128::from(self.estimate(x.shape(), Pass::Attribution)?.memory);
        let total = own + rows as u128 * per_row;
        let budget = self.memory_budget();
        if total > u128::from(budget) {
            let clamp = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
            return Err(RspError::MemoryBudget {
                estimate: clamp(total),
                budget,
                what: format!(
                    "the comparative start of {} samples: {rows} class gradients (each target and hostile class) of {} each, beyond the attribution's {}",
                    x.shape()[0],
                    format_bytes(clamp(per_row)),
                    format_bytes(clamp(own))
                ),
            });
        }
        Ok(())
    }

    /// A downloaded `N×K` tensor (the logits).
    fn download_matrix(&self, t: &Tensor<T>) -> Result<Array2<T>> {
        self.backend().download(t)?.into_dimensionality::<Ix2>().map_err(|e| RspError::Backend {
            backend: self.backend().name().into(),
            reason: format!("the logits came back with the wrong rank: {e}"),
        })
    }
}

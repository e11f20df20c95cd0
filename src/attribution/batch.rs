//! Attributions on whole batches of backend tensors (engine v2): the input is
//! uploaded once, the batch forward pass keeps every activation on the
//! backend, the walks run on tensors (`walk.rs`, [`BatchRules`]), and only the
//! results come back (logits, relevance, start relevance). It runs RSP with
//! the single-class start, the gradient and gradient × input; the other
//! methods (and RSP's comparative start and layer trace) still run one sample
//! at a time (`rsp.rs`, `baselines.rs`). Each sample's bits are the same on
//! both paths: the host backends' batch operations run the per-sample kernels.

use super::walk::{check_finite_batch, BatchRules};
use super::{Method, PhaseTimes, Plan, Sample, StartRule, Target};
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::network::{Network, Source};
use ndarray::{Array2, ArrayView4, Axis, Ix2, Ix3, Slice};
use std::time::{Duration, Instant};

/// Whether `method` runs on whole batches of backend tensors.
pub(crate) fn runs_on_batches(method: &Method) -> bool {
    match method {
        Method::Gradient | Method::GradientXInput => true,
        Method::Rsp(o) => o.start == StartRule::SingleClass && !o.keep_layer_relevances,
        _ => false,
    }
}

impl<T: Float> Network<T> {
    /// `method` (one that [`runs_on_batches`]) on `input`, as many
    /// samples at once as the backend runs ([`Network::samples_at_once`]).
    pub(crate) fn explain_batches(
        &self,
        input: ArrayView4<'_, T>,
        target: &Target,
        method: &Method,
        plan: Plan,
    ) -> Result<Vec<Sample<T>>> {
        let n = input.shape()[0];
        let at_once = self.samples_at_once(n);
        let mut samples = Vec::with_capacity(n);
        for first in (0..n).step_by(at_once) {
            let part = input.slice_axis(Axis(0), Slice::from(first..(first + at_once).min(n)));
            samples.extend(self.explain_batch(part, first, target, method, plan, None)?);
        }
        Ok(samples)
    }

    /// One part of a batch, its first sample being the batch's `first`;
    /// `times` (if given) receives the time of each phase.
    pub(crate) fn explain_batch(
        &self,
        input: ArrayView4<'_, T>,
        first: usize,
        target: &Target,
        method: &Method,
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
        let x = backend.upload(input.into_dyn())?;
        let outputs = self.forward_batch_outputs(&x)?;
        lap(|t| &mut t.forward);
        let last = outputs.len() - 1;
        let logits = self.download_matrix(&outputs[last])?;
        let classes: Vec<usize> =
            logits.outer_iter().enumerate().map(|(i, row)| target.class_of(first + i, row)).collect();
        let seed = backend.one_hot_batch(&classes, logits.ncols())?;
        let gradient_to_input = |seed| self.walk_batch(&x, &outputs, last, seed, Source::Input, BatchRules::Gradient);
        let (relevance, start_relevance) = match method {
            Method::Rsp(_) => {
                let s = plan.start.expect("RSP has a start layer");
                let g = self.walk_batch(&x, &outputs, last, seed, Source::Node(s), BatchRules::Gradient)?;
                let start = backend.single_class_start_batch(&outputs[s], &g)?;
                check_finite_batch(backend, &start, || {
                    "start relevance (the gradient overflowed the float range)".into()
                })?;
                lap(|t| &mut t.start);
                let r = self.walk_batch(&x, &outputs, s, start.clone(), Source::Input, BatchRules::Rsp)?;
                (r, Some(start))
            }
            Method::Gradient => (gradient_to_input(seed)?, None),
            Method::GradientXInput => (backend.mul_batch(&gradient_to_input(seed)?, &x)?, None),
            other => {
                return Err(RspError::InvalidArgument(format!("{} does not run on whole batches", other.label())));
            }
        };
        check_finite_batch(backend, &relevance, || {
            "input relevance (an intermediate value overflowed the float range)".into()
        })?;
        // The results: the only downloads besides the logits.
        let relevance = backend.download(&relevance)?;
        let start_relevance = start_relevance.map(|s| backend.download(&s)).transpose()?;
        lap(|t| &mut t.propagation);
        Ok(classes
            .iter()
            .enumerate()
            .map(|(i, &target)| {
                let r = relevance.index_axis(Axis(0), i).to_owned();
                let heatmap = r
                    .view()
                    .into_dimensionality::<Ix3>()
                    .map(|r| r.sum_axis(Axis(0)))
                    .unwrap_or_else(|_| Array2::zeros((0, 0)));
                Sample {
                    relevance: Some(r),
                    start_relevance: start_relevance.as_ref().map(|s| s.index_axis(Axis(0), i).to_owned()),
                    heatmap,
                    logits: logits.row(i).to_owned().into_dyn(),
                    target,
                    hostile: Vec::new(),
                    trace: Vec::new(),
                }
            })
            .collect())
    }

    /// A downloaded `N×K` tensor (the logits).
    fn download_matrix(&self, t: &crate::backend::Tensor<T>) -> Result<Array2<T>> {
        self.backend().download(t)?.into_dimensionality::<Ix2>().map_err(|e| RspError::Backend {
            backend: self.backend().name().into(),
            reason: format!("the logits came back with the wrong rank: {e}"),
        })
    }
}

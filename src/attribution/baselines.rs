//! The baselines RSP is compared with, one sample at a time: Grad-CAM, the
//! gradient, gradient × input, LRP-ε and LRP-α1β0 (formulas in
//! `docs/methods.md`; each layer's LRP rule sits next to its RSP rule in
//! `src/layers/`).

use super::rsp::ensure_finite;
use super::start::weighted_activation;
use super::walk::accumulate;
use super::{upsample_bilinear, Method, Plan, Sample, Target};
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::layers::{add_lrp_rule, LrpRule, RuleContext};
use crate::network::{Activations, Network, NodeOp, Source};
use ndarray::{Array2, ArrayD, ArrayViewD, Axis, Ix3, IxDyn};

impl<T: Float> Network<T> {
    /// One sample of a baseline method (everything but RSP).
    pub(crate) fn baseline_sample(
        &self,
        x: ArrayViewD<'_, T>,
        n: usize,
        target: &Target,
        method: &Method,
        plan: Plan,
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
            Method::GradCam => {
                let s = plan.start.expect("resolved for Grad-CAM");
                let g = self.gradient_to(&acts, one_hot, Source::Node(s))?;
                let a = acts.outputs[s].view().into_dimensionality::<Ix3>().expect("checked C×H×W");
                let g = g.into_dimensionality::<Ix3>().expect("checked C×H×W");
                let cam = weighted_activation(a, g.view());
                let map = cam.sum_axis(Axis(0)).mapv(|v| v.max(T::zero()));
                let (h, w) = (x.shape()[1], x.shape()[2]);
                (None, Some(cam.into_dyn()), upsample_bilinear(map.view(), h, w)?)
            }
            Method::Gradient => {
                let g = self.gradient_to(&acts, one_hot, Source::Input)?;
                let map = channel_sum(&g);
                (Some(g), None, map)
            }
            Method::GradientXInput => {
                let g = self.gradient_to(&acts, one_hot, Source::Input)?;
                let r = &g * &x;
                let map = channel_sum(&r);
                (Some(r), None, map)
            }
            Method::LrpEpsilon(e) => {
                let r = self.lrp_sample(&acts, target, &logits, LrpRule::Epsilon(e))?;
                let map = channel_sum(&r);
                (Some(r), None, map)
            }
            Method::LrpAlpha1Beta0 => {
                let r = self.lrp_sample(&acts, target, &logits, LrpRule::Alpha1Beta0)?;
                let map = channel_sum(&r);
                (Some(r), None, map)
            }
            Method::Rsp(_) => {
                return Err(RspError::InvalidArgument("RSP is not a baseline: see rsp_sample".into()));
            }
        };
        if let Some(r) = &relevance {
            ensure_finite(r, "input relevance (an intermediate value overflowed the float range)")?;
        }
        Ok(Sample { relevance, start_relevance, heatmap, logits, target, hostile: Vec::new(), trace: Vec::new() })
    }

    /// LRP from `one-hot × logit` at the output through every node to the input.
    fn lrp_sample(
        &self,
        acts: &Activations<'_, T>,
        target: usize,
        logits: &ArrayD<T>,
        rule: LrpRule,
    ) -> Result<ArrayD<T>> {
        let nodes = self.nodes();
        let n = nodes.len();
        let mut rel: Vec<Option<ArrayD<T>>> = vec![None; n];
        let mut at_input: Option<ArrayD<T>> = None;
        let mut r_out = ArrayD::zeros(logits.raw_dim());
        r_out[[target]] = logits[[target]];
        rel[n - 1] = Some(r_out);
        for k in (0..n).rev() {
            let Some(r) = rel[k].take() else { continue };
            let node = &nodes[k];
            let parts: Vec<(Source, ArrayD<T>)> = match &node.op {
                NodeOp::Layer(l) => {
                    let src = node.inputs[0];
                    let ctx = RuleContext { is_input_layer: src == Source::Input };
                    vec![(src, l.lrp_backward(self.backend(), acts.get(src), r.view(), rule, ctx)?)]
                }
                NodeOp::Add => {
                    let (ra, rb) = add_lrp_rule(acts.get(node.inputs[0]), acts.get(node.inputs[1]), r.view(), rule);
                    vec![(node.inputs[0], ra), (node.inputs[1], rb)]
                }
            };
            for (src, part) in parts {
                let slot = match src {
                    Source::Input => &mut at_input,
                    Source::Node(j) => &mut rel[j],
                };
                accumulate(slot, part);
            }
        }
        Ok(at_input.unwrap_or_else(|| ArrayD::zeros(acts.input.raw_dim())))
    }
}

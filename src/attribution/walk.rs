//! The reverse walks over a network's graph: the gradient (for the start
//! relevance, Grad-CAM and the gradient baselines) and the RSP rules. Both
//! visit the nodes in reverse order, and a branch point receives the sum of
//! its readers' results.

use crate::error::{check_finite, Result};
use crate::float::Float;
use crate::layers::{add_rule, RuleContext};
use crate::network::{Activations, Network, NodeOp, Source};
use ndarray::ArrayD;

impl<T: Float> Network<T> {
    /// Backpropagates the gradient `seed` at the network output down to the
    /// output of `stop` (ordinary vector–Jacobian products; branches sum).
    pub(crate) fn gradient_to(&self, acts: &Activations<'_, T>, seed: ArrayD<T>, stop: Source) -> Result<ArrayD<T>> {
        let first = match stop {
            Source::Input => 0,
            Source::Node(s) => s + 1,
        };
        let n = self.nodes().len();
        let mut grads: Vec<Option<ArrayD<T>>> = vec![None; n];
        let mut at_stop: Option<ArrayD<T>> = None;
        grads[n - 1] = Some(seed);
        for k in (first..n).rev() {
            let Some(g) = grads[k].take() else { continue };
            let node = &self.nodes()[k];
            let parts: Vec<(Source, ArrayD<T>)> = match &node.op {
                NodeOp::Layer(l) => {
                    vec![(node.inputs[0], l.gradient(self.backend(), acts.get(node.inputs[0]), g.view())?)]
                }
                NodeOp::Add => vec![(node.inputs[0], g.clone()), (node.inputs[1], g)],
            };
            for (src, part) in parts {
                let slot = match src {
                    _ if src == stop => &mut at_stop,
                    Source::Node(j) if j >= first => &mut grads[j],
                    _ => continue,
                };
                accumulate(slot, part);
            }
        }
        Ok(at_stop.unwrap_or_else(|| ArrayD::zeros(acts.get(stop).raw_dim())))
    }

    /// Walks the RSP rules from the output of node `start` (relevance
    /// `r_start`) back to the input. Branch points sum their readers'
    /// relevances. Returns the input relevance and, if asked, the relevance
    /// each node's rule returned at its (first) input.
    pub(crate) fn rsp_from(
        &self,
        acts: &Activations<'_, T>,
        start: usize,
        r_start: ArrayD<T>,
        keep_trace: bool,
    ) -> Result<(ArrayD<T>, LayerRelevances<T>)> {
        let mut rel: Vec<Option<ArrayD<T>>> = vec![None; start + 1];
        let mut at_input: Option<ArrayD<T>> = None;
        let mut trace: Vec<Option<ArrayD<T>>> = vec![None; if keep_trace { self.nodes().len() } else { 0 }];
        rel[start] = Some(r_start);
        for k in (0..=start).rev() {
            let Some(r) = rel[k].take() else { continue };
            let node = &self.nodes()[k];
            let parts: Vec<(Source, ArrayD<T>)> = match &node.op {
                NodeOp::Layer(l) => {
                    let src = node.inputs[0];
                    let ctx = RuleContext { is_input_layer: src == Source::Input };
                    vec![(src, l.rsp_backward(self.backend(), acts.get(src), r.view(), ctx)?)]
                }
                NodeOp::Add => {
                    let (ra, rb) = add_rule(acts.get(node.inputs[0]), acts.get(node.inputs[1]), r.view());
                    vec![(node.inputs[0], ra), (node.inputs[1], rb)]
                }
            };
            for (_, part) in &parts {
                check_finite(
                    || {
                        format!("the relevance at the input of node #{k} ({}) (an intermediate value overflowed the float range)", node.describe())
                    },
                    part,
                )?;
            }
            if keep_trace {
                trace[k] = Some(parts[0].1.clone());
            }
            for (src, part) in parts {
                let slot = match src {
                    Source::Input => &mut at_input,
                    Source::Node(j) => &mut rel[j],
                };
                accumulate(slot, part);
            }
        }
        Ok((at_input.unwrap_or_else(|| ArrayD::zeros(acts.input.raw_dim())), trace))
    }
}

/// Per node, the relevance its rule returned (when kept).
pub(crate) type LayerRelevances<T> = Vec<Option<ArrayD<T>>>;

/// Adds `part` into `slot` (a branch point receives the sum of its readers' relevances).
pub(crate) fn accumulate<T: Float>(slot: &mut Option<ArrayD<T>>, part: ArrayD<T>) {
    match slot {
        Some(acc) => *acc += &part,
        None => *slot = Some(part),
    }
}

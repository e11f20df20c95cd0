//! The one reverse walk over a network's graph, used by every method: it
//! visits the nodes in reverse order, a branch point receives the sum of its
//! readers' results, and the method's [`Rules`] give each node's rule (the
//! gradient's vector–Jacobian products, RSP's rules, LRP's composites, or a
//! user's own).

use crate::backend::Backend;
use crate::error::{check_finite, Result};
use crate::float::Float;
use crate::layers::{add_rule, Layer, RuleContext};
use crate::network::{Activations, Network, NodeOp, Source};
use ndarray::{ArrayD, ArrayView1, ArrayViewD, IxDyn};

/// The rules of a method that propagates from the output back through the
/// graph: one for layer nodes, one for the residual sum. Implement it to add a
/// method (a new LRP rule, a variant of the gradient) without touching the
/// layers, inside or outside the crate, and run it with
/// [`Network::explain_rules`]; `tests/custom_rule.rs` defines LRP-γ this way.
///
/// The built-in methods are implementations too: [`GradientRules`] (the
/// gradient), [`RspRules`] (each layer's own RSP rule) and
/// [`Lrp`](super::Lrp) (the LRP composites).
///
/// ```
/// use rsp::attribution::{GradientRules, Rules};
/// use rsp::backend::CpuBackend;
/// use rsp::layers::{Relu, RuleContext};
/// let x = rsp::ndarray::arr1(&[-1.0f64, 2.0]).into_dyn();
/// let g = rsp::ndarray::arr1(&[5.0, 5.0]).into_dyn();
/// let back = GradientRules.layer(&CpuBackend, &Relu, x.view(), g.view(), RuleContext::default()).unwrap();
/// assert_eq!(back, rsp::ndarray::arr1(&[0.0, 5.0]).into_dyn());
/// ```
pub trait Rules<T: Float>: Sync {
    /// A short name (it names the method in [`crate::Explanation::method`]).
    fn name(&self) -> &'static str;

    /// The relevance (or gradient) at the input `x` of `layer` given the one
    /// at its output, `relevance`.
    fn layer(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> Result<ArrayD<T>>;

    /// [`Rules::layer`] given also the layer's output as the forward pass
    /// computed it from `x` (`output = layer.forward(x)`): a rule whose
    /// denominator is that output (LRP-ε's `z = Wx + b`, zennit's Epsilon,
    /// Gamma's sign of `z`) reuses it instead of computing it again. The walk
    /// calls this; by default it ignores `output` and calls [`Rules::layer`].
    fn layer_given_output(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        output: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        let _ = output;
        self.layer(backend, layer, x, relevance, ctx)
    }

    /// The shares of the two summands `a` and `b` of a residual sum in the
    /// relevance `relevance` of the sum.
    fn add(&self, a: ArrayViewD<T>, b: ArrayViewD<T>, relevance: ArrayViewD<T>) -> Result<(ArrayD<T>, ArrayD<T>)>;

    /// The relevance at the logits a walk from the output starts with, for
    /// the class `target`: by default LRP's, the target's logit alone.
    fn seed(&self, logits: ArrayView1<T>, target: usize) -> ArrayD<T> {
        let mut seed = ArrayD::zeros(IxDyn(&[logits.len()]));
        seed[[target]] = logits[target];
        seed
    }

    /// Whether the walk refuses a non-finite result at the node that made it
    /// (naming the node) rather than only at the end; `false` by default.
    fn check_every_node(&self) -> bool {
        false
    }
}

/// The gradient: each layer's vector–Jacobian product ([`Layer::gradient`]),
/// the residual sum passes the gradient to both summands; seeded with the
/// one-hot of the target.
#[derive(Clone, Copy, Debug, Default)]
pub struct GradientRules;

impl<T: Float> Rules<T> for GradientRules {
    fn name(&self) -> &'static str {
        "gradient"
    }

    fn layer(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        _ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        layer.gradient(backend, x, relevance)
    }

    fn add(&self, _a: ArrayViewD<T>, _b: ArrayViewD<T>, relevance: ArrayViewD<T>) -> Result<(ArrayD<T>, ArrayD<T>)> {
        Ok((relevance.to_owned(), relevance.to_owned()))
    }

    fn seed(&self, logits: ArrayView1<T>, target: usize) -> ArrayD<T> {
        let mut seed = ArrayD::zeros(IxDyn(&[logits.len()]));
        seed[[target]] = T::one();
        seed
    }
}

/// RSP's rules: each layer's own [`Layer::rsp_backward`] and
/// [`add_rule`](crate::layers::add_rule); every node's result is checked.
/// RSP starts at its start layer (not with [`Rules::seed`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct RspRules;

impl<T: Float> Rules<T> for RspRules {
    fn name(&self) -> &'static str {
        "rsp"
    }

    fn layer(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        layer.rsp_backward(backend, x, relevance, ctx)
    }

    fn add(&self, a: ArrayViewD<T>, b: ArrayViewD<T>, relevance: ArrayViewD<T>) -> Result<(ArrayD<T>, ArrayD<T>)> {
        Ok(add_rule(a, b, relevance))
    }

    fn check_every_node(&self) -> bool {
        true
    }
}

/// Per node, the relevance its rule returned (when kept).
pub(crate) type LayerRelevances<T> = Vec<Option<ArrayD<T>>>;

impl<T: Float> Network<T> {
    /// The reverse walk: `seed` at the output of node `from`, each node from
    /// `from` down to the one after `stop` applying its rule from `rules`;
    /// returns what arrives at `stop` (the output of a node, or the input)
    /// and, if asked, the result each node's rule returned at its first input.
    /// What flows to nodes before `stop` is not needed and dropped.
    pub(crate) fn walk(
        &self,
        acts: &Activations<'_, T>,
        from: usize,
        seed: ArrayD<T>,
        stop: Source,
        rules: &dyn Rules<T>,
        keep_trace: bool,
    ) -> Result<(ArrayD<T>, LayerRelevances<T>)> {
        let first = match stop {
            Source::Input => 0,
            Source::Node(s) => s + 1,
        };
        let mut rel: Vec<Option<ArrayD<T>>> = vec![None; from + 1];
        let mut at_stop: Option<ArrayD<T>> = None;
        let mut trace: LayerRelevances<T> = vec![None; if keep_trace { self.nodes().len() } else { 0 }];
        rel[from] = Some(seed);
        for k in (first..=from).rev() {
            let Some(r) = rel[k].take() else { continue };
            let node = &self.nodes()[k];
            let parts: Vec<(Source, ArrayD<T>)> = match &node.op {
                NodeOp::Layer(l) => {
                    let src = node.inputs[0];
                    let ctx = RuleContext { is_input_layer: src == Source::Input, receives_seed: k == from };
                    let (x, output) = (acts.get(src), acts.get(Source::Node(k)));
                    vec![(src, rules.layer_given_output(self.backend(), l.as_ref(), x, output, r.view(), ctx)?)]
                }
                NodeOp::Add => {
                    let (ra, rb) = rules.add(acts.get(node.inputs[0]), acts.get(node.inputs[1]), r.view())?;
                    vec![(node.inputs[0], ra), (node.inputs[1], rb)]
                }
            };
            if rules.check_every_node() {
                for (_, part) in &parts {
                    check_finite(
                        || {
                            format!("the relevance at the input of node #{k} ({}) (an intermediate value overflowed the float range)", node.describe())
                        },
                        part,
                    )?;
                }
            }
            if keep_trace {
                trace[k] = Some(parts[0].1.clone());
            }
            for (src, part) in parts {
                let slot = match src {
                    _ if src == stop => &mut at_stop,
                    Source::Node(j) if j >= first => &mut rel[j],
                    _ => continue,
                };
                accumulate(slot, part);
            }
        }
        let result = at_stop.unwrap_or_else(|| ArrayD::zeros(acts.get(stop).raw_dim()));
        Ok((result, trace))
    }

    /// Backpropagates the gradient `seed` at the network output down to the
    /// output of `stop` (ordinary vector–Jacobian products; branches sum).
    pub(crate) fn gradient_to(&self, acts: &Activations<'_, T>, seed: ArrayD<T>, stop: Source) -> Result<ArrayD<T>> {
        Ok(self.walk(acts, self.nodes().len() - 1, seed, stop, &GradientRules, false)?.0)
    }
}

/// Adds `part` into `slot` (a branch point receives the sum of its readers' relevances).
fn accumulate<T: Float>(slot: &mut Option<ArrayD<T>>, part: ArrayD<T>) {
    match slot {
        Some(acc) => *acc += &part,
        None => *slot = Some(part),
    }
}

//! The one reverse walk over a network's graph, used by every method: it
//! visits the nodes in reverse order, a branch point receives the sum of its
//! readers' results, and the method's [`Rules`] give each node's rule (the
//! gradient's vector–Jacobian products, RSP's rules, LRP's composites, or a
//! user's own).

use crate::backend::{Backend, Tensor};
use crate::error::Result;
use crate::float::Float;
use crate::layers::{add_rule, check_batch_output, sample_shape, Layer, RuleContext};
use crate::network::{check_finite_batch, Network, NodeOp, Source};
use ndarray::{ArrayD, ArrayView1, ArrayViewD, IxDyn};

/// The rules of a method that propagates from the output back through the
/// graph: one for layer nodes, one for the residual sum. Implement it to add a
/// method (a new LRP rule, a variant of the gradient) without touching the
/// layers, inside or outside the crate, and run it with
/// [`Network::explain_rules`]; `tests/suite/custom_rule.rs` defines LRP-γ this way.
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

    /// The same rules on whole batches of backend tensors, if the method has
    /// them ([`TensorRules`]): the walk then runs on the backend (no transfer
    /// per node on a device). `None` by default: the walk hands each node to
    /// the rules above, sample by sample on the host.
    fn on_tensors(&self) -> Option<&dyn TensorRules<T>> {
        None
    }
}

/// One layer node of the walk, as a [`TensorRules`] rule sees it: whole
/// batches of `backend` tensors (the sample axis first).
pub struct LayerStep<'a, T: Float> {
    /// The backend that holds every tensor below.
    pub backend: &'a dyn Backend<T>,
    /// The layer.
    pub layer: &'a dyn Layer<T>,
    /// The layer's parameters as the backend holds them (uploaded once per
    /// network), in the order of [`Layer::backend_parameters`]; a
    /// convolution's and a linear layer's: the weight, then the bias if any.
    pub parameters: &'a [Tensor<T>],
    /// The layer's input in the forward pass.
    pub input: &'a Tensor<T>,
    /// The layer's output in the forward pass (`layer.forward(input)`).
    pub output: &'a Tensor<T>,
    /// The relevance at the layer's output.
    pub relevance: &'a Tensor<T>,
    /// Where the layer sits (the input layer, the node the walk starts at).
    pub ctx: RuleContext,
}

impl<T: Float> LayerStep<'_, T> {
    /// Checks that the relevance is a batch of the layer's output shape, of
    /// as many samples as the input.
    pub fn check_relevance(&self) -> Result<()> {
        let out = self.layer.output_shape(sample_shape(self.input))?;
        let what = format!("relevance at the output of {}", self.layer.describe());
        check_batch_output(&what, self.input, &out, self.relevance)
    }
}

/// A method's rules on whole batches of backend tensors: what [`Rules`] does
/// one sample at a time on host arrays, written with the backend's
/// operations ([`Backend::conv2d_input_adjoint_batch`], [`Backend::clamp`],
/// [`Backend::stabilised_divide_batch`], …), so that the walk keeps every
/// tensor on the backend. A method offers them through
/// [`Rules::on_tensors`]; [`Lrp`](super::Lrp) does.
///
/// ```
/// use rsp::attribution::{Lrp, Rules, TensorRules};
/// use rsp::{Method, Network};
/// # let net = Network::<f64>::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden/vgg_tiny.safetensors"))?;
/// # let x = rsp::ndarray::Array4::from_elem((2, 3, 32, 32), 0.5);
/// let lrp = Lrp::epsilon(0.25);
/// assert!(Rules::<f64>::on_tensors(&lrp).is_some()); // LRP runs on the backend
/// let by_rules = net.explain_rules(x.view(), 1, &lrp)?;
/// assert_eq!(by_rules.relevance, net.explain(x.view(), 1, Method::LrpEpsilon(0.25))?.relevance);
/// # Ok::<(), rsp::RspError>(())
/// ```
pub trait TensorRules<T: Float>: Sync {
    /// The relevance at the input of `step.layer`, a batch like `step.input`.
    fn layer(&self, step: &LayerStep<'_, T>) -> Result<Tensor<T>>;

    /// The shares of the two summands `a` and `b` of a residual sum in its
    /// relevance `relevance`.
    fn add(
        &self,
        backend: &dyn Backend<T>,
        a: &Tensor<T>,
        b: &Tensor<T>,
        relevance: &Tensor<T>,
    ) -> Result<(Tensor<T>, Tensor<T>)>;

    /// The relevance at the logits (`N×K`) for each sample's class: by
    /// default LRP's, the target's logit alone ([`Rules::seed`]'s default).
    fn seed(&self, backend: &dyn Backend<T>, logits: &Tensor<T>, classes: &[usize]) -> Result<Tensor<T>> {
        backend.class_entries_batch(logits, classes)
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

/// Per node, the batch relevance its rule returned (when kept).
pub(crate) type BatchTrace<T> = Vec<Option<Tensor<T>>>;

/// The rules [`Network::walk_batch`] applies: each layer's batch gradient or
/// batch RSP rule (backend operations), a method's [`TensorRules`] (backend
/// operations), or a method's [`Rules`] run on the host sample by sample
/// ([`Backend::map_on_host`]).
#[derive(Clone, Copy)]
pub(crate) enum BatchRules<'g, T: Float> {
    /// [`GradientRules`] on tensors.
    Gradient,
    /// [`GradientRules`] on rows that come in groups of consecutive rows
    /// sharing one sample ([`Layer::gradient_batch_grouped`]).
    GradientGrouped(&'g [usize]),
    /// [`RspRules`] on tensors.
    Rsp,
    /// A method's own rules, sample by sample on the host (RAP, zennit's
    /// composites, a user's rules).
    Host(&'g dyn Rules<T>),
    /// A method's rules on tensors (LRP-ε, LRP-α1β0), checked as the
    /// method's [`Rules::check_every_node`] says.
    Tensor(&'g dyn TensorRules<T>, bool),
}

impl<T: Float> Network<T> {
    /// Whether the nodes after `stop` form a chain of layers, each reading
    /// the one before (no residual sum, no branch).
    pub(crate) fn is_chain_after(&self, stop: Source) -> bool {
        let first = match stop {
            Source::Input => 0,
            Source::Node(s) => s + 1,
        };
        let nodes = self.nodes();
        let input_of = |k: usize| if k == first { stop } else { Source::Node(k - 1) };
        (first..nodes.len()).all(|k| matches!(nodes[k].op, NodeOp::Layer(_)) && nodes[k].inputs == [input_of(k)])
    }

    /// The one reverse walk, on whole batches of backend tensors: `outputs`
    /// are every node's output of the batch forward pass of `x`, `seed` is at
    /// the output of node `from`; returns what arrives at `stop`. Branch sums
    /// are added in node order, so each sample's bits do not depend on the batch.
    pub(crate) fn walk_batch(
        &self,
        x: &Tensor<T>,
        outputs: &[Tensor<T>],
        from: usize,
        seed: Tensor<T>,
        stop: Source,
        rules: BatchRules<'_, T>,
    ) -> Result<Tensor<T>> {
        Ok(self.walk_batch_traced(x, outputs, from, seed, stop, rules, false)?.0)
    }

    /// [`Network::walk_batch`] that also returns, if `keep_trace`, the result
    /// each node's rule returned at its first input (RSP's layer trace).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn walk_batch_traced(
        &self,
        x: &Tensor<T>,
        outputs: &[Tensor<T>],
        from: usize,
        seed: Tensor<T>,
        stop: Source,
        rules: BatchRules<'_, T>,
        keep_trace: bool,
    ) -> Result<(Tensor<T>, BatchTrace<T>)> {
        let backend = self.backend();
        let parameters = self.uploaded_parameters()?;
        let get = |s: Source| match s {
            Source::Input => x,
            Source::Node(j) => &outputs[j],
        };
        let first = match stop {
            Source::Input => 0,
            Source::Node(s) => s + 1,
        };
        let mut rel: Vec<Option<Tensor<T>>> = vec![None; from + 1];
        let mut at_stop: Option<Tensor<T>> = None;
        let mut trace: BatchTrace<T> = vec![None; if keep_trace { self.nodes().len() } else { 0 }];
        rel[from] = Some(seed);
        for k in (first..=from).rev() {
            let Some(r) = rel[k].take() else { continue };
            let node = &self.nodes()[k];
            let parts: Vec<(Source, Tensor<T>)> = match &node.op {
                NodeOp::Layer(l) => {
                    let src = node.inputs[0];
                    let ctx = RuleContext { is_input_layer: src == Source::Input, receives_seed: k == from };
                    let part = match rules {
                        BatchRules::Gradient => l.gradient_batch(backend, get(src), &r, &parameters[k])?,
                        BatchRules::GradientGrouped(groups) => {
                            l.gradient_batch_grouped(backend, get(src), &r, &parameters[k], groups)?
                        }
                        BatchRules::Rsp => l.rsp_backward_batch(backend, get(src), &r, &parameters[k], ctx)?,
                        BatchRules::Tensor(rules, _) => rules.layer(&LayerStep {
                            backend,
                            layer: l.as_ref(),
                            parameters: &parameters[k],
                            input: get(src),
                            output: get(Source::Node(k)),
                            relevance: &r,
                            ctx,
                        })?,
                        BatchRules::Host(rules) => {
                            let rule = |v: &[ArrayViewD<T>]| {
                                Ok(vec![rules.layer_given_output(
                                    backend,
                                    l.as_ref(),
                                    v[0].view(),
                                    v[1].view(),
                                    v[2].view(),
                                    ctx,
                                )?])
                            };
                            let inputs = [get(src), get(Source::Node(k)), &r];
                            backend.map_on_host(&inputs, 1, &rule)?.pop().expect("one result")
                        }
                    };
                    vec![(src, part)]
                }
                NodeOp::Add => {
                    let (a, b) = (node.inputs[0], node.inputs[1]);
                    let (ra, rb) = match rules {
                        BatchRules::Gradient | BatchRules::GradientGrouped(_) => (r.clone(), r),
                        BatchRules::Rsp => backend.add_rule_batch(get(a), get(b), &r)?,
                        BatchRules::Tensor(rules, _) => rules.add(backend, get(a), get(b), &r)?,
                        BatchRules::Host(rules) => {
                            let rule = |v: &[ArrayViewD<T>]| {
                                let (ra, rb) = rules.add(v[0].view(), v[1].view(), v[2].view())?;
                                Ok(vec![ra, rb])
                            };
                            let mut shares = backend.map_on_host(&[get(a), get(b), &r], 2, &rule)?;
                            let rb = shares.pop().expect("two results");
                            (shares.pop().expect("two results"), rb)
                        }
                    };
                    vec![(a, ra), (b, rb)]
                }
            };
            let check = match rules {
                BatchRules::Rsp => true,
                BatchRules::Host(rules) => rules.check_every_node(),
                BatchRules::Tensor(_, check) => check,
                BatchRules::Gradient | BatchRules::GradientGrouped(_) => false,
            };
            if check {
                for (_, part) in &parts {
                    check_finite_batch(backend, part, || {
                        format!(
                            "the relevance at the input of node #{k} ({}) (an intermediate value overflowed the float range)",
                            node.describe()
                        )
                    })?;
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
                *slot = Some(match slot.take() {
                    Some(acc) => backend.add_batch(&acc, &part)?,
                    None => part,
                });
            }
        }
        let result = match at_stop {
            Some(r) => r,
            None => backend.zeros(get(stop).shape())?,
        };
        Ok((result, trace))
    }
}

#[cfg(test)]
mod tests {
    use super::BatchRules;
    use crate::backend::ConvGeometry;
    use crate::layers::{AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Relu};
    use crate::network::{Network, Source};
    use ndarray::{s, Array1, Array2, Array4, Axis};

    /// conv → relu → maxpool → relu → adaptive pool → flatten → linear → relu
    /// → dropout → linear: every kind the stacked gradient handles, and one
    /// (the pools) it hands to the layer column by column.
    fn net() -> Network<f64> {
        let mut net = Network::new();
        let w =
            Array4::from_shape_fn((6, 2, 3, 3), |(o, c, u, v)| ((o * 7 + c * 5 + u * 3 + v) % 11) as f64 * 0.1 - 0.5);
        net.push(Conv2d::new("c", w, Some(Array1::from_elem(6, 0.05)), ConvGeometry::square(1, 1)).unwrap());
        net.push(Relu);
        net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
        net.push(Relu);
        net.push(AdaptiveAvgPool2d::new((2, 2)));
        net.push(Flatten);
        let w1 = Array2::from_shape_fn((9, 24), |(i, j)| ((i * 13 + j * 7) % 17) as f64 * 0.1 - 0.8);
        net.push(Linear::new("fc1", w1, Some(Array1::from_elem(9, 0.1))).unwrap());
        net.push(Relu);
        net.push(Dropout);
        let w2 = Array2::from_shape_fn((5, 9), |(i, j)| ((i * 5 + j * 3) % 7) as f64 * 0.3 - 0.9);
        net.push(Linear::new("fc2", w2, None).unwrap());
        net
    }

    /// The class gradients of RSP's comparative start (a sample's classes
    /// as one group of rows, one matrix product per linear layer) equal each
    /// class's own walk, at every stop down to the first node.
    #[test]
    fn class_gradients_equal_one_walk_per_class() {
        let net = net();
        let x = Array4::from_shape_fn((2, 2, 8, 8), |(n, c, i, j)| {
            ((n * 7 + c * 11 + i * 5 + j * 3) % 13) as f64 * 0.2 - 1.0
        });
        let backend = net.backend();
        let xt = backend.upload(x.view().into_dyn()).unwrap();
        let outputs = net.forward_batch_outputs(&xt).unwrap();
        // A group of three rows and a group of one.
        let (classes, hostile) = ([3, 0], [vec![4, 1], vec![]]);
        for start in [0, 3, 5] {
            let together =
                backend.download(&net.class_gradients(&xt, &outputs, &classes, &hostile, start).unwrap()).unwrap();
            let rows = [(0, 3), (0, 4), (0, 1), (1, 0)];
            assert_eq!(together.shape()[0], rows.len());
            let mut nonzero = false;
            for (r, &(n, class)) in rows.iter().enumerate() {
                // The sample alone, one class, one row at a time through every layer.
                let one = backend.upload(x.slice(s![n..n + 1, .., .., ..]).into_dyn()).unwrap();
                let acts = net.forward_batch_outputs(&one).unwrap();
                let seed = backend.one_hot_batch(&[class], 5).unwrap();
                let last = net.nodes().len() - 1;
                let alone = net.walk_batch(&one, &acts, last, seed, Source::Node(start), BatchRules::Gradient).unwrap();
                let alone = backend.download(&alone).unwrap().index_axis_move(Axis(0), 0);
                let g = together.index_axis(Axis(0), r);
                assert_eq!(g.shape(), alone.shape());
                let scale = alone.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
                for (a, b) in g.iter().zip(&alone) {
                    assert!((a - b).abs() <= 1e-14 * scale, "node {start}, row {r}: {a} vs {b}");
                }
                nonzero |= alone.iter().any(|&v| v != 0.0);
            }
            assert!(nonzero, "node {start}: the test would pass on zeros");
        }
    }
}

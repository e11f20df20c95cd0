//! Layers: one file per layer type, each with its forward pass, its gradient
//! (for the start relevance) and its RSP rule side by side.
//!
//! | layer | RSP rule | file |
//! |---|---|---|
//! | [`Conv2d`] | z^B rule on the input layer, the sectional rule elsewhere | `conv2d.rs` (kernels: `backend/rules.rs`) |
//! | [`Linear`] | the sectional rule on a 1×1 map | `linear.rs` (kernel: `backend/rules.rs`) |
//! | [`Relu`], [`Dropout`], [`Flatten`] | identity | `relu.rs`, `dropout.rs`, `flatten.rs` |
//! | [`MaxPool2d`] | `x̃ ⊙ maxpoolᵀ(P ⊘ z) + x̃ ⊙ maxpoolᵀ(N ⊘ z)` | `maxpool.rs` (fused kernel: `backend/pooling.rs`) |
//! | [`AvgPool2d`], [`AdaptiveAvgPool2d`] | the same with the average pool | `avgpool.rs` (kernel: `backend/pooling.rs`) |
//! | [`BatchNorm2d`] | bias share removed, relevance kept where `x·w ≠ 0` | `batchnorm.rs` |
//! | residual `Add` (a graph node, not a layer) | split in proportion to clamped inputs | `add.rs` |
//!
//! The other methods' rules are not stored in the layers: the gradient is
//! [`Layer::gradient`], and the LRP rules are mapped to layer kinds by the
//! method ([`crate::attribution::Lrp`], as zennit's composites), so a new rule
//! or method ([`crate::attribution::Rules`]) changes no layer.
//!
//! A layer's `forward`, `gradient` and `rsp_backward` see **one sample**
//! (`C×H×W` or a flat vector); its `*_batch` forms take whole batches of
//! backend tensors ([`Tensor`]) and call the backend's batch
//! operations (engine v2).

mod add;
mod avgpool;
mod batchnorm;
mod conv2d;
mod dropout;
mod flatten;
mod linear;
mod maxpool;
mod relu;

pub use add::add_rule;
pub use avgpool::{AdaptiveAvgPool2d, AvgPool2d};
pub use batchnorm::BatchNorm2d;
pub use conv2d::Conv2d;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use linear::Linear;
pub use maxpool::MaxPool2d;
pub use relu::Relu;

use crate::backend::{map_samples, stack_samples, Backend, HostParameter, Tensor};
use crate::error::{Result, RspError};
use crate::float::Float;
use ndarray::{ArrayD, ArrayView3, ArrayViewD, ArrayViewMutD, Axis, Ix3};
use std::any::Any;
use std::fmt::Debug;

/// What a layer is, for the choice of the start layer and for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LayerKind {
    /// 2-D convolution.
    Conv2d,
    /// Fully connected layer.
    Linear,
    /// Rectified linear unit.
    Relu,
    /// Max pooling.
    MaxPool2d,
    /// Average pooling (fixed or adaptive windows).
    AvgPool2d,
    /// Batch normalisation (inference).
    BatchNorm2d,
    /// Flatten to a vector.
    Flatten,
    /// Dropout (identity at inference).
    Dropout,
    /// A user-defined layer.
    Custom,
}

impl LayerKind {
    /// True for layers that only pool (the layers that may sit between the
    /// start layer and the classifier head).
    pub fn is_pooling(self) -> bool {
        matches!(self, LayerKind::MaxPool2d | LayerKind::AvgPool2d | LayerKind::Dropout)
    }
}

/// Where a rule runs, for rules that depend on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleContext {
    /// The layer consumes the network input (a convolution there uses the z^B
    /// rule with the input's bounds instead of the sectional rule).
    pub is_input_layer: bool,
    /// The node is the one the walk starts at: the relevance at its output is
    /// the walk's seed (RAP's first-propagation rule keys on it; RSP, LRP and
    /// the gradient ignore it).
    pub receives_seed: bool,
}

/// What one layer costs for one sample, for the pre-flight check of every call
/// ([`Network::estimate`](crate::Network::estimate)): the memory of the
/// temporary tensors it holds at once beyond its input and output, and the
/// work of all its passes in one attribution (forward pass, gradient and the
/// heaviest of its RSP and LRP rules), in multiply–add equivalents.
///
/// ```
/// use rsp::layers::LayerCost;
/// // An element-wise layer on 100 elements.
/// let c = LayerCost::elementwise(&[4, 5, 5], &[4, 5, 5]);
/// assert_eq!((c.scratch_elements, c.work), (800, 800));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerCost {
    /// Elements of the temporary tensors held at once (the largest over the passes).
    pub scratch_elements: u64,
    /// The largest single buffer the backend's scratch pool may keep for reuse
    /// after the layer (im2col matrices; 0 for layers that use none).
    pub pooled_buffer_elements: u64,
    /// Multiply–add equivalents of all passes of one attribution.
    pub work: u64,
}

impl LayerCost {
    /// The cost assumed for an element-wise layer (and for user-defined layers
    /// that do not say better): four temporaries and four operations per
    /// input and output element.
    pub fn elementwise(input: &[usize], output: &[usize]) -> Self {
        let elements = elements(input).saturating_add(elements(output));
        LayerCost {
            scratch_elements: elements.saturating_mul(4),
            pooled_buffer_elements: 0,
            work: elements.saturating_mul(4),
        }
    }
}

/// The number of elements of `shape`, saturating at `u64::MAX`.
pub(crate) fn elements(shape: &[usize]) -> u64 {
    shape.iter().fold(1u64, |acc, &d| acc.saturating_mul(d as u64))
}

/// A named, mutable parameter tensor of a layer (for weight randomisation).
pub type ParameterMut<'a, T> = (&'static str, ArrayViewMutD<'a, T>);

/// One layer of a network: its forward pass, its gradient and its RSP rule.
///
/// Layers are immutable during an attribution: everything one call computes
/// lives in that call. Every method works on **one sample** (no batch axis).
///
/// A layer of your own implements what defines it: [`Layer::kind`] (say
/// [`LayerKind::Custom`]), [`Layer::output_shape`], [`Layer::forward`],
/// [`Layer::gradient`], [`Layer::rsp_backward`] and [`Layer::describe`]; it
/// must be `Clone` (boxed layers clone through a blanket impl) and is
/// recovered from a `dyn Layer` with [`downcast_ref`](trait.Layer.html#method.downcast_ref).
/// An activation says so with [`Layer::is_activation`], so that the automatic
/// start layer can be its output. `tests/suite/custom_layer.rs` implements one outside the crate.
///
/// ```
/// use rsp::backend::CpuBackend;
/// use rsp::layers::{Layer, Relu, RuleContext};
/// let x = ndarray::arr1(&[-1.0f64, 2.0]).into_dyn();
/// let y = Relu.forward(&CpuBackend, x.view()).unwrap();
/// assert_eq!(y, ndarray::arr1(&[0.0, 2.0]).into_dyn());
/// // ReLU passes relevance through unchanged.
/// let r = Relu.rsp_backward(&CpuBackend, x.view(), y.view(), RuleContext::default()).unwrap();
/// assert_eq!(r, y);
/// ```
pub trait Layer<T: Float>: CloneLayer<T> + Any + Send + Sync + Debug {
    /// The layer type.
    fn kind(&self) -> LayerKind;

    /// True for an activation function (ReLU by default): the automatic start
    /// layer ([`crate::Network::default_start_layer`]) is the last activation
    /// before the classifier's pooling.
    fn is_activation(&self) -> bool {
        self.kind() == LayerKind::Relu
    }

    /// The layer's name (its weights' prefix in a model file), or `""`.
    fn name(&self) -> &str {
        ""
    }

    /// Shape of one output sample for one input sample of shape `input`, or a
    /// shape error saying what the layer expected.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>>;

    /// Forward pass of one sample.
    fn forward(&self, backend: &dyn Backend<T>, x: ArrayViewD<T>) -> Result<ArrayD<T>>;

    /// The parameters [`Layer::forward_batch`] needs on the backend, in the
    /// order it reads them. The network uploads them once per network and
    /// backend and keeps them ([`crate::Network::forward`]); the host backends
    /// share the layer's buffers without a copy. None by default.
    fn backend_parameters(&self) -> Vec<HostParameter<T>> {
        Vec::new()
    }

    /// Forward pass of a whole batch (`N×…`) of backend tensors, `parameters`
    /// being the uploaded [`Layer::backend_parameters`]. The built-in layers run
    /// it on the backend. The default, for user-defined layers, goes through
    /// the host: it downloads `x`, runs [`Layer::forward`] on each sample and
    /// uploads the result (no cost on a CPU backend beyond a copy, two
    /// transfers on a device).
    fn forward_batch(&self, backend: &dyn Backend<T>, x: &Tensor<T>, parameters: &[Tensor<T>]) -> Result<Tensor<T>> {
        let _ = parameters;
        let host = backend.download(x)?;
        let n = host.shape().first().copied().unwrap_or(0);
        let outputs = map_samples(n, |i| self.forward(backend, host.index_axis(Axis(0), i)))?;
        backend.upload(stack_samples(outputs)?.view())
    }

    /// [`Layer::gradient`] of a whole batch of backend tensors: the input `x`
    /// and the gradient `grad_output` at the output. The built-in layers run
    /// it on the backend; the default goes through the host, one sample at a time.
    fn gradient_batch(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        grad_output: &Tensor<T>,
        parameters: &[Tensor<T>],
    ) -> Result<Tensor<T>> {
        let _ = parameters;
        through_host(backend, x, grad_output, |x, g| self.gradient(backend, x, g))
    }

    /// [`Layer::gradient_batch`] of rows that come in `groups` of consecutive
    /// rows sharing one sample (the gradients of several classes of one
    /// sample, RSP's comparative start): a layer whose gradient is a matrix
    /// product ([`Linear`]) computes each group as one product, reading its
    /// weights once per group; every other layer ignores the groups.
    fn gradient_batch_grouped(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        grad_output: &Tensor<T>,
        parameters: &[Tensor<T>],
        groups: &[usize],
    ) -> Result<Tensor<T>> {
        let _ = groups;
        self.gradient_batch(backend, x, grad_output, parameters)
    }

    /// [`Layer::rsp_backward`] of a whole batch of backend tensors. The
    /// built-in layers run it on the backend; the default goes through the
    /// host, one sample at a time.
    fn rsp_backward_batch(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        relevance: &Tensor<T>,
        parameters: &[Tensor<T>],
        ctx: RuleContext,
    ) -> Result<Tensor<T>> {
        let _ = parameters;
        through_host(backend, x, relevance, |x, r| self.rsp_backward(backend, x, r, ctx))
    }

    /// Vector–Jacobian product: the gradient at the input given the gradient
    /// `grad_output` at the output, for input `x`.
    fn gradient(&self, backend: &dyn Backend<T>, x: ArrayViewD<T>, grad_output: ArrayViewD<T>) -> Result<ArrayD<T>>;

    /// The RSP rule: relevance at the input given the relevance at the output,
    /// for the input `x` the forward pass saw.
    fn rsp_backward(
        &self,
        backend: &dyn Backend<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> Result<ArrayD<T>>;

    /// What the layer costs for one sample of shape `input` (whose output has
    /// shape `output`): the memory and work the pre-flight check of every call
    /// adds up ([`LayerCost`]). The default, for user-defined layers, is
    /// [`LayerCost::elementwise`]; a layer doing more should say so.
    fn cost(&self, input: &[usize], output: &[usize]) -> LayerCost {
        LayerCost::elementwise(input, output)
    }

    /// The layer's parameters, for weight randomisation (model sensitivity).
    fn parameters_mut(&mut self) -> Vec<ParameterMut<'_, T>> {
        Vec::new()
    }

    /// One line describing the layer, e.g. `conv2d features.0 3→8 k3 s1 p1`.
    fn describe(&self) -> String;
}

/// Cloning a boxed layer: implemented for every `Clone` layer, so a layer
/// never writes it.
pub trait CloneLayer<T: Float> {
    /// A boxed copy of the layer.
    fn clone_boxed(&self) -> Box<dyn Layer<T>>;
}

impl<T: Float, L: Layer<T> + Clone> CloneLayer<T> for L {
    fn clone_boxed(&self) -> Box<dyn Layer<T>> {
        Box::new(self.clone())
    }
}

impl<T: Float> Clone for Box<dyn Layer<T>> {
    fn clone(&self) -> Self {
        self.clone_boxed()
    }
}

impl<T: Float> dyn Layer<T> {
    /// The layer as its concrete type `L`, if it is one.
    ///
    /// ```
    /// use rsp::layers::{Layer, Relu, Flatten};
    /// let boxed: Box<dyn Layer<f32>> = Box::new(Relu);
    /// assert!(boxed.downcast_ref::<Relu>().is_some());
    /// assert!(boxed.downcast_ref::<Flatten>().is_none());
    /// ```
    pub fn downcast_ref<L: Layer<T>>(&self) -> Option<&L> {
        (self as &dyn Any).downcast_ref::<L>()
    }
}

/// A per-sample host function of `x` and `r` applied to backend tensors: one
/// download of each, one upload of the result (the layers' default batch passes).
fn through_host<T: Float>(
    backend: &dyn Backend<T>,
    x: &Tensor<T>,
    r: &Tensor<T>,
    f: impl Fn(ArrayViewD<T>, ArrayViewD<T>) -> Result<ArrayD<T>> + Sync,
) -> Result<Tensor<T>> {
    let (x, r) = (backend.download(x)?, backend.download(r)?);
    let n = x.shape().first().copied().unwrap_or(0);
    let outputs = map_samples(n, |i| f(x.index_axis(Axis(0), i), r.index_axis(Axis(0), i)))?;
    backend.upload(stack_samples(outputs)?.view())
}

/// Checks that the batch tensor `t` (the gradient or relevance at a layer's
/// output) has shape `N × output`, `N` being `x`'s batch.
pub(crate) fn check_batch_output<T: Float>(
    context: &str,
    x: &Tensor<T>,
    output: &[usize],
    t: &Tensor<T>,
) -> Result<()> {
    let mut expected = vec![x.shape().first().copied().unwrap_or(0)];
    expected.extend_from_slice(output);
    check_same_shape(context, &expected, t.shape())
}

/// The shape of one sample of a batch tensor (its shape without the first axis).
pub(crate) fn sample_shape<T: Float>(x: &Tensor<T>) -> &[usize] {
    x.shape().get(1..).unwrap_or(&[])
}

/// Views one sample as `C×H×W`, or says which layer wanted that.
pub(crate) fn as_chw<'a, T>(x: ArrayViewD<'a, T>, layer: &str) -> Result<ArrayView3<'a, T>> {
    let shape = x.shape().to_vec();
    x.into_dimensionality::<Ix3>().map_err(|_| RspError::shape(layer, "a C×H×W sample (rank 3)", &shape))
}

/// Checks that `actual` equals `expected` (same shape), naming the tensor.
pub(crate) fn check_same_shape(context: &str, expected: &[usize], actual: &[usize]) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(RspError::shape(context, format!("{expected:?}"), actual))
    }
}

//! [`Network`]: layers composed into a graph (a chain in the common case, with
//! residual sums and branches when needed), its forward pass and its checks.

use crate::backend::{Backend, CpuBackend, Tensor};
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::layers::{Layer, LayerKind};
use crate::limits::MAX_ELEMENTS_PER_SAMPLE;
use ndarray::{Array2, ArrayView4, AsArray, Axis, Ix2, Ix4, Slice};

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// Where a node reads a tensor from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The network input.
    Input,
    /// The output of node `k`.
    Node(usize),
}

/// What a node computes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum NodeOp<T: Float> {
    /// A layer with one input.
    Layer(Box<dyn Layer<T>>),
    /// The residual sum of two inputs.
    Add,
}

/// One node of a [`Network`]: an operation and the tensors it reads.
#[derive(Clone, Debug)]
pub struct Node<T: Float> {
    pub(crate) op: NodeOp<T>,
    pub(crate) inputs: Vec<Source>,
}

impl<T: Float> Node<T> {
    /// The operation.
    pub fn op(&self) -> &NodeOp<T> {
        &self.op
    }

    /// Its inputs (one for a layer, two for `Add`), each an earlier node or the input.
    pub fn inputs(&self) -> &[Source] {
        &self.inputs
    }

    /// The layer of a layer node.
    pub fn layer(&self) -> Option<&dyn Layer<T>> {
        match &self.op {
            NodeOp::Layer(l) => Some(l.as_ref()),
            NodeOp::Add => None,
        }
    }

    /// One line describing the node.
    pub fn describe(&self) -> String {
        let from = |s: &Source| match s {
            Source::Input => "input".to_string(),
            Source::Node(k) => format!("#{k}"),
        };
        let inputs: Vec<String> = self.inputs.iter().map(from).collect();
        match &self.op {
            NodeOp::Layer(l) => format!("{} ← {}", l.describe(), inputs.join(", ")),
            NodeOp::Add => format!("add ← {}", inputs.join(" + ")),
        }
    }
}

/// A network: nodes in topological order, the last node's output being the
/// logits. Generic over the float type it computes in (`f32` by default).
///
/// A chain of layers:
/// ```
/// use rsp::layers::{Conv2d, Flatten, Linear, Relu};
/// use rsp::backend::ConvGeometry;
/// use rsp::Network;
/// use ndarray::{Array1, Array2, Array4};
/// let mut net = Network::<f64>::new();
/// net.push(Conv2d::new("c", Array4::from_elem((2, 3, 3, 3), 0.1), None, ConvGeometry::square(1, 1)).unwrap());
/// net.push(Relu);
/// net.push(Flatten);
/// net.push(Linear::new("fc", Array2::from_elem((4, 2 * 5 * 5), 0.01), Some(Array1::zeros(4))).unwrap());
/// assert_eq!(net.check(&[3, 5, 5]).unwrap().last().unwrap(), &vec![4]);
/// ```
/// A residual block: `y = relu(conv(x) + x)`:
/// ```
/// # use rsp::layers::{Conv2d, Relu};
/// # use rsp::backend::ConvGeometry;
/// # use rsp::network::{Network, Source};
/// # use ndarray::Array4;
/// let mut net = Network::<f32>::new();
/// let x = net.push(Relu);
/// let y = net.push(Conv2d::new("c", Array4::zeros((3, 3, 3, 3)), None, ConvGeometry::square(1, 1)).unwrap());
/// let sum = net.add(y, x);
/// assert_eq!(sum, Source::Node(2));
/// net.push(Relu);
/// assert_eq!(net.len(), 4);
/// ```
#[derive(Clone)]
pub struct Network<T: Float = f32> {
    nodes: Vec<Node<T>>,
    backend: Arc<dyn Backend<T>>,
    start_layer: Option<usize>,
    class_names: Option<Vec<String>>,
    input_shape: Option<Vec<usize>>,
    input_normalization: Option<InputNormalization>,
    /// `None`: [`crate::budget::default_memory_budget`].
    pub(crate) memory_budget: Option<u64>,
    /// `None`: [`crate::limits::DEFAULT_MAX_WORK`].
    pub(crate) work_bound: Option<u64>,
    /// The layers' parameters on `backend`, uploaded on first use.
    pub(crate) uploaded: ParameterCache<T>,
}

/// Every layer node's parameters as tensors of the network's backend (indexed
/// by node; empty for nodes without parameters): filled by the first batch
/// forward pass, shared by clones of the network, emptied by every change of
/// the backend or of the layers. Also the network with its batch norms
/// folded as zennit folds them (zennit's composites run on it), made on first
/// use with its own uploaded parameters.
pub(crate) struct ParameterCache<T: Float> {
    uploaded: Mutex<Option<Uploaded<T>>>,
    zennit_canonized: Mutex<Option<Arc<Network<T>>>>,
}

/// Per node, its parameters on the backend.
type Uploaded<T> = Arc<Vec<Vec<Tensor<T>>>>;

impl<T: Float> ParameterCache<T> {
    fn empty() -> Self {
        ParameterCache { uploaded: Mutex::new(None), zennit_canonized: Mutex::new(None) }
    }

    /// The cached tensors, or those `upload` makes (kept). The lock is held
    /// while uploading, so concurrent first calls upload once.
    fn get_or_upload(&self, upload: impl FnOnce() -> Result<Vec<Vec<Tensor<T>>>>) -> Result<Uploaded<T>> {
        let mut cached = self.uploaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tensors) = cached.as_ref() {
            return Ok(Arc::clone(tensors));
        }
        let tensors = Arc::new(upload()?);
        *cached = Some(Arc::clone(&tensors));
        Ok(tensors)
    }

    /// The cached canonized network, or the one `make` returns (kept).
    pub(crate) fn zennit_canonized(&self, make: impl FnOnce() -> Result<Network<T>>) -> Result<Arc<Network<T>>> {
        let mut cached = self.zennit_canonized.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(net) = cached.as_ref() {
            return Ok(Arc::clone(net));
        }
        let net = Arc::new(make()?);
        *cached = Some(Arc::clone(&net));
        Ok(net)
    }

    fn clear(&mut self) {
        *self.uploaded.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        self.forget_canonized();
    }

    /// Drops the canonized network (it copied the settings that changed).
    pub(crate) fn forget_canonized(&mut self) {
        *self.zennit_canonized.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl<T: Float> Clone for ParameterCache<T> {
    fn clone(&self) -> Self {
        fn read<V: Clone>(m: &Mutex<Option<V>>) -> Option<V> {
            m.lock().unwrap_or_else(PoisonError::into_inner).clone()
        }
        ParameterCache {
            uploaded: Mutex::new(read(&self.uploaded)),
            zennit_canonized: Mutex::new(read(&self.zennit_canonized)),
        }
    }
}

impl<T: Float> fmt::Debug for Network<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Network<{}> on the {} backend:", T::NAME, self.backend.name())?;
        for (k, n) in self.nodes.iter().enumerate() {
            writeln!(f, "  #{k}: {}", n.describe())?;
        }
        Ok(())
    }
}

impl<T: Float> Default for Network<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-channel input normalisation `x = (v - mean[c]) / std[c]`, applied to
/// pixel values `v` in `[0, 1]`, as a model file declares it.
///
/// ```
/// let n = rsp::network::InputNormalization { mean: vec![0.3; 3], std: vec![0.3; 3] };
/// assert!(n.validate().is_ok());
/// let bad = rsp::network::InputNormalization { mean: vec![0.3; 3], std: vec![0.3, 0.0, 0.3] };
/// assert!(bad.validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputNormalization {
    /// Per-channel mean, subtracted first.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, divided by second.
    pub std: Vec<f32>,
}

impl InputNormalization {
    /// Checks that there is at least one channel, as many means as standard
    /// deviations, every mean finite and every std finite and positive.
    ///
    /// # Errors
    /// [`RspError::InvalidArgument`] naming what is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.mean.is_empty() || self.mean.len() != self.std.len() {
            return Err(RspError::InvalidArgument(format!(
                "input normalisation needs one mean and one std per channel, got {} and {}",
                self.mean.len(),
                self.std.len()
            )));
        }
        if self.mean.iter().any(|m| !m.is_finite()) || self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(RspError::InvalidArgument(
                "input normalisation: every mean must be finite and every std finite and positive".into(),
            ));
        }
        Ok(())
    }
}

/// A non-finite element of a batch tensor as [`RspError::NonFinite`] naming
/// `what` (and the sample), with the index within the sample.
pub(crate) fn check_finite_batch<T: Float>(
    backend: &dyn Backend<T>,
    t: &Tensor<T>,
    what: impl FnOnce() -> String,
) -> Result<()> {
    match backend.first_non_finite(t)? {
        None => Ok(()),
        Some(i) => {
            let per_sample = (t.len() / t.shape().first().copied().unwrap_or(1).max(1)).max(1);
            Err(RspError::NonFinite {
                tensor: format!("{} (sample {})", what(), i / per_sample),
                index: i % per_sample,
            })
        }
    }
}

impl<T: Float> Network<T> {
    /// An empty network on the default [`CpuBackend`].
    pub fn new() -> Self {
        Network {
            nodes: Vec::new(),
            backend: Arc::new(CpuBackend),
            start_layer: None,
            class_names: None,
            input_shape: None,
            input_normalization: None,
            memory_budget: None,
            work_bound: None,
            uploaded: ParameterCache::empty(),
        }
    }

    /// A chain: each layer reads the previous one's output.
    ///
    /// ```
    /// use rsp::layers::{Flatten, Layer, Relu};
    /// let net = rsp::Network::<f32>::sequential(vec![Box::new(Relu) as Box<dyn Layer<f32>>, Box::new(Flatten)]);
    /// assert_eq!(net.len(), 2);
    /// ```
    pub fn sequential(layers: impl IntoIterator<Item = Box<dyn Layer<T>>>) -> Self {
        let mut net = Self::new();
        for l in layers {
            net.push_boxed(l, net.last());
        }
        net
    }

    /// The same network computing with another backend.
    pub fn with_backend(mut self, backend: impl Backend<T> + 'static) -> Self {
        self.backend = Arc::new(backend);
        self.uploaded.clear();
        self
    }

    /// The backend the network computes with.
    pub fn backend(&self) -> &dyn Backend<T> {
        self.backend.as_ref()
    }

    /// The output of the last node (or the input of an empty network).
    pub fn last(&self) -> Source {
        self.nodes.len().checked_sub(1).map_or(Source::Input, Source::Node)
    }

    /// Appends `layer` reading the current last node; returns its source.
    pub fn push(&mut self, layer: impl Layer<T> + 'static) -> Source {
        self.push_boxed(Box::new(layer), self.last())
    }

    /// Appends `layer` reading `from`; returns its source.
    pub fn push_from(&mut self, layer: impl Layer<T> + 'static, from: Source) -> Source {
        self.push_boxed(Box::new(layer), from)
    }

    /// Appends a boxed layer reading `from`.
    pub fn push_boxed(&mut self, layer: Box<dyn Layer<T>>, from: Source) -> Source {
        self.uploaded.clear();
        self.nodes.push(Node { op: NodeOp::Layer(layer), inputs: vec![from] });
        self.last()
    }

    /// Replaces the last node by `layer` reading `from` (importers fold a bias into it).
    #[cfg(feature = "onnx")]
    pub(crate) fn replace_last(&mut self, layer: Box<dyn Layer<T>>, from: Source) {
        self.uploaded.clear();
        if let Some(last) = self.nodes.last_mut() {
            *last = Node { op: NodeOp::Layer(layer), inputs: vec![from] };
        }
    }

    /// The same network (backend, class names, declared input, budgets) with
    /// other nodes and start layer: what a canonizer ([`crate::canonize`]) returns.
    pub(crate) fn with_nodes(&self, nodes: Vec<Node<T>>, start_layer: Option<usize>) -> Self {
        Network {
            nodes,
            backend: self.backend.clone(),
            start_layer,
            class_names: self.class_names.clone(),
            input_shape: self.input_shape.clone(),
            input_normalization: self.input_normalization.clone(),
            memory_budget: self.memory_budget,
            work_bound: self.work_bound,
            uploaded: ParameterCache::empty(),
        }
    }

    /// Appends the residual sum `a + b`; returns its source.
    pub fn add(&mut self, a: Source, b: Source) -> Source {
        self.uploaded.clear();
        self.nodes.push(Node { op: NodeOp::Add, inputs: vec![a, b] });
        self.last()
    }

    /// The nodes in order.
    pub fn nodes(&self) -> &[Node<T>] {
        &self.nodes
    }

    /// Mutable access to the layer of node `k` (for weight randomisation).
    pub fn layer_mut(&mut self, k: usize) -> Option<&mut (dyn Layer<T> + 'static)> {
        // The caller may change the weights: upload them again on next use.
        self.uploaded.clear();
        match self.nodes.get_mut(k).map(|n| &mut n.op) {
            Some(NodeOp::Layer(l)) => Some(l.as_mut()),
            _ => None,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True for a network without nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The start layer the model names (from its file or [`Network::set_start_layer`]).
    pub fn start_layer_setting(&self) -> Option<usize> {
        self.start_layer
    }

    /// Sets the start layer used when the options do not name one (`None`: automatic).
    pub fn set_start_layer(&mut self, start: Option<usize>) {
        self.uploaded.forget_canonized();
        self.start_layer = start;
    }

    /// The class names, if the model file gave them.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// Sets the class names.
    pub fn set_class_names(&mut self, names: Option<Vec<String>>) {
        self.uploaded.forget_canonized();
        self.class_names = names;
    }

    /// The per-sample input shape `(C, H, W)` the model file declared, if any.
    pub fn input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    /// Sets the declared per-sample input shape.
    pub fn set_input_shape(&mut self, shape: Option<Vec<usize>>) {
        self.uploaded.forget_canonized();
        self.input_shape = shape;
    }

    /// How the model expects its input channels normalised, if the model file
    /// says (metadata `normalization`); tools that read images apply it.
    pub fn input_normalization(&self) -> Option<&InputNormalization> {
        self.input_normalization.as_ref()
    }

    /// Sets the declared input normalisation.
    ///
    /// # Errors
    /// [`RspError::InvalidArgument`] if the statistics are unusable
    /// ([`InputNormalization::validate`]) or their channel count differs from
    /// the declared input shape's.
    pub fn set_input_normalization(&mut self, norm: Option<InputNormalization>) -> Result<()> {
        if let Some(n) = &norm {
            n.validate()?;
            if let Some(c) = self.input_shape.as_ref().and_then(|s| s.first()) {
                if *c != n.mean.len() {
                    return Err(RspError::InvalidArgument(format!(
                        "the input normalisation has {} channels, the declared input shape {c}",
                        n.mean.len()
                    )));
                }
            }
        }
        self.uploaded.forget_canonized();
        self.input_normalization = norm;
        Ok(())
    }

    /// Checks the network for one sample of shape `(C, H, W)` and returns every
    /// node's output shape. Errors name the node's index and type.
    pub fn check(&self, sample_shape: &[usize]) -> Result<Vec<Vec<usize>>> {
        if self.nodes.is_empty() {
            return Err(RspError::model("the network has no layers"));
        }
        check_size("the input sample", sample_shape)?;
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.nodes.len());
        for (k, node) in self.nodes.iter().enumerate() {
            let mut ins = Vec::new();
            for &s in &node.inputs {
                match s {
                    Source::Input => ins.push(sample_shape.to_vec()),
                    Source::Node(j) if j < k => ins.push(shapes[j].clone()),
                    Source::Node(j) => {
                        return Err(RspError::model(format!(
                            "node #{k} reads node #{j}, which does not come before it"
                        )))
                    }
                }
            }
            let out = match &node.op {
                NodeOp::Layer(l) => {
                    if ins.len() != 1 {
                        return Err(RspError::model(format!("node #{k} ({}) must have one input", l.describe())));
                    }
                    l.output_shape(&ins[0])
                        .map_err(|e| RspError::Model(format!("node #{k} ({}): {}", l.describe(), e.detail())))?
                }
                NodeOp::Add => {
                    if ins.len() != 2 || ins[0] != ins[1] {
                        return Err(RspError::Model(format!(
                            "node #{k} (add) needs two inputs of one shape, found {ins:?}"
                        )));
                    }
                    ins[0].clone()
                }
            };
            check_size(&format!("the output of node #{k} ({})", node.describe()), &out)?;
            shapes.push(out);
        }
        let logits = shapes.last().expect("non-empty");
        if logits.len() != 1 || logits[0] == 0 {
            return Err(RspError::model(format!(
                "the network must end in a vector of class logits, but its output per sample has shape {logits:?}"
            )));
        }
        if let Some(names) = &self.class_names {
            if names.len() != logits[0] {
                return Err(RspError::model(format!(
                    "the model names {} classes but computes {} logits",
                    names.len(),
                    logits[0]
                )));
            }
        }
        Ok(shapes)
    }

    /// Validates a batch `(N, C, H, W)`: rank, a non-empty batch, finite values,
    /// and a shape the layers accept. Returns the node output shapes.
    pub(crate) fn validate_input(&self, input: &ArrayView4<T>) -> Result<Vec<Vec<usize>>> {
        let shape = input.shape();
        if shape[0] == 0 {
            return Err(RspError::InvalidArgument("the input batch is empty (N = 0)".into()));
        }
        if let Some(index) = input.iter().position(|v| !v.is_finite()) {
            return Err(RspError::NonFinite { tensor: "input".into(), index });
        }
        if let Some(declared) = &self.input_shape {
            if declared[0] != shape[1] {
                return Err(RspError::shape(
                    "input",
                    format!("N×{}×H×W (the model's input channels)", declared[0]),
                    shape,
                ));
            }
        }
        self.check(&shape[1..]).map_err(|e| match e {
            RspError::Model(m) => {
                RspError::InvalidArgument(format!("input of shape {shape:?} does not fit the network: {m}"))
            }
            other => other,
        })
    }

    /// Logits `(N, classes)` of a batch `(N, C, H, W)`.
    ///
    /// ```
    /// # use rsp::layers::{Flatten, Layer, Linear};
    /// let fc = Linear::new("fc", ndarray::arr2(&[[1.0, 1.0, 1.0, 1.0]]), None).unwrap();
    /// let net = rsp::Network::<f64>::sequential(vec![Box::new(Flatten) as Box<dyn Layer<f64>>, Box::new(fc)]);
    /// let logits = net.forward(ndarray::Array4::ones((2, 1, 2, 2)).view()).unwrap();
    /// assert_eq!(logits, ndarray::arr2(&[[4.0], [4.0]]));
    /// ```
    pub fn forward<'a>(&self, input: impl AsArray<'a, T, Ix4>) -> Result<Array2<T>>
    where
        T: 'a,
    {
        let input: ArrayView4<'a, T> = input.into();
        let shapes = self.validate_input(&input)?;
        let n = input.shape()[0];
        let chunk = self.forward_chunk(&shapes, input.shape())?;
        let classes = shapes.last().expect("checked")[0];
        let mut logits = Array2::zeros((n, classes));
        for first in (0..n).step_by(chunk) {
            let rows = Slice::from(first..(first + chunk).min(n));
            // One upload of the input, one download of the logits.
            let x = self.backend().upload(input.slice_axis(Axis(0), rows).into_dyn())?;
            let out = self.backend().download(&self.forward_batch(&x)?)?;
            let out = out.into_dimensionality::<Ix2>().map_err(|e| RspError::Backend {
                backend: self.backend().name().into(),
                reason: format!("the logits came back with the wrong rank: {e}"),
            })?;
            logits.slice_axis_mut(Axis(0), rows).assign(&out);
        }
        Ok(logits)
    }

    /// The batch forward pass of `x` (`N×C×H×W`, a tensor of the network's
    /// backend) on the backend: the logits tensor `N×classes`. Node outputs
    /// stay on the backend and are dropped after their last reader; each is
    /// checked finite where it is made (an overflow must not hide behind a
    /// later ReLU or max).
    pub fn forward_batch(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        let mut outputs = self.forward_nodes(x, false)?;
        outputs.pop().flatten().ok_or_else(|| RspError::model("the network has no nodes"))
    }

    /// The batch forward pass keeping every node's output (what the backward
    /// passes of an attribution read).
    pub(crate) fn forward_batch_outputs(&self, x: &Tensor<T>) -> Result<Vec<Tensor<T>>> {
        let outputs = self.forward_nodes(x, true)?;
        Ok(outputs.into_iter().map(|o| o.expect("every output kept")).collect())
    }

    /// The batch forward pass: every node's output, or (`keep_all` false)
    /// only those still to be read and the last.
    fn forward_nodes(&self, x: &Tensor<T>, keep_all: bool) -> Result<Vec<Option<Tensor<T>>>> {
        let backend = self.backend();
        let parameters = self.uploaded_parameters()?;
        let mut last_reader = vec![None; self.nodes.len()];
        for (k, node) in self.nodes.iter().enumerate() {
            for s in &node.inputs {
                if let Source::Node(j) = *s {
                    last_reader[j] = Some(k);
                }
            }
        }
        let mut outputs: Vec<Option<Tensor<T>>> = vec![None; self.nodes.len()];
        for (k, node) in self.nodes.iter().enumerate() {
            let read = |s: Source| match s {
                Source::Input => Ok(x),
                Source::Node(j) => outputs[j]
                    .as_ref()
                    .ok_or_else(|| RspError::model(format!("node #{k} reads node #{j}, which comes after it"))),
            };
            let out = match &node.op {
                NodeOp::Layer(l) => l.forward_batch(backend, read(node.inputs[0])?, &parameters[k])?,
                NodeOp::Add => backend.add_batch(read(node.inputs[0])?, read(node.inputs[1])?)?,
            };
            check_finite_batch(backend, &out, || {
                format!("the output of node #{k} ({}) (the forward pass overflowed the float range)", node.describe())
            })?;
            outputs[k] = Some(out);
            if keep_all {
                continue;
            }
            for s in &node.inputs {
                if let Source::Node(j) = *s {
                    if last_reader[j] == Some(k) {
                        outputs[j] = None;
                    }
                }
            }
        }
        Ok(outputs)
    }

    /// The layers' parameters on the network's backend: uploaded by the first
    /// call, then reused until the backend or a layer changes.
    pub(crate) fn uploaded_parameters(&self) -> Result<Uploaded<T>> {
        self.uploaded.get_or_upload(|| {
            self.nodes
                .iter()
                .map(|node| match &node.op {
                    NodeOp::Layer(l) => {
                        l.backend_parameters().iter().map(|p| self.backend().upload_parameter(p)).collect()
                    }
                    NodeOp::Add => Ok(Vec::new()),
                })
                .collect()
        })
    }

    /// The start layer chosen automatically: the last activation (a ReLU, or a
    /// custom layer whose [`Layer::is_activation`] is true) of the feature
    /// extractor followed by nothing but pooling (and dropout) before the
    /// classifier head (the first flatten or linear node).
    pub fn default_start_layer(&self) -> Result<usize> {
        let kind = |k: usize| self.nodes[k].layer().map(|l| l.kind());
        let head = (0..self.nodes.len())
            .find(|&k| matches!(kind(k), Some(LayerKind::Flatten | LayerKind::Linear)))
            .ok_or_else(|| {
                RspError::model("no classifier head (flatten or linear layer) found; give the start layer explicitly")
            })?;
        let mut k = head;
        while k > 0 && kind(k - 1).is_some_and(|kd| kd.is_pooling()) {
            k -= 1;
        }
        match k.checked_sub(1) {
            Some(s) if self.nodes[s].layer().is_some_and(|l| l.is_activation()) => Ok(s),
            _ => Err(RspError::model(
                "no activation (ReLU) precedes the pooling before the classifier head; give the start layer explicitly",
            )),
        }
    }

    /// The start layer in force: `explicit`, else the model's, else automatic.
    pub(crate) fn resolve_start(&self, explicit: Option<usize>) -> Result<usize> {
        let s = match explicit.or(self.start_layer) {
            Some(s) => s,
            None => self.default_start_layer()?,
        };
        if s >= self.nodes.len().saturating_sub(1) {
            return Err(RspError::InvalidArgument(format!(
                "start layer {s} must be a node before the last one (the network has {} nodes)",
                self.nodes.len()
            )));
        }
        Ok(s)
    }
}

/// What a call computes, for [`Network::estimate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pass {
    /// [`Network::forward`]: logits only.
    Forward,
    /// Any attribution method ([`Network::explain`]).
    Attribution,
    /// An attribution keeping every layer's relevance
    /// ([`RspOptions::keep_layer_relevances`](crate::RspOptions::keep_layer_relevances)).
    AttributionWithTrace,
}

impl<T: Float> Network<T> {
    /// Appends a residual block with an identity shortcut, reading the last
    /// node `x`: `main(net, x)` appends the main path and returns its end `m`;
    /// then the sum `m + x` is appended and returned (append the ReLU after
    /// it yourself). For the shortcut `x` relevance of both readers is summed.
    ///
    /// ```
    /// use rsp::layers::{AdaptiveAvgPool2d, Flatten, Linear, Relu};
    /// use rsp::models::WeightSource;
    /// let w = WeightSource::HeNormal { seed: 3 };
    /// let mut net = rsp::Network::<f64>::new();
    /// net.push(w.conv2d("stem", 3, 4, 3, 1, 1, false).unwrap());
    /// net.push(Relu);
    /// // y = relu(bn(conv(relu(bn(conv(x))))) + x)
    /// net.residual(|net, x| {
    ///     net.push_from(w.conv2d("block.conv1", 4, 4, 3, 1, 1, false)?, x);
    ///     net.push(w.batchnorm2d("block.bn1", 4)?);
    ///     net.push(Relu);
    ///     net.push(w.conv2d("block.conv2", 4, 4, 3, 1, 1, false)?);
    ///     Ok(net.push(w.batchnorm2d("block.bn2", 4)?))
    /// })
    /// .unwrap();
    /// let start = net.push(Relu);
    /// net.push(AdaptiveAvgPool2d::new((1, 1)));
    /// net.push(Flatten);
    /// net.push(w.linear("fc", 4, 2).unwrap());
    /// assert_eq!(rsp::network::Source::Node(net.default_start_layer().unwrap()), start);
    /// ```
    pub fn residual(&mut self, main: impl FnOnce(&mut Self, Source) -> Result<Source>) -> Result<Source> {
        self.residual_with(main, |_, x| Ok(x))
    }

    /// Appends a residual block reading the last node `x` with a shortcut
    /// path: `main(net, x)` and `shortcut(net, x)` each append their nodes
    /// and return their end; the sum `main + shortcut` is appended and returned.
    ///
    /// ```
    /// use rsp::layers::Relu;
    /// use rsp::models::WeightSource;
    /// let w = WeightSource::HeNormal { seed: 3 };
    /// let mut net = rsp::Network::<f32>::new();
    /// net.push(Relu);
    /// net.residual_with(
    ///     |net, x| Ok(net.push_from(w.conv2d("main", 3, 8, 3, 2, 1, false)?, x)),
    ///     |net, x| Ok(net.push_from(w.conv2d("shortcut", 3, 8, 1, 2, 0, false)?, x)),
    /// )
    /// .unwrap();
    /// assert_eq!(net.len(), 4); // relu, main conv, shortcut conv, add
    /// ```
    pub fn residual_with(
        &mut self,
        main: impl FnOnce(&mut Self, Source) -> Result<Source>,
        shortcut: impl FnOnce(&mut Self, Source) -> Result<Source>,
    ) -> Result<Source> {
        let x = self.last();
        let m = main(self, x)?;
        let s = shortcut(self, x)?;
        Ok(self.add(m, s))
    }
}

/// Refuses a per-sample shape with more than [`MAX_ELEMENTS_PER_SAMPLE`] elements
/// (so no layer is ever asked to allocate it, and no size product overflows).
fn check_size(what: &str, shape: &[usize]) -> Result<()> {
    match shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) {
        Some(n) if n <= MAX_ELEMENTS_PER_SAMPLE => Ok(()),
        _ => Err(RspError::Model(format!(
            "{what} would have shape {shape:?}, more than the limit of {MAX_ELEMENTS_PER_SAMPLE} elements per sample (rsp::limits)"
        ))),
    }
}

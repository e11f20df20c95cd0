//! Maps a validated [`OnnxGraph`] onto a [`Network`]: one node per Conv, Relu,
//! pooling, BatchNormalization, Gemm/MatMul, Add and Flatten/Reshape;
//! Dropout and Identity become aliases.

use super::onnx::{read_onnx, OnnxGraph, OnnxNode, OnnxOp, OnnxTensor};
use crate::backend::ConvGeometry;
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::layers::{AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, Relu};
use crate::network::{Network, NodeOp, Source};
use ndarray::{Array1, Array2, ArrayD, Ix1, Ix2, Ix4};
use std::collections::HashMap;
use std::path::Path;

/// What a value name of the ONNX graph stands for while mapping.
#[derive(Clone, Debug)]
enum Value {
    /// A tensor the network computes (the input or a node's output).
    Data(Source),
    /// A constant (initializer or Constant node).
    Const(OnnxTensor),
}

struct Importer<'g, T: Float> {
    graph: &'g OnnxGraph,
    origin: &'g str,
    values: HashMap<String, Value>,
    net: Network<T>,
    /// Flatten nodes created from Reshape, with the feature count the file asked for.
    reshape_checks: Vec<(usize, usize)>,
    /// How many nodes (and the graph output) read each value.
    uses: HashMap<&'g str, usize>,
    /// The last Linear node made from a MatMul or a Gemm without `C`, and its
    /// output value: an `Add` of a constant right after it may be its bias.
    biasless_linear: Option<(usize, &'g str)>,
}

impl<'g, T: Float> Importer<'g, T> {
    fn err(&self, node: &OnnxNode, msg: impl std::fmt::Display) -> RspError {
        RspError::Model(format!("{}: node `{}` ({}): {msg}", self.origin, node.name, node.op.op_type()))
    }

    fn data(&self, node: &OnnxNode, k: usize) -> Result<Source> {
        match node.inputs.get(k).and_then(|n| self.values.get(n)) {
            Some(Value::Data(s)) => Ok(*s),
            Some(Value::Const(_)) => Err(self.err(node, format!("input {k} must be computed data, not a constant"))),
            None => Err(self.err(node, format!("input {k} is missing"))),
        }
    }

    fn constant(&self, node: &OnnxNode, k: usize) -> Result<Option<&OnnxTensor>> {
        match node.inputs.get(k).and_then(|n| self.values.get(n)) {
            Some(Value::Const(t)) => Ok(Some(t)),
            Some(Value::Data(_)) => Err(self
                .err(node, format!("input {k} must be a constant (weights computed at run time are not supported)"))),
            None => Ok(None),
        }
    }

    fn float(&self, node: &OnnxNode, k: usize, what: &str) -> Result<ArrayD<T>> {
        match self.constant(node, k)? {
            Some(OnnxTensor::Float(a)) => {
                if let Some(index) = a.iter().position(|v| !v.is_finite()) {
                    return Err(RspError::NonFinite { tensor: format!("{what} of ONNX node `{}`", node.name), index });
                }
                Ok(a.mapv(T::of))
            }
            Some(OnnxTensor::Int(_)) => Err(self.err(node, format!("{what} must be a float tensor"))),
            None => Err(self.err(node, format!("{what} is missing"))),
        }
    }

    fn vector(&self, node: &OnnxNode, k: usize, what: &str, len: usize) -> Result<Array1<T>> {
        let a = self.float(node, k, what)?;
        if a.shape() != [len] {
            return Err(self.err(node, format!("{what} has shape {:?}, expected [{len}]", a.shape())));
        }
        Ok(a.into_dimensionality::<Ix1>().expect("checked"))
    }

    fn push(&mut self, node: &OnnxNode, op: NodeOp<T>, inputs: Vec<Source>) -> Result<()> {
        let source = match op {
            NodeOp::Layer(l) => self.net.push_boxed(l, inputs[0]),
            NodeOp::Add => self.net.add(inputs[0], inputs[1]),
        };
        self.define(node, Value::Data(source))
    }

    fn define(&mut self, node: &OnnxNode, value: Value) -> Result<()> {
        let out = node.outputs.first().ok_or_else(|| self.err(node, "has no output"))?;
        self.values.insert(out.clone(), value);
        Ok(())
    }

    fn linear(&mut self, node: &'g OnnxNode, weight: Array2<T>, bias: Option<Array1<T>>) -> Result<()> {
        let x = self.data(node, 0)?;
        let biasless = bias.is_none();
        let layer = Linear::new(node.name.clone(), weight, bias).map_err(|e| self.err(node, e.detail()))?;
        self.push(node, NodeOp::Layer(Box::new(layer)), vec![x])?;
        if biasless {
            self.biasless_linear = node.outputs.first().map(|o| (self.net.len() - 1, o.as_str()));
        }
        Ok(())
    }

    fn map_node(&mut self, node: &'g OnnxNode) -> Result<()> {
        match &node.op {
            OnnxOp::Conv { kernel_shape, strides, pads } => {
                let x = self.data(node, 0)?;
                let w = self.float(node, 1, "weight")?;
                if w.ndim() != 4 || w.shape()[2..] != kernel_shape[..] {
                    return Err(self.err(
                        node,
                        format!("weight shape {:?} does not match kernel_shape {kernel_shape:?}", w.shape()),
                    ));
                }
                let out = w.shape()[0];
                let bias = if node.inputs.len() > 2 { Some(self.vector(node, 2, "bias", out)?) } else { None };
                let geometry = ConvGeometry { stride: *strides, padding: *pads };
                let w = w.into_dimensionality::<Ix4>().expect("checked rank");
                let conv = Conv2d::new(node.name.clone(), w, bias, geometry).map_err(|e| self.err(node, e.detail()))?;
                self.push(node, NodeOp::Layer(Box::new(conv)), vec![x])
            }
            OnnxOp::Relu => {
                let x = self.data(node, 0)?;
                self.push(node, NodeOp::Layer(Box::new(Relu)), vec![x])
            }
            OnnxOp::MaxPool { kernel_shape, strides, pads } => {
                let x = self.data(node, 0)?;
                let pool = MaxPool2d::new((kernel_shape[0], kernel_shape[1]), (strides[0], strides[1]), *pads);
                self.push(node, NodeOp::Layer(Box::new(pool)), vec![x])
            }
            OnnxOp::AveragePool { kernel_shape, strides, pads, count_include_pad } => {
                let x = self.data(node, 0)?;
                let pool = AvgPool2d {
                    kernel: (kernel_shape[0], kernel_shape[1]),
                    stride: (strides[0], strides[1]),
                    padding: *pads,
                    count_include_pad: *count_include_pad,
                };
                self.push(node, NodeOp::Layer(Box::new(pool)), vec![x])
            }
            OnnxOp::GlobalAveragePool => {
                let x = self.data(node, 0)?;
                self.push(node, NodeOp::Layer(Box::new(AdaptiveAvgPool2d::new((1, 1)))), vec![x])
            }
            OnnxOp::BatchNormalization { epsilon } => {
                let x = self.data(node, 0)?;
                let scale = self.float(node, 1, "scale")?;
                let c = scale.len();
                let scale = self.vector(node, 1, "scale", c)?;
                let bn = BatchNorm2d::new(
                    node.name.clone(),
                    scale,
                    self.vector(node, 2, "bias", c)?,
                    self.vector(node, 3, "mean", c)?,
                    self.vector(node, 4, "var", c)?,
                    T::of(*epsilon),
                )
                .map_err(|e| self.err(node, e.detail()))?;
                self.push(node, NodeOp::Layer(Box::new(bn)), vec![x])
            }
            OnnxOp::Gemm { alpha, beta, trans_a, trans_b } => {
                if *trans_a {
                    return Err(self.err(node, "transA = 1 is not supported (the data must be the left operand)"));
                }
                let b = self.float(node, 1, "B")?;
                let b = b.into_dimensionality::<Ix2>().map_err(|_| self.err(node, "B must be a matrix"))?;
                let weight = if *trans_b { b } else { b.reversed_axes().as_standard_layout().into_owned() };
                let weight = weight.mapv(|v| v * T::of(*alpha));
                let out = weight.nrows();
                let bias = match self.constant(node, 2)? {
                    None => None,
                    Some(_) => {
                        let c = self.float(node, 2, "C")?;
                        let c = if c.len() == out && (c.ndim() == 1 || c.shape() == [1, out]) {
                            c.into_shape_with_order(out).expect("checked length")
                        } else if c.len() == 1 && c.ndim() <= 2 {
                            ndarray::Array1::from_elem(out, c.iter().copied().next().expect("one element"))
                        } else {
                            return Err(
                                self.err(node, format!("C of shape {:?} does not broadcast to [{out}]", c.shape()))
                            );
                        };
                        Some(c.mapv(|v| v * T::of(*beta)))
                    }
                };
                self.linear(node, weight, bias)
            }
            OnnxOp::MatMul => {
                let b = self.float(node, 1, "B")?;
                let b = b.into_dimensionality::<Ix2>().map_err(|_| self.err(node, "B must be a constant matrix"))?;
                self.linear(node, b.reversed_axes().as_standard_layout().into_owned(), None)
            }
            OnnxOp::Add => self.map_add(node),
            OnnxOp::Flatten { axis } => {
                if *axis != 1 {
                    return Err(self.err(node, format!("axis {axis} is not supported (only 1: flatten each sample)")));
                }
                let x = self.data(node, 0)?;
                self.push(node, NodeOp::Layer(Box::new(Flatten)), vec![x])
            }
            OnnxOp::Reshape { allow_zero } => {
                let x = self.data(node, 0)?;
                let shape = match self.constant(node, 1)? {
                    Some(OnnxTensor::Int(s)) if s.ndim() == 1 => s.iter().copied().collect::<Vec<i64>>(),
                    _ => return Err(self.err(node, "the target shape must be a constant 1-D int64 tensor")),
                };
                let features = self.reshape_features(node, &shape, *allow_zero)?;
                self.push(node, NodeOp::Layer(Box::new(Flatten)), vec![x])?;
                if let Some(f) = features {
                    self.reshape_checks.push((self.net.len() - 1, f));
                }
                Ok(())
            }
            OnnxOp::Dropout | OnnxOp::Identity => {
                let v = node
                    .inputs
                    .first()
                    .and_then(|n| self.values.get(n))
                    .cloned()
                    .ok_or_else(|| self.err(node, "input 0 is missing"))?;
                self.define(node, v)
            }
            OnnxOp::Constant { value } => self.define(node, Value::Const(value.clone())),
        }
    }

    /// Which ONNX Reshape targets are a per-sample flatten of an `(N, …)`
    /// input, following the operator exactly: `0` copies the input's
    /// dimension (unless `allowzero`), one `-1` is inferred from the rest.
    /// The batch entry must keep `N`: `0`, the declared batch size, or `-1`
    /// with a fixed feature count (then `N` is what is left). Returns the
    /// feature count to check against the input's shape, if fixed.
    fn reshape_features(&self, node: &OnnxNode, shape: &[i64], allow_zero: bool) -> Result<Option<usize>> {
        let refuse = |why: &str| Err(self.err(node, format!("reshape to {shape:?}: {why}")));
        let &[batch, features] = shape else {
            return refuse("only a reshape to 2-D (batch × features) is supported");
        };
        if shape.iter().any(|&d| d < -1) || shape.iter().filter(|&&d| d == -1).count() > 1 {
            return refuse("invalid shape (dimensions must be ≥ −1, with at most one −1)");
        }
        if allow_zero && shape.contains(&0) {
            return refuse("with allowzero a 0 is an empty dimension, which cannot hold the input");
        }
        if features == 0 {
            return refuse("copying the input's channel count as the feature count is not supported");
        }
        let features = usize::try_from(features).ok();
        let declared_batch = self.graph.input.dims.first().copied().flatten();
        let keeps_batch = match batch {
            0 => true,
            -1 => features.is_some(),
            n => usize::try_from(n).ok() == declared_batch,
        };
        if !keeps_batch {
            return refuse(
                "the first dimension must keep the batch size (0, −1 with a fixed feature count, or the declared batch size)",
            );
        }
        Ok(features)
    }

    /// `Add` of two computed tensors is a residual sum; `Add` of a constant
    /// right after a MatMul (or a Gemm without `C`) whose output feeds
    /// nothing else is that layer's bias, if it broadcasts to the output's
    /// shape `[N, out]` without changing it.
    fn map_add(&mut self, node: &'g OnnxNode) -> Result<()> {
        let (a, b) = (
            self.values.get(&node.inputs[0]).cloned(),
            self.values.get(&node.inputs.get(1).cloned().unwrap_or_default()).cloned(),
        );
        match (a, b) {
            (Some(Value::Data(a)), Some(Value::Data(b))) => self.push(node, NodeOp::Add, vec![a, b]),
            (Some(Value::Data(x)), Some(Value::Const(c))) | (Some(Value::Const(c)), Some(Value::Data(x))) => {
                let OnnxTensor::Float(c) = c else { return Err(self.err(node, "the constant must be a float tensor")) };
                let data_name = if matches!(self.values.get(&node.inputs[0]), Some(Value::Data(_))) {
                    node.inputs[0].as_str()
                } else {
                    node.inputs[1].as_str()
                };
                let fusable = self.biasless_linear.filter(|&(k, out)| {
                    x == Source::Node(k)
                        && k + 1 == self.net.len()
                        && out == data_name
                        && self.uses.get(data_name) == Some(&1)
                });
                let Some((k, _)) = fusable else {
                    return Err(self.err(
                        node,
                        "adding a constant is supported only as the bias of a MatMul (or Gemm without C) \
                         whose output feeds nothing else",
                    ));
                };
                let l = self.net.nodes()[k]
                    .layer()
                    .and_then(|l| l.downcast_ref::<Linear<T>>())
                    .cloned()
                    .ok_or_else(|| self.err(node, "the MatMul is not a linear layer"))?;
                let out = l.weight().nrows();
                // ONNX broadcasting of [N, out] with c: the result keeps the
                // shape [N, out] for every N only if c is a scalar, [k] or
                // [1, k] with k ∈ {1, out}.
                let keeps_shape = match c.shape() {
                    [] => true,
                    [k] | [1, k] => *k == out || *k == 1,
                    _ => false,
                };
                if !keeps_shape {
                    return Err(self.err(
                        node,
                        format!(
                            "a constant of shape {:?} broadcast with the [N, {out}] product would change its shape \
                             (only [], [{out}], [1, {out}], [1] or [1, 1] are a bias)",
                            c.shape()
                        ),
                    ));
                }
                let bias = if c.len() == out {
                    c.iter().map(|&v| T::of(v)).collect::<Array1<T>>()
                } else {
                    Array1::from_elem(out, T::of(c.iter().copied().next().unwrap_or(0.0)))
                };
                if let Some(index) = bias.iter().position(|v| !v.is_finite()) {
                    return Err(RspError::NonFinite { tensor: format!("bias of ONNX node `{}`", node.name), index });
                }
                let fused =
                    Linear::new(crate::layers::Layer::<T>::name(&l).to_string(), l.weight().clone(), Some(bias))
                        .map_err(|e| self.err(node, e.detail()))?;
                let src = self.net.nodes()[k].inputs[0];
                self.net.replace_last(Box::new(fused), src);
                self.biasless_linear = None;
                self.define(node, Value::Data(Source::Node(k)))
            }
            _ => Err(self.err(node, "needs two inputs")),
        }
    }
}

/// Loads an ONNX model (see [`crate::io::onnx`] for what is accepted).
///
/// ```
/// let net = rsp::io::onnx::load::<f32>("data/digits_vgg.onnx").unwrap();
/// // The ReLU after the last convolution (its 64×8×8 output feeds the last max-pool, node 17).
/// assert_eq!(net.default_start_layer().unwrap(), 16);
/// ```
pub fn load<T: Float>(path: impl AsRef<Path>) -> Result<Network<T>> {
    let graph = read_onnx(path.as_ref())?;
    import(&graph, &path.as_ref().display().to_string())
}

/// Builds a network from a parsed ONNX graph; `origin` names it in errors.
pub fn import<T: Float>(graph: &OnnxGraph, origin: &str) -> Result<Network<T>> {
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for name in graph.nodes.iter().flat_map(|n| &n.inputs).chain([&graph.output]) {
        *uses.entry(name.as_str()).or_default() += 1;
    }
    let mut imp = Importer {
        graph,
        origin,
        values: HashMap::new(),
        net: Network::new(),
        reshape_checks: Vec::new(),
        uses,
        biasless_linear: None,
    };
    for (name, a) in &graph.initializers {
        imp.values.insert(name.clone(), Value::Const(OnnxTensor::Float(a.clone())));
    }
    for (name, a) in &graph.int_initializers {
        imp.values.insert(name.clone(), Value::Const(OnnxTensor::Int(a.clone())));
    }
    imp.values.insert(graph.input.name.clone(), Value::Data(Source::Input));
    for node in &imp.graph.nodes {
        imp.map_node(node)?;
    }
    match imp.values.get(&graph.output) {
        Some(Value::Data(s)) if *s == imp.net.last() && !imp.net.is_empty() => {}
        _ => {
            return Err(RspError::Model(format!(
                "{origin}: the graph output `{}` must be the last computed node",
                graph.output
            )))
        }
    }
    let dims = &graph.input.dims;
    if dims.len() != 4 {
        return Err(RspError::Model(format!(
            "{origin}: the input must be 4-D (N, C, H, W), found rank {}",
            dims.len()
        )));
    }
    if let [Some(c), Some(h), Some(w)] = [dims[1], dims[2], dims[3]] {
        let shapes = imp.net.check(&[c, h, w]).map_err(|e| RspError::Model(format!("{origin}: {}", e.detail())))?;
        for &(k, features) in &imp.reshape_checks {
            if shapes[k] != [features] {
                return Err(RspError::Model(format!(
                    "{origin}: reshape node #{k} asks for {features} features, its input has {:?}",
                    shapes[k]
                )));
            }
        }
        imp.net.set_input_shape(Some(vec![c, h, w]));
    } else if !imp.reshape_checks.is_empty() {
        // A fixed feature count can only be checked against known sizes.
        return Err(RspError::Model(format!(
            "{origin}: a Reshape to a fixed feature count needs the graph input's C, H and W declared"
        )));
    }
    Ok(imp.net)
}

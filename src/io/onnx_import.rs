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
    reshape_checks: Vec<(usize, i64)>,
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

    fn linear(&mut self, node: &OnnxNode, weight: Array2<T>, bias: Option<Array1<T>>) -> Result<()> {
        let x = self.data(node, 0)?;
        let layer = Linear::new(node.name.clone(), weight, bias).map_err(|e| self.err(node, e))?;
        self.push(node, NodeOp::Layer(Box::new(layer)), vec![x])
    }

    fn map_node(&mut self, node: &OnnxNode) -> Result<()> {
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
                let conv = Conv2d::new(node.name.clone(), w, bias, geometry).map_err(|e| self.err(node, e))?;
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
                .map_err(|e| self.err(node, e))?;
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
                        } else if c.len() == 1 {
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
            OnnxOp::Reshape { .. } => {
                let x = self.data(node, 0)?;
                let shape = match self.constant(node, 1)? {
                    Some(OnnxTensor::Int(s)) => s.iter().copied().collect::<Vec<i64>>(),
                    _ => return Err(self.err(node, "the target shape must be a constant int64 tensor")),
                };
                // Only a reshape to (batch, features) is a per-sample flatten.
                if shape.len() != 2
                    || !(shape[0] == -1 || shape[0] == 0 || shape[0] == 1)
                    || shape[1] == 0
                    || shape[1] < -1
                {
                    return Err(self
                        .err(node, format!("reshape to {shape:?} is not supported (only to 2-D: batch × features)")));
                }
                self.push(node, NodeOp::Layer(Box::new(Flatten)), vec![x])?;
                self.reshape_checks.push((self.net.len() - 1, if shape[0] == -1 { -1 } else { shape[1] }));
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

    /// `Add` of two computed tensors is a residual sum; `Add` of a constant
    /// vector right after a MatMul is that layer's bias.
    fn map_add(&mut self, node: &OnnxNode) -> Result<()> {
        let (a, b) = (
            self.values.get(&node.inputs[0]).cloned(),
            self.values.get(&node.inputs.get(1).cloned().unwrap_or_default()).cloned(),
        );
        match (a, b) {
            (Some(Value::Data(a)), Some(Value::Data(b))) => self.push(node, NodeOp::Add, vec![a, b]),
            (Some(Value::Data(x)), Some(Value::Const(c))) | (Some(Value::Const(c)), Some(Value::Data(x))) => {
                let last = self.net.len().checked_sub(1);
                let OnnxTensor::Float(c) = c else { return Err(self.err(node, "the constant must be a float tensor")) };
                let linear = last
                    .filter(|&k| x == Source::Node(k))
                    .and_then(|k| self.net.nodes()[k].layer().and_then(|l| l.downcast_ref::<Linear<T>>()).cloned());
                match linear {
                    Some(l) if l.bias().is_none() && c.len() == l.weight().nrows() => {
                        let bias = c.mapv(T::of).into_shape_with_order(l.weight().nrows()).expect("checked length");
                        let fused = Linear::new(
                            crate::layers::Layer::<T>::name(&l).to_string(),
                            l.weight().clone(),
                            Some(bias),
                        )
                        .map_err(|e| self.err(node, e))?;
                        let k = last.expect("a linear node exists");
                        let src = self.net.nodes()[k].inputs[0];
                        self.net.replace_last(Box::new(fused), src);
                        self.define(node, Value::Data(Source::Node(k)))
                    }
                    _ => Err(self.err(node, "adding a constant is supported only as the bias of a MatMul")),
                }
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
    let mut imp = Importer { graph, origin, values: HashMap::new(), net: Network::new(), reshape_checks: Vec::new() };
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
        let shapes = imp.net.check(&[c, h, w]).map_err(|e| RspError::Model(format!("{origin}: {e}")))?;
        for &(k, features) in &imp.reshape_checks {
            if features > 0 && shapes[k] != [features as usize] {
                return Err(RspError::Model(format!(
                    "{origin}: reshape node #{k} asks for {features} features, its input has {:?}",
                    shapes[k]
                )));
            }
        }
        imp.net.set_input_shape(Some(vec![c, h, w]));
    }
    Ok(imp.net)
}

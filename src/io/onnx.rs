//! Reading ONNX models into a validated, engine-independent graph.
//!
//! [`read_onnx`] and [`parse_onnx_bytes`] decode an ONNX `ModelProto` (with
//! [`prost`] and code generated from the official `onnx.proto`, see
//! `tools/onnx-proto-gen`), then check it and turn it into an [`OnnxGraph`]:
//! a topologically sorted list of [`OnnxNode`]s whose [`OnnxOp`]s carry their
//! attributes with the ONNX defaults applied, plus the weight tensors as
//! `f64` arrays. Mapping that graph onto layers is left to the engine.
//!
//! Only the operators a feed-forward CNN needs are accepted (see [`OnnxOp`]);
//! anything else, and any attribute value whose semantics are not exactly
//! those of the plain operator (dilations, groups, `ceil_mode`, `SAME`
//! padding, ...), is an error naming the node and its operator.
//!
//! The reader is meant to be safe on hostile files: it never panics, every
//! tensor's declared shape is checked against the bytes actually present
//! before anything is allocated for it, and the limits below bound the rest.
//! Memory stays proportional to the file size with a stated factor: before
//! decoding, the wire format is walked against the ONNX schema to bound what
//! the decoder will allocate, and a file that would need more than
//! [`ONNX_DECODE_FACTOR`] times its size
//! plus [`ONNX_DECODE_ALLOWANCE`] is
//! refused (a degenerate file of empty sub-messages would otherwise expand
//! about 170-fold: each 2-byte empty tensor decodes to a ~330-byte struct).
//! Converting the weights to `f64` then needs at most twice the file again.
//!
//! ```
//! use rsp::io::onnx::{read_onnx, OnnxOp};
//! # fn main() -> rsp::Result<()> {
//! let graph = read_onnx(std::path::Path::new("data/digits_vgg.onnx"))?;
//! assert_eq!(graph.input.dims, [None, Some(3), Some(64), Some(64)]);
//! assert!(matches!(graph.nodes[0].op, OnnxOp::Conv { kernel_shape: [3, 3], .. }));
//! assert_eq!(graph.output, "logits");
//! # Ok(())
//! # }
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use prost::Message;

use crate::error::{Result, RspError};
use crate::limits::{ONNX_DECODE_ALLOWANCE, ONNX_DECODE_FACTOR};

mod budget;

// Generated code: not ours to lint or document.
#[allow(dead_code, missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
mod proto;

pub use super::onnx_import::{import, load};
use proto::attribute_proto::AttributeType;
use proto::tensor_proto::{DataLocation, DataType};

// The size limits live in `crate::limits` with the crate's other limits.
use crate::limits::{
    MAX_NODES, MAX_ONNX_FILE_BYTES as MAX_FILE_BYTES, MAX_RANK, MAX_SPATIAL, MAX_TENSOR_ELEMENTS as MAX_ELEMENTS,
};

/// Oldest default-domain opset accepted: before 7, `Gemm`, `Dropout` and
/// `BatchNormalization` had attributes with other semantics.
pub const MIN_OPSET: i64 = 7;

/// The graph's single data input.
///
/// ```
/// use rsp::io::onnx::OnnxValueInfo;
/// let info = OnnxValueInfo { name: "input".into(), dims: vec![None, Some(3), Some(32), Some(32)] };
/// assert_eq!(info.dims.len(), 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxValueInfo {
    /// The value name nodes refer to.
    pub name: String,
    /// The declared shape; `None` for a symbolic (e.g. batch) or unknown
    /// dimension.
    pub dims: Vec<Option<usize>>,
}

/// A constant tensor, as held by an [`OnnxOp::Constant`] node.
///
/// ```
/// use rsp::io::onnx::OnnxTensor;
/// let t = OnnxTensor::Int(ndarray::arr1(&[1_i64, -1]).into_dyn());
/// assert_eq!(t.shape(), [2]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxTensor {
    /// A FLOAT or DOUBLE tensor, widened to `f64`.
    Float(ArrayD<f64>),
    /// An INT64 tensor (shapes, axes).
    Int(ArrayD<i64>),
}

impl OnnxTensor {
    /// The tensor's shape.
    ///
    /// ```
    /// use rsp::io::onnx::OnnxTensor;
    /// assert_eq!(OnnxTensor::Float(ndarray::ArrayD::zeros(vec![2, 3])).shape(), [2, 3]);
    /// ```
    pub fn shape(&self) -> &[usize] {
        match self {
            OnnxTensor::Float(a) => a.shape(),
            OnnxTensor::Int(a) => a.shape(),
        }
    }
}

/// A supported operator with its attributes, ONNX defaults applied.
///
/// Spatial attributes are 2-D: `kernel_shape` and `strides` are
/// `[height, width]`, `pads` are `[top, left, bottom, right]` (ONNX's
/// `[x1_begin, x2_begin, x1_end, x2_end]`). Attributes that must have their
/// default value to be accepted (Conv `dilations`/`group`, pooling
/// `ceil_mode`/`dilations`, `auto_pad`) are checked and not stored.
///
/// ```
/// use rsp::io::onnx::OnnxOp;
/// let op = OnnxOp::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: true };
/// assert_eq!(op.op_type(), "Gemm");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxOp {
    /// 2-D convolution; inputs `X, W[, B]`.
    Conv {
        /// Kernel size (from the attribute, else from the weight's shape).
        kernel_shape: [usize; 2],
        /// Strides (default 1).
        strides: [usize; 2],
        /// Paddings `[top, left, bottom, right]` (default 0).
        pads: [usize; 4],
    },
    /// Rectified linear unit.
    Relu,
    /// 2-D max pooling (single output, no indices).
    MaxPool {
        /// Window size.
        kernel_shape: [usize; 2],
        /// Strides (default 1).
        strides: [usize; 2],
        /// Paddings `[top, left, bottom, right]` (default 0).
        pads: [usize; 4],
    },
    /// 2-D average pooling.
    AveragePool {
        /// Window size.
        kernel_shape: [usize; 2],
        /// Strides (default 1).
        strides: [usize; 2],
        /// Paddings `[top, left, bottom, right]` (default 0).
        pads: [usize; 4],
        /// Whether padded cells count in the divisor (default false).
        count_include_pad: bool,
    },
    /// Mean over all spatial positions, keeping them as size-1 dimensions.
    GlobalAveragePool,
    /// Inference-mode batch normalisation; inputs `X, scale, B, mean, var`.
    BatchNormalization {
        /// Added to the variance (default 1e-5; stored in the file as `f32`).
        epsilon: f64,
    },
    /// `alpha * op(A) * op(B) + beta * C`; inputs `A, B[, C]`.
    Gemm {
        /// Scale of the product (default 1).
        alpha: f64,
        /// Scale of `C` (default 1).
        beta: f64,
        /// Transpose `A` first (default false).
        trans_a: bool,
        /// Transpose `B` first (default false).
        trans_b: bool,
    },
    /// Matrix product with numpy semantics.
    MatMul,
    /// Element-wise sum with broadcasting.
    Add,
    /// Reshape to 2-D: dimensions before `axis` and from `axis` on.
    Flatten {
        /// Split point, possibly negative (default 1).
        axis: i64,
    },
    /// Reshape to the shape given by the second input (an INT64 initializer
    /// or Constant output).
    Reshape {
        /// ONNX `allowzero`: a 0 in the shape means size 0, not "copy"
        /// (default false).
        allow_zero: bool,
    },
    /// Identity at inference (no mask output, no training-mode input).
    Dropout,
    /// Identity.
    Identity,
    /// A constant tensor (from `value`, `value_float(s)` or `value_int(s)`).
    Constant {
        /// The value.
        value: OnnxTensor,
    },
}

impl OnnxOp {
    /// The ONNX operator name.
    ///
    /// ```
    /// assert_eq!(rsp::io::onnx::OnnxOp::Relu.op_type(), "Relu");
    /// ```
    pub fn op_type(&self) -> &'static str {
        match self {
            OnnxOp::Conv { .. } => "Conv",
            OnnxOp::Relu => "Relu",
            OnnxOp::MaxPool { .. } => "MaxPool",
            OnnxOp::AveragePool { .. } => "AveragePool",
            OnnxOp::GlobalAveragePool => "GlobalAveragePool",
            OnnxOp::BatchNormalization { .. } => "BatchNormalization",
            OnnxOp::Gemm { .. } => "Gemm",
            OnnxOp::MatMul => "MatMul",
            OnnxOp::Add => "Add",
            OnnxOp::Flatten { .. } => "Flatten",
            OnnxOp::Reshape { .. } => "Reshape",
            OnnxOp::Dropout => "Dropout",
            OnnxOp::Identity => "Identity",
            OnnxOp::Constant { .. } => "Constant",
        }
    }
}

/// One node of the graph.
///
/// ```
/// use rsp::io::onnx::{OnnxNode, OnnxOp};
/// let node = OnnxNode { name: "/1/Relu".into(), op: OnnxOp::Relu, inputs: vec!["a".into()], outputs: vec!["b".into()] };
/// assert_eq!(node.op.op_type(), "Relu");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxNode {
    /// The node's name in the file (may be empty).
    pub name: String,
    /// What it computes.
    pub op: OnnxOp,
    /// Input value names, in operator order (absent trailing optional inputs
    /// are dropped, so e.g. a Conv without bias has two).
    pub inputs: Vec<String>,
    /// Output value names (always exactly one for the supported operators).
    pub outputs: Vec<String>,
}

/// A validated ONNX graph.
///
/// Guarantees: `nodes` are topologically sorted (file order kept when it
/// already was); every node input is the graph input, an initializer or the
/// output of an earlier node; no value is defined twice; `output` is defined.
///
/// ```
/// # fn main() -> rsp::Result<()> {
/// let graph = rsp::io::onnx::read_onnx(std::path::Path::new("data/digits_vgg.onnx"))?;
/// let w = &graph.initializers["0.weight"];
/// assert_eq!(w.shape(), [16, 3, 3, 3]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxGraph {
    /// Version of the default (`ai.onnx`) operator set the model imports.
    pub opset: i64,
    /// The nodes, in a topological order.
    pub nodes: Vec<OnnxNode>,
    /// FLOAT and DOUBLE initializers, widened to `f64`.
    pub initializers: HashMap<String, ArrayD<f64>>,
    /// INT64 initializers (e.g. Reshape shapes).
    pub int_initializers: HashMap<String, ArrayD<i64>>,
    /// The data input (graph inputs that are initializers are not counted).
    pub input: OnnxValueInfo,
    /// Name of the single graph output.
    pub output: String,
}

/// Reads and validates an ONNX model file.
///
/// Errors: [`RspError::Io`] if the file cannot be read, [`RspError::Format`]
/// if it is not a well-formed ONNX model, [`RspError::Model`] if it uses
/// something this crate does not support.
///
/// ```
/// # fn main() -> rsp::Result<()> {
/// let graph = rsp::io::onnx::read_onnx(std::path::Path::new("data/digits_vgg.onnx"))?;
/// assert_eq!(graph.nodes.last().map(|n| n.op.op_type()), Some("Gemm"));
/// # Ok(())
/// # }
/// ```
pub fn read_onnx(path: &Path) -> Result<OnnxGraph> {
    let origin = path.display().to_string();
    let io_err = |source| RspError::Io { path: origin.clone(), source };
    // Check the size first so a huge file is refused before it is read.
    let len = std::fs::metadata(path).map_err(io_err)?.len();
    if len > MAX_FILE_BYTES {
        return Err(RspError::format(
            &origin,
            format!("file is {len} bytes, more than the {MAX_FILE_BYTES} an ONNX protobuf can hold"),
        ));
    }
    let bytes = std::fs::read(path).map_err(io_err)?;
    parse_onnx_bytes(&bytes, &origin)
}

/// Parses and validates an ONNX model held in memory; `origin` names it in
/// error messages (a path, or e.g. `"<memory>"`).
///
/// ```
/// let err = rsp::io::onnx::parse_onnx_bytes(b"not a model", "<memory>").unwrap_err();
/// assert!(err.to_string().contains("<memory>"));
/// ```
pub fn parse_onnx_bytes(bytes: &[u8], origin: &str) -> Result<OnnxGraph> {
    let cx = Cx { origin };
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(cx.format(format!("{} bytes is more than an ONNX protobuf can hold", bytes.len())));
    }
    // Bound what decoding will allocate before the decoder sees the bytes.
    let need = budget::decoded_size(bytes).map_err(|e| cx.format(format!("not a valid ONNX protobuf: {e}")))?;
    let allowed = (bytes.len() as u64).saturating_mul(ONNX_DECODE_FACTOR).saturating_add(ONNX_DECODE_ALLOWANCE);
    if need > allowed {
        return Err(cx.format(format!(
            "decoding its {} bytes would need about {} MiB, more than the limit of {ONNX_DECODE_FACTOR} × the file \
             size + {} MiB (rsp::limits; a model's tensors decode to about their own size)",
            bytes.len(),
            need >> 20,
            ONNX_DECODE_ALLOWANCE >> 20
        )));
    }
    let model = proto::ModelProto::decode(bytes).map_err(|e| cx.format(format!("not a valid ONNX protobuf: {e}")))?;
    cx.model(&model)
}

/// Error context: where the bytes came from.
struct Cx<'a> {
    origin: &'a str,
}

/// How a graph's value names are defined, for node checks.
struct Defined<'a> {
    input: &'a str,
    initializers: &'a HashMap<String, ArrayD<f64>>,
    int_initializers: &'a HashMap<String, ArrayD<i64>>,
}

impl Defined<'_> {
    fn contains(&self, name: &str) -> bool {
        name == self.input || self.initializers.contains_key(name) || self.int_initializers.contains_key(name)
    }
}

impl Cx<'_> {
    /// The file is not valid ONNX.
    fn format(&self, reason: impl Into<String>) -> RspError {
        RspError::format(self.origin, reason)
    }

    /// The file is valid ONNX but uses something we do not support.
    fn unsupported(&self, reason: impl std::fmt::Display) -> RspError {
        RspError::model(format!("{}: {reason}", self.origin))
    }

    fn model(&self, model: &proto::ModelProto) -> Result<OnnxGraph> {
        let mut opset = None;
        for imp in &model.opset_import {
            if matches!(imp.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
                if opset.is_some() {
                    return Err(self.format("the default operator set is imported twice"));
                }
                opset = Some(imp.version.unwrap_or(0));
            }
        }
        let opset = opset.ok_or_else(|| self.format("the model imports no default (ai.onnx) operator set"))?;
        if opset < MIN_OPSET {
            return Err(self.unsupported(format_args!("opset {opset} is older than the oldest supported, {MIN_OPSET}")));
        }
        let graph = model.graph.as_ref().ok_or_else(|| self.format("the model has no graph"))?;
        self.graph(graph, opset)
    }

    fn graph(&self, g: &proto::GraphProto, opset: i64) -> Result<OnnxGraph> {
        if g.node.len() > MAX_NODES {
            return Err(self.unsupported(format_args!("{} nodes, more than the limit of {MAX_NODES}", g.node.len())));
        }
        if !g.sparse_initializer.is_empty() {
            return Err(self.unsupported("sparse initializers are not supported"));
        }

        let mut initializers = HashMap::new();
        let mut int_initializers = HashMap::new();
        for t in &g.initializer {
            let name = t.name.as_deref().unwrap_or("");
            if name.is_empty() {
                return Err(self.format("an initializer has no name"));
            }
            if initializers.contains_key(name) || int_initializers.contains_key(name) {
                return Err(self.format(format!("initializer '{name}' is defined twice")));
            }
            match self.tensor(t, &format!("initializer '{name}'"))? {
                OnnxTensor::Float(a) => {
                    initializers.insert(name.to_owned(), a);
                }
                OnnxTensor::Int(a) => {
                    int_initializers.insert(name.to_owned(), a);
                }
            }
        }

        // Older exporters also list initializers among the graph inputs.
        let data_inputs: Vec<&proto::ValueInfoProto> = g
            .input
            .iter()
            .filter(|v| {
                let n = v.name.as_deref().unwrap_or("");
                !initializers.contains_key(n) && !int_initializers.contains_key(n)
            })
            .collect();
        let [input] = data_inputs.as_slice() else {
            return Err(self.unsupported(format_args!(
                "the graph has {} inputs that are not initializers; exactly one is supported",
                data_inputs.len()
            )));
        };
        let input = self.value_info(input)?;

        let [output] = g.output.as_slice() else {
            return Err(
                self.unsupported(format_args!("the graph has {} outputs; exactly one is supported", g.output.len()))
            );
        };
        let output = output.name.clone().unwrap_or_default();
        if output.is_empty() {
            return Err(self.format("the graph output has no name"));
        }

        let defined = Defined { input: &input.name, initializers: &initializers, int_initializers: &int_initializers };
        let nodes = g.node.iter().enumerate().map(|(i, n)| self.node(i, n, &defined)).collect::<Result<Vec<_>>>()?;
        let nodes = self.sort(nodes, &defined, &output)?;

        Ok(OnnxGraph { opset, nodes, initializers, int_initializers, input, output })
    }

    fn value_info(&self, v: &proto::ValueInfoProto) -> Result<OnnxValueInfo> {
        let name = v.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(self.format("the graph input has no name"));
        }
        let what = format!("graph input '{name}'");
        let Some(proto::type_proto::Value::TensorType(tt)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Err(self.unsupported(format_args!("{what} is not a tensor")));
        };
        let elem = tt.elem_type.unwrap_or(0);
        if elem != DataType::Float as i32 && elem != DataType::Double as i32 {
            return Err(self
                .unsupported(format_args!("{what} has element type {}, expected FLOAT or DOUBLE", dtype_name(elem))));
        }
        let shape = tt.shape.as_ref().ok_or_else(|| self.unsupported(format_args!("{what} has no declared shape")))?;
        if shape.dim.len() > MAX_RANK {
            return Err(self.unsupported(format_args!("{what} has rank {}, more than {MAX_RANK}", shape.dim.len())));
        }
        let dims = shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) => usize::try_from(v)
                    .map(Some)
                    .map_err(|_| self.format(format!("{what} has a negative dimension {v}"))),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(OnnxValueInfo { name, dims })
    }

    /// Converts a tensor, checking its declared size against the data present
    /// before allocating anything for it.
    fn tensor(&self, t: &proto::TensorProto, what: &str) -> Result<OnnxTensor> {
        if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
            return Err(
                self.unsupported(format_args!("{what} is stored in an external data file, which is not supported"))
            );
        }
        if t.segment.is_some() {
            return Err(self.unsupported(format_args!("{what} is a segment of a tensor, which is not supported")));
        }
        if t.dims.len() > MAX_RANK {
            return Err(self.unsupported(format_args!("{what} has rank {}, more than {MAX_RANK}", t.dims.len())));
        }
        let mut shape = Vec::with_capacity(t.dims.len());
        let mut count: u64 = 1;
        for &d in &t.dims {
            let d = u64::try_from(d).map_err(|_| self.format(format!("{what} has a negative dimension {d}")))?;
            count = count.checked_mul(d).filter(|&c| c <= MAX_ELEMENTS).ok_or_else(|| {
                self.unsupported(format_args!("{what} with shape {:?} has more than {MAX_ELEMENTS} elements", t.dims))
            })?;
            // d <= count <= MAX_ELEMENTS unless an earlier dimension was 0,
            // and MAX_ELEMENTS fits in usize on the 64-bit targets we build for.
            shape.push(usize::try_from(d).map_err(|_| self.format(format!("{what} has a dimension too large: {d}")))?);
        }
        let count = usize::try_from(count).map_err(|_| self.format(format!("{what} is too large")))?;
        let dtype = t.data_type.unwrap_or(0);
        let raw = t.raw_data.as_deref();

        // Every branch checks `count` against the data present, so the
        // allocation below is bounded by the file's size.
        let check = |present: usize, unit: &str| -> Result<()> {
            if present == count {
                Ok(())
            } else {
                Err(self.format(format!(
                    "{what} declares shape {:?} ({count} elements) but holds {present} {unit}",
                    t.dims
                )))
            }
        };
        let from_raw = |raw: &[u8], width: usize, typed_len: usize| -> Result<()> {
            if typed_len != 0 {
                return Err(self.format(format!("{what} has both raw_data and typed data")));
            }
            if !raw.len().is_multiple_of(width) {
                return Err(
                    self.format(format!("{what} has {} bytes of raw_data, not a multiple of {width}", raw.len()))
                );
            }
            check(raw.len() / width, "elements of raw_data")
        };

        let shape = IxDyn(&shape);
        let bad_shape = |e: ndarray::ShapeError| self.format(format!("{what}: {e}"));
        match DataType::try_from(dtype) {
            Ok(DataType::Float) => {
                let values: Vec<f64> = match raw {
                    Some(raw) => {
                        from_raw(raw, 4, t.float_data.len())?;
                        raw.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
                    }
                    None => {
                        check(t.float_data.len(), "float_data values")?;
                        t.float_data.iter().map(|&v| f64::from(v)).collect()
                    }
                };
                ArrayD::from_shape_vec(shape, values).map(OnnxTensor::Float).map_err(bad_shape)
            }
            Ok(DataType::Double) => {
                let values: Vec<f64> = match raw {
                    Some(raw) => {
                        from_raw(raw, 8, t.double_data.len())?;
                        raw.chunks_exact(8).map(|c| f64::from_le_bytes(le8(c))).collect()
                    }
                    None => {
                        check(t.double_data.len(), "double_data values")?;
                        t.double_data.clone()
                    }
                };
                ArrayD::from_shape_vec(shape, values).map(OnnxTensor::Float).map_err(bad_shape)
            }
            Ok(DataType::Int64) => {
                let values: Vec<i64> = match raw {
                    Some(raw) => {
                        from_raw(raw, 8, t.int64_data.len())?;
                        raw.chunks_exact(8).map(|c| i64::from_le_bytes(le8(c))).collect()
                    }
                    None => {
                        check(t.int64_data.len(), "int64_data values")?;
                        t.int64_data.clone()
                    }
                };
                ArrayD::from_shape_vec(shape, values).map(OnnxTensor::Int).map_err(bad_shape)
            }
            Ok(other) => Err(self.unsupported(format_args!(
                "{what} has element type {}; only FLOAT, DOUBLE and INT64 are supported",
                other.as_str_name()
            ))),
            Err(_) => Err(self.format(format!("{what} has unknown element type code {dtype}"))),
        }
    }

    fn node(&self, index: usize, n: &proto::NodeProto, defined: &Defined) -> Result<OnnxNode> {
        let op_type = n.op_type.as_deref().unwrap_or("");
        let name = n.name.clone().unwrap_or_default();
        let desc =
            if name.is_empty() { format!("node #{index} ({op_type})") } else { format!("node '{name}' ({op_type})") };
        let domain = n.domain.as_deref().unwrap_or("");
        if !matches!(domain, "" | "ai.onnx") {
            return Err(self.unsupported(format_args!("{desc}: operator domain '{domain}' is not supported")));
        }
        let inputs = self.names(&n.input, &desc, "input")?;
        let outputs = self.names(&n.output, &desc, "output")?;
        let attrs = Attrs::new(self, &desc, &n.attribute)?;

        // (min inputs, max inputs) per operator; every one has one output.
        let arity = |min: usize, max: usize| -> Result<()> {
            if inputs.len() < min || inputs.len() > max {
                let want = if min == max { format!("{min}") } else { format!("{min} to {max}") };
                return Err(self.format(format!("{desc} has {} inputs, expected {want}", inputs.len())));
            }
            if outputs.len() != 1 {
                return Err(self.unsupported(format_args!(
                    "{desc} has {} outputs; only the single main output is supported",
                    outputs.len()
                )));
            }
            Ok(())
        };

        let op = match op_type {
            "Conv" => {
                arity(2, 3)?;
                attrs.int_eq("group", 1, 1)?;
                let weight_kernel = defined
                    .initializers
                    .get(&inputs[1])
                    .map(|w| match w.shape() {
                        [_, _, kh, kw] => Ok([*kh, *kw]),
                        s => Err(RspError::shape(
                            format!("{}: {desc} weight '{}'", self.origin, inputs[1]),
                            "rank 4 [out, in, kh, kw]",
                            s,
                        )),
                    })
                    .transpose()?;
                let kernel_shape = match (attrs.spatial("kernel_shape", None)?, weight_kernel) {
                    (Some(k), Some(w)) if k != w => {
                        return Err(
                            self.format(format!("{desc}: kernel_shape {k:?} does not match the weight's kernel {w:?}"))
                        )
                    }
                    (Some(k), _) => k,
                    // The spec says to infer it from the weight when absent.
                    (None, Some(w)) => w,
                    (None, None) => {
                        return Err(self.unsupported(format_args!(
                            "{desc} has no kernel_shape and its weight is not an initializer"
                        )))
                    }
                };
                for k in kernel_shape {
                    attrs.in_range("kernel_shape", k, 1)?;
                }
                let (strides, pads) = attrs.window_common()?;
                OnnxOp::Conv { kernel_shape, strides, pads }
            }
            "Relu" => {
                arity(1, 1)?;
                OnnxOp::Relu
            }
            "MaxPool" => {
                arity(1, 1)?;
                let kernel_shape = attrs.kernel()?;
                attrs.int_eq("ceil_mode", 0, 0)?;
                let (strides, pads) = attrs.window_common()?;
                OnnxOp::MaxPool { kernel_shape, strides, pads }
            }
            "AveragePool" => {
                arity(1, 1)?;
                let kernel_shape = attrs.kernel()?;
                attrs.int_eq("ceil_mode", 0, 0)?;
                let count_include_pad = attrs.flag("count_include_pad", false)?;
                let (strides, pads) = attrs.window_common()?;
                OnnxOp::AveragePool { kernel_shape, strides, pads, count_include_pad }
            }
            "GlobalAveragePool" => {
                arity(1, 1)?;
                OnnxOp::GlobalAveragePool
            }
            "BatchNormalization" => {
                arity(5, 5)?;
                attrs.int_eq("training_mode", 0, 0)?;
                // Opsets before 9: spatial=0 means per-activation statistics.
                attrs.int_eq("spatial", 1, 1)?;
                let epsilon = f64::from(attrs.float("epsilon")?.unwrap_or(1e-5));
                if !(epsilon.is_finite() && epsilon >= 0.0) {
                    return Err(self.format(format!("{desc}: epsilon {epsilon} is not a finite non-negative number")));
                }
                OnnxOp::BatchNormalization { epsilon }
            }
            "Gemm" => {
                arity(2, 3)?;
                let alpha = f64::from(attrs.float("alpha")?.unwrap_or(1.0));
                let beta = f64::from(attrs.float("beta")?.unwrap_or(1.0));
                if !alpha.is_finite() || !beta.is_finite() {
                    return Err(self.format(format!("{desc}: alpha and beta must be finite")));
                }
                let trans_a = attrs.flag("transA", false)?;
                let trans_b = attrs.flag("transB", false)?;
                OnnxOp::Gemm { alpha, beta, trans_a, trans_b }
            }
            "MatMul" => {
                arity(2, 2)?;
                OnnxOp::MatMul
            }
            "Add" => {
                arity(2, 2)?;
                OnnxOp::Add
            }
            "Flatten" => {
                arity(1, 1)?;
                let axis = attrs.int("axis")?.unwrap_or(1);
                let limit = MAX_RANK as i64;
                if !(-limit..=limit).contains(&axis) {
                    return Err(self.format(format!("{desc}: axis {axis} is out of range")));
                }
                OnnxOp::Flatten { axis }
            }
            "Reshape" => {
                arity(2, 2)?;
                OnnxOp::Reshape { allow_zero: attrs.flag("allowzero", false)? }
            }
            "Dropout" => {
                // A third input (training_mode) could switch dropout on.
                arity(1, 2)?;
                OnnxOp::Dropout
            }
            "Identity" => {
                arity(1, 1)?;
                OnnxOp::Identity
            }
            "Constant" => {
                arity(0, 0)?;
                OnnxOp::Constant { value: attrs.constant_value()? }
            }
            _ => {
                let shown = if op_type.is_empty() { "<empty>" } else { op_type };
                return Err(self.unsupported(format_args!("{desc}: operator '{shown}' is not supported")));
            }
        };
        Ok(OnnxNode { name, op, inputs, outputs })
    }

    /// Node input/output names with absent trailing optional ones ("")
    /// dropped; an absent one in the middle is not used by supported ops.
    fn names(&self, names: &[String], desc: &str, kind: &str) -> Result<Vec<String>> {
        let used = names.iter().rposition(|s| !s.is_empty()).map_or(0, |i| i + 1);
        let names = &names[..used];
        if let Some(i) = names.iter().position(String::is_empty) {
            return Err(
                self.unsupported(format_args!("{desc}: optional {kind} #{i} is omitted, which is not supported"))
            );
        }
        Ok(names.to_vec())
    }

    /// Checks value definitions and sorts the nodes topologically (Kahn's
    /// algorithm, smallest file index first so a sorted file keeps its order).
    fn sort(&self, nodes: Vec<OnnxNode>, defined: &Defined, output: &str) -> Result<Vec<OnnxNode>> {
        let desc = |n: &OnnxNode| {
            if n.name.is_empty() {
                format!("the {} node producing '{}'", n.op.op_type(), n.outputs.first().map_or("", String::as_str))
            } else {
                format!("node '{}' ({})", n.name, n.op.op_type())
            }
        };
        let mut producer: HashMap<&str, usize> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for o in &n.outputs {
                if defined.contains(o) {
                    return Err(
                        self.format(format!("{}: output '{o}' redefines the graph input or an initializer", desc(n)))
                    );
                }
                if let Some(&j) = producer.get(o.as_str()) {
                    return Err(self.format(format!(
                        "value '{o}' is produced twice, by {} and by {}",
                        desc(&nodes[j]),
                        desc(n)
                    )));
                }
                producer.insert(o, i);
            }
        }
        let mut successors: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        let mut pending: Vec<usize> = vec![0; nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            for input in &n.inputs {
                match producer.get(input.as_str()) {
                    Some(&p) => {
                        successors[p].push(i);
                        pending[i] += 1;
                    }
                    None if defined.contains(input) => {}
                    None => return Err(self.format(format!("{}: input '{input}' is not defined", desc(n)))),
                }
            }
        }
        if !defined.contains(output) && !producer.contains_key(output) {
            return Err(self.format(format!("the graph output '{output}' is not produced by any node")));
        }

        let mut ready: BinaryHeap<Reverse<usize>> =
            (0..nodes.len()).filter(|&i| pending[i] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(nodes.len());
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for &s in &successors[i] {
                pending[s] -= 1;
                if pending[s] == 0 {
                    ready.push(Reverse(s));
                }
            }
        }
        if order.len() < nodes.len() {
            let stuck = pending.iter().position(|&p| p > 0).unwrap_or(0);
            return Err(self.format(format!("the graph has a cycle through {}", desc(&nodes[stuck]))));
        }
        let mut slots: Vec<Option<OnnxNode>> = nodes.into_iter().map(Some).collect();
        Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
    }
}

fn le8(c: &[u8]) -> [u8; 8] {
    let mut b = [0; 8];
    b.copy_from_slice(c);
    b
}

fn dtype_name(code: i32) -> String {
    DataType::try_from(code).map_or_else(|_| format!("code {code}"), |t| t.as_str_name().to_owned())
}

/// A node's attributes by name, with typed accessors that check the
/// declared attribute type.
struct Attrs<'a> {
    cx: &'a Cx<'a>,
    desc: &'a str,
    map: HashMap<&'a str, &'a proto::AttributeProto>,
}

impl<'a> Attrs<'a> {
    fn new(cx: &'a Cx<'a>, desc: &'a str, attrs: &'a [proto::AttributeProto]) -> Result<Self> {
        let mut map = HashMap::new();
        for a in attrs {
            let name = a.name.as_deref().unwrap_or("");
            if a.ref_attr_name.is_some() {
                return Err(cx.format(format!("{desc}: attribute '{name}' refers to a function attribute")));
            }
            if map.insert(name, a).is_some() {
                return Err(cx.format(format!("{desc}: attribute '{name}' is given twice")));
            }
        }
        Ok(Attrs { cx, desc, map })
    }

    fn get(&self, name: &str, ty: AttributeType) -> Result<Option<&'a proto::AttributeProto>> {
        let Some(&a) = self.map.get(name) else {
            return Ok(None);
        };
        let found = a.r#type.unwrap_or(0);
        if found != ty as i32 {
            let found =
                AttributeType::try_from(found).map_or_else(|_| format!("code {found}"), |t| t.as_str_name().to_owned());
            return Err(self.cx.format(format!(
                "{}: attribute '{name}' should be {}, found {found}",
                self.desc,
                ty.as_str_name()
            )));
        }
        Ok(Some(a))
    }

    fn int(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.get(name, AttributeType::Int)?.map(|a| a.i.unwrap_or(0)))
    }

    fn float(&self, name: &str) -> Result<Option<f32>> {
        Ok(self.get(name, AttributeType::Float)?.map(|a| a.f.unwrap_or(0.0)))
    }

    fn ints(&self, name: &str) -> Result<Option<&'a [i64]>> {
        Ok(self.get(name, AttributeType::Ints)?.map(|a| a.ints.as_slice()))
    }

    /// A 0/1 integer attribute (nonzero is true, as in onnxruntime).
    fn flag(&self, name: &str, default: bool) -> Result<bool> {
        Ok(self.int(name)?.map_or(default, |v| v != 0))
    }

    /// An integer attribute that must have one value to be supported.
    fn int_eq(&self, name: &str, default: i64, required: i64) -> Result<()> {
        let v = self.int(name)?.unwrap_or(default);
        if v != required {
            return Err(self
                .cx
                .unsupported(format_args!("{}: attribute {name}={v} is not supported (only {required})", self.desc)));
        }
        Ok(())
    }

    fn in_range(&self, name: &str, v: usize, min: usize) -> Result<()> {
        if v < min || v > MAX_SPATIAL {
            return Err(self.cx.format(format!("{}: {name} value {v} is outside {min}..={MAX_SPATIAL}", self.desc)));
        }
        Ok(())
    }

    /// Converts an INTS attribute to `N` non-negative sizes.
    fn sizes<const N: usize>(&self, name: &str) -> Result<Option<[usize; N]>> {
        let Some(v) = self.ints(name)? else {
            return Ok(None);
        };
        let len = v.len();
        let arr: [i64; N] = v.try_into().map_err(|_| {
            self.cx.unsupported(format_args!(
                "{}: {name} has {len} values, expected {N} (only 2-D windows are supported)",
                self.desc
            ))
        })?;
        let mut out = [0; N];
        for (o, x) in out.iter_mut().zip(arr) {
            *o = usize::try_from(x)
                .map_err(|_| self.cx.format(format!("{}: {name} has a negative value {x}", self.desc)))?;
        }
        Ok(Some(out))
    }

    fn spatial(&self, name: &str, default: Option<[usize; 2]>) -> Result<Option<[usize; 2]>> {
        Ok(self.sizes::<2>(name)?.or(default))
    }

    /// A pooling window's required `kernel_shape`.
    fn kernel(&self) -> Result<[usize; 2]> {
        let k = self
            .spatial("kernel_shape", None)?
            .ok_or_else(|| self.cx.format(format!("{}: required attribute kernel_shape is missing", self.desc)))?;
        for v in k {
            self.in_range("kernel_shape", v, 1)?;
        }
        Ok(k)
    }

    /// `strides`, `pads`, `dilations` and `auto_pad` of Conv and pooling.
    fn window_common(&self) -> Result<([usize; 2], [usize; 4])> {
        let strides = self.spatial("strides", Some([1, 1]))?.unwrap_or([1, 1]);
        for s in strides {
            self.in_range("strides", s, 1)?;
        }
        let dilations = self.spatial("dilations", Some([1, 1]))?.unwrap_or([1, 1]);
        if dilations != [1, 1] {
            return Err(self
                .cx
                .unsupported(format_args!("{}: dilations {dilations:?} are not supported (only 1)", self.desc)));
        }
        let pads = self.sizes::<4>("pads")?;
        if let Some(p) = pads {
            for v in p {
                self.in_range("pads", v, 0)?;
            }
        }
        let auto_pad = self.get("auto_pad", AttributeType::String)?.and_then(|a| a.s.as_deref()).unwrap_or(b"NOTSET");
        match auto_pad {
            b"NOTSET" => {}
            // VALID means no padding, which is exact without the input size.
            b"VALID" if !matches!(pads, Some(p) if p != [0; 4]) => {}
            b"VALID" => {
                return Err(self.cx.format(format!("{}: auto_pad VALID with nonzero pads", self.desc)));
            }
            other => {
                return Err(self.cx.unsupported(format_args!(
                    "{}: auto_pad {} is not supported (only NOTSET or VALID)",
                    self.desc,
                    String::from_utf8_lossy(other)
                )));
            }
        }
        Ok((strides, pads.unwrap_or([0; 4])))
    }

    /// The value of a Constant node.
    fn constant_value(&self) -> Result<OnnxTensor> {
        let present: Vec<&str> = self.map.keys().copied().collect();
        let [only] = present.as_slice() else {
            return Err(self
                .cx
                .format(format!("{}: expected exactly one value attribute, found {present:?}", self.desc)));
        };
        match *only {
            "value" => {
                let a = self.get("value", AttributeType::Tensor)?;
                let t = a
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| self.cx.format(format!("{}: value has no tensor", self.desc)))?;
                self.cx.tensor(t, &format!("{} value", self.desc))
            }
            "value_float" => {
                let v = self.float("value_float")?.unwrap_or(0.0);
                Ok(OnnxTensor::Float(ndarray::arr0(f64::from(v)).into_dyn()))
            }
            "value_floats" => {
                let v = self.get("value_floats", AttributeType::Floats)?.map_or(&[][..], |a| a.floats.as_slice());
                Ok(OnnxTensor::Float(ndarray::Array1::from_iter(v.iter().map(|&x| f64::from(x))).into_dyn()))
            }
            "value_int" => Ok(OnnxTensor::Int(ndarray::arr0(self.int("value_int")?.unwrap_or(0)).into_dyn())),
            "value_ints" => {
                let v = self.ints("value_ints")?.unwrap_or(&[]);
                Ok(OnnxTensor::Int(ndarray::Array1::from(v.to_vec()).into_dyn()))
            }
            other => {
                Err(self.cx.unsupported(format_args!("{}: constant attribute '{other}' is not supported", self.desc)))
            }
        }
    }
}

#[cfg(test)]
mod tests;

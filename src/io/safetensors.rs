//! Models in safetensors files: weights under PyTorch `state_dict` names and
//! the architecture in the metadata (the format of the golden files; see
//! `docs/model-format.md`).

use crate::backend::ConvGeometry;
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::layers::{
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, Relu,
};
use crate::limits::MAX_SAFETENSORS_HEADER_BYTES;
use crate::models::{Architecture, BlockKind, ResNetConfig, TensorSource, WeightSource};
use crate::network::{Network, NodeOp, Source};
use ::safetensors::tensor::{Dtype, SafeTensors, TensorView};
use ndarray::{Array1, Array2, Array4, ArrayD, IxDyn};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// A kernel, stride or padding given as one number or `[h, w]`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Pair {
    /// The same value for height and width.
    Square(usize),
    /// `[height, width]`.
    Rect([usize; 2]),
}

impl Pair {
    fn is_zero(&self) -> bool {
        self.hw() == (0, 0)
    }

    fn hw(self) -> (usize, usize) {
        match self {
            Pair::Square(v) => (v, v),
            Pair::Rect([h, w]) => (h, w),
        }
    }
}

fn zero() -> Pair {
    Pair::Square(0)
}
fn one() -> Pair {
    Pair::Square(1)
}

/// One entry of the `layers` metadata list.
///
/// The reader accepts only the fields the format defines (see
/// [`check_layer_fields`]): a field it does not know, or a value that would
/// change the layer's meaning in a way this crate does not compute (such as
/// `padding_mode: "reflect"`), is an error naming it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type")]
pub enum LayerSpec {
    /// `conv2d {name, in, out, kernel, stride, padding}`.
    #[serde(rename = "conv2d")]
    Conv2d {
        /// Weight prefix.
        name: String,
        /// Input channels.
        #[serde(rename = "in")]
        in_channels: usize,
        /// Output channels.
        out: usize,
        /// Kernel size.
        kernel: Pair,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: Pair,
        /// Symmetric zero padding (default 0).
        #[serde(default = "zero")]
        padding: Pair,
        /// Dilation: only 1 is supported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dilation: Option<Pair>,
        /// Groups: only 1 is supported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        groups: Option<usize>,
    },
    /// `batchnorm2d {name, eps}`.
    #[serde(rename = "batchnorm2d")]
    BatchNorm2d {
        /// Weight prefix.
        name: String,
        /// ε (default 1e-5).
        #[serde(default = "default_eps")]
        eps: f64,
    },
    /// `relu`.
    #[serde(rename = "relu")]
    Relu,
    /// `dropout` (identity).
    #[serde(rename = "dropout")]
    Dropout {
        /// Ignored at inference.
        #[serde(default, skip_serializing)]
        p: Option<f64>,
    },
    /// `maxpool2d {kernel, stride, padding}` (stride defaults to the kernel).
    #[serde(rename = "maxpool2d")]
    MaxPool2d {
        /// Kernel size.
        kernel: Pair,
        /// Stride (default: the kernel).
        #[serde(default)]
        stride: Option<Pair>,
        /// Padding (default 0).
        #[serde(default = "zero")]
        padding: Pair,
        /// Dilation: only 1 is supported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dilation: Option<Pair>,
        /// Rounding the output size up: not supported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ceil_mode: Option<bool>,
    },
    /// `avgpool2d {kernel, stride, padding, count_include_pad}`.
    #[serde(rename = "avgpool2d")]
    AvgPool2d {
        /// Kernel size.
        kernel: Pair,
        /// Stride (default: the kernel).
        #[serde(default)]
        stride: Option<Pair>,
        /// Padding (default 0).
        #[serde(default = "zero", skip_serializing_if = "Pair::is_zero")]
        padding: Pair,
        /// Whether padding cells count in the average (default true, as PyTorch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count_include_pad: Option<bool>,
        /// Rounding the output size up: not supported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ceil_mode: Option<bool>,
    },
    /// `adaptive_avgpool2d {output: [h, w]}`.
    #[serde(rename = "adaptive_avgpool2d")]
    AdaptiveAvgPool2d {
        /// Output size.
        output: Pair,
    },
    /// `flatten`.
    #[serde(rename = "flatten")]
    Flatten,
    /// `linear {name, in, out}`.
    #[serde(rename = "linear")]
    Linear {
        /// Weight prefix.
        name: String,
        /// Input features.
        #[serde(rename = "in")]
        in_features: usize,
        /// Output features.
        out: usize,
    },
}

fn default_eps() -> f64 {
    1e-5
}

/// The weights of a safetensors file, by name, with shape, dtype (F32 or
/// F64) and finiteness checks on access. Model builders read their tensors
/// through it (see [`crate::models::WeightSource`]).
///
/// ```
/// # use rsp::layers::{Flatten, Layer, Linear};
/// let fc = Linear::new("fc", ndarray::arr2(&[[1.0f32, 2.0]]), None).unwrap();
/// let net = rsp::Network::<f32>::sequential(vec![Box::new(Flatten) as Box<dyn Layer<f32>>, Box::new(fc)]);
/// let path = std::env::temp_dir().join("rsp-doc-weights.safetensors");
/// rsp::io::safetensors::save(&net, &path).unwrap();
/// let bytes = std::fs::read(&path).unwrap();
/// let (weights, _metadata) = rsp::io::safetensors::Weights::parse(&bytes, "doc").unwrap();
/// assert_eq!(weights.shape_of("fc.weight"), Some(vec![1, 2]));
/// assert!(weights.get::<f64>("fc.weight", &[2, 1]).is_err()); // wrong shape: a typed error
/// ```
pub struct Weights<'a> {
    tensors: SafeTensors<'a>,
    origin: String,
}

impl<'a> Weights<'a> {
    /// Parses a safetensors file's header: its weights and its metadata
    /// (`origin` names the file in errors).
    pub fn parse(bytes: &'a [u8], origin: &str) -> Result<(Self, HashMap<String, String>)> {
        open_file(bytes, origin)
    }

    /// The tensor `name`, which must have `shape`, converted to `T`.
    pub fn get<T: Float>(&self, name: &str, shape: &[usize]) -> Result<ArrayD<T>> {
        let t = self.tensors.tensor(name).map_err(|_| RspError::MissingWeight(name.to_string()))?;
        if t.shape() != shape {
            return Err(RspError::shape(
                format!("weight tensor `{name}` in {}", self.origin),
                format!("{shape:?}"),
                t.shape(),
            ));
        }
        let a = tensor_to_array::<T>(&t, name)?;
        if let Some(index) = a.iter().position(|v| !v.is_finite()) {
            return Err(RspError::NonFinite { tensor: format!("weight tensor `{name}`"), index });
        }
        Ok(a)
    }

    /// The tensor `name` if the file has it (then it must have `shape`).
    pub fn optional<T: Float>(&self, name: &str, shape: &[usize]) -> Result<Option<ArrayD<T>>> {
        if self.tensors.names().contains(&name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The vector `name` of length `len`.
    pub fn vector<T: Float>(&self, name: &str, len: usize) -> Result<Array1<T>> {
        Ok(self.get::<T>(name, &[len])?.into_dimensionality().expect("checked shape"))
    }

    /// The shape of a tensor, if present.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.tensor(name).ok().map(|t| t.shape().to_vec())
    }
}

impl TensorSource for Weights<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<ArrayD<f64>> {
        self.get::<f64>(name, shape)
    }

    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        Weights::shape_of(self, name)
    }
}

/// Converts a float32 or float64 tensor to an array of `T`.
pub(crate) fn tensor_to_array<T: Float>(t: &TensorView<'_>, name: &str) -> Result<ArrayD<T>> {
    let data = t.data();
    let values: Vec<T> = match t.dtype() {
        Dtype::F32 => {
            data.chunks_exact(4).map(|c| T::of(f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)).collect()
        }
        Dtype::F64 => data.chunks_exact(8).map(|c| T::of(f64::from_le_bytes(c.try_into().expect("8 bytes")))).collect(),
        other => {
            return Err(RspError::Model(format!(
                "tensor `{name}` has dtype {other:?}; only F32 and F64 are supported"
            )));
        }
    };
    ArrayD::from_shape_vec(IxDyn(t.shape()), values)
        .map_err(|_| RspError::Model(format!("tensor `{name}`: data length does not match its shape {:?}", t.shape())))
}

/// Parses the file's header and metadata (bounded by the bytes present).
pub(crate) fn open_file<'a>(bytes: &'a [u8], origin: &str) -> Result<(Weights<'a>, HashMap<String, String>)> {
    check_offsets(bytes).map_err(|reason| RspError::format(origin, format!("not a safetensors file: {reason}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| RspError::format(origin, format!("not a safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let tensors = deserialize(bytes, origin)?;
    Ok((Weights { tensors, origin: origin.to_string() }, metadata))
}

/// Opens any safetensors file (model or data) through the `safetensors`
/// crate, after the offset check that keeps the crate's own arithmetic from
/// overflowing.
pub(crate) fn deserialize<'a>(bytes: &'a [u8], origin: &str) -> Result<SafeTensors<'a>> {
    check_offsets(bytes).map_err(|reason| RspError::format(origin, format!("not a safetensors file: {reason}")))?;
    SafeTensors::deserialize(bytes).map_err(|e| RspError::format(origin, format!("not a safetensors file: {e}")))
}

/// Refuses tensor data offsets beyond the end of the file before the
/// safetensors crate sums them (a sum near `usize::MAX` overflows there), and
/// headers over [`MAX_SAFETENSORS_HEADER_BYTES`]: parsing JSON expands it up
/// to ~16-fold (a 2-byte `0,` becomes a 32-byte value).
fn check_offsets(bytes: &[u8]) -> std::result::Result<(), String> {
    let Some(n) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))) else { return Ok(()) };
    if n > MAX_SAFETENSORS_HEADER_BYTES as u64 {
        return Err(format!(
            "the header declares {n} bytes, more than the limit of {MAX_SAFETENSORS_HEADER_BYTES} (rsp::limits)"
        ));
    }
    let Some(header) = usize::try_from(n).ok().and_then(|n| bytes.get(8..8usize.checked_add(n)?)) else {
        return Ok(());
    };
    let Ok(serde_json::Value::Object(entries)) = serde_json::from_slice::<serde_json::Value>(header) else {
        return Ok(());
    };
    for (name, entry) in &entries {
        let ends =
            entry.get("data_offsets").and_then(|o| o.as_array()).into_iter().flatten().filter_map(|v| v.as_u64());
        if ends.into_iter().any(|end| end > bytes.len() as u64) {
            return Err(format!("tensor `{name}` has data offsets beyond the file's {} bytes", bytes.len()));
        }
    }
    Ok(())
}

/// Reads a JSON metadata field.
pub(crate) fn json_field<V: serde::de::DeserializeOwned>(
    metadata: &HashMap<String, String>,
    key: &str,
    origin: &str,
) -> Result<Option<V>> {
    metadata
        .get(key)
        .map(|text| serde_json::from_str(text).map_err(|e| RspError::format(origin, format!("metadata `{key}`: {e}"))))
        .transpose()
}

/// Fields that describe a layer without changing what it computes; any layer
/// may carry them (`docs/model-format.md`). Everything else must be a field the
/// layer's type defines.
pub const DESCRIPTIVE_LAYER_FIELDS: &[&str] = &["name", "inplace", "comment"];

/// The fields each layer type defines besides `type` and
/// [`DESCRIPTIVE_LAYER_FIELDS`]; `None` for a type the format does not know
/// (serde then names it).
fn defined_fields(layer_type: &str) -> Option<&'static [&'static str]> {
    Some(match layer_type {
        "conv2d" => &["in", "out", "kernel", "stride", "padding", "dilation", "groups", "padding_mode", "bias"],
        "batchnorm2d" => &["eps", "num_features", "momentum", "affine", "track_running_stats"],
        "relu" | "flatten" => &[],
        "dropout" => &["p"],
        "maxpool2d" => &["kernel", "stride", "padding", "dilation", "ceil_mode", "return_indices"],
        "avgpool2d" => &["kernel", "stride", "padding", "count_include_pad", "ceil_mode", "divisor_override"],
        "adaptive_avgpool2d" => &["output"],
        "linear" => &["in", "out", "bias"],
        _ => return None,
    })
}

/// Checks the fields of one `layers` entry before it is read: every field
/// must be one the format defines for the layer's type (or a descriptive
/// one), and the fields serde does not read into [`LayerSpec`] must have the
/// only value this crate computes exactly (`padding_mode` `"zeros"`,
/// `divisor_override` null, `track_running_stats` and `affine` true,
/// `return_indices` false). `bias` (conv2d, linear) must agree with the file:
/// `true` needs the `{name}.bias` tensor, `false` forbids it; `num_features`
/// must be the channel count of the batch norm's weights.
///
/// ```
/// use rsp::io::safetensors::check_layer_fields;
/// let ok = serde_json::json!({"type": "conv2d", "name": "c", "in": 3, "out": 8, "kernel": 3, "padding_mode": "zeros"});
/// assert!(check_layer_fields(&ok).is_ok());
/// let typo = serde_json::json!({"type": "conv2d", "name": "c", "in": 3, "out": 8, "kernel": 3, "stide": 2});
/// assert!(check_layer_fields(&typo).unwrap_err().to_string().contains("`stide`"));
/// let reflect = serde_json::json!({"type": "conv2d", "name": "c", "in": 3, "out": 8, "kernel": 3, "padding_mode": "reflect"});
/// assert!(check_layer_fields(&reflect).unwrap_err().to_string().contains("padding_mode"));
/// ```
pub fn check_layer_fields(entry: &serde_json::Value) -> Result<()> {
    use serde_json::Value;
    let serde_json::Value::Object(fields) = entry else {
        return Err(RspError::model("a layer must be a JSON object"));
    };
    let Some(layer_type) = fields.get("type").and_then(Value::as_str) else {
        return Ok(()); // serde names the missing or malformed `type`
    };
    let Some(defined) = defined_fields(layer_type) else {
        return Ok(()); // serde names the unknown type and the known ones
    };
    for key in fields.keys() {
        if key != "type" && !defined.contains(&key.as_str()) && !DESCRIPTIVE_LAYER_FIELDS.contains(&key.as_str()) {
            let mut known: Vec<&str> = defined.to_vec();
            known.extend_from_slice(DESCRIPTIVE_LAYER_FIELDS);
            return Err(RspError::model(format!(
                "{layer_type}: unknown field `{}` (the format defines {})",
                shorten(key),
                known.join(", ")
            )));
        }
    }
    // Fields serde does not keep: each has exactly one value this crate computes.
    let only = |key: &str, allowed: Value, meaning: &str| -> Result<()> {
        match fields.get(key) {
            Some(v) if *v != allowed => Err(RspError::model(format!(
                "{layer_type}: {key} = {} is not supported (only {allowed}: {meaning})",
                shorten(&v.to_string())
            ))),
            _ => Ok(()),
        }
    };
    only("padding_mode", Value::from("zeros"), "the padding is zeros")?;
    only("divisor_override", Value::Null, "the average divides by the window size")?;
    only("track_running_stats", Value::Bool(true), "inference uses the running statistics")?;
    only("affine", Value::Bool(true), "the layer has a weight and a bias")?;
    only("return_indices", Value::Bool(false), "the layer returns its maxima only")?;
    if layer_type == "batchnorm2d" {
        if let Some(v) = fields.get("momentum") {
            // Training only; still a number (or null, PyTorch's cumulative average).
            if !(v.is_null() || v.is_number()) {
                return Err(RspError::model(format!("batchnorm2d: momentum must be a number or null, found {v}")));
            }
        }
    }
    if let Some(v) = fields.get("inplace") {
        if !v.is_boolean() {
            return Err(RspError::model(format!("{layer_type}: inplace must be true or false, found {v}")));
        }
    }
    for key in ["bias", "num_features"] {
        if let Some(v) = fields.get(key) {
            let ok = if key == "bias" { v.is_boolean() } else { v.is_u64() };
            if !ok {
                let what = if key == "bias" { "true or false" } else { "a channel count" };
                return Err(RspError::model(format!(
                    "{layer_type}: {key} must be {what}, found {}",
                    shorten(&v.to_string())
                )));
            }
        }
    }
    Ok(())
}

/// At most 80 characters of `text`, for messages that quote a file.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// `bias` and `num_features` of a `layers` entry against the weights the file holds.
fn check_declared_weights(entry: &serde_json::Value, w: &Weights<'_>) -> Result<()> {
    let name = entry.get("name").and_then(serde_json::Value::as_str).unwrap_or("");
    if let Some(declared) = entry.get("bias").and_then(serde_json::Value::as_bool) {
        let present = w.shape_of(&format!("{name}.bias")).is_some();
        if declared != present {
            return Err(RspError::model(format!(
                "`bias` is {declared} but the file {} a tensor `{name}.bias`",
                if present { "holds" } else { "has no" }
            )));
        }
    }
    if let Some(n) = entry.get("num_features").and_then(serde_json::Value::as_u64) {
        let channels = w.shape_of(&format!("{name}.weight")).filter(|s| s.len() == 1).map(|s| s[0]);
        if channels.is_some_and(|c| c as u64 != n) {
            return Err(RspError::model(format!(
                "num_features = {n} but `{name}.weight` has {} channels",
                channels.unwrap_or(0)
            )));
        }
    }
    Ok(())
}

/// Checks that an optional field has its plain value (the only one supported).
fn plain<V: PartialEq + std::fmt::Debug>(value: Option<V>, supported: V, what: &str) -> Result<()> {
    match value {
        Some(v) if v != supported => {
            Err(RspError::model(format!("{what} = {v:?} is not supported (only {supported:?})")))
        }
        _ => Ok(()),
    }
}

fn build_layer<T: Float>(spec: &LayerSpec, w: &Weights<'_>) -> Result<Box<dyn Layer<T>>> {
    let nonzero = |what: &str, v: usize| {
        if v == 0 {
            Err(RspError::model(format!("{what} must be ≥ 1")))
        } else {
            Ok(v)
        }
    };
    Ok(match spec {
        LayerSpec::Conv2d { name, in_channels, out, kernel, stride, padding, dilation, groups } => {
            plain(dilation.map(Pair::hw), (1, 1), "conv2d dilation")?;
            plain(*groups, 1, "conv2d groups")?;
            let (kh, kw) = kernel.hw();
            let weight = w.get::<T>(&format!("{name}.weight"), &[*out, *in_channels, kh, kw])?;
            let bias = w.optional::<T>(&format!("{name}.bias"), &[*out])?;
            let (sh, sw) = stride.hw();
            let (ph, pw) = padding.hw();
            let geometry = ConvGeometry {
                stride: [nonzero("conv stride", sh)?, nonzero("conv stride", sw)?],
                padding: [ph, pw, ph, pw],
            };
            let weight: Array4<T> = weight.into_dimensionality().expect("checked shape");
            Box::new(Conv2d::new(
                name.clone(),
                weight,
                bias.map(|b| b.into_dimensionality().expect("checked shape")),
                geometry,
            )?)
        }
        LayerSpec::BatchNorm2d { name, eps } => {
            let c = w
                .shape_of(&format!("{name}.weight"))
                .and_then(|s| (s.len() == 1).then_some(s[0]))
                .ok_or_else(|| RspError::MissingWeight(format!("{name}.weight (a vector)")))?;
            let v = |suffix: &str| w.vector::<T>(&format!("{name}.{suffix}"), c);
            Box::new(BatchNorm2d::new(
                name.clone(),
                v("weight")?,
                v("bias")?,
                v("running_mean")?,
                v("running_var")?,
                T::of(*eps),
            )?)
        }
        LayerSpec::Relu => Box::new(Relu),
        LayerSpec::Dropout { .. } => Box::new(Dropout),
        LayerSpec::MaxPool2d { kernel, stride, padding, dilation, ceil_mode } => {
            plain(dilation.map(Pair::hw), (1, 1), "maxpool2d dilation")?;
            plain(*ceil_mode, false, "maxpool2d ceil_mode")?;
            let (ph, pw) = padding.hw();
            Box::new(MaxPool2d::new(kernel.hw(), stride.unwrap_or(*kernel).hw(), [ph, pw, ph, pw]))
        }
        LayerSpec::AvgPool2d { kernel, stride, padding, count_include_pad, ceil_mode } => {
            plain(*ceil_mode, false, "avgpool2d ceil_mode")?;
            let (ph, pw) = padding.hw();
            Box::new(AvgPool2d {
                kernel: kernel.hw(),
                stride: stride.unwrap_or(*kernel).hw(),
                padding: [ph, pw, ph, pw],
                count_include_pad: count_include_pad.unwrap_or(true),
            })
        }
        LayerSpec::AdaptiveAvgPool2d { output } => Box::new(AdaptiveAvgPool2d::new(output.hw())),
        LayerSpec::Flatten => Box::new(Flatten),
        LayerSpec::Linear { name, in_features, out } => {
            let weight: Array2<T> =
                w.get::<T>(&format!("{name}.weight"), &[*out, *in_features])?.into_dimensionality().expect("checked");
            let bias = w.optional::<T>(&format!("{name}.bias"), &[*out])?;
            Box::new(Linear::new(name.clone(), weight, bias.map(|b| b.into_dimensionality().expect("checked shape")))?)
        }
    })
}

/// The spec of a layer of this crate's built-in types (for writing files).
fn spec_of<T: Float>(layer: &dyn Layer<T>) -> Option<LayerSpec> {
    let any: &dyn std::any::Any = layer;
    let pair = |(h, w): (usize, usize)| if h == w { Pair::Square(h) } else { Pair::Rect([h, w]) };
    if let Some(c) = any.downcast_ref::<Conv2d<T>>() {
        let (o, i, kh, kw) = c.weight().dim();
        let g = c.geometry();
        let [pt, pl, pb, pr] = g.padding;
        if pt != pb || pl != pr {
            return None;
        }
        return Some(LayerSpec::Conv2d {
            name: c.name().to_string(),
            in_channels: i,
            out: o,
            kernel: pair((kh, kw)),
            stride: pair((g.stride[0], g.stride[1])),
            padding: pair((pt, pl)),
            dilation: None,
            groups: None,
        });
    }
    if let Some(l) = any.downcast_ref::<Linear<T>>() {
        return Some(LayerSpec::Linear {
            name: l.name().to_string(),
            in_features: l.weight().ncols(),
            out: l.weight().nrows(),
        });
    }
    if let Some(b) = any.downcast_ref::<BatchNorm2d<T>>() {
        return Some(LayerSpec::BatchNorm2d { name: b.name().to_string(), eps: b.parameters().4.to_f64_exact() });
    }
    if let Some(p) = any.downcast_ref::<MaxPool2d>() {
        let [pt, pl, pb, pr] = p.padding;
        if pt != pb || pl != pr {
            return None;
        }
        return Some(LayerSpec::MaxPool2d {
            kernel: pair(p.kernel),
            stride: Some(pair(p.stride)),
            padding: pair((pt, pl)),
            dilation: None,
            ceil_mode: None,
        });
    }
    if let Some(p) = any.downcast_ref::<AvgPool2d>() {
        let [pt, pl, pb, pr] = p.padding;
        return (pt == pb && pl == pr).then(|| LayerSpec::AvgPool2d {
            kernel: pair(p.kernel),
            stride: Some(pair(p.stride)),
            padding: pair((pt, pl)),
            count_include_pad: (!p.count_include_pad).then_some(false),
            ceil_mode: None,
        });
    }
    if let Some(p) = any.downcast_ref::<AdaptiveAvgPool2d>() {
        return Some(LayerSpec::AdaptiveAvgPool2d { output: pair(p.output) });
    }
    if any.is::<Relu>() {
        return Some(LayerSpec::Relu);
    }
    if any.is::<Dropout>() {
        return Some(LayerSpec::Dropout { p: None });
    }
    if any.is::<Flatten>() {
        return Some(LayerSpec::Flatten);
    }
    None
}

impl<T: Float> Network<T> {
    /// Loads a torchvision model saved as a safetensors `state_dict` (see
    /// `docs/torchvision.md`); `arch` names the architecture as
    /// [`Architecture::from_name`](crate::models::Architecture::from_name) does (`"resnet50"`, `"vgg16_bn"`, ...).
    ///
    /// ```no_run
    /// let net = rsp::Network::<f32>::load_torchvision("resnet50.safetensors", "resnet50").unwrap();
    /// ```
    pub fn load_torchvision(path: impl AsRef<Path>, arch: &str) -> Result<Self> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| RspError::Io { path: shown.clone(), source })?;
        torchvision_from_bytes(&bytes, arch, &shown)
    }
}

/// Loads a model from a safetensors file: weights under PyTorch
/// `state_dict` names, the architecture in the `layers` metadata (see
/// `docs/model-format.md`), or a torchvision ResNet described by the
/// metadata `arch` = `resnet`, `block`, `layers`, `widths`, `stem_width`,
/// `num_classes` (see [`crate::models::ResNetConfig::from_metadata`]), or
/// a torchvision `state_dict` whose metadata `arch` names the
/// architecture as [`crate::models::Architecture::from_name`] does
/// (`vgg16`, `vgg16_bn`, `resnet50`, ...).
///
/// ```no_run
/// let net = rsp::io::safetensors::load::<f32>("data/digits_vgg.safetensors").unwrap();
/// println!("{net:?}");
/// ```
pub fn load<T: Float>(path: impl AsRef<Path>) -> Result<Network<T>> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| RspError::Io { path: shown.clone(), source })?;
    from_bytes(&bytes, &shown)
}

/// [`load`] from bytes in memory; `origin` names them in errors.
pub fn from_bytes<T: Float>(bytes: &[u8], origin: &str) -> Result<Network<T>> {
    let (weights, metadata) = open_file(bytes, origin)?;
    match metadata.get("arch").map(String::as_str) {
        Some("resnet") => {
            let config = ResNetConfig::from_metadata(&metadata, origin)?;
            let mut net = config.build(&WeightSource::File(&weights))?;
            apply_common_metadata(&mut net, &metadata, origin)?;
            return Ok(net);
        }
        // A torchvision architecture by name (`vgg16`, `resnet50`, ...).
        Some(name) if !metadata.contains_key("layers") => {
            let architecture = Architecture::from_name(name)
                .map_err(|e| RspError::Model(format!("{origin}: metadata `arch` = `{name}`: {}", e.detail())))?;
            let mut net = architecture.build(&WeightSource::File(&weights))?;
            apply_common_metadata(&mut net, &metadata, origin)?;
            return Ok(net);
        }
        _ => {}
    }
    let specs: Vec<serde_json::Value> = json_field(&metadata, "layers", origin)?.ok_or_else(|| {
        RspError::format(
            origin,
            "no `layers` or `arch` metadata: the file does not describe an architecture \
             (for a torchvision state_dict, name it: `--arch vgg16` on the CLI, `Network::load_torchvision`)",
        )
    })?;
    if specs.len() > crate::limits::MAX_LAYERS {
        return Err(RspError::format(
            origin,
            format!("{} layers, more than the limit of {}", specs.len(), crate::limits::MAX_LAYERS),
        ));
    }
    let mut net = Network::new();
    for (k, value) in specs.into_iter().enumerate() {
        let spec: LayerSpec = check_layer_fields(&value)
            .and_then(|()| check_declared_weights(&value, &weights))
            .and_then(|()| {
                serde_json::from_value(value.clone())
                    .map_err(|e| RspError::Model(format!("({}): {e}", shorten(&value.to_string()))))
            })
            .map_err(|e| match e {
                RspError::Model(m) => RspError::Model(format!("layer {k} {m}")),
                other => other,
            })?;
        let layer = build_layer::<T>(&spec, &weights).map_err(|e| match e {
            RspError::Model(m) => RspError::Model(format!("layer {k}: {m}")),
            other => other,
        })?;
        net.push_boxed(layer, net.last());
    }
    apply_common_metadata(&mut net, &metadata, origin)?;
    Ok(net)
}

/// [`Network::load_torchvision`] from bytes in memory; `origin` names them in errors.
pub fn torchvision_from_bytes<T: Float>(bytes: &[u8], arch: &str, origin: &str) -> Result<Network<T>> {
    let architecture = Architecture::from_name(arch)?;
    let (weights, _) = Weights::parse(bytes, origin)?;
    architecture.build(&WeightSource::File(&weights))
}

/// Writes `net` in the format [`load`] reads
/// (weights in `T`). Works for chains of the built-in layers.
///
/// ```
/// # use rsp::layers::{Flatten, Layer, Linear};
/// let fc = Linear::new("fc", ndarray::arr2(&[[1.0f32, 2.0]]), None).unwrap();
/// let net = rsp::Network::<f32>::sequential(vec![Box::new(Flatten) as Box<dyn Layer<f32>>, Box::new(fc)]);
/// let path = std::env::temp_dir().join("rsp-doc-save.safetensors");
/// rsp::io::safetensors::save(&net, &path).unwrap();
/// let back = rsp::io::safetensors::load::<f32>(&path).unwrap();
/// assert_eq!(back.len(), 2);
/// ```
pub fn save<T: Float>(net: &Network<T>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut specs = Vec::new();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut put = |name: String, a: ndarray::ArrayViewD<T>| {
        let bytes: Vec<u8> = a.iter().flat_map(|v| to_le_bytes(*v)).collect();
        tensors.push((name, a.shape().to_vec(), bytes));
    };
    for (k, node) in net.nodes().iter().enumerate() {
        let layer = match (&node.op, node.inputs.as_slice()) {
            (NodeOp::Layer(l), [src]) if *src == if k == 0 { Source::Input } else { Source::Node(k - 1) } => l,
            _ => {
                return Err(RspError::model(format!(
                    "node #{k} is not part of a chain; the layers format only describes chains"
                )))
            }
        };
        let spec = spec_of(layer.as_ref()).ok_or_else(|| {
            RspError::model(format!("node #{k} ({}) has no entry in the layers format", layer.describe()))
        })?;
        let any: &dyn std::any::Any = layer.as_ref();
        if let Some(c) = any.downcast_ref::<Conv2d<T>>() {
            put(format!("{}.weight", c.name()), c.weight().view().into_dyn());
            if let Some(b) = c.bias() {
                put(format!("{}.bias", c.name()), b.view().into_dyn());
            }
        } else if let Some(l) = any.downcast_ref::<Linear<T>>() {
            put(format!("{}.weight", l.name()), l.weight().view().into_dyn());
            if let Some(b) = l.bias() {
                put(format!("{}.bias", l.name()), b.view().into_dyn());
            }
        } else if let Some(b) = any.downcast_ref::<BatchNorm2d<T>>() {
            let (g, beta, m, v, _) = b.parameters();
            for (suffix, t) in [("weight", g), ("bias", beta), ("running_mean", m), ("running_var", v)] {
                put(format!("{}.{suffix}", b.name()), t.view().into_dyn());
            }
        }
        specs.push(spec);
    }
    let dtype = if T::NAME == "f32" { Dtype::F32 } else { Dtype::F64 };
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| RspError::model(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut metadata = HashMap::new();
    metadata.insert("layers".to_string(), serde_json::to_string(&specs).expect("serialisable"));
    if let Some(s) = net.start_layer_setting() {
        metadata.insert("start_layer".to_string(), s.to_string());
    }
    if let Some(names) = net.class_names() {
        metadata.insert("classes".to_string(), serde_json::to_string(names).expect("serialisable"));
    }
    if let Some(shape) = net.input_shape() {
        let mut full = vec![1];
        full.extend_from_slice(shape);
        metadata.insert("input_shape".to_string(), serde_json::to_string(&full).expect("serialisable"));
    }
    if let Some(norm) = net.input_normalization() {
        metadata.insert("normalization".to_string(), serde_json::to_string(norm).expect("serialisable"));
    }
    let bytes = ::safetensors::serialize(views, Some(metadata)).map_err(|e| RspError::model(e.to_string()))?;
    crate::io::atomic::write_atomic(path, |w| std::io::Write::write_all(w, &bytes))
}
fn to_le_bytes<T: Float>(v: T) -> Vec<u8> {
    if T::NAME == "f32" {
        (v.to_f64_exact() as f32).to_le_bytes().to_vec()
    } else {
        v.to_f64_exact().to_le_bytes().to_vec()
    }
}

/// Applies the metadata every model file may carry: `start_layer`, `classes`,
/// `input_shape`, `normalization` (`{"mean": [..], "std": [..]}`).
pub(crate) fn apply_common_metadata<T: Float>(
    net: &mut Network<T>,
    metadata: &HashMap<String, String>,
    origin: &str,
) -> Result<()> {
    if let Some(s) = json_field::<usize>(metadata, "start_layer", origin)? {
        if s >= net.len().saturating_sub(1) {
            return Err(RspError::Model(format!(
                "start_layer {s} is not a node before the last of {} nodes",
                net.len()
            )));
        }
        net.set_start_layer(Some(s));
    }
    net.set_class_names(json_field(metadata, "classes", origin)?);
    if let Some(shape) = json_field::<Vec<usize>>(metadata, "input_shape", origin)? {
        if shape.len() == 4 && shape[1..].iter().all(|&d| d > 0) {
            net.set_input_shape(Some(shape[1..].to_vec()));
        }
    }
    let norm = json_field::<crate::network::InputNormalization>(metadata, "normalization", origin)?;
    net.set_input_normalization(norm).map_err(|e| RspError::format(origin, e.to_string()))?;
    Ok(())
}

/// The ResNet description of a model file's metadata (the file format's
/// side of [`ResNetConfig`]; the builder knows nothing of files).
impl ResNetConfig {
    /// The configuration in a golden file's metadata: `arch` = `resnet`,
    /// `block` (`basic` or `bottleneck`), `layers` and `widths` (JSON lists),
    /// `stem_width`, `num_classes`.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use rsp::models::{BlockKind, ResNetConfig};
    /// let meta: HashMap<String, String> = [("arch", "resnet"), ("block", "basic"), ("layers", "[1, 1]"),
    ///     ("widths", "[8, 16]"), ("stem_width", "8"), ("num_classes", "10")]
    ///     .into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    /// let c = ResNetConfig::from_metadata(&meta, "example").unwrap();
    /// assert_eq!(c.block, BlockKind::Basic);
    /// assert_eq!(c.out_channels(), 16);
    /// ```
    pub fn from_metadata(metadata: &HashMap<String, String>, origin: &str) -> Result<Self> {
        let required = |key: &str| RspError::format(origin, format!("ResNet metadata has no `{key}`"));
        if let Some(arch) = metadata.get("arch") {
            if arch != "resnet" {
                return Err(RspError::format(origin, format!("metadata `arch` is `{arch}`, not `resnet`")));
            }
        }
        let block = match metadata.get("block").map(|s| s.trim().trim_matches('"')) {
            Some("basic") => BlockKind::Basic,
            Some("bottleneck") => BlockKind::Bottleneck,
            Some(other) => {
                return Err(RspError::format(
                    origin,
                    format!("metadata `block` is `{other}`: expected `basic` or `bottleneck`"),
                ))
            }
            None => return Err(required("block")),
        };
        let config = ResNetConfig {
            block,
            layers: json_field(metadata, "layers", origin)?.ok_or_else(|| required("layers"))?,
            widths: json_field(metadata, "widths", origin)?.ok_or_else(|| required("widths"))?,
            stem_width: json_field(metadata, "stem_width", origin)?.ok_or_else(|| required("stem_width"))?,
            num_classes: json_field(metadata, "num_classes", origin)?.ok_or_else(|| required("num_classes"))?,
        };
        config.validate().map_err(|e| RspError::format(origin, e.to_string()))?;
        Ok(config)
    }

    /// The metadata [`ResNetConfig::from_metadata`] reads.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let block = match self.block {
            BlockKind::Basic => "basic",
            BlockKind::Bottleneck => "bottleneck",
        };
        let json = |v: &[usize]| serde_json::to_string(v).expect("serialisable");
        [
            ("arch", "resnet".to_string()),
            ("block", block.to_string()),
            ("layers", json(&self.layers)),
            ("widths", json(&self.widths)),
            ("stem_width", self.stem_width.to_string()),
            ("num_classes", self.num_classes.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

//! An upper bound on the memory that decoding an ONNX file with `prost`
//! needs, computed from the protobuf wire format before anything is decoded.
//!
//! Decoding can expand a file far beyond its size: an empty sub-message takes
//! 2 bytes on the wire and a few hundred bytes as a struct, a packed varint 1
//! byte and 8 as an `i64`. The walk below follows the ONNX schema (the tags of
//! every message-typed and repeated field of `proto.rs`) and adds up what each
//! field will cost once decoded: the struct sizes, vector growth and the bytes
//! of strings and data. Fields `prost` does not know are skipped by it, and
//! cost nothing here either.

use super::proto;
use std::mem::size_of;

/// Deepest nesting of messages, as in `prost` (which refuses deeper ones).
const MAX_DEPTH: usize = 100;
/// Bytes of allocator bookkeeping assumed per heap allocation.
const ALLOCATION_OVERHEAD: u64 = 16;

/// The message types of `onnx.proto`.
#[derive(Clone, Copy, Debug)]
enum Msg {
    Model,
    Graph,
    Node,
    Attribute,
    Tensor,
    Segment,
    SparseTensor,
    ValueInfo,
    Type,
    TypeTensor,
    TypeSequence,
    TypeMap,
    TypeOptional,
    TypeSparse,
    TypeOpaque,
    Shape,
    Dimension,
    OpsetId,
    StringEntry,
    Annotation,
    Function,
    TrainingInfo,
    DeviceConfig,
    NodeDeviceConfig,
    ShardingSpec,
    ShardedDim,
    SimpleShardedDim,
    IntIntList,
}

/// What a field decodes to.
#[derive(Clone, Copy)]
enum Field {
    /// A sub-message (singular, repeated, boxed or a oneof case).
    Message(Msg),
    /// A repeated number of `width` bytes; `fixed` if its wire form is fixed-width.
    Numbers { width: u64, fixed: bool },
    /// A repeated string or bytes field (one `Vec` per element).
    Strings,
    /// A singular scalar, string or bytes field (its bytes, at most).
    Plain,
}

impl Msg {
    fn size(self) -> u64 {
        use proto::type_proto as tp;
        let s = match self {
            Msg::Model => size_of::<proto::ModelProto>(),
            Msg::Graph => size_of::<proto::GraphProto>(),
            Msg::Node => size_of::<proto::NodeProto>(),
            Msg::Attribute => size_of::<proto::AttributeProto>(),
            Msg::Tensor => size_of::<proto::TensorProto>(),
            Msg::Segment => size_of::<proto::tensor_proto::Segment>(),
            Msg::SparseTensor => size_of::<proto::SparseTensorProto>(),
            Msg::ValueInfo => size_of::<proto::ValueInfoProto>(),
            Msg::Type => size_of::<proto::TypeProto>(),
            Msg::TypeTensor => size_of::<tp::Tensor>(),
            Msg::TypeSequence => size_of::<tp::Sequence>(),
            Msg::TypeMap => size_of::<tp::Map>(),
            Msg::TypeOptional => size_of::<tp::Optional>(),
            Msg::TypeSparse => size_of::<tp::SparseTensor>(),
            Msg::TypeOpaque => size_of::<tp::Opaque>(),
            Msg::Shape => size_of::<proto::TensorShapeProto>(),
            Msg::Dimension => size_of::<proto::tensor_shape_proto::Dimension>(),
            Msg::OpsetId => size_of::<proto::OperatorSetIdProto>(),
            Msg::StringEntry => size_of::<proto::StringStringEntryProto>(),
            Msg::Annotation => size_of::<proto::TensorAnnotation>(),
            Msg::Function => size_of::<proto::FunctionProto>(),
            Msg::TrainingInfo => size_of::<proto::TrainingInfoProto>(),
            Msg::DeviceConfig => size_of::<proto::DeviceConfigurationProto>(),
            Msg::NodeDeviceConfig => size_of::<proto::NodeDeviceConfigurationProto>(),
            Msg::ShardingSpec => size_of::<proto::ShardingSpecProto>(),
            Msg::ShardedDim => size_of::<proto::ShardedDimProto>(),
            Msg::SimpleShardedDim => size_of::<proto::SimpleShardedDimProto>(),
            Msg::IntIntList => size_of::<proto::IntIntListEntryProto>(),
        };
        s as u64
    }

    /// The schema: what field `tag` of this message decodes to (from the
    /// `#[prost(...)]` attributes of `proto.rs`).
    fn field(self, tag: u32) -> Field {
        use Field::{Message as M, Plain, Strings};
        const I64: Field = Field::Numbers { width: 8, fixed: false };
        const I32: Field = Field::Numbers { width: 4, fixed: false };
        const F32: Field = Field::Numbers { width: 4, fixed: true };
        const F64: Field = Field::Numbers { width: 8, fixed: true };
        match (self, tag) {
            (Msg::Model, 7) => M(Msg::Graph),
            (Msg::Model, 8) => M(Msg::OpsetId),
            (Msg::Model, 14) => M(Msg::StringEntry),
            (Msg::Model, 20) => M(Msg::TrainingInfo),
            (Msg::Model, 25) => M(Msg::Function),
            (Msg::Model, 26) => M(Msg::DeviceConfig),
            (Msg::Graph, 1) => M(Msg::Node),
            (Msg::Graph, 5) => M(Msg::Tensor),
            (Msg::Graph, 15) => M(Msg::SparseTensor),
            (Msg::Graph, 11..=13) => M(Msg::ValueInfo),
            (Msg::Graph, 14) => M(Msg::Annotation),
            (Msg::Graph, 16) => M(Msg::StringEntry),
            (Msg::Node, 1 | 2) => Strings,
            (Msg::Node, 5) => M(Msg::Attribute),
            (Msg::Node, 9) => M(Msg::StringEntry),
            (Msg::Node, 10) => M(Msg::NodeDeviceConfig),
            (Msg::Attribute, 5 | 10) => M(Msg::Tensor),
            (Msg::Attribute, 6 | 11) => M(Msg::Graph),
            (Msg::Attribute, 22 | 23) => M(Msg::SparseTensor),
            (Msg::Attribute, 14 | 15) => M(Msg::Type),
            (Msg::Attribute, 7) => F32,
            (Msg::Attribute, 8) => I64,
            (Msg::Attribute, 9) => Strings,
            (Msg::Tensor, 1 | 7 | 11) => I64,
            (Msg::Tensor, 3) => M(Msg::Segment),
            (Msg::Tensor, 4) => F32,
            (Msg::Tensor, 5) => I32,
            (Msg::Tensor, 6) => Strings,
            (Msg::Tensor, 10) => F64,
            (Msg::Tensor, 13 | 16) => M(Msg::StringEntry),
            (Msg::SparseTensor, 1 | 2) => M(Msg::Tensor),
            (Msg::SparseTensor, 3) => I64,
            (Msg::ValueInfo, 2) => M(Msg::Type),
            (Msg::ValueInfo, 4) => M(Msg::StringEntry),
            (Msg::Type, 1) => M(Msg::TypeTensor),
            (Msg::Type, 4) => M(Msg::TypeSequence),
            (Msg::Type, 5) => M(Msg::TypeMap),
            (Msg::Type, 7) => M(Msg::TypeOpaque),
            (Msg::Type, 8) => M(Msg::TypeSparse),
            (Msg::Type, 9) => M(Msg::TypeOptional),
            (Msg::TypeTensor | Msg::TypeSparse, 2) => M(Msg::Shape),
            (Msg::TypeSequence | Msg::TypeOptional, 1) | (Msg::TypeMap, 2) => M(Msg::Type),
            (Msg::Shape, 1) => M(Msg::Dimension),
            (Msg::Annotation, 2) => M(Msg::StringEntry),
            (Msg::Function, 4..=6) => Strings,
            (Msg::Function, 7) => M(Msg::Node),
            (Msg::Function, 9) => M(Msg::OpsetId),
            (Msg::Function, 11) => M(Msg::Attribute),
            (Msg::Function, 12) => M(Msg::ValueInfo),
            (Msg::Function, 14) => M(Msg::StringEntry),
            (Msg::TrainingInfo, 1 | 2) => M(Msg::Graph),
            (Msg::TrainingInfo, 3 | 4) => M(Msg::StringEntry),
            (Msg::DeviceConfig, 3) => Strings,
            (Msg::NodeDeviceConfig, 2) => M(Msg::ShardingSpec),
            (Msg::ShardingSpec, 2) => I64,
            (Msg::ShardingSpec, 3) => M(Msg::IntIntList),
            (Msg::ShardingSpec, 4) => M(Msg::ShardedDim),
            (Msg::ShardedDim, 2) => M(Msg::SimpleShardedDim),
            (Msg::IntIntList, 2) => I64,
            _ => Plain,
        }
    }
}

/// Reads a varint at `*at`, advancing past it.
fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let b = *bytes.get(*at).ok_or("a varint runs past the end of its message")?;
        *at += 1;
        if shift == 63 && b > 1 {
            return Err("a varint overflows 64 bits".into());
        }
        value |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err("a varint is longer than 10 bytes".into())
}

/// The byte range of a length-delimited field's payload starting at `*at`.
fn payload<'a>(bytes: &'a [u8], at: &mut usize) -> Result<&'a [u8], String> {
    let len = varint(bytes, at)?;
    let end = usize::try_from(len).ok().and_then(|l| at.checked_add(l)).filter(|&e| e <= bytes.len());
    let end = end.ok_or("a length-delimited field runs past the end of its message")?;
    let p = &bytes[*at..end];
    *at = end;
    Ok(p)
}

/// Skips the value of a field of wire type `wire` (a group up to its end).
fn skip(bytes: &[u8], at: &mut usize, tag: u32, wire: u8, depth: usize) -> Result<(), String> {
    let fixed = |at: &mut usize, n: usize| {
        *at = at.checked_add(n).filter(|&e| e <= bytes.len()).ok_or("a fixed-width field runs past the end")?;
        Ok::<(), String>(())
    };
    match wire {
        0 => varint(bytes, at).map(|_| ()),
        1 => fixed(at, 8),
        2 => payload(bytes, at).map(|_| ()),
        3 => {
            if depth >= MAX_DEPTH {
                return Err(format!("groups nest deeper than {MAX_DEPTH} levels"));
            }
            loop {
                let (inner, inner_wire) = key(bytes, at)?;
                if inner_wire == 4 {
                    return if inner == tag { Ok(()) } else { Err("a group ends with the wrong tag".into()) };
                }
                skip(bytes, at, inner, inner_wire, depth + 1)?;
            }
        }
        5 => fixed(at, 4),
        _ => Err(format!("invalid wire type {wire}")),
    }
}

fn key(bytes: &[u8], at: &mut usize) -> Result<(u32, u8), String> {
    let k = varint(bytes, at)?;
    let tag = u32::try_from(k >> 3).ok().filter(|&t| t != 0).ok_or("invalid field tag")?;
    Ok((tag, (k & 7) as u8))
}

/// The decoded size of message `msg` (its struct excluded) encoded in `bytes`.
fn cost(msg: Msg, bytes: &[u8], depth: usize) -> Result<u64, String> {
    if depth > MAX_DEPTH {
        return Err(format!("messages nest deeper than {MAX_DEPTH} levels"));
    }
    let mut total = 0u64;
    // Repeated fields already seen in this message: a vector's first
    // allocation holds at least 4 elements (Rust's minimum capacity).
    let mut started = [false; 32];
    let mut first = |tag: u32| match started.get_mut(tag as usize) {
        Some(s) => !std::mem::replace(s, true),
        None => true,
    };
    let mut at = 0;
    while at < bytes.len() {
        let (tag, wire) = key(bytes, &mut at)?;
        let field = msg.field(tag);
        // Elements of a growing vector cost up to twice their size (doubling).
        let grow = |elements: u64, width: u64, first: bool| -> u64 {
            let min = if first { 4 * width + ALLOCATION_OVERHEAD } else { 0 };
            min.max(2 * width * elements)
        };
        total = total.saturating_add(match (field, wire) {
            (Field::Message(sub), 2) => {
                let inner = payload(bytes, &mut at)?;
                let own = grow(1, sub.size(), first(tag)) + ALLOCATION_OVERHEAD;
                own.saturating_add(cost(sub, inner, depth + 1)?)
            }
            (Field::Message(_), _) => return Err(format!("field {tag} of {msg:?} is a message, not wire type {wire}")),
            (Field::Numbers { width, fixed }, 2) => {
                let packed = payload(bytes, &mut at)?;
                let n = if fixed {
                    packed.len() as u64 / width
                } else {
                    packed.iter().filter(|&&b| b < 0x80).count() as u64
                };
                grow(n, width, first(tag))
            }
            (Field::Numbers { width, .. }, _) => {
                skip(bytes, &mut at, tag, wire, depth)?;
                grow(1, width, first(tag))
            }
            (Field::Strings, 2) => {
                let s = payload(bytes, &mut at)?;
                grow(1, size_of::<Vec<u8>>() as u64, first(tag)) + s.len() as u64 + ALLOCATION_OVERHEAD
            }
            (Field::Strings | Field::Plain, _) => {
                let start = at;
                skip(bytes, &mut at, tag, wire, depth)?;
                if wire == 2 {
                    (at - start) as u64 + ALLOCATION_OVERHEAD
                } else {
                    0
                }
            }
        });
    }
    Ok(total)
}

/// An upper bound, in bytes, on the memory that decoding `bytes` as a
/// `ModelProto` allocates; an error for bytes that are not a protobuf.
pub(super) fn decoded_size(bytes: &[u8]) -> Result<u64, String> {
    Ok(Msg::Model.size().saturating_add(cost(Msg::Model, bytes, 0)?))
}

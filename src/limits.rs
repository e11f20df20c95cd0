//! Limits that bound what a model file or a call can make the crate allocate.
//!
//! Every reader checks a file's declared sizes against the bytes actually
//! present before allocating for them, so memory stays proportional to the
//! file. The limits below bound what sizes alone cannot: shapes computed from
//! a few numbers in a header (a kernel of 2⁶⁰, a padding that makes a feature
//! map of 10¹² cells). Exceeding one is a typed error naming the limit, never
//! a panic or an attempt to allocate. `docs/errors-and-limits.md` lists them
//! with the readers' own limits.
//!
//! ```
//! use rsp::limits::{MAX_ELEMENTS_PER_SAMPLE, MAX_SPATIAL};
//! assert!(MAX_SPATIAL >= 4096 && MAX_ELEMENTS_PER_SAMPLE >= 64 * 1024 * 1024);
//! ```

/// Largest kernel size, stride, padding or pooled output size along one axis
/// (also the bound the ONNX reader applies to Conv and pooling attributes), so
/// that shape arithmetic cannot overflow.
pub const MAX_SPATIAL: usize = 1 << 20;

/// Largest number of elements of one sample of the input or of any node's
/// output (2²⁸ ≈ 268 million: 1 GiB per tensor in `f32`, 2 GiB in `f64`).
/// [`Network::check`](crate::Network::check) refuses larger shapes.
pub const MAX_ELEMENTS_PER_SAMPLE: usize = 1 << 28;

/// Largest number of nodes of an ONNX graph.
pub const MAX_NODES: usize = 100_000;

/// Largest number of entries of the `layers` metadata of a safetensors model
/// (the same bound as the ONNX reader's node count).
pub const MAX_LAYERS: usize = MAX_NODES;

/// Largest ONNX file, in bytes: protobuf messages cannot exceed 2 GiB.
pub const MAX_ONNX_FILE_BYTES: u64 = 1 << 31;

/// Largest rank of an ONNX tensor (initializer, constant or graph input).
pub const MAX_RANK: usize = 8;

/// Largest number of elements in one ONNX tensor.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 31;

/// Largest `.npy` header, in bytes (numpy itself refuses headers over 10,000
/// bytes unless told otherwise).
pub const MAX_NPY_HEADER_BYTES: usize = 1 << 16;

/// Deepest nesting of brackets in a `.npy` header (a real header nests 2 deep).
pub const MAX_NPY_HEADER_DEPTH: usize = 16;

/// Largest rank of a `.npy` array (numpy's own limit before version 2 was 32).
pub const MAX_NPY_RANK: usize = 32;

/// Decoding an ONNX file may need at most this many bytes of memory per byte
/// of the file, plus [`ONNX_DECODE_ALLOWANCE`]: the reader bounds what the
/// protobuf decoder will allocate from the wire format before decoding, and
/// refuses files that would expand more (e.g. millions of empty tensors, or
/// long runs of packed varints). Real models decode to about their own size.
pub const ONNX_DECODE_FACTOR: u64 = 4;

/// Memory any ONNX file may need for decoding on top of
/// [`ONNX_DECODE_FACTOR`] times its size (256 MiB: the structs of a graph of
/// 100,000 nodes with a few attributes each, ~2.5 kB per node).
pub const ONNX_DECODE_ALLOWANCE: u64 = 256 << 20;

/// Largest JSON header of a safetensors file (model or scenes), in bytes.
/// Real headers take a few kB per hundred tensors; 16 MiB also holds the
/// `layers` metadata of [`MAX_LAYERS`] layers. Parsing needs at most ~32×
/// the header.
pub const MAX_SAFETENSORS_HEADER_BYTES: usize = 16 << 20;

/// Longest text field an error message shows, in characters (the start and
/// the end are kept): what a message quotes from a file stays readable
/// however large the file makes it.
pub const MAX_MESSAGE_FIELD_CHARS: usize = 480;

/// The share of the process's memory limit that a call may plan to use by
/// default, as a fraction `numerator / denominator` (the rest is left for the
/// program around it, the allocator's slack and the stacks of the threads).
/// See [`crate::budget::default_memory_budget`].
pub const MEMORY_BUDGET_SHARE: (u64, u64) = (3, 4);

/// The memory limit assumed where none can be read (not Linux): 4 GiB.
pub const FALLBACK_MEMORY_LIMIT: u64 = 4 << 30;

/// Memory the GEMM kernels may hold per thread for packing their operands
/// (the `gemm` crate sizes these to the caches: a few MiB), counted once per
/// thread of the pool.
pub const GEMM_WORKSPACE_PER_THREAD: u64 = 32 << 20;

/// The default bound on the work of one sample of one call, summed over its
/// layers, in multiply–add equivalents (see [`crate::layers::LayerCost`]):
/// 5·10¹¹. An RSP attribution of VGG16 at 224×224 is about 1.2·10¹¹, of
/// ResNet-152 about 1.1·10¹¹ (batch size does not count: the bound is per
/// sample, and a batch costs what its input holds).
pub const DEFAULT_MAX_WORK: u64 = 500_000_000_000;

/// The work one step of a pooling window counts, in multiply–adds: a window
/// step is a scalar load and compare (or add), while a multiply–add of the
/// convolutions runs in wide vector registers inside a cache-blocked GEMM.
pub const POOL_STEP_WORK: u64 = 16;

/// The number of steps of a pixel-flipping curve by default (`step` of
/// `eval::faithfulness::FaithfulnessOptions`, feature `eval`): a 64×64 map is
/// flipped 128 pixels at a time.
pub const DEFAULT_FLIP_STEPS: usize = 32;

/// The most perturbed images one forward call of the pixel-flipping curves
/// holds, whatever the step size: memory stays bounded by this many inputs.
pub const FLIP_BATCH: usize = 64;

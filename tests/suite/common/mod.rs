//! Helpers shared by the integration tests.
#![allow(dead_code)]

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::PathBuf;

/// Parity tolerance (relative max-norm) of float64 results against the
/// reference's float64 output: the worst error achieved is 2.4e-15
/// (`vgg16_narrow_224`'s start relevance), so this leaves a margin of 40× while
/// staying far below the method's 1e-9 stabilisers (a change of their size
/// fails wherever it reaches the result).
pub const F64_TOL: f64 = 1e-13;

/// Float64 through ONNX on graphs with batch norm: the exporter stores ε as the
/// float32 nearest 1e-5 (relative difference 2.5e-8), which moves results by up
/// to 9.1e-13 (`resnet_bottleneck_tiny`'s logits); a margin of 10×.
pub const F64_ONNX_BN_TOL: f64 = 1e-11;

/// Float32 results against the reference's float64 output: the worst error
/// achieved is 9.7e-7 (`vgg16_narrow_224`'s start relevance), a margin of 10×.
pub const F32_TOL: f64 = 1e-5;

/// Path of a file under `tests/data/`.
pub fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(path)
}

/// Path of a file under the repository root.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A safetensors file's tensors (as f64) and metadata.
pub struct TensorFile {
    pub tensors: HashMap<String, ArrayD<f64>>,
    pub metadata: HashMap<String, String>,
}

pub fn read_tensors(path: &std::path::Path) -> TensorFile {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut tensors = HashMap::new();
    for (name, t) in st.tensors() {
        let d = t.data();
        let values: Vec<f64> = match t.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::I32 => d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            Dtype::U8 => d.iter().map(|&v| v as f64).collect(),
            other => panic!("unexpected dtype {other:?}"),
        };
        tensors.insert(name, ArrayD::from_shape_vec(IxDyn(t.shape()), values).unwrap());
    }
    TensorFile { tensors, metadata }
}

/// Relative max-norm error `max|a − b| / max|b|`.
pub fn rel_err<A: Copy + Into<f64>>(a: &ArrayD<A>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b.iter()).fold(0.0f64, |m, (&x, &y)| m.max((x.into() - y).abs()));
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// A fresh directory under the system's temporary directory, named after the
/// test, removed when the returned guard drops (also when the test panics).
pub fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("rsp-{name}-")).tempdir().expect("a temporary directory")
}

/// A fixed pseudo-random value in [-1, 1) (splitmix64).
pub fn noise(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

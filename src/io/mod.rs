//! Reading and writing models and tensors.

pub mod atomic;
#[cfg(feature = "npy")]
pub mod npy;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "onnx")]
mod onnx_import;
pub mod safetensors;

use crate::error::Result;
use crate::float::Float;
use crate::network::Network;
use std::path::Path;

impl<T: Float> Network<T> {
    /// Loads a model file, choosing the reader by extension: `.onnx` for
    /// ONNX (feature `onnx`), anything else as safetensors (the `layers`
    /// format, ResNet metadata or a torchvision `arch` name; [`safetensors::load`]).
    ///
    /// ```no_run
    /// let net = rsp::Network::<f64>::load("data/digits_vgg.safetensors").unwrap();
    /// ```
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let is_onnx = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        if is_onnx {
            #[cfg(feature = "onnx")]
            return onnx::load(path);
            #[cfg(not(feature = "onnx"))]
            return Err(crate::RspError::InvalidArgument(format!(
                "{}: reading ONNX models needs the crate's `onnx` feature",
                path.display()
            )));
        }
        safetensors::load(path)
    }
}

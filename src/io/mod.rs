//! Reading model files.

pub mod onnx;

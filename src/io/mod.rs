//! Reading and writing models and tensors.

pub mod npy;
pub mod safetensors;

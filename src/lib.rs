//! Relative Sectional Propagation (RSP) for convolutional networks.
#![warn(missing_docs)]

pub mod error;
pub mod eval;
pub mod image_io;
pub mod render;

pub use error::{Result, RspError};

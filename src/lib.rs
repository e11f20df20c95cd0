//! Relative Sectional Propagation (RSP) for convolutional networks.
#![warn(missing_docs)]

pub mod error;

pub use error::{Result, RspError};

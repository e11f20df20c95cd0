//! Relative Sectional Propagation (RSP) for convolutional networks.
#![warn(missing_docs)]

pub mod error;
pub mod io;

pub use error::{Result, RspError};

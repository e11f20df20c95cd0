//! Relative Sectional Propagation (RSP) for convolutional networks.
//!
//! RSP (Nam, Choi & Lee, AAAI 2021) explains a CNN's decision for one class as
//! a **bi-polar** map over the input: positive relevance for the target class,
//! negative relevance for *hostile* evidence. This crate implements the method
//! exactly as specified in `docs/method.md` (and as the authors' released code
//! computes it), over ndarray tensors, in `f32` or `f64`.
//!
//! ```
//! use rsp::layers::{AdaptiveAvgPool2d, Conv2d, Flatten, Linear, Relu};
//! use rsp::backend::ConvGeometry;
//! use ndarray::{Array2, Array4};
//! let mut net = rsp::Network::<f32>::new();
//! net.push(Conv2d::new("conv", Array4::from_shape_fn((4, 3, 3, 3), |(o, c, u, v)| ((o + c + u * v) % 3) as f32 - 0.9), None, ConvGeometry::square(1, 1)).unwrap());
//! net.push(Relu);
//! net.push(AdaptiveAvgPool2d::new((1, 1)));
//! net.push(Flatten);
//! net.push(Linear::new("fc", Array2::from_shape_fn((2, 4), |(i, j)| (i + j) as f32 - 1.5), None).unwrap());
//! let image = Array4::from_shape_fn((1, 3, 8, 8), |(_, c, i, j)| ((c * 64 + i * 8 + j) % 11) as f32 / 11.0);
//! let (positive, hostile) = rsp::attribute(&net, &image, 1).unwrap();
//! assert_eq!(positive.shape(), image.shape());
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod budget;
pub mod error;
pub mod eval;
mod explain;
mod float;
pub mod image_io;
pub mod io;
pub mod layers;
pub mod limits;
pub mod methods;
pub mod models;
mod network;
pub mod render;
pub mod start;

pub use error::{Result, RspError};
pub use explain::{attribute, ExplainOptions, Explanation, HostileClasses, PhaseTimes, StartRule, Target};
pub use float::{safe_div, Float};
pub use methods::{explain, Attribution, Method};
pub use network::{Network, Node, NodeOp, Source};

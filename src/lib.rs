//! Relative Sectional Propagation (RSP) for convolutional networks.
//!
//! RSP (Nam, Choi & Lee, AAAI 2021) explains a CNN's decision for one class as
//! a **bi-polar** map over the input: positive relevance for the target class,
//! negative relevance for *hostile* evidence, what works against the target.
//! This crate computes it exactly as the authors' released code does (the
//! rules and constants: [`method_page`]), over [`ndarray`] tensors, in `f32`
//! or `f64`, and the baselines it is compared with.
//!
//! # Start here
//!
//! ```no_run
//! use rsp::ndarray::Array4;
//! use rsp::{Method, Network, Target};
//!
//! let net = Network::<f32>::load("data/digits_vgg.safetensors")?;  // or .onnx
//! let image = Array4::<f32>::zeros((1, 3, 64, 64));                   // (N, C, H, W), normalised
//! let (positive, hostile) = rsp::attribute(&net, &image, 7)?;        // evidence for and against class 7
//! let e = net.explain(&image, Target::Predicted, &Method::GradCam)?; // any method, one result type
//! let map = e.heatmap(0);                                            // (H, W) for sample 0
//! # Ok::<(), rsp::RspError>(())
//! ```
//!
//! | to … | call |
//! |---|---|
//! | get RSP's `(positive, hostile)` input relevance | [`attribute`] (= [`Network::attribute`]) |
//! | run any method with its options, get relevance, maps, logits, start relevance | [`Network::explain`] with a [`Method`] → [`Explanation`] |
//! | choose RSP's start (comparative, hostile classes, start layer) | [`Method::Rsp`] with [`RspOptions`] |
//! | say which class | [`Target`]: a class, one per sample, or [`Target::Predicted`] |
//! | load a model (safetensors `layers` format, ResNet metadata, ONNX) | [`Network::load`] ([`io`]) |
//! | load torchvision weights | [`Network::load_torchvision`], or [`models`] to build VGG/ResNet |
//! | build a network by hand, residual blocks | [`Network::push`], [`Network::residual`], [`layers`] |
//! | write your own layer | implement [`layers::Layer`] (`tests/suite/custom_layer.rs` shows one) |
//! | write your own rule or method (LRP-γ, …) | implement [`attribution::Rules`], run [`Network::explain_rules`] (`tests/suite/custom_rule.rs`) |
//! | get logits | [`Network::forward`] |
//! | time the phases (benchmarks) | [`attribution::explain_timed`] |
//! | turn a map into a picture | [`Explanation::heatmap_image`], [`render`] (feature `image`) |
//! | score maps on the digit scenes | [`eval`] (feature `eval`) |
//! | pick the kernels' backend | [`Network::with_backend`], [`backend`] |
//!
//! Every fallible call returns [`Result`] with a typed [`RspError`]; bad input
//! (wrong shapes, a target out of range, NaN/Inf, damaged model files) is an
//! error, never a panic or NaN. Results do not depend on the number of threads.
//!
//! # Features
//!
//! The default feature `cli` turns everything on. With `default-features =
//! false` you get the engine, the layers, the backends, the models and the
//! safetensors loader; add `npy` (`.npy` tensors), `onnx` (ONNX models),
//! `image` (PNG/JPEG input, heatmap figures) or `eval` (the scenes dataset and
//! metrics) as needed. The crate re-exports the [`ndarray`] it is built with:
//! use `rsp::ndarray` to avoid a version mismatch.
//!
//! ```
//! use rsp::layers::{AdaptiveAvgPool2d, Conv2d, Flatten, Linear, Relu};
//! use rsp::backend::ConvGeometry;
//! use rsp::ndarray::{Array2, Array4};
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

pub use ndarray;

pub mod attribution;
pub mod backend;
pub mod budget;
pub mod canonize;
mod error;
#[cfg(feature = "eval")]
pub mod eval;
mod float;
#[cfg(feature = "image")]
pub mod image_io;
pub mod io;
pub mod layers;
pub mod limits;
pub mod models;
pub mod network;
#[cfg(feature = "image")]
pub mod render;
pub mod shard;

pub use attribution::{attribute, Explanation, HostileClasses, Method, RspOptions, StartRule, Target};
pub use error::{Result, RspError};
pub use float::Float;
pub use network::Network;

/// The method page: RSP's rules and constants, in our words (`docs/method.md`).
#[doc = include_str!("../docs/method.md")]
pub mod method_page {}

/// The project's documentation pages (`docs/*.md`), readable here and on docs.rs.
pub mod docs {
    /// The baselines next to RSP: their formulas and how they are called (`docs/methods.md`).
    #[doc = include_str!("../docs/methods.md")]
    pub mod methods {}
    /// RAP as its authors' released code computes it: every rule and constant (`docs/method-rap.md`).
    #[doc = include_str!("../docs/method-rap.md")]
    pub mod method_rap {}
    /// Modules and the data flow of one attribution (`docs/architecture.md`).
    #[doc = include_str!("../docs/architecture.md")]
    pub mod architecture {}
    /// Model files: the `layers` format, ResNet metadata, ONNX (`docs/model-format.md`).
    #[doc = include_str!("../docs/model-format.md")]
    pub mod model_format {}
    /// Every error, the readers' limits, the memory budget and the work bound (`docs/errors-and-limits.md`).
    #[doc = include_str!("../docs/errors-and-limits.md")]
    pub mod errors_and_limits {}
    /// The evaluation on the digit scenes (`docs/evaluation.md`).
    #[doc = include_str!("../docs/evaluation.md")]
    pub mod evaluation {}
    /// Speed and memory, and how they are measured (`docs/performance.md`).
    #[doc = include_str!("../docs/performance.md")]
    pub mod performance {}
    /// Folders of images, resumable runs, shards under Slurm or Kubernetes, merging (`docs/scaling.md`).
    #[doc = include_str!("../docs/scaling.md")]
    pub mod scaling {}
    /// What the tests check and how tightly (`docs/testing.md`).
    #[doc = include_str!("../docs/testing.md")]
    pub mod testing {}
}

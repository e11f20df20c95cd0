//! Evaluation of attribution maps: the quantitative measures of the paper.
//!
//! [`metrics`] holds the per-map measures (pointing game, hostile pointing,
//! top-k IoU, rank correlation) and the PyTorch-compatible bilinear
//! upsampling used to bring feature-level maps to input resolution.

pub mod metrics;

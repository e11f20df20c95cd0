//! Evaluation of attribution maps: the quantitative measures of the paper.
//!
//! [`metrics`] holds the per-map measures (pointing game, hostile pointing,
//! top-k IoU, rank correlation) and the PyTorch-compatible bilinear
//! upsampling used to bring feature-level maps to input resolution.
//! [`dataset`] reads the multi-digit scenes of `data/README.md` and
//! [`benchmark`] scores any [`Method`](crate::Method) on them (and measures
//! model sensitivity); [`faithfulness`] adds pixel flipping, the positive
//! and hostile masses and the random-logit test; see `docs/evaluation.md`.

pub mod benchmark;
pub mod dataset;
pub mod faithfulness;
pub mod metrics;

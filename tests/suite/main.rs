//! The integration tests, one module per subject, compiled as one binary:
//! one test crate links and monomorphises the engine once rather than once
//! per file. Modules that need optional
//! features are compiled when those features are on. The memory-estimate test
//! stays a binary of its own (`tests/memory_estimate.rs`): its counting global
//! allocator must not see other tests allocate.

mod common;

mod backend_suite;
mod backends;
#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "cli")]
mod cli_errors;
#[cfg(feature = "cli")]
mod cli_reader_errors;
#[cfg(feature = "cli")]
mod contrastive;
#[cfg(feature = "cuda")]
mod cuda;
mod custom_layer;
mod custom_rule;
mod determinism;
mod determinism_models;
mod device_flow;
mod errors;
#[cfg(feature = "eval")]
mod evaluation;
#[cfg(feature = "eval")]
mod faithfulness;
#[cfg(all(feature = "npy", feature = "onnx"))]
mod fuzz_readers;
mod golden;
#[cfg(feature = "cli")]
mod limits;
mod methods;
mod module_graph;
mod no_panic;
#[cfg(all(feature = "onnx", feature = "npy"))]
mod onnx_ops;
#[cfg(feature = "onnx")]
mod onnx_parity;
#[cfg(feature = "onnx")]
mod onnx_parse;
mod properties;
#[cfg(feature = "cli")]
mod rap;
#[cfg(all(feature = "npy", feature = "onnx", feature = "image", feature = "eval"))]
mod reader_errors;
mod resnet;
#[cfg(feature = "cli")]
mod scaling;
mod sparsity;
mod zennit;

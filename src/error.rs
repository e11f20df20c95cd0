//! The crate's one error type.

use thiserror::Error;

/// Everything that can go wrong in `rsp`, with messages that say what was
/// expected and what was found.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RspError {
    /// A tensor does not have the shape a layer or call expects.
    #[error("shape mismatch in {context}: expected {expected}, found {found:?}")]
    Shape {
        /// Where the mismatch was found (layer, argument or tensor name).
        context: String,
        /// The expected shape, in words.
        expected: String,
        /// The shape that was found.
        found: Vec<usize>,
    },
    /// A target class index is not a class of the network.
    #[error("target class {target} is out of range: the network has {classes} classes")]
    TargetOutOfRange {
        /// The requested class.
        target: usize,
        /// Number of classes (logits) of the network.
        classes: usize,
    },
    /// A tensor contains NaN or infinite values.
    #[error("{tensor} contains a non-finite value (NaN or infinity) at flat index {index}")]
    NonFinite {
        /// Name of the tensor.
        tensor: String,
        /// First offending element (row-major).
        index: usize,
    },
    /// An argument is invalid (empty batch, wrong number of targets, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The network description is inconsistent or unsupported.
    #[error("invalid model: {0}")]
    Model(String),
    /// A weight tensor the model needs is not in the file.
    #[error("missing weight tensor `{0}`")]
    MissingWeight(String),
    /// A model or data file is malformed.
    #[error("malformed file {path}: {reason}")]
    Format {
        /// The file (or `<memory>`).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A call would need more memory than its budget (estimated before it
    /// runs; see [`crate::budget`]).
    #[error(
        "memory budget exceeded: {what} needs an estimated {} ({estimate} bytes), more than the budget of {} ({budget} bytes); use a smaller input or batch, or raise the budget (--max-memory, Network::set_memory_budget)",
        crate::budget::format_bytes(*estimate),
        crate::budget::format_bytes(*budget)
    )]
    MemoryBudget {
        /// The estimated peak, in bytes.
        estimate: u64,
        /// The budget, in bytes.
        budget: u64,
        /// The call and what the estimate is made of.
        what: String,
    },
    /// A call would do more work per sample than its bound (estimated before
    /// it runs; see [`crate::budget`]).
    #[error(
        "work bound exceeded: {what} needs an estimated {estimate:.3e} operations per sample, more than the bound of {bound:.3e}; use a smaller input or model, or raise the bound (--max-work, Network::set_work_bound)"
    )]
    WorkBound {
        /// The estimated work per sample, in multiply–add equivalents.
        estimate: u64,
        /// The bound.
        bound: u64,
        /// The call and its most expensive node.
        what: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for `Result<T, RspError>`.
pub type Result<T, E = RspError> = std::result::Result<T, E>;

impl RspError {
    pub(crate) fn shape(context: impl Into<String>, expected: impl Into<String>, found: &[usize]) -> Self {
        RspError::Shape { context: context.into(), expected: expected.into(), found: found.to_vec() }
    }
    pub(crate) fn model(msg: impl Into<String>) -> Self {
        RspError::Model(msg.into())
    }
    pub(crate) fn format(path: impl Into<String>, reason: impl Into<String>) -> Self {
        RspError::Format { path: path.into(), reason: reason.into() }
    }
}

/// `Err(NonFinite)` naming `tensor` and the first NaN or infinite value of `values`.
pub(crate) fn check_finite<'a, T: crate::float::Float>(
    tensor: impl FnOnce() -> String,
    values: impl IntoIterator<Item = &'a T>,
) -> Result<()> {
    match values.into_iter().position(|v| !v.is_finite()) {
        Some(index) => Err(RspError::NonFinite { tensor: tensor(), index }),
        None => Ok(()),
    }
}

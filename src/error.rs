//! The crate's one error type.

use std::borrow::Cow;
use thiserror::Error;

/// Everything that can go wrong in `rsp`, with messages that say what was
/// expected and what was found.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RspError {
    /// A tensor does not have the shape a layer or call expects.
    #[error("shape mismatch in {}: expected {}, found {}", capped(.context), capped(.expected), shape_text(.found))]
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
    #[error("{} contains a non-finite value (NaN or infinity) at flat index {index}", capped(.tensor))]
    NonFinite {
        /// Name of the tensor.
        tensor: String,
        /// First offending element (row-major).
        index: usize,
    },
    /// An argument is invalid (empty batch, wrong number of targets, ...).
    #[error("invalid argument: {}", capped(.0))]
    InvalidArgument(String),
    /// The network description is inconsistent or unsupported.
    #[error("invalid model: {}", capped(.0))]
    Model(String),
    /// A weight tensor the model needs is not in the file.
    #[error("missing weight tensor `{}`", capped(.0))]
    MissingWeight(String),
    /// A model or data file is malformed.
    #[error("malformed file {}: {}", capped(.path), capped(.reason))]
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
        format_bytes(*estimate),
        format_bytes(*budget)
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
    /// A backend failed to run a kernel: a device out of memory, a driver or
    /// kernel error (the CPU backends never fail; a device backend reports
    /// its failures here).
    #[error("the {} backend failed: {}", capped(.backend), capped(.reason))]
    Backend {
        /// The backend's name ([`Backend::name`](crate::backend::Backend::name)).
        backend: String,
        /// What failed.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot access {}: {source}", capped(.path))]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Every text field of a message is cut to
/// [`MAX_MESSAGE_FIELD_CHARS`](crate::limits::MAX_MESSAGE_FIELD_CHARS)
/// characters here, in one place, keeping its start and its end: a message
/// may quote a file's header or a JSON entry, which a hostile file makes
/// megabytes long.
fn capped(text: &str) -> Cow<'_, str> {
    let max = crate::limits::MAX_MESSAGE_FIELD_CHARS;
    let count = text.chars().count();
    if count <= max {
        return Cow::Borrowed(text);
    }
    let (head, tail) = (max * 3 / 4, max / 4);
    let head_end = text.char_indices().nth(head).map_or(text.len(), |(i, _)| i);
    let tail_start = text.char_indices().nth(count - tail).map_or(text.len(), |(i, _)| i);
    Cow::Owned(format!(
        "{} … [{} characters left out] … {}",
        &text[..head_end],
        count - head - tail,
        &text[tail_start..]
    ))
}

/// A shape for a message: up to 16 dimensions, then the rank.
fn shape_text(shape: &[usize]) -> String {
    if shape.len() <= 16 {
        format!("{shape:?}")
    } else {
        format!("{:?} … (rank {})", &shape[..8], shape.len())
    }
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
    /// The message without the kind's own prefix (`invalid model: `), for
    /// quoting inside another error of the same kind.
    pub(crate) fn detail(&self) -> String {
        match self {
            RspError::Model(m) | RspError::InvalidArgument(m) => capped(m).into_owned(),
            other => other.to_string(),
        }
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

/// A byte count for messages: `512 B`, `3.2 MiB`, `12.5 GiB`.
pub(crate) fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

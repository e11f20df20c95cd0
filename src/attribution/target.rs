//! [`Target`]: the class (or classes) to explain.

use crate::error::{Result, RspError};
use crate::float::Float;
use ndarray::ArrayView1;

/// The class to explain: one for the whole batch, one per sample, or the
/// class the model predicts for each sample.
///
/// Anything that names classes converts into it, so a call takes `3`,
/// `[3, 5]`, `&[3, 5][..]`, `vec![3, 5]` or [`Target::Predicted`]:
///
/// ```
/// use rsp::Target;
/// assert_eq!(Target::from(3), Target::Single(3));
/// assert_eq!(Target::from([1, 2]), Target::PerSample(vec![1, 2]));
/// assert_eq!(Target::from(&[1, 2][..]), Target::PerSample(vec![1, 2]));
/// assert_eq!(Target::from(vec![1, 2]), Target::PerSample(vec![1, 2]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The same class for every sample.
    Single(usize),
    /// One class per sample.
    PerSample(Vec<usize>),
    /// The class with the highest logit of each sample (ties: the lower index).
    Predicted,
}

impl From<usize> for Target {
    fn from(t: usize) -> Self {
        Target::Single(t)
    }
}

impl From<Vec<usize>> for Target {
    fn from(t: Vec<usize>) -> Self {
        Target::PerSample(t)
    }
}

impl From<&Vec<usize>> for Target {
    fn from(t: &Vec<usize>) -> Self {
        Target::PerSample(t.clone())
    }
}

impl From<&[usize]> for Target {
    fn from(t: &[usize]) -> Self {
        Target::PerSample(t.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Target {
    fn from(t: [usize; N]) -> Self {
        Target::PerSample(t.to_vec())
    }
}

impl<const N: usize> From<&[usize; N]> for Target {
    fn from(t: &[usize; N]) -> Self {
        Target::PerSample(t.to_vec())
    }
}

impl Target {
    /// Checks the target against a batch of `n` samples and `classes` logits
    /// before any work is done: one class per sample, each in range.
    pub(crate) fn check(&self, n: usize, classes: usize) -> Result<()> {
        let listed: &[usize] = match self {
            Target::Single(t) => std::slice::from_ref(t),
            Target::PerSample(v) if v.len() == n => v,
            Target::PerSample(v) => {
                return Err(RspError::InvalidArgument(format!("{} targets given for a batch of {n} samples", v.len())))
            }
            Target::Predicted => &[],
        };
        match listed.iter().find(|&&t| t >= classes) {
            Some(&target) => Err(RspError::TargetOutOfRange { target, classes }),
            None => Ok(()),
        }
    }

    /// The class of sample `n` given its logits (checked by [`Target::check`]).
    pub(crate) fn class_of<T: Float>(&self, n: usize, logits: ArrayView1<T>) -> usize {
        match self {
            Target::Single(t) => *t,
            Target::PerSample(v) => v[n],
            Target::Predicted => {
                // First maximum: ties resolve to the lower index.
                let mut best = 0;
                for (c, &v) in logits.iter().enumerate() {
                    if v > logits[best] {
                        best = c;
                    }
                }
                best
            }
        }
    }
}

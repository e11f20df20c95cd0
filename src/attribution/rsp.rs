//! What RSP's start needs from the logits: the hostile classes of a sample
//! (the comparative start). RSP itself runs on whole batches (`batch.rs`:
//! the forward pass, the start relevance from `backend/start.rs`, then the
//! layers' RSP rules back to the input); the per-sample methods share the
//! logits and finiteness checks below.

use super::HostileClasses;
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::network::{Activations, Network};
use ndarray::{ArrayD, ArrayView1};

/// The hostile classes of one sample with `logits` explained for `target`.
pub(crate) fn hostile_set<T: Float>(rule: &HostileClasses, logits: ArrayView1<T>, target: usize) -> Result<Vec<usize>> {
    let classes = logits.len();
    let others = (0..classes).filter(|&c| c != target);
    Ok(match rule {
        HostileClasses::PredictedPresent => others.filter(|&c| logits[c] > T::zero()).collect(),
        HostileClasses::TopK(k) => {
            let mut ranked: Vec<usize> = others.collect();
            // Stable sort: ties keep the lower index first.
            ranked.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap_or(std::cmp::Ordering::Equal));
            ranked.truncate(*k);
            ranked
        }
        HostileClasses::Explicit(list) => {
            let mut out = Vec::new();
            for &c in list {
                if c >= classes {
                    return Err(RspError::TargetOutOfRange { target: c, classes });
                }
                if c != target && !out.contains(&c) {
                    out.push(c);
                }
            }
            out
        }
    })
}

impl<T: Float> Network<T> {
    /// The logits of one sample's activations, refused if the forward pass overflowed.
    pub(crate) fn logits_of<'s>(&self, acts: &'s Activations<'_, T>) -> Result<ArrayView1<'s, T>> {
        let logits = acts.outputs.last().expect("non-empty");
        // Finite inputs and weights can still overflow (values near the float's range).
        ensure_finite(logits, "logits (the forward pass overflowed the float range)")?;
        Ok(logits.view().into_dimensionality().expect("checked logits vector"))
    }
}

/// Turns a non-finite result into an error instead of returning NaN.
pub(crate) fn ensure_finite<T: Float>(a: &ArrayD<T>, what: &str) -> Result<()> {
    match a.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(RspError::NonFinite { tensor: what.to_string(), index }),
        None => Ok(()),
    }
}

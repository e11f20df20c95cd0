//! What RSP's comparative start needs from the logits: the hostile classes
//! of a sample. RSP itself runs on whole batches (`batch.rs`: the forward
//! pass, the start relevance from `backend/start.rs`, then the layers' RSP
//! rules back to the input).

use super::HostileClasses;
use crate::error::{Result, RspError};
use crate::float::Float;
use ndarray::ArrayView1;

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

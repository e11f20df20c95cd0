//! [`explain_timed`]: RSP run phase by phase, each phase timed (for the
//! benchmarks; the result is the same as [`Network::explain`]'s, bit for bit).

use super::{assemble, Explanation, Method, RspOptions, Target};
use crate::error::Result;
use crate::float::Float;
use crate::network::Network;
use ndarray::{ArrayView4, AsArray, Ix4};
use std::time::Duration;

/// Wall-clock time of the phases of one batch attribution, from [`explain_timed`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseTimes {
    /// The forward pass of the batch (keeping every node's output).
    pub forward: Duration,
    /// The gradients at the start layer and the start relevance.
    pub start: Duration,
    /// Relevance propagation from the start layer to the input.
    pub propagation: Duration,
}

impl PhaseTimes {
    /// Forward + start + propagation.
    pub fn total(&self) -> Duration {
        self.forward + self.start + self.propagation
    }
}

/// RSP ([`Method::Rsp`] with `options`) run in three batch-wide phases
/// (forward pass, start relevance, propagation), each timed. The result is
/// the same as [`Network::explain`]'s (bit for bit); only the scheduling
/// differs: every sample finishes a phase before any starts the next, so all
/// activations of the batch are held at once.
///
/// ```
/// # use rsp::layers::{Flatten, Layer, Linear, Relu, AdaptiveAvgPool2d};
/// let net = rsp::Network::<f64>::sequential(vec![
///     Box::new(Relu) as Box<dyn Layer<f64>>, Box::new(AdaptiveAvgPool2d::new((1, 1))), Box::new(Flatten),
///     Box::new(Linear::new("fc", rsp::ndarray::arr2(&[[1.0, 2.0]]), None).unwrap()),
/// ]);
/// let x = rsp::ndarray::Array4::from_elem((1, 2, 3, 3), 1.0);
/// let (e, times) = rsp::attribution::explain_timed(&net, &x, 0, &Default::default()).unwrap();
/// assert_eq!(e.relevance.unwrap().shape(), &[1, 2, 3, 3]);
/// assert!(times.total() >= times.propagation);
/// ```
pub fn explain_timed<'a, T: Float>(
    net: &Network<T>,
    input: impl AsArray<'a, T, Ix4>,
    target: impl Into<Target>,
    options: &RspOptions,
) -> Result<(Explanation<T>, PhaseTimes)> {
    let input: ArrayView4<'a, T> = input.into();
    let target = target.into();
    let method = Method::Rsp(options.clone());
    let plan = net.plan(&input, &target, &method, true)?;
    // The whole batch at once on the backend (engine v2).
    let mut times = PhaseTimes::default();
    let clock = std::time::Instant::now();
    let x = net.backend().upload(input.into_dyn())?;
    times.forward += clock.elapsed(); // the upload counts with the forward pass
    let samples = net.explain_batch(x, 0, &target, &method, None, plan, Some(&mut times))?;
    Ok((assemble(&method, samples, plan), times))
}

//! One attribution call: [`Network::explain`] returns an [`Explanation`];
//! [`Network::attribute`] (and [`crate::attribute`]) is the short form
//! returning `(positive, hostile)`.

use crate::error::{Result, RspError};
use crate::float::Float;
use crate::network::{Activations, Network, Source};
use crate::start::{comparative_start, single_class_start};
use ndarray::{Array2, Array3, Array4, ArrayD, ArrayView1, ArrayView4, Axis, Ix3, IxDyn};
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// The class (or classes) to explain: one for the whole batch or one per sample.
///
/// ```
/// use rsp::Target;
/// assert_eq!(Target::from(3), Target::Single(3));
/// assert_eq!(Target::from(vec![1, 2]), Target::PerSample(vec![1, 2]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The same class for every sample.
    Single(usize),
    /// One class per sample.
    PerSample(Vec<usize>),
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

impl From<&[usize]> for Target {
    fn from(t: &[usize]) -> Self {
        Target::PerSample(t.to_vec())
    }
}

impl Target {
    /// The class of each of `n` samples, each checked against `classes`.
    pub fn resolve(&self, n: usize, classes: usize) -> Result<Vec<usize>> {
        let targets = match self {
            Target::Single(t) => vec![*t; n],
            Target::PerSample(v) if v.len() == n => v.clone(),
            Target::PerSample(v) => {
                return Err(RspError::InvalidArgument(format!("{} targets given for a batch of {n} samples", v.len())))
            }
        };
        if let Some(&target) = targets.iter().find(|&&t| t >= classes) {
            return Err(RspError::TargetOutOfRange { target, classes });
        }
        Ok(targets)
    }
}

/// Which classes count as hostile in the comparative start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HostileClasses {
    /// The other classes whose logit is > 0 (predicted present by a multi-label model).
    #[default]
    PredictedPresent,
    /// The `k` other classes with the highest logits (ties: lower index first).
    TopK(usize),
    /// These classes (the target itself is left out if listed).
    Explicit(Vec<usize>),
}

/// How the relevance at the start layer is made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StartRule {
    /// Grad-CAM-like start for the target alone (the released default).
    #[default]
    SingleClass,
    /// The comparative start against hostile classes (the paper's hostile
    /// factor); falls back to the single-class start when there are none.
    Comparative(HostileClasses),
}

/// Options of [`Network::explain`].
///
/// ```
/// use rsp::{ExplainOptions, HostileClasses, StartRule};
/// let opts = ExplainOptions { start: StartRule::Comparative(HostileClasses::TopK(2)), ..Default::default() };
/// assert_eq!(opts.start_layer, None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExplainOptions {
    /// The start relevance (single-class by default).
    pub start: StartRule,
    /// The start node; `None` uses the model's, else the automatic choice.
    pub start_layer: Option<usize>,
    /// Keep the relevance each node's rule returned (memory: one tensor per node and sample).
    pub keep_layer_relevances: bool,
}

/// The result of one attribution: the input relevance and what produced it.
#[derive(Clone, Debug)]
pub struct Explanation<T: Float> {
    /// The input relevance `(N, C, H, W)`: positive for the target, negative hostile.
    pub relevance: Array4<T>,
    /// The relevance at the start layer's output `(N, …)`.
    pub start_relevance: ArrayD<T>,
    /// The logits `(N, classes)`.
    pub logits: Array2<T>,
    /// The class explained for each sample.
    pub targets: Vec<usize>,
    /// The hostile classes used for each sample (empty for the single-class start).
    pub hostile_classes: Vec<Vec<usize>>,
    /// The start node.
    pub start_layer: usize,
    /// Per sample, per node: the relevance the node's rule returned at its
    /// first input (only with [`ExplainOptions::keep_layer_relevances`]).
    pub layer_relevances: Vec<Vec<Option<ArrayD<T>>>>,
}

impl<T: Float> Explanation<T> {
    /// `max(R, 0)`: the evidence for the target.
    pub fn positive(&self) -> Array4<T> {
        self.relevance.mapv(|v| v.max(T::zero()))
    }

    /// `min(R, 0)`: the hostile evidence (≤ 0).
    pub fn hostile(&self) -> Array4<T> {
        self.relevance.mapv(|v| v.min(T::zero()))
    }

    /// The channel sum `(N, H, W)`, the usual picture.
    pub fn heatmap(&self) -> Array3<T> {
        self.relevance.sum_axis(Axis(1))
    }
}

/// What one sample's attribution produced.
struct SampleResult<T: Float> {
    relevance: ArrayD<T>,
    start_relevance: ArrayD<T>,
    logits: ArrayD<T>,
    hostile: Vec<usize>,
    trace: Vec<Option<ArrayD<T>>>,
}

/// The hostile classes of one sample.
fn hostile_set<T: Float>(rule: &HostileClasses, logits: ArrayView1<T>, target: usize) -> Result<Vec<usize>> {
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
    /// Explains the decision for `target` on a batch `(N, C, H, W)`.
    ///
    /// ```
    /// use rsp::layers::{Conv2d, Flatten, Linear, MaxPool2d, Relu};
    /// use rsp::backend::ConvGeometry;
    /// use rsp::{ExplainOptions, Network};
    /// use ndarray::{Array1, Array2, Array4};
    /// let mut net = Network::<f64>::new();
    /// net.push(Conv2d::new("c0", Array4::from_shape_fn((4, 3, 3, 3), |(o, c, u, v)| ((o + 2 * c + u) as f64 - 3.5 + v as f64) * 0.1), None, ConvGeometry::square(1, 1)).unwrap());
    /// net.push(Relu);
    /// net.push(Conv2d::new("c1", Array4::from_shape_fn((4, 4, 3, 3), |(o, c, u, v)| ((o * c + u) as f64 - 2.0 + v as f64) * 0.1), None, ConvGeometry::square(1, 1)).unwrap());
    /// net.push(Relu);
    /// net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
    /// net.push(Flatten);
    /// net.push(Linear::new("fc", Array2::from_shape_fn((3, 16), |(i, j)| ((i * 7 + j) % 5) as f64 - 2.0), Some(Array1::zeros(3))).unwrap());
    /// let x = Array4::from_shape_fn((1, 3, 4, 4), |(_, c, i, j)| ((c + i * 4 + j) % 7) as f64 / 7.0);
    /// let e = net.explain(x.view(), 1, &ExplainOptions::default()).unwrap();
    /// assert_eq!(e.start_layer, 3); // the ReLU before the last pooling
    /// assert_eq!(e.relevance.shape(), x.shape());
    /// // Relevance is conserved from the start layer to the input.
    /// assert!((e.relevance.sum() - e.start_relevance.sum()).abs() < 1e-9);
    /// ```
    pub fn explain(
        &self,
        input: ArrayView4<T>,
        target: impl Into<Target>,
        options: &ExplainOptions,
    ) -> Result<Explanation<T>> {
        let (targets, start) = self.prepare_explain(&input, target.into(), options, false)?;
        let samples: Vec<SampleResult<T>> = crate::network::map_samples(targets.len(), |i| {
            self.explain_sample(input.index_axis(Axis(0), i).into_dyn(), targets[i], start, options)
        })?;
        Ok(assemble(samples, targets, start))
    }

    /// Validates a batch and the options of an attribution: the class of each
    /// sample and the start node.
    fn prepare_explain(
        &self,
        input: &ArrayView4<T>,
        target: Target,
        options: &ExplainOptions,
        all_at_once: bool,
    ) -> Result<(Vec<usize>, usize)> {
        let shapes = self.validate_input(input)?;
        let pass = match options.keep_layer_relevances {
            true => crate::budget::Pass::AttributionWithTrace,
            false => crate::budget::Pass::Attribution,
        };
        self.preflight(&shapes, input.shape(), pass, all_at_once)?;
        let classes = shapes.last().expect("checked")[0];
        let targets = target.resolve(input.shape()[0], classes)?;
        let start = self.resolve_start(options.start_layer)?;
        if shapes[start].len() != 3 {
            return Err(RspError::InvalidArgument(format!(
                "start layer {start} outputs shape {:?}; the start relevance needs a C×H×W map",
                shapes[start]
            )));
        }
        Ok((targets, start))
    }

    /// The short form: `(positive, hostile)` input relevance for `target`, with
    /// the single-class start; `positive + hostile` is the relevance.
    ///
    /// ```
    /// # use rsp::layers::{Conv2d, Flatten, Linear, Relu, AdaptiveAvgPool2d};
    /// # use rsp::backend::ConvGeometry;
    /// # use ndarray::{Array1, Array2, Array4};
    /// let mut net = rsp::Network::<f32>::new();
    /// net.push(Conv2d::new("c", Array4::from_shape_fn((2, 1, 3, 3), |(o, _, u, v)| if o == 0 { (u + v) as f32 } else { 1.0 - u as f32 }), None, ConvGeometry::square(1, 1)).unwrap());
    /// net.push(Relu);
    /// net.push(AdaptiveAvgPool2d::new((1, 1)));
    /// net.push(Flatten);
    /// net.push(Linear::new("fc", ndarray::arr2(&[[1.0, -1.0], [-1.0, 1.0]]), Some(Array1::zeros(2))).unwrap());
    /// let x = Array4::from_shape_fn((1, 1, 5, 5), |(_, _, i, j)| (i * 5 + j) as f32 / 25.0);
    /// let (pos, hostile) = net.attribute(x.view(), 0).unwrap();
    /// assert!(pos.iter().all(|&v| v >= 0.0) && hostile.iter().all(|&v| v <= 0.0));
    /// ```
    pub fn attribute(&self, input: ArrayView4<T>, target: impl Into<Target>) -> Result<(Array4<T>, Array4<T>)> {
        let e = self.explain(input, target, &ExplainOptions::default())?;
        Ok((e.positive(), e.hostile()))
    }

    fn explain_sample(
        &self,
        x: ndarray::ArrayViewD<T>,
        target: usize,
        start: usize,
        options: &ExplainOptions,
    ) -> Result<SampleResult<T>> {
        let acts = self.forward_sample(x)?;
        let (r_start, hostile) = self.start_of(&acts, target, start, options)?;
        self.propagate(&acts, start, r_start, hostile, options)
    }

    /// The RSP walk of one sample from its start relevance, as a [`SampleResult`].
    fn propagate(
        &self,
        acts: &Activations<'_, T>,
        start: usize,
        r_start: ArrayD<T>,
        hostile: Vec<usize>,
        options: &ExplainOptions,
    ) -> Result<SampleResult<T>> {
        let (relevance, trace) = self.rsp_from(acts, start, r_start.clone(), options.keep_layer_relevances)?;
        ensure_finite(&relevance, "input relevance (an intermediate value overflowed the float range)")?;
        let logits = acts.outputs.last().expect("non-empty").clone();
        Ok(SampleResult { relevance, start_relevance: r_start, logits, hostile, trace })
    }

    /// The start relevance of one sample (and its hostile classes) from its activations.
    fn start_of(
        &self,
        acts: &Activations<'_, T>,
        target: usize,
        start: usize,
        options: &ExplainOptions,
    ) -> Result<(ArrayD<T>, Vec<usize>)> {
        let logits = acts.outputs.last().expect("non-empty");
        // Finite inputs and weights can still overflow (values near the float's range).
        ensure_finite(logits, "logits (the forward pass overflowed the float range)")?;
        let logits_1d = logits.view().into_dimensionality().expect("checked logits vector");
        let grad_of = |class: usize| -> Result<Array3<T>> {
            let mut seed = ArrayD::zeros(IxDyn(&[logits.len()]));
            seed[[class]] = T::one();
            let g = self.gradient_to(acts, seed, Source::Node(start))?;
            Ok(g.into_dimensionality::<Ix3>().expect("checked C×H×W"))
        };
        let a = acts.outputs[start].view().into_dimensionality::<Ix3>().expect("checked C×H×W");
        let (r_start, hostile) = match &options.start {
            StartRule::SingleClass => (single_class_start(a, grad_of(target)?.view()), Vec::new()),
            StartRule::Comparative(rule) => {
                let hostile = hostile_set(rule, logits_1d, target)?;
                let grads = hostile.iter().map(|&h| grad_of(h)).collect::<Result<Vec<_>>>()?;
                let views: Vec<_> = grads.iter().map(|g| g.view()).collect();
                (comparative_start(a, grad_of(target)?.view(), &views)?, hostile)
            }
        };
        let r_start = r_start.into_dyn();
        ensure_finite(&r_start, "start relevance (the gradient overflowed the float range)")?;
        Ok((r_start, hostile))
    }
}

/// Turns a non-finite result into an error instead of returning NaN.
fn ensure_finite<T: Float>(a: &ArrayD<T>, what: &str) -> Result<()> {
    match a.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(RspError::NonFinite { tensor: what.to_string(), index }),
        None => Ok(()),
    }
}

/// Stacks the per-sample results into one [`Explanation`].
fn assemble<T: Float>(samples: Vec<SampleResult<T>>, targets: Vec<usize>, start: usize) -> Explanation<T> {
    let stack = |get: &dyn Fn(&SampleResult<T>) -> &ArrayD<T>| -> ArrayD<T> {
        let views: Vec<_> = samples.iter().map(|s| get(s).view().insert_axis(Axis(0))).collect();
        ndarray::concatenate(Axis(0), &views).expect("samples have one shape")
    };
    let relevance = stack(&|s| &s.relevance).into_dimensionality().expect("N×C×H×W");
    let logits = stack(&|s| &s.logits).into_dimensionality().expect("N×classes");
    let start_relevance = stack(&|s| &s.start_relevance);
    let hostile_classes = samples.iter().map(|s| s.hostile.clone()).collect();
    let layer_relevances = samples.into_iter().map(|s| s.trace).collect();
    Explanation { relevance, start_relevance, logits, targets, hostile_classes, start_layer: start, layer_relevances }
}

// ---- Timing (for benchmarks): the same attribution, phase by phase. ----

/// Wall-clock time of the phases of one batch attribution, from
/// [`Network::explain_timed`].
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

impl<T: Float> Network<T> {
    /// [`Network::explain`] run in three batch-wide phases (forward pass,
    /// start relevance, propagation), each timed. The result is the same
    /// (bit for bit); only the scheduling differs: every sample finishes a
    /// phase before any starts the next, so all activations of the batch are
    /// held at once.
    ///
    /// ```
    /// # use rsp::layers::{Flatten, Layer, Linear, Relu, AdaptiveAvgPool2d};
    /// let net = rsp::Network::<f64>::sequential(vec![
    ///     Box::new(Relu) as Box<dyn Layer<f64>>, Box::new(AdaptiveAvgPool2d::new((1, 1))), Box::new(Flatten),
    ///     Box::new(Linear::new("fc", ndarray::arr2(&[[1.0, 2.0]]), None).unwrap()),
    /// ]);
    /// let x = ndarray::Array4::from_elem((1, 2, 3, 3), 1.0);
    /// let (e, times) = net.explain_timed(x.view(), 0, &Default::default()).unwrap();
    /// assert_eq!(e.relevance.shape(), &[1, 2, 3, 3]);
    /// assert!(times.total() >= times.propagation);
    /// ```
    pub fn explain_timed(
        &self,
        input: ArrayView4<T>,
        target: impl Into<Target>,
        options: &ExplainOptions,
    ) -> Result<(Explanation<T>, PhaseTimes)> {
        let (targets, start) = self.prepare_explain(&input, target.into(), options, true)?;
        let clock = Instant::now();
        let acts: Vec<_> = input
            .axis_iter(Axis(0))
            .into_par_iter()
            .map(|x| self.forward_sample(x.into_dyn()))
            .collect::<Result<_>>()?;
        let forward = clock.elapsed();
        let clock = Instant::now();
        let starts: Vec<_> = acts
            .par_iter()
            .zip(targets.par_iter())
            .map(|(a, &t)| self.start_of(a, t, start, options))
            .collect::<Result<_>>()?;
        let start_time = clock.elapsed();
        let clock = Instant::now();
        let samples: Vec<SampleResult<T>> = acts
            .par_iter()
            .zip(starts.into_par_iter())
            .map(|(a, (r_start, hostile))| self.propagate(a, start, r_start, hostile, options))
            .collect::<Result<_>>()?;
        let propagation = clock.elapsed();
        Ok((assemble(samples, targets, start), PhaseTimes { forward, start: start_time, propagation }))
    }
}

/// `(positive, hostile)` input relevance of `net` for `target`: the same as
/// [`Network::attribute`], as a free function for tests and scripts.
///
/// ```
/// # use rsp::layers::{Flatten, Layer, Linear, Relu, AdaptiveAvgPool2d};
/// # use ndarray::Array4;
/// let net = rsp::Network::<f64>::sequential(vec![
///     Box::new(Relu) as Box<dyn Layer<f64>>, Box::new(AdaptiveAvgPool2d::new((1, 1))), Box::new(Flatten),
///     Box::new(Linear::new("fc", ndarray::arr2(&[[1.0, 2.0]]), None).unwrap()),
/// ]);
/// let x = Array4::from_elem((1, 2, 3, 3), 1.0);
/// let (pos, hostile) = rsp::attribute(&net, &x, 0).unwrap();
/// assert_eq!(pos.shape(), &[1, 2, 3, 3]);
/// assert!(hostile.iter().all(|&v| v == 0.0));
/// ```
pub fn attribute<T: Float>(
    net: &Network<T>,
    input: &Array4<T>,
    target: impl Into<Target>,
) -> Result<(Array4<T>, Array4<T>)> {
    net.attribute(input.view(), target)
}

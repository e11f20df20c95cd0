//! Attribution: one call, [`Network::explain`], for every [`Method`], returning
//! an [`Explanation`]; and the short form [`crate::attribute`] (=
//! [`Network::attribute`]) returning RSP's `(positive, hostile)`.
//!
//! | method | input relevance / map | file |
//! |---|---|---|
//! | [`Method::Rsp`] | RSP, single-class or comparative start ([`RspOptions`]) | `batch.rs`, `rsp.rs` (hostile classes), `backend/start.rs`, the layers' `rsp_backward` |
//! | [`Method::GradCam`] | `ReLU(Σ_c A ⊙ α)` at the start layer, upsampled bilinearly (no input relevance) | `batch.rs` |
//! | [`Method::Gradient`] | `∂y_t/∂x` | `batch.rs`, the layers' `gradient` |
//! | [`Method::GradientXInput`] | `x ⊙ ∂y_t/∂x` | `batch.rs` |
//! | [`Method::LrpEpsilon`] | LRP-ε from `y_t` at the output (z^B on the input layer) | `lrp.rs` ([`Lrp`]) |
//! | [`Method::LrpAlpha1Beta0`] | LRP-α1β0 from `y_t` at the output (z^B on the input layer) | `lrp.rs` ([`Lrp`]) |
//! | [`Method::Rap`] | RAP as released, from the one-hot at the output (`docs/method-rap.md`) | `rap.rs` ([`Rap`]) |
//! | [`Method::Clrp`] | LRP-α1β0 of the target minus that of the other classes, rescaled | `contrastive.rs` |
//! | [`Method::Sglrp`] | LRP-α1β0 from the softmax gradient of `p_t` at the output ([`Sglrp`]) | `contrastive.rs` |
//! | [`Method::EpsilonPlusFlat`], [`Method::EpsilonGammaBox`] | zennit's LRP composites from the one-hot target, batch norm folded first | `zennit.rs` ([`ZennitComposite`]), [`crate::canonize`] |
//! | your own ([`Rules`]) | [`Network::explain_rules`] | one file, anywhere |
//!
//! The formulas are in `docs/methods.md` and, for RSP, on the method page
//! ([`crate::method_page`]). Every method runs on whole batches
//! (`batch.rs`: one forward pass of the batch on the backend) and walks the
//! graph with the one reverse walk of `walk.rs`, which asks the method's
//! rules for each node's rule: the layers' own batch rules (RSP, the
//! gradient), a method's [`TensorRules`] on backend tensors (the LRP family,
//! zennit's composites, RAP), or a [`Rules`] implementation run sample by
//! sample on the host (your own, without tensor rules).
//!
//! ```
//! use rsp::layers::{AdaptiveAvgPool2d, Conv2d, Flatten, Linear, Relu};
//! use rsp::backend::ConvGeometry;
//! use rsp::{Method, Target};
//! use rsp::ndarray::{Array2, Array4};
//! let mut net = rsp::Network::<f64>::new();
//! net.push(Conv2d::new("c", Array4::from_shape_fn((4, 3, 3, 3), |(o, c, u, v)| ((o + c + u * v) % 3) as f64 - 0.9), None, ConvGeometry::square(1, 1)).unwrap());
//! net.push(Relu);
//! net.push(AdaptiveAvgPool2d::new((1, 1)));
//! net.push(Flatten);
//! net.push(Linear::new("fc", Array2::from_shape_fn((2, 4), |(i, j)| (i + j) as f64 - 1.5), None).unwrap());
//! let x = Array4::from_shape_fn((2, 3, 8, 8), |(n, c, i, j)| ((n + c * 64 + i * 8 + j) % 11) as f64 / 11.0);
//! for method in Method::ALL {
//!     let e = net.explain(&x, Target::Predicted, &method).unwrap();
//!     assert_eq!(e.heatmaps.shape(), &[2, 8, 8]);
//!     assert_eq!(e.relevance.is_some(), method.has_input_relevance());
//! }
//! ```

mod batch;
mod contrastive;
mod explanation;
mod lrp;
mod method;
mod rap;
mod resample;
mod rsp;
pub(crate) mod target;
mod timing;
mod walk;
mod zennit;

pub use contrastive::Sglrp;
pub use explanation::Explanation;
pub use lrp::{Lrp, LrpRule};
pub use method::{HostileClasses, Method, RspOptions, StartRule, DEFAULT_LRP_EPSILON};
pub use rap::Rap;
pub use resample::upsample_bilinear;
pub use target::Target;
pub use timing::{explain_timed, PhaseTimes};
pub use walk::{GradientRules, LayerStep, RspRules, Rules, TensorRules};
pub use zennit::{ZennitComposite, ZENNIT_EPSILON, ZENNIT_GAMMA};

use crate::budget::Pass;
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::network::Network;
use ndarray::{Array2, Array4, ArrayD, ArrayView4, AsArray, Axis, Ix4};

/// What one sample's attribution produced, for any method.
pub(crate) struct Sample<T: Float> {
    pub relevance: Option<ArrayD<T>>,
    pub start_relevance: Option<ArrayD<T>>,
    pub heatmap: Array2<T>,
    pub logits: ArrayD<T>,
    pub target: usize,
    pub hostile: Vec<usize>,
    pub trace: Vec<Option<ArrayD<T>>>,
}

/// The checked plan of one call: the start layer, for the methods that have one.
#[derive(Clone, Copy)]
pub(crate) struct Plan {
    pub start: Option<usize>,
    /// Samples of the batch run at once: the backend's choice, fewer when
    /// that many would not fit the memory budget.
    pub samples_at_once: usize,
}

impl<T: Float> Network<T> {
    /// Explains the decision for `target` on a batch `(N, C, H, W)` with
    /// `method`: the one full call, for RSP (either start) and every baseline.
    ///
    /// `input` is an array or a view (`&x` or `x.view()`); `target` a class,
    /// one class per sample (`[3, 5]`, `vec![3, 5]`, a slice) or
    /// [`Target::Predicted`]; `method` a [`Method`] (or `&Method`, or RSP's
    /// [`RspOptions`]). Samples run in parallel; the result does not depend on
    /// the number of threads.
    ///
    /// ```
    /// use rsp::layers::{Conv2d, Flatten, Linear, MaxPool2d, Relu};
    /// use rsp::backend::ConvGeometry;
    /// use rsp::{Method, Network, RspOptions};
    /// use rsp::ndarray::{Array1, Array2, Array4};
    /// let mut net = Network::<f64>::new();
    /// net.push(Conv2d::new("c0", Array4::from_shape_fn((4, 3, 3, 3), |(o, c, u, v)| ((o + 2 * c + u) as f64 - 3.5 + v as f64) * 0.1), None, ConvGeometry::square(1, 1)).unwrap());
    /// net.push(Relu);
    /// net.push(Conv2d::new("c1", Array4::from_shape_fn((4, 4, 3, 3), |(o, c, u, v)| ((o * c + u) as f64 - 2.0 + v as f64) * 0.1), None, ConvGeometry::square(1, 1)).unwrap());
    /// net.push(Relu);
    /// net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
    /// net.push(Flatten);
    /// net.push(Linear::new("fc", Array2::from_shape_fn((3, 16), |(i, j)| ((i * 7 + j) % 5) as f64 - 2.0), Some(Array1::zeros(3))).unwrap());
    /// let x = Array4::from_shape_fn((1, 3, 4, 4), |(_, c, i, j)| ((c + i * 4 + j) % 7) as f64 / 7.0);
    /// let e = net.explain(&x, 1, &Method::Rsp(RspOptions::default())).unwrap();
    /// assert_eq!(e.start_layer, Some(3)); // the ReLU before the last pooling
    /// let relevance = e.relevance.as_ref().unwrap();
    /// assert_eq!(relevance.shape(), x.shape());
    /// // Relevance is conserved from the start layer to the input.
    /// assert!((relevance.sum() - e.start_relevance.as_ref().unwrap().sum()).abs() < 1e-9);
    /// ```
    pub fn explain<'a>(
        &self,
        input: impl AsArray<'a, T, Ix4>,
        target: impl Into<Target>,
        method: impl Into<Method>,
    ) -> Result<Explanation<T>>
    where
        T: 'a,
    {
        let input: ArrayView4<'a, T> = input.into();
        let target = target.into();
        let method = &method.into();
        if let Method::Custom(name) = method {
            return Err(RspError::InvalidArgument(format!(
                "the method `{name}` is given by its rules: run it with Network::explain_rules"
            )));
        }
        let plan = self.plan(&input, &target, method, false)?;
        let samples = self.explain_batches(input, &target, method, None, plan)?;
        Ok(assemble(method, samples, plan))
    }

    /// Explains the decision for `target` on a batch `(N, C, H, W)` with a
    /// method given by its [`Rules`]: seeded at the logits by [`Rules::seed`]
    /// and walked back to the input with the rules' layer and add rules. The
    /// result's [`Explanation::method`] is [`Method::Custom`] with the rules'
    /// name. This is how a method defined outside the crate runs
    /// (`tests/suite/custom_rule.rs` defines LRP-γ).
    ///
    /// ```
    /// use rsp::attribution::{Lrp, GradientRules};
    /// use rsp::layers::{AdaptiveAvgPool2d, Flatten, Layer, Linear, Relu};
    /// use rsp::{Method, Network};
    /// let net = Network::<f64>::sequential(vec![
    ///     Box::new(Relu) as Box<dyn Layer<f64>>, Box::new(AdaptiveAvgPool2d::new((1, 1))), Box::new(Flatten),
    ///     Box::new(Linear::new("fc", rsp::ndarray::arr2(&[[1.0, -2.0]]), None).unwrap()),
    /// ]);
    /// let x = rsp::ndarray::Array4::from_shape_fn((1, 2, 2, 2), |(_, c, i, j)| (c + i + j) as f64);
    /// // The built-in rules run through it give the built-in methods' results.
    /// let a = net.explain_rules(&x, 0, &Lrp::epsilon(0.5)).unwrap();
    /// assert_eq!(a.relevance, net.explain(&x, 0, Method::LrpEpsilon(0.5)).unwrap().relevance);
    /// let g = net.explain_rules(&x, 0, &GradientRules).unwrap();
    /// assert_eq!(g.relevance, net.explain(&x, 0, Method::Gradient).unwrap().relevance);
    /// assert_eq!(g.method, Method::Custom("gradient"));
    /// ```
    pub fn explain_rules<'a>(
        &self,
        input: impl AsArray<'a, T, Ix4>,
        target: impl Into<Target>,
        rules: &dyn Rules<T>,
    ) -> Result<Explanation<T>>
    where
        T: 'a,
    {
        let input: ArrayView4<'a, T> = input.into();
        let target = target.into();
        let method = Method::Custom(rules.name());
        let plan = self.plan(&input, &target, &method, false)?;
        let samples = self.explain_batches(input, &target, &method, Some(rules), plan)?;
        Ok(assemble(&method, samples, plan))
    }

    /// The short form: RSP's `(positive, hostile)` input relevance for
    /// `target`, with the single-class start; `positive + hostile` is the
    /// relevance. The same as [`crate::attribute`].
    ///
    /// ```
    /// # use rsp::layers::{Conv2d, Flatten, Linear, Relu, AdaptiveAvgPool2d};
    /// # use rsp::backend::ConvGeometry;
    /// # use rsp::ndarray::{Array1, Array2, Array4};
    /// let mut net = rsp::Network::<f32>::new();
    /// net.push(Conv2d::new("c", Array4::from_shape_fn((2, 1, 3, 3), |(o, _, u, v)| if o == 0 { (u + v) as f32 } else { 1.0 - u as f32 }), None, ConvGeometry::square(1, 1)).unwrap());
    /// net.push(Relu);
    /// net.push(AdaptiveAvgPool2d::new((1, 1)));
    /// net.push(Flatten);
    /// net.push(Linear::new("fc", rsp::ndarray::arr2(&[[1.0, -1.0], [-1.0, 1.0]]), Some(Array1::zeros(2))).unwrap());
    /// let x = Array4::from_shape_fn((1, 1, 5, 5), |(_, _, i, j)| (i * 5 + j) as f32 / 25.0);
    /// let (pos, hostile) = net.attribute(&x, 0).unwrap();
    /// assert!(pos.iter().all(|&v| v >= 0.0) && hostile.iter().all(|&v| v <= 0.0));
    /// ```
    pub fn attribute<'a>(
        &self,
        input: impl AsArray<'a, T, Ix4>,
        target: impl Into<Target>,
    ) -> Result<(Array4<T>, Array4<T>)>
    where
        T: 'a,
    {
        let e = self.explain(input, target, Method::default())?;
        match (e.positive(), e.hostile()) {
            (Some(positive), Some(hostile)) => Ok((positive, hostile)),
            _ => Err(RspError::InvalidArgument("RSP returned no input relevance".into())),
        }
    }

    /// Validates a batch, the target and the method before any work: the
    /// input's shape and values, the memory and work the call will need
    /// (`all_at_once`: every sample's activations held together), the
    /// classes, the start layer.
    pub(crate) fn plan(
        &self,
        input: &ArrayView4<T>,
        target: &Target,
        method: &Method,
        all_at_once: bool,
    ) -> Result<Plan> {
        method.validate()?;
        let shapes = self.validate_input(input)?;
        let pass = match method {
            Method::Rsp(o) if o.keep_layer_relevances => Pass::AttributionWithTrace,
            _ => Pass::Attribution,
        };
        let samples_at_once = self.preflight(&shapes, input.shape(), pass, all_at_once)?;
        let classes = shapes.last().expect("checked")[0];
        target.check(input.shape()[0], classes)?;
        let start = match method {
            Method::Rsp(options) => Some(self.resolve_start(options.start_layer)?),
            Method::GradCam => Some(self.resolve_start(None)?),
            _ => None,
        };
        if let Some(s) = start {
            if shapes[s].len() != 3 {
                return Err(RspError::InvalidArgument(format!(
                    "start layer {s} outputs shape {:?}; {} needs a C×H×W map there",
                    shapes[s],
                    method.label()
                )));
            }
        }
        Ok(Plan { start, samples_at_once })
    }
}

/// Stacks the per-sample results into one [`Explanation`].
pub(crate) fn assemble<T: Float>(method: &Method, samples: Vec<Sample<T>>, plan: Plan) -> Explanation<T> {
    let stack = |views: Vec<ndarray::ArrayViewD<'_, T>>| -> ArrayD<T> {
        let views: Vec<_> = views.into_iter().map(|v| v.insert_axis(Axis(0))).collect();
        ndarray::concatenate(Axis(0), &views).expect("samples have one shape")
    };
    let optional = |get: &dyn Fn(&Sample<T>) -> Option<&ArrayD<T>>| -> Option<ArrayD<T>> {
        let views: Option<Vec<_>> = samples.iter().map(|s| get(s).map(|a| a.view())).collect();
        views.map(stack)
    };
    let relevance = optional(&|s| s.relevance.as_ref()).map(|r| r.into_dimensionality().expect("N×C×H×W"));
    let start_relevance = optional(&|s| s.start_relevance.as_ref());
    let heatmaps = stack(samples.iter().map(|s| s.heatmap.view().into_dyn()).collect());
    let logits = stack(samples.iter().map(|s| s.logits.view()).collect());
    Explanation {
        method: method.clone(),
        relevance,
        heatmaps: heatmaps.into_dimensionality().expect("N×H×W"),
        logits: logits.into_dimensionality().expect("N×classes"),
        targets: samples.iter().map(|s| s.target).collect(),
        start_layer: plan.start,
        start_relevance,
        hostile_classes: samples.iter().map(|s| s.hostile.clone()).collect(),
        layer_relevances: samples.into_iter().map(|s| s.trace).collect(),
    }
}

/// `(positive, hostile)` input relevance of `net` for `target`: RSP with the
/// single-class start, the one-liner for tests and scripts (the same as
/// [`Network::attribute`]). `input` is an array or a view.
///
/// ```
/// # use rsp::layers::{Flatten, Layer, Linear, Relu, AdaptiveAvgPool2d};
/// use rsp::ndarray::Array4;
/// let net = rsp::Network::<f64>::sequential(vec![
///     Box::new(Relu) as Box<dyn Layer<f64>>, Box::new(AdaptiveAvgPool2d::new((1, 1))), Box::new(Flatten),
///     Box::new(Linear::new("fc", rsp::ndarray::arr2(&[[1.0, 2.0]]), None).unwrap()),
/// ]);
/// let x = Array4::from_elem((1, 2, 3, 3), 1.0);
/// let (pos, hostile) = rsp::attribute(&net, &x, 0).unwrap();
/// assert_eq!(rsp::attribute(&net, x.view(), 0).unwrap(), (pos.clone(), hostile.clone()));
/// assert_eq!(pos.shape(), &[1, 2, 3, 3]);
/// assert!(hostile.iter().all(|&v| v == 0.0));
/// ```
pub fn attribute<'a, T: Float>(
    net: &Network<T>,
    input: impl AsArray<'a, T, Ix4>,
    target: impl Into<Target>,
) -> Result<(Array4<T>, Array4<T>)> {
    net.attribute(input, target)
}

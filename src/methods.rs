//! One API for RSP and the baselines it is compared with: a [`Method`] passed
//! to [`Network::explain_with`] (or [`explain`]) gives an [`Attribution`],
//! whose [`Attribution::heatmap`] is the `(N, H, W)` map the evaluation scores.
//!
//! | method | input relevance / map |
//! |---|---|
//! | [`Method::Rsp`] | RSP with the single-class start |
//! | [`Method::RspComparative`] | RSP with the comparative start (hostile: other classes with logit > 0) |
//! | [`Method::GradCam`] | `ReLU(Σ_c A ⊙ α)` at the start layer, upsampled bilinearly (no input relevance) |
//! | [`Method::Gradient`] | `∂y_t/∂x` |
//! | [`Method::GradientXInput`] | `x ⊙ ∂y_t/∂x` |
//! | [`Method::LrpEpsilon`] | LRP-ε from `y_t` at the output (z^B on the input layer) |
//! | [`Method::LrpAlpha1Beta0`] | LRP-α1β0 from `y_t` at the output (z^B on the input layer) |
//!
//! The formulas are in `docs/methods.md`; each layer's LRP rule sits next to
//! its RSP rule in `src/layers/`.

use crate::error::{Result, RspError};
use crate::eval::metrics::upsample_bilinear;
use crate::explain::{ExplainOptions, HostileClasses, StartRule, Target};
use crate::float::Float;
use crate::layers::add::add_lrp_rule;
use crate::layers::{LrpRule, RuleContext};
use crate::network::{Network, NodeOp, Source};
use crate::start::weighted_activation;
use ndarray::{Array2, Array3, Array4, ArrayD, ArrayView4, ArrayViewD, Axis, Ix3, IxDyn};
use std::fmt;
use std::str::FromStr;

/// The default ε of [`Method::LrpEpsilon`] when parsed from `lrp-epsilon`.
pub const DEFAULT_LRP_EPSILON: f64 = 0.25;

/// An attribution method.
///
/// Parsed from (and displayed as) the names the command line uses:
///
/// ```
/// use rsp::methods::Method;
/// let m: Method = "gradient-x-input".parse().unwrap();
/// assert_eq!(m, Method::GradientXInput);
/// assert_eq!(m.to_string(), "gradient-x-input");
/// assert_eq!("lrp-epsilon=0.01".parse::<Method>().unwrap(), Method::LrpEpsilon(0.01));
/// assert_eq!(Method::ALL.len(), 7);
/// assert!("gradcam++".parse::<Method>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// RSP with the single-class start (the released default).
    Rsp,
    /// RSP with the comparative start; hostile classes are the other classes
    /// the model predicts present (logit > 0), single-class start if none.
    RspComparative,
    /// Grad-CAM at the start layer: `ReLU(Σ_c A ⊙ α)`, unnormalised,
    /// upsampled bilinearly (`align_corners = false`) to the input size.
    GradCam,
    /// The gradient `∂y_t/∂x` of the target logit.
    Gradient,
    /// Gradient × input, `x ⊙ ∂y_t/∂x`.
    GradientXInput,
    /// LRP with the ε-rule on convolutions and linear layers (this ε).
    LrpEpsilon(f64),
    /// LRP with the α1β0-rule on convolutions and linear layers.
    LrpAlpha1Beta0,
}

impl Method {
    /// Every method, LRP-ε with [`DEFAULT_LRP_EPSILON`].
    pub const ALL: [Method; 7] = [
        Method::Rsp,
        Method::RspComparative,
        Method::GradCam,
        Method::Gradient,
        Method::GradientXInput,
        Method::LrpEpsilon(DEFAULT_LRP_EPSILON),
        Method::LrpAlpha1Beta0,
    ];

    /// The method's command-line name (without ε).
    ///
    /// ```
    /// assert_eq!(rsp::methods::Method::LrpEpsilon(0.1).name(), "lrp-epsilon");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            Method::Rsp => "rsp",
            Method::RspComparative => "rsp-comparative",
            Method::GradCam => "gradcam",
            Method::Gradient => "gradient",
            Method::GradientXInput => "gradient-x-input",
            Method::LrpEpsilon(_) => "lrp-epsilon",
            Method::LrpAlpha1Beta0 => "lrp-alpha1-beta0",
        }
    }

    /// A short label for figure captions.
    ///
    /// ```
    /// assert_eq!(rsp::methods::Method::GradCam.label(), "Grad-CAM");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            Method::Rsp => "RSP",
            Method::RspComparative => "RSP comp.",
            Method::GradCam => "Grad-CAM",
            Method::Gradient => "gradient",
            Method::GradientXInput => "grad x input",
            Method::LrpEpsilon(_) => "LRP-eps",
            Method::LrpAlpha1Beta0 => "LRP-a1b0",
        }
    }

    /// True for the methods whose map is an input relevance (all but Grad-CAM).
    pub fn has_input_relevance(&self) -> bool {
        !matches!(self, Method::GradCam)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::LrpEpsilon(e) if *e != DEFAULT_LRP_EPSILON => write!(f, "lrp-epsilon={e}"),
            m => f.write_str(m.name()),
        }
    }
}

impl FromStr for Method {
    type Err = RspError;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some(eps) = s.strip_prefix("lrp-epsilon=") {
            return match eps.parse::<f64>() {
                Ok(e) if e.is_finite() && e >= 0.0 => Ok(Method::LrpEpsilon(e)),
                _ => {
                    Err(RspError::InvalidArgument(format!("ε of lrp-epsilon must be a finite number ≥ 0, got `{eps}`")))
                }
            };
        }
        Method::ALL.iter().find(|m| m.name() == s).copied().ok_or_else(|| {
            let names: Vec<&str> = Method::ALL.iter().map(Method::name).collect();
            RspError::InvalidArgument(format!("unknown method `{s}`; expected one of {}", names.join(", ")))
        })
    }
}

/// The result of [`Network::explain_with`] for a batch of `N` samples.
#[derive(Clone, Debug)]
pub struct Attribution<T: Float> {
    /// The method that produced it.
    pub method: Method,
    /// The input relevance `(N, C, H, W)` (the gradient for
    /// [`Method::Gradient`]); `None` for Grad-CAM, which has none.
    pub relevance: Option<Array4<T>>,
    /// The relevance at the start layer's output `(N, …)` for RSP and
    /// Grad-CAM (for Grad-CAM: the unnormalised `A ⊙ α`).
    pub start_relevance: Option<ArrayD<T>>,
    /// The start layer RSP and Grad-CAM used.
    pub start_layer: Option<usize>,
    /// The maps `(N, H, W)`: the channel sum of the input relevance, or
    /// Grad-CAM's upsampled map.
    pub heatmaps: Array3<T>,
    /// The logits `(N, classes)`.
    pub logits: Array2<T>,
    /// The class explained for each sample.
    pub targets: Vec<usize>,
    /// The hostile classes used for each sample (only [`Method::RspComparative`]).
    pub hostile_classes: Vec<Vec<usize>>,
}

impl<T: Float> Attribution<T> {
    /// The map of sample `n` (`H × W`), or `None` past the batch.
    pub fn heatmap(&self, n: usize) -> Option<ndarray::ArrayView2<'_, T>> {
        (n < self.heatmaps.shape()[0]).then(|| self.heatmaps.index_axis(Axis(0), n))
    }

    /// The map of sample `n` as a picture: red for the target, blue for
    /// hostile evidence, white for none, symmetric around zero (see
    /// [`crate::render::heatmap_rgb`]); `None` past the batch.
    ///
    /// ```
    /// # use rsp::layers::{Flatten, Layer, Linear};
    /// let fc = Linear::new("fc", ndarray::arr2(&[[2.0f32, -1.0]]), None).unwrap();
    /// let net = rsp::Network::sequential(vec![Box::new(Flatten) as Box<dyn Layer<f32>>, Box::new(fc)]);
    /// let x = ndarray::Array4::from_shape_vec((1, 1, 1, 2), vec![3.0, 1.0]).unwrap();
    /// let a = net.explain_with(x.view(), 0, &rsp::Method::GradientXInput).unwrap();
    /// let img = a.heatmap_image(0, rsp::render::Scale::MaxAbs).unwrap();
    /// assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]); // the strongest positive value: full red
    /// // a.heatmap_image(0, Scale::MaxAbs).unwrap().save("map.png") writes it.
    /// ```
    pub fn heatmap_image(&self, n: usize, scale: crate::render::Scale) -> Option<image::RgbImage> {
        let h = self.heatmap(n)?.mapv(|v| v.to_f64_exact() as f32);
        Some(crate::render::heatmap_rgb(h.view(), scale))
    }
}

/// [`Network::explain_with`] as a free function.
///
/// ```
/// # use rsp::layers::{Flatten, Layer, Linear};
/// use rsp::methods::Method;
/// let fc = Linear::new("fc", ndarray::arr2(&[[2.0f64, -1.0]]), None).unwrap();
/// let net = rsp::Network::sequential(vec![Box::new(Flatten) as Box<dyn Layer<f64>>, Box::new(fc)]);
/// let x = ndarray::Array4::from_shape_vec((1, 2, 1, 1), vec![3.0, 1.0]).unwrap();
/// let a = rsp::explain(&net, x.view(), &Method::GradientXInput, 0).unwrap();
/// assert_eq!(a.relevance.unwrap().into_raw_vec_and_offset().0, vec![6.0, -1.0]);
/// ```
pub fn explain<T: Float>(
    net: &Network<T>,
    input: ArrayView4<T>,
    method: &Method,
    target: impl Into<Target>,
) -> Result<Attribution<T>> {
    net.explain_with(input, target, method)
}

/// What one sample produced.
struct Sample<T: Float> {
    relevance: Option<ArrayD<T>>,
    start_relevance: Option<ArrayD<T>>,
    heatmap: Array2<T>,
    logits: ArrayD<T>,
}

impl<T: Float> Network<T> {
    /// Explains the decision for `target` on a batch `(N, C, H, W)` with any
    /// [`Method`]. RSP and Grad-CAM use the model's start layer (else the
    /// automatic one); the others need none.
    ///
    /// ```
    /// use rsp::layers::{AdaptiveAvgPool2d, Conv2d, Flatten, Linear, Relu};
    /// use rsp::backend::ConvGeometry;
    /// use rsp::methods::Method;
    /// use ndarray::{Array2, Array4};
    /// let mut net = rsp::Network::<f64>::new();
    /// net.push(Conv2d::new("c", Array4::from_shape_fn((4, 3, 3, 3), |(o, c, u, v)| ((o + c + u * v) % 3) as f64 - 0.9), None, ConvGeometry::square(1, 1)).unwrap());
    /// net.push(Relu);
    /// net.push(AdaptiveAvgPool2d::new((1, 1)));
    /// net.push(Flatten);
    /// net.push(Linear::new("fc", Array2::from_shape_fn((2, 4), |(i, j)| (i + j) as f64 - 1.5), None).unwrap());
    /// let x = Array4::from_shape_fn((1, 3, 8, 8), |(_, c, i, j)| ((c * 64 + i * 8 + j) % 11) as f64 / 11.0);
    /// for method in Method::ALL {
    ///     let a = net.explain_with(x.view(), 1, &method).unwrap();
    ///     assert_eq!(a.heatmaps.shape(), &[1, 8, 8]);
    ///     assert_eq!(a.relevance.is_some(), method.has_input_relevance());
    /// }
    /// ```
    pub fn explain_with(
        &self,
        input: ArrayView4<T>,
        target: impl Into<Target>,
        method: &Method,
    ) -> Result<Attribution<T>> {
        let target = target.into();
        if let Method::LrpEpsilon(e) = method {
            if !(e.is_finite() && *e >= 0.0) {
                return Err(RspError::InvalidArgument(format!("ε of LRP-ε must be a finite number ≥ 0, got {e}")));
            }
        }
        if matches!(method, Method::Rsp | Method::RspComparative) {
            let start = match method {
                Method::RspComparative => StartRule::Comparative(HostileClasses::PredictedPresent),
                _ => StartRule::SingleClass,
            };
            let e = self.explain(input, target, &ExplainOptions { start, ..Default::default() })?;
            let heatmaps = e.heatmap();
            return Ok(Attribution {
                method: *method,
                relevance: Some(e.relevance),
                start_relevance: Some(e.start_relevance),
                start_layer: Some(e.start_layer),
                heatmaps,
                logits: e.logits,
                targets: e.targets,
                hostile_classes: e.hostile_classes,
            });
        }
        let shapes = self.validate_input(&input)?;
        self.preflight(&shapes, input.shape(), crate::budget::Pass::Attribution, false)?;
        let classes = shapes.last().expect("checked")[0];
        let n = input.shape()[0];
        let targets = target.resolve(n, classes)?;
        let start = match method {
            Method::GradCam => {
                let s = self.resolve_start(None)?;
                if shapes[s].len() != 3 {
                    return Err(RspError::InvalidArgument(format!(
                        "start layer {s} outputs shape {:?}; Grad-CAM needs a C×H×W map",
                        shapes[s]
                    )));
                }
                Some(s)
            }
            _ => None,
        };
        let samples: Vec<Sample<T>> = crate::network::map_samples(n, |i| {
            self.baseline_sample(input.index_axis(Axis(0), i).into_dyn(), targets[i], method, start)
        })?;
        let stack = |get: &dyn Fn(&Sample<T>) -> ArrayViewD<'_, T>| -> ArrayD<T> {
            let views: Vec<_> = samples.iter().map(|s| get(s).insert_axis(Axis(0))).collect();
            ndarray::concatenate(Axis(0), &views).expect("samples have one shape")
        };
        let relevance = match method.has_input_relevance() {
            true => Some(
                stack(&|s| s.relevance.as_ref().expect("input relevance").view())
                    .into_dimensionality()
                    .expect("N×C×H×W"),
            ),
            false => None,
        };
        let start_relevance = start.map(|_| stack(&|s| s.start_relevance.as_ref().expect("start relevance").view()));
        let heatmaps = stack(&|s| s.heatmap.view().into_dyn()).into_dimensionality().expect("N×H×W");
        let logits = stack(&|s| s.logits.view()).into_dimensionality().expect("N×classes");
        Ok(Attribution {
            method: *method,
            relevance,
            start_relevance,
            start_layer: start,
            heatmaps,
            logits,
            targets,
            hostile_classes: vec![Vec::new(); n],
        })
    }

    /// One sample of a baseline method (everything but RSP).
    fn baseline_sample(
        &self,
        x: ArrayViewD<'_, T>,
        target: usize,
        method: &Method,
        start: Option<usize>,
    ) -> Result<Sample<T>> {
        let acts = self.forward_sample(x.view())?;
        let logits = acts.outputs.last().expect("non-empty").clone();
        let mut one_hot = ArrayD::zeros(IxDyn(&[logits.len()]));
        one_hot[[target]] = T::one();
        let channel_sum = |r: &ArrayD<T>| -> Array2<T> {
            r.view().into_dimensionality::<Ix3>().map(|r| r.sum_axis(Axis(0))).unwrap_or_else(|_| Array2::zeros((0, 0)))
        };
        let (relevance, start_relevance, heatmap) = match *method {
            Method::GradCam => {
                let s = start.expect("resolved for Grad-CAM");
                let g = self.gradient_to(&acts, one_hot, Source::Node(s))?;
                let a = acts.outputs[s].view().into_dimensionality::<Ix3>().expect("checked C×H×W");
                let g = g.into_dimensionality::<Ix3>().expect("checked C×H×W");
                let cam = weighted_activation(a, g.view());
                let map = cam.sum_axis(Axis(0)).mapv(|v| v.max(T::zero()));
                let (h, w) = (x.shape()[1], x.shape()[2]);
                (None, Some(cam.into_dyn()), upsample_bilinear(map.view(), h, w)?)
            }
            Method::Gradient => {
                let g = self.gradient_to(&acts, one_hot, Source::Input)?;
                let map = channel_sum(&g);
                (Some(g), None, map)
            }
            Method::GradientXInput => {
                let g = self.gradient_to(&acts, one_hot, Source::Input)?;
                let r = &g * &x;
                let map = channel_sum(&r);
                (Some(r), None, map)
            }
            Method::LrpEpsilon(e) => {
                let r = self.lrp_sample(&acts, target, &logits, LrpRule::Epsilon(e))?;
                let map = channel_sum(&r);
                (Some(r), None, map)
            }
            Method::LrpAlpha1Beta0 => {
                let r = self.lrp_sample(&acts, target, &logits, LrpRule::Alpha1Beta0)?;
                let map = channel_sum(&r);
                (Some(r), None, map)
            }
            Method::Rsp | Method::RspComparative => {
                return Err(RspError::InvalidArgument(
                    "RSP is computed by Network::explain, not per baseline sample".into(),
                ))
            }
        };
        Ok(Sample { relevance, start_relevance, heatmap, logits })
    }

    /// LRP from `one-hot × logit` at the output through every node to the input.
    fn lrp_sample(
        &self,
        acts: &crate::network::Activations<'_, T>,
        target: usize,
        logits: &ArrayD<T>,
        rule: LrpRule,
    ) -> Result<ArrayD<T>> {
        let nodes = self.nodes();
        let n = nodes.len();
        let mut rel: Vec<Option<ArrayD<T>>> = vec![None; n];
        let mut at_input: Option<ArrayD<T>> = None;
        let mut r_out = ArrayD::zeros(logits.raw_dim());
        r_out[[target]] = logits[[target]];
        rel[n - 1] = Some(r_out);
        for k in (0..n).rev() {
            let Some(r) = rel[k].take() else { continue };
            let node = &nodes[k];
            let parts: Vec<(Source, ArrayD<T>)> = match &node.op {
                NodeOp::Layer(l) => {
                    let src = node.inputs[0];
                    let ctx = RuleContext { is_input_layer: src == Source::Input };
                    vec![(src, l.lrp_backward(self.backend(), acts.get(src), r.view(), rule, ctx)?)]
                }
                NodeOp::Add => {
                    let (ra, rb) = add_lrp_rule(acts.get(node.inputs[0]), acts.get(node.inputs[1]), r.view(), rule);
                    vec![(node.inputs[0], ra), (node.inputs[1], rb)]
                }
            };
            for (src, part) in parts {
                let slot = match src {
                    Source::Input => &mut at_input,
                    Source::Node(j) => &mut rel[j],
                };
                match slot {
                    Some(acc) => *acc += &part,
                    None => *slot = Some(part),
                }
            }
        }
        Ok(at_input.unwrap_or_else(|| ArrayD::zeros(acts.input.raw_dim())))
    }
}

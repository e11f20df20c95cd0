//! [`Method`]: which attribution to compute, with its options.

use crate::error::{Result, RspError};
use std::fmt;
use std::str::FromStr;

/// The default ε of [`Method::LrpEpsilon`] when parsed from `lrp-epsilon`.
pub const DEFAULT_LRP_EPSILON: f64 = 0.25;

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

/// The options of RSP ([`Method::Rsp`]).
///
/// ```
/// use rsp::{HostileClasses, Method, RspOptions, StartRule};
/// let comparative = RspOptions { start: StartRule::Comparative(HostileClasses::TopK(2)), ..Default::default() };
/// assert_eq!(comparative.start_layer, None); // the model's start layer, else the automatic one
/// let method = Method::Rsp(comparative);
/// assert_eq!(method.name(), "rsp-comparative");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RspOptions {
    /// The start relevance (single-class by default).
    pub start: StartRule,
    /// The start node; `None` uses the model's, else the automatic choice
    /// ([`crate::Network::default_start_layer`]).
    pub start_layer: Option<usize>,
    /// Keep the relevance each node's rule returned, in
    /// [`crate::Explanation::layer_relevances`] (memory: one tensor per node and sample).
    pub keep_layer_relevances: bool,
}

impl RspOptions {
    /// The single-class start with the automatic start layer (the released default).
    pub const SINGLE_CLASS: RspOptions =
        RspOptions { start: StartRule::SingleClass, start_layer: None, keep_layer_relevances: false };

    /// The comparative start against the classes predicted present.
    pub const COMPARATIVE: RspOptions = RspOptions {
        start: StartRule::Comparative(HostileClasses::PredictedPresent),
        start_layer: None,
        keep_layer_relevances: false,
    };
}

/// An attribution method and its options: what [`crate::Network::explain`]
/// computes.
///
/// Parsed from (and displayed as) the names the command line uses:
///
/// ```
/// use rsp::Method;
/// let m: Method = "gradient-x-input".parse().unwrap();
/// assert_eq!(m, Method::GradientXInput);
/// assert_eq!(m.to_string(), "gradient-x-input");
/// assert_eq!("lrp-epsilon=0.01".parse::<Method>().unwrap(), Method::LrpEpsilon(0.01));
/// assert_eq!("rsp-comparative".parse::<Method>().unwrap(), Method::Rsp(rsp::RspOptions::COMPARATIVE));
/// assert_eq!("rap".parse::<Method>().unwrap(), Method::Rap);
/// assert_eq!(Method::ALL.len(), 11);
/// // zennit's EpsilonGammaBox needs the input's bounds (no default).
/// assert_eq!("epsilon-gamma-box=-3,3".parse::<Method>().unwrap(), Method::EpsilonGammaBox { low: -3.0, high: 3.0 });
/// assert!("epsilon-gamma-box".parse::<Method>().is_err());
/// assert!("gradcam++".parse::<Method>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Method {
    /// Relative Sectional Propagation (single-class or comparative start; see [`RspOptions`]).
    Rsp(RspOptions),
    /// Grad-CAM at the start layer: `ReLU(Σ_c A ⊙ α)`, unnormalised,
    /// upsampled bilinearly (`align_corners = false`) to the input size.
    /// It has no input relevance, only the map.
    GradCam,
    /// The gradient `∂y_t/∂x` of the target logit.
    Gradient,
    /// Gradient × input, `x ⊙ ∂y_t/∂x`.
    GradientXInput,
    /// LRP with the ε-rule on convolutions and linear layers (this ε).
    LrpEpsilon(f64),
    /// LRP with the α1β0-rule on convolutions and linear layers.
    LrpAlpha1Beta0,
    /// RAP (Relative Attributing Propagation, Nam et al., AAAI 2020) as its
    /// released code computes it, from the one-hot target at the logits
    /// ([`Rap`](super::Rap), `docs/method-rap.md`).
    Rap,
    /// Contrastive LRP (CLRP1; Gu, Yang & Tresp 2018): LRP-α1β0 of the
    /// target minus that of the dual class made of all other classes, rescaled
    /// to the same total. The paper's map is the positive part.
    Clrp,
    /// Softmax-gradient LRP (Iwana, Kuroki & Uchida 2019): LRP-α1β0 seeded with
    /// the gradient of the target's softmax probability with respect to the logits.
    Sglrp,
    /// zennit's `EpsilonPlusFlat` composite (zennit 0.5.1, its defaults):
    /// Flat on the first layer, ZPlus on the other convolutions, Epsilon(1e-6)
    /// on linear layers, Norm on average pools, from the one-hot target, with
    /// batch norm folded into the convolution before it first
    /// ([`ZennitComposite`](super::ZennitComposite), [`crate::canonize`]).
    EpsilonPlusFlat,
    /// zennit's `EpsilonGammaBox` composite: ZBox(`low`, `high`) on the first
    /// convolution, Gamma(0.25) on the other convolutions, Epsilon(1e-6) on
    /// linear layers, otherwise as [`Method::EpsilonPlusFlat`]. `low` and
    /// `high` are the lowest and highest values the network's input can take
    /// (after normalisation; per-pixel bounds do not depend on the image, so
    /// there is no default: for images in `[0, 1]` normalised by `(v − m)/s`
    /// they are `−m/s` and `(1 − m)/s`). Written `epsilon-gamma-box=LOW,HIGH`.
    EpsilonGammaBox {
        /// The lowest value of the input.
        low: f64,
        /// The highest value of the input.
        high: f64,
    },
    /// A method given by its [`Rules`](super::Rules) (named here), run with
    /// [`crate::Network::explain_rules`]; [`crate::Network::explain`] refuses it.
    Custom(&'static str),
}

impl Default for Method {
    /// RSP with the single-class start.
    fn default() -> Self {
        Method::Rsp(RspOptions::SINGLE_CLASS)
    }
}

impl From<RspOptions> for Method {
    fn from(options: RspOptions) -> Self {
        Method::Rsp(options)
    }
}

impl From<&RspOptions> for Method {
    fn from(options: &RspOptions) -> Self {
        Method::Rsp(options.clone())
    }
}

impl From<&Method> for Method {
    fn from(method: &Method) -> Self {
        method.clone()
    }
}

impl Method {
    /// Every method under its command-line name: RSP (single-class and
    /// comparative), then the baselines, LRP-ε with [`DEFAULT_LRP_EPSILON`], the
    /// bi-polar family (RAP, CLRP, SGLRP) and zennit's `epsilon-plus-flat` (not
    /// [`Method::EpsilonGammaBox`], which needs the input's bounds).
    pub const ALL: [Method; 11] = [
        Method::Rsp(RspOptions::SINGLE_CLASS),
        Method::Rsp(RspOptions::COMPARATIVE),
        Method::GradCam,
        Method::Gradient,
        Method::GradientXInput,
        Method::LrpEpsilon(DEFAULT_LRP_EPSILON),
        Method::LrpAlpha1Beta0,
        Method::Rap,
        Method::Clrp,
        Method::Sglrp,
        Method::EpsilonPlusFlat,
    ];

    /// The method's command-line name (without ε).
    ///
    /// ```
    /// assert_eq!(rsp::Method::LrpEpsilon(0.1).name(), "lrp-epsilon");
    /// assert_eq!(rsp::Method::default().name(), "rsp");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            Method::Rsp(o) if matches!(o.start, StartRule::Comparative(_)) => "rsp-comparative",
            Method::Rsp(_) => "rsp",
            Method::GradCam => "gradcam",
            Method::Gradient => "gradient",
            Method::GradientXInput => "gradient-x-input",
            Method::LrpEpsilon(_) => "lrp-epsilon",
            Method::LrpAlpha1Beta0 => "lrp-alpha1-beta0",
            Method::Rap => "rap",
            Method::Clrp => "clrp",
            Method::Sglrp => "sglrp",
            Method::EpsilonPlusFlat => "epsilon-plus-flat",
            Method::EpsilonGammaBox { .. } => "epsilon-gamma-box",
            Method::Custom(name) => name,
        }
    }

    /// A short label for figure captions.
    ///
    /// ```
    /// assert_eq!(rsp::Method::GradCam.label(), "Grad-CAM");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            Method::Rsp(o) if matches!(o.start, StartRule::Comparative(_)) => "RSP comp.",
            Method::Rsp(_) => "RSP",
            Method::GradCam => "Grad-CAM",
            Method::Gradient => "gradient",
            Method::GradientXInput => "grad x input",
            Method::LrpEpsilon(_) => "LRP-eps",
            Method::LrpAlpha1Beta0 => "LRP-a1b0",
            Method::Rap => "RAP",
            Method::Clrp => "CLRP",
            Method::Sglrp => "SGLRP",
            Method::EpsilonPlusFlat => "LRP eps+flat",
            Method::EpsilonGammaBox { .. } => "LRP eps-gamma-box",
            Method::Custom(name) => name,
        }
    }

    /// True for the methods whose result has an input relevance (all but Grad-CAM).
    pub fn has_input_relevance(&self) -> bool {
        !matches!(self, Method::GradCam)
    }

    /// Checks the method's own parameters (a finite ε ≥ 0, finite ZBox bounds `low < high`).
    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            Method::LrpEpsilon(e) if !(e.is_finite() && *e >= 0.0) => {
                Err(RspError::InvalidArgument(format!("ε of LRP-ε must be a finite number ≥ 0, got {e}")))
            }
            Method::EpsilonGammaBox { low, high } => check_zbox_bounds(*low, *high),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::LrpEpsilon(e) if *e != DEFAULT_LRP_EPSILON => write!(f, "lrp-epsilon={e}"),
            Method::EpsilonGammaBox { low, high } => write!(f, "epsilon-gamma-box={low},{high}"),
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
        if let Some(bounds) = s.strip_prefix("epsilon-gamma-box=") {
            let parsed =
                bounds.split_once(',').and_then(|(l, h)| Some((l.trim().parse().ok()?, h.trim().parse().ok()?)));
            let Some((low, high)) = parsed else {
                return Err(RspError::InvalidArgument(format!(
                    "epsilon-gamma-box=LOW,HIGH needs two numbers, got `{bounds}`"
                )));
            };
            check_zbox_bounds(low, high)?;
            return Ok(Method::EpsilonGammaBox { low, high });
        }
        if s == "epsilon-gamma-box" {
            return Err(RspError::InvalidArgument(
                "epsilon-gamma-box needs the lowest and highest value of the input: epsilon-gamma-box=LOW,HIGH".into(),
            ));
        }
        Method::ALL.iter().find(|m| m.name() == s).cloned().ok_or_else(|| {
            let names: Vec<&str> = Method::ALL.iter().map(Method::name).collect();
            RspError::InvalidArgument(format!(
                "unknown method `{s}`; expected one of {}, epsilon-gamma-box=LOW,HIGH",
                names.join(", ")
            ))
        })
    }
}

/// ZBox bounds: finite, `low < high`.
fn check_zbox_bounds(low: f64, high: f64) -> Result<()> {
    if low.is_finite() && high.is_finite() && low < high {
        Ok(())
    } else {
        Err(RspError::InvalidArgument(format!(
            "the ZBox bounds of epsilon-gamma-box must be finite with low < high, got low {low}, high {high}"
        )))
    }
}

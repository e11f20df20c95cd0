//! Ready-made architectures: torchvision's ResNets ([`ResNetConfig`]) and
//! VGGs ([`VggConfig`]), built from a [`WeightSource`] (named tensors such as
//! a torchvision `state_dict` read by [`crate::io::safetensors::Weights`], or
//! seeded He-normal random weights). The builders know nothing of files:
//! loading a file is [`crate::io`]'s job. Residual blocks by hand:
//! [`Network::residual`].
//!
//! Turning a torchvision model into a file these builders read is three
//! lines of Python; see `docs/torchvision.md`.
//!
//! ```
//! use rsp::models::{ResNetConfig, WeightSource};
//! // A narrow ResNet with random weights.
//! let config = ResNetConfig { widths: vec![4, 8, 8, 8], stem_width: 4, ..ResNetConfig::resnet18() };
//! let net = config.build::<f32>(&WeightSource::HeNormal { seed: 7 }).unwrap();
//! let x = ndarray::Array4::from_elem((1, 3, 32, 32), 0.5f32);
//! assert_eq!(net.forward(x.view()).unwrap().dim(), (1, 1000));
//! ```

pub mod resnet;
pub mod vgg;

pub use resnet::{basic_block, bottleneck_block, BlockKind, ResNetConfig};
pub use vgg::{VggConfig, VggLayer};

use crate::backend::ConvGeometry;
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::layers::{BatchNorm2d, Conv2d, Linear};
use crate::network::Network;
use ndarray::{Array1, Array2, Array4, ArrayD, IxDyn};

/// Named tensors a builder can read its weights from (a model file's tensors,
/// under PyTorch `state_dict` names). [`crate::io::safetensors::Weights`]
/// implements it for safetensors files; implement it to build from any other
/// store.
pub trait TensorSource {
    /// The tensor `name`, which must have `shape`, widened to `f64` (exact for
    /// `f32` and `f64` data, so a model built in either type gets the file's
    /// values bit for bit); a missing tensor or another shape is an error.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<ArrayD<f64>>;

    /// The shape of tensor `name`, if present.
    fn shape_of(&self, name: &str) -> Option<Vec<usize>>;
}

/// The tensor `name` of `shape` in `T` (`T::of` of an `f64` that came from
/// `f32` or `f64` data rounds exactly as a direct conversion would).
fn fetch<T: Float>(w: &dyn TensorSource, name: &str, shape: &[usize]) -> Result<ArrayD<T>> {
    let a = w.tensor(name, shape)?.mapv(T::of);
    // A finite f64 weight can still overflow f32.
    match a.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(RspError::NonFinite { tensor: format!("weight tensor `{name}` (in {})", T::NAME), index }),
        None => Ok(a),
    }
}

/// The tensor `name` of `shape` if present.
fn fetch_optional<T: Float>(w: &dyn TensorSource, name: &str, shape: &[usize]) -> Result<Option<ArrayD<T>>> {
    match w.shape_of(name) {
        Some(_) => fetch(w, name, shape).map(Some),
        None => Ok(None),
    }
}

/// The vector `name` of length `len`.
fn fetch_vector<T: Float>(w: &dyn TensorSource, name: &str, len: usize) -> Result<Array1<T>> {
    Ok(fetch::<T>(w, name, &[len])?.into_dimensionality().expect("checked shape"))
}

/// Where a builder takes its weights from.
///
/// ```
/// use rsp::models::WeightSource;
/// let w = WeightSource::HeNormal { seed: 1 };
/// let conv = w.conv2d::<f64>("conv1", 3, 8, 3, 1, 1, false).unwrap();
/// let again = w.conv2d::<f64>("conv1", 3, 8, 3, 1, 1, false).unwrap();
/// assert_eq!(conv.weight(), again.weight()); // deterministic per seed and name
/// ```
#[derive(Clone, Copy)]
pub enum WeightSource<'a> {
    /// Named tensors, under torchvision `state_dict` names (for example a
    /// safetensors file's [`crate::io::safetensors::Weights`]).
    File(&'a dyn TensorSource),
    /// Random weights from a seed, as torchvision initialises them for
    /// training: convolutions He-normal (`N(0, 2/fan_out)`, fan-out = out ×
    /// kh × kw), linear layers He-normal with fan-in, biases 0, batch norm the
    /// identity (`γ = 1, β = 0`, running mean 0, variance 1). Each tensor is
    /// drawn from its own stream seeded by `seed` and its name.
    HeNormal {
        /// The seed.
        seed: u64,
    },
}

impl std::fmt::Debug for WeightSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightSource::File(_) => write!(f, "WeightSource::File"),
            WeightSource::HeNormal { seed } => {
                write!(f, "WeightSource::HeNormal {{ seed: {seed} }}")
            }
        }
    }
}

impl WeightSource<'_> {
    /// A square `k×k` convolution `name` (`in → out`, stride, symmetric
    /// padding). With `bias` the file must hold `name.bias`; without, a bias
    /// in the file is still used (torchvision ResNets have none).
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d<T: Float>(
        &self,
        name: &str,
        in_channels: usize,
        out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Conv2d<T>> {
        let shape = [out, in_channels, kernel, kernel];
        let (weight, b) = match self {
            WeightSource::File(w) => {
                let weight = fetch::<T>(*w, &format!("{name}.weight"), &shape)?;
                let b = if bias {
                    Some(fetch::<T>(*w, &format!("{name}.bias"), &[out])?)
                } else {
                    fetch_optional::<T>(*w, &format!("{name}.bias"), &[out])?
                };
                (weight, b)
            }
            WeightSource::HeNormal { seed } => {
                let std = (2.0 / out.saturating_mul(kernel).saturating_mul(kernel).max(1) as f64).sqrt();
                let weight = normal_tensor(*seed, &format!("{name}.weight"), &shape, std);
                (weight, bias.then(|| ArrayD::zeros(IxDyn(&[out]))))
            }
        };
        let weight: Array4<T> = weight.into_dimensionality().expect("checked shape");
        let b: Option<Array1<T>> = b.map(|b| b.into_dimensionality().expect("checked shape"));
        Conv2d::new(name, weight, b, ConvGeometry::square(stride, padding))
    }

    /// Batch norm `name` over `channels` channels with ε = 1e-5 (torchvision's).
    pub fn batchnorm2d<T: Float>(&self, name: &str, channels: usize) -> Result<BatchNorm2d<T>> {
        let eps = T::of(1e-5);
        match self {
            WeightSource::File(w) => {
                let v = |suffix: &str| fetch_vector::<T>(*w, &format!("{name}.{suffix}"), channels);
                BatchNorm2d::new(name, v("weight")?, v("bias")?, v("running_mean")?, v("running_var")?, eps)
            }
            WeightSource::HeNormal { .. } => {
                let ones = Array1::from_elem(channels, T::one());
                let zeros = Array1::zeros(channels);
                BatchNorm2d::new(name, ones.clone(), zeros.clone(), zeros, ones, eps)
            }
        }
    }

    /// A linear layer `name` (`in → out`) with a bias.
    pub fn linear<T: Float>(&self, name: &str, in_features: usize, out: usize) -> Result<Linear<T>> {
        let (weight, bias) = match self {
            WeightSource::File(w) => (
                fetch::<T>(*w, &format!("{name}.weight"), &[out, in_features])?,
                fetch_vector::<T>(*w, &format!("{name}.bias"), out)?,
            ),
            WeightSource::HeNormal { seed } => {
                let std = (2.0 / in_features.max(1) as f64).sqrt();
                (normal_tensor(*seed, &format!("{name}.weight"), &[out, in_features], std), Array1::zeros(out))
            }
        };
        let weight: Array2<T> = weight.into_dimensionality().expect("checked shape");
        Linear::new(name, weight, Some(bias))
    }

    /// The first dimension of tensor `name` in the file (`None` for random weights).
    pub(crate) fn rows_of(&self, name: &str) -> Option<usize> {
        match self {
            WeightSource::File(w) => w.shape_of(name).and_then(|s| s.first().copied()),
            WeightSource::HeNormal { .. } => None,
        }
    }
}

/// SplitMix64: a tiny, well-mixed PRNG step (used to seed and to draw).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in `(0, 1]` (53 bits).
fn uniform(state: &mut u64) -> f64 {
    ((splitmix64(state) >> 11) + 1) as f64 / (1u64 << 53) as f64
}

/// `N(0, std²)` values of `shape`, from a stream seeded by `seed` and `name`
/// (FNV-1a of the name), by the Box–Muller transform.
fn normal_tensor<T: Float>(seed: u64, name: &str, shape: &[usize], std: f64) -> ArrayD<T> {
    let mut state =
        name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01B3)) ^ seed;
    splitmix64(&mut state);
    let len: usize = shape.iter().product();
    let mut values = Vec::with_capacity(len + 1);
    while values.len() < len {
        let (u1, u2) = (uniform(&mut state), uniform(&mut state));
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * u2;
        values.push(T::of(std * radius * angle.cos()));
        values.push(T::of(std * radius * angle.sin()));
    }
    values.truncate(len);
    ArrayD::from_shape_vec(IxDyn(shape), values).expect("length matches the shape")
}

/// A torchvision architecture by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// A ResNet.
    ResNet(ResNetConfig),
    /// A VGG.
    Vgg(VggConfig),
}

impl Architecture {
    /// The torchvision architecture `name`: `resnet18`, `resnet34`,
    /// `resnet50`, `resnet101`, `resnet152`, `vgg11`, `vgg13`, `vgg16`,
    /// `vgg19`, or a VGG with `_bn` (`vgg16_bn`); 1000 classes.
    ///
    /// ```
    /// use rsp::models::{Architecture, ResNetConfig};
    /// assert_eq!(Architecture::from_name("resnet50").unwrap(), Architecture::ResNet(ResNetConfig::resnet50()));
    /// assert!(Architecture::from_name("resnet51").is_err());
    /// ```
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "resnet18" => Architecture::ResNet(ResNetConfig::resnet18()),
            "resnet34" => Architecture::ResNet(ResNetConfig::resnet34()),
            "resnet50" => Architecture::ResNet(ResNetConfig::resnet50()),
            "resnet101" => Architecture::ResNet(ResNetConfig::resnet101()),
            "resnet152" => Architecture::ResNet(ResNetConfig::resnet152()),
            _ => {
                let (depth, bn) = match name.strip_suffix("_bn") {
                    Some(d) => (d, true),
                    None => (name, false),
                };
                Architecture::Vgg(match depth {
                    "vgg11" => VggConfig::vgg11(bn),
                    "vgg13" => VggConfig::vgg13(bn),
                    "vgg16" => VggConfig::vgg16(bn),
                    "vgg19" => VggConfig::vgg19(bn),
                    _ => {
                        return Err(RspError::InvalidArgument(format!(
                            "unknown architecture `{name}`: expected resnet18/34/50/101/152 or vgg11/13/16/19 (optionally with _bn)"
                        )))
                    }
                })
            }
        })
    }

    /// Builds the network. With a file, the number of classes is taken from
    /// the classifier's weight (`fc.weight`, `classifier.6.weight`) so that
    /// fine-tuned models load too.
    pub fn build<T: Float>(&self, weights: &WeightSource) -> Result<Network<T>> {
        match self {
            Architecture::ResNet(c) => {
                let classes = weights.rows_of("fc.weight").unwrap_or(c.num_classes);
                ResNetConfig { num_classes: classes, ..c.clone() }.build(weights)
            }
            Architecture::Vgg(c) => {
                let classes = weights.rows_of("classifier.6.weight").unwrap_or(c.num_classes);
                VggConfig { num_classes: classes, ..c.clone() }.build(weights)
            }
        }
    }
}

/// The examples of `docs/torchvision.md`, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/torchvision.md")]
pub struct TorchvisionDocs;

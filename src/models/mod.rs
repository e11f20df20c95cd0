//! Ready-made architectures: torchvision's ResNets ([`ResNetConfig`]) and
//! VGGs ([`VggConfig`]), built from a [`WeightSource`] (a safetensors file of
//! a torchvision `state_dict`, or seeded He-normal random weights), and the
//! [`Network::residual`] helpers to write residual blocks by hand.
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

pub use crate::io::safetensors::Weights;
pub use resnet::{basic_block, bottleneck_block, BlockKind, ResNetConfig};
pub use vgg::{VggConfig, VggLayer};

use crate::backend::ConvGeometry;
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::layers::{BatchNorm2d, Conv2d, Linear};
use crate::network::{Network, Source};
use ndarray::{Array1, Array2, Array4, ArrayD, IxDyn};
use std::path::Path;

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
    /// The tensors of a safetensors file, under torchvision `state_dict` names.
    File(&'a Weights<'a>),
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
                let weight = w.get::<T>(&format!("{name}.weight"), &shape)?;
                let b = if bias {
                    Some(w.get::<T>(&format!("{name}.bias"), &[out])?)
                } else {
                    w.optional::<T>(&format!("{name}.bias"), &[out])?
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
                let v = |suffix: &str| w.vector::<T>(&format!("{name}.{suffix}"), channels);
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
                w.get::<T>(&format!("{name}.weight"), &[out, in_features])?,
                w.vector::<T>(&format!("{name}.bias"), out)?,
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

impl<T: Float> Network<T> {
    /// Loads a torchvision model saved as a safetensors `state_dict` (see
    /// `docs/torchvision.md`); `arch` names the architecture as
    /// [`Architecture::from_name`] does (`"resnet50"`, `"vgg16_bn"`, ...).
    ///
    /// ```no_run
    /// let net = rsp::Network::<f32>::load_torchvision("resnet50.safetensors", "resnet50").unwrap();
    /// ```
    pub fn load_torchvision(path: impl AsRef<Path>, arch: &str) -> Result<Self> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| RspError::Io { path: shown.clone(), source })?;
        Self::torchvision_from_bytes(&bytes, arch, &shown)
    }

    /// [`Network::load_torchvision`] from bytes in memory; `origin` names them in errors.
    pub fn torchvision_from_bytes(bytes: &[u8], arch: &str, origin: &str) -> Result<Self> {
        let architecture = Architecture::from_name(arch)?;
        let (weights, _) = Weights::parse(bytes, origin)?;
        architecture.build(&WeightSource::File(&weights))
    }

    /// Appends a residual block with an identity shortcut, reading the last
    /// node `x`: `main(net, x)` appends the main path and returns its end `m`;
    /// then the sum `m + x` is appended and returned (append the ReLU after
    /// it yourself). For the shortcut `x` relevance of both readers is summed.
    ///
    /// ```
    /// use rsp::layers::{AdaptiveAvgPool2d, Flatten, Linear, Relu};
    /// use rsp::models::WeightSource;
    /// let w = WeightSource::HeNormal { seed: 3 };
    /// let mut net = rsp::Network::<f64>::new();
    /// net.push(w.conv2d("stem", 3, 4, 3, 1, 1, false).unwrap());
    /// net.push(Relu);
    /// // y = relu(bn(conv(relu(bn(conv(x))))) + x)
    /// net.residual(|net, x| {
    ///     net.push_from(w.conv2d("block.conv1", 4, 4, 3, 1, 1, false)?, x);
    ///     net.push(w.batchnorm2d("block.bn1", 4)?);
    ///     net.push(Relu);
    ///     net.push(w.conv2d("block.conv2", 4, 4, 3, 1, 1, false)?);
    ///     Ok(net.push(w.batchnorm2d("block.bn2", 4)?))
    /// })
    /// .unwrap();
    /// let start = net.push(Relu);
    /// net.push(AdaptiveAvgPool2d::new((1, 1)));
    /// net.push(Flatten);
    /// net.push(w.linear("fc", 4, 2).unwrap());
    /// assert_eq!(rsp::Source::Node(net.default_start_layer().unwrap()), start);
    /// ```
    pub fn residual(&mut self, main: impl FnOnce(&mut Self, Source) -> Result<Source>) -> Result<Source> {
        self.residual_with(main, |_, x| Ok(x))
    }

    /// Appends a residual block reading the last node `x` with a shortcut
    /// path: `main(net, x)` and `shortcut(net, x)` each append their nodes
    /// and return their end; the sum `main + shortcut` is appended and returned.
    ///
    /// ```
    /// use rsp::layers::Relu;
    /// use rsp::models::WeightSource;
    /// let w = WeightSource::HeNormal { seed: 3 };
    /// let mut net = rsp::Network::<f32>::new();
    /// net.push(Relu);
    /// net.residual_with(
    ///     |net, x| Ok(net.push_from(w.conv2d("main", 3, 8, 3, 2, 1, false)?, x)),
    ///     |net, x| Ok(net.push_from(w.conv2d("shortcut", 3, 8, 1, 2, 0, false)?, x)),
    /// )
    /// .unwrap();
    /// assert_eq!(net.len(), 4); // relu, main conv, shortcut conv, add
    /// ```
    pub fn residual_with(
        &mut self,
        main: impl FnOnce(&mut Self, Source) -> Result<Source>,
        shortcut: impl FnOnce(&mut Self, Source) -> Result<Source>,
    ) -> Result<Source> {
        let x = self.last();
        let m = main(self, x)?;
        let s = shortcut(self, x)?;
        Ok(self.add(m, s))
    }
}

/// The examples of `docs/torchvision.md`, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/torchvision.md")]
pub struct TorchvisionDocs;

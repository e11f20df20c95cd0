//! torchvision's VGGs: [`VggConfig`] with the VGG-11/13/16/19 presets, with
//! or without batch norm.
//!
//! Layout: `features` (3×3 convolutions with padding 1 and a bias, each
//! followed by batch norm if asked and a ReLU; 2×2 max-pools of stride 2),
//! adaptive average pooling to 7×7, flatten, `classifier` (`classifier.0`
//! linear, ReLU, dropout, `classifier.3` linear, ReLU, dropout,
//! `classifier.6` linear). The weights are named after the index of their
//! module in `features`, as torchvision numbers them (`features.0`,
//! `features.1` for the first batch norm, ...).

use super::WeightSource;
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::layers::{AdaptiveAvgPool2d, Dropout, Flatten, MaxPool2d, Relu};
use crate::network::Network;

/// One entry of a VGG's `features` configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VggLayer {
    /// A 3×3 convolution with this many output channels (then batch norm, ReLU).
    Conv(usize),
    /// A 2×2 max-pool of stride 2.
    MaxPool,
}

/// A VGG: its features, batch norm or not, the pooled size, the classifier's
/// hidden width and the classes.
///
/// ```
/// use rsp::models::VggConfig;
/// let c = VggConfig::vgg16(true);
/// assert_eq!(c.conv_count(), 13);
/// assert_eq!((c.hidden, c.pool_output, c.num_classes), (4096, (7, 7), 1000));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VggConfig {
    /// The `features` configuration.
    pub features: Vec<VggLayer>,
    /// Batch norm after every convolution.
    pub batch_norm: bool,
    /// Input channels.
    pub in_channels: usize,
    /// Output size of the adaptive average pooling.
    pub pool_output: (usize, usize),
    /// Width of the two hidden classifier layers.
    pub hidden: usize,
    /// Number of classes.
    pub num_classes: usize,
}

fn parse(cfg: &[usize]) -> Vec<VggLayer> {
    // 0 marks a max-pool in the tables below.
    cfg.iter().map(|&c| if c == 0 { VggLayer::MaxPool } else { VggLayer::Conv(c) }).collect()
}

impl VggConfig {
    fn torchvision(cfg: &[usize], batch_norm: bool) -> Self {
        VggConfig {
            features: parse(cfg),
            batch_norm,
            in_channels: 3,
            pool_output: (7, 7),
            hidden: 4096,
            num_classes: 1000,
        }
    }

    /// torchvision's VGG-11 (configuration A).
    pub fn vgg11(batch_norm: bool) -> Self {
        Self::torchvision(&[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0], batch_norm)
    }

    /// torchvision's VGG-13 (configuration B).
    pub fn vgg13(batch_norm: bool) -> Self {
        Self::torchvision(&[64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0], batch_norm)
    }

    /// torchvision's VGG-16 (configuration D).
    pub fn vgg16(batch_norm: bool) -> Self {
        Self::torchvision(&[64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0], batch_norm)
    }

    /// torchvision's VGG-19 (configuration E).
    pub fn vgg19(batch_norm: bool) -> Self {
        Self::torchvision(
            &[64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0],
            batch_norm,
        )
    }

    /// Number of convolutions.
    pub fn conv_count(&self) -> usize {
        self.features.iter().filter(|l| matches!(l, VggLayer::Conv(_))).count()
    }

    /// Builds the network with weights under torchvision's `state_dict` names.
    ///
    /// ```
    /// use rsp::models::{VggConfig, VggLayer, WeightSource};
    /// let c = VggConfig {
    ///     features: vec![VggLayer::Conv(4), VggLayer::MaxPool, VggLayer::Conv(8), VggLayer::MaxPool],
    ///     batch_norm: true, in_channels: 3, pool_output: (2, 2), hidden: 16, num_classes: 5,
    /// };
    /// let net = c.build::<f32>(&WeightSource::HeNormal { seed: 2 }).unwrap();
    /// assert_eq!(net.nodes()[4].layer().unwrap().name(), "features.4"); // conv, bn, relu, pool, conv
    /// assert_eq!(net.forward(ndarray::Array4::ones((1, 3, 16, 16)).view()).unwrap().dim(), (1, 5));
    /// ```
    pub fn build<T: Float>(&self, weights: &WeightSource) -> Result<Network<T>> {
        if self.conv_count() == 0 || self.in_channels == 0 || self.hidden == 0 || self.num_classes == 0 {
            return Err(RspError::model(
                "a VGG needs a convolution, input channels, a hidden width and classes (all ≥ 1)",
            ));
        }
        if self.features.contains(&VggLayer::Conv(0)) || self.pool_output.0 == 0 || self.pool_output.1 == 0 {
            return Err(RspError::model("VGG convolution widths and the pooled size must be ≥ 1"));
        }
        let mut net = Network::new();
        let mut channels = self.in_channels;
        let mut k = 0; // index in torchvision's `features`
        for layer in &self.features {
            match *layer {
                VggLayer::MaxPool => {
                    net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
                    k += 1;
                }
                VggLayer::Conv(out) => {
                    net.push(weights.conv2d(&format!("features.{k}"), channels, out, 3, 1, 1, true)?);
                    k += 1;
                    if self.batch_norm {
                        net.push(weights.batchnorm2d(&format!("features.{k}"), out)?);
                        k += 1;
                    }
                    net.push(Relu);
                    k += 1;
                    channels = out;
                }
            }
        }
        net.push(AdaptiveAvgPool2d::new(self.pool_output));
        net.push(Flatten);
        let flat = channels
            .checked_mul(self.pool_output.0)
            .and_then(|v| v.checked_mul(self.pool_output.1))
            .ok_or_else(|| RspError::model("VGG classifier input size overflows"))?;
        net.push(weights.linear("classifier.0", flat, self.hidden)?);
        net.push(Relu);
        net.push(Dropout);
        net.push(weights.linear("classifier.3", self.hidden, self.hidden)?);
        net.push(Relu);
        net.push(Dropout);
        net.push(weights.linear("classifier.6", self.hidden, self.num_classes)?);
        Ok(net)
    }
}

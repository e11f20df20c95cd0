//! torchvision's ResNets: [`ResNetConfig`] with the `resnet18` … `resnet152`
//! presets, and the two block types as functions appending nodes
//! ([`basic_block`], [`bottleneck_block`]).
//!
//! Layout (torchvision, v1.5): `conv1` 7×7 stride 2 padding 3, `bn1`, ReLU,
//! max-pool 3×3 stride 2 padding 1, `layer1..layerK` (the first block of every
//! layer after the first has stride 2, on the 3×3 convolution of a
//! bottleneck; a block whose stride is not 1 or whose channels change has a
//! `downsample` shortcut: 1×1 convolution with that stride, then batch norm),
//! global average pooling, flatten, `fc`. The start layer of RSP is the ReLU
//! at the end of the last block, which [`Network::default_start_layer`] finds.

use super::WeightSource;
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::layers::{AdaptiveAvgPool2d, Flatten, MaxPool2d, Relu};
use crate::network::{Network, Source};

/// The residual block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34); expansion 1.
    Basic,
    /// 1×1, 3×3, 1×1 convolutions (ResNet-50/101/152); expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels per unit of width: 1 for basic, 4 for bottleneck blocks.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// A ResNet: block type, blocks per layer, widths per layer, stem width and classes.
///
/// ```
/// use rsp::models::{BlockKind, ResNetConfig};
/// let c = ResNetConfig::resnet50();
/// assert_eq!((c.block, c.layers.clone(), c.num_classes), (BlockKind::Bottleneck, vec![3, 4, 6, 3], 1000));
/// assert_eq!(c.out_channels(), 2048);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// The block type.
    pub block: BlockKind,
    /// Number of blocks in each layer (`layer1`, `layer2`, ...).
    pub layers: Vec<usize>,
    /// Width of each layer (a bottleneck's inner width; its output is 4× that).
    pub widths: Vec<usize>,
    /// Output channels of `conv1`.
    pub stem_width: usize,
    /// Number of classes (outputs of `fc`).
    pub num_classes: usize,
}

impl ResNetConfig {
    fn torchvision(block: BlockKind, layers: [usize; 4]) -> Self {
        ResNetConfig {
            block,
            layers: layers.to_vec(),
            widths: vec![64, 128, 256, 512],
            stem_width: 64,
            num_classes: 1000,
        }
    }

    /// torchvision's ResNet-18: basic blocks `[2, 2, 2, 2]`.
    pub fn resnet18() -> Self {
        Self::torchvision(BlockKind::Basic, [2, 2, 2, 2])
    }

    /// torchvision's ResNet-34: basic blocks `[3, 4, 6, 3]`.
    pub fn resnet34() -> Self {
        Self::torchvision(BlockKind::Basic, [3, 4, 6, 3])
    }

    /// torchvision's ResNet-50: bottleneck blocks `[3, 4, 6, 3]`.
    pub fn resnet50() -> Self {
        Self::torchvision(BlockKind::Bottleneck, [3, 4, 6, 3])
    }

    /// torchvision's ResNet-101: bottleneck blocks `[3, 4, 23, 3]`.
    pub fn resnet101() -> Self {
        Self::torchvision(BlockKind::Bottleneck, [3, 4, 23, 3])
    }

    /// torchvision's ResNet-152: bottleneck blocks `[3, 8, 36, 3]`.
    pub fn resnet152() -> Self {
        Self::torchvision(BlockKind::Bottleneck, [3, 8, 36, 3])
    }

    /// Channels of the last block's output (the input of `fc`).
    pub fn out_channels(&self) -> usize {
        self.widths.last().copied().unwrap_or(self.stem_width) * self.block.expansion()
    }

    /// Checks that the configuration describes a network.
    pub fn validate(&self) -> Result<()> {
        if self.layers.is_empty() || self.layers.len() != self.widths.len() {
            return Err(RspError::Model(format!(
                "a ResNet needs one width per layer and at least one layer, found layers {:?} and widths {:?}",
                self.layers, self.widths
            )));
        }
        if self.layers.contains(&0) || self.widths.contains(&0) || self.stem_width == 0 || self.num_classes == 0 {
            return Err(RspError::model("ResNet blocks per layer, widths, stem width and classes must all be ≥ 1"));
        }
        if self.widths.iter().any(|w| w.checked_mul(self.block.expansion()).is_none()) {
            return Err(RspError::model(format!("ResNet widths {:?} are too large", self.widths)));
        }
        Ok(())
    }

    /// Builds the network with weights under torchvision's `state_dict` names.
    ///
    /// ```
    /// use rsp::models::{BlockKind, ResNetConfig, WeightSource};
    /// let c = ResNetConfig { block: BlockKind::Bottleneck, layers: vec![1, 2], widths: vec![4, 8], stem_width: 8, num_classes: 10 };
    /// let net = c.build::<f64>(&WeightSource::HeNormal { seed: 0 }).unwrap();
    /// let x = ndarray::Array4::from_elem((1, 3, 40, 40), 0.1);
    /// assert_eq!(net.check(&[3, 40, 40]).unwrap()[net.default_start_layer().unwrap()], vec![32, 5, 5]);
    /// assert_eq!(net.forward(x.view()).unwrap().dim(), (1, 10));
    /// ```
    pub fn build<T: Float>(&self, weights: &WeightSource) -> Result<Network<T>> {
        self.validate()?;
        let mut net = Network::new();
        net.push(weights.conv2d("conv1", 3, self.stem_width, 7, 2, 3, false)?);
        net.push(weights.batchnorm2d("bn1", self.stem_width)?);
        net.push(Relu);
        net.push(MaxPool2d::new((3, 3), (2, 2), [1; 4]));
        let mut channels = self.stem_width;
        for (i, (&blocks, &width)) in self.layers.iter().zip(&self.widths).enumerate() {
            for b in 0..blocks {
                let stride = if i > 0 && b == 0 { 2 } else { 1 };
                let prefix = format!("layer{}.{b}", i + 1);
                channels = match self.block {
                    BlockKind::Basic => basic_block(&mut net, weights, &prefix, channels, width, stride)?,
                    BlockKind::Bottleneck => bottleneck_block(&mut net, weights, &prefix, channels, width, stride)?,
                };
            }
        }
        net.push(AdaptiveAvgPool2d::new((1, 1)));
        net.push(Flatten);
        net.push(weights.linear("fc", channels, self.num_classes)?);
        Ok(net)
    }
}

/// The `downsample` shortcut (1×1 convolution with `stride`, batch norm) if
/// the block needs one, else the identity.
fn shortcut<T: Float>(
    net: &mut Network<T>,
    x: Source,
    weights: &WeightSource,
    prefix: &str,
    in_channels: usize,
    out: usize,
    stride: usize,
) -> Result<Source> {
    if stride == 1 && in_channels == out {
        return Ok(x);
    }
    net.push_from(weights.conv2d(&format!("{prefix}.downsample.0"), in_channels, out, 1, stride, 0, false)?, x);
    Ok(net.push(weights.batchnorm2d(&format!("{prefix}.downsample.1"), out)?))
}

/// Appends torchvision's `BasicBlock` `prefix` reading the last node:
/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, 3×3 convolutions,
/// the first with `stride`. Returns the output channels (`width`).
///
/// ```
/// use rsp::layers::{AdaptiveAvgPool2d, Flatten, Relu};
/// use rsp::models::{basic_block, WeightSource};
/// let w = WeightSource::HeNormal { seed: 1 };
/// let mut net = rsp::Network::<f32>::new();
/// net.push(Relu);
/// let out = basic_block(&mut net, &w, "layer1.0", 3, 8, 2).unwrap(); // with a downsample
/// let end = net.len() - 1;
/// net.push(AdaptiveAvgPool2d::new((1, 1)));
/// net.push(Flatten);
/// net.push(w.linear("fc", out, 2).unwrap());
/// assert_eq!(net.check(&[3, 8, 8]).unwrap()[end], vec![8, 4, 4]);
/// assert_eq!(net.default_start_layer().unwrap(), end);
/// ```
pub fn basic_block<T: Float>(
    net: &mut Network<T>,
    weights: &WeightSource,
    prefix: &str,
    in_channels: usize,
    width: usize,
    stride: usize,
) -> Result<usize> {
    net.residual_with(
        |net, x| {
            net.push_from(weights.conv2d(&format!("{prefix}.conv1"), in_channels, width, 3, stride, 1, false)?, x);
            net.push(weights.batchnorm2d(&format!("{prefix}.bn1"), width)?);
            net.push(Relu);
            net.push(weights.conv2d(&format!("{prefix}.conv2"), width, width, 3, 1, 1, false)?);
            Ok(net.push(weights.batchnorm2d(&format!("{prefix}.bn2"), width)?))
        },
        |net, x| shortcut(net, x, weights, prefix, in_channels, width, stride),
    )?;
    net.push(Relu);
    Ok(width)
}

/// Appends torchvision's `Bottleneck` `prefix` reading the last node: 1×1
/// (`width`), 3×3 with `stride`, 1×1 (`4 × width`) convolutions each with
/// batch norm, ReLUs between, plus the shortcut, then a ReLU. Returns the
/// output channels (`4 × width`).
///
/// ```
/// use rsp::layers::{AdaptiveAvgPool2d, Flatten, Relu};
/// use rsp::models::{bottleneck_block, WeightSource};
/// let w = WeightSource::HeNormal { seed: 1 };
/// let mut net = rsp::Network::<f32>::new();
/// net.push(Relu);
/// let out = bottleneck_block(&mut net, &w, "layer1.0", 8, 2, 1).unwrap();
/// assert_eq!(net.len(), 1 + 8 + 1 + 1); // no downsample: 8 → 4·2 channels, stride 1
/// net.push(AdaptiveAvgPool2d::new((1, 1)));
/// net.push(Flatten);
/// net.push(w.linear("fc", out, 2).unwrap());
/// assert_eq!(net.check(&[8, 6, 6]).unwrap()[10], vec![8, 6, 6]);
/// ```
pub fn bottleneck_block<T: Float>(
    net: &mut Network<T>,
    weights: &WeightSource,
    prefix: &str,
    in_channels: usize,
    width: usize,
    stride: usize,
) -> Result<usize> {
    let out = width * BlockKind::Bottleneck.expansion();
    net.residual_with(
        |net, x| {
            net.push_from(weights.conv2d(&format!("{prefix}.conv1"), in_channels, width, 1, 1, 0, false)?, x);
            net.push(weights.batchnorm2d(&format!("{prefix}.bn1"), width)?);
            net.push(Relu);
            net.push(weights.conv2d(&format!("{prefix}.conv2"), width, width, 3, stride, 1, false)?);
            net.push(weights.batchnorm2d(&format!("{prefix}.bn2"), width)?);
            net.push(Relu);
            net.push(weights.conv2d(&format!("{prefix}.conv3"), width, out, 1, 1, 0, false)?);
            Ok(net.push(weights.batchnorm2d(&format!("{prefix}.bn3"), out)?))
        },
        |net, x| shortcut(net, x, weights, prefix, in_channels, out, stride),
    )?;
    net.push(Relu);
    Ok(out)
}

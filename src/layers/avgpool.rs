//! Average pooling, fixed ([`AvgPool2d`]) and adaptive ([`AdaptiveAvgPool2d`]):
//! forward, gradient and the pooling RSP rule (with `x̃ = x + 1e-9`).

use super::{as_chw, check_same_shape, Layer, LayerCost, LayerKind, RuleContext};
use crate::backend::{Backend, PoolWindows, Tensor};
use crate::error::{Result, RspError};
use crate::float::Float;
use ndarray::{ArrayD, ArrayViewD};

/// Average pooling with kernel, stride and zero padding; output size rounded
/// down. With padding, `count_include_pad` chooses the divisor (the kernel
/// area, as PyTorch's default and ONNX's `count_include_pad=1`, or the cells
/// inside the input).
///
/// ```
/// use rsp::backend::CpuBackend;
/// use rsp::layers::{AvgPool2d, Layer};
/// let pool = AvgPool2d::new((2, 2), (2, 2));
/// let x = ndarray::Array3::from_shape_vec((1, 2, 2), vec![1.0, 2.0, 3.0, 6.0]).unwrap().into_dyn();
/// assert_eq!(pool.forward(&CpuBackend, x.view()).unwrap().as_slice().unwrap(), &[3.0]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvgPool2d {
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Vertical and horizontal stride.
    pub stride: (usize, usize),
    /// Padding `[top, left, bottom, right]`.
    pub padding: [usize; 4],
    /// Whether padding cells count in the divisor.
    pub count_include_pad: bool,
}

impl AvgPool2d {
    /// Average pooling without padding (PyTorch's `AvgPool2d(kernel, stride)`).
    pub fn new(kernel: (usize, usize), stride: (usize, usize)) -> Self {
        AvgPool2d { kernel, stride, padding: [0; 4], count_include_pad: true }
    }

    /// The pooling windows (with their divisor) for one input sample of shape
    /// `input` (`C×H×W`), for rules written outside the layer.
    ///
    /// ```
    /// let win = rsp::layers::AvgPool2d::new((2, 2), (2, 2)).pool_windows(&[3, 4, 6]).unwrap();
    /// assert_eq!(win.output_hw(), (2, 3));
    /// ```
    pub fn pool_windows(&self, input: &[usize]) -> Result<PoolWindows> {
        AveragePooling::windows(self, input)
    }
}

/// PyTorch's adaptive average pooling to a fixed output size; output `o`
/// averages rows `floor(o·In/Out) .. ceil((o+1)·In/Out)` (likewise columns).
/// An output of 1×1 is global average pooling.
///
/// ```
/// use rsp::backend::CpuBackend;
/// use rsp::layers::{AdaptiveAvgPool2d, Layer};
/// let gap = AdaptiveAvgPool2d::new((1, 1));
/// let x = ndarray::Array3::from_shape_vec((1, 2, 2), vec![1.0, 2.0, 3.0, 6.0]).unwrap().into_dyn();
/// assert_eq!(gap.forward(&CpuBackend, x.view()).unwrap().as_slice().unwrap(), &[3.0]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdaptiveAvgPool2d {
    /// Output height and width.
    pub output: (usize, usize),
}

impl AdaptiveAvgPool2d {
    /// Adaptive average pooling to `output` = (height, width).
    pub fn new(output: (usize, usize)) -> Self {
        AdaptiveAvgPool2d { output }
    }

    /// The pooling windows for one input sample of shape `input` (`C×H×W`),
    /// for rules written outside the layer.
    ///
    /// ```
    /// let win = rsp::layers::AdaptiveAvgPool2d::new((1, 1)).pool_windows(&[3, 4, 5]).unwrap();
    /// assert_eq!(win.output_hw(), (1, 1));
    /// ```
    pub fn pool_windows(&self, input: &[usize]) -> Result<PoolWindows> {
        AveragePooling::windows(self, input)
    }
}

fn sample_hw(input: &[usize], layer: &str) -> Result<(usize, usize)> {
    if input.len() != 3 {
        return Err(RspError::shape(format!("input of {layer}"), "a C×H×W sample", input));
    }
    Ok((input[1], input[2]))
}

trait AveragePooling {
    const LABEL: &'static str;
    fn windows(&self, input: &[usize]) -> Result<PoolWindows>;
}

impl AveragePooling for AvgPool2d {
    const LABEL: &'static str = "avgpool2d";
    fn windows(&self, input: &[usize]) -> Result<PoolWindows> {
        let hw = sample_hw(input, Self::LABEL)?;
        let mut win = PoolWindows::strided(hw, self.kernel, self.stride, self.padding).ok_or_else(|| {
            RspError::shape(
                "input of avgpool2d",
                format!("a padded size of at least the {}×{} kernel", self.kernel.0, self.kernel.1),
                input,
            )
        })?;
        if self.count_include_pad || self.padding == [0; 4] {
            win.divisor = Some(self.kernel.0 * self.kernel.1);
        }
        Ok(win)
    }
}

impl AveragePooling for AdaptiveAvgPool2d {
    const LABEL: &'static str = "adaptive_avgpool2d";
    fn windows(&self, input: &[usize]) -> Result<PoolWindows> {
        let hw = sample_hw(input, Self::LABEL)?;
        PoolWindows::adaptive(hw, self.output).ok_or_else(|| {
            RspError::shape(
                "input of adaptive_avgpool2d",
                "a C×H×W sample with H, W ≥ 1 (and an output size ≥ 1)",
                input,
            )
        })
    }
}

fn output_shape<P: AveragePooling>(pool: &P, input: &[usize]) -> Result<Vec<usize>> {
    let (oh, ow) = pool.windows(input)?.output_hw();
    Ok(vec![input[0], oh, ow])
}

fn forward<T: Float, P: AveragePooling>(pool: &P, backend: &dyn Backend<T>, x: ArrayViewD<T>) -> Result<ArrayD<T>> {
    let win = pool.windows(x.shape())?;
    Ok(backend.avg_pool(as_chw(x, P::LABEL)?, &win)?.into_dyn())
}

fn gradient<T: Float, P: AveragePooling>(
    pool: &P,
    backend: &dyn Backend<T>,
    x: ArrayViewD<T>,
    g: ArrayViewD<T>,
) -> Result<ArrayD<T>> {
    let out = output_shape(pool, x.shape())?;
    check_same_shape(&format!("gradient at the output of {}", P::LABEL), &out, g.shape())?;
    let win = pool.windows(x.shape())?;
    Ok(backend.avg_pool_adjoint(as_chw(g, P::LABEL)?, &win)?.into_dyn())
}

fn rsp_backward<T: Float, P: AveragePooling>(
    pool: &P,
    backend: &dyn Backend<T>,
    x: ArrayViewD<T>,
    r: ArrayViewD<T>,
) -> Result<ArrayD<T>> {
    let out = output_shape(pool, x.shape())?;
    check_same_shape(&format!("relevance at the output of {}", P::LABEL), &out, r.shape())?;
    let win = pool.windows(x.shape())?;
    Ok(crate::backend::pooling::avg_pool_rule(backend, as_chw(x, P::LABEL)?, as_chw(r, P::LABEL)?, &win)?.into_dyn())
}

/// The two average poolings differ only in their windows and description:
/// one `Layer` implementation serves both.
macro_rules! average_pooling_layer {
    ($pool:ty, $describe:expr) => {
        impl<T: Float> Layer<T> for $pool {
            fn kind(&self) -> LayerKind {
                LayerKind::AvgPool2d
            }
            fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
                output_shape(self, input)
            }
            fn forward(&self, backend: &dyn Backend<T>, x: ArrayViewD<T>) -> Result<ArrayD<T>> {
                forward(self, backend, x)
            }
            fn forward_batch(
                &self,
                backend: &dyn Backend<T>,
                x: &Tensor<T>,
                _parameters: &[Tensor<T>],
            ) -> Result<Tensor<T>> {
                let win = self.windows(super::sample_shape(x))?;
                backend.avg_pool_batch(x, &win)
            }
            fn gradient_batch(
                &self,
                backend: &dyn Backend<T>,
                x: &Tensor<T>,
                grad_output: &Tensor<T>,
                _parameters: &[Tensor<T>],
            ) -> Result<Tensor<T>> {
                let win = self.windows(super::sample_shape(x))?;
                let (oh, ow) = win.output_hw();
                let context = format!("gradient at the output of {}", <$pool as AveragePooling>::LABEL);
                super::check_batch_output(&context, x, &[x.shape()[1], oh, ow], grad_output)?;
                backend.avg_pool_adjoint_batch(grad_output, &win)
            }
            fn rsp_backward_batch(
                &self,
                backend: &dyn Backend<T>,
                x: &Tensor<T>,
                relevance: &Tensor<T>,
                _parameters: &[Tensor<T>],
                _ctx: RuleContext,
            ) -> Result<Tensor<T>> {
                let win = self.windows(super::sample_shape(x))?;
                let (oh, ow) = win.output_hw();
                let context = format!("relevance at the output of {}", <$pool as AveragePooling>::LABEL);
                super::check_batch_output(&context, x, &[x.shape()[1], oh, ow], relevance)?;
                backend.avg_pool_rule_batch(x, relevance, &win)
            }
            fn gradient(
                &self,
                backend: &dyn Backend<T>,
                x: ArrayViewD<T>,
                grad_output: ArrayViewD<T>,
            ) -> Result<ArrayD<T>> {
                gradient(self, backend, x, grad_output)
            }
            fn rsp_backward(
                &self,
                backend: &dyn Backend<T>,
                x: ArrayViewD<T>,
                relevance: ArrayViewD<T>,
                _ctx: RuleContext,
            ) -> Result<ArrayD<T>> {
                rsp_backward(self, backend, x, relevance)
            }
            /// Forward pass, gradient (one adjoint) and rule (one pooling,
            /// two adjoints): five scans of every window.
            fn cost(&self, input: &[usize], output: &[usize]) -> LayerCost {
                super::maxpool::pooling_cost(self.windows(input).ok().as_ref(), input, output, 5)
            }
            fn describe(&self) -> String {
                let describe: fn(&$pool) -> String = $describe;
                describe(self)
            }
        }
    };
}

average_pooling_layer!(AvgPool2d, |p| {
    let [pt, pl, pb, pr] = p.padding;
    format!(
        "avgpool2d kernel {}×{} stride {}×{} padding [{pt},{pl},{pb},{pr}]",
        p.kernel.0, p.kernel.1, p.stride.0, p.stride.1
    )
});
average_pooling_layer!(AdaptiveAvgPool2d, |p| format!("adaptive_avgpool2d output {}×{}", p.output.0, p.output.1));

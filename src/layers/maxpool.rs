//! Max pooling: forward, gradient (to the first maximal element), its RSP rule
//! and its LRP rule (winner-take-all, routed like the gradient).

use super::{as_chw, check_same_shape, Layer, LayerCost, LayerKind, RuleContext};
use crate::backend::{Backend, PoolWindows, Tensor};
use crate::error::{Result, RspError};
use crate::float::Float;
use ndarray::{ArrayD, ArrayViewD};

/// Max pooling with kernel, stride and padding (padding cells are −∞ and
/// never win); output size rounded down. Ties go to the first maximal element
/// in row-major window order, in the gradient and in the RSP rule.
///
/// ```
/// use rsp::backend::CpuBackend;
/// use rsp::layers::{Layer, MaxPool2d};
/// let pool = MaxPool2d::new((2, 2), (2, 2), [0; 4]);
/// let x = ndarray::Array3::from_shape_vec((1, 2, 2), vec![1.0, 3.0, 3.0, 2.0]).unwrap().into_dyn();
/// let g = pool.gradient(&CpuBackend, x.view(), ndarray::Array3::ones((1, 1, 1)).into_dyn().view()).unwrap();
/// assert_eq!(g.as_slice().unwrap(), &[0.0, 1.0, 0.0, 0.0]); // the first of the tied 3s wins
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Vertical and horizontal stride.
    pub stride: (usize, usize),
    /// Padding `[top, left, bottom, right]`.
    pub padding: [usize; 4],
}

impl MaxPool2d {
    /// A max pooling layer.
    pub fn new(kernel: (usize, usize), stride: (usize, usize), padding: [usize; 4]) -> Self {
        MaxPool2d { kernel, stride, padding }
    }

    fn windows(&self, input: &[usize]) -> Result<PoolWindows> {
        if input.len() != 3 {
            return Err(RspError::shape("input of maxpool2d", "a C×H×W sample", input));
        }
        PoolWindows::strided((input[1], input[2]), self.kernel, self.stride, self.padding).ok_or_else(|| {
            RspError::shape(
                "input of maxpool2d",
                format!(
                    "a padded size of at least the {}×{} kernel (padding smaller than the kernel, stride ≥ 1)",
                    self.kernel.0, self.kernel.1
                ),
                input,
            )
        })
    }
}

impl<T: Float> Layer<T> for MaxPool2d {
    fn kind(&self) -> LayerKind {
        LayerKind::MaxPool2d
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let (oh, ow) = self.windows(input)?.output_hw();
        Ok(vec![input[0], oh, ow])
    }

    fn forward(&self, backend: &dyn Backend<T>, x: ArrayViewD<T>) -> Result<ArrayD<T>> {
        let win = self.windows(x.shape())?;
        Ok(backend.max_pool(as_chw(x, "maxpool2d")?, &win)?.0.into_dyn())
    }

    fn forward_batch(&self, backend: &dyn Backend<T>, x: &Tensor<T>, _parameters: &[Tensor<T>]) -> Result<Tensor<T>> {
        let win = self.windows(super::sample_shape(x))?;
        backend.max_pool_batch(x, &win)
    }

    fn gradient_batch(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        grad_output: &Tensor<T>,
        parameters: &[Tensor<T>],
    ) -> Result<Tensor<T>> {
        let _ = parameters;
        let win = self.windows(super::sample_shape(x))?;
        let (oh, ow) = win.output_hw();
        super::check_batch_output("gradient at the output of maxpool2d", x, &[x.shape()[1], oh, ow], grad_output)?;
        backend.max_pool_adjoint_batch(x, grad_output, &win)
    }

    fn rsp_backward_batch(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        relevance: &Tensor<T>,
        parameters: &[Tensor<T>],
        ctx: RuleContext,
    ) -> Result<Tensor<T>> {
        let _ = (parameters, ctx);
        let win = self.windows(super::sample_shape(x))?;
        let (oh, ow) = win.output_hw();
        super::check_batch_output("relevance at the output of maxpool2d", x, &[x.shape()[1], oh, ow], relevance)?;
        backend.max_pool_rule_batch(x, relevance, &win)
    }

    fn gradient(&self, backend: &dyn Backend<T>, x: ArrayViewD<T>, grad_output: ArrayViewD<T>) -> Result<ArrayD<T>> {
        let win = self.windows(x.shape())?;
        let (oh, ow) = win.output_hw();
        check_same_shape("gradient at the output of maxpool2d", &[x.shape()[0], oh, ow], grad_output.shape())?;
        let (_, argmax) = backend.max_pool(as_chw(x, "maxpool2d")?, &win)?;
        Ok(backend.max_pool_adjoint(as_chw(grad_output, "maxpool2d")?, argmax.view(), win.input_hw)?.into_dyn())
    }

    fn rsp_backward(
        &self,
        backend: &dyn Backend<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        _ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        let win = self.windows(x.shape())?;
        let (oh, ow) = win.output_hw();
        check_same_shape("relevance at the output of maxpool2d", &[x.shape()[0], oh, ow], relevance.shape())?;
        // `x̃ ⊙ maxpoolᵀ(P ⊘ z) + x̃ ⊙ maxpoolᵀ(N ⊘ z)` with `x̃ = x + 1e-9`, `z = maxpool(x̃)`,
        // in one pass (see `pool_rule.rs` for the composed form average pooling uses).
        let rin = backend.max_pool_rule(as_chw(x, "maxpool2d")?, as_chw(relevance, "maxpool2d")?, &win)?;
        Ok(rin.into_dyn())
    }

    /// The forward pass, the gradient and the rule each scan every window
    /// once; a scan step counts [`POOL_STEP_WORK`](crate::limits::POOL_STEP_WORK)
    /// multiply–adds. Temporaries: the maxima's positions and, in the rule,
    /// two routed maps of the input's size besides the result.
    fn cost(&self, input: &[usize], output: &[usize]) -> LayerCost {
        pooling_cost(self.windows(input).ok().as_ref(), input, output, 3)
    }

    fn describe(&self) -> String {
        let [pt, pl, pb, pr] = self.padding;
        format!(
            "maxpool2d kernel {}×{} stride {}×{} padding [{pt},{pl},{pb},{pr}]",
            self.kernel.0, self.kernel.1, self.stride.0, self.stride.1
        )
    }
}

/// The cost of a pooling layer whose passes scan every window `scans` times in
/// all: `scans × C × Σ|window| × POOL_STEP_WORK`, and temporaries of `4X + 3Y`
/// elements (input and output sizes `X`, `Y`).
pub(crate) fn pooling_cost(windows: Option<&PoolWindows>, input: &[usize], output: &[usize], scans: u64) -> LayerCost {
    let (x, y) = (super::elements(input), super::elements(output));
    let channels = input.first().copied().unwrap_or(1) as u64;
    let cells = windows.map_or(x, |w| channels.saturating_mul(w.window_cells()));
    LayerCost {
        scratch_elements: x.saturating_mul(4).saturating_add(y.saturating_mul(3)),
        pooled_buffer_elements: 0,
        work: cells
            .saturating_mul(scans)
            .saturating_mul(crate::limits::POOL_STEP_WORK)
            .saturating_add(x.saturating_mul(4)),
    }
}

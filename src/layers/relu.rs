//! Rectified linear unit. RSP and LRP rules: identity.

use super::{check_same_shape, Layer, LayerKind, RuleContext};
use crate::backend::{Backend, Tensor};
use crate::error::Result;
use crate::float::Float;
use ndarray::{ArrayD, ArrayViewD};

/// `max(x, 0)`; relevance passes through unchanged; gradient `[x > 0]` (0 at 0, as PyTorch).
///
/// ```
/// use rsp::backend::CpuBackend;
/// use rsp::layers::{Layer, Relu};
/// let g = Relu.gradient(&CpuBackend, ndarray::arr1(&[-1.0f32, 0.0, 2.0]).into_dyn().view(),
///                       ndarray::arr1(&[5.0f32, 5.0, 5.0]).into_dyn().view()).unwrap();
/// assert_eq!(g.as_slice().unwrap(), &[0.0, 0.0, 5.0]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Relu;

impl<T: Float> Layer<T> for Relu {
    fn kind(&self) -> LayerKind {
        LayerKind::Relu
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn forward(&self, _backend: &dyn Backend<T>, x: ArrayViewD<T>) -> Result<ArrayD<T>> {
        let mut out = x.to_owned();
        out.par_mapv_inplace(|v| v.max(T::zero()));
        Ok(out)
    }

    fn forward_batch(&self, backend: &dyn Backend<T>, x: &Tensor<T>, _parameters: &[Tensor<T>]) -> Result<Tensor<T>> {
        backend.relu_batch(x)
    }

    fn gradient_batch(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        grad_output: &Tensor<T>,
        parameters: &[Tensor<T>],
    ) -> Result<Tensor<T>> {
        let _ = parameters;
        super::check_batch_output("gradient at the output of relu", x, super::sample_shape(x), grad_output)?;
        backend.relu_gradient_batch(x, grad_output)
    }

    fn rsp_backward_batch(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        relevance: &Tensor<T>,
        parameters: &[Tensor<T>],
        ctx: RuleContext,
    ) -> Result<Tensor<T>> {
        let _ = (backend, parameters, ctx);
        super::check_batch_output("relevance at the output of relu", x, super::sample_shape(x), relevance)?;
        Ok(relevance.clone())
    }

    fn gradient(&self, _backend: &dyn Backend<T>, x: ArrayViewD<T>, grad_output: ArrayViewD<T>) -> Result<ArrayD<T>> {
        check_same_shape("gradient at the output of relu", x.shape(), grad_output.shape())?;
        Ok(crate::backend::rules::relu_gradient(x, grad_output))
    }

    fn rsp_backward(
        &self,
        _backend: &dyn Backend<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        _ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        check_same_shape("relevance at the output of relu", x.shape(), relevance.shape())?;
        Ok(relevance.to_owned())
    }

    fn describe(&self) -> String {
        "relu".into()
    }
}

//! Dropout: the identity at inference, for the forward pass, the gradient, RSP and LRP.

use super::{check_same_shape, Layer, LayerKind, RuleContext};
use crate::backend::{Backend, Tensor};
use crate::error::Result;
use crate::float::Float;
use ndarray::{ArrayD, ArrayViewD};

/// Dropout at inference: the identity.
///
/// ```
/// use rsp::backend::CpuBackend;
/// use rsp::layers::{Dropout, Layer};
/// let x = ndarray::arr1(&[1.0f64, -2.0]).into_dyn();
/// assert_eq!(Dropout.forward(&CpuBackend, x.view()).unwrap(), x);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Dropout;

impl<T: Float> Layer<T> for Dropout {
    fn kind(&self) -> LayerKind {
        LayerKind::Dropout
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn forward(&self, _backend: &dyn Backend<T>, x: ArrayViewD<T>) -> Result<ArrayD<T>> {
        Ok(x.to_owned())
    }

    fn forward_batch(&self, _backend: &dyn Backend<T>, x: &Tensor<T>, _parameters: &[Tensor<T>]) -> Result<Tensor<T>> {
        // Identity at inference: the same tensor, no copy.
        Ok(x.clone())
    }

    fn gradient_batch(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        grad_output: &Tensor<T>,
        parameters: &[Tensor<T>],
    ) -> Result<Tensor<T>> {
        let _ = (backend, parameters);
        super::check_batch_output("gradient at the output of dropout", x, super::sample_shape(x), grad_output)?;
        Ok(grad_output.clone())
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
        super::check_batch_output("relevance at the output of dropout", x, super::sample_shape(x), relevance)?;
        Ok(relevance.clone())
    }

    fn gradient(&self, _backend: &dyn Backend<T>, x: ArrayViewD<T>, grad_output: ArrayViewD<T>) -> Result<ArrayD<T>> {
        check_same_shape("gradient at the output of dropout", x.shape(), grad_output.shape())?;
        Ok(grad_output.to_owned())
    }

    fn rsp_backward(
        &self,
        _backend: &dyn Backend<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        _ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        check_same_shape("relevance at the output of dropout", x.shape(), relevance.shape())?;
        Ok(relevance.to_owned())
    }

    fn describe(&self) -> String {
        "dropout".into()
    }
}

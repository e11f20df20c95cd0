//! Flatten a sample to a vector. Gradient, RSP and LRP reshape back.

use super::{check_same_shape, Layer, LayerKind, RuleContext};
use crate::backend::{Backend, Tensor};
use crate::error::Result;
use crate::float::Float;
use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// Flattens one sample (`C×H×W`, row-major) to a vector of `C·H·W` features.
///
/// ```
/// use rsp::backend::CpuBackend;
/// use rsp::layers::{Flatten, Layer};
/// let x = ndarray::Array3::<f32>::zeros((2, 3, 4)).into_dyn();
/// assert_eq!(Flatten.forward(&CpuBackend, x.view()).unwrap().shape(), &[24]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Flatten;

fn reshape<T: Float>(x: ArrayViewD<T>, shape: &[usize]) -> ArrayD<T> {
    x.as_standard_layout().into_owned().into_shape_with_order(IxDyn(shape)).expect("same number of elements")
}

impl<T: Float> Layer<T> for Flatten {
    fn kind(&self) -> LayerKind {
        LayerKind::Flatten
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(vec![input.iter().product()])
    }

    fn forward(&self, _backend: &dyn Backend<T>, x: ArrayViewD<T>) -> Result<ArrayD<T>> {
        Ok(reshape(x.view(), &[x.len()]))
    }

    fn forward_batch(&self, _backend: &dyn Backend<T>, x: &Tensor<T>, _parameters: &[Tensor<T>]) -> Result<Tensor<T>> {
        // Every backend stores row-major buffers: flattening only renames the shape.
        let n = x.shape().first().copied().unwrap_or(0);
        let features = super::sample_shape(x).iter().product();
        x.reshaped(vec![n, features])
    }

    fn gradient_batch(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        grad_output: &Tensor<T>,
        parameters: &[Tensor<T>],
    ) -> Result<Tensor<T>> {
        let _ = (backend, parameters);
        let n = x.shape().first().copied().unwrap_or(0);
        super::check_batch_output("gradient at the output of flatten", x, &[x.len() / n.max(1)], grad_output)?;
        grad_output.reshaped(x.shape().to_vec())
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
        let n = x.shape().first().copied().unwrap_or(0);
        super::check_batch_output("relevance at the output of flatten", x, &[x.len() / n.max(1)], relevance)?;
        relevance.reshaped(x.shape().to_vec())
    }

    fn gradient(&self, _backend: &dyn Backend<T>, x: ArrayViewD<T>, grad_output: ArrayViewD<T>) -> Result<ArrayD<T>> {
        check_same_shape("gradient at the output of flatten", &[x.len()], grad_output.shape())?;
        Ok(reshape(grad_output, x.shape()))
    }

    fn rsp_backward(
        &self,
        _backend: &dyn Backend<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        _ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        check_same_shape("relevance at the output of flatten", &[x.len()], relevance.shape())?;
        Ok(reshape(relevance, x.shape()))
    }

    fn describe(&self) -> String {
        "flatten".into()
    }
}

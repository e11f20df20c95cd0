//! Fully connected layer. Its RSP rule is the sectional rule of a 1×1
//! convolution on a 1×1 map (see `sectional.rs`).

use super::{check_same_shape, Layer, LayerCost, LayerKind, ParameterMut, RuleContext};
use crate::backend::rules::sectional_rule;
use crate::backend::{Backend, ConvGeometry, HostParameter, Tensor};
use crate::error::{check_finite, Result, RspError};
use crate::float::Float;
use ndarray::{Array1, Array2, ArrayD, ArrayViewD, Axis};
use std::sync::Arc;

/// `y = W x + b` with `W` of shape `out×in` (PyTorch's layout).
///
/// ```
/// use rsp::backend::CpuBackend;
/// use rsp::layers::{Layer, Linear};
/// let fc = Linear::new("fc", ndarray::arr2(&[[1.0, 2.0], [0.0, -1.0]]), Some(ndarray::arr1(&[0.5, 0.0]))).unwrap();
/// let y = fc.forward(&CpuBackend, ndarray::arr1(&[1.0, 1.0]).into_dyn().view()).unwrap();
/// assert_eq!(y, ndarray::arr1(&[3.5, -1.0]).into_dyn());
/// ```
#[derive(Clone, Debug)]
pub struct Linear<T> {
    name: String,
    // Shared with the backends' parameter tensors; `parameters_mut` copies on write.
    weight: Arc<Array2<T>>,
    bias: Option<Arc<Array1<T>>>,
}

impl<T: Float> Linear<T> {
    /// A linear layer with weights `out×in` and an optional bias of length `out`.
    pub fn new(name: impl Into<String>, weight: Array2<T>, bias: Option<Array1<T>>) -> Result<Self> {
        let name = name.into();
        if weight.is_empty() {
            return Err(RspError::shape(format!("weight of linear {name}"), "out×in with both ≥ 1", weight.shape()));
        }
        if let Some(b) = &bias {
            check_same_shape(&format!("bias of linear {name}"), &[weight.nrows()], b.shape())?;
            check_finite(|| format!("bias of linear {name}"), b)?;
        }
        check_finite(|| format!("weight of linear {name}"), &weight)?;
        let weight = Arc::new(weight.as_standard_layout().into_owned());
        let bias = bias.map(|b| Arc::new(b.as_standard_layout().into_owned()));
        Ok(Linear { name, weight, bias })
    }

    /// The weights `out×in`.
    pub fn weight(&self) -> &Array2<T> {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Array1<T>> {
        self.bias.as_deref()
    }

    fn check_input(&self, input: &[usize]) -> Result<()> {
        let features = self.weight.ncols();
        if input != [features] {
            return Err(RspError::shape(
                format!("input of linear {}", self.name),
                format!("a vector of {features} features (add a flatten layer before it)"),
                input,
            ));
        }
        Ok(())
    }
}

impl<T: Float> Linear<T> {
    /// The shapes of a batch gradient step: `x` the layer's input, `grad_output` at its output.
    fn check_gradient_batch(&self, x: &Tensor<T>, grad_output: &Tensor<T>) -> Result<()> {
        self.check_input(super::sample_shape(x))?;
        let context = format!("gradient at the output of linear {}", self.name);
        super::check_batch_output(&context, x, &[self.weight.nrows()], grad_output)
    }
}

impl<T: Float> Layer<T> for Linear<T> {
    fn kind(&self) -> LayerKind {
        LayerKind::Linear
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.check_input(input)?;
        Ok(vec![self.weight.nrows()])
    }

    fn forward(&self, backend: &dyn Backend<T>, x: ArrayViewD<T>) -> Result<ArrayD<T>> {
        self.check_input(x.shape())?;
        let column = x.into_shape_with_order((self.weight.ncols(), 1)).expect("checked vector");
        let mut y = backend.matmul(self.weight.view(), column)?.remove_axis(Axis(1));
        if let Some(b) = &self.bias {
            y += &**b;
        }
        Ok(y.into_dyn())
    }

    fn backend_parameters(&self) -> Vec<HostParameter<T>> {
        let mut params = vec![HostParameter::shared(&self.weight)];
        params.extend(self.bias.as_ref().map(HostParameter::shared));
        params
    }

    fn forward_batch(&self, backend: &dyn Backend<T>, x: &Tensor<T>, parameters: &[Tensor<T>]) -> Result<Tensor<T>> {
        self.check_input(super::sample_shape(x))?;
        backend.linear_batch(x, &parameters[0], parameters.get(1))
    }

    fn gradient_batch(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        grad_output: &Tensor<T>,
        parameters: &[Tensor<T>],
    ) -> Result<Tensor<T>> {
        self.check_gradient_batch(x, grad_output)?;
        backend.linear_adjoint_batch(grad_output, &parameters[0])
    }

    fn gradient_batch_grouped(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        grad_output: &Tensor<T>,
        parameters: &[Tensor<T>],
        groups: &[usize],
    ) -> Result<Tensor<T>> {
        self.check_gradient_batch(x, grad_output)?;
        backend.linear_adjoint_grouped(grad_output, &parameters[0], groups)
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
        self.check_input(super::sample_shape(x))?;
        let (o, i) = self.weight.dim();
        super::check_batch_output(&format!("relevance at the output of linear {}", self.name), x, &[o], relevance)?;
        // The sectional rule on a 1×1 map, as the per-sample rule.
        let n = x.shape()[0];
        let x_map = x.reshaped(vec![n, i, 1, 1])?;
        let r_map = relevance.reshaped(vec![n, o, 1, 1])?;
        backend.sectional_rule_batch(&x_map, &r_map, &ConvGeometry::square(1, 0), (1, 1))?.reshaped(vec![n, i])
    }

    fn gradient(&self, backend: &dyn Backend<T>, x: ArrayViewD<T>, grad_output: ArrayViewD<T>) -> Result<ArrayD<T>> {
        self.check_input(x.shape())?;
        check_same_shape(
            &format!("gradient at the output of linear {}", self.name),
            &[self.weight.nrows()],
            grad_output.shape(),
        )?;
        let column = grad_output.into_shape_with_order((self.weight.nrows(), 1)).expect("checked vector");
        Ok(backend.matmul(self.weight.t(), column)?.remove_axis(Axis(1)).into_dyn())
    }

    fn rsp_backward(
        &self,
        backend: &dyn Backend<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        _ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        self.check_input(x.shape())?;
        let (o, i) = self.weight.dim();
        check_same_shape(&format!("relevance at the output of linear {}", self.name), &[o], relevance.shape())?;
        let x_map = x.into_shape_with_order((i, 1, 1)).expect("checked vector");
        let r_map = relevance.into_shape_with_order((o, 1, 1)).expect("checked vector");
        let rin = sectional_rule(backend, x_map, r_map, &ConvGeometry::square(1, 0), (1, 1))?;
        Ok(rin.into_shape_with_order(i).expect("i×1×1").into_dyn())
    }

    fn cost(&self, input: &[usize], output: &[usize]) -> LayerCost {
        let (o, i) = self.weight.dim();
        let _ = (input, output);
        super::conv2d::conv_cost(&[i, 1, 1], &[o, 1, 1], (1, 1))
    }

    fn parameters_mut(&mut self) -> Vec<ParameterMut<'_, T>> {
        let mut params = vec![("weight", Arc::make_mut(&mut self.weight).view_mut().into_dyn())];
        if let Some(b) = &mut self.bias {
            params.push(("bias", Arc::make_mut(b).view_mut().into_dyn()));
        }
        params
    }

    fn describe(&self) -> String {
        format!("linear {} {}→{}", self.name, self.weight.ncols(), self.weight.nrows())
    }
}

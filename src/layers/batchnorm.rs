//! Batch normalisation at inference: forward, gradient, its RSP rule and its
//! LRP rule (the identity on relevance).

use super::{as_chw, check_same_shape, Layer, LayerKind, ParameterMut, RuleContext};
use crate::backend::{Backend, HostParameter, Tensor};
use crate::error::{check_finite, Result, RspError};
use crate::float::Float;
use ndarray::{Array1, ArrayD, ArrayViewD, Axis, Zip};
use std::sync::Arc;

/// `z = γ (x − μ)/sqrt(σ² + ε) + β` per channel, with running statistics.
///
/// RSP rule (as released): with `w_c = γ_c / sqrt(σ²_c² + ε)` (the variance
/// squared, which only decides which `w_c` are zero), the bias share
/// `b = β_c·[R ≠ 0] ⊘ n_c` (`n_c` = nonzero relevances of channel `c`) is
/// removed and added back: `R_in = x ⊙ ((R−b) ⊘ (x·w))·w + x ⊙ (b ⊘ (x·w))·w`,
/// i.e. `R` wherever `x·w ≠ 0` and `0` elsewhere.
///
/// ```
/// use rsp::backend::CpuBackend;
/// use rsp::layers::{BatchNorm2d, Layer};
/// use ndarray::arr1;
/// let bn = BatchNorm2d::new("bn", arr1(&[2.0]), arr1(&[1.0]), arr1(&[0.5]), arr1(&[4.0]), 0.0).unwrap();
/// let x = ndarray::Array3::from_elem((1, 1, 1), 2.5).into_dyn();
/// assert_eq!(bn.forward(&CpuBackend, x.view()).unwrap()[[0, 0, 0]], 3.0); // 2·(2.5−0.5)/2 + 1
/// ```
#[derive(Clone, Debug)]
pub struct BatchNorm2d<T> {
    name: String,
    gamma: Array1<T>,
    beta: Array1<T>,
    mean: Array1<T>,
    var: Array1<T>,
    eps: T,
}

impl<T: Float> BatchNorm2d<T> {
    /// Batch norm with scale `γ`, shift `β`, running mean and variance (all of
    /// one length, the channel count) and `ε`.
    pub fn new(
        name: impl Into<String>,
        gamma: Array1<T>,
        beta: Array1<T>,
        mean: Array1<T>,
        var: Array1<T>,
        eps: T,
    ) -> Result<Self> {
        let name = name.into();
        let c = gamma.len();
        if c == 0 {
            return Err(RspError::model(format!("batchnorm2d {name} has no channels")));
        }
        for (what, t) in [("bias", &beta), ("running_mean", &mean), ("running_var", &var)] {
            check_same_shape(&format!("{what} of batchnorm2d {name}"), &[c], t.shape())?;
        }
        for (what, t) in [("weight", &gamma), ("bias", &beta), ("running_mean", &mean), ("running_var", &var)] {
            check_finite(|| format!("{what} of batchnorm2d {name}"), t)?;
        }
        if !eps.is_finite()
            || eps < T::zero()
            || var.iter().any(|&v| v < T::zero() || v + eps <= T::zero() || v * v + eps <= T::zero())
        {
            return Err(RspError::model(format!("batchnorm2d {name}: ε must be finite, the running variance ≥ 0, and ε + variance > 0 (also ε + variance²)")));
        }
        Ok(BatchNorm2d { name, gamma, beta, mean, var, eps })
    }

    /// `(γ, β, running mean, running variance, ε)`.
    pub fn parameters(&self) -> (&Array1<T>, &Array1<T>, &Array1<T>, &Array1<T>, T) {
        (&self.gamma, &self.beta, &self.mean, &self.var, self.eps)
    }

    fn check(&self, input: &[usize]) -> Result<()> {
        let c = self.gamma.len();
        if input.len() != 3 || input[0] != c {
            return Err(RspError::shape(format!("input of batchnorm2d {}", self.name), format!("{c}×H×W"), input));
        }
        Ok(())
    }

    /// The rule's weight per channel: as released, `γ / sqrt(σ⁴ + ε)` (the
    /// variance squared inside the square root).
    fn rule_weight(&self) -> Array1<T> {
        Zip::from(&self.gamma).and(&self.var).map_collect(|&g, &v| g / (v * v + self.eps).sqrt())
    }

    /// The forward scale `γ / sqrt(σ² + ε)` per channel.
    fn scale(&self) -> Array1<T> {
        Zip::from(&self.gamma).and(&self.var).map_collect(|&g, &v| g / (v + self.eps).sqrt())
    }
}

impl<T: Float> Layer<T> for BatchNorm2d<T> {
    fn kind(&self) -> LayerKind {
        LayerKind::BatchNorm2d
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.check(input)?;
        Ok(input.to_vec())
    }

    fn forward(&self, _backend: &dyn Backend<T>, x: ArrayViewD<T>) -> Result<ArrayD<T>> {
        self.check(x.shape())?;
        let mut z = as_chw(x, &self.name)?.to_owned();
        let scale = self.scale();
        for (c, mut plane) in z.axis_iter_mut(Axis(0)).enumerate() {
            let (m, s, b) = (self.mean[c], scale[c], self.beta[c]);
            plane.mapv_inplace(|v| (v - m) * s + b);
        }
        Ok(z.into_dyn())
    }

    /// The running mean, the forward scale, β and the rule's weight (small
    /// per-channel vectors, computed once per upload).
    fn backend_parameters(&self) -> Vec<HostParameter<T>> {
        [self.mean.clone(), self.scale(), self.beta.clone(), self.rule_weight()]
            .map(|p| HostParameter::shared(&Arc::new(p)))
            .into()
    }

    fn forward_batch(&self, backend: &dyn Backend<T>, x: &Tensor<T>, parameters: &[Tensor<T>]) -> Result<Tensor<T>> {
        self.check(super::sample_shape(x))?;
        backend.channel_affine_batch(x, &parameters[0], &parameters[1], &parameters[2])
    }

    fn gradient_batch(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        grad_output: &Tensor<T>,
        parameters: &[Tensor<T>],
    ) -> Result<Tensor<T>> {
        self.check(super::sample_shape(x))?;
        let context = format!("gradient at the output of batchnorm2d {}", self.name);
        super::check_batch_output(&context, x, super::sample_shape(x), grad_output)?;
        backend.channel_scale_batch(grad_output, &parameters[1])
    }

    fn rsp_backward_batch(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        relevance: &Tensor<T>,
        parameters: &[Tensor<T>],
        ctx: RuleContext,
    ) -> Result<Tensor<T>> {
        let _ = ctx;
        self.check(super::sample_shape(x))?;
        let context = format!("relevance at the output of batchnorm2d {}", self.name);
        super::check_batch_output(&context, x, super::sample_shape(x), relevance)?;
        backend.batch_norm_rule_batch(x, relevance, &parameters[3], &parameters[2])
    }

    fn gradient(&self, _backend: &dyn Backend<T>, x: ArrayViewD<T>, grad_output: ArrayViewD<T>) -> Result<ArrayD<T>> {
        self.check(x.shape())?;
        check_same_shape(
            &format!("gradient at the output of batchnorm2d {}", self.name),
            x.shape(),
            grad_output.shape(),
        )?;
        Ok(crate::backend::rules::channel_scale(grad_output, self.scale().view()))
    }

    fn rsp_backward(
        &self,
        _backend: &dyn Backend<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        _ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        self.check(x.shape())?;
        check_same_shape(
            &format!("relevance at the output of batchnorm2d {}", self.name),
            x.shape(),
            relevance.shape(),
        )?;
        let x = as_chw(x, &self.name)?;
        let r = as_chw(relevance, &self.name)?;
        Ok(crate::backend::rules::batch_norm_rule(x, r, self.rule_weight().view(), self.beta.view()).into_dyn())
    }

    fn parameters_mut(&mut self) -> Vec<ParameterMut<'_, T>> {
        vec![("weight", self.gamma.view_mut().into_dyn()), ("bias", self.beta.view_mut().into_dyn())]
    }

    fn describe(&self) -> String {
        format!("batchnorm2d {} {} channels eps {}", self.name, self.gamma.len(), self.eps)
    }
}

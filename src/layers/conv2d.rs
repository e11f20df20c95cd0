//! 2-D convolution: forward pass, gradient, the z^B rule (input layer) and
//! the sectional rule (every other layer).

use super::{as_chw, check_same_shape, Layer, LayerCost, LayerKind, ParameterMut, RuleContext};
use crate::backend::rules::{sectional_rule, zb_rule};
use crate::backend::{Backend, ConvGeometry, HostParameter, Tensor};
use crate::error::{check_finite, Result, RspError};
use crate::float::Float;
use ndarray::{Array1, Array3, Array4, ArrayD, ArrayView3, ArrayViewD, Zip};
use std::sync::Arc;

/// A 2-D convolution (cross-correlation) with optional bias, any kernel size,
/// stride and zero padding.
///
/// ```
/// use rsp::backend::{ConvGeometry, CpuBackend};
/// use rsp::layers::{Conv2d, Layer};
/// use ndarray::{Array1, Array3, Array4};
/// let conv = Conv2d::new("c", Array4::<f64>::ones((4, 3, 3, 3)), Some(Array1::zeros(4)), ConvGeometry::square(2, 1)).unwrap();
/// let y = conv.forward(&CpuBackend, Array3::ones((3, 8, 6)).into_dyn().view()).unwrap();
/// assert_eq!(y.shape(), &[4, 4, 3]);
/// assert_eq!(y[[0, 1, 1]], 27.0); // a full 3×3×3 window of ones
/// ```
#[derive(Clone, Debug)]
pub struct Conv2d<T> {
    name: String,
    // Shared with the backends' parameter tensors (a host backend reads them
    // without a copy); `parameters_mut` copies on write.
    weight: Arc<Array4<T>>,
    bias: Option<Arc<Array1<T>>>,
    geometry: ConvGeometry,
}

impl<T: Float> Conv2d<T> {
    /// A convolution with weights `O×C×kh×kw` and an optional bias of length `O`.
    pub fn new(
        name: impl Into<String>,
        weight: Array4<T>,
        bias: Option<Array1<T>>,
        geometry: ConvGeometry,
    ) -> Result<Self> {
        let name = name.into();
        let (o, c, kh, kw) = weight.dim();
        if o == 0 || c == 0 || kh == 0 || kw == 0 {
            return Err(RspError::shape(
                format!("weight of conv2d {name}"),
                "O×C×kh×kw with every size ≥ 1",
                weight.shape(),
            ));
        }
        if geometry.stride.contains(&0) {
            return Err(RspError::model(format!("conv2d {name}: stride must be ≥ 1")));
        }
        if let Some(b) = &bias {
            check_same_shape(&format!("bias of conv2d {name}"), &[o], b.shape())?;
            check_finite(|| format!("bias of conv2d {name}"), b)?;
        }
        check_finite(|| format!("weight of conv2d {name}"), &weight)?;
        let weight = Arc::new(weight.as_standard_layout().into_owned());
        let bias = bias.map(|b| Arc::new(b.as_standard_layout().into_owned()));
        Ok(Conv2d { name, weight, bias, geometry })
    }

    /// The weights `O×C×kh×kw`.
    pub fn weight(&self) -> &Array4<T> {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Array1<T>> {
        self.bias.as_deref()
    }

    /// Stride and padding.
    pub fn geometry(&self) -> &ConvGeometry {
        &self.geometry
    }

    fn kernel_hw(&self) -> (usize, usize) {
        let (_, _, kh, kw) = self.weight.dim();
        (kh, kw)
    }

    /// The z^B rule (RSP's and LRP's rule for the input layer) for one
    /// sample `x` (`C×H×W`) and the relevance `r` at the output, with the
    /// bounds `ℓ = min x`, `h = max x` of the whole sample, zero-padded like `x`:
    /// `Z = conv(x,W) − conv(ℓ,W⁺) − conv(h,W⁻)`, `S = R ⊘ Z`,
    /// `R_in = x ⊙ convᵀ(S,W) − ℓ ⊙ convᵀ(S,W⁺) − h ⊙ convᵀ(S,W⁻)`.
    /// The caller checks the shapes (`r` of the output's shape).
    ///
    /// ```
    /// use rsp::backend::{ConvGeometry, CpuBackend};
    /// use rsp::layers::Conv2d;
    /// use rsp::ndarray::{Array3, Array4};
    /// let conv = Conv2d::new("c", Array4::from_elem((1, 1, 1, 1), 2.0f64), None, ConvGeometry::square(1, 0)).unwrap();
    /// let x = Array3::from_shape_vec((1, 1, 2), vec![0.0, 1.0]).unwrap();
    /// let r = Array3::from_shape_vec((1, 1, 2), vec![1.0, 1.0]).unwrap();
    /// // ℓ = 0: Z = 2x, and each input keeps the relevance of its output where Z ≠ 0.
    /// assert_eq!(conv.zb_rule(&CpuBackend, x.view(), r.view()).unwrap().into_raw_vec_and_offset().0, vec![0.0, 1.0]);
    /// ```
    pub fn zb_rule(&self, backend: &dyn Backend<T>, x: ArrayView3<T>, r: ArrayView3<T>) -> Result<Array3<T>> {
        zb_rule(backend, x, r, self.weight.view(), &self.geometry)
    }
}

/// The cost of a convolution (also a linear layer: a 1×1 kernel on a 1×1 map)
/// reading `input` (C×H×W) and writing `output` (O×Ho×Wo). With `X`, `Y` the
/// input and output sizes, `K = C·kh·kw·Ho·Wo` the unfolded input and `W` the
/// weights: the z^B rule holds at most `6X + 6Y + K + 2W` elements at once (the
/// sectional and LRP rules less), and the scratch pool keeps buffers of up to
/// `max(K, 2Y)` elements. Work: the forward pass and the gradient are one
/// product each, the sectional rule three with up to `2·O` rows (the z^B rule
/// six with `O`): `8·O·K` multiply–adds, plus element-wise steps.
pub(crate) fn conv_cost(input: &[usize], output: &[usize], (kh, kw): (usize, usize)) -> LayerCost {
    let (x, y) = (super::elements(input), super::elements(output));
    let channels = input.first().copied().unwrap_or(1) as u64;
    let out_channels = output.first().copied().unwrap_or(1) as u64;
    let positions = y / out_channels.max(1);
    let unfolded = channels.saturating_mul((kh * kw) as u64).saturating_mul(positions);
    let weights = out_channels.saturating_mul(channels).saturating_mul((kh * kw) as u64);
    let sum = |terms: &[u64]| terms.iter().fold(0u64, |a, &t| a.saturating_add(t));
    LayerCost {
        scratch_elements: sum(&[x.saturating_mul(6), y.saturating_mul(6), unfolded, weights.saturating_mul(2)]),
        pooled_buffer_elements: unfolded.max(y.saturating_mul(2)),
        work: sum(&[
            unfolded.saturating_mul(out_channels).saturating_mul(8),
            x.saturating_mul(10),
            y.saturating_mul(10),
        ]),
    }
}

impl<T: Float> Layer<T> for Conv2d<T> {
    fn kind(&self) -> LayerKind {
        LayerKind::Conv2d
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let (o, c, kh, kw) = self.weight.dim();
        let context = format!("input of conv2d {}", self.name);
        if input.len() != 3 || input[0] != c {
            return Err(RspError::shape(context, format!("{c}×H×W"), input));
        }
        let (oh, ow) = self.geometry.output_size((input[1], input[2]), (kh, kw)).ok_or_else(|| {
            RspError::shape(context, format!("a padded size of at least the {kh}×{kw} kernel"), input)
        })?;
        Ok(vec![o, oh, ow])
    }

    fn forward(&self, backend: &dyn Backend<T>, x: ArrayViewD<T>) -> Result<ArrayD<T>> {
        self.output_shape(x.shape())?;
        let mut z = backend.conv2d(as_chw(x, &self.name)?, self.weight.view(), &self.geometry)?;
        if let Some(b) = &self.bias {
            Zip::from(z.outer_iter_mut()).and(&**b).par_for_each(|mut plane, &bv| plane += bv);
        }
        Ok(z.into_dyn())
    }

    fn backend_parameters(&self) -> Vec<HostParameter<T>> {
        let mut params = vec![HostParameter::shared(&self.weight)];
        params.extend(self.bias.as_ref().map(HostParameter::shared));
        params
    }

    fn forward_batch(&self, backend: &dyn Backend<T>, x: &Tensor<T>, parameters: &[Tensor<T>]) -> Result<Tensor<T>> {
        self.output_shape(super::sample_shape(x))?;
        backend.conv2d_batch(x, &parameters[0], parameters.get(1), &self.geometry)
    }

    fn gradient_batch(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        grad_output: &Tensor<T>,
        parameters: &[Tensor<T>],
    ) -> Result<Tensor<T>> {
        let out = self.output_shape(super::sample_shape(x))?;
        super::check_batch_output(&format!("gradient at the output of conv2d {}", self.name), x, &out, grad_output)?;
        let hw = (x.shape()[2], x.shape()[3]);
        backend.conv2d_input_adjoint_batch(grad_output, &parameters[0], &self.geometry, hw)
    }

    fn rsp_backward_batch(
        &self,
        backend: &dyn Backend<T>,
        x: &Tensor<T>,
        relevance: &Tensor<T>,
        parameters: &[Tensor<T>],
        ctx: RuleContext,
    ) -> Result<Tensor<T>> {
        let out = self.output_shape(super::sample_shape(x))?;
        super::check_batch_output(&format!("relevance at the output of conv2d {}", self.name), x, &out, relevance)?;
        if ctx.is_input_layer {
            backend.zb_rule_batch(x, relevance, &parameters[0], &self.geometry)
        } else {
            backend.sectional_rule_batch(x, relevance, &self.geometry, self.kernel_hw())
        }
    }

    fn gradient(&self, backend: &dyn Backend<T>, x: ArrayViewD<T>, grad_output: ArrayViewD<T>) -> Result<ArrayD<T>> {
        let out = self.output_shape(x.shape())?;
        check_same_shape(&format!("gradient at the output of conv2d {}", self.name), &out, grad_output.shape())?;
        let hw = (x.shape()[1], x.shape()[2]);
        Ok(backend
            .conv2d_input_adjoint(as_chw(grad_output, &self.name)?, self.weight.view(), &self.geometry, hw)?
            .into_dyn())
    }

    fn rsp_backward(
        &self,
        backend: &dyn Backend<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        let out = self.output_shape(x.shape())?;
        check_same_shape(&format!("relevance at the output of conv2d {}", self.name), &out, relevance.shape())?;
        let x = as_chw(x, &self.name)?;
        let r = as_chw(relevance, &self.name)?;
        let rin = if ctx.is_input_layer {
            self.zb_rule(backend, x, r)?
        } else {
            sectional_rule(backend, x, r, &self.geometry, self.kernel_hw())?
        };
        Ok(rin.into_dyn())
    }

    fn cost(&self, input: &[usize], output: &[usize]) -> LayerCost {
        let (kh, kw) = self.kernel_hw();
        conv_cost(input, output, (kh, kw))
    }

    fn parameters_mut(&mut self) -> Vec<ParameterMut<'_, T>> {
        let mut params = vec![("weight", Arc::make_mut(&mut self.weight).view_mut().into_dyn())];
        if let Some(b) = &mut self.bias {
            params.push(("bias", Arc::make_mut(b).view_mut().into_dyn()));
        }
        params
    }

    fn describe(&self) -> String {
        let (o, c, kh, kw) = self.weight.dim();
        let [sh, sw] = self.geometry.stride;
        let [pt, pl, pb, pr] = self.geometry.padding;
        format!("conv2d {} {c}→{o} kernel {kh}×{kw} stride {sh}×{sw} padding [{pt},{pl},{pb},{pr}]", self.name)
    }
}

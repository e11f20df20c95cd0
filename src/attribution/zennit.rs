//! zennit's LRP composites `EpsilonPlusFlat` and `EpsilonGammaBox`, number for
//! number (zennit 0.5.1, the reference PyTorch LRP library; its `rules.py`,
//! `composites.py` and `core.py` define them): each layer kind mapped to
//! zennit's rule, with zennit's defaults and bias handling. The network runs
//! with its batch norms folded into the convolutions first, as zennit's
//! `SequentialMergeBatchNorm` leaves it ([`crate::canonize::merge_batch_norm_as_zennit`]);
//! [`Network::explain`](crate::Network::explain) does that for
//! [`Method::EpsilonPlusFlat`](super::Method::EpsilonPlusFlat) and
//! [`Method::EpsilonGammaBox`](super::Method::EpsilonGammaBox).
//!
//! | layer | `epsilon-plus-flat` | `epsilon-gamma-box` |
//! |---|---|---|
//! | `Conv2d` reading the network input | Flat | ZBox(low, high) |
//! | `Conv2d` elsewhere | ZPlus | Gamma(γ = 0.25) |
//! | `Linear` reading the network input | Flat | Epsilon(ε = 1e-6) |
//! | `Linear` elsewhere | Epsilon(ε = 1e-6) | Epsilon(ε = 1e-6) |
//! | `AvgPool2d`, `AdaptiveAvgPool2d`, residual `Add` | Norm | Norm |
//! | `MaxPool2d` | the gradient | the gradient |
//! | `Relu`, `BatchNorm2d` (one not folded), `Dropout`, `Flatten` | Pass (unchanged, reshaped back) | same |
//!
//! Every denominator `z` is stabilised as zennit's `stabilize` does:
//! `z + 1e-6·sign(z)` with `sign(0) = +1`. The walk starts from the one-hot
//! target at the logits (value 1, zennit's usual call). The formulas of each
//! rule are at its function below and in `docs/methods.md`.

use super::walk::{LayerStep, Rules, TensorRules};
use crate::backend::{Backend, ConvGeometry, PoolWindows, Tensor};
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::layers::{
    check_same_shape, AdaptiveAvgPool2d, AvgPool2d, Conv2d, Layer, LayerKind, Linear, MaxPool2d, RuleContext,
};
use ndarray::{Array1, Array3, Array4, ArrayD, ArrayView1, ArrayView3, ArrayView4, ArrayViewD, CowArray};
use ndarray::{Axis, Ix3, IxDyn, Zip};

/// zennit's default ε of the ε-rule and of every other rule's stabiliser.
pub const ZENNIT_EPSILON: f64 = 1e-6;

/// zennit's default γ of the Gamma rule in `EpsilonGammaBox`.
pub const ZENNIT_GAMMA: f64 = 0.25;

/// One of zennit's two composites, as [`Rules`] for the one graph walk (see
/// the module's table). Run it with [`Network::explain`](crate::Network::explain)
/// through [`Method::EpsilonPlusFlat`](super::Method::EpsilonPlusFlat) or
/// [`Method::EpsilonGammaBox`](super::Method::EpsilonGammaBox), which fold
/// batch norm first as zennit does; through
/// [`Network::explain_rules`](crate::Network::explain_rules) a batch norm
/// stays in place and passes relevance unchanged.
///
/// ```
/// use rsp::attribution::{Rules, ZennitComposite};
/// use rsp::backend::CpuBackend;
/// use rsp::layers::{Linear, RuleContext};
/// // Flat on a first linear layer: every input gets an equal share, whatever x and W.
/// let fc = Linear::new("fc", rsp::ndarray::arr2(&[[1.0f64, -3.0]]), Some(rsp::ndarray::arr1(&[5.0]))).unwrap();
/// let x = rsp::ndarray::arr1(&[4.0, 1.0]).into_dyn();
/// let r = rsp::ndarray::arr1(&[2.0]).into_dyn();
/// let first = RuleContext { is_input_layer: true, ..Default::default() };
/// let rin = ZennitComposite::EpsilonPlusFlat.layer(&CpuBackend, &fc, x.view(), r.view(), first).unwrap();
/// let share = 2.0 / (2.0 + 1e-6);
/// assert_eq!(rin, rsp::ndarray::arr1(&[share, share]).into_dyn());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ZennitComposite {
    /// `EpsilonPlusFlat`: Flat on the first layer, ZPlus on the other
    /// convolutions, Epsilon(1e-6) on linear layers.
    EpsilonPlusFlat,
    /// `EpsilonGammaBox`: ZBox(`low`, `high`) on the first convolution,
    /// Gamma(0.25) on the other convolutions, Epsilon(1e-6) on linear layers.
    /// `low` and `high` are the lowest and highest values the network's input
    /// can take (after any normalisation).
    EpsilonGammaBox {
        /// The lowest input value.
        low: f64,
        /// The highest input value.
        high: f64,
    },
}

impl<T: Float> Rules<T> for ZennitComposite {
    fn name(&self) -> &'static str {
        match self {
            ZennitComposite::EpsilonPlusFlat => "epsilon-plus-flat",
            ZennitComposite::EpsilonGammaBox { .. } => "epsilon-gamma-box",
        }
    }

    fn layer(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        self.rule_at(backend, layer, x, None, relevance, ctx)
    }

    /// Epsilon's, Gamma's and ZBox's `z = conv(x, W) + b` is the layer's
    /// output: reused, not recomputed.
    fn layer_given_output(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        output: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        self.rule_at(backend, layer, x, Some(output), relevance, ctx)
    }

    /// zennit's Norm on the sum: `S = R ⊘ stab(a + b)`, `R_a = a ⊙ S`, `R_b = b ⊙ S`.
    fn add(&self, a: ArrayViewD<T>, b: ArrayViewD<T>, r: ArrayViewD<T>) -> Result<(ArrayD<T>, ArrayD<T>)> {
        let mut ra = ArrayD::zeros(r.raw_dim());
        let mut rb = ArrayD::zeros(r.raw_dim());
        Zip::from(&mut ra).and(&mut rb).and(&a).and(&b).and(&r).for_each(|ra, rb, &av, &bv, &rv| {
            let s = rv / stabilize(av + bv);
            *ra = av * s;
            *rb = bv * s;
        });
        Ok((ra, rb))
    }

    /// The one-hot target, value 1 (zennit's usual call of its attributors).
    fn seed(&self, logits: ArrayView1<T>, target: usize) -> ArrayD<T> {
        let mut seed = ArrayD::zeros(IxDyn(&[logits.len()]));
        seed[[target]] = T::one();
        seed
    }

    fn on_tensors(&self) -> Option<&dyn TensorRules<T>> {
        Some(self)
    }
}

/// The same composite on whole batches of backend tensors (each rule's
/// steps as on the host, in the same order, so the host backends give the
/// same bits).
impl<T: Float> TensorRules<T> for ZennitComposite {
    fn layer(&self, step: &LayerStep<'_, T>) -> Result<Tensor<T>> {
        step.check_relevance()?;
        let (backend, layer, x, r) = (step.backend, step.layer, step.input, step.relevance);
        if let Some(conv) = layer.downcast_ref::<Conv2d<T>>() {
            let affine = AffineOnBackend {
                backend,
                weight: step.parameters[0].clone(),
                bias: step.parameters.get(1),
                geometry: *conv.geometry(),
                output: step.output,
            };
            return match (*self, step.ctx.is_input_layer) {
                (ZennitComposite::EpsilonPlusFlat, true) => affine.flat(x, r),
                (ZennitComposite::EpsilonPlusFlat, false) => affine.z_plus(x, r),
                (ZennitComposite::EpsilonGammaBox { low, high }, true) => affine.z_box(x, r, low, high),
                (ZennitComposite::EpsilonGammaBox { .. }, false) => affine.gamma(x, r, ZENNIT_GAMMA),
            };
        }
        if layer.downcast_ref::<Linear<T>>().is_some() {
            // A 1×1 convolution on a 1×1 map, as on the host.
            let (n, i, o) = (x.shape()[0], x.shape()[1], r.shape()[1]);
            let output = step.output.reshaped(vec![n, o, 1, 1])?;
            let affine = AffineOnBackend {
                backend,
                weight: step.parameters[0].reshaped(vec![o, i, 1, 1])?,
                bias: step.parameters.get(1),
                geometry: ConvGeometry::square(1, 0),
                output: &output,
            };
            let (x, r) = (x.reshaped(vec![n, i, 1, 1])?, r.reshaped(vec![n, o, 1, 1])?);
            let rin = if step.ctx.is_input_layer && *self == ZennitComposite::EpsilonPlusFlat {
                affine.flat(&x, &r)?
            } else {
                affine.epsilon(&x, &r)?
            };
            return rin.reshaped(vec![n, i]);
        }
        if layer.downcast_ref::<MaxPool2d>().is_some() {
            return layer.gradient_batch(backend, x, r, step.parameters);
        }
        let windows = if let Some(pool) = layer.downcast_ref::<AvgPool2d>() {
            Some(pool.pool_windows(&x.shape()[1..])?)
        } else if let Some(pool) = layer.downcast_ref::<AdaptiveAvgPool2d>() {
            Some(pool.pool_windows(&x.shape()[1..])?)
        } else {
            None
        };
        if let Some(windows) = windows {
            // Norm: `R_in = x ⊙ poolᵀ(R ⊘ stab(pool(x)))`.
            let z = backend.avg_pool_batch(x, &windows)?;
            let s = backend.stabilised_divide_batch(r, &z, Some(T::of(ZENNIT_EPSILON)))?;
            return backend.mul_batch(x, &backend.avg_pool_adjoint_batch(&s, &windows)?);
        }
        match layer.kind() {
            LayerKind::Relu | LayerKind::Dropout | LayerKind::BatchNorm2d | LayerKind::Flatten => {
                r.reshaped(x.shape().to_vec())
            }
            _ => Err(RspError::Model(format!(
                "layer `{}` has no rule in zennit's {} composite",
                layer.describe(),
                Rules::<T>::name(self)
            ))),
        }
    }

    /// Norm on the sum, as on the host.
    fn add(
        &self,
        backend: &dyn Backend<T>,
        a: &Tensor<T>,
        b: &Tensor<T>,
        relevance: &Tensor<T>,
    ) -> Result<(Tensor<T>, Tensor<T>)> {
        let s = backend.stabilised_divide_batch(relevance, &backend.add_batch(a, b)?, Some(T::of(ZENNIT_EPSILON)))?;
        Ok((backend.mul_batch(a, &s)?, backend.mul_batch(b, &s)?))
    }

    /// The one-hot target, value 1, as on the host.
    fn seed(&self, backend: &dyn Backend<T>, logits: &Tensor<T>, classes: &[usize]) -> Result<Tensor<T>> {
        backend.one_hot_batch(classes, logits.shape().get(1).copied().unwrap_or(0))
    }
}

/// A convolution's parameters on the backend, with the layer's forward output
/// `z = conv(x, W) + b` (a linear layer: a 1×1 convolution on a 1×1 map):
/// the rules below on whole batches, step for step as their host versions.
struct AffineOnBackend<'a, T: Float> {
    backend: &'a dyn Backend<T>,
    weight: Tensor<T>,
    bias: Option<&'a Tensor<T>>,
    geometry: ConvGeometry,
    output: &'a Tensor<T>,
}

impl<T: Float> AffineOnBackend<'_, T> {
    fn hw(x: &Tensor<T>) -> (usize, usize) {
        (x.shape()[2], x.shape()[3])
    }

    fn epsilon_t() -> Option<T> {
        Some(T::of(ZENNIT_EPSILON))
    }

    /// `conv(x, w)` plus `bias` when given.
    fn conv(&self, x: &Tensor<T>, w: &Tensor<T>, bias: Option<&Tensor<T>>) -> Result<Tensor<T>> {
        self.backend.conv2d_batch(x, w, bias, &self.geometry)
    }

    fn adjoint(&self, s: &Tensor<T>, w: &Tensor<T>, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.backend.conv2d_input_adjoint_batch(s, w, &self.geometry, Self::hw(x))
    }

    /// The bias modified as `clamp` modifies the weights (zennit modifies the
    /// bias with the weights).
    fn bias_clamped(&self, low: Option<T>, high: Option<T>) -> Result<Option<Tensor<T>>> {
        self.bias.map(|b| self.backend.clamp(b, low, high)).transpose()
    }

    /// `x⁺` and `x⁻`, or `x` and `None` when no sample has a negative input
    /// (after a ReLU): the host rule's `sign_parts`.
    fn sign_parts(&self, x: &Tensor<T>) -> Result<(Tensor<T>, Option<Tensor<T>>)> {
        let zero = Some(T::zero());
        if self.backend.samples_with_negatives(x)?.contains(&true) {
            Ok((self.backend.clamp(x, zero, None)?, Some(self.backend.clamp(x, None, zero)?)))
        } else {
            Ok((x.clone(), None))
        }
    }

    /// [`epsilon`] on the backend.
    fn epsilon(&self, x: &Tensor<T>, r: &Tensor<T>) -> Result<Tensor<T>> {
        let s = self.backend.stabilised_divide_batch(r, self.output, Self::epsilon_t())?;
        self.backend.mul_batch(x, &self.adjoint(&s, &self.weight, x)?)
    }

    /// [`z_plus`] on the backend.
    fn z_plus(&self, x: &Tensor<T>, r: &Tensor<T>) -> Result<Tensor<T>> {
        let (b, zero) = (self.backend, Some(T::zero()));
        let (x_pos, x_neg) = self.sign_parts(x)?;
        let w_pos = b.clamp(&self.weight, zero, None)?;
        let mut z = self.conv(&x_pos, &w_pos, self.bias_clamped(zero, None)?.as_ref())?;
        let w_neg = match &x_neg {
            Some(xn) => {
                let w_neg = b.clamp(&self.weight, None, zero)?;
                z = b.add_batch(&z, &self.conv(xn, &w_neg, None)?)?;
                Some(w_neg)
            }
            None => None,
        };
        let s = b.stabilised_divide_batch(r, &z, Self::epsilon_t())?;
        let rin = b.mul_batch(&x_pos, &self.adjoint(&s, &w_pos, x)?)?;
        match (&x_neg, &w_neg) {
            (Some(xn), Some(wn)) => b.add_batch(&rin, &b.mul_batch(xn, &self.adjoint(&s, wn, x)?)?),
            _ => Ok(rin),
        }
    }

    /// [`gamma`] on the backend.
    fn gamma(&self, x: &Tensor<T>, r: &Tensor<T>, gamma: f64) -> Result<Tensor<T>> {
        let (b, zero, factor) = (self.backend, Some(T::zero()), T::of(gamma));
        let raised = |t: &Tensor<T>, low, high| b.scaled_add(t, factor, &b.clamp(t, low, high)?);
        let (w_p, w_n) = (raised(&self.weight, zero, None)?, raised(&self.weight, None, zero)?);
        let bias_p = self.bias.map(|t| raised(t, zero, None)).transpose()?;
        let bias_n = self.bias.map(|t| raised(t, None, zero)).transpose()?;
        let (x_pos, x_neg) = self.sign_parts(x)?;
        let mut z_p = self.conv(&x_pos, &w_p, bias_p.as_ref())?;
        let mut z_n = self.conv(&x_pos, &w_n, bias_n.as_ref())?;
        if let Some(xn) = &x_neg {
            z_p = b.add_batch(&z_p, &self.conv(xn, &w_n, None)?)?;
            z_n = b.add_batch(&z_n, &self.conv(xn, &w_p, None)?)?;
        }
        let share = |zs: &Tensor<T>, sign| {
            b.keep_where_sign_batch(&b.stabilised_divide_batch(r, zs, Self::epsilon_t())?, self.output, sign)
        };
        let (s_p, s_n) = (share(&z_p, std::cmp::Ordering::Greater)?, share(&z_n, std::cmp::Ordering::Less)?);
        let through = |s: &Tensor<T>, w: &Tensor<T>| self.adjoint(s, w, x);
        let pos = b.add_batch(&through(&s_p, &w_p)?, &through(&s_n, &w_n)?)?;
        let rin = b.mul_batch(&x_pos, &pos)?;
        match &x_neg {
            Some(xn) => {
                let neg = b.add_batch(&through(&s_p, &w_n)?, &through(&s_n, &w_p)?)?;
                b.add_batch(&rin, &b.mul_batch(xn, &neg)?)
            }
            None => Ok(rin),
        }
    }

    /// [`z_box`] on the backend.
    fn z_box(&self, x: &Tensor<T>, r: &Tensor<T>, low: f64, high: f64) -> Result<Tensor<T>> {
        let (b, zero) = (self.backend, Some(T::zero()));
        let (low, high) = (T::of(low), T::of(high));
        let (w_pos, w_neg) = (b.clamp(&self.weight, zero, None)?, b.clamp(&self.weight, None, zero)?);
        let z_low = self.conv(&b.full(x.shape(), low)?, &w_pos, self.bias_clamped(zero, None)?.as_ref())?;
        let z_high = self.conv(&b.full(x.shape(), high)?, &w_neg, self.bias_clamped(None, zero)?.as_ref())?;
        let denominator = b.sub_batch(self.output, &b.add_batch(&z_low, &z_high)?)?;
        let s = b.stabilised_divide_batch(r, &denominator, Self::epsilon_t())?;
        let through_w = self.adjoint(&s, &self.weight, x)?;
        let (through_pos, through_neg) = (self.adjoint(&s, &w_pos, x)?, self.adjoint(&s, &w_neg, x)?);
        let bounds = b.scaled_add(&b.scale(&through_pos, low)?, high, &through_neg)?;
        b.sub_batch(&b.mul_batch(x, &through_w)?, &bounds)
    }

    /// [`flat`] on the backend.
    fn flat(&self, x: &Tensor<T>, r: &Tensor<T>) -> Result<Tensor<T>> {
        let b = self.backend;
        let (c, kh, kw) = (x.shape()[1], self.weight.shape()[2], self.weight.shape()[3]);
        let ones = b.full(&[1, c, kh, kw], T::one())?;
        let z = self.conv(&b.full(x.shape(), T::one())?, &ones, None)?;
        let s = b.channel_shares_sum_batch(r, &z, Self::epsilon_t())?;
        self.adjoint(&s, &ones, x)
    }
}

impl ZennitComposite {
    /// The composite's rule for `layer` at input `x`, with the layer's forward
    /// `output` when known.
    fn rule_at<T: Float>(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        output: Option<ArrayViewD<T>>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> Result<ArrayD<T>> {
        let out = layer.output_shape(x.shape())?;
        check_same_shape(&format!("relevance at the output of {}", layer.describe()), &out, relevance.shape())?;
        if let Some(conv) = layer.downcast_ref::<Conv2d<T>>() {
            let (x, r) = (chw(x)?, chw(relevance)?);
            let output = output.map(chw).transpose()?;
            let affine = Affine { weight: conv.weight().view(), bias: conv.bias(), geometry: *conv.geometry(), output };
            let rin = match (*self, ctx.is_input_layer) {
                (ZennitComposite::EpsilonPlusFlat, true) => flat(backend, x, r, &affine)?,
                (ZennitComposite::EpsilonPlusFlat, false) => z_plus(backend, x, r, &affine)?,
                (ZennitComposite::EpsilonGammaBox { low, high }, true) => z_box(backend, x, r, &affine, low, high)?,
                (ZennitComposite::EpsilonGammaBox { .. }, false) => gamma(backend, x, r, &affine, ZENNIT_GAMMA)?,
            };
            return Ok(rin.into_dyn());
        }
        if let Some(fc) = layer.downcast_ref::<Linear<T>>() {
            // A 1×1 convolution on a 1×1 map.
            let (o, i) = fc.weight().dim();
            let x = x.into_shape_with_order((i, 1, 1)).expect("checked vector");
            let r = relevance.into_shape_with_order((o, 1, 1)).expect("checked vector");
            let weight = fc.weight().view().into_shape_with_order((o, i, 1, 1)).expect("standard layout");
            let output = output.map(|z| z.into_shape_with_order((o, 1, 1)).expect("the layer's output"));
            let affine = Affine { weight, bias: fc.bias(), geometry: ConvGeometry::square(1, 0), output };
            // zennit's Flat takes the first layer of any linear kind; ZBox only a convolution.
            let rin = if ctx.is_input_layer && *self == ZennitComposite::EpsilonPlusFlat {
                flat(backend, x, r, &affine)?
            } else {
                epsilon(backend, x, r, &affine)?
            };
            return Ok(rin.into_shape_with_order(i).expect("i×1×1").into_dyn());
        }
        if layer.downcast_ref::<MaxPool2d>().is_some() {
            // No rule in zennit's composites: the gradient.
            return layer.gradient(backend, x, relevance);
        }
        if let Some(pool) = layer.downcast_ref::<AvgPool2d>() {
            return norm_pool(backend, &pool.pool_windows(x.shape())?, x, relevance);
        }
        if let Some(pool) = layer.downcast_ref::<AdaptiveAvgPool2d>() {
            return norm_pool(backend, &pool.pool_windows(x.shape())?, x, relevance);
        }
        match layer.kind() {
            // Pass (ReLU, batch norm) and the identity gradient (dropout, flatten).
            LayerKind::Relu | LayerKind::Dropout | LayerKind::BatchNorm2d | LayerKind::Flatten => Ok(relevance
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(x.shape()))
                .expect("same number of elements")),
            _ => Err(RspError::Model(format!(
                "layer `{}` has no rule in zennit's {} composite",
                layer.describe(),
                Rules::<T>::name(self)
            ))),
        }
    }
}

/// zennit's `stabilize`: `z + ε·sign(z)` with `sign(0) = +1`, ε = 1e-6. Never
/// zero, so the rules divide by it directly.
fn stabilize<T: Float>(z: T) -> T {
    let e = T::of(ZENNIT_EPSILON);
    if z >= T::zero() {
        z + e
    } else {
        z - e
    }
}

/// A convolution's parameters (a linear layer is a 1×1 convolution on a 1×1 map).
struct Affine<'a, T> {
    weight: ArrayView4<'a, T>,
    bias: Option<&'a Array1<T>>,
    geometry: ConvGeometry,
    /// The layer's forward output `conv(x, W) + b`, when the walk has it.
    output: Option<ArrayView3<'a, T>>,
}

impl<T: Float> Affine<'_, T> {
    /// `z = conv(x, W) + b`: the forward output if known, else computed.
    fn z(&self, backend: &dyn Backend<T>, x: ArrayView3<T>) -> Result<CowArray<'_, T, Ix3>> {
        Ok(match self.output {
            Some(z) => CowArray::from(z),
            None => CowArray::from(plus_bias(backend.conv2d(x, self.weight, &self.geometry)?, self.bias, |b| b)),
        })
    }
}

fn chw<T>(x: ArrayViewD<'_, T>) -> Result<ArrayView3<'_, T>> {
    let shape = x.shape().to_vec();
    x.into_dimensionality::<Ix3>().map_err(|_| RspError::shape("zennit rule", "a C×H×W sample (rank 3)", &shape))
}

/// `z` plus the bias modified by `modify` (zennit modifies or zeroes the bias
/// with the weights; a layer without bias adds nothing).
fn plus_bias<T: Float>(mut z: Array3<T>, bias: Option<&Array1<T>>, modify: impl Fn(T) -> T) -> Array3<T> {
    if let Some(b) = bias {
        for (mut plane, &bv) in z.axis_iter_mut(Axis(0)).zip(b) {
            let bv = modify(bv);
            plane.mapv_inplace(|v| v + bv);
        }
    }
    z
}

fn positive<T: Float>(v: T) -> T {
    v.max(T::zero())
}

fn negative<T: Float>(v: T) -> T {
    v.min(T::zero())
}

/// The positive and negative parts of `x`, or `None` for the negative part
/// when there is none (after a ReLU): every term that reads it vanishes, and
/// half the convolutions are saved.
fn sign_parts<T: Float>(x: ArrayView3<T>) -> (Array3<T>, Option<Array3<T>>) {
    if x.iter().any(|&v| v < T::zero()) {
        (x.mapv(positive), Some(x.mapv(negative)))
    } else {
        (x.to_owned(), None)
    }
}

/// Epsilon(1e-6), bias kept: `z = conv(x, W) + b`, `R_in = x ⊙ convᵀ(R ⊘ stab(z), W)`.
fn epsilon<T: Float>(backend: &dyn Backend<T>, x: ArrayView3<T>, r: ArrayView3<T>, a: &Affine<T>) -> Result<Array3<T>> {
    let z = a.z(backend, x)?;
    let s = Zip::from(&r).and(&z).map_collect(|&rv, &zv| rv / stabilize(zv));
    let back = backend.conv2d_input_adjoint(s.view(), a.weight, &a.geometry, (x.dim().1, x.dim().2))?;
    Ok(Zip::from(&x).and(&back).map_collect(|&xv, &g| xv * g))
}

/// ZPlus (α1β0 with zennit's bias handling): the positive weights keep the
/// positive part of the bias, the negative weights get none:
/// `z = conv(x⁺, W⁺) + b⁺ + conv(x⁻, W⁻)`, `S = R ⊘ stab(z)`,
/// `R_in = x⁺ ⊙ convᵀ(S, W⁺) + x⁻ ⊙ convᵀ(S, W⁻)`: one convolution and one
/// adjoint when `x ≥ 0`, two of each otherwise.
fn z_plus<T: Float>(backend: &dyn Backend<T>, x: ArrayView3<T>, r: ArrayView3<T>, a: &Affine<T>) -> Result<Array3<T>> {
    let (g, hw) = (&a.geometry, (x.dim().1, x.dim().2));
    let (x_pos, x_neg) = sign_parts(x);
    let w_pos = a.weight.mapv(positive);
    let w_neg = x_neg.as_ref().map(|_| a.weight.mapv(negative));
    let mut z = plus_bias(backend.conv2d(x_pos.view(), w_pos.view(), g)?, a.bias, positive);
    if let (Some(xn), Some(wn)) = (&x_neg, &w_neg) {
        z += &backend.conv2d(xn.view(), wn.view(), g)?;
    }
    let s = Zip::from(&r).and(&z).map_collect(|&rv, &zv| rv / stabilize(zv));
    let mut rin = x_pos * backend.conv2d_input_adjoint(s.view(), w_pos.view(), g, hw)?;
    if let (Some(xn), Some(wn)) = (&x_neg, &w_neg) {
        rin += &(xn * &backend.conv2d_input_adjoint(s.view(), wn.view(), g, hw)?);
    }
    Ok(rin)
}

/// Gamma(γ), zennit's generalised form: with `W_p = W + γW⁺`, `W_n = W + γW⁻`
/// (biases `b + γb⁺`, `b + γb⁻` likewise), the positive outputs (`z = Wx + b > 0`)
/// share `R` in proportion to `z_p = conv(x⁺, W_p) + b + γb⁺ + conv(x⁻, W_n)`,
/// the negative ones (`z < 0`) to `z_n = conv(x⁺, W_n) + b + γb⁻ + conv(x⁻, W_p)`:
/// `S_p = [z > 0]·R ⊘ stab(z_p)`, `S_n = [z < 0]·R ⊘ stab(z_n)`,
/// `R_in = x⁺ ⊙ (convᵀ(S_p, W_p) + convᵀ(S_n, W_n)) + x⁻ ⊙ (convᵀ(S_p, W_n) + convᵀ(S_n, W_p))`.
/// When `x ≥ 0` the `x⁻` terms vanish: two convolutions (`z` is the layer's
/// forward output, reused) and two adjoints.
fn gamma<T: Float>(
    backend: &dyn Backend<T>,
    x: ArrayView3<T>,
    r: ArrayView3<T>,
    a: &Affine<T>,
    gamma: f64,
) -> Result<Array3<T>> {
    let (g, hw) = (&a.geometry, (x.dim().1, x.dim().2));
    let factor = T::of(gamma);
    let w_p = a.weight.mapv(|v| v + factor * positive(v));
    let w_n = a.weight.mapv(|v| v + factor * negative(v));
    let (x_pos, x_neg) = sign_parts(x);
    let z = a.z(backend, x)?;
    let mut z_p = plus_bias(backend.conv2d(x_pos.view(), w_p.view(), g)?, a.bias, |b| b + factor * positive(b));
    let mut z_n = plus_bias(backend.conv2d(x_pos.view(), w_n.view(), g)?, a.bias, |b| b + factor * negative(b));
    if let Some(xn) = &x_neg {
        z_p += &backend.conv2d(xn.view(), w_n.view(), g)?;
        z_n += &backend.conv2d(xn.view(), w_p.view(), g)?;
    }
    let s_p = Zip::from(&r).and(&z).and(&z_p).map_collect(
        |&rv, &zv, &zp| {
            if zv > T::zero() {
                rv / stabilize(zp)
            } else {
                T::zero()
            }
        },
    );
    let s_n = Zip::from(&r).and(&z).and(&z_n).map_collect(
        |&rv, &zv, &zn| {
            if zv < T::zero() {
                rv / stabilize(zn)
            } else {
                T::zero()
            }
        },
    );
    let through = |s: &Array3<T>, w: &Array4<T>| backend.conv2d_input_adjoint(s.view(), w.view(), g, hw);
    let mut rin = x_pos * (through(&s_p, &w_p)? + through(&s_n, &w_n)?);
    if let Some(xn) = &x_neg {
        rin += &(xn * &(through(&s_p, &w_n)? + through(&s_n, &w_p)?));
    }
    Ok(rin)
}

/// ZBox(ℓ, h) with zennit's bias handling (each term keeps its part of the
/// bias, so the biases cancel in the denominator):
/// `Z = (conv(x, W) + b) − ((conv(ℓ, W⁺) + b⁺) + (conv(h, W⁻) + b⁻))` with `ℓ`,
/// `h` the constant images (zero-padded like `x`), `S = R ⊘ stab(Z)`,
/// `R_in = x ⊙ convᵀ(S, W) − (ℓ·convᵀ(S, W⁺) + h·convᵀ(S, W⁻))`.
fn z_box<T: Float>(
    backend: &dyn Backend<T>,
    x: ArrayView3<T>,
    r: ArrayView3<T>,
    a: &Affine<T>,
    low: f64,
    high: f64,
) -> Result<Array3<T>> {
    let (g, hw) = (&a.geometry, (x.dim().1, x.dim().2));
    let (low, high) = (T::of(low), T::of(high));
    let (w_pos, w_neg) = (a.weight.mapv(positive), a.weight.mapv(negative));
    let z = a.z(backend, x)?;
    let lows = Array3::from_elem(x.raw_dim(), low);
    let z_low = plus_bias(backend.conv2d(lows.view(), w_pos.view(), g)?, a.bias, positive);
    let highs = Array3::from_elem(x.raw_dim(), high);
    let z_high = plus_bias(backend.conv2d(highs.view(), w_neg.view(), g)?, a.bias, negative);
    let s =
        Zip::from(&r).and(&z).and(&z_low).and(&z_high).map_collect(|&rv, &zv, &zl, &zh| rv / stabilize(zv - (zl + zh)));
    let through_w = backend.conv2d_input_adjoint(s.view(), a.weight, g, hw)?;
    let through_pos = backend.conv2d_input_adjoint(s.view(), w_pos.view(), g, hw)?;
    let through_neg = backend.conv2d_input_adjoint(s.view(), w_neg.view(), g, hw)?;
    Ok(Zip::from(&x)
        .and(&through_w)
        .and(&through_pos)
        .and(&through_neg)
        .map_collect(|&xv, &tw, &tp, &tn| xv * tw - (low * tp + high * tn)))
}

/// Flat: every weight 1, no bias, every input 1: `z = conv(1, 1)` (the number
/// of inputs in each window, padding excluded), `R_in = convᵀ(R ⊘ stab(z), 1)`
/// (not multiplied by `x`). All output channels share one `z`, so the
/// relevance is summed over them first and one single-channel adjoint follows.
fn flat<T: Float>(backend: &dyn Backend<T>, x: ArrayView3<T>, r: ArrayView3<T>, a: &Affine<T>) -> Result<Array3<T>> {
    let (c, h, w) = x.dim();
    let (_, _, kh, kw) = a.weight.dim();
    let ones = Array4::from_elem((1, c, kh, kw), T::one());
    let z = backend.conv2d(Array3::from_elem((c, h, w), T::one()).view(), ones.view(), &a.geometry)?;
    let mut s = Array3::zeros(z.raw_dim());
    for r_o in r.outer_iter() {
        Zip::from(s.index_axis_mut(Axis(0), 0)).and(&r_o).and(z.index_axis(Axis(0), 0)).for_each(|sv, &rv, &zv| {
            *sv += rv / stabilize(zv);
        });
    }
    backend.conv2d_input_adjoint(s.view(), ones.view(), &a.geometry, (h, w))
}

/// Norm on an average pool: `z = pool(x)`, `R_in = x ⊙ poolᵀ(R ⊘ stab(z))`.
fn norm_pool<T: Float>(
    backend: &dyn Backend<T>,
    win: &PoolWindows,
    x: ArrayViewD<T>,
    r: ArrayViewD<T>,
) -> Result<ArrayD<T>> {
    let x = chw(x)?;
    let z = backend.avg_pool(x, win)?;
    let s = Zip::from(&chw(r)?).and(&z).map_collect(|&rv, &zv| rv / stabilize(zv));
    let back = backend.avg_pool_adjoint(s.view(), win)?;
    Ok(Zip::from(&x).and(&back).map_collect(|&xv, &g| xv * g).into_dyn())
}

//! Engine v2's data flow, proven without a device. `Sealed` is a backend
//! defined outside the crate, as a CUDA backend would be: it wraps the CPU
//! backend, hides every tensor behind a storage type private to this file (so
//! no code in the crate can read it except through `download`) and counts
//! what crosses between host and backend. The batch forward pass and every
//! attribution on batches (RSP with both starts and its layer trace, the
//! gradient, gradient × input, Grad-CAM, the LRP family, CLRP, SGLRP and
//! zennit's composites) must upload the input once, the weights once
//! per network (none on the second call), download only their results, and
//! never call a per-sample host kernel.

use crate::common::data;
use rsp::backend::{Backend, ConvGeometry, CpuBackend, HostParameter, PoolWindows, RapFlavour, Tensor};
use rsp::layers::{Layer, LayerKind, RuleContext};
use rsp::ndarray::{s, Array2, Array3, Array4, ArrayD, ArrayView2, ArrayView3, ArrayView4, ArrayViewD, Axis};
use rsp::{Float, HostileClasses, Method, Network, RspError, StartRule};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

/// What crossed between the host and the backend.
#[derive(Debug, Default)]
struct Counts {
    uploads: AtomicUsize,
    parameter_uploads: AtomicUsize,
    downloads: AtomicUsize,
    host_kernels: AtomicUsize,
}

impl Counts {
    fn get(&self) -> [usize; 4] {
        [&self.uploads, &self.parameter_uploads, &self.downloads, &self.host_kernels].map(|c| c.load(SeqCst))
    }
}

#[derive(Clone, Debug, Default)]
struct Sealed {
    counts: Arc<Counts>,
    /// Run the fused RSP rules as the trait's defaults do, composed from the
    /// primitives (`rsp::backend::composed`), instead of the CPU's kernels.
    composed: bool,
}

/// The storage of `Sealed`: the CPU backend's tensor, in a type nothing
/// outside this file can name.
struct Hidden<T>(Tensor<T>);

fn seal<T: Float>(t: Tensor<T>) -> Tensor<T> {
    Tensor::from_storage(t.shape().to_vec(), Hidden(t))
}

fn open<T: Float>(t: &Tensor<T>) -> rsp::Result<Tensor<T>> {
    let hidden = t.storage::<Hidden<T>>().ok_or_else(|| RspError::Backend {
        backend: "sealed".into(),
        reason: format!("a tensor of shape {:?} from another backend", t.shape()),
    })?;
    // A reshaped handle shares the buffer: read it with the handle's shape.
    hidden.0.reshaped(t.shape().to_vec())
}

impl Sealed {
    fn host_kernel(&self) -> &CpuBackend {
        self.counts.host_kernels.fetch_add(1, SeqCst);
        &CpuBackend
    }
}

impl<T: Float> Backend<T> for Sealed {
    fn name(&self) -> &'static str {
        "sealed"
    }
    fn conv2d(&self, x: ArrayView3<T>, w: ArrayView4<T>, g: &ConvGeometry) -> rsp::Result<Array3<T>> {
        self.host_kernel().conv2d(x, w, g)
    }
    fn conv2d_input_adjoint(
        &self,
        s: ArrayView3<T>,
        w: ArrayView4<T>,
        g: &ConvGeometry,
        hw: (usize, usize),
    ) -> rsp::Result<Array3<T>> {
        self.host_kernel().conv2d_input_adjoint(s, w, g, hw)
    }
    fn conv2d_weight_grad(
        &self,
        x: ArrayView3<T>,
        r: ArrayView3<T>,
        g: &ConvGeometry,
        k: (usize, usize),
    ) -> rsp::Result<Array4<T>> {
        self.host_kernel().conv2d_weight_grad(x, r, g, k)
    }
    fn matmul(&self, a: ArrayView2<T>, b: ArrayView2<T>) -> rsp::Result<Array2<T>> {
        self.host_kernel().matmul(a, b)
    }
    fn max_pool(&self, x: ArrayView3<T>, w: &PoolWindows) -> rsp::Result<(Array3<T>, Array3<u32>)> {
        self.host_kernel().max_pool(x, w)
    }
    fn avg_pool(&self, x: ArrayView3<T>, w: &PoolWindows) -> rsp::Result<Array3<T>> {
        self.host_kernel().avg_pool(x, w)
    }

    fn sectional_contributions(
        &self,
        x: ArrayView3<T>,
        r: ArrayView3<T>,
        g: &ConvGeometry,
        k: (usize, usize),
    ) -> rsp::Result<Array3<T>> {
        self.host_kernel().sectional_contributions(x, r, g, k)
    }
    fn max_pool_adjoint(&self, s: ArrayView3<T>, a: ArrayView3<u32>, hw: (usize, usize)) -> rsp::Result<Array3<T>> {
        self.host_kernel().max_pool_adjoint(s, a, hw)
    }
    fn max_pool_rule(&self, x: ArrayView3<T>, r: ArrayView3<T>, w: &PoolWindows) -> rsp::Result<Array3<T>> {
        self.host_kernel().max_pool_rule(x, r, w)
    }
    fn avg_pool_adjoint(&self, s: ArrayView3<T>, w: &PoolWindows) -> rsp::Result<Array3<T>> {
        self.host_kernel().avg_pool_adjoint(s, w)
    }

    /// Whole batches, as a device would run them.
    fn samples_at_once(&self) -> Option<usize> {
        Some(64)
    }
    fn upload(&self, host: ArrayViewD<T>) -> rsp::Result<Tensor<T>> {
        self.counts.uploads.fetch_add(1, SeqCst);
        Ok(seal(CpuBackend.upload(host)?))
    }
    fn upload_parameter(&self, parameter: &HostParameter<T>) -> rsp::Result<Tensor<T>> {
        self.counts.parameter_uploads.fetch_add(1, SeqCst);
        Ok(seal(CpuBackend.upload_parameter(parameter)?))
    }
    fn download(&self, t: &Tensor<T>) -> rsp::Result<ArrayD<T>> {
        self.counts.downloads.fetch_add(1, SeqCst);
        CpuBackend.download(&open(t)?)
    }
    fn conv2d_batch(
        &self,
        x: &Tensor<T>,
        w: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        g: &ConvGeometry,
    ) -> rsp::Result<Tensor<T>> {
        let bias = bias.map(open).transpose()?;
        Ok(seal(CpuBackend.conv2d_batch(&open(x)?, &open(w)?, bias.as_ref(), g)?))
    }
    fn linear_batch(&self, x: &Tensor<T>, w: &Tensor<T>, bias: Option<&Tensor<T>>) -> rsp::Result<Tensor<T>> {
        let bias = bias.map(open).transpose()?;
        Ok(seal(CpuBackend.linear_batch(&open(x)?, &open(w)?, bias.as_ref())?))
    }
    fn relu_batch(&self, x: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.relu_batch(&open(x)?)?))
    }
    fn max_pool_batch(&self, x: &Tensor<T>, w: &PoolWindows) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.max_pool_batch(&open(x)?, w)?))
    }
    fn avg_pool_batch(&self, x: &Tensor<T>, w: &PoolWindows) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.avg_pool_batch(&open(x)?, w)?))
    }
    fn channel_affine_batch(
        &self,
        x: &Tensor<T>,
        mean: &Tensor<T>,
        scale: &Tensor<T>,
        shift: &Tensor<T>,
    ) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.channel_affine_batch(&open(x)?, &open(mean)?, &open(scale)?, &open(shift)?)?))
    }
    fn add_batch(&self, a: &Tensor<T>, b: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.add_batch(&open(a)?, &open(b)?)?))
    }
    fn first_non_finite(&self, t: &Tensor<T>) -> rsp::Result<Option<usize>> {
        CpuBackend.first_non_finite(&open(t)?)
    }
    fn zeros(&self, shape: &[usize]) -> rsp::Result<Tensor<T>> {
        Ok(seal(Backend::<T>::zeros(&CpuBackend, shape)?))
    }
    fn one_hot_batch(&self, classes: &[usize], width: usize) -> rsp::Result<Tensor<T>> {
        Ok(seal(Backend::<T>::one_hot_batch(&CpuBackend, classes, width)?))
    }
    fn mul_batch(&self, a: &Tensor<T>, b: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.mul_batch(&open(a)?, &open(b)?)?))
    }
    fn clamp(&self, t: &Tensor<T>, low: Option<T>, high: Option<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.clamp(&open(t)?, low, high)?))
    }
    fn stabilised_divide_batch(&self, r: &Tensor<T>, z: &Tensor<T>, epsilon: Option<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.stabilised_divide_batch(&open(r)?, &open(z)?, epsilon)?))
    }
    fn sub_batch(&self, a: &Tensor<T>, b: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.sub_batch(&open(a)?, &open(b)?)?))
    }
    fn scale(&self, t: &Tensor<T>, factor: T) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.scale(&open(t)?, factor)?))
    }
    fn scaled_add(&self, a: &Tensor<T>, factor: T, b: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.scaled_add(&open(a)?, factor, &open(b)?)?))
    }
    fn full(&self, shape: &[usize], value: T) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.full(shape, value)?))
    }
    fn keep_where_sign_batch(&self, t: &Tensor<T>, z: &Tensor<T>, sign: std::cmp::Ordering) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.keep_where_sign_batch(&open(t)?, &open(z)?, sign)?))
    }
    fn channel_shares_sum_batch(&self, r: &Tensor<T>, z: &Tensor<T>, epsilon: Option<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.channel_shares_sum_batch(&open(r)?, &open(z)?, epsilon)?))
    }
    fn abs(&self, t: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.abs(&open(t)?)?))
    }
    fn sample_sums_batch(&self, t: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.sample_sums_batch(&open(t)?)?))
    }
    fn scaled_add_per_sample(&self, a: &Tensor<T>, f: &Tensor<T>, b: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.scaled_add_per_sample(&open(a)?, &open(f)?, &open(b)?)?))
    }
    fn softmax_gradient_batch(&self, y: &Tensor<T>, classes: &[usize]) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.softmax_gradient_batch(&open(y)?, classes)?))
    }
    fn samples_with_negatives(&self, t: &Tensor<T>) -> rsp::Result<Vec<bool>> {
        CpuBackend.samples_with_negatives(&open(t)?)
    }
    fn class_entries_batch(&self, t: &Tensor<T>, classes: &[usize]) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.class_entries_batch(&open(t)?, classes)?))
    }
    fn relu_gradient_batch(&self, x: &Tensor<T>, g: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.relu_gradient_batch(&open(x)?, &open(g)?)?))
    }
    fn linear_adjoint_batch(&self, g: &Tensor<T>, w: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.linear_adjoint_batch(&open(g)?, &open(w)?)?))
    }
    fn conv2d_input_adjoint_batch(
        &self,
        g: &Tensor<T>,
        w: &Tensor<T>,
        geom: &ConvGeometry,
        hw: (usize, usize),
    ) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.conv2d_input_adjoint_batch(&open(g)?, &open(w)?, geom, hw)?))
    }
    fn max_pool_adjoint_batch(&self, x: &Tensor<T>, g: &Tensor<T>, w: &PoolWindows) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.max_pool_adjoint_batch(&open(x)?, &open(g)?, w)?))
    }
    fn avg_pool_adjoint_batch(&self, g: &Tensor<T>, w: &PoolWindows) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.avg_pool_adjoint_batch(&open(g)?, w)?))
    }
    fn channel_scale_batch(&self, g: &Tensor<T>, scale: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.channel_scale_batch(&open(g)?, &open(scale)?)?))
    }
    fn sectional_rule_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        geom: &ConvGeometry,
        k: (usize, usize),
    ) -> rsp::Result<Tensor<T>> {
        if self.composed {
            return rsp::backend::composed::sectional_rule_batch(self, x, r, geom, k);
        }
        Ok(seal(CpuBackend.sectional_rule_batch(&open(x)?, &open(r)?, geom, k)?))
    }
    fn zb_rule_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        w: &Tensor<T>,
        geom: &ConvGeometry,
    ) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.zb_rule_batch(&open(x)?, &open(r)?, &open(w)?, geom)?))
    }
    fn max_pool_rule_batch(&self, x: &Tensor<T>, r: &Tensor<T>, w: &PoolWindows) -> rsp::Result<Tensor<T>> {
        if self.composed {
            return rsp::backend::composed::max_pool_rule_batch(self, x, r, w);
        }
        Ok(seal(CpuBackend.max_pool_rule_batch(&open(x)?, &open(r)?, w)?))
    }
    fn avg_pool_rule_batch(&self, x: &Tensor<T>, r: &Tensor<T>, w: &PoolWindows) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.avg_pool_rule_batch(&open(x)?, &open(r)?, w)?))
    }
    fn batch_norm_rule_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        w: &Tensor<T>,
        beta: &Tensor<T>,
    ) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.batch_norm_rule_batch(&open(x)?, &open(r)?, &open(w)?, &open(beta)?)?))
    }
    fn conv2d_weight_grad_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        geom: &ConvGeometry,
        k: (usize, usize),
    ) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.conv2d_weight_grad_batch(&open(x)?, &open(r)?, geom, k)?))
    }
    fn conv2d_sample_weights_batch(&self, x: &Tensor<T>, w: &Tensor<T>, geom: &ConvGeometry) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.conv2d_sample_weights_batch(&open(x)?, &open(w)?, geom)?))
    }
    fn conv2d_input_adjoint_sample_weights_batch(
        &self,
        s: &Tensor<T>,
        w: &Tensor<T>,
        geom: &ConvGeometry,
        hw: (usize, usize),
    ) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.conv2d_input_adjoint_sample_weights_batch(&open(s)?, &open(w)?, geom, hw)?))
    }
    fn nonzero_counts_batch(&self, t: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.nonzero_counts_batch(&open(t)?)?))
    }
    fn shift_nonzero_batch(&self, c: &Tensor<T>, factor: T, shifts: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.shift_nonzero_batch(&open(c)?, factor, &open(shifts)?)?))
    }
    fn rap_relative_rule_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        w: &Tensor<T>,
        geom: &ConvGeometry,
        flavour: RapFlavour,
    ) -> rsp::Result<Tensor<T>> {
        if self.composed {
            return rsp::backend::composed::rap_relative_rule_batch(self, x, r, w, geom, flavour);
        }
        Ok(seal(CpuBackend.rap_relative_rule_batch(&open(x)?, &open(r)?, &open(w)?, geom, flavour)?))
    }
    fn rap_first_propagation_batch(
        &self,
        x: &Tensor<T>,
        r: &Tensor<T>,
        w: &Tensor<T>,
        bias: Option<&Tensor<T>>,
    ) -> rsp::Result<Tensor<T>> {
        if self.composed {
            return rsp::backend::composed::rap_first_propagation_batch(self, x, r, w, bias);
        }
        let bias = bias.map(open).transpose()?;
        Ok(seal(CpuBackend.rap_first_propagation_batch(&open(x)?, &open(r)?, &open(w)?, bias.as_ref())?))
    }
    fn add_rule_batch(&self, a: &Tensor<T>, b: &Tensor<T>, r: &Tensor<T>) -> rsp::Result<(Tensor<T>, Tensor<T>)> {
        if self.composed {
            return rsp::backend::composed::add_rule_batch(self, a, b, r);
        }
        let (ra, rb) = CpuBackend.add_rule_batch(&open(a)?, &open(b)?, &open(r)?)?;
        Ok((seal(ra), seal(rb)))
    }
    fn single_class_start_batch(&self, a: &Tensor<T>, g: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.single_class_start_batch(&open(a)?, &open(g)?)?))
    }
    fn comparative_start_batch(&self, a: &Tensor<T>, g: &Tensor<T>, groups: &[usize]) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.comparative_start_batch(&open(a)?, &open(g)?, groups)?))
    }
    fn weighted_activation_batch(&self, a: &Tensor<T>, g: &Tensor<T>) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.weighted_activation_batch(&open(a)?, &open(g)?)?))
    }
    fn gather_samples(&self, t: &Tensor<T>, rows: &[usize]) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.gather_samples(&open(t)?, rows)?))
    }
    fn linear_adjoint_grouped(&self, g: &Tensor<T>, w: &Tensor<T>, groups: &[usize]) -> rsp::Result<Tensor<T>> {
        Ok(seal(CpuBackend.linear_adjoint_grouped(&open(g)?, &open(w)?, groups)?))
    }
}

fn batch<T: Float>(shape: [usize; 4]) -> Array4<T> {
    Array4::from_shape_fn(shape, |(n, c, i, j)| T::of(((n * 7 + c * 3 + i * 5 + j) % 13) as f64 / 13.0 - 0.4))
}

fn parameter_count<T: Float>(net: &Network<T>) -> usize {
    net.nodes().iter().filter_map(|n| n.layer()).map(|l| l.backend_parameters().len()).sum()
}

/// The forward pass of `net` on the sealed backend: bit-identical logits to
/// the CPU backend's and to each sample's alone, with the transfers counted.
fn forward_crosses_once<T: Float>(net: Network<T>, shape: [usize; 4]) {
    let x = batch::<T>(shape);
    let cpu = net.forward(x.view()).unwrap();
    for n in 0..shape[0] {
        let alone = net.forward(x.slice(s![n..n + 1, .., .., ..])).unwrap();
        assert_eq!(alone.row(0), cpu.row(n), "sample {n} alone");
    }
    // An attribution's forward pass (its own batching) gives the same bits.
    assert_eq!(net.explain(x.view(), 0, &Method::Gradient).unwrap().logits, cpu);

    let sealed = Sealed::default();
    let counts = Arc::clone(&sealed.counts);
    let mut net = net.with_backend(sealed);
    let params = parameter_count(&net);
    assert!(params > 0);
    assert_eq!(net.forward(x.view()).unwrap(), cpu);
    // [input uploads, parameter uploads, downloads, per-sample host kernels]
    assert_eq!(counts.get(), [1, params, 1, 0]);
    assert_eq!(net.forward(x.view()).unwrap(), cpu);
    assert_eq!(counts.get(), [2, params, 2, 0], "the second call uploads no weights");
    // Changing a layer's weights (or the backend) uploads them again.
    let k = net.nodes().iter().position(|n| n.layer().is_some_and(|l| !l.backend_parameters().is_empty())).unwrap();
    let _ = net.layer_mut(k).unwrap();
    net.forward(x.view()).unwrap();
    assert_eq!(counts.get(), [3, 2 * params, 3, 0]);
}

#[test]
fn the_forward_pass_uploads_the_input_once_and_the_weights_once_per_network() {
    let vgg = Network::<f32>::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits_vgg.safetensors")).unwrap();
    forward_crosses_once(vgg, [3, 3, 64, 64]);
    forward_crosses_once(Network::<f64>::load(data("golden/vgg_tiny_bn.safetensors")).unwrap(), [2, 3, 32, 32]);
    forward_crosses_once(
        Network::<f64>::load(data("golden/resnet_bottleneck_tiny.safetensors")).unwrap(),
        [2, 3, 64, 64],
    );
    forward_crosses_once(Network::<f32>::load(data("golden/avgpool_stride_rect.safetensors")).unwrap(), [2, 3, 40, 48]);
}

#[test]
fn a_batch_over_the_memory_budget_is_split_with_the_same_bits() {
    let mut net = Network::<f64>::load(data("golden/vgg_tiny_bn.safetensors")).unwrap();
    let x = batch::<f64>([5, 3, 32, 32]);
    let whole = net.forward(x.view()).unwrap();
    let all = net.estimate(&[5, 3, 32, 32], rsp::budget::Pass::Forward).unwrap();
    let one = net.estimate(&[1, 3, 32, 32], rsp::budget::Pass::Forward).unwrap();
    // Room for two samples at once, not five.
    net.set_memory_budget(Some(all.memory - 2 * all.memory_per_sample - 1));
    assert!(one.memory < all.memory - 2 * all.memory_per_sample);
    let sealed = Sealed::default();
    let counts = Arc::clone(&sealed.counts);
    let net = net.with_backend(sealed);
    assert_eq!(net.forward(x.view()).unwrap(), whole);
    let [uploads, _, downloads, host] = counts.get();
    assert!((2..5).contains(&uploads), "split into {uploads} parts");
    assert_eq!((downloads, host), (uploads, 0));
}

#[test]
fn a_tensor_of_another_backend_is_a_typed_error() {
    let host = Array4::<f32>::zeros((1, 1, 2, 2)).into_dyn();
    let cpu_tensor = Backend::<f32>::upload(&CpuBackend, host.view()).unwrap();
    let err = Backend::<f32>::relu_batch(&Sealed::default(), &cpu_tensor).unwrap_err();
    assert!(matches!(err, RspError::Backend { .. }), "{err}");
    // And the other way round: the CPU backend cannot read a sealed tensor.
    let sealed_tensor = Backend::<f32>::upload(&Sealed::default(), host.view()).unwrap();
    let err = Backend::<f32>::download(&CpuBackend, &sealed_tensor).unwrap_err();
    assert!(err.to_string().contains("another backend"), "{err}");
}

/// A user-defined layer without a batch forward pass: the default goes
/// through the host (one download and one upload), with the same bits.
#[derive(Clone, Debug)]
struct Doubling;

impl<T: Float> Layer<T> for Doubling {
    fn kind(&self) -> LayerKind {
        LayerKind::Custom
    }
    fn output_shape(&self, input: &[usize]) -> rsp::Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn forward(&self, _b: &dyn Backend<T>, x: ArrayViewD<T>) -> rsp::Result<ArrayD<T>> {
        Ok(x.mapv(|v| v + v))
    }
    fn gradient(&self, _b: &dyn Backend<T>, _x: ArrayViewD<T>, g: ArrayViewD<T>) -> rsp::Result<ArrayD<T>> {
        Ok(g.mapv(|v| v + v))
    }
    fn rsp_backward(
        &self,
        _b: &dyn Backend<T>,
        _x: ArrayViewD<T>,
        r: ArrayViewD<T>,
        _c: RuleContext,
    ) -> rsp::Result<ArrayD<T>> {
        Ok(r.to_owned())
    }
    fn describe(&self) -> String {
        "doubling".into()
    }
}

#[test]
fn a_layer_without_a_batch_pass_goes_through_the_host() {
    let mut net = Network::<f64>::load(data("golden/vgg_tiny_bn.safetensors")).unwrap();
    net.push(Doubling);
    let x = batch::<f64>([2, 3, 32, 32]);
    let cpu = net.forward(x.view()).unwrap();
    let per_sample = net.explain(x.view(), 0, &Method::Gradient).unwrap().logits;
    assert_eq!(cpu, per_sample);
    let sealed = Sealed::default();
    let counts = Arc::clone(&sealed.counts);
    let net = net.with_backend(sealed);
    assert_eq!(net.forward(x.view()).unwrap(), cpu);
    let [uploads, _, downloads, host] = counts.get();
    // The input, then the doubling's result; its input, then the logits.
    assert_eq!((uploads, downloads, host), (2, 2, 0));
}

/// An attribution on the sealed backend: the results of the CPU backend bit
/// for bit, and of each sample explained alone, with one input upload, the
/// weights once, and downloads of the results only: the logits, the
/// relevance, (RSP, Grad-CAM) the start relevance and, when kept, the layer
/// trace.
/// RSP runs with both starts; the gradient also as a method given by its
/// rules (the per-sample walk).
fn attribution_crosses_once<T: Float>(net: Network<T>, shape: [usize; 4]) {
    let x = batch::<T>(shape);
    let single = rsp::RspOptions::default();
    let comparative =
        rsp::RspOptions { start: StartRule::Comparative(HostileClasses::PredictedPresent), ..single.clone() };
    let traced = rsp::RspOptions {
        start: StartRule::Comparative(HostileClasses::TopK(2)),
        keep_layer_relevances: true,
        ..single.clone()
    };
    let gradient = net.explain_rules(x.view(), 1, &rsp::attribution::GradientRules).unwrap();
    let sealed = Sealed::default();
    let counts = Arc::clone(&sealed.counts);
    let on_device = net.clone().with_backend(sealed);
    let params = parameter_count(&net);
    let mut expected = [0, params, 0, 0];
    let methods = [
        Method::Rsp(single.clone()),
        Method::Rsp(comparative),
        Method::Rsp(traced),
        Method::Gradient,
        Method::GradientXInput,
        Method::GradCam,
        Method::LrpEpsilon(0.25),
        Method::LrpAlpha1Beta0,
        Method::Rap,
        Method::Clrp,
        Method::Sglrp,
        Method::EpsilonPlusFlat,
        Method::EpsilonGammaBox { low: -3.0, high: 3.0 },
    ];
    // zennit's composites fold batch norm into a new network first (its own
    // upload): counted here on the networks without batch norm.
    let has_batch_norm = net.nodes().iter().any(|n| n.layer().is_some_and(|l| l.kind() == LayerKind::BatchNorm2d));
    let methods = methods
        .into_iter()
        .filter(|m| !(has_batch_norm && matches!(m, Method::EpsilonPlusFlat | Method::EpsilonGammaBox { .. })));
    for method in methods {
        let cpu = net.explain(x.view(), 1, &method).unwrap();
        let e = on_device.explain(x.view(), 1, &method).unwrap();
        assert_eq!(e.relevance, cpu.relevance, "{method}");
        assert_eq!(e.start_relevance, cpu.start_relevance, "{method}");
        assert_eq!(e.heatmaps, cpu.heatmaps, "{method}");
        assert_eq!(e.logits, cpu.logits, "{method}");
        assert_eq!(e.hostile_classes, cpu.hostile_classes, "{method}");
        assert_eq!(e.layer_relevances, cpu.layer_relevances, "{method}");
        // Logits and relevance; RSP: the start relevance and each node of the trace.
        let trace = e.layer_relevances.first().map_or(0, |t| t.iter().flatten().count());
        let downloads = 1 + usize::from(e.relevance.is_some()) + usize::from(e.start_relevance.is_some()) + trace;
        expected[0] += 1;
        expected[2] += downloads;
        assert_eq!(counts.get(), expected, "{method}: [uploads, parameter uploads, downloads, host kernels]");
        for n in 0..shape[0] {
            let alone = net.explain(x.slice(s![n..n + 1, .., .., ..]), 1, &method).unwrap();
            let relevance = e.relevance.as_ref().map(|r| r.slice(s![n..n + 1, .., .., ..]).to_owned());
            assert_eq!(alone.relevance, relevance, "{method}, sample {n} alone");
            assert_eq!(alone.heatmaps.index_axis(Axis(0), 0), e.heatmaps.index_axis(Axis(0), n), "{method}, {n}");
            assert_eq!(alone.hostile_classes[0], e.hostile_classes[n], "{method}, sample {n} alone");
            assert_eq!(alone.layer_relevances[..], e.layer_relevances[n..n + 1], "{method}, sample {n} alone");
        }
        if let Method::Rsp(options) = &method {
            let timed = rsp::attribution::explain_timed(&on_device, x.view(), 1, options).unwrap().0;
            assert_eq!(timed.relevance, e.relevance);
            expected[0] += 1;
            expected[2] += downloads;
            if options.keep_layer_relevances {
                // The trace: the relevance at the input of every node from the start layer down.
                assert_eq!(trace, e.start_layer.unwrap() + 1, "{method}");
                let first = e.layer_relevances[0][0].as_ref().unwrap();
                assert_eq!(first, &e.relevance.as_ref().unwrap().index_axis(Axis(0), 0).into_dyn(), "{method}");
            }
            if let StartRule::Comparative(HostileClasses::TopK(k)) = options.start {
                // Groups of 1 + k rows per sample reached the start.
                assert!(e.hostile_classes.iter().all(|h| h.len() == k), "{method}");
            }
        }
        if method == Method::Gradient {
            assert_eq!(e.relevance, gradient.relevance);
        }
    }
    // LRP given by its rules (as a user's method is) crosses the same way.
    let lrp = on_device.explain_rules(x.view(), 1, &rsp::attribution::Lrp::epsilon(0.5)).unwrap();
    assert_eq!(lrp.relevance, net.explain(x.view(), 1, Method::LrpEpsilon(0.5)).unwrap().relevance);
    expected[0] += 1;
    expected[2] += 2;
    assert_eq!(counts.get(), expected, "LRP by its rules: [uploads, parameter uploads, downloads, host kernels]");
}

/// Every method gives the CPU backend's bits on a backend whose tensors the
/// host cannot read, also on networks with batch norm (zennit's composites
/// fold it first) and, for RAP and a method given only by host rules, whose
/// rules still run on the host (`map_on_host` downloads each rule's inputs
/// and uploads its results); each sample's result is that of the sample
/// explained alone.
fn every_method_gives_the_cpu_bits_on_a_sealed_backend<T: Float>(net: Network<T>, shape: [usize; 4]) {
    let x = batch::<T>(shape);
    let on_device = net.clone().with_backend(Sealed::default());
    let methods = [
        Method::LrpEpsilon(0.25),
        Method::LrpAlpha1Beta0,
        Method::Rap,
        Method::Clrp,
        Method::Sglrp,
        Method::EpsilonPlusFlat,
        Method::EpsilonGammaBox { low: -3.0, high: 3.0 },
    ];
    for method in methods {
        let cpu = net.explain(x.view(), 1, &method).unwrap();
        let e = on_device.explain(x.view(), 1, &method).unwrap();
        assert_eq!(e.relevance, cpu.relevance, "{method}");
        assert_eq!(e.heatmaps, cpu.heatmaps, "{method}");
        assert_eq!(e.logits, cpu.logits, "{method}");
        for n in 0..shape[0] {
            let alone = net.explain(x.slice(s![n..n + 1, .., .., ..]), 1, &method).unwrap();
            let relevance = e.relevance.as_ref().map(|r| r.slice(s![n..n + 1, .., .., ..]).to_owned());
            assert_eq!(alone.relevance, relevance, "{method}, sample {n} alone");
        }
    }
    let lrp = HostOnly(rsp::attribution::Lrp::epsilon(0.5));
    let rules = on_device.explain_rules(x.view(), 1, &lrp).unwrap();
    assert_eq!(rules.relevance, net.explain(x.view(), 1, Method::LrpEpsilon(0.5)).unwrap().relevance);
}

#[test]
fn every_method_works_on_a_sealed_backend() {
    every_method_gives_the_cpu_bits_on_a_sealed_backend(
        Network::<f64>::load(data("golden/vgg_tiny_bn.safetensors")).unwrap(),
        [2, 3, 32, 32],
    );
    every_method_gives_the_cpu_bits_on_a_sealed_backend(
        Network::<f64>::load(data("golden/resnet_basic_tiny.safetensors")).unwrap(),
        [2, 3, 64, 64],
    );
}

#[test]
fn an_attribution_uploads_the_input_once_and_downloads_only_its_results() {
    let vgg = Network::<f32>::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits_vgg.safetensors")).unwrap();
    attribution_crosses_once(vgg, [3, 3, 64, 64]);
    attribution_crosses_once(Network::<f64>::load(data("golden/vgg_tiny_bn.safetensors")).unwrap(), [2, 3, 32, 32]);
    attribution_crosses_once(
        Network::<f64>::load(data("golden/resnet_bottleneck_tiny.safetensors")).unwrap(),
        [2, 3, 64, 64],
    );
    attribution_crosses_once(
        Network::<f64>::load(data("golden/resnet_basic_tiny.safetensors")).unwrap(),
        [2, 3, 64, 64],
    );
    attribution_crosses_once(
        Network::<f32>::load(data("golden/avgpool_stride_rect.safetensors")).unwrap(),
        [2, 3, 40, 48],
    );
}

/// A method's rules with their tensor form hidden: the walk runs them on the
/// host, sample by sample, as before engine v2's tensor rules.
struct HostOnly<R>(R);

impl<T: Float, R: rsp::attribution::Rules<T>> rsp::attribution::Rules<T> for HostOnly<R> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn layer(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> rsp::Result<ArrayD<T>> {
        self.0.layer(backend, layer, x, relevance, ctx)
    }
    fn layer_given_output(
        &self,
        backend: &dyn Backend<T>,
        layer: &dyn Layer<T>,
        x: ArrayViewD<T>,
        output: ArrayViewD<T>,
        relevance: ArrayViewD<T>,
        ctx: RuleContext,
    ) -> rsp::Result<ArrayD<T>> {
        self.0.layer_given_output(backend, layer, x, output, relevance, ctx)
    }
    fn add(&self, a: ArrayViewD<T>, b: ArrayViewD<T>, r: ArrayViewD<T>) -> rsp::Result<(ArrayD<T>, ArrayD<T>)> {
        self.0.add(a, b, r)
    }
    fn seed(&self, logits: rsp::ndarray::ArrayView1<T>, target: usize) -> ArrayD<T> {
        self.0.seed(logits, target)
    }
}

fn paths_agree<T: Float, R: rsp::attribution::Rules<T> + Copy + std::fmt::Debug>(
    net: &Network<T>,
    x: &Array4<T>,
    rules: R,
) {
    assert!(rules.on_tensors().is_some(), "{rules:?}");
    let on_tensors = net.explain_rules(x.view(), 1, &rules).unwrap();
    let on_host = net.explain_rules(x.view(), 1, &HostOnly(rules)).unwrap();
    let bits =
        |r: &Option<Array4<T>>| r.as_ref().unwrap().iter().map(|v| v.to_f64_exact().to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&on_tensors.relevance), bits(&on_host.relevance), "{rules:?}");
    assert_eq!(on_tensors.logits, on_host.logits);
}

fn lrp_paths_agree<T: Float>(net: &Network<T>, x: &Array4<T>) {
    use rsp::attribution::{Lrp, ZennitComposite};
    for lrp in [Lrp::epsilon(0.25), Lrp::alpha1_beta0(), Lrp::epsilon(0.0)] {
        paths_agree(net, x, lrp);
    }
    for composite in [ZennitComposite::EpsilonPlusFlat, ZennitComposite::EpsilonGammaBox { low: -3.0, high: 3.0 }] {
        paths_agree(net, x, composite);
    }
    paths_agree(net, x, rsp::attribution::Sglrp);
    paths_agree(net, x, rsp::attribution::Rap);
}

/// The LRP composites', zennit's and RAP's rules on tensors give the bits of their
/// rules on host arrays (two implementations of the same formulas), on VGG,
/// BN-VGG, both ResNets (the residual sum's rule) and the average-pooling graph.
#[test]
fn rules_on_tensors_give_the_bits_of_the_rules_on_the_host() {
    let vgg = Network::<f32>::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits_vgg.safetensors")).unwrap();
    lrp_paths_agree(&vgg, &batch::<f32>([2, 3, 64, 64]));
    for (name, shape) in [
        ("vgg_tiny_bn", [2, 3, 32, 32]),
        ("resnet_basic_tiny", [2, 3, 64, 64]),
        ("resnet_bottleneck_tiny", [2, 3, 64, 64]),
        ("avgpool_stride_rect", [2, 3, 40, 48]),
    ] {
        let net = Network::<f64>::load(data(&format!("golden/{name}.safetensors"))).unwrap();
        lrp_paths_agree(&net, &batch::<f64>(shape));
    }
}

/// A linear layer reading the input sees negative inputs: LRP-α1β0 computes
/// their terms (skipped after a ReLU). In a batch where only one sample has
/// negative inputs, each sample's relevance equals the sample's alone.
#[test]
fn lrp_alpha1_beta0_handles_negative_inputs_sample_by_sample() {
    let mut net = Network::<f64>::new();
    net.push(rsp::layers::Flatten);
    let w = Array2::from_shape_fn((4, 12), |(i, j)| ((i * 5 + j * 3) % 7) as f64 * 0.4 - 1.1);
    net.push(rsp::layers::Linear::new("fc", w, None).unwrap());
    let x = Array4::from_shape_fn((2, 3, 2, 2), |(n, c, i, j)| {
        let v = ((c * 4 + i * 2 + j) % 5) as f64 * 0.3 + 0.1;
        if n == 0 && (c + i + j) % 2 == 0 {
            -v
        } else {
            v
        }
    });
    let both = net.explain(x.view(), 1, Method::LrpAlpha1Beta0).unwrap();
    let r = both.relevance.as_ref().unwrap();
    for n in 0..2 {
        let alone = net.explain(x.slice(s![n..n + 1, .., .., ..]), 1, Method::LrpAlpha1Beta0).unwrap();
        assert_eq!(alone.relevance.unwrap().index_axis(Axis(0), 0), r.index_axis(Axis(0), n), "sample {n}");
    }
    // Sample 0's negative inputs take relevance of their own (x⁻W⁻ > 0 where both are negative).
    assert!(r
        .index_axis(Axis(0), 0)
        .iter()
        .zip(x.index_axis(Axis(0), 0).iter())
        .any(|(rv, &xv)| xv < 0.0 && *rv != 0.0));
    // The host path agrees.
    let on_host = net.explain_rules(x.view(), 1, &HostOnly(rsp::attribution::Lrp::alpha1_beta0())).unwrap();
    assert_eq!(&on_host.relevance.unwrap(), r);
}

/// Two convolutions without a ReLU between (the second reads negative
/// inputs), flattened into a linear layer (also reading negative inputs),
/// with `fc_bias` as the linear layer's bias; and a batch of two inputs of
/// both signs.
fn negative_input_net(fc_bias: Option<f64>) -> (Network<f64>, Array4<f64>) {
    let mut net = Network::<f64>::new();
    let w1 = Array4::from_shape_fn((4, 2, 3, 3), |(o, c, u, v)| ((o * 7 + c * 5 + u * 3 + v) % 11) as f64 * 0.1 - 0.5);
    net.push(
        rsp::layers::Conv2d::new("c1", w1, Some(rsp::ndarray::Array1::from_elem(4, 0.05)), ConvGeometry::square(1, 1))
            .unwrap(),
    );
    let w2 = Array4::from_shape_fn((3, 4, 3, 3), |(o, c, u, v)| ((o * 3 + c * 7 + u * 5 + v) % 13) as f64 * 0.1 - 0.6);
    net.push(
        rsp::layers::Conv2d::new("c2", w2, Some(rsp::ndarray::Array1::from_elem(3, -0.1)), ConvGeometry::square(1, 1))
            .unwrap(),
    );
    net.push(rsp::layers::Flatten);
    let w3 = Array2::from_shape_fn((4, 48), |(i, j)| ((i * 5 + j * 3) % 7) as f64 * 0.3 - 0.9);
    net.push(rsp::layers::Linear::new("fc", w3, fc_bias.map(|b| rsp::ndarray::Array1::from_elem(4, b))).unwrap());
    let x = Array4::from_shape_fn((2, 2, 4, 4), |(n, c, i, j)| ((n * 5 + c * 7 + i * 3 + j) % 9) as f64 * 0.25 - 1.0);
    (net, x)
}

/// A convolution reading another's output without a ReLU between sees
/// negative inputs: ZPlus and Gamma compute their `x⁻` terms (skipped after a
/// ReLU). Both paths agree, on a batch and on each sample alone.
#[test]
fn zennit_rules_handle_negative_inputs_on_tensors() {
    use rsp::attribution::{Lrp, ZennitComposite};
    let (net, x) = negative_input_net(None);
    let rules: [&dyn Fn() -> Method; 4] = [
        &|| Method::LrpAlpha1Beta0,
        &|| Method::EpsilonPlusFlat,
        &|| Method::EpsilonGammaBox { low: -1.0, high: 1.0 },
        &|| Method::Rap,
    ];
    for method in rules {
        let both = net.explain(x.view(), 1, method()).unwrap();
        let r = both.relevance.as_ref().unwrap();
        for n in 0..2 {
            let alone = net.explain(x.slice(s![n..n + 1, .., .., ..]), 1, method()).unwrap();
            assert_eq!(alone.relevance.unwrap().index_axis(Axis(0), 0), r.index_axis(Axis(0), n), "{}", method());
        }
    }
    paths_agree(&net, &x, Lrp::alpha1_beta0());
    paths_agree(&net, &x, ZennitComposite::EpsilonPlusFlat);
    paths_agree(&net, &x, ZennitComposite::EpsilonGammaBox { low: -1.0, high: 1.0 });
    paths_agree(&net, &x, rsp::attribution::Rap);
}

/// zennit's composites on a network with batch norm run on the network with
/// its batch norms folded: made and uploaded once per network (the first
/// call), then each call uploads the input once and downloads this network's
/// logits, the folded network's logits and the relevance; after a weight
/// change the folded network is made again.
#[test]
fn zennit_folds_batch_norm_once_per_network() {
    let net = Network::<f64>::load(data("golden/vgg_tiny_bn.safetensors")).unwrap();
    let x = batch::<f64>([2, 3, 32, 32]);
    let folded = parameter_count(&rsp::canonize::merge_batch_norm_as_zennit(&net).unwrap());
    let sealed = Sealed::default();
    let counts = Arc::clone(&sealed.counts);
    let mut on_device = net.clone().with_backend(sealed);
    let delta = |run: &dyn Fn() -> rsp::Explanation<f64>| {
        let before = counts.get();
        let e = run();
        let after = counts.get();
        (e, [0, 1, 2, 3].map(|i| after[i] - before[i]))
    };
    let gamma_box = Method::EpsilonGammaBox { low: -3.0, high: 3.0 };
    let (first, d) = delta(&|| on_device.explain(x.view(), 1, Method::EpsilonPlusFlat).unwrap());
    assert_eq!(d, [1, parameter_count(&net) + folded, 3, 0]);
    assert_eq!(first.relevance, net.explain(x.view(), 1, Method::EpsilonPlusFlat).unwrap().relevance);
    for method in [Method::EpsilonPlusFlat, gamma_box.clone()] {
        let (e, d) = delta(&|| on_device.explain(x.view(), 1, &method).unwrap());
        assert_eq!(d, [1, 0, 3, 0], "{method}");
        assert_eq!(e.relevance, net.explain(x.view(), 1, &method).unwrap().relevance, "{method}");
    }
    // A weight change: both the network's and the folded network's weights are uploaded again.
    let _ = on_device.layer_mut(0);
    let (_, d) = delta(&|| on_device.explain(x.view(), 1, &gamma_box).unwrap());
    assert_eq!(d, [1, parameter_count(&net) + folded, 3, 0]);
}

/// RSP and RAP with the fused rules composed from the primitives (the
/// trait's defaults, which a new backend gets without writing a fused
/// kernel): the sectional, max-pool and residual rules and RAP's relative
/// rule and first propagation stay on the backend (one input upload, the
/// results' downloads, no per-sample host kernel) and agree with the CPU's
/// fused kernels up to rounding, RSP with both starts, on VGG, BN-VGG and
/// both ResNets.
#[test]
fn the_composed_rules_stay_on_the_backend_and_agree_with_the_fused_kernels() {
    use crate::common::rel_err;
    for (name, shape) in [
        ("vgg_tiny_bn", [2, 3, 32, 32]),
        ("resnet_basic_tiny", [2, 3, 64, 64]),
        ("resnet_bottleneck_tiny", [2, 3, 64, 64]),
    ] {
        let net = Network::<f64>::load(data(&format!("golden/{name}.safetensors"))).unwrap();
        let x = batch::<f64>(shape);
        let sealed = Sealed { composed: true, ..Sealed::default() };
        let counts = Arc::clone(&sealed.counts);
        let on_device = net.clone().with_backend(sealed);
        let mut expected = [0, parameter_count(&net), 0, 0];
        let comparative =
            rsp::RspOptions { start: StartRule::Comparative(HostileClasses::TopK(2)), ..rsp::RspOptions::default() };
        for method in [Method::Rsp(rsp::RspOptions::default()), Method::Rsp(comparative), Method::Rap] {
            let cpu = net.explain(x.view(), 1, &method).unwrap();
            let e = on_device.explain(x.view(), 1, &method).unwrap();
            let (a, b) = (e.relevance.unwrap().into_dyn(), cpu.relevance.unwrap().into_dyn());
            let err = rel_err(&a, &b);
            assert!(err < 1e-12, "{name}, {method}: the composed rules differ from the fused ones by {err:.3e}");
            // Sums in another order: equal bits would mean the fused kernels ran.
            assert_ne!(a, b, "{name}, {method}: the composition did not run");
            assert_eq!(e.logits, cpu.logits);
            expected[0] += 1;
            expected[2] += 2 + usize::from(e.start_relevance.is_some()); // logits, relevance, RSP's start relevance
            assert_eq!(
                counts.get(),
                expected,
                "{name}, {method}: [uploads, parameter uploads, downloads, host kernels]"
            );
        }
    }
    // RAP on negative inputs (both halves; the first propagation's four
    // sections), with and without the logits layer's bias.
    for bias in [None, Some(0.3)] {
        let (net, x) = negative_input_net(bias);
        let on_device = net.clone().with_backend(Sealed { composed: true, ..Sealed::default() });
        let a = on_device.explain(x.view(), 1, Method::Rap).unwrap().relevance.unwrap().into_dyn();
        let b = net.explain(x.view(), 1, Method::Rap).unwrap().relevance.unwrap().into_dyn();
        let err = rel_err(&a, &b);
        assert!(err < 1e-12, "RAP, bias {bias:?}: the composed rules differ from the fused ones by {err:.3e}");
    }
}

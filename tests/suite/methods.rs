//! The baselines of `rsp::methods`: hand-computed cases, equivalences and
//! conservation.

use ndarray::{arr1, arr2, Array1, Array2, Array4, ArrayView4};
use rsp::backend::ConvGeometry;
use rsp::layers::{AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, Relu};
use rsp::network::Source;
use rsp::{HostileClasses, Method, Network, RspError, RspOptions, StartRule};

/// Deterministic weights in about [−1, 1].
fn w4(shape: (usize, usize, usize, usize), seed: usize) -> Array4<f64> {
    Array4::from_shape_fn(shape, |(o, c, u, v)| {
        let k = (o * 131 + c * 31 + u * 7 + v * 3 + seed * 17) % 97;
        (k as f64 / 48.0 - 1.0) * 0.7
    })
}

fn w2(shape: (usize, usize), seed: usize) -> Array2<f64> {
    Array2::from_shape_fn(shape, |(i, j)| (((i * 37 + j * 11 + seed * 5) % 89) as f64 / 44.0 - 1.0) * 0.5)
}

fn image(seed: usize) -> Array4<f64> {
    Array4::from_shape_fn((1, 3, 8, 8), |(_, c, i, j)| ((c * 64 + i * 8 + j + seed) * 7919 % 101) as f64 / 50.0 - 1.0)
}

/// A bias-free ReLU chain starting with dropout, so that no convolution reads
/// the network input (no z^B rule): conv, relu, maxpool, conv, relu, adaptive
/// average pool, flatten, linear, relu, linear.
fn chain(bias: bool) -> Network<f64> {
    let b = |n: usize, s: usize| bias.then(|| Array1::from_shape_fn(n, |i| (i as f64 - 1.5) * 0.1 * s as f64));
    let mut net = Network::new();
    net.push(Dropout);
    net.push(Conv2d::new("c1", w4((4, 3, 3, 3), 1), b(4, 1), ConvGeometry::square(1, 1)).unwrap());
    net.push(Relu);
    net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
    net.push(Conv2d::new("c2", w4((5, 4, 3, 3), 2), b(5, 2), ConvGeometry::square(1, 1)).unwrap());
    net.push(Relu);
    net.push(AdaptiveAvgPool2d::new((2, 2)));
    net.push(Flatten);
    net.push(Linear::new("f1", w2((6, 20), 3), b(6, 3)).unwrap());
    net.push(Relu);
    net.push(Linear::new("f2", w2((3, 6), 4), b(3, 4)).unwrap());
    net
}

/// A bias-free residual network: dropout, conv, relu, conv, add(conv, relu), relu, maxpool, flatten, linear.
fn residual() -> Network<f64> {
    let mut net = Network::new();
    net.push(Dropout);
    net.push(Conv2d::new("c1", w4((3, 3, 3, 3), 5), None, ConvGeometry::square(1, 1)).unwrap());
    let r = net.push(Relu);
    let c = net.push(Conv2d::new("c2", w4((3, 3, 3, 3), 6), None, ConvGeometry::square(1, 1)).unwrap());
    net.add(c, r);
    net.push(Relu);
    net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
    net.push(Flatten);
    net.push(Linear::new("fc", w2((3, 48), 7), None).unwrap());
    net
}

fn relevance(net: &Network<f64>, x: ArrayView4<f64>, target: usize, method: Method) -> Array4<f64> {
    net.explain(x, target, &method).unwrap().relevance.unwrap()
}

fn max_abs_diff(a: &Array4<f64>, b: &Array4<f64>) -> f64 {
    a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max)
}

#[test]
fn lrp_zero_equals_gradient_times_input_on_bias_free_relu_nets() {
    for (name, net) in [("chain", chain(false)), ("residual", residual())] {
        for (seed, target) in [(0, 0), (3, 1), (11, 2)] {
            let x = image(seed);
            let gxi = relevance(&net, x.view(), target, Method::GradientXInput);
            let lrp0 = relevance(&net, x.view(), target, Method::LrpEpsilon(0.0));
            assert!(gxi.iter().any(|v| v.abs() > 1e-6), "{name}: a trivial map proves nothing");
            let d = max_abs_diff(&gxi, &lrp0);
            assert!(d < 1e-10, "{name}, seed {seed}, target {target}: max |LRP-0 − gradient × input| = {d}");
            // Both sum to the logit (a bias-free ReLU net is positively homogeneous).
            let logit = net.forward(x.view()).unwrap()[[0, target]];
            assert!((lrp0.sum() - logit).abs() < 1e-10, "{name}: Σ LRP-0 = {} ≠ logit {logit}", lrp0.sum());
        }
    }
}

#[test]
fn alpha1_beta0_conserves_the_logit_without_biases() {
    for net in [chain(false), residual()] {
        for seed in [1, 2] {
            let x = image(seed);
            let logits = net.forward(x.view()).unwrap();
            for t in 0..3 {
                let r = relevance(&net, x.view(), t, Method::LrpAlpha1Beta0);
                assert!((r.sum() - logits[[0, t]]).abs() < 1e-9, "Σ R = {} ≠ logit {}", r.sum(), logits[[0, t]]);
            }
        }
    }
}

#[test]
fn lrp_rules_by_hand_on_a_linear_layer() {
    // y = W x + b with W = [[1, 2], [-1, 1]], b = (0.5, 0), x = (1, 1): y = (3.5, 0).
    let fc = Linear::new("fc", arr2(&[[1.0, 2.0], [-1.0, 1.0]]), Some(arr1(&[0.5, 0.0]))).unwrap();
    let net = Network::sequential(vec![Box::new(Flatten) as Box<dyn Layer<f64>>, Box::new(fc)]);
    let x = Array4::from_shape_vec((1, 2, 1, 1), vec![1.0, 1.0]).unwrap();
    // ε = 0.5: S = 3.5 / (3.5 + 0.5) = 0.875, R = x ⊙ Wᵀ S = (0.875, 1.75).
    let r = relevance(&net, x.view(), 0, Method::LrpEpsilon(0.5));
    assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![0.875, 1.75]);
    // ε = 0: the bias keeps its share, 0.5 of 3.5: R = (1, 2).
    let r = relevance(&net, x.view(), 0, Method::LrpEpsilon(0.0));
    assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![1.0, 2.0]);
    // Target 1 has z = 0: with ε = 0 nothing passes (safe division).
    let r = relevance(&net, x.view(), 1, Method::LrpEpsilon(0.0));
    assert!(r.iter().all(|&v| v == 0.0));

    // α1β0 with a negative input: W = [[-2, 1]], x = (-1, 1), no bias: the
    // contributions are (2, 1), both positive: z⁺ = 3 = z, R = (2, 1).
    let fc = Linear::new("fc", arr2(&[[-2.0, 1.0]]), None).unwrap();
    let net = Network::sequential(vec![Box::new(Flatten) as Box<dyn Layer<f64>>, Box::new(fc)]);
    let x = Array4::from_shape_vec((1, 2, 1, 1), vec![-1.0, 1.0]).unwrap();
    let r = relevance(&net, x.view(), 0, Method::LrpAlpha1Beta0);
    assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![2.0, 1.0]);
    // x = (1, 1): contributions (−2, 1): only the positive one counts, z⁺ = 1;
    // the relevance is the logit −1, all on x₁.
    let x = Array4::from_shape_vec((1, 2, 1, 1), vec![1.0, 1.0]).unwrap();
    let r = relevance(&net, x.view(), 0, Method::LrpAlpha1Beta0);
    assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![0.0, -1.0]);
}

#[test]
fn gradient_matches_finite_differences() {
    let net = chain(true);
    let x = image(5);
    let g = relevance(&net, x.view(), 2, Method::Gradient);
    let h = 1e-6;
    for &(c, i, j) in &[(0, 0, 0), (1, 3, 4), (2, 7, 7), (0, 5, 2)] {
        let mut xp = x.clone();
        xp[[0, c, i, j]] += h;
        let mut xm = x.clone();
        xm[[0, c, i, j]] -= h;
        let fd = (net.forward(xp.view()).unwrap()[[0, 2]] - net.forward(xm.view()).unwrap()[[0, 2]]) / (2.0 * h);
        assert!(
            (fd - g[[0, c, i, j]]).abs() < 1e-6,
            "({c},{i},{j}): finite difference {fd} vs gradient {}",
            g[[0, c, i, j]]
        );
    }
    let gxi = relevance(&net, x.view(), 2, Method::GradientXInput);
    assert!(max_abs_diff(&gxi, &(&g * &x)) < 1e-15);
}

#[test]
fn gradcam_is_relu_of_the_channel_sum_of_a_times_alpha() {
    // conv(3→4) + bias, relu (start layer, 8×8), global average pool, flatten, linear.
    // ∂y_t/∂A = W[t, c] / 64 everywhere, so α_c = W[t, c] / 64 and the map is
    // ReLU(Σ_c A_c W[t, c] / 64), already at the input size (no interpolation).
    let conv =
        Conv2d::new("c", w4((4, 3, 3, 3), 9), Some(arr1(&[0.1, -0.2, 0.05, 0.0])), ConvGeometry::square(1, 1)).unwrap();
    let fc_w = w2((2, 4), 8);
    let mut net = Network::<f64>::new();
    net.push(conv.clone());
    net.push(Relu);
    net.push(AdaptiveAvgPool2d::new((1, 1)));
    net.push(Flatten);
    net.push(Linear::new("fc", fc_w.clone(), Some(arr1(&[0.3, -0.3]))).unwrap());
    let features = Network::sequential(vec![Box::new(conv) as Box<dyn Layer<f64>>, Box::new(Relu), Box::new(Flatten)]);
    for t in 0..2 {
        let x = image(t + 4);
        let a = net.explain(x.view(), t, &Method::GradCam).unwrap();
        assert_eq!(a.start_layer, Some(1));
        assert!(a.relevance.is_none());
        let feats = features.forward(x.view()).unwrap(); // (1, 4·64)
        let map = a.heatmap(0).unwrap();
        let mut positive = 0;
        for i in 0..8 {
            for j in 0..8 {
                let s: f64 = (0..4).map(|c| feats[[0, c * 64 + i * 8 + j]] * fc_w[[t, c]] / 64.0).sum();
                assert!((map[[i, j]] - s.max(0.0)).abs() < 1e-12, "({i},{j}): {} vs {}", map[[i, j]], s.max(0.0));
                positive += usize::from(s > 0.0);
            }
        }
        assert!(positive > 0, "the test needs some positive evidence");
    }
}

#[test]
fn gradcam_upsamples_bilinearly_to_the_input() {
    // A start map of 4×4 (after a 2×2 max pool) becomes 8×8.
    let mut net = Network::<f64>::new();
    net.push(Conv2d::new("c", w4((4, 3, 3, 3), 2), None, ConvGeometry::square(1, 1)).unwrap());
    net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
    net.push(Relu);
    net.push(AdaptiveAvgPool2d::new((1, 1)));
    net.push(Flatten);
    net.push(Linear::new("fc", w2((2, 4), 1), None).unwrap());
    let x = image(1);
    let a = net.explain(x.view(), 0, &Method::GradCam).unwrap();
    let cam = a.start_relevance.unwrap(); // (1, 4, 4, 4)
    let small = cam.index_axis(ndarray::Axis(0), 0).sum_axis(ndarray::Axis(0)).mapv(|v| v.max(0.0));
    let small = small.into_dimensionality::<ndarray::Ix2>().unwrap();
    let expect = rsp::attribution::upsample_bilinear(small.view(), 8, 8).unwrap();
    assert_eq!(a.heatmaps.index_axis(ndarray::Axis(0), 0), expect);
    // align_corners = false: output (0, 0) is input (0, 0); output (1, 1) is
    // ¾ of input (0, 0) and ¼ of (1, 1) in each direction.
    assert_eq!(expect[[0, 0]], small[[0, 0]]);
    let mid =
        0.75 * (0.75 * small[[0, 0]] + 0.25 * small[[0, 1]]) + 0.25 * (0.75 * small[[1, 0]] + 0.25 * small[[1, 1]]);
    assert!((expect[[1, 1]] - mid).abs() < 1e-12);
}

#[test]
fn rsp_methods_are_network_explain() {
    let model = rsp::Network::<f64>::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits_vgg.safetensors")).unwrap();
    let x =
        Array4::from_shape_fn((2, 3, 64, 64), |(n, c, i, j)| ((n * 5 + c * 3 + i * 64 + j) % 17) as f64 / 8.0 - 1.0);
    for (method, start) in [
        (Method::default(), StartRule::SingleClass),
        (Method::Rsp(RspOptions::COMPARATIVE), StartRule::Comparative(HostileClasses::PredictedPresent)),
    ] {
        let a = model.explain(x.view(), vec![3, 7], &method).unwrap();
        let e = model.explain(x.view(), vec![3, 7], &RspOptions { start, ..Default::default() }).unwrap();
        assert_eq!(a.relevance.as_ref().unwrap(), e.relevance.as_ref().unwrap());
        assert_eq!(a.heatmaps, e.heatmaps);
        assert_eq!(a.hostile_classes, e.hostile_classes);
        assert_eq!(a.start_layer, Some(16)); // the ReLU after the last convolution (8×8)
    }
}

#[test]
fn every_method_runs_on_the_digits_model_in_f32_and_f64() {
    // No input patch repeats: where one does (a periodic or flat input), max-pool
    // windows hold exact ties, which f32's Winograd convolutions may break
    // differently from f64's im2col (`ConvKernels::Auto`), moving relevance
    // to a neighbouring pixel; that is not a precision difference.
    let x = Array4::from_shape_fn((1, 3, 64, 64), |(_, c, i, j)| crate::common::noise(((c * 64 + i) * 64 + j) as u64));
    let m64 = rsp::Network::<f64>::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits_vgg.safetensors")).unwrap();
    let m32 = rsp::Network::<f32>::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits_vgg.safetensors")).unwrap();
    for method in Method::ALL {
        let a = m64.explain(x.view(), 4, &method).unwrap();
        let b = m32.explain(x.mapv(|v| v as f32).view(), 4, &method).unwrap();
        assert_eq!(a.heatmaps.shape(), &[1, 64, 64]);
        assert!(a.heatmaps.iter().all(|v| v.is_finite()));
        // f32 and f64 agree to f32 precision relative to the map's scale.
        let scale = a.heatmaps.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
        let d = a.heatmaps.iter().zip(&b.heatmaps).map(|(p, &q)| (p - f64::from(q)).abs()).fold(0.0, f64::max);
        assert!(d / scale < 1e-3, "{method}: relative f32/f64 difference {}", d / scale);
    }
}

#[test]
fn methods_report_typed_errors() {
    let net = chain(true);
    let x = image(0);
    assert!(matches!(
        net.explain(x.view(), 3, &Method::Gradient),
        Err(RspError::TargetOutOfRange { target: 3, classes: 3 })
    ));
    assert!(matches!(net.explain(x.view(), 0, Method::LrpEpsilon(f64::NAN)), Err(RspError::InvalidArgument(_))));
    assert!(matches!(net.explain(x.view(), vec![0, 1], &Method::GradCam), Err(RspError::InvalidArgument(_))));
    let bad = Array4::from_elem((1, 2, 8, 8), 0.0);
    assert!(net.explain(bad.view(), 0, &Method::LrpAlpha1Beta0).is_err());
    assert!("lrp-epsilon=-1".parse::<Method>().is_err());
    assert!("nope".parse::<Method>().is_err());
    for m in Method::ALL {
        assert_eq!(m.to_string().parse::<Method>().unwrap(), m);
    }
    // The default LRP rule of a layer without one is an error, not a panic.
    #[derive(Clone, Debug)]
    struct Opaque;
    impl Layer<f64> for Opaque {
        fn kind(&self) -> rsp::layers::LayerKind {
            rsp::layers::LayerKind::Custom
        }
        fn output_shape(&self, input: &[usize]) -> rsp::Result<Vec<usize>> {
            Ok(input.to_vec())
        }
        fn forward(
            &self,
            _: &dyn rsp::backend::Backend<f64>,
            x: ndarray::ArrayViewD<f64>,
        ) -> rsp::Result<ndarray::ArrayD<f64>> {
            Ok(x.to_owned())
        }
        fn gradient(
            &self,
            _: &dyn rsp::backend::Backend<f64>,
            _: ndarray::ArrayViewD<f64>,
            g: ndarray::ArrayViewD<f64>,
        ) -> rsp::Result<ndarray::ArrayD<f64>> {
            Ok(g.to_owned())
        }
        fn rsp_backward(
            &self,
            _: &dyn rsp::backend::Backend<f64>,
            _: ndarray::ArrayViewD<f64>,
            r: ndarray::ArrayViewD<f64>,
            _: rsp::layers::RuleContext,
        ) -> rsp::Result<ndarray::ArrayD<f64>> {
            Ok(r.to_owned())
        }
        fn describe(&self) -> String {
            "opaque".into()
        }
    }
    let mut net = Network::<f64>::new();
    net.push(Flatten);
    net.push_from(Opaque, Source::Node(0));
    net.push(Linear::new("fc", w2((2, 192), 1), None).unwrap());
    assert!(
        matches!(net.explain(x.view(), 0, &Method::LrpAlpha1Beta0), Err(RspError::Model(m)) if m.contains("opaque"))
    );
    assert!(net.explain(x.view(), 0, &Method::GradientXInput).is_ok());
}

//! Property tests of the method on random small networks and inputs:
//! conservation, batch = per-sample, Linear = 1×1 convolution, f32 ≈ f64,
//! max-pool tie order, and bits independent of the thread count.

use ndarray::{Array1, Array2, Array3, Array4, Axis};
use proptest::prelude::*;
use rsp::backend::{ConvGeometry, CpuBackend, ReferenceBackend};
use rsp::layers::{
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, Flatten, Layer, Linear, MaxPool2d, Relu, RuleContext,
};
use rsp::{HostileClasses, Network, RspOptions, StartRule};

/// A deterministic stream of numbers in [0, 1) from a seed (so that
/// proptest shrinks seeds, not thousands of floats).
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> f64 {
        // SplitMix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
    fn pick(&mut self, n: usize) -> usize {
        (self.next() * n as f64) as usize % n
    }
}

/// The architecture of a random VGG-like net.
#[derive(Clone, Debug)]
struct Arch {
    seed: u64,
    channels: usize,
    height: usize,
    width: usize,
    blocks: usize,
    classes: usize,
    batch: usize,
}

fn arch() -> impl Strategy<Value = Arch> {
    (any::<u64>(), 1usize..4, 6usize..14, 6usize..14, 1usize..4, 2usize..6, 1usize..4).prop_map(
        |(seed, channels, height, width, blocks, classes, batch)| Arch {
            seed,
            channels,
            height,
            width,
            blocks,
            classes,
            batch,
        },
    )
}

/// Builds the net and an input batch. With `positive`, weights and inputs are
/// positive, so every activation is > 0 and no safe division meets a zero
/// (the condition under which the method conserves relevance exactly).
fn build(a: &Arch, positive: bool) -> (Network<f64>, Array4<f64>) {
    let mut s = Stream(a.seed);
    let lo = if positive { 0.0 } else { -1.0 };
    let mut net = Network::<f64>::new();
    let (mut c, mut h, mut w) = (a.channels, a.height, a.width);
    for b in 0..a.blocks {
        let out = 2 + s.pick(4);
        let k = if b > 0 && s.next() < 0.3 { 1 } else { 3 };
        let stride = if h >= 8 && w >= 8 && s.next() < 0.3 { 2 } else { 1 };
        let pad = if k == 3 && (h < 3 || w < 3) {
            1
        } else if k == 3 {
            s.pick(2)
        } else {
            0
        };
        let weight = Array4::from_shape_fn((out, c, k, k), |_| s.range(lo, 1.0) / (c * k * k) as f64);
        let bias = Array1::from_shape_fn(out, |_| s.range(0.0, 0.2));
        let geom = ConvGeometry::square(stride, pad);
        let (oh, ow) = geom.output_size((h, w), (k, k)).unwrap();
        net.push(Conv2d::new(format!("conv{b}"), weight, Some(bias), geom).unwrap());
        if s.next() < 0.4 {
            let gamma = Array1::from_shape_fn(out, |_| s.range(0.5, 1.5));
            let beta = Array1::from_shape_fn(out, |_| s.range(0.1, 0.3));
            let mean = Array1::from_shape_fn(out, |_| s.range(0.0, 0.05));
            let var = Array1::from_shape_fn(out, |_| s.range(0.5, 2.0));
            net.push(BatchNorm2d::new(format!("bn{b}"), gamma, beta, mean, var, 1e-5).unwrap());
        }
        net.push(Relu);
        (c, h, w) = (out, oh, ow);
        if b + 1 < a.blocks && h >= 4 && w >= 4 {
            if s.next() < 0.5 {
                net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
            } else {
                net.push(AvgPool2d::new((2, 2), (2, 2)));
            }
            (h, w) = (h / 2, w / 2);
        }
    }
    let (ph, pw) = (1 + s.pick(2.min(h)), 1 + s.pick(2.min(w)));
    net.push(AdaptiveAvgPool2d::new((ph, pw)));
    net.push(Flatten);
    let features = c * ph * pw;
    let fc = Array2::from_shape_fn((a.classes, features), |_| s.range(-1.0, 1.0));
    net.push(Linear::new("fc", fc, Some(Array1::from_shape_fn(a.classes, |_| s.range(-0.1, 0.1)))).unwrap());
    let x = Array4::from_shape_fn((a.batch, a.channels, a.height, a.width), |_| {
        s.range(if positive { 0.05 } else { -1.0 }, 1.0)
    });
    (net, x)
}

fn max_abs(a: impl IntoIterator<Item = f64>) -> f64 {
    a.into_iter().fold(0.0, |m, v| m.max(v.abs()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn relevance_is_conserved_from_the_start_layer_to_the_input(a in arch()) {
        let (net, x) = build(&a, true);
        for start in [StartRule::SingleClass, StartRule::Comparative(HostileClasses::TopK(1))] {
            let opts = RspOptions { start, ..Default::default() };
            let e = net.explain(x.view(), a.classes - 1, &opts).unwrap();
            for n in 0..a.batch {
                let total_in: f64 = e.relevance.as_ref().unwrap().index_axis(Axis(0), n).sum();
                let r0 = e.start_relevance.as_ref().unwrap().index_axis(Axis(0), n);
                let total_start: f64 = r0.sum();
                let scale: f64 = r0.iter().map(|v| v.abs()).sum();
                prop_assert!((total_in - total_start).abs() <= 1e-9 * scale.max(1e-300),
                    "sample {n}: Σ R_in = {total_in}, Σ R_start = {total_start}");
            }
        }
    }

    #[test]
    fn a_batch_equals_its_samples_bit_for_bit(a in arch(), comparative in any::<bool>()) {
        let (net, x) = build(&a, false);
        let start = if comparative { StartRule::Comparative(HostileClasses::PredictedPresent) } else { StartRule::SingleClass };
        let opts = RspOptions { start, ..Default::default() };
        let targets: Vec<usize> = (0..a.batch).map(|n| n % a.classes).collect();
        let batch = net.explain(x.view(), targets.clone(), &opts).unwrap();
        for (n, &target) in targets.iter().enumerate() {
            let one = x.slice(ndarray::s![n..n + 1, .., .., ..]);
            let alone = net.explain(one, target, &opts).unwrap();
            prop_assert_eq!(batch.relevance.as_ref().unwrap().index_axis(Axis(0), n), alone.relevance.as_ref().unwrap().index_axis(Axis(0), 0));
            prop_assert_eq!(batch.logits.row(n), alone.logits.row(0));
        }
    }

    #[test]
    fn float32_agrees_with_float64(a in arch()) {
        let (net, x) = build(&a, true);
        let e64 = net.explain(x.view(), 0, RspOptions::default()).unwrap();
        // The same weights in f32: round-trip through a file.
        let scratch_dir = crate::common::scratch("prop");
        let dir = scratch_dir.path();
        let path = dir.join("net.safetensors");
        rsp::io::safetensors::save(&net, &path).unwrap();
        let net32 = rsp::io::safetensors::load::<f32>(&path).unwrap();
        let back64 = rsp::io::safetensors::load::<f64>(&path).unwrap();
        let e64b = back64.explain(x.view(), 0, RspOptions::default()).unwrap();
        prop_assert_eq!(e64.relevance.as_ref().unwrap(), e64b.relevance.as_ref().unwrap(), "saving and loading in f64 is exact");
        let e32 = net32.explain(x.mapv(|v| v as f32).view(), 0, RspOptions::default()).unwrap();
        let scale = max_abs(e64.relevance.as_ref().unwrap().iter().copied());
        let diff = max_abs(e32.relevance.as_ref().unwrap().iter().zip(e64.relevance.as_ref().unwrap()).map(|(&a, &b)| a as f64 - b));
        prop_assert!(diff <= 1e-3 * scale, "f32 differs from f64 by {diff} (scale {scale})");
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count(a in arch()) {
        let (net, x) = build(&a, false);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| net.explain(x.view(), 1, RspOptions::default()).unwrap().relevance)
        };
        let one = run(1);
        prop_assert_eq!(&one, &run(2));
        prop_assert_eq!(&one, &run(3));
    }

    #[test]
    fn linear_is_the_sectional_rule_of_a_1x1_convolution_on_a_1x1_map(seed in any::<u64>(), inputs in 1usize..20, outputs in 1usize..12) {
        let mut s = Stream(seed);
        let w = Array2::from_shape_fn((outputs, inputs), |_| s.range(-1.0, 1.0));
        let x = Array1::from_shape_fn(inputs, |_| s.range(-0.5, 1.0));
        let r = Array1::from_shape_fn(outputs, |_| s.range(-1.0, 1.0));
        let linear = Linear::new("fc", w.clone(), None).unwrap();
        let conv = Conv2d::new("conv", w.into_shape_with_order((outputs, inputs, 1, 1)).unwrap(), None, ConvGeometry::square(1, 0)).unwrap();
        let ctx = RuleContext::default();
        let by_linear = linear.rsp_backward(&CpuBackend, x.view().into_dyn(), r.view().into_dyn(), ctx).unwrap();
        let x_map = x.into_shape_with_order((inputs, 1, 1)).unwrap();
        let r_map = r.into_shape_with_order((outputs, 1, 1)).unwrap();
        let by_conv = conv.rsp_backward(&ReferenceBackend, x_map.view().into_dyn(), r_map.view().into_dyn(), ctx).unwrap();
        let by_conv = by_conv.into_shape_with_order(inputs).unwrap();
        let scale = max_abs(by_conv.iter().copied()).max(1e-300);
        for (a, b) in by_linear.iter().zip(by_conv.iter()) {
            prop_assert!((a - b).abs() <= 1e-12 * scale, "{a} vs {b}");
        }
    }

    #[test]
    fn max_pool_ties_go_to_the_first_element_in_window_order(seed in any::<u64>(), h in 2usize..9, w in 2usize..9, k in 2usize..4, stride in 1usize..3) {
        prop_assume!(h >= k && w >= k);
        let mut s = Stream(seed);
        // Small integers: many ties.
        let x = Array3::from_shape_fn((2, h, w), |_| s.pick(3) as f64);
        let pool = MaxPool2d::new((k, k), (stride, stride), [0; 4]);
        let out = Layer::<f64>::output_shape(&pool, x.shape()).unwrap();
        let g = Array3::from_shape_fn((out[0], out[1], out[2]), |_| s.range(0.5, 1.5));
        let grad = pool.gradient(&CpuBackend, x.view().into_dyn(), g.view().into_dyn()).unwrap();
        let r = Array3::from_shape_fn((out[0], out[1], out[2]), |_| s.range(-1.0, 1.0));
        let rin = pool.rsp_backward(&CpuBackend, x.view().into_dyn(), r.view().into_dyn(), RuleContext::default()).unwrap();
        // Oracle: scan each window row by row, left to right, keep the first maximum.
        let mut expected_grad = Array3::<f64>::zeros(x.raw_dim());
        let mut winners = Array3::<bool>::from_elem(x.raw_dim(), false);
        for c in 0..2 {
            for i in 0..out[1] {
                for j in 0..out[2] {
                    let mut best = (i * stride, j * stride);
                    for u in 0..k {
                        for v in 0..k {
                            let (p, q) = (i * stride + u, j * stride + v);
                            if x[[c, p, q]] > x[[c, best.0, best.1]] {
                                best = (p, q);
                            }
                        }
                    }
                    expected_grad[[c, best.0, best.1]] += g[[c, i, j]];
                    winners[[c, best.0, best.1]] = true;
                }
            }
        }
        prop_assert_eq!(grad.into_dimensionality::<ndarray::Ix3>().unwrap(), expected_grad);
        // The RSP rule sends relevance only to the winners.
        for (v, &won) in rin.iter().zip(winners.iter()) {
            prop_assert!(won || *v == 0.0);
        }
    }
}

#[test]
fn a_tied_max_pool_window_routes_relevance_to_its_first_element() {
    // One 2×2 window [[1, 3], [3, 2]]: the first 3 (row 0, column 1) wins.
    let pool = MaxPool2d::new((2, 2), (2, 2), [0; 4]);
    let x = Array3::<f64>::from_shape_vec((1, 2, 2), vec![1.0, 3.0, 3.0, 2.0]).unwrap();
    let r = Array3::<f64>::from_elem((1, 1, 1), 0.6);
    let rin = pool.rsp_backward(&CpuBackend, x.view().into_dyn(), r.view().into_dyn(), RuleContext::default()).unwrap();
    // x̃ = 3 + 1e-9, z = x̃: R_in = x̃ · (0.6 / x̃) = 0.6 (up to rounding) at the winner only.
    assert!((rin[[0, 0, 1]] - 0.6).abs() < 1e-15);
    assert_eq!(rin[[0, 1, 0]], 0.0);
    assert_eq!(rin[[0, 0, 0]], 0.0);
}

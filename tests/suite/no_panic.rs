//! No panic on any input through `attribute`/`explain`: random small
//! architectures (layer sequences that do or do not fit together), random
//! shapes and random values including extremes give a finite result or a typed
//! error. Plus the numerical edge cases of the method, with the values
//! `docs/errors-and-limits.md` documents.

use ndarray::{Array1, Array2, Array4, Axis};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use rsp::backend::ConvGeometry;
use rsp::layers::{
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, Relu,
};
use rsp::network::Source;
use rsp::{Float, HostileClasses, Network, RspError, RspOptions, StartRule, Target};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

/// SplitMix64: a stream of numbers from one seed (proptest shrinks the seed).
struct Stream(u64);

impl Stream {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn pick(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// How the values of a tensor are drawn.
#[derive(Clone, Copy, Debug)]
enum Values {
    Uniform,
    Zero,
    Huge,
    Tiny,
    Subnormal,
    Mixed,
    Constant,
}

fn values_kind(s: &mut Stream) -> Values {
    [
        Values::Uniform,
        Values::Uniform,
        Values::Zero,
        Values::Huge,
        Values::Tiny,
        Values::Subnormal,
        Values::Mixed,
        Values::Constant,
    ][s.pick(8)]
}

fn value<T: Float>(s: &mut Stream, kind: Values) -> T {
    let sign = if s.chance(0.5) { -1.0 } else { 1.0 };
    let subnormal = if T::NAME == "f32" { 1e-40 } else { 1e-310 };
    let v = match kind {
        Values::Uniform => s.unit() * 2.0 - 1.0,
        Values::Zero => 0.0,
        Values::Huge => sign * 1e30,
        Values::Tiny => sign * 1e-30,
        Values::Subnormal => sign * subnormal,
        Values::Constant => 0.5,
        Values::Mixed => [0.0, 1.0, -1.0, 1e30, -1e30, subnormal, 1e-30, s.unit()][s.pick(8)],
    };
    T::of(v)
}

fn array1<T: Float>(s: &mut Stream, n: usize, kind: Values) -> Array1<T> {
    Array1::from_shape_fn(n, |_| value(s, kind))
}

/// A random layer; with `fit`, its sizes follow the current sample shape.
fn random_layer<T: Float>(s: &mut Stream, shape: &[usize], fit: bool, k: usize) -> Option<Box<dyn Layer<T>>> {
    let channels = if fit && shape.len() == 3 { shape[0] } else { 1 + s.pick(4) };
    let small = |s: &mut Stream| 1 + s.pick(3);
    let kind = values_kind(s);
    Some(match s.pick(10) {
        0 | 1 => {
            let out = 1 + s.pick(4);
            let (kh, kw) = (small(s), small(s));
            let w = Array4::from_shape_fn((out, channels, kh, kw), |_| value(s, kind));
            let bias = s.chance(0.5).then(|| array1(s, out, kind));
            let geometry =
                ConvGeometry { stride: [small(s), small(s)], padding: [s.pick(3), s.pick(3), s.pick(3), s.pick(3)] };
            Box::new(Conv2d::new(format!("conv{k}"), w, bias, geometry).ok()?)
        }
        2 => Box::new(Relu),
        3 => Box::new(MaxPool2d::new(
            (small(s), small(s)),
            (small(s), small(s)),
            [s.pick(2), s.pick(2), s.pick(2), s.pick(2)],
        )),
        4 => Box::new(AvgPool2d {
            kernel: (small(s), small(s)),
            stride: (small(s), small(s)),
            padding: [s.pick(2), s.pick(2), s.pick(2), s.pick(2)],
            count_include_pad: s.chance(0.5),
        }),
        5 => Box::new(AdaptiveAvgPool2d::new((small(s), small(s)))),
        6 => {
            let var = Array1::from_shape_fn(channels, |_| value::<T>(s, kind).abs());
            let eps = T::of([0.0, 1e-5, 1.0][s.pick(3)]);
            let bn = BatchNorm2d::new(
                format!("bn{k}"),
                array1(s, channels, kind),
                array1(s, channels, kind),
                array1(s, channels, kind),
                var,
                eps,
            );
            Box::new(bn.ok()?)
        }
        7 => Box::new(Flatten),
        8 => {
            let features = if fit && shape.len() == 1 { shape[0] } else { 1 + s.pick(40) };
            let out = 1 + s.pick(4);
            let w = Array2::from_shape_fn((out, features), |_| value(s, kind));
            let bias = s.chance(0.5).then(|| array1(s, out, kind));
            Box::new(Linear::new(format!("fc{k}"), w, bias).ok()?)
        }
        _ => Box::new(Dropout),
    })
}

/// A random network: mostly a chain, sometimes with a residual sum; its last
/// layers are, with some probability, a head that makes it a classifier.
fn random_network<T: Float>(s: &mut Stream, sample: &[usize]) -> Network<T> {
    let mut net = Network::<T>::new();
    let mut shape = sample.to_vec();
    // Mostly networks whose layers fit together (each layer is redrawn a few
    // times until it accepts the current shape), sometimes anything.
    let fit = s.chance(0.85);
    let mut shapes = vec![sample.to_vec()];
    for k in 0..s.pick(7) {
        let mut layer = random_layer::<T>(s, &shape, fit, k);
        for _ in 0..6 {
            if !fit || layer.as_ref().is_some_and(|l| l.output_shape(&shape).is_ok()) {
                break;
            }
            layer = random_layer::<T>(s, &shape, fit, k);
        }
        let Some(layer) = layer else { continue };
        if let Ok(out) = layer.output_shape(&shape) {
            shape = out;
        }
        net.push_boxed(layer, net.last());
        shapes.push(shape.clone());
        if s.chance(0.15) {
            // A residual sum with an earlier tensor (of the same shape, when fitting).
            let candidates: Vec<usize> = (0..shapes.len()).filter(|&j| !fit || shapes[j] == shape).collect();
            let j = candidates[s.pick(candidates.len())];
            let other = if j == 0 { Source::Input } else { Source::Node(j - 1) };
            net.add(net.last(), other);
            shapes.push(shape.clone());
        }
    }
    if s.chance(0.8) {
        net.push(Relu);
        if s.chance(0.5) {
            net.push(AdaptiveAvgPool2d::new((1 + s.pick(2), 1 + s.pick(2))));
        }
        net.push(Flatten);
        let features = match net.check(sample) {
            Ok(shapes) => shapes.last().unwrap()[0],
            Err(_) => 1 + s.pick(20),
        };
        let kind = values_kind(s);
        let classes = 1 + s.pick(4);
        let w = Array2::from_shape_fn((classes, features), |_| value(s, kind));
        if let Ok(fc) = Linear::new("head", w, None) {
            net.push(fc);
        }
    }
    net
}

fn random_options(s: &mut Stream, net_len: usize) -> RspOptions {
    let start = match s.pick(5) {
        0 => StartRule::Comparative(HostileClasses::PredictedPresent),
        1 => StartRule::Comparative(HostileClasses::TopK(s.pick(4))),
        2 => StartRule::Comparative(HostileClasses::Explicit((0..s.pick(3)).map(|_| s.pick(5)).collect())),
        _ => StartRule::SingleClass,
    };
    let start_layer = match s.pick(10) {
        0 => Some(s.pick(net_len + 2)),
        1 => Some(usize::MAX),
        _ => None,
    };
    RspOptions { start, start_layer, keep_layer_relevances: s.chance(0.2) }
}

#[derive(Default)]
struct Tally {
    cases: AtomicUsize,
    ok: AtomicUsize,
    errors: AtomicUsize,
}

fn one_case<T: Float>(seed: u64, tally: &Tally) -> Result<(), TestCaseError> {
    tally.cases.fetch_add(1, Ordering::Relaxed);
    let mut s = Stream(seed);
    let sample = [1 + s.pick(3), 1 + s.pick(9), 1 + s.pick(9)];
    let built = catch_unwind(AssertUnwindSafe(|| random_network::<T>(&mut s, &sample)));
    let net = built.map_err(|_| TestCaseError::fail("building the network panicked"))?;
    let n = [0, 1, 1, 1, 1, 2, 2, 2, 3, 3][s.pick(10)];
    // The input: sometimes a wrong channel count or a non-contiguous view.
    let channels = if s.chance(0.9) { sample[0] } else { 1 + s.pick(4) };
    let kind = values_kind(&mut s);
    let big = Array4::from_shape_fn((n, channels, sample[1] * 2, sample[2]), |_| value::<T>(&mut s, kind));
    let x = if s.chance(0.3) {
        big.slice(ndarray::s![.., .., ..;2, ..])
    } else {
        big.slice(ndarray::s![.., .., ..sample[1], ..])
    };
    let target = match s.pick(10) {
        0 => Target::Single(s.pick(6)),
        1 => Target::PerSample((0..s.pick(4)).map(|_| s.pick(5)).collect()),
        _ => Target::PerSample((0..n).map(|_| 0).collect()),
    };
    let opts = random_options(&mut s, net.len());
    let result = catch_unwind(AssertUnwindSafe(|| net.explain(x, target, &opts))).map_err(|_| {
        TestCaseError::fail(format!("explain panicked on {net:?} with input {:?} and {opts:?}", x.shape()))
    })?;
    match result {
        Ok(e) => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            let finite = e
                .relevance
                .as_ref()
                .unwrap()
                .iter()
                .chain(e.start_relevance.as_ref().unwrap().iter())
                .chain(e.logits.iter())
                .all(|v| v.is_finite());
            if !finite || e.relevance.as_ref().unwrap().shape() != x.shape() {
                return Err(TestCaseError::fail(format!("non-finite or misshaped result on {net:?}")));
            }
            // The short form (default options: it may still refuse, e.g. without an automatic start layer).
            let short = catch_unwind(AssertUnwindSafe(|| net.attribute(x, e.targets[0])))
                .map_err(|_| TestCaseError::fail(format!("attribute panicked on {net:?}")))?;
            if let Ok((pos, hostile)) = short {
                if !pos.iter().chain(hostile.iter()).all(|v| v.is_finite()) {
                    return Err(TestCaseError::fail("attribute returned non-finite values"));
                }
            }
        }
        Err(err) => {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            // Every error has a message saying something.
            if err.to_string().len() < 10 {
                return Err(TestCaseError::fail(format!("terse error: {err}")));
            }
        }
    }
    Ok(())
}

/// Runs `cases` random architectures from a fixed seed and requires at least
/// `min_ok` finite results and `min_errors` typed errors (the floors sit a little
/// under the seed's counts, so a change that makes every case an error fails).
fn sweep<T: Float>(cases: u32, min_ok: usize, min_errors: usize) {
    let tally = Tally::default();
    let config = Config { cases, failure_persistence: None, rng_seed: RngSeed::Fixed(17), ..Config::default() };
    let mut runner = TestRunner::new(config);
    runner.run(&proptest::num::u64::ANY, |seed| one_case::<T>(seed, &tally)).unwrap();
    println!(
        "random architectures in {}: {} cases, {} Ok (finite), {} typed errors",
        T::NAME,
        tally.cases.load(Ordering::Relaxed),
        tally.ok.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed)
    );
    let (ok, errors) = (tally.ok.load(Ordering::Relaxed), tally.errors.load(Ordering::Relaxed));
    assert!(ok >= min_ok, "{}: only {ok} cases gave a result (expected ≥ {min_ok})", T::NAME);
    assert!(errors >= min_errors, "{}: only {errors} cases gave an error (expected ≥ {min_errors})", T::NAME);
}

#[test]
fn random_architectures_never_panic_in_f32() {
    sweep::<f32>(2500, 540, 1700);
}

#[test]
fn random_architectures_never_panic_in_f64() {
    sweep::<f64>(2500, 600, 1650);
}

// ------------------------------------------------------- numerical edge cases

/// conv(3→4, 3×3, pad 1) → ReLU → max-pool 2 → flatten → linear(4·2·2 → 3).
fn small_net(conv_scale: f64, fc: Array2<f64>) -> Network<f64> {
    let w = Array4::from_shape_fn((4, 3, 3, 3), |(o, c, u, v)| {
        conv_scale * (((o * 5 + c * 3 + u * 2 + v) % 7) as f64 - 2.0) / 10.0
    });
    let mut net = Network::<f64>::new();
    net.push(Conv2d::new("c", w, None, ConvGeometry::square(1, 1)).unwrap());
    net.push(Relu);
    net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
    net.push(Flatten);
    net.push(Linear::new("fc", fc, None).unwrap());
    net
}

fn fc(scale: f64) -> Array2<f64> {
    Array2::from_shape_fn((3, 16), |(i, j)| scale * (((i * 7 + j * 3) % 5) as f64 - 1.5))
}

fn input(scale: f64) -> Array4<f64> {
    Array4::from_shape_fn((1, 3, 4, 4), |(_, c, i, j)| scale * (((c * 16 + i * 4 + j) % 9) as f64 / 9.0))
}

fn all_finite(e: &rsp::Explanation<f64>) -> bool {
    e.relevance
        .as_ref()
        .unwrap()
        .iter()
        .chain(e.start_relevance.as_ref().unwrap().iter())
        .chain(e.logits.iter())
        .all(|v| v.is_finite())
}

#[test]
fn an_all_zero_input_gives_zero_relevance() {
    let net = small_net(1.0, fc(1.0));
    for start in [StartRule::SingleClass, StartRule::Comparative(HostileClasses::TopK(2))] {
        let e =
            net.explain(Array4::zeros((1, 3, 4, 4)).view(), 0, &RspOptions { start, ..Default::default() }).unwrap();
        assert!(all_finite(&e));
        assert!(e.relevance.as_ref().unwrap().iter().all(|&v| v == 0.0), "{:?}", e.relevance);
    }
}

#[test]
fn all_zero_activations_at_the_start_layer_give_zero_relevance() {
    // Zero convolution weights: the start layer's output is all zero.
    let net = small_net(0.0, fc(1.0));
    let e = net.explain(input(1.0).view(), 1, RspOptions::default()).unwrap();
    assert!(e.start_relevance.as_ref().unwrap().iter().all(|&v| v == 0.0));
    assert!(e.relevance.as_ref().unwrap().iter().all(|&v| v == 0.0));
    let (pos, hostile) = net.attribute(input(1.0).view(), 1).unwrap();
    assert!(pos.iter().chain(hostile.iter()).all(|&v| v == 0.0));
}

#[test]
fn a_zero_gradient_gives_zero_relevance() {
    // A zero classifier: every gradient, hence the start relevance, is zero.
    let net = small_net(1.0, fc(0.0));
    for start in [StartRule::SingleClass, StartRule::Comparative(HostileClasses::TopK(2))] {
        let e = net.explain(input(1.0).view(), 2, &RspOptions { start, ..Default::default() }).unwrap();
        assert!(all_finite(&e));
        assert!(e.start_relevance.as_ref().unwrap().iter().all(|&v| v == 0.0));
        assert!(e.relevance.as_ref().unwrap().iter().all(|&v| v == 0.0));
    }
}

#[test]
fn a_start_relevance_without_positive_entries_is_scaled_by_its_largest_magnitude() {
    // A classifier with only negative weights: A ⊙ α ≤ 0 everywhere.
    let net = small_net(1.0, -fc(1.0).mapv(f64::abs));
    let e = net.explain(input(1.0).view(), 0, RspOptions::default()).unwrap();
    assert!(all_finite(&e));
    assert!(e.start_relevance.as_ref().unwrap().iter().all(|&v| v <= 0.0));
    let min = e.start_relevance.as_ref().unwrap().iter().copied().fold(0.0, f64::min);
    assert!((min + 1.0).abs() < 1e-12, "the most negative entry is −1, found {min}");
    // Conserved down to the input: the whole map is hostile evidence.
    assert!(
        (e.relevance.as_ref().unwrap().sum() - e.start_relevance.as_ref().unwrap().sum()).abs()
            < 1e-9 * e.start_relevance.as_ref().unwrap().iter().map(|v| v.abs()).sum::<f64>()
    );
}

#[test]
fn subnormal_and_huge_inputs_give_finite_results_or_an_overflow_error() {
    let net = small_net(1.0, fc(1.0));
    for scale in [1e-310, 1e-30, 1e30, 1e150] {
        match net.explain(input(scale).view(), 0, RspOptions::default()) {
            Ok(e) => assert!(all_finite(&e), "scale {scale}"),
            Err(err) => assert!(matches!(err, RspError::NonFinite { .. }), "scale {scale}: {err}"),
        }
    }
    // In f32, 1e30 overflows in the first convolution's sums of products: a typed error naming the node.
    let net32 = rsp::io::safetensors::load::<f32>(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden/vgg_tiny.safetensors"),
    )
    .unwrap();
    let x = Array4::<f32>::from_elem((1, 3, 32, 32), 3e38);
    let err = net32.attribute(x.view(), 0).unwrap_err();
    assert!(matches!(&err, RspError::NonFinite { tensor, .. } if tensor.contains("node #")), "{err}");
}

#[test]
fn parameters_made_non_finite_after_construction_are_caught() {
    let mut net = small_net(1.0, fc(1.0));
    for (_, mut p) in net.layer_mut(0).unwrap().parameters_mut() {
        p[[0, 0, 0, 0]] = f64::NAN;
    }
    let err = net.attribute(input(1.0).view(), 0).unwrap_err();
    assert!(matches!(&err, RspError::NonFinite { tensor, .. } if tensor.contains("node #0")), "{err}");
}

#[test]
fn non_finite_parameters_are_refused_by_the_constructors_with_their_name() {
    let mut w = Array4::<f32>::zeros((1, 1, 1, 1));
    w[[0, 0, 0, 0]] = f32::INFINITY;
    let err = Conv2d::new("features.0", w, None, ConvGeometry::square(1, 0)).unwrap_err();
    assert!(err.to_string().contains("weight of conv2d features.0"), "{err}");
    let err = Linear::new("fc", ndarray::arr2(&[[1.0f64]]), Some(ndarray::arr1(&[f64::NAN]))).unwrap_err();
    assert!(matches!(&err, RspError::NonFinite { tensor, index: 0 } if tensor == "bias of linear fc"), "{err}");
    let one = || ndarray::arr1(&[1.0f64]);
    let err = BatchNorm2d::new("bn", one(), one(), ndarray::arr1(&[f64::NEG_INFINITY]), one(), 1e-5).unwrap_err();
    assert!(err.to_string().contains("running_mean of batchnorm2d bn"), "{err}");
    let err = BatchNorm2d::new("bn", one(), one(), one(), ndarray::arr1(&[0.0]), 0.0).unwrap_err();
    assert!(matches!(err, RspError::Model(_)), "{err}");
}

#[test]
fn a_huge_start_layer_or_shape_is_an_error_not_a_panic() {
    let net = small_net(1.0, fc(1.0));
    let opts = RspOptions { start_layer: Some(usize::MAX), ..Default::default() };
    assert!(matches!(net.explain(input(1.0).view(), 0, &opts), Err(RspError::InvalidArgument(_))));
    let err = net.check(&[3, usize::MAX, usize::MAX]).unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    // A padding that makes a feature map of 10¹² cells is refused before any allocation.
    let mut wide = Network::<f32>::new();
    wide.push(Conv2d::new("c", Array4::ones((1, 1, 1, 1)), None, ConvGeometry::square(1, 1 << 20)).unwrap());
    wide.push(Flatten);
    let err = wide.check(&[1, 1, 1]).unwrap_err();
    assert!(err.to_string().contains("elements per sample"), "{err}");
    let err = wide.forward(Array4::ones((1, 1, 1, 1)).view()).unwrap_err();
    assert!(matches!(err, RspError::InvalidArgument(_)), "{err}");
}

#[test]
fn a_batch_of_several_identical_edge_cases_is_each_sample_alone() {
    let net = small_net(1.0, fc(1.0));
    let mut x = Array4::zeros((3, 3, 4, 4));
    x.index_axis_mut(Axis(0), 1).assign(&input(1.0).index_axis(Axis(0), 0));
    let e = net.explain(x.view(), 0, RspOptions::default()).unwrap();
    let alone = net.explain(input(1.0).view(), 0, RspOptions::default()).unwrap();
    assert_eq!(
        e.relevance.as_ref().unwrap().index_axis(Axis(0), 1),
        alone.relevance.as_ref().unwrap().index_axis(Axis(0), 0)
    );
    assert!(e.relevance.as_ref().unwrap().index_axis(Axis(0), 0).iter().all(|&v| v == 0.0));
}

//! Each RSP rule on VGG-sized layers, and one attribution of a small VGG-like
//! network end to end (CPU backend, f32). `cargo bench --bench rules`.
//!
//! Sample counts are small so the whole run takes a few minutes.

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::{Array1, Array2, Array3, Array4};
use rsp::backend::{ConvGeometry, CpuBackend};
use rsp::layers::{AdaptiveAvgPool2d, Conv2d, Flatten, Layer, Linear, MaxPool2d, Relu, RuleContext};
use rsp::Network;
use std::time::Duration;

/// A fixed pseudo-random value in [-1, 1) (splitmix64).
fn noise(seed: usize) -> f32 {
    let mut z = (seed as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0) as f32
}

/// A post-ReLU activation (about half zeros).
fn activation(c: usize, h: usize, w: usize, seed: usize) -> Array3<f32> {
    Array3::from_shape_fn((c, h, w), |(k, i, j)| noise(seed + (k * h + i) * w + j).max(0.0))
}

/// Relevance of mixed signs, as below the start layer.
fn relevance(c: usize, h: usize, w: usize, seed: usize) -> Array3<f32> {
    Array3::from_shape_fn((c, h, w), |(k, i, j)| noise(seed + (k * h + i) * w + j) * 1e-3)
}

fn conv(o: usize, c: usize, seed: usize) -> Conv2d<f32> {
    let scale = (2.0 / (9 * c) as f32).sqrt();
    let w = Array4::from_shape_fn((o, c, 3, 3), |(a, b, u, v)| noise(seed + ((a * c + b) * 3 + u) * 3 + v) * scale);
    Conv2d::new(format!("conv{o}"), w, Some(Array1::zeros(o)), ConvGeometry::square(1, 1)).unwrap()
}

fn rules(c: &mut Criterion) {
    let mut group = c.benchmark_group("rule");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for (ch, side) in [(64, 224), (512, 14)] {
        // The sectional rule of a 3×3 convolution below the input layer.
        let layer = conv(ch, ch, 10);
        let x = activation(ch, side, side, 1);
        let r = relevance(ch, side, side, 2);
        let (xd, rd) = (x.view().into_dyn(), r.view().into_dyn());
        let ctx = RuleContext::default();
        group.bench_function(format!("sectional conv {ch}x{side}x{side}"), |b| {
            b.iter(|| layer.rsp_backward(&CpuBackend, xd.view(), rd.view(), ctx).unwrap())
        });
        // At the start layer each channel's relevance has one sign.
        let r_start =
            Array3::from_shape_fn(r.raw_dim(), |(k, i, j)| x[[k, i, j]] * if k % 2 == 0 { 1e-3 } else { -1e-3 });
        let rd = r_start.view().into_dyn();
        group.bench_function(format!("sectional conv {ch}x{side}x{side} one sign per channel"), |b| {
            b.iter(|| layer.rsp_backward(&CpuBackend, xd.view(), rd.view(), ctx).unwrap())
        });
    }
    let input_layer = conv(64, 3, 3);
    let image = Array3::from_shape_fn((3, 224, 224), |(k, i, j)| noise(4 + (k * 224 + i) * 224 + j)).into_dyn();
    let r = relevance(64, 224, 224, 5).into_dyn();
    let ctx = RuleContext { is_input_layer: true, ..Default::default() };
    group.bench_function("zB input conv 3->64 224x224", |b| {
        b.iter(|| input_layer.rsp_backward(&CpuBackend, image.view(), r.view(), ctx).unwrap())
    });
    let pool = MaxPool2d::new((2, 2), (2, 2), [0; 4]);
    let x = activation(64, 224, 224, 6).into_dyn();
    let r = relevance(64, 112, 112, 7).into_dyn();
    group.bench_function("maxpool 64x224x224", |b| {
        b.iter(|| Layer::<f32>::rsp_backward(&pool, &CpuBackend, x.view(), r.view(), RuleContext::default()).unwrap())
    });
    let fc = Linear::new("fc", Array2::from_shape_fn((4096, 4096), |(i, j)| noise(i * 4096 + j) * 0.01), None).unwrap();
    let x = Array1::from_shape_fn(4096, |i| noise(8 + i).max(0.0)).into_dyn();
    let r = Array1::from_shape_fn(4096, |i| noise(9000 + i) * 1e-3).into_dyn();
    group.bench_function("linear 4096->4096", |b| {
        b.iter(|| fc.rsp_backward(&CpuBackend, x.view(), r.view(), RuleContext::default()).unwrap())
    });
    group.finish();
}

/// A VGG-like network on 64×64 inputs (conv 32,32,M,64,64,M,128,128,M).
fn small_vgg() -> Network<f32> {
    let mut net = Network::<f32>::new();
    let mut channels = 3;
    for (k, &out) in [32, 32, 0, 64, 64, 0, 128, 128, 0].iter().enumerate() {
        if out == 0 {
            net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
        } else {
            net.push(conv(out, channels, 100 * k));
            net.push(Relu);
            channels = out;
        }
    }
    net.push(AdaptiveAvgPool2d::new((2, 2)));
    net.push(Flatten);
    let w = Array2::from_shape_fn((10, 128 * 4), |(i, j)| noise(i * 512 + j) * 0.05);
    net.push(Linear::new("fc", w, None).unwrap());
    net
}

fn end_to_end(c: &mut Criterion) {
    let net = small_vgg();
    let mut group = c.benchmark_group("explain");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for batch in [1, 4] {
        let x = Array4::from_shape_fn((batch, 3, 64, 64), |(n, k, i, j)| noise(((n * 3 + k) * 64 + i) * 64 + j));
        group.bench_function(format!("small vgg 64x64 batch {batch}"), |b| {
            b.iter(|| net.explain(&x, 1, rsp::Method::default()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, rules, end_to_end);
criterion_main!(benches);

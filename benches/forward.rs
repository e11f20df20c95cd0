//! The forward convolutions of VGG16 (224×224, f32, one sample) by each of
//! the CPU backend's forward kernels (`rsp::backend::conv2d_with`): im2col +
//! GEMM against Winograd's F(2×2, 3×3), in a rayon pool of 2 threads (the
//! machine kind of `docs/performance.md`). The throughput line reads as
//! GFLOP/s of the direct convolution (one "element" = one flop), so the two
//! kernels' numbers compare directly.
//!
//! `cargo bench --bench forward`; a shorter run:
//! `cargo bench --bench forward -- --warm-up-time 0.5 --measurement-time 2`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Array3, Array4};
use rsp::backend::{conv2d_with, ConvGeometry, ConvKernels};
use std::time::Duration;

/// VGG16's convolutions: (input channels, output channels, side); the second
/// of each equal pair stands for both.
const LAYERS: &[(usize, usize, usize)] = &[
    (3, 64, 224),
    (64, 64, 224),
    (64, 128, 112),
    (128, 128, 112),
    (128, 256, 56),
    (256, 256, 56),
    (256, 512, 28),
    (512, 512, 28),
    (512, 512, 14),
];

/// A fixed pseudo-random value in [-1, 1) (splitmix64).
fn noise(seed: usize) -> f32 {
    let mut z = (seed as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0) as f32
}

fn bench(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut group = c.benchmark_group("forward_conv_f32_2threads");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let g = ConvGeometry::square(1, 1);
    for &(ci, co, side) in LAYERS {
        let x = Array3::from_shape_fn((ci, side, side), |(k, i, j)| noise((k * side + i) * side + j).max(0.0));
        let w = Array4::from_shape_fn((co, ci, 3, 3), |(a, b, u, v)| noise(7 + ((a * ci + b) * 3 + u) * 3 + v) * 0.05);
        group.throughput(Throughput::Elements((2 * co * ci * 9 * side * side) as u64));
        let name = format!("{ci}->{co} {side}x{side}");
        for (label, kernels) in [("im2col", ConvKernels::Im2col), ("winograd", ConvKernels::Winograd)] {
            group.bench_function(BenchmarkId::new(label, &name), |bench| {
                pool.install(|| bench.iter(|| conv2d_with(kernels, x.view(), w.view(), &g).unwrap()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

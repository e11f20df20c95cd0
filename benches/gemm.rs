//! The two matrix-product kernels of the CPU backend, each called directly
//! (`rsp::backend::matmul_with_kernel`: the backend's own output blocking,
//! every block computed by the named kernel, whatever the backend would
//! route the shape to): the `gemm` crate against `matrixmultiply`, on the
//! products VGG16's RSP needs and on weight-gradient shapes around the routing
//! threshold (`Kernel::for_shape`: `k ≥ 32·max(m, n)` goes to `matrixmultiply`).
//!
//! Every product runs inside an explicit rayon pool: of 1 thread (group
//! `gemm_f32_1thread`) and of 2 threads (`gemm_f32_2threads`).
//!
//! `cargo bench --bench gemm`; criterion reports time, the throughput line
//! reads as GFLOP/s (one "element" = one flop). A shorter run:
//! `cargo bench --bench gemm -- --warm-up-time 0.5 --measurement-time 2`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Array2, ArrayView2};
use rsp::backend::{matmul_with_kernel, Kernel};
use std::time::Duration;

/// (name, m, k, n, b transposed).
type Shape = (&'static str, usize, usize, usize, bool);

/// The conv forward / A = G·cols of layer 1.2, its stacked weight gradient
/// [R⁺;R⁻]·colsᵀ and its back product Gᵀ·S, and the conv 5.x products.
const VGG16: &[Shape] = &[
    ("conv1_2 fwd", 64, 576, 50176, false),
    ("conv1_2 wgrad", 128, 50176, 576, true),
    ("conv1_2 back", 576, 128, 50176, false),
    ("conv5 fwd", 512, 4608, 196, false),
    ("conv5 wgrad", 1024, 196, 4608, true),
    ("conv5 back", 4608, 1024, 196, false),
];

/// Weight gradients [R⁺;R⁻]·colsᵀ of the other VGG16 layers whose reduction
/// (the positions) is longer than both output sides: k / max(m, n) = 22
/// (conv2_1) and 11 (conv2_2); conv1_2's above is 87. From conv3 on the ratio
/// is below 3, and the input layer (conv1_1) takes the z^B rule, no weight gradient.
const WGRAD: &[Shape] = &[("conv2_1 wgrad", 256, 12544, 576, true), ("conv2_2 wgrad", 256, 12544, 1152, true)];

fn operands(m: usize, k: usize, n: usize, transposed: bool) -> (Array2<f32>, Array2<f32>) {
    let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 17) as f32 * 0.1 - 0.8);
    let b = if transposed {
        Array2::from_shape_fn((n, k), |(i, j)| ((i * 5 + j) % 13) as f32 * 0.1 - 0.6)
    } else {
        Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j) % 13) as f32 * 0.1 - 0.6)
    };
    (a, b)
}

fn group(c: &mut Criterion, name: &str, threads: usize, shapes: &[Shape]) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let mut group = c.benchmark_group(name);
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for &(name, m, k, n, transposed) in shapes {
        let (a, b_store) = operands(m, k, n, transposed);
        let b: ArrayView2<f32> = if transposed { b_store.t() } else { b_store.view() };
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        for (label, kernel) in [("gemm", Kernel::Gemm), ("matrixmultiply", Kernel::MatrixMultiply)] {
            group.bench_function(BenchmarkId::new(label, name), |bench| {
                pool.install(|| bench.iter(|| matmul_with_kernel(kernel, a.view(), b)))
            });
        }
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    group(c, "gemm_f32_1thread", 1, &[VGG16, WGRAD].concat());
    group(c, "gemm_f32_2threads", 2, &[VGG16, WGRAD].concat());
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! `gemm` (the crate the CPU backend uses) against `matrixmultiply` (through
//! ndarray's `general_mat_mul`) on the products VGG16's RSP needs, both cut
//! into the same thread-count-independent output blocks and run with rayon.
//!
//! `cargo bench --bench gemm`; criterion reports time, the throughput line
//! reads as GFLOP/s (one "element" = one flop).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::linalg::general_mat_mul;
use ndarray::parallel::prelude::*;
use ndarray::{s, Array2, ArrayView2, Axis};
use rsp::backend::{Backend, CpuBackend};
use std::time::Duration;

/// The same blocking as the backend (16/8/4/2 blocks of ≥ 128 along the
/// larger output dimension), with `matrixmultiply` in each block.
fn matrixmultiply_blocked(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    let (m, n) = (a.nrows(), b.ncols());
    let mut c = Array2::zeros((m, n));
    let block_len = |len: usize| {
        let mut parts = 16;
        while parts > 1 && len / parts < 128 {
            parts /= 2;
        }
        len.div_ceil(parts)
    };
    if n >= m {
        let block = block_len(n);
        c.axis_chunks_iter_mut(Axis(1), block).into_par_iter().enumerate().for_each(|(i, mut cb)| {
            let bb = b.slice(s![.., i * block..i * block + cb.ncols()]);
            general_mat_mul(1.0, &a, &bb, 0.0, &mut cb);
        });
    } else {
        let block = block_len(m);
        c.axis_chunks_iter_mut(Axis(0), block).into_par_iter().enumerate().for_each(|(i, mut cb)| {
            let ab = a.slice(s![i * block..i * block + cb.nrows(), ..]);
            general_mat_mul(1.0, &ab, &b, 0.0, &mut cb);
        });
    }
    c
}

fn bench(c: &mut Criterion) {
    // (name, m, k, n, b transposed): the conv forward / A = G·cols of layer
    // 1.2, its stacked weight gradient [R⁺;R⁻]·colsᵀ, and conv 5.x products.
    let shapes = [
        ("conv1_2 fwd", 64, 576, 50176, false),
        ("conv1_2 wgrad", 128, 50176, 576, true),
        ("conv1_2 back", 576, 128, 50176, false),
        ("conv5 fwd", 512, 4608, 196, false),
        ("conv5 wgrad", 1024, 196, 4608, true),
        ("conv5 back", 4608, 1024, 196, false),
    ];
    let mut group = c.benchmark_group("gemm_f32");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for (name, m, k, n, transposed) in shapes {
        let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 17) as f32 * 0.1 - 0.8);
        let b_store = if transposed {
            Array2::from_shape_fn((n, k), |(i, j)| ((i * 5 + j) % 13) as f32 * 0.1 - 0.6)
        } else {
            Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j) % 13) as f32 * 0.1 - 0.6)
        };
        let b = if transposed { b_store.t() } else { b_store.view() };
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(BenchmarkId::new("gemm", name), |bench| bench.iter(|| CpuBackend.matmul(a.view(), b)));
        group.bench_function(BenchmarkId::new("matrixmultiply", name), |bench| {
            bench.iter(|| matrixmultiply_blocked(a.view(), b))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The sectional rule's products by the sparse kernels against the dense
//! GEMMs, on VGG16's layer shapes, at several densities of `[R⁺; R⁻]`, so
//! that the crossover behind `rsp::backend::SPARSE_DENSITY` is visible (f32,
//! the global rayon pool). `cargo bench --bench sparsity`; a few minutes.
//!
//! The density of `[R⁺; R⁻]` is its nonzeros over the entries of its nonzero
//! rows: relevance with a fraction `2δ` of nonzero entries of random sign has
//! both rows of every channel and density `δ`. In VGG16 (random weights) it
//! was measured at 0.27–0.52 at layers whose output goes through a ReLU only
//! and about 0.1 at layers whose output is max-pooled (one position per 2×2
//! window); see `docs/performance.md` for the values and this bench's table.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::Array3;
use rsp::backend::{sectional_contributions_with, ConvGeometry, SectionalKernels};
use std::time::Duration;

/// A fixed pseudo-random value in [0, 1) (splitmix64).
fn uniform(seed: usize) -> f32 {
    let mut z = (seed as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
}

fn sparsity(c: &mut Criterion) {
    let mut group = c.benchmark_group("sectional products");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    let g = ConvGeometry::square(1, 1);
    // (input channels, output channels, side): VGG16's conv1_2, conv3_2, conv4_2, conv5_2.
    for (ch, out, side) in [(64, 64, 224), (256, 256, 56), (512, 512, 28), (512, 512, 14)] {
        let x_pos =
            Array3::from_shape_fn((ch, side, side), |(k, i, j)| (uniform((k * side + i) * side + j) - 0.5).max(0.0));
        for density in [0.03, 0.06, 0.125, 0.25, 0.5] {
            let r = Array3::from_shape_fn((out, side, side), |(k, i, j)| {
                let e = (k * side + i) * side + j;
                if uniform(e + 7_000_000_000) < 2.0 * density {
                    uniform(e + 9_000_000_000) - 0.5
                } else {
                    0.0
                }
            });
            for (name, kernels) in [("dense", SectionalKernels::Dense), ("sparse", SectionalKernels::Sparse)] {
                let id = BenchmarkId::new(format!("{ch}x{side}x{side} to {out} {name}"), density);
                group.bench_with_input(id, &kernels, |b, &k| {
                    b.iter(|| sectional_contributions_with(k, x_pos.view(), r.view(), &g, (3, 3)).unwrap())
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, sparsity);
criterion_main!(benches);

//! The CPU backend agrees with the direct-loop reference backend on random
//! shapes: kernel sizes, strides, asymmetric padding, rectangular inputs.

use ndarray::{Array3, Array4};
use proptest::prelude::*;
use rsp::backend::{Backend, ConvGeometry, CpuBackend, PoolWindows, ReferenceBackend};

fn close(a: &Array3<f64>, b: &Array3<f64>) -> bool {
    let scale = b.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
    a.shape() == b.shape() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-12 * scale)
}

#[derive(Debug, Clone)]
struct Case {
    c: usize,
    o: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    geom: ConvGeometry,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..5,
        1usize..6,
        1usize..12,
        1usize..12,
        1usize..4,
        1usize..4,
        1usize..3,
        1usize..3,
        [0usize..3, 0usize..3, 0usize..3, 0usize..3],
        any::<u64>(),
    )
        .prop_filter_map("kernel must fit", |(c, o, h, w, kh, kw, sh, sw, padding, seed)| {
            let geom = ConvGeometry { stride: [sh, sw], padding };
            geom.output_size((h, w), (kh, kw)).map(|_| Case { c, o, h, w, kh, kw, geom, seed })
        })
}

fn values(seed: u64, n: usize) -> impl FnMut() -> f64 {
    let mut state = seed | 1;
    let _ = n;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 2001) as f64 / 1000.0 - 1.0
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn convolution_kernels_agree(k in case()) {
        let mut v = values(k.seed, 0);
        let x = Array3::from_shape_fn((k.c, k.h, k.w), |_| v());
        let w = Array4::from_shape_fn((k.o, k.c, k.kh, k.kw), |_| v());
        let (oh, ow) = k.geom.output_size((k.h, k.w), (k.kh, k.kw)).unwrap();
        let s = Array3::from_shape_fn((k.o, oh, ow), |_| v());
        let (cpu, refb) = (CpuBackend, ReferenceBackend);
        prop_assert!(close(&Backend::<f64>::conv2d(&cpu, x.view(), w.view(), &k.geom).unwrap(), &refb.conv2d(x.view(), w.view(), &k.geom).unwrap()));
        prop_assert!(close(
            &Backend::<f64>::conv2d_input_adjoint(&cpu, s.view(), w.view(), &k.geom, (k.h, k.w)).unwrap(),
            &refb.conv2d_input_adjoint(s.view(), w.view(), &k.geom, (k.h, k.w)).unwrap()
        ));
        let g_cpu = Backend::<f64>::conv2d_weight_grad(&cpu, x.view(), s.view(), &k.geom, (k.kh, k.kw)).unwrap();
        let g_ref = refb.conv2d_weight_grad(x.view(), s.view(), &k.geom, (k.kh, k.kw)).unwrap();
        let scale = g_ref.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        prop_assert!(g_cpu.iter().zip(&g_ref).all(|(a, b)| (a - b).abs() <= 1e-12 * scale));
        let x_pos = x.mapv(|v| v.max(0.0));
        prop_assert!(close(
            &Backend::<f64>::sectional_contributions(&cpu, x_pos.view(), s.view(), &k.geom, (k.kh, k.kw)).unwrap(),
            &Backend::<f64>::sectional_contributions(&refb, x_pos.view(), s.view(), &k.geom, (k.kh, k.kw)).unwrap()
        ));
    }

    #[test]
    fn the_adjoint_is_the_transpose(k in case()) {
        // <conv(x), s> = <x, convᵀ(s)> for the CPU backend.
        let mut v = values(k.seed ^ 0xABCD, 0);
        let x = Array3::from_shape_fn((k.c, k.h, k.w), |_| v());
        let w = Array4::from_shape_fn((k.o, k.c, k.kh, k.kw), |_| v());
        let (oh, ow) = k.geom.output_size((k.h, k.w), (k.kh, k.kw)).unwrap();
        let s = Array3::from_shape_fn((k.o, oh, ow), |_| v());
        let lhs: f64 = (Backend::<f64>::conv2d(&CpuBackend, x.view(), w.view(), &k.geom).unwrap() * &s).sum();
        let rhs: f64 = (Backend::<f64>::conv2d_input_adjoint(&CpuBackend, s.view(), w.view(), &k.geom, (k.h, k.w)).unwrap() * &x).sum();
        prop_assert!((lhs - rhs).abs() <= 1e-10 * (1.0 + lhs.abs()));
    }

    #[test]
    fn pooling_windows_match_pytorch_sizes(h in 1usize..30, w in 1usize..30, k in 1usize..5, s in 1usize..4, p in 0usize..3) {
        // PyTorch: out = floor((H + 2p − k)/s) + 1, requires p ≤ k/2.
        prop_assume!(p * 2 <= k && h + 2 * p >= k && w + 2 * p >= k);
        let win = PoolWindows::strided((h, w), (k, k), (s, s), [p; 4]).unwrap();
        prop_assert_eq!(win.output_hw(), ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1));
    }
}

//! Results must not depend on the number of threads: the same attribution in
//! rayon pools of 1, 2 and 3 threads gives the same bits.

use crate::common::noise;
use ndarray::{Array1, Array2, Array4};
use rsp::backend::ConvGeometry;
use rsp::layers::{AdaptiveAvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, Relu};
use rsp::{Float, HostileClasses, Network, RspOptions, StartRule};

/// A small VGG-like network whose products are large enough to be split into
/// parallel blocks.
fn network<T: Float>() -> Network<T> {
    let mut net = Network::<T>::new();
    let mut seed = 1u64;
    let mut conv = |net: &mut Network<T>, o: usize, c: usize| {
        let scale = (2.0 / (9 * c) as f64).sqrt();
        let w = Array4::from_shape_fn((o, c, 3, 3), |_| {
            seed += 1;
            T::of(noise(seed) * scale)
        });
        net.push(
            Conv2d::new(format!("c{o}"), w, Some(Array1::from_elem(o, T::of(0.01))), ConvGeometry::square(1, 1))
                .unwrap(),
        );
        net.push(Relu);
    };
    conv(&mut net, 16, 3);
    conv(&mut net, 16, 16);
    net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
    conv(&mut net, 48, 16);
    conv(&mut net, 48, 48);
    net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
    net.push(AdaptiveAvgPool2d::new((2, 2)));
    net.push(Flatten);
    let fc = Array2::from_shape_fn((5, 48 * 4), |(i, j)| T::of(noise(1000 + (i * 192 + j) as u64) * 0.1));
    net.push(Linear::new("fc", fc, None).unwrap());
    net
}

fn explain_in_pool<T: Float>(threads: usize, opts: &RspOptions) -> (Vec<T>, Vec<T>) {
    let net = network::<T>();
    let x = Array4::from_shape_fn((2, 3, 64, 64), |(n, c, i, j)| {
        T::of(noise((((n * 3 + c) * 64 + i) * 64 + j) as u64 + 7))
    });
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let e = net.explain(x.view(), vec![1, 3], opts).unwrap();
        let (timed, _) = rsp::attribution::explain_timed(&net, x.view(), vec![1, 3], opts).unwrap();
        assert_eq!(e.relevance, timed.relevance, "explain_timed computes the same as explain");
        (
            e.relevance.as_ref().unwrap().iter().copied().collect(),
            e.start_relevance.as_ref().unwrap().iter().copied().collect(),
        )
    })
}

fn same_bits_for_any_thread_count<T: Float>() {
    for opts in [
        RspOptions::default(),
        RspOptions { start: StartRule::Comparative(HostileClasses::TopK(2)), ..Default::default() },
    ] {
        let (r1, s1) = explain_in_pool::<T>(1, &opts);
        assert!(r1.iter().any(|v| *v != T::zero()), "the test network must propagate something");
        for threads in [2, 3] {
            let (r, s) = explain_in_pool::<T>(threads, &opts);
            let differ =
                r1.iter().zip(&r).filter(|(a, b)| a.to_f64_exact().to_bits() != b.to_f64_exact().to_bits()).count();
            assert_eq!(
                differ,
                0,
                "{} values of the relevance differ between 1 and {threads} threads ({})",
                differ,
                T::NAME
            );
            assert!(s1.iter().zip(&s).all(|(a, b)| a.to_f64_exact().to_bits() == b.to_f64_exact().to_bits()));
        }
    }
}

#[test]
fn f32_bits_do_not_depend_on_the_thread_count() {
    same_bits_for_any_thread_count::<f32>();
}

#[test]
fn f64_bits_do_not_depend_on_the_thread_count() {
    same_bits_for_any_thread_count::<f64>();
}

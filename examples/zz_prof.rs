use ndarray::{Array1, Array2, Array4, ArrayD};
use rsp::backend::{ConvGeometry, CpuBackend};
use rsp::layers::{AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Relu};
use rsp::{Float, Network};
use std::time::Instant;
/// xorshift64* with Box–Muller: a fixed-seed normal sampler (no crate needed).
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (bits as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Configuration D: channels, `0` for a max pooling.
const VGG16: &[usize] = &[64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];

/// VGG16 as torchvision builds it (kaiming-normal fan-out convolutions, N(0, 0.01) linear layers, zero biases).
fn vgg16<T: Float>(rng: &mut Normal) -> Network<T> {
    let mut net = Network::<T>::new();
    let mut channels = 3;
    for (k, &out) in VGG16.iter().enumerate() {
        if out == 0 {
            net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
            continue;
        }
        let std = (2.0 / (out * 9) as f64).sqrt();
        let w = Array4::from_shape_simple_fn((out, channels, 3, 3), || T::of(rng.sample() * std));
        net.push(
            Conv2d::new(format!("features.{k}"), w, Some(Array1::zeros(out)), ConvGeometry::square(1, 1)).unwrap(),
        );
        net.push(Relu);
        channels = out;
    }
    net.push(AdaptiveAvgPool2d::new((7, 7)));
    net.push(Flatten);
    for (k, (i, o)) in [(512 * 49, 4096), (4096, 4096), (4096, 1000)].into_iter().enumerate() {
        let w = Array2::from_shape_simple_fn((o, i), || T::of(rng.sample() * 0.01));
        net.push(Linear::new(format!("classifier.{k}"), w, Some(Array1::zeros(o))).unwrap());
        if k < 2 {
            net.push(Relu);
            net.push(Dropout);
        }
    }
    net
}

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    pool.install(|| {
        let mut rng = Normal(0x05EE_D0F1_C0DE);
        let net = vgg16::<f32>(&mut rng);
        let input = Array4::from_shape_simple_fn((1, 3, 224, 224), || f32::of(rng.sample()));
        let be = CpuBackend;
        let mut tf = vec![0.0; net.nodes().len()];
        let mut tg = vec![0.0; net.nodes().len()];
        for rep in 0..4 {
            let mut acts: Vec<ArrayD<f32>> = vec![input.index_axis(ndarray::Axis(0), 0).to_owned().into_dyn()];
            for (k, n) in net.nodes().iter().enumerate() {
                let l = n.layer().unwrap();
                let t = Instant::now();
                let y = l.forward(&be, acts.last().unwrap().view()).unwrap();
                if rep > 0 {
                    tf[k] += t.elapsed().as_secs_f64() / 3.0;
                }
                acts.push(y);
            }
            let mut g = ArrayD::<f32>::zeros(acts.last().unwrap().raw_dim());
            g[[0]] = 1.0;
            for (k, n) in net.nodes().iter().enumerate().rev() {
                let l = n.layer().unwrap();
                let t = Instant::now();
                g = l.gradient(&be, acts[k].view(), g.view()).unwrap();
                if rep > 0 {
                    tg[k] += t.elapsed().as_secs_f64() / 3.0;
                }
            }
        }
        for (k, n) in net.nodes().iter().enumerate() {
            println!("{k:2} {:30} fwd {:7.2} grad {:7.2}", n.layer().unwrap().describe(), tf[k] * 1e3, tg[k] * 1e3);
        }
        println!("sum fwd {:.1} grad {:.1}", tf.iter().sum::<f64>() * 1e3, tg.iter().sum::<f64>() * 1e3);
        let t = Instant::now();
        for _ in 0..3 {
            net.forward(&input).unwrap();
        }
        println!("net.forward {:.1}", t.elapsed().as_secs_f64() / 3.0 * 1e3);
        let t = Instant::now();
        for _ in 0..3 {
            net.explain(&input, 0, rsp::Method::Gradient).unwrap();
        }
        println!("explain gradient {:.1}", t.elapsed().as_secs_f64() / 3.0 * 1e3);
    });
}

//! End-to-end timing of one RSP attribution of VGG16 (torchvision
//! configuration D, 138 M parameters, random He-initialised weights with a
//! fixed seed) on a 224×224 input.
//!
//! ```text
//! cargo run --release --example bench_vgg16 -- --batch 1 --threads 2 --runs 3 --dtype f32
//! ```
//!
//! Prints, per image, the median over the runs of the forward pass, the start
//! relevance (gradients at the start layer and the start map), the
//! propagation and their total; the achieved GFLOP/s; and the peak resident
//! memory. The last line is one JSON object with the same numbers.

use clap::{Parser, ValueEnum};
use ndarray::{Array1, Array2, Array4};
use rsp::attribution::explain_timed;
use rsp::backend::ConvGeometry;
use rsp::layers::{AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Relu};
use rsp::{Float, Network, RspOptions};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Dtype {
    F32,
    F64,
}

/// Times RSP on VGG16.
#[derive(Parser, Debug)]
struct Args {
    /// Images per batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Threads of the rayon pool.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Untimed runs first (they fill the reusable buffers).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Float type.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
}

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

/// Multiply–adds ×2 of one forward pass of the convolutions (224×224 input).
fn conv_flops() -> f64 {
    let (mut channels, mut side, mut flops) = (3usize, 224usize, 0.0);
    for &out in VGG16 {
        if out == 0 {
            side /= 2;
        } else {
            flops += 2.0 * (out * channels * 9 * side * side) as f64;
            channels = out;
        }
    }
    flops
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time (user + system) this process has used so far, in ms. Unlike the
/// wall-clock time it does not grow when other processes take the cores.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends in ')'): utime and stime are 14th and 15th overall.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    // Clock ticks are 1/100 s on Linux (USER_HZ).
    f.iter().sum::<f64>() * 10.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run<T: Float>(args: &Args) {
    let mut rng = Normal(0x05EE_D0F1_C0DE);
    let net = vgg16::<T>(&mut rng);
    let input = Array4::from_shape_simple_fn((args.batch, 3, 224, 224), || T::of(rng.sample()));
    let opts = RspOptions::default();
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / args.batch as f64;
    let (mut fwd, mut start, mut rsp, mut total, mut cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.warmup + args.runs {
        let cpu_before = cpu_ms();
        let (_, t) = explain_timed(&net, &input, 0, &opts).expect("VGG16 attribution");
        let cpu_run = (cpu_ms() - cpu_before) / args.batch as f64;
        let line = format!(
            "run {run}: forward {:.1} ms, start {:.1} ms, propagation {:.1} ms, total {:.1} ms (CPU {cpu_run:.0} ms) per image",
            ms(t.forward),
            ms(t.start),
            ms(t.propagation),
            ms(t.total())
        );
        if run < args.warmup {
            eprintln!("{line} (warm-up)");
            continue;
        }
        eprintln!("{line}");
        fwd.push(ms(t.forward));
        start.push(ms(t.start));
        rsp.push(ms(t.propagation));
        total.push(ms(t.total()));
        cpu.push(cpu_run);
    }
    let (fwd, start, rsp, total, cpu) = (median(fwd), median(start), median(rsp), median(total), median(cpu));
    let flops = conv_flops();
    let rss = peak_rss_mb();
    println!("VGG16 {} batch {} threads {} ({} runs, medians per image)", T::NAME, args.batch, args.threads, args.runs);
    println!("  forward      {fwd:8.1} ms  ({:.0} GFLOP/s on the convolutions)", flops / fwd / 1e6);
    println!("  start        {start:8.1} ms");
    println!(
        "  propagation  {rsp:8.1} ms  ({:.0} GFLOP/s dense-equivalent: 6 forward passes)",
        6.0 * flops / rsp / 1e6
    );
    println!("  total        {total:8.1} ms  (CPU time {cpu:.0} ms: {:.2} cores busy; other load on the machine lowers this)", cpu / total);
    println!("  peak RSS     {rss:8.0} MB");
    println!(
        "{{\"model\":\"vgg16\",\"batch\":{},\"threads\":{},\"forward_ms\":{fwd:.1},\"start_ms\":{start:.1},\"rsp_ms\":{rsp:.1},\"total_ms\":{total:.1},\"peak_rss_mb\":{rss:.0}}}",
        args.batch,
        args.threads
    );
}

fn main() {
    let args = Args::parse();
    assert!(args.batch >= 1 && args.runs >= 1 && args.threads >= 1, "--batch, --runs and --threads must be ≥ 1");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build().expect("rayon pool");
    pool.install(|| match args.dtype {
        Dtype::F32 => run::<f32>(&args),
        Dtype::F64 => run::<f64>(&args),
    });
}

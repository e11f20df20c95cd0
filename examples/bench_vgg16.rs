//! End-to-end timing of one attribution of VGG16 (torchvision configuration
//! D, 138 M parameters, random He-initialised weights with a fixed seed) on a
//! 224×224 input, by RSP (the default) or any other method.
//!
//! ```text
//! cargo run --release --example bench_vgg16 -- --batch 1 --threads 2 --runs 3 --dtype f32
//! cargo run --release --example bench_vgg16 -- --method epsilon-plus-flat --method gradient
//! cargo run --release --example bench_vgg16 -- --method all
//! ```
//!
//! For RSP (`rsp`, `rsp-comparative`) it prints, per image, the median over
//! the runs of the forward pass, the start relevance (gradients at the start
//! layer and the start map), the propagation and their total; the achieved
//! GFLOP/s; and the peak resident memory. For every other method it prints
//! the median total of [`Network::explain`] and, for comparison, the median
//! of a forward pass alone timed in the same runs (`start_ms` and `rsp_ms`
//! are `null`). Each method ends with one JSON object with the same numbers;
//! the last line printed is the last method's. `--method all` runs every
//! method of `rsp::Method::ALL` and `epsilon-gamma-box` (with `--low` and
//! `--high`) in turn; the peak resident memory is then the process's peak so
//! far.

use clap::{Parser, ValueEnum};
use ndarray::{Array1, Array2, Array4};
use rsp::attribution::explain_timed;
use rsp::backend::{record_sectional_calls, ConvGeometry};
use rsp::layers::{AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Relu};
use rsp::{Float, Method, Network};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Compute {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Dtype {
    F32,
    F64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kernels {
    Auto,
    Dense,
}

/// Times an attribution method on VGG16.
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
    /// The backend: `cpu`, or `cuda` (built with `--features cuda`; it adds
    /// `peak_device_mb` to the JSON line).
    #[arg(long, value_enum, default_value_t = Compute::Cpu)]
    backend: Compute,
    /// With `--backend cuda`: cuBLAS's TF32 tensor-core mode for float32
    /// (an opt-in that trades precision, see `CudaBackend::with_tf32`).
    #[arg(long)]
    tf32: bool,
    /// The CPU backend's sectional kernels: `auto` (the sparse kernels where
    /// the relevance is sparse enough: `CpuBackend`) or `dense` (the dense
    /// GEMMs only, the engine before them: `DenseCpuBackend`).
    #[arg(long, value_enum, default_value_t = Kernels::Auto)]
    kernels: Kernels,
    /// For RSP: print each layer's density of [R⁺; R⁻], the kernels chosen
    /// and their time, in the last timed run.
    #[arg(long)]
    layers: bool,
    /// Float type.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// The method, by its command-line name (`rsp`, `gradient`,
    /// `epsilon-plus-flat`, …, or `all`); repeat it to time several in turn.
    #[arg(long = "method", default_value = "rsp")]
    methods: Vec<String>,
    /// The lowest input value, for `epsilon-gamma-box`'s ZBox rule (ImageNet
    /// normalisation of 0).
    #[arg(long, default_value_t = -0.485 / 0.229, allow_negative_numbers = true)]
    low: f64,
    /// The highest input value, for `epsilon-gamma-box` (ImageNet normalisation of 1).
    #[arg(long, default_value_t = (1.0 - 0.406) / 0.225, allow_negative_numbers = true)]
    high: f64,
}

/// The methods named by `--method`, in order (`all` expands to every method).
fn methods(args: &Args) -> Result<Vec<Method>, String> {
    let mut out = Vec::new();
    for name in &args.methods {
        match name.as_str() {
            "all" => {
                out.extend(Method::ALL);
                out.push(Method::EpsilonGammaBox { low: args.low, high: args.high });
            }
            "epsilon-gamma-box" => out.push(Method::EpsilonGammaBox { low: args.low, high: args.high }),
            other => out.push(other.parse::<Method>().map_err(|e| format!("--method {other}: {e}"))?),
        }
    }
    Ok(out)
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

/// Median per-image times of one method, in ms (`start` and `propagation` for RSP only).
struct Times {
    forward: f64,
    start: Option<f64>,
    propagation: Option<f64>,
    total: f64,
    cpu: f64,
}

/// Times `method` over the warm-up and timed runs; RSP phase by phase, any
/// other method as one [`Network::explain`] call beside a forward pass alone.
fn time_method<T: Float>(net: &Network<T>, input: &Array4<T>, method: &Method, args: &Args) -> Times {
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / args.batch as f64;
    let (mut fwd, mut start, mut prop, mut total, mut cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut layers = Vec::new();
    for run in 0..args.warmup + args.runs {
        let cpu_before = cpu_ms();
        let line = if let Method::Rsp(options) = method {
            let (result, calls) = record_sectional_calls(|| explain_timed(net, input, 0, options));
            let (_, t) = result.expect("VGG16 attribution");
            layers = calls;
            fwd.push(ms(t.forward));
            start.push(ms(t.start));
            prop.push(ms(t.propagation));
            total.push(ms(t.total()));
            format!(
                "forward {:.1} ms, start {:.1} ms, propagation {:.1} ms, total {:.1} ms",
                ms(t.forward),
                ms(t.start),
                ms(t.propagation),
                ms(t.total())
            )
        } else {
            let clock = Instant::now();
            net.explain(input, 0, method.clone()).expect("VGG16 attribution");
            let t = ms(clock.elapsed());
            total.push(t);
            format!("total {t:.1} ms")
        };
        let cpu_run = (cpu_ms() - cpu_before) / args.batch as f64;
        if !matches!(method, Method::Rsp(_)) {
            // Outside the CPU count above: the forward pass alone, for comparison.
            let clock = Instant::now();
            net.forward(input).expect("VGG16 forward");
            fwd.push(ms(clock.elapsed()));
        }
        let line = format!("{} run {run}: {line} (CPU {cpu_run:.0} ms) per image", method.name());
        if run < args.warmup {
            eprintln!("{line} (warm-up)");
            for v in [&mut fwd, &mut start, &mut prop, &mut total] {
                v.clear();
            }
            continue;
        }
        eprintln!("{line}");
        cpu.push(cpu_run);
    }
    if args.layers && !layers.is_empty() {
        println!("layer (input -> output)         density  kernels      ms   (the last run; one line per sample)");
        for c in &layers {
            println!(
                "  {:>4}x{:<3}x{:<3} -> {:>4}x{:<3}x{:<3}  {:6.3}  {:7}  {:7.1}",
                c.input.0,
                c.input.1,
                c.input.2,
                c.output.0,
                c.output.1,
                c.output.2,
                c.density,
                if c.sparse { "sparse" } else { "dense" },
                c.seconds * 1e3
            );
        }
    }
    let optional = |v: Vec<f64>| (!v.is_empty()).then(|| median(v));
    Times {
        forward: median(fwd),
        start: optional(start),
        propagation: optional(prop),
        total: median(total),
        cpu: median(cpu),
    }
}

/// The network moved to the backend `--backend` names, and a reader of the
/// device's peak memory in MB (CUDA only).
type PeakMb = Box<dyn Fn() -> Option<f64>>;

trait OnBackend: Float {
    fn on_backend(net: Network<Self>, args: &Args) -> (Network<Self>, PeakMb);
}

macro_rules! on_backend {
    ($t:ty) => {
        impl OnBackend for $t {
            fn on_backend(net: Network<Self>, args: &Args) -> (Network<Self>, PeakMb) {
                match args.backend {
                    Compute::Cpu if args.kernels == Kernels::Dense => {
                        (net.with_backend(rsp::backend::DenseCpuBackend), Box::new(|| None))
                    }
                    Compute::Cpu => (net, Box::new(|| None)),
                    #[cfg(feature = "cuda")]
                    Compute::Cuda => {
                        let gpu = rsp::backend::CudaBackend::new(0)
                            .and_then(|gpu| if args.tf32 { gpu.with_tf32() } else { Ok(gpu) })
                            .unwrap_or_else(|e| {
                                eprintln!("error: {e}");
                                std::process::exit(2)
                            });
                        eprintln!("CUDA device: {}", gpu.device_name());
                        let peak = gpu.clone();
                        let report = move || {
                            // With RSP_CUDA_PROFILE set: where the time went, per operation.
                            for (name, calls, ms) in peak.profile_report() {
                                eprintln!("profile {ms:10.2} ms {calls:6} calls  {name}");
                            }
                            peak.peak_memory_bytes().ok().map(|b| b as f64 / 1e6)
                        };
                        (net.with_backend(gpu), Box::new(report))
                    }
                    #[cfg(not(feature = "cuda"))]
                    Compute::Cuda => {
                        eprintln!("error: --backend cuda needs a build with --features cuda");
                        std::process::exit(2)
                    }
                }
            }
        }
    };
}
on_backend!(f32);
on_backend!(f64);

fn run<T: OnBackend>(args: &Args, methods: &[Method]) {
    let mut rng = Normal(0x05EE_D0F1_C0DE);
    let (net, peak_device_mb) = T::on_backend(vgg16::<T>(&mut rng), args);
    let input = Array4::from_shape_simple_fn((args.batch, 3, 224, 224), || T::of(rng.sample()));
    let flops = conv_flops();
    for method in methods {
        let t = time_method(&net, &input, method, args);
        let rss = peak_rss_mb();
        let name = method.name();
        println!(
            "VGG16 {name} {} batch {} threads {} ({} runs, medians per image)",
            T::NAME,
            args.batch,
            args.threads,
            args.runs
        );
        let alone = if t.start.is_none() { ", timed alone" } else { "" };
        println!(
            "  forward      {:8.1} ms  ({:.0} GFLOP/s on the convolutions{alone})",
            t.forward,
            flops / t.forward / 1e6
        );
        if let (Some(start), Some(prop)) = (t.start, t.propagation) {
            println!("  start        {start:8.1} ms");
            println!(
                "  propagation  {prop:8.1} ms  ({:.0} GFLOP/s dense-equivalent: 6 forward passes)",
                6.0 * flops / prop / 1e6
            );
        }
        println!(
            "  total        {:8.1} ms  (CPU time {:.0} ms: {:.2} cores busy; other load on the machine lowers this)",
            t.total,
            t.cpu,
            t.cpu / t.total
        );
        println!("  peak RSS     {rss:8.0} MB");
        let json = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.1}"));
        let device = match (args.backend, peak_device_mb()) {
            (Compute::Cuda, peak) => {
                format!(",\"backend\":\"cuda\",\"tf32\":{},\"peak_device_mb\":{}", args.tf32, json(peak))
            }
            (Compute::Cpu, _) => {
                format!(",\"kernels\":\"{}\"", if args.kernels == Kernels::Dense { "dense" } else { "auto" })
            }
        };
        println!(
            "{{\"model\":\"vgg16\",\"method\":\"{name}\",\"dtype\":\"{}\",\"batch\":{},\"threads\":{},\"forward_ms\":{:.1},\"start_ms\":{},\"rsp_ms\":{},\"total_ms\":{:.1},\"peak_rss_mb\":{rss:.0}{device}}}",
            T::NAME,
            args.batch,
            args.threads,
            t.forward,
            json(t.start),
            json(t.propagation),
            t.total
        );
    }
}

fn main() {
    let args = Args::parse();
    assert!(args.batch >= 1 && args.runs >= 1 && args.threads >= 1, "--batch, --runs and --threads must be ≥ 1");
    let methods = methods(&args).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build().expect("rayon pool");
    pool.install(|| match args.dtype {
        Dtype::F32 => run::<f32>(&args, &methods),
        Dtype::F64 => run::<f64>(&args, &methods),
    });
}

//! The CUDA backend (feature `cuda`). The tests that need a device are
//! ignored by default and run by `scripts/device-check.sh` on a GPU machine
//! (`cargo test --features cuda -- --ignored cuda`); the one that runs
//! everywhere checks that a machine without CUDA gets a typed error.
//!
//! Parity (the bar): every golden case, RSP with both starts, in
//! float64 within 1e-9 of the reference and in float32 within the CPU's
//! float32 tolerance; the ONNX exports the same; every other method within
//! 1e-9 of the CPU backend (which matches its own goldens); two runs give the
//! same bits.

use crate::common;

use common::{data, read_tensors, rel_err, F32_TOL};
use rsp::backend::{Backend, CudaBackend};
use rsp::ndarray::{ArrayD, Ix4};
use rsp::{Float, HostileClasses, Method, Network, RspError, RspOptions, StartRule, Target};

/// The float64 bar against the reference.
const CUDA_F64_TOL: f64 = 1e-9;

const CASES: &[&str] = &[
    "vgg_tiny",
    "vgg_tiny_bn",
    "avgpool_stride_rect",
    "vgg16_narrow_224",
    "resnet_basic_tiny",
    "resnet_bottleneck_tiny",
];

fn gpu() -> CudaBackend {
    CudaBackend::new(0).expect("a CUDA device (these tests are run by scripts/device-check.sh)")
}

#[test]
fn without_cuda_the_backend_is_a_typed_error_not_a_crash() {
    // On a machine with a device this builds the backend; without one (CI)
    // it must say so with a typed error rather than panic in the loader.
    match CudaBackend::new(0) {
        Ok(gpu) => assert!(!gpu.device_name().is_empty()),
        Err(e) => {
            assert!(matches!(e, RspError::Backend { .. }), "{e:?}");
            assert!(e.to_string().contains("cuda"), "{e}");
        }
    }
}

fn target_of(metadata: &str) -> Target {
    match serde_json::from_str::<serde_json::Value>(metadata).unwrap() {
        serde_json::Value::Array(list) => {
            Target::PerSample(list.iter().map(|v| v.as_u64().unwrap() as usize).collect())
        }
        v => Target::Single(v.as_u64().unwrap() as usize),
    }
}

#[cfg(feature = "onnx")]
fn load_onnx<T: Float>(case: &str) -> Network<T> {
    rsp::io::onnx::load::<T>(data(&format!("golden/onnx/{case}.onnx"))).unwrap()
}

#[cfg(not(feature = "onnx"))]
fn load_onnx<T: Float>(case: &str) -> Network<T> {
    panic!("{case}: the ONNX cases need the onnx feature")
}

/// Relevance, start relevance and logits of `case` on the GPU against the
/// reference's float64 values.
fn golden_errors<T: Float>(case: &str, onnx: bool) -> [f64; 3]
where
    CudaBackend: Backend<T>,
{
    let path = data(&format!("golden/{case}.safetensors"));
    let file = read_tensors(&path);
    let net: Network<T> = if onnx { load_onnx(case) } else { rsp::io::safetensors::load::<T>(&path).unwrap() };
    let net = net.with_backend(gpu());
    let input = file.tensors["input"].mapv(T::of).into_dimensionality::<Ix4>().unwrap();
    let e = net.explain(input.view(), target_of(&file.metadata["target"]), RspOptions::default()).unwrap();
    let widen = |a: ArrayD<T>| a.mapv(|v| v.to_f64_exact());
    [
        rel_err(&widen(e.relevance.unwrap().into_dyn()), &file.tensors["relevance_f64"]),
        rel_err(&widen(e.start_relevance.unwrap()), &file.tensors["start_relevance_f64"]),
        rel_err(&widen(e.logits.into_dyn()), &file.tensors["logits_f64"]),
    ]
}

#[test]
#[ignore = "needs a CUDA device"]
fn cuda_golden_parity_in_float64_and_float32() {
    let mut worst = [0.0f64; 2];
    for case in CASES {
        let f64_errs = golden_errors::<f64>(case, false);
        let f32_errs = golden_errors::<f32>(case, false);
        println!("cuda golden {case}: f64 {f64_errs:?} f32 {f32_errs:?} (relevance, start, logits)");
        assert!(f64_errs.iter().all(|&e| e <= CUDA_F64_TOL), "{case} f64: {f64_errs:?}");
        assert!(f32_errs.iter().all(|&e| e <= F32_TOL), "{case} f32: {f32_errs:?}");
        worst[0] = worst[0].max(f64_errs[0]);
        worst[1] = worst[1].max(f32_errs[0]);
    }
    println!(
        "{{\"check\":\"cuda_golden\",\"cases\":{},\"worst_f64\":{:.3e},\"worst_f32\":{:.3e}}}",
        CASES.len(),
        worst[0],
        worst[1]
    );
}

#[test]
#[ignore = "needs a CUDA device"]
#[cfg(feature = "onnx")]
fn cuda_onnx_exports_match_the_goldens() {
    let mut worst = 0.0f64;
    for case in CASES {
        let errs = golden_errors::<f64>(case, true);
        println!("cuda onnx {case}: f64 {errs:?}");
        // The exporter stores a batch norm's ε in float32 (1e-11 on the CPU).
        assert!(errs.iter().all(|&e| e <= CUDA_F64_TOL), "{case} onnx: {errs:?}");
        worst = worst.max(errs[0]);
    }
    println!("{{\"check\":\"cuda_onnx\",\"cases\":{},\"worst_f64\":{worst:.3e}}}", CASES.len());
}

/// Every method, with RSP's two starts.
fn methods() -> Vec<Method> {
    let mut m = Method::ALL.to_vec();
    m.push(Method::Rsp(RspOptions { start: StartRule::Comparative(HostileClasses::TopK(2)), ..Default::default() }));
    m
}

#[test]
#[ignore = "needs a CUDA device"]
fn cuda_every_method_agrees_with_the_cpu_backend() {
    let mut worst = 0.0f64;
    let mut count = 0;
    for case in ["vgg_tiny_bn", "avgpool_stride_rect", "resnet_basic_tiny", "resnet_bottleneck_tiny"] {
        let path = data(&format!("golden/{case}.safetensors"));
        let x = read_tensors(&path).tensors["input"].clone().into_dimensionality::<Ix4>().unwrap();
        let shifted = x.mapv(|v| 0.8 * v - 0.05);
        let x = rsp::ndarray::concatenate(rsp::ndarray::Axis(0), &[x.view(), shifted.view()]).unwrap();
        let cpu = Network::<f64>::load(&path).unwrap();
        let dev = cpu.clone().with_backend(gpu());
        for method in methods() {
            let a = dev.explain(&x, Target::Predicted, &method).unwrap();
            let b = cpu.explain(&x, Target::Predicted, &method).unwrap();
            assert_eq!(a.targets, b.targets, "{case} {method}");
            let rel = match (&a.relevance, &b.relevance) {
                (Some(a), Some(b)) => rel_err(&a.clone().into_dyn(), &b.clone().into_dyn()),
                _ => 0.0,
            };
            let maps = rel_err(&a.heatmaps.into_dyn(), &b.heatmaps.into_dyn());
            println!("cuda vs cpu {case} {method}: relevance {rel:.2e} maps {maps:.2e}");
            assert!(rel <= CUDA_F64_TOL && maps <= CUDA_F64_TOL, "{case} {method}: {rel:.3e} {maps:.3e}");
            worst = worst.max(rel).max(maps);
            count += 1;
        }
    }
    println!("{{\"check\":\"cuda_methods\",\"runs\":{count},\"worst_vs_cpu\":{worst:.3e}}}");
}

#[test]
#[ignore = "needs a CUDA device"]
fn cuda_two_runs_give_the_same_bits() {
    let path = data("golden/vgg16_narrow_224.safetensors");
    let x = read_tensors(&path).tensors["input"].mapv(|v| v as f32).into_dimensionality::<Ix4>().unwrap();
    let x = rsp::ndarray::concatenate(rsp::ndarray::Axis(0), &[x.view(), x.mapv(|v| 0.5 * v).view()]).unwrap();
    let net = rsp::io::safetensors::load::<f32>(&path).unwrap().with_backend(gpu());
    let runs: Vec<_> = (0..2).map(|_| net.explain(&x, 0, RspOptions::default()).unwrap().relevance.unwrap()).collect();
    assert_eq!(runs[0], runs[1]);
    // The same sample alone: within rounding of its row in the batch (cuBLAS
    // may choose another algorithm for another batch size).
    let alone = net.explain(x.slice(rsp::ndarray::s![0..1, .., .., ..]), 0, RspOptions::default()).unwrap();
    let alone = alone.relevance.unwrap().mapv(f64::from).into_dyn();
    let row = runs[0].slice(rsp::ndarray::s![0..1, .., .., ..]).mapv(f64::from).into_dyn();
    let err = rel_err(&alone, &row);
    println!("{{\"check\":\"cuda_determinism\",\"same_bits\":true,\"alone_vs_batch\":{err:.3e}}}");
    assert!(err <= F32_TOL, "sample alone vs in its batch: {err:.3e}");
}

/// TF32 (an explicit opt-in) on every golden case in float32: its error
/// against the reference, measured and bounded loosely (tensor cores round
/// the float32 operands to 10-bit mantissas).
#[test]
#[ignore = "needs a CUDA device"]
fn cuda_tf32_error_is_measured_on_every_golden() {
    let mut worst = 0.0f64;
    for case in CASES {
        let path = data(&format!("golden/{case}.safetensors"));
        let file = read_tensors(&path);
        let net = rsp::io::safetensors::load::<f32>(&path).unwrap().with_backend(gpu().with_tf32().unwrap());
        let input = file.tensors["input"].mapv(|v| v as f32).into_dimensionality::<Ix4>().unwrap();
        let e = net.explain(input.view(), target_of(&file.metadata["target"]), RspOptions::default()).unwrap();
        let err = rel_err(&e.relevance.unwrap().mapv(f64::from).into_dyn(), &file.tensors["relevance_f64"]);
        println!("cuda tf32 {case}: relevance {err:.2e}");
        assert!(err <= 3e-2, "{case}: TF32 relevance {err:.3e} from the reference");
        worst = worst.max(err);
    }
    println!("{{\"check\":\"cuda_tf32\",\"cases\":{},\"worst_f32_tf32\":{worst:.3e}}}", CASES.len());
}

/// A deterministic pseudo-random tensor in [-1, 1) with some exact zeros.
fn random(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    ArrayD::from_shape_fn(rsp::ndarray::IxDyn(shape), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let v = (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        if v.abs() < 0.05 {
            0.0
        } else {
            v
        }
    })
}

/// Each batch operation on the GPU against the CPU backend on random data
/// (float64), so that a failure names the operation.
#[test]
#[ignore = "needs a CUDA device"]
fn cuda_batch_operations_agree_with_the_cpu_backend() {
    use rsp::backend::{ConvGeometry, CpuBackend, PoolWindows, Tensor};
    let gpu = gpu();
    let cpu = CpuBackend;
    let up = |b: &dyn Backend<f64>, a: &ArrayD<f64>| b.upload(a.view()).unwrap();
    let mut worst = 0.0f64;
    let mut check = |what: &str, on_gpu: rsp::Result<Tensor<f64>>, on_cpu: rsp::Result<Tensor<f64>>| {
        let a = Backend::<f64>::download(&gpu, &on_gpu.unwrap_or_else(|e| panic!("{what} on the GPU: {e}"))).unwrap();
        let b = Backend::<f64>::download(&cpu, &on_cpu.unwrap()).unwrap();
        assert_eq!(a.shape(), b.shape(), "{what}");
        let err = rel_err(&a, &b);
        println!("cuda op {what}: {err:.2e}");
        assert!(err <= 1e-12, "{what}: {err:.3e}");
        worst = worst.max(err);
    };
    let x = random(&[3, 4, 9, 7], 1);
    let w = random(&[5, 4, 3, 2], 2);
    let b = random(&[5], 3);
    let geoms = [ConvGeometry::square(1, 1), ConvGeometry { stride: [2, 1], padding: [1, 0, 2, 1] }];
    for (i, g) in geoms.iter().enumerate() {
        let z = |be: &dyn Backend<f64>| be.conv2d_batch(&up(be, &x), &up(be, &w), Some(&up(be, &b)), g);
        check(&format!("conv2d_batch {i}"), z(&gpu), z(&cpu));
        let (ho, wo) = g.output_size((9, 7), (3, 2)).unwrap();
        let r = random(&[3, 5, ho, wo], 4 + i as u64);
        let adj = |be: &dyn Backend<f64>| be.conv2d_input_adjoint_batch(&up(be, &r), &up(be, &w), g, (9, 7));
        check(&format!("conv2d_input_adjoint_batch {i}"), adj(&gpu), adj(&cpu));
        let sec = |be: &dyn Backend<f64>| be.sectional_rule_batch(&up(be, &x), &up(be, &r), g, (3, 2));
        check(&format!("sectional_rule_batch {i}"), sec(&gpu), sec(&cpu));
        let zb = |be: &dyn Backend<f64>| be.zb_rule_batch(&up(be, &x), &up(be, &r), &up(be, &w), g);
        check(&format!("zb_rule_batch {i}"), zb(&gpu), zb(&cpu));
    }
    // Maps of over 2048 positions: the kernel gradients' inner sum is split
    // in parts (with and without positions left over).
    for (i, (shape, kernel, geom)) in [
        ([2, 3, 47, 50], [4, 3, 3, 3], ConvGeometry::square(1, 1)),
        ([2, 3, 1, 2351], [4, 3, 1, 3], ConvGeometry { stride: [1, 1], padding: [0, 1, 0, 1] }),
    ]
    .into_iter()
    .enumerate()
    {
        let xb = random(&shape, 30 + i as u64);
        let (ho, wo) = geom.output_size((shape[2], shape[3]), (kernel[2], kernel[3])).unwrap();
        let rb = random(&[2, 4, ho, wo], 34 + i as u64);
        let sec =
            |be: &dyn Backend<f64>| be.sectional_rule_batch(&up(be, &xb), &up(be, &rb), &geom, (kernel[2], kernel[3]));
        check(&format!("sectional_rule_batch split-K {i}"), sec(&gpu), sec(&cpu));
    }
    // A 1×1 convolution (the linear layers' sectional rule) and a linear layer.
    let w1 = random(&[6, 4, 1, 1], 7);
    let r1 = random(&[3, 6, 9, 7], 8);
    let g1 = ConvGeometry::square(1, 0);
    let sec = |be: &dyn Backend<f64>| be.sectional_rule_batch(&up(be, &x), &up(be, &r1), &g1, (1, 1));
    check("sectional_rule_batch 1x1", sec(&gpu), sec(&cpu));
    // On a 1×1 map (a linear layer): the rank-one form.
    let (xr, rr) = (random(&[3, 40, 1, 1], 36), random(&[3, 7, 1, 1], 37));
    let sec = |be: &dyn Backend<f64>| be.sectional_rule_batch(&up(be, &xr), &up(be, &rr), &g1, (1, 1));
    check("sectional_rule_batch rank one", sec(&gpu), sec(&cpu));
    let conv1 = |be: &dyn Backend<f64>| be.conv2d_batch(&up(be, &x), &up(be, &w1), None, &g1);
    check("conv2d_batch 1x1", conv1(&gpu), conv1(&cpu));
    let xl = random(&[3, 11], 9);
    let wl = random(&[4, 11], 10);
    let bl = random(&[4], 11);
    let gl = random(&[3, 4], 12);
    let lin = |be: &dyn Backend<f64>| be.linear_batch(&up(be, &xl), &up(be, &wl), Some(&up(be, &bl)));
    check("linear_batch", lin(&gpu), lin(&cpu));
    let ladj = |be: &dyn Backend<f64>| be.linear_adjoint_batch(&up(be, &gl), &up(be, &wl));
    check("linear_adjoint_batch", ladj(&gpu), ladj(&cpu));
    // Pooling, disjoint and overlapping windows.
    for (i, (k, s)) in [((2, 2), (2, 2)), ((3, 3), (2, 2))].into_iter().enumerate() {
        let win = PoolWindows::strided((9, 7), k, s, [0, 0, 1, 0]).unwrap();
        let (ho, wo) = win.output_hw();
        let r = random(&[3, 4, ho, wo], 13 + i as u64);
        let mp = |be: &dyn Backend<f64>| be.max_pool_batch(&up(be, &x), &win);
        check(&format!("max_pool_batch {i}"), mp(&gpu), mp(&cpu));
        let adj = |be: &dyn Backend<f64>| be.max_pool_adjoint_batch(&up(be, &x), &up(be, &r), &win);
        check(&format!("max_pool_adjoint_batch {i}"), adj(&gpu), adj(&cpu));
        let rule = |be: &dyn Backend<f64>| be.max_pool_rule_batch(&up(be, &x), &up(be, &r), &win);
        check(&format!("max_pool_rule_batch {i}"), rule(&gpu), rule(&cpu));
    }
    // Element-wise steps and per-channel maps.
    let y = random(&[3, 4, 9, 7], 20);
    let c4 = [random(&[4], 21), random(&[4], 22).mapv(f64::abs), random(&[4], 23)];
    let aff =
        |be: &dyn Backend<f64>| be.channel_affine_batch(&up(be, &x), &up(be, &c4[0]), &up(be, &c4[1]), &up(be, &c4[2]));
    check("channel_affine_batch", aff(&gpu), aff(&cpu));
    let cs = |be: &dyn Backend<f64>| be.channel_scale_batch(&up(be, &x), &up(be, &c4[1]));
    check("channel_scale_batch", cs(&gpu), cs(&cpu));
    let relu = |be: &dyn Backend<f64>| be.relu_batch(&up(be, &x));
    check("relu_batch", relu(&gpu), relu(&cpu));
    let rg = |be: &dyn Backend<f64>| be.relu_gradient_batch(&up(be, &x), &up(be, &y));
    check("relu_gradient_batch", rg(&gpu), rg(&cpu));
    let add = |be: &dyn Backend<f64>| be.add_batch(&up(be, &x), &up(be, &y));
    check("add_batch", add(&gpu), add(&cpu));
    let sd = |be: &dyn Backend<f64>| be.stabilised_divide_batch(&up(be, &x), &up(be, &y), Some(0.25));
    check("stabilised_divide_batch", sd(&gpu), sd(&cpu));
    let sa = |be: &dyn Backend<f64>| be.scaled_add(&up(be, &x), -0.5, &up(be, &y));
    check("scaled_add", sa(&gpu), sa(&cpu));
    let sums = |be: &dyn Backend<f64>| be.sample_sums_batch(&up(be, &x));
    check("sample_sums_batch", sums(&gpu), sums(&cpu));
    let gather = |be: &dyn Backend<f64>| be.gather_samples(&up(be, &x), &[2, 0, 2]);
    check("gather_samples", gather(&gpu), gather(&cpu));
    let full = |be: &dyn Backend<f64>| be.full(&[2, 3], 1.5);
    check("full", full(&gpu), full(&cpu));
    for i in 0..2 {
        let add_rule = |be: &dyn Backend<f64>| {
            be.add_rule_batch(&up(be, &x), &up(be, &y), &up(be, &random(&[3, 4, 9, 7], 24))).map(|p| {
                if i == 0 {
                    p.0
                } else {
                    p.1
                }
            })
        };
        check(&format!("add_rule_batch {i}"), add_rule(&gpu), add_rule(&cpu));
    }
    // The single-class start, with a sample whose weighted map has no positive value.
    let grads = random(&[3, 4, 9, 7], 25);
    let mut acts = x.mapv(f64::abs);
    acts.index_axis_mut(rsp::ndarray::Axis(0), 1).fill(0.0);
    acts[[1, 0, 0, 0]] = -1.0;
    let start = |be: &dyn Backend<f64>| be.single_class_start_batch(&up(be, &acts), &up(be, &grads));
    check("single_class_start_batch", start(&gpu), start(&cpu));
    let mut bad = x.clone();
    bad[[1, 2, 3, 4]] = f64::NAN;
    bad[[2, 0, 0, 0]] = f64::INFINITY;
    let first = Backend::<f64>::first_non_finite(&gpu, &up(&gpu, &bad)).unwrap();
    assert_eq!(first, Backend::<f64>::first_non_finite(&cpu, &up(&cpu, &bad)).unwrap());
    assert_eq!(Backend::<f64>::samples_with_negatives(&gpu, &up(&gpu, &x.mapv(f64::abs))).unwrap(), vec![false; 3]);
    println!("{{\"check\":\"cuda_ops\",\"worst_vs_cpu\":{worst:.3e}}}");
}

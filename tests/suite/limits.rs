//! The pre-flight check (memory budget and work bound) and the output file
//! rules of the CLI: every refusal is a typed error, and on the command line
//! exit status 1 with one line on stderr, within seconds, never an abort.

use ndarray::{Array2, Array4, ArrayD};
use rsp::io::npy::write_npy;
use rsp::layers::{AdaptiveAvgPool2d, Flatten, Layer, Linear, MaxPool2d, Relu};
use rsp::{HostileClasses, Method, Network, RspError, RspOptions, StartRule};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn rsp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rsp")).args(args).output().expect("the binary runs")
}

/// Exit status 1, one line on stderr containing every word.
fn assert_refused(o: &Output, words: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    for w in words {
        assert!(stderr.contains(w), "expected `{w}` in {stderr:?}");
    }
    stderr
}

fn image(n: usize, c: usize, h: usize, w: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, c, h, w), |(n, c, i, j)| ((n + c * 3 + i * 5 + j * 7) % 11) as f32 / 11.0 - 0.4)
}

/// `relu → [middle] → adaptive average pool to 1×1 → flatten → linear(c → 2)`.
fn tiny_net(c: usize, middle: Vec<Box<dyn Layer<f32>>>) -> Network<f32> {
    let mut layers: Vec<Box<dyn Layer<f32>>> = vec![Box::new(Relu)];
    layers.extend(middle);
    layers.push(Box::new(AdaptiveAvgPool2d::new((1, 1))));
    layers.push(Box::new(Flatten));
    layers
        .push(Box::new(Linear::new("fc", Array2::from_shape_fn((2, c), |(i, j)| (i + j) as f32 - 0.5), None).unwrap()));
    Network::sequential(layers)
}

/// The case: a 512×512 max-pool window at stride 1 on a 1024² input
/// (minutes of work) is refused by the work bound before it runs.
#[test]
fn a_huge_pooling_window_is_refused_by_the_work_bound() {
    let net = tiny_net(1, vec![Box::new(MaxPool2d::new((512, 512), (1, 1), [0; 4]))]);
    let x = image(1, 1, 1024, 1024);
    for method in [Method::default(), Method::Gradient, Method::LrpEpsilon(0.25)] {
        let err = net.explain(x.view(), 0, &method).unwrap_err();
        assert!(matches!(err, RspError::WorkBound { .. }), "{method}: {err}");
        assert!(err.to_string().contains("maxpool2d kernel 512×512"), "{err}");
    }
    assert!(matches!(net.forward(x.view()).unwrap_err(), RspError::WorkBound { .. }));
    // The same layer on a small input is fine, and a raised bound lets the big one through the check.
    assert!(net.forward(image(1, 1, 600, 600).view()).is_ok());
    let mut raised = net.clone();
    raised.set_work_bound(Some(u64::MAX));
    let e = raised.estimate(&[1, 1, 1024, 1024], rsp::budget::Pass::Attribution).unwrap();
    // 3 scans of 513² windows of 512² cells, 16 operations per step, plus the element-wise rest.
    assert!(e.work >= 3 * 513 * 513 * 512 * 512 * 16, "{}", e.work);
    assert_eq!(e.heaviest_node.0, 1);
}

/// The default work bound admits VGG16 and ResNet-152 at 224×224 with a wide
/// margin, and their memory per sample is what such a model needs.
#[test]
fn the_default_limits_admit_real_models() {
    use rsp::models::{ResNetConfig, VggConfig, WeightSource};
    let weights = WeightSource::HeNormal { seed: 1 };
    let vgg: Network<f32> = VggConfig::vgg16(false).build(&weights).unwrap();
    let resnet: Network<f32> = ResNetConfig::resnet152().build(&weights).unwrap();
    for (name, net) in [("vgg16", vgg), ("resnet152", resnet)] {
        let e = net.estimate(&[8, 3, 224, 224], rsp::budget::Pass::Attribution).unwrap();
        println!("{name}: work {:.3e} per sample, {} bytes per sample in flight", e.work, e.memory_per_sample);
        assert!(e.work * 3 < rsp::limits::DEFAULT_MAX_WORK, "{name}: {:.3e}", e.work);
        assert!(e.memory_per_sample < 3 << 30, "{name}: {}", e.memory_per_sample);
    }
}

/// A budget below the estimate of a call splits its batch into the most
/// samples at once that fit (the same results), and refuses it with the
/// estimate and the budget in the error when not even one sample fits.
#[test]
fn the_memory_budget_splits_or_refuses_every_call_over_it() {
    let mut net = Network::<f32>::load(repo("data/digits_vgg.safetensors")).unwrap();
    let x = image(2, 3, 64, 64);
    let both = net.estimate(&[2, 3, 64, 64], rsp::budget::Pass::Attribution).unwrap();
    let estimate = both.memory;
    let wholes: Vec<_> = Method::ALL.iter().map(|m| net.explain(x.view(), 1, m).unwrap()).collect();
    if both.samples_in_flight > 1 {
        // Both samples at once do not fit; one at a time does.
        net.set_memory_budget(Some(estimate - 1));
        assert_eq!(net.memory_budget(), estimate - 1);
        for (method, whole) in Method::ALL.iter().zip(&wholes) {
            let split = net.explain(x.view(), 1, method).unwrap();
            assert_eq!(split.heatmaps, whole.heatmaps, "{method}");
            assert_eq!(split.relevance, whole.relevance, "{method}");
        }
    }
    let one = net.estimate(&[1, 3, 64, 64], rsp::budget::Pass::Attribution).unwrap().memory;
    net.set_memory_budget(Some(one / 2));
    for method in Method::ALL {
        match net.explain(x.view(), 1, &method).unwrap_err() {
            RspError::MemoryBudget { estimate: e, budget, .. } => {
                assert_eq!(budget, one / 2, "{method}");
                assert!(e > budget, "{method}: {e} ≤ {budget}");
            }
            other => panic!("{method}: {other}"),
        }
    }
    assert!(matches!(net.attribute(x.view(), 1).unwrap_err(), RspError::MemoryBudget { .. }));
    net.set_memory_budget(None);
    let forward = net.estimate(&[2, 3, 64, 64], rsp::budget::Pass::Forward).unwrap().memory;
    assert!(forward < estimate);
    // The forward pass splits a batch over the budget, down to one sample at once.
    let whole = net.forward(x.view()).unwrap();
    net.set_memory_budget(Some(forward - 1));
    assert_eq!(net.forward(x.view()).unwrap(), whole);
    let one = net.estimate(&[1, 3, 64, 64], rsp::budget::Pass::Forward).unwrap().memory;
    net.set_memory_budget(Some(one - 1));
    assert!(matches!(net.forward(x.view()).unwrap_err(), RspError::MemoryBudget { .. }));
    net.set_memory_budget(Some(estimate));
    assert!(net.attribute(x.view(), 1).is_ok());
}

/// The comparative start's class gradients (one row per sample and target
/// or hostile class) count against the budget: at a budget that the
/// attribution itself fits, the single-class start runs and a comparative
/// start with nine hostile classes per sample is refused for a single sample,
/// naming its rows.
#[test]
fn the_comparative_starts_class_gradients_count_against_the_budget() {
    let mut net = Network::<f32>::load(repo("data/digits_vgg.safetensors")).unwrap();
    let x = image(1, 3, 64, 64);
    let estimate = net.estimate(&[1, 3, 64, 64], rsp::budget::Pass::Attribution).unwrap().memory;
    net.set_memory_budget(Some(estimate));
    assert!(net.explain(x.view(), 1, RspOptions::default()).is_ok());
    let comparative = RspOptions { start: StartRule::Comparative(HostileClasses::TopK(9)), ..Default::default() };
    match net.explain(x.view(), 1, &comparative).unwrap_err() {
        RspError::MemoryBudget { estimate: e, budget, what } => {
            assert_eq!(budget, estimate);
            assert!(e > estimate, "{e} vs {estimate}");
            // The target and nine hostile classes.
            assert!(what.contains("10 class gradients"), "{what}");
        }
        other => panic!("{other}"),
    }
    net.set_memory_budget(None);
    let e = net.explain(x.view(), 1, &comparative).unwrap();
    assert!(e.hostile_classes.iter().all(|h| h.len() == 9));
}

/// A batch whose comparative start needs more class-gradient rows than the
/// budget holds is split (the rows are known only after the forward pass):
/// at a budget that fits the batch's plan and one sample's rows but not two
/// samples' rows, the batch runs in parts with each sample's bits of the
/// unconstrained run; below one sample's rows it is still refused. A network
/// with 200 classes, so that the 200 rows per sample outweigh the rest.
#[test]
fn a_batch_whose_class_gradients_exceed_the_budget_is_split() {
    let conv = |name: &str, c: usize| {
        let w = rsp::ndarray::Array4::from_shape_fn((8, c, 3, 3), |(o, i, u, v)| {
            ((o * 7 + i * 5 + u * 3 + v) % 11) as f32 * 0.05 - 0.2
        });
        rsp::layers::Conv2d::new(name, w, None, rsp::backend::ConvGeometry::square(1, 1)).unwrap()
    };
    let fc = Linear::new(
        "fc",
        Array2::from_shape_fn((200, 8 * 16 * 16), |(i, j)| ((i * 3 + j * 7) % 13) as f32 * 0.01 - 0.06),
        None,
    )
    .unwrap();
    let layers: Vec<Box<dyn Layer<f32>>> = vec![
        Box::new(conv("c1", 3)),
        Box::new(Relu),
        Box::new(conv("c2", 8)),
        Box::new(Relu),
        Box::new(MaxPool2d::new((2, 2), (2, 2), [0; 4])),
        Box::new(Flatten),
        Box::new(fc),
    ];
    let mut net = Network::sequential(layers);
    let x = image(4, 3, 32, 32);
    let comparative = RspOptions { start: StartRule::Comparative(HostileClasses::TopK(199)), ..Default::default() };
    let free = net.explain(x.view(), 1, &comparative).unwrap();
    // The budget at which `n` samples run at once: raised to each refusal's
    // estimate (the plan's, then the class rows') until the call runs.
    let needed = |net: &mut Network<f32>, n: usize| {
        let mut budget = net.estimate(&[n, 3, 32, 32], rsp::budget::Pass::Attribution).unwrap().memory;
        loop {
            net.set_memory_budget(Some(budget));
            match rsp::attribution::explain_timed(net, x.slice(ndarray::s![..n, .., .., ..]), 1, &comparative) {
                Ok(_) => return budget,
                Err(RspError::MemoryBudget { estimate, .. }) if estimate > budget => budget = estimate,
                Err(other) => panic!("{other}"),
            }
        }
    };
    // What one and two samples need: the attribution's estimate plus their rows.
    let (one, two) = (needed(&mut net, 1), needed(&mut net, 2));
    let plan = net.estimate(&[4, 3, 32, 32], rsp::budget::Pass::Attribution).unwrap().memory;
    assert!(one.max(plan) < two, "one sample's rows {one}, the plan {plan}, two samples' rows {two}");
    net.set_memory_budget(Some(one.max(plan)));
    // The whole batch at once does not fit (the phase-timed call holds every
    // sample at once and refuses); split, it runs, with the same bits.
    let at_once = rsp::attribution::explain_timed(&net, x.view(), 1, &comparative);
    assert!(matches!(at_once.unwrap_err(), RspError::MemoryBudget { .. }));
    let split = net.explain(x.view(), 1, &comparative).unwrap();
    assert_eq!(split.relevance, free.relevance);
    assert_eq!(split.start_relevance, free.start_relevance);
    assert_eq!(split.hostile_classes, free.hostile_classes);
    // Below one sample's rows, refused.
    net.set_memory_budget(Some(one - 1));
    assert!(matches!(net.explain(x.view(), 1, &comparative).unwrap_err(), RspError::MemoryBudget { .. }));
}

/// The cases on the command line: the digits model on a 4096² input
/// under an 8G budget, and 20,000 ReLU layers on a 512² input, are refused
/// with one line; `--max-memory` and `--max-work` are parsed and checked.
#[test]
fn the_cli_refuses_calls_over_the_budget_in_one_line() {
    let scratch_dir = crate::common::scratch("limits-cli");
    let dir = scratch_dir.path().to_path_buf();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let model = repo("data/digits_vgg.safetensors").to_str().unwrap().to_string();
    write_npy(Path::new(&p("big.npy")), &image(1, 3, 4096, 4096).into_dyn()).unwrap();
    let big = ["attribute", "--model", &model, "--input", &p("big.npy"), "--target", "1", "--out", &p("r.npy")];
    let mut args = big.to_vec();
    args.extend(["--max-memory", "8G"]);
    let line = assert_refused(&rsp(&args), &["memory budget exceeded", "8.0 GiB", "1×3×4096×4096"]);
    assert!(line.contains("GiB"), "{line}");
    assert!(!Path::new(&p("r.npy")).exists());

    let relus: Vec<Box<dyn Layer<f32>>> = (0..20_000).map(|_| Box::new(Relu) as Box<dyn Layer<f32>>).collect();
    let deep = tiny_net(3, relus);
    rsp::io::safetensors::save(&deep, dir.join("relus.safetensors")).unwrap();
    assert!(std::fs::metadata(dir.join("relus.safetensors")).unwrap().len() < 600_000);
    write_npy(Path::new(&p("x512.npy")), &image(1, 3, 512, 512).into_dyn()).unwrap();
    let o = rsp(&[
        "attribute",
        "--model",
        &p("relus.safetensors"),
        "--input",
        &p("x512.npy"),
        "--target",
        "0",
        "--out",
        &p("r.npy"),
        "--max-memory",
        "8G",
    ]);
    assert_refused(&o, &["memory budget exceeded"]);

    for (flag, value, word) in [
        ("--max-memory", "8X", "not a size"),
        ("--max-memory", "0", "not a size"),
        ("--max-work", "lots", "--max-work"),
    ] {
        let mut args = big.to_vec();
        args.extend([flag, value]);
        assert_refused(&rsp(&args), &[word]);
    }
    let o = rsp(&[
        "attribute",
        "--model",
        &model,
        "--input",
        &p("x512.npy"),
        "--target",
        "1",
        "--out",
        &p("r.npy"),
        "--max-work",
        "1e6",
    ]);
    assert_refused(&o, &["work bound exceeded", "1.000e6"]);
    // The evaluate command takes the same options.
    let scenes = repo("data/scenes_public.safetensors").to_str().unwrap().to_string();
    let o = rsp(&[
        "evaluate",
        "--model",
        &model,
        "--scenes",
        &scenes,
        "--method",
        "gradient",
        "--limit",
        "1",
        "--max-memory",
        "1K",
    ]);
    assert_refused(&o, &["memory budget exceeded"]);
}

/// `--out` naming the model or the input (directly, through `..`, a symbolic
/// link or a hard link) is refused before anything is written; a failed run
/// leaves an existing output file as it was.
#[test]
fn the_output_never_replaces_an_input_or_a_previous_result_on_failure() {
    let scratch_dir = crate::common::scratch("limits-out");
    let dir = scratch_dir.path().to_path_buf();
    let p = |name: &str| dir.join(name);
    let s = |path: &Path| path.to_str().unwrap().to_string();
    std::fs::copy(repo("data/digits_vgg.safetensors"), p("model.safetensors")).unwrap();
    write_npy(&p("x.npy"), &image(1, 3, 32, 32).into_dyn()).unwrap();
    let model_bytes = std::fs::read(p("model.safetensors")).unwrap();
    let input_bytes = std::fs::read(p("x.npy")).unwrap();
    std::os::unix::fs::symlink(p("x.npy"), p("link.npy")).unwrap();
    std::fs::hard_link(p("model.safetensors"), p("hard.safetensors")).unwrap();
    std::fs::create_dir_all(p("sub")).unwrap();
    let dotted = dir.join("sub").join("..").join("x.npy");
    for out in [p("model.safetensors"), p("x.npy"), p("link.npy"), p("hard.safetensors"), dotted] {
        let o = rsp(&[
            "attribute",
            "--model",
            &s(&p("model.safetensors")),
            "--input",
            &s(&p("x.npy")),
            "--target",
            "1",
            "--out",
            &s(&out),
        ]);
        assert_refused(&o, &["--out", "refusing to overwrite an input"]);
    }
    assert_eq!(std::fs::read(p("model.safetensors")).unwrap(), model_bytes);
    assert_eq!(std::fs::read(p("x.npy")).unwrap(), input_bytes);

    // A good run writes the result; a failing one (a bad target) keeps it.
    let run = |target: &str| {
        rsp(&[
            "attribute",
            "--model",
            &s(&p("model.safetensors")),
            "--input",
            &s(&p("x.npy")),
            "--target",
            target,
            "--out",
            &s(&p("r.npy")),
        ])
    };
    assert!(run("1").status.success());
    let first = std::fs::read(p("r.npy")).unwrap();
    let relevance: ArrayD<f32> = rsp::io::npy::read_npy(&p("r.npy")).unwrap();
    assert_eq!(relevance.shape(), &[1, 3, 32, 32]);
    assert_refused(&run("99"), &["out of range"]);
    assert_eq!(std::fs::read(p("r.npy")).unwrap(), first);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.contains("rsp-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

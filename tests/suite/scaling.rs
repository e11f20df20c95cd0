//! Dataset scale end to end: `rsp attribute --images` over a folder the test
//! makes, sharded (by flag and by the Slurm and Kubernetes environments),
//! merged, killed and resumed; `rsp evaluate --shard` merged by `rsp merge`.
//! Every sharded or resumed run must give exactly the files and numbers of
//! one uninterrupted, unsharded run.

use rsp::eval::dataset::Scenes;
use rsp::image_io::{load_image, tensor_to_rgb, Normalization};
use rsp::io::npy::{read_npy, write_npy};
use rsp::Network;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODEL: &str = "data/digits_vgg.safetensors";
const SCENES: &str = "data/scenes_public.safetensors";

fn rsp() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rsp"));
    for k in ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX"] {
        c.env_remove(k);
    }
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn ok(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn fails_with(o: Output, word: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{what}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
    assert!(stderr.contains(word), "{what}: expected `{word}` in {stderr}");
}

/// A folder of 11 inputs: 9 PNG scenes in two subfolders, one JPEG and one
/// preprocessed .npy.
fn make_images(dir: &Path) {
    let scenes = Scenes::load(Path::new(env!("CARGO_MANIFEST_DIR")).join(SCENES)).unwrap();
    for i in 0..9 {
        let img = tensor_to_rgb(scenes.input(i), &Normalization::Scenes).unwrap();
        let sub = dir.join(format!("part{}", i % 2));
        std::fs::create_dir_all(&sub).unwrap();
        img.save(sub.join(format!("scene{i:02}.png"))).unwrap();
    }
    tensor_to_rgb(scenes.input(9), &Normalization::Scenes).unwrap().save(dir.join("scene09.jpg")).unwrap();
    write_npy(&dir.join("scene10.npy"), &scenes.input(10).to_owned().into_dyn()).unwrap();
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
}

fn attribute_images(images: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = rsp();
    c.args(["attribute", "--model", MODEL, "--target", "predicted", "--images"])
        .arg(images)
        .arg("--out-dir")
        .arg(out)
        .args(extra);
    c
}

/// Every file under `dir` except manifests, by relative path.
fn outputs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if !p.file_name().unwrap().to_str().unwrap().starts_with("manifest") {
                out.insert(p.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A manifest's lines without their timings (the only part that may differ).
fn manifest(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("timings");
            v
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_same_run(a: &Path, b: &Path) {
    let (fa, fb) = (outputs(a), outputs(b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (name, bytes) in &fa {
        assert!(bytes == &fb[name], "{name} differs");
    }
    assert_eq!(manifest(&a.join("manifest.jsonl")), manifest(&b.join("manifest.jsonl")));
}

#[test]
fn a_folder_run_is_what_the_library_computes_and_its_manifest_says_so() {
    let scratch_dir = crate::common::scratch("scaling-plain");
    let dir = scratch_dir.path().to_path_buf();
    let images = dir.join("images");
    make_images(&images);
    let out = dir.join("out");
    let stdout = ok(attribute_images(&images, &out, &["--batch", "4"]).output().unwrap(), "folder run");
    assert!(stdout.contains("explained 11 of 11 images"), "{stdout}");
    let lines = manifest(&out.join("manifest.jsonl"));
    assert_eq!(lines.len(), 12);
    let names: Vec<&str> = lines[..11].iter().map(|v| v["image"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "the stable order is the order of names");
    assert!(names.contains(&"part1/scene03.png") && names.contains(&"scene09.jpg") && names.contains(&"scene10.npy"));
    let run = &lines[11];
    assert_eq!(
        (run["kind"].as_str(), run["inputs"].as_u64(), run["complete"].as_bool()),
        (Some("run"), Some(11), Some(true))
    );
    let model_sha = sha256(&std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(MODEL)).unwrap());

    // The same numbers through the library: the model's declared preprocessing
    // ((v − 0.3) / 0.3 at 64×64) and RSP with each image's top class.
    let net = Network::<f32>::load(Path::new(env!("CARGO_MANIFEST_DIR")).join(MODEL)).unwrap();
    for v in &lines[..11] {
        let name = v["image"].as_str().unwrap();
        let input = images.join(name);
        let x = if name.ends_with(".npy") {
            read_npy::<f32>(&input).unwrap().insert_axis(ndarray::Axis(0)).into_dimensionality().unwrap()
        } else {
            load_image(&input, Some((64, 64)), &Normalization::Scenes).unwrap()
        };
        let e = net.explain(&x, rsp::Target::Predicted, rsp::Method::default()).unwrap();
        let logits: Vec<f64> = e.logits.row(0).iter().map(|&l| f64::from(l)).collect();
        let top = (0..10).fold(0, |b, c| if logits[c] > logits[b] { c } else { b });
        assert_eq!(v["target"].as_u64(), Some(top as u64), "{name}");
        let recorded: Vec<f64> = v["logits"].as_array().unwrap().iter().map(|l| l.as_f64().unwrap()).collect();
        assert_eq!(recorded, logits, "{name}");
        assert_eq!(v["top"][0]["class"].as_u64(), Some(top as u64));
        let file = out.join(v["relevance"].as_str().unwrap());
        let r = read_npy::<f32>(&file).unwrap();
        assert_eq!(r, e.relevance.unwrap().index_axis_move(ndarray::Axis(0), 0).into_dyn(), "{name}");
        assert_eq!(v["relevance_sha256"].as_str().unwrap(), sha256(&std::fs::read(&file).unwrap()));
        let figure = std::fs::read(out.join(v["figure"].as_str().unwrap())).unwrap();
        assert_eq!(v["figure_sha256"].as_str().unwrap(), sha256(&figure));
        assert_eq!(v["input_sha256"].as_str().unwrap(), sha256(&std::fs::read(&input).unwrap()));
        assert_eq!(v["model_sha256"].as_str().unwrap(), model_sha);
        assert_eq!(v["method"], "rsp");
        assert_eq!(v["options"]["normalization"]["mean"], serde_json::json!([0.3, 0.3, 0.3]));
    }
    // A second run trusts everything and computes nothing.
    let again = ok(attribute_images(&images, &out, &[]).output().unwrap(), "rerun");
    assert!(again.contains("0 computed, 11 reused"), "{again}");
    // Another method is another run: nothing is reused.
    ok(attribute_images(&images, &out, &["--method", "gradient"]).output().unwrap(), "gradient into the same folder");
    let lines_g = manifest(&out.join("manifest.jsonl"));
    assert!(lines_g[..11].iter().all(|v| v["method"] == "gradient"));
}

#[test]
fn shards_by_flag_slurm_and_kubernetes_merge_into_the_unsharded_run() {
    let scratch_dir = crate::common::scratch("scaling-shards");
    let dir = scratch_dir.path().to_path_buf();
    let images = dir.join("images");
    make_images(&images);
    let (whole, sharded) = (dir.join("whole"), dir.join("sharded"));
    ok(attribute_images(&images, &whole, &["--batch", "4"]).output().unwrap(), "unsharded");
    // Three processes at once into one folder: one by flag, one as a Slurm
    // array task (--array=0-2), one as a Kubernetes indexed Job pod.
    let mut by_flag = attribute_images(&images, &sharded, &["--shard", "1/3", "--batch", "2"]);
    let mut slurm = attribute_images(&images, &sharded, &["--batch", "3"]);
    slurm.envs([("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_MIN", "0"), ("SLURM_ARRAY_TASK_COUNT", "3")]);
    let mut k8s = attribute_images(&images, &sharded, &[]);
    k8s.envs([("JOB_COMPLETION_INDEX", "2"), ("RSP_SHARD_COUNT", "3")]);
    let children: Vec<_> = [&mut by_flag, &mut slurm, &mut k8s]
        .into_iter()
        .map(|c| c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap())
        .collect();
    for (k, child) in children.into_iter().enumerate() {
        let stdout = ok(child.wait_with_output().unwrap(), "shard");
        let expected = format!("explained {} of 11 images (shard {}/3", [4, 4, 3][k], k + 1);
        assert!(stdout.contains(&expected), "{stdout}");
    }
    let shard_manifests: Vec<PathBuf> =
        (1..=3).map(|i| sharded.join(format!("manifest.shard-{i}-of-3.jsonl"))).collect();
    let mut merge = rsp();
    merge.arg("merge").args(&shard_manifests).arg("--out").arg(sharded.join("manifest.jsonl"));
    ok(merge.output().unwrap(), "merge manifests");
    for m in &shard_manifests {
        std::fs::rename(m, dir.join(m.file_name().unwrap())).unwrap();
    }
    assert_same_run(&whole, &sharded);

    // Incomplete sets are refused.
    let moved: Vec<PathBuf> = shard_manifests.iter().map(|m| dir.join(m.file_name().unwrap())).collect();
    let mut missing = rsp();
    missing.arg("merge").args(&moved[..2]);
    fails_with(missing.output().unwrap(), "shard 3/3 is missing", "missing shard");
    let mut twice = rsp();
    twice.arg("merge").args(&moved).arg(&moved[0]);
    fails_with(twice.output().unwrap(), "appears twice", "repeated shard");
}

#[test]
fn a_killed_run_resumes_to_the_files_of_an_uninterrupted_one() {
    let scratch_dir = crate::common::scratch("scaling-resume");
    let dir = scratch_dir.path().to_path_buf();
    let images = dir.join("images");
    make_images(&images);
    let whole = dir.join("whole");
    ok(attribute_images(&images, &whole, &[]).output().unwrap(), "uninterrupted");

    // The states a kill can leave: a torn last manifest line, a half-written
    // relevance file, a missing figure. Exactly those three images are redone.
    let damaged = dir.join("damaged");
    ok(attribute_images(&images, &damaged, &[]).output().unwrap(), "first run");
    let path = damaged.join("manifest.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let torn = format!("{}\n{}", lines[..10].join("\n"), &lines[10][..lines[10].len() / 2]);
    std::fs::write(&path, torn).unwrap();
    let first: Value = serde_json::from_str(lines[0]).unwrap();
    let npy = damaged.join(first["relevance"].as_str().unwrap());
    let bytes = std::fs::read(&npy).unwrap();
    std::fs::write(&npy, &bytes[..bytes.len() / 2]).unwrap();
    let second: Value = serde_json::from_str(lines[1]).unwrap();
    std::fs::remove_file(damaged.join(second["figure"].as_str().unwrap())).unwrap();
    let stdout = ok(attribute_images(&images, &damaged, &[]).output().unwrap(), "resume");
    assert!(stdout.contains("3 computed, 8 reused"), "{stdout}");
    assert_same_run(&whole, &damaged);

    // A real kill, wherever it lands.
    let killed = dir.join("killed");
    let mut child = attribute_images(&images, &killed, &["--batch", "1"]).spawn().unwrap();
    let journal = killed.join("manifest.jsonl");
    for _ in 0..2000 {
        if std::fs::read_to_string(&journal).is_ok_and(|t| t.lines().count() >= 2) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().ok();
    child.wait().unwrap();
    ok(attribute_images(&images, &killed, &[]).output().unwrap(), "resume after kill");
    assert_same_run(&whole, &killed);
}

fn evaluate(extra: &[&str]) -> String {
    let mut c = rsp();
    c.args(["evaluate", "--model", MODEL, "--scenes", SCENES, "--limit", "23", "--json"]).args(extra);
    ok(c.output().unwrap(), "evaluate")
}

#[test]
fn evaluate_shards_merge_to_the_unsharded_report_bit_for_bit() {
    let scratch_dir = crate::common::scratch("scaling-evaluate");
    let dir = scratch_dir.path().to_path_buf();
    for method in ["rsp", "gradcam"] {
        let whole = evaluate(&["--method", method]);
        let whole_json = whole.lines().last().unwrap();
        let mut files = Vec::new();
        for i in 1..=4 {
            let shard = format!("{i}/4");
            let out = if i == 2 {
                let mut c = rsp();
                c.args([
                    "evaluate", "--model", MODEL, "--scenes", SCENES, "--limit", "23", "--json", "--method", method,
                ]);
                c.envs([("SLURM_ARRAY_TASK_ID", "6"), ("SLURM_ARRAY_TASK_MIN", "5"), ("SLURM_ARRAY_TASK_COUNT", "4")]);
                ok(c.output().unwrap(), "slurm shard")
            } else {
                evaluate(&["--method", method, "--shard", &shard])
            };
            let v: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
            assert_eq!(v["shard"].as_str(), Some(shard.as_str()));
            let file = dir.join(format!("{method}-{i}.txt"));
            std::fs::write(&file, out).unwrap();
            files.push(file);
        }
        let mut merge = rsp();
        merge.arg("merge").arg("--json").args(&files);
        let merged = ok(merge.output().unwrap(), "merge");
        assert_eq!(merged.lines().last().unwrap(), whole_json, "{method}");
        let human: Vec<&str> = whole.lines().filter(|l| l.starts_with("pointing") || l.starts_with("mIoU")).collect();
        for line in human {
            assert!(merged.contains(line), "{method}: {line} missing from {merged}");
        }
        if method == "rsp" {
            // A shard of another method, or of another scene selection, is not part of this run.
            let other = dir.join("other.txt");
            std::fs::write(&other, evaluate(&["--method", "gradient", "--shard", "3/4"])).unwrap();
            let mut mixed = rsp();
            mixed.arg("merge").args([&files[0], &files[1], &other, &files[3]]);
            fails_with(mixed.output().unwrap(), "`method` differs", "another method");
            let mut c = rsp();
            c.args([
                "evaluate", "--model", MODEL, "--scenes", SCENES, "--limit", "22", "--json", "--method", "rsp",
                "--shard", "3/4",
            ]);
            std::fs::write(&other, ok(c.output().unwrap(), "limit 22")).unwrap();
            let mut mixed = rsp();
            mixed.arg("merge").args([&files[0], &files[1], &other, &files[3]]);
            fails_with(mixed.output().unwrap(), "differs", "another selection");
            let mut missing = rsp();
            missing.arg("merge").args(&files[1..]);
            fails_with(missing.output().unwrap(), "shard 1/4 is missing", "missing");
        }
    }
}

#[test]
fn faithfulness_shards_merge_to_the_unsharded_report_bit_for_bit() {
    let scratch_dir = crate::common::scratch("scaling-faithfulness");
    let dir = scratch_dir.path().to_path_buf();
    let run = |extra: &[&str]| {
        let mut c = rsp();
        c.args(["evaluate", "--model", MODEL, "--scenes", SCENES, "--limit", "5", "--json", "--method", "rsp"])
            .args(["--faithfulness", "--flip-step", "512", "--seed", "3"])
            .args(extra);
        ok(c.output().unwrap(), "evaluate --faithfulness")
    };
    let whole = run(&[]);
    let whole_json: Value = serde_json::from_str(whole.lines().last().unwrap()).unwrap();
    for key in ["deletion_auc", "insertion_auc", "lerf_auc", "positive_mass", "hostile_mass", "random_logit_spearman"] {
        assert!(whole_json[key].is_f64(), "{key} in {whole_json}");
    }
    let files: Vec<PathBuf> = (1..=3)
        .map(|i| {
            let file = dir.join(format!("shard-{i}.txt"));
            std::fs::write(&file, run(&["--shard", &format!("{i}/3")])).unwrap();
            file
        })
        .collect();
    let mut merge = rsp();
    merge.arg("merge").arg("--json").args(&files);
    let merged = ok(merge.output().unwrap(), "merge");
    assert_eq!(merged.lines().last().unwrap(), whole.lines().last().unwrap());
    for line in whole.lines().filter(|l| l.contains("AUC") || l.contains("mass") || l.contains("random-logit")) {
        assert!(merged.contains(line), "{line} missing from {merged}");
    }
    // A shard without the measures, or with another step, is not part of this run.
    let other = dir.join("other.txt");
    let mut c = rsp();
    c.args(["evaluate", "--model", MODEL, "--scenes", SCENES, "--limit", "5", "--json", "--method", "rsp"])
        .args(["--shard", "2/3"]);
    std::fs::write(&other, ok(c.output().unwrap(), "plain shard")).unwrap();
    let mut mixed = rsp();
    mixed.arg("merge").args([&files[0], &other, &files[2]]);
    fails_with(mixed.output().unwrap(), "`faithfulness_options` differs", "without the measures");
}

#[test]
fn bad_folder_runs_are_one_line_errors() {
    let scratch_dir = crate::common::scratch("scaling-errors");
    let dir = scratch_dir.path().to_path_buf();
    let images = dir.join("images");
    make_images(&images);
    let list = images.join("list.txt");
    std::fs::write(&list, "part0/scene00.png\n../escape.png\n").unwrap();
    let npy_list = images.join("npy.txt");
    std::fs::write(&npy_list, "# preprocessed\nscene10.npy\n").unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = dir.join("out");
    let cases: Vec<(&str, Command, &str)> = vec![
        ("list entry outside", attribute_images(&list, &out, &[]), "inside the list's folder"),
        ("empty folder", attribute_images(&empty, &out, &[]), "no PNG, JPEG or .npy"),
        ("bad shard", attribute_images(&images, &out, &["--shard", "0/2"]), "I/N"),
        ("out-dir is the input folder", attribute_images(&images, &images, &[]), "must not be the --images folder"),
        (
            "two targets",
            {
                let mut c = rsp();
                c.args(["attribute", "--model", MODEL, "--target", "1,2", "--images"])
                    .arg(&images)
                    .arg("--out-dir")
                    .arg(&out);
                c
            },
            "one class or `predicted`",
        ),
        ("bad size", attribute_images(&images, &out, &["--size", "64"]), "HxW"),
        ("bad normalisation", attribute_images(&images, &out, &["--normalize", "0.5,0.5/0,1,1"]), "normali"),
        ("wrong size for the .npy", attribute_images(&npy_list, &out, &["--size", "32x32"]), "scene10.npy"),
        (
            "kubernetes without a count",
            {
                let mut c = attribute_images(&images, &out, &[]);
                c.env("JOB_COMPLETION_INDEX", "0");
                c
            },
            "RSP_SHARD_COUNT",
        ),
    ];
    for (what, mut c, word) in cases {
        fails_with(c.output().unwrap(), word, what);
    }
}

//! `rsp attribute --images DIR_OR_LIST --out-dir OUT`: explain every image of
//! a folder (or a list) into per-image relevance files and figures plus a
//! manifest, in batches, resumably, and optionally as one shard of many.
//!
//! Crash safety: every output file is written atomically (temporary file,
//! then rename), and an image's manifest line is appended only after its files
//! are in place. A rerun trusts an image only if its manifest line matches the
//! run (model, method, options), the input's hash and the hashes of both
//! output files; anything else (a torn last line, a file from a killed run, a
//! changed input) is redone. Layout and formats: docs/scaling.md.

use crate::{load_model, progress_bar, Limits};
use rayon::prelude::*;
use rsp::image_io::{load_image, Normalization};
use rsp::io::npy::{read_npy, write_npy};
use rsp::network::InputNormalization;
use rsp::render::Scale;
use rsp::shard::Shard;
use rsp::{Float, Method, Network, RspError, Target};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

/// Input files the folder mode reads.
const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "npy"];
/// A list file larger than this is refused (about ten million lines).
const MAX_LIST_BYTES: u64 = 1 << 30;
/// Folders nested deeper than this are refused (a loop of bind mounts).
const MAX_DEPTH: usize = 64;
/// How many classes the manifest lists under `top`.
const TOP_CLASSES: usize = 5;
/// The scale of the figures: the 99.5th percentile of |h| saturates.
const FIGURE_SCALE: Scale = Scale::Percentile(99.5);

/// What `rsp attribute --images` was asked to do.
pub struct FolderArgs {
    pub model: PathBuf,
    pub arch: Option<String>,
    pub images: PathBuf,
    pub out_dir: PathBuf,
    pub method: Method,
    /// The method as the CLI names it, recorded in the manifest.
    pub method_name: String,
    /// `None`: each image's top class.
    pub target: Option<usize>,
    pub batch: usize,
    pub size: Option<(usize, usize)>,
    pub normalize: Option<InputNormalization>,
    /// Method options as recorded in the manifest (start, hostile classes, ε).
    pub method_options: Value,
    pub shard: Shard,
    pub limits: Limits,
}

/// One input: its name (path relative to the folder or list, `/`-separated)
/// and where it is.
struct Item {
    name: String,
    path: PathBuf,
    stem: String,
}

impl Item {
    fn relevance(&self) -> String {
        format!("{}.relevance.npy", self.stem)
    }
    fn figure(&self) -> String {
        format!("{}.heatmap.png", self.stem)
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> RspError + '_ {
    move |source| RspError::Io { path: path.display().to_string(), source }
}

fn has_input_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The `/`-joined name of a relative path of plain components.
fn name_of(rel: &Path, shown: &str) -> Result<String, RspError> {
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(|| {
                RspError::InvalidArgument(format!("{shown}: file names must be UTF-8 (the manifest records them)"))
            })?),
            Component::CurDir => {}
            _ => {
                return Err(RspError::InvalidArgument(format!(
                    "{shown}: a list entry must be a path inside the list's folder (no `..`, outputs mirror it)"
                )))
            }
        }
    }
    if parts.is_empty() {
        return Err(RspError::InvalidArgument(format!("{shown}: not a file name")));
    }
    Ok(parts.join("/"))
}

fn walk(root: &Path, dir: &Path, skip: Option<&Path>, depth: usize, out: &mut Vec<Item>) -> Result<(), RspError> {
    if depth > MAX_DEPTH {
        return Err(RspError::InvalidArgument(format!("{}: folders nested more than {MAX_DEPTH} deep", dir.display())));
    }
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue; // hidden files, and the temporary files of atomic writes
        }
        // Symbolic links are followed to files, never to folders (no loops).
        let kind = entry.file_type().map_err(io_error(&path))?;
        if kind.is_dir() {
            if skip.is_some_and(|s| path.canonicalize().is_ok_and(|p| p == s)) {
                continue; // the output folder inside the input folder
            }
            walk(root, &path, skip, depth + 1, out)?;
        } else if has_input_extension(&path) && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            let rel = path.strip_prefix(root).expect("walked from the root");
            let name = name_of(rel, &path.display().to_string())?;
            out.push(Item { stem: strip_extension(&name), name, path });
        }
    }
    Ok(())
}

fn strip_extension(name: &str) -> String {
    match name.rfind('.') {
        Some(dot) if dot > name.rfind('/').map_or(0, |s| s + 1) => name[..dot].to_string(),
        _ => name.to_string(),
    }
}

/// The inputs in their stable order (by name), from a folder (recursively)
/// or a list file (one path per line, relative to the list's folder; blank
/// lines and `#` comments skipped).
fn collect_inputs(images: &Path, out_dir: &Path) -> Result<(PathBuf, Vec<Item>), RspError> {
    let meta = std::fs::metadata(images).map_err(io_error(images))?;
    let mut items = Vec::new();
    let root = if meta.is_dir() {
        let skip = out_dir.canonicalize().ok();
        if skip.is_some() && skip == images.canonicalize().ok() {
            return Err(RspError::InvalidArgument(
                "--out-dir must not be the --images folder (the outputs would become inputs)".into(),
            ));
        }
        walk(images, images, skip.as_deref(), 0, &mut items)?;
        images.to_path_buf()
    } else {
        if meta.len() > MAX_LIST_BYTES {
            return Err(RspError::InvalidArgument(format!(
                "{}: a list of images is at most {MAX_LIST_BYTES} bytes, this one has {}",
                images.display(),
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(images).map_err(io_error(images))?;
        let base = images.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let base_abs = base.canonicalize().map_err(io_error(base))?;
        for (k, line) in text.lines().enumerate() {
            let entry = line.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let shown = format!("{} line {}", images.display(), k + 1);
            let p = Path::new(entry);
            let rel = if p.is_absolute() {
                p.strip_prefix(&base_abs).map_err(|_| {
                    RspError::InvalidArgument(format!("{shown}: an absolute entry must lie inside the list's folder"))
                })?
            } else {
                p
            };
            let name = name_of(rel, &shown)?;
            if !has_input_extension(rel) {
                return Err(RspError::InvalidArgument(format!(
                    "{shown}: `{name}` is not a PNG, JPEG or .npy file (by its extension)"
                )));
            }
            items.push(Item { stem: strip_extension(&name), path: base.join(rel), name });
        }
        base.to_path_buf()
    };
    if items.is_empty() {
        return Err(RspError::InvalidArgument(format!("{}: no PNG, JPEG or .npy files to explain", images.display())));
    }
    items.sort_by(|a, b| a.name.cmp(&b.name));
    let mut stems: HashMap<&str, &str> = HashMap::new();
    for item in &items {
        if let Some(other) = stems.insert(&item.stem, &item.name) {
            return Err(RspError::InvalidArgument(format!(
                "`{other}` and `{}` would write the same output files; rename one",
                item.name
            )));
        }
    }
    // Outputs written next to the inputs must never replace one.
    if root.canonicalize().ok() == out_dir.canonicalize().ok() {
        let names: HashSet<&str> = items.iter().map(|i| i.name.as_str()).collect();
        if let Some(i) =
            items.iter().find(|i| names.contains(i.relevance().as_str()) || names.contains(i.figure().as_str()))
        {
            return Err(RspError::InvalidArgument(format!("an output of `{}` would replace an input", i.name)));
        }
    }
    Ok((root, items))
}

/// The SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, RspError> {
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io_error(path))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The manifest a shard writes (`manifest.jsonl` for the whole run).
pub fn manifest_name(shard: Shard) -> String {
    if shard.is_whole() {
        "manifest.jsonl".to_string()
    } else {
        format!("manifest.shard-{}-of-{}.jsonl", shard.index(), shard.count())
    }
}

/// The fields that must agree for a result to be reused or merged.
pub const IDENTITY: [&str; 4] = ["model_sha256", "method", "options", "dtype"];

/// The image lines of every manifest in `out_dir` (later lines win), as
/// candidates for reuse. Unparsable lines (a torn last line) are ignored.
fn previous_entries(out_dir: &Path) -> Result<HashMap<String, Value>, RspError> {
    let mut found = HashMap::new();
    let Ok(dir) = std::fs::read_dir(out_dir) else { return Ok(found) };
    let mut manifests: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("manifest") && n.ends_with(".jsonl"))
        })
        .collect();
    manifests.sort();
    for path in manifests {
        let text = std::fs::read(&path).map_err(io_error(&path))?;
        for line in text.split(|&b| b == b'\n') {
            if let Ok(v) = serde_json::from_slice::<Value>(line) {
                if v["kind"] == "image" {
                    if let Some(name) = v["image"].as_str() {
                        found.insert(name.to_string(), v);
                    }
                }
            }
        }
    }
    Ok(found)
}

/// Whether `entry` is a complete, trustworthy result for this run.
fn reusable(entry: &Value, identity: &Map<String, Value>, input_sha: &str, out_dir: &Path) -> bool {
    let same_run = IDENTITY.iter().all(|k| entry.get(*k) == identity.get(*k));
    let file_ok = |file: &str, sha: &str| {
        entry[file].as_str().is_some_and(|f| sha256_file(&out_dir.join(f)).is_ok_and(|h| entry[sha] == h.as_str()))
    };
    same_run
        && entry["input_sha256"] == input_sha
        && file_ok("relevance", "relevance_sha256")
        && file_ok("figure", "figure_sha256")
}

/// Appends lines and forces them to disk: a kill leaves at most a torn last line.
fn append_lines<'a>(
    file: &mut std::fs::File,
    values: impl Iterator<Item = &'a Value>,
    path: &Path,
) -> Result<(), RspError> {
    let mut text = String::new();
    for v in values {
        text.push_str(&serde_json::to_string(v).map_err(|e| RspError::InvalidArgument(e.to_string()))?);
        text.push('\n');
    }
    file.write_all(text.as_bytes()).map_err(io_error(path))?;
    file.sync_data().map_err(io_error(path))
}

fn write_manifest(path: &Path, lines: &[&Value]) -> Result<(), RspError> {
    rsp::io::atomic::write_atomic(path, |w| {
        for v in lines {
            serde_json::to_writer(&mut *w, v).map_err(std::io::Error::other)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// How images become tensors: size, channels and normalisation.
struct Preprocess {
    channels: usize,
    size: (usize, usize),
    normalization: Normalization,
    recorded: Value,
}

fn preprocess_of<T: Float>(net: &Network<T>, args: &FolderArgs) -> Result<Preprocess, RspError> {
    let declared = net.input_shape();
    let size = args
        .size
        .or_else(|| declared.map(|s| (s[1], s[2])))
        .ok_or_else(|| RspError::InvalidArgument("the model declares no input size: pass --size HxW".into()))?;
    let channels = declared.map_or(3, |s| s[0]);
    let norm = args.normalize.clone().or_else(|| net.input_normalization().cloned()).ok_or_else(|| {
        RspError::InvalidArgument(
            "the model declares no input normalisation: pass --normalize (imagenet, none or MEAN,MEAN,MEAN/STD,STD,STD)"
                .into(),
        )
    })?;
    norm.validate()?;
    let normalization = match (norm.mean.as_slice(), norm.std.as_slice()) {
        (&[m0, m1, m2], &[s0, s1, s2]) => Normalization::Custom { mean: [m0, m1, m2], std: [s0, s1, s2] },
        _ if channels != 3 => Normalization::None, // images need 3 channels; refused per image
        _ => {
            return Err(RspError::InvalidArgument(format!(
                "images have 3 channels, the normalisation gives {}",
                norm.mean.len()
            )))
        }
    };
    Ok(Preprocess {
        channels,
        size,
        normalization,
        recorded: json!({ "size": [size.0, size.1], "normalization": { "mean": shortest(&norm.mean), "std": shortest(&norm.std) } }),
    })
}

/// f32 statistics as the decimals they were written as (0.3, not 0.30000001192092896).
fn shortest(values: &[f32]) -> Vec<f64> {
    values.iter().map(|v| v.to_string().parse::<f64>().unwrap_or(f64::from(*v))).collect()
}

/// Reads one input as a `(C, H, W)` tensor of the run's shape.
fn load_input<T: Float>(item: &Item, pre: &Preprocess) -> Result<ndarray::Array3<T>, RspError> {
    let (h, w) = pre.size;
    let shape = [pre.channels, h, w];
    let is_npy = item.path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let x: ndarray::ArrayD<T> = if is_npy {
        read_npy::<T>(&item.path)?
    } else {
        if pre.channels != 3 {
            return Err(RspError::InvalidArgument(format!(
                "{}: the model takes {} channels, images give 3; pass .npy inputs",
                item.name, pre.channels
            )));
        }
        let size = (u32::try_from(h).unwrap_or(u32::MAX), u32::try_from(w).unwrap_or(u32::MAX));
        load_image(&item.path, Some(size), &pre.normalization)?.mapv(|v| T::of(f64::from(v))).into_dyn()
    };
    let found = x.shape().to_vec();
    let x = if found.len() == 4 && found[0] == 1 { x.index_axis_move(ndarray::Axis(0), 0) } else { x };
    if x.shape() != shape {
        return Err(RspError::Shape {
            context: item.path.display().to_string(),
            expected: format!("a {}×{}×{} tensor (or 1×{0}×{1}×{2})", shape[0], shape[1], shape[2]),
            found,
        });
    }
    x.into_dimensionality().map_err(|_| RspError::InvalidArgument("unreachable: shape checked".into()))
}

/// Runs the folder mode.
pub fn run<T: Float>(args: &FolderArgs) -> Result<(), RspError> {
    if args.batch == 0 {
        return Err(RspError::InvalidArgument("--batch must be at least 1".into()));
    }
    let started = Instant::now();
    let mut net = load_model::<T>(&args.model, args.arch.as_deref())?;
    args.limits.apply(&mut net)?;
    let pre = preprocess_of(&net, args)?;
    let (_, items) = collect_inputs(&args.images, &args.out_dir)?;
    std::fs::create_dir_all(&args.out_dir).map_err(io_error(&args.out_dir))?;
    let mut options = args.method_options.clone();
    if let (Some(o), Some(p)) = (options.as_object_mut(), pre.recorded.as_object()) {
        o.extend(p.clone());
        o.insert("target".into(), args.target.map_or(json!("predicted"), |t| json!(t)));
    }
    let mut identity = Map::new();
    identity.insert("model_sha256".into(), json!(sha256_file(&args.model)?));
    identity.insert("method".into(), json!(args.method_name));
    identity.insert("options".into(), options);
    identity.insert("dtype".into(), json!(T::NAME));

    let mine: Vec<&Item> = items.iter().enumerate().filter(|(k, _)| args.shard.owns(*k)).map(|(_, i)| i).collect();
    let manifest_path = args.out_dir.join(manifest_name(args.shard));
    let previous = previous_entries(&args.out_dir)?;
    let mut entries: HashMap<&str, Value> = HashMap::new();
    let mut pending = Vec::new();
    for item in &mine {
        let input_sha = sha256_file(&item.path)?;
        match previous.get(&item.name) {
            Some(e) if reusable(e, &identity, &input_sha, &args.out_dir) => {
                entries.insert(&item.name, e.clone());
            }
            _ => pending.push((*item, input_sha)),
        }
    }
    let reused = entries.len();
    // Start the journal with only what was verified: stale or torn lines go.
    let kept: Vec<&Value> = mine.iter().filter_map(|i| entries.get(i.name.as_str())).collect();
    write_manifest(&manifest_path, &kept)?;
    let mut journal =
        std::fs::OpenOptions::new().append(true).open(&manifest_path).map_err(io_error(&manifest_path))?;

    let bar = progress_bar(pending.len(), "attribute", "images");
    for chunk in pending.chunks(args.batch) {
        let t0 = Instant::now();
        let inputs = chunk.iter().map(|(item, _)| load_input::<T>(item, &pre)).collect::<Result<Vec<_>, _>>()?;
        let views: Vec<_> = inputs.iter().map(|x| x.view()).collect();
        let x = ndarray::stack(ndarray::Axis(0), &views).map_err(|e| RspError::InvalidArgument(e.to_string()))?;
        let t1 = Instant::now();
        let target = args.target.map_or(Target::Predicted, Target::Single);
        let e = net.explain(&x, target, &args.method)?;
        let t2 = Instant::now();
        // In parallel: each file is synced before its rename, and those waits overlap.
        let write_one = |(n, (item, _)): (usize, &(&Item, String))| -> Result<_, RspError> {
            let (relevance, figure) = (item.relevance(), item.figure());
            let (relevance_path, figure_path) = (args.out_dir.join(&relevance), args.out_dir.join(&figure));
            if let Some(parent) = relevance_path.parent() {
                std::fs::create_dir_all(parent).map_err(io_error(parent))?;
            }
            let map = match &e.relevance {
                Some(r) => r.index_axis(ndarray::Axis(0), n).to_owned().into_dyn(),
                None => e.heatmaps.index_axis(ndarray::Axis(0), n).to_owned().into_dyn(),
            };
            write_npy(&relevance_path, &map)?;
            let image =
                e.heatmap_image(n, FIGURE_SCALE).ok_or_else(|| RspError::InvalidArgument("no heatmap".into()))?;
            rsp::render::save_png(&image, &figure_path)?;
            Ok((relevance, sha256_file(&relevance_path)?, figure, sha256_file(&figure_path)?))
        };
        let written = chunk.par_iter().enumerate().map(write_one).collect::<Result<Vec<_>, _>>()?;
        let t3 = Instant::now();
        let share = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3 / chunk.len() as f64;
        let mut lines = Vec::with_capacity(chunk.len());
        for (n, ((item, input_sha), (relevance, relevance_sha, figure, figure_sha))) in
            chunk.iter().zip(written).enumerate()
        {
            let logits: Vec<f64> = e.logits.row(n).iter().map(|v| v.to_f64_exact()).collect();
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            let top: Vec<Value> =
                order.iter().take(TOP_CLASSES).map(|&c| json!({ "class": c, "logit": logits[c] })).collect();
            let mut v = json!({
                "kind": "image",
                "image": item.name,
                "input_sha256": input_sha,
                "target": e.targets[n],
                "top": top,
                "logits": logits,
                "relevance": relevance,
                "relevance_sha256": relevance_sha,
                "figure": figure,
                "figure_sha256": figure_sha,
                "timings": { "load_ms": share(t0, t1), "explain_ms": share(t1, t2), "write_ms": share(t2, t3) },
            });
            if let Some(o) = v.as_object_mut() {
                o.extend(identity.clone());
            }
            lines.push((&item.name, v));
        }
        append_lines(&mut journal, lines.iter().map(|(_, v)| v), &manifest_path)?;
        bar.inc(lines.len() as u64);
        for (name, v) in lines {
            entries.insert(name, v);
        }
    }
    bar.finish_and_clear();
    drop(journal);
    // The finished manifest: the shard's images in the stable order, then the run line.
    let mut run_line = json!({
        "kind": "run",
        "shard": args.shard.to_string(),
        "inputs": items.len(),
        "images": mine.len(),
        "complete": true,
        "timings": { "elapsed_s": started.elapsed().as_secs_f64(), "computed": pending.len(), "reused": reused },
    });
    if let Some(o) = run_line.as_object_mut() {
        o.extend(identity.clone());
    }
    let mut lines: Vec<&Value> = mine.iter().filter_map(|i| entries.get(i.name.as_str())).collect();
    lines.push(&run_line);
    write_manifest(&manifest_path, &lines)?;
    println!(
        "explained {} of {} images (shard {}; {} computed, {reused} reused) into {}; manifest {}",
        mine.len(),
        items.len(),
        args.shard,
        pending.len(),
        args.out_dir.display(),
        manifest_path.display()
    );
    Ok(())
}

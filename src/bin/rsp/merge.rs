//! `rsp merge FILE…`: the result of a whole run from its shards' outputs.
//!
//! Two kinds of input, told apart by their content:
//! - the outputs of `rsp evaluate --shard I/N --json` (their last JSON line,
//!   `"kind": "evaluate-shard"`, carries every pair's outcome): merged into
//!   the report of the unsharded run, bit for bit (the pairs are summed in
//!   scene order, as one run sums them);
//! - the manifests of `rsp attribute --images … --shard I/N`: merged into the
//!   manifest one unsharded run writes (image lines in the stable order, then
//!   the run line).
//!
//! A set with a missing, repeated or mismatched shard is refused.

use crate::folder::IDENTITY;
use rsp::eval::benchmark::{PairScore, Report};
use rsp::shard::Shard;
use rsp::RspError;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Inputs larger than this are refused (a manifest line is ~1 KB).
const MAX_INPUT_BYTES: u64 = 4 << 30;

fn invalid(text: String) -> RspError {
    RspError::InvalidArgument(text)
}

fn read(path: &Path) -> Result<String, RspError> {
    let io = |source| RspError::Io { path: path.display().to_string(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_INPUT_BYTES {
        return Err(invalid(format!("{}: {len} bytes is more than a shard's output can be", path.display())));
    }
    std::fs::read_to_string(path).map_err(|source| RspError::Io { path: path.display().to_string(), source })
}

fn shard_of(v: &Value, path: &Path) -> Result<Shard, RspError> {
    v["shard"].as_str().ok_or_else(|| invalid(format!("{}: the output records no shard", path.display())))?.parse()
}

/// Checks that `shards` are exactly `1/N … N/N`, once each, with one `N`.
fn check_complete(shards: &[(Shard, &Path)]) -> Result<usize, RspError> {
    let count = shards[0].0.count();
    let mut seen: BTreeMap<usize, &Path> = BTreeMap::new();
    for (s, path) in shards {
        if s.count() != count {
            return Err(invalid(format!(
                "{} is shard {s} but {} is shard {}: the shards come from runs split differently",
                path.display(),
                shards[0].1.display(),
                shards[0].0
            )));
        }
        if let Some(first) = seen.insert(s.index(), path) {
            return Err(invalid(format!("shard {s} appears twice: {} and {}", first.display(), path.display())));
        }
    }
    if let Some(missing) = (1..=count).find(|i| !seen.contains_key(i)) {
        return Err(invalid(format!("shard {missing}/{count} is missing")));
    }
    Ok(count)
}

fn check_same(first: &Value, first_path: &Path, other: &Value, path: &Path, keys: &[&str]) -> Result<(), RspError> {
    for key in keys {
        if first.get(*key) != other.get(*key) {
            return Err(invalid(format!(
                "{} and {} come from different runs: their `{key}` differs",
                first_path.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

/// The keys that make evaluate shards parts of one run.
const EVALUATE_IDENTITY: [&str; 7] =
    ["model_sha256", "scenes_sha256", "method", "dtype", "options", "scenes_total", "faithfulness_options"];

fn merge_evaluate(shards: Vec<(PathBuf, Value)>, json_out: bool) -> Result<String, RspError> {
    let ids: Vec<(Shard, &Path)> =
        shards.iter().map(|(p, v)| shard_of(v, p).map(|s| (s, p.as_path()))).collect::<Result<_, _>>()?;
    check_complete(&ids)?;
    let (first_path, first) = &shards[0];
    let total = first["scenes_total"]
        .as_u64()
        .ok_or_else(|| invalid(format!("{}: no `scenes_total`", first_path.display())))? as usize;
    let mut pairs: Vec<PairScore> = Vec::new();
    for ((path, v), (shard, _)) in shards.iter().zip(&ids) {
        check_same(first, first_path, v, path, &EVALUATE_IDENTITY)?;
        let mine: Vec<PairScore> = serde_json::from_value(v["pair_scores"].clone())
            .map_err(|e| invalid(format!("{}: `pair_scores`: {e}", path.display())))?;
        if v["scenes"].as_u64() != Some(shard.share_of(total) as u64) {
            return Err(invalid(format!(
                "{}: shard {shard} of {total} scenes must hold {} scenes, it records {}",
                path.display(),
                shard.share_of(total),
                v["scenes"]
            )));
        }
        if let Some(p) = mine.iter().find(|p| p.scene >= total || !shard.owns(p.scene)) {
            return Err(invalid(format!("{}: scene {} does not belong to shard {shard}", path.display(), p.scene)));
        }
        pairs.extend(mine);
    }
    // One run sums its pairs in scene order (slot order within a scene).
    pairs.sort_by_key(|p| p.scene);
    let method = first["method"].as_str().unwrap_or_default().to_string();
    let report = Report::from_pairs(method, total, &pairs);
    let mut out = String::new();
    out.push_str(&format!(
        "merged {} shards: {total} scenes, {} pairs, {} in scenes with ≥ 2 objects\n",
        ids.len(),
        report.pairs,
        report.hostile_pairs
    ));
    out.push_str(&format!("method: {} ({})\n", report.method, first["dtype"].as_str().unwrap_or("?")));
    out.push_str(&format!("pointing game:         {:.4}\n", report.pointing_game));
    if report.hostile_pairs == 0 {
        out.push_str("hostile pointing game: n/a (no scene with ≥ 2 objects)\n");
    } else {
        out.push_str(&format!("hostile pointing game: {:.4}\n", report.hostile_pointing_game));
    }
    out.push_str(&format!("mIoU:                  {:.4}\n", report.miou));
    if let Some(f) = &report.faithfulness {
        f.lines().iter().for_each(|l| {
            out.push_str(l);
            out.push('\n');
        });
    }
    if json_out {
        out.push_str(&report.to_json());
        out.push('\n');
    }
    Ok(out)
}

fn merge_manifests(manifests: Vec<(PathBuf, Vec<Value>)>) -> Result<String, RspError> {
    let mut runs = Vec::new();
    for (path, lines) in &manifests {
        let run = lines.last().filter(|v| v["kind"] == "run" && v["complete"] == true).ok_or_else(|| {
            invalid(format!("{}: not a finished manifest (no final run line): run that shard again", path.display()))
        })?;
        runs.push((shard_of(run, path)?, path.as_path(), run));
    }
    let ids: Vec<(Shard, &Path)> = runs.iter().map(|(s, p, _)| (*s, *p)).collect();
    check_complete(&ids)?;
    let (_, first_path, first) = runs[0];
    let mut keys: Vec<&str> = IDENTITY.to_vec();
    keys.push("inputs");
    let inputs = first["inputs"].as_u64().unwrap_or(0) as usize;
    let mut images: BTreeMap<String, (&Value, &Path)> = BTreeMap::new();
    for ((shard, path, run), (_, lines)) in runs.iter().zip(&manifests) {
        check_same(first, first_path, run, path, &keys)?;
        let own = &lines[..lines.len() - 1];
        if own.len() != shard.share_of(inputs) || run["images"].as_u64() != Some(own.len() as u64) {
            return Err(invalid(format!(
                "{}: shard {shard} of {inputs} inputs must list {} images, it lists {}",
                path.display(),
                shard.share_of(inputs),
                own.len()
            )));
        }
        for v in own {
            check_same(first, first_path, v, path, &IDENTITY)?;
            let name =
                v["image"].as_str().ok_or_else(|| invalid(format!("{}: a line names no image", path.display())))?;
            if let Some((_, other)) = images.insert(name.to_string(), (v, path)) {
                return Err(invalid(format!("`{name}` is in both {} and {}", other.display(), path.display())));
            }
        }
    }
    let mut out = String::new();
    // The stable order of the inputs is the order of their names.
    for (v, _) in images.values() {
        out.push_str(&serde_json::to_string(v).map_err(|e| invalid(e.to_string()))?);
        out.push('\n');
    }
    let mut run = first.clone();
    run["shard"] = json!(Shard::WHOLE.to_string());
    run["images"] = json!(inputs);
    run["timings"] = json!({ "merged_shards": ids.len() });
    out.push_str(&serde_json::to_string(&run).map_err(|e| invalid(e.to_string()))?);
    out.push('\n');
    Ok(out)
}

/// Runs `rsp merge`; writes to `out` (atomically) or stdout.
pub fn run(files: &[PathBuf], json_out: bool, out: Option<&Path>) -> Result<(), RspError> {
    if files.is_empty() {
        return Err(invalid("rsp merge needs the shards' output files".into()));
    }
    let mut evaluations = Vec::new();
    let mut manifests = Vec::new();
    for path in files {
        let text = read(path)?;
        let values: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
        if values.iter().any(|v| v["kind"] == "image" || v["kind"] == "run") {
            manifests.push((path.clone(), values));
        } else if let Some(v) = values.into_iter().rev().find(|v| v["kind"] == "evaluate-shard") {
            evaluations.push((path.clone(), v));
        } else {
            return Err(invalid(format!(
                "{}: neither the output of `rsp evaluate --shard I/N --json` nor a manifest of `rsp attribute --images`",
                path.display()
            )));
        }
    }
    let text = match (evaluations.is_empty(), manifests.is_empty()) {
        (false, true) => merge_evaluate(evaluations, json_out)?,
        (true, false) => merge_manifests(manifests)?,
        _ => return Err(invalid("the files mix evaluation outputs and manifests".into())),
    };
    match out {
        Some(path) => rsp::io::atomic::write_atomic(path, |w| w.write_all(text.as_bytes())),
        None => {
            print!("{text}");
            std::io::stdout().flush().map_err(|source| RspError::Io { path: "stdout".into(), source })
        }
    }
}

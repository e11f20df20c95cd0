//! Every method × every measure on the public scenes: the table of
//! `docs/evaluation.md` and README, reproduced by one command.
//!
//! ```text
//! cargo run --release --example method_table [-- --limit N] [--method NAME]... [--dtype f32|f64]
//! ```
//!
//! For each method (default: every [`Method::ALL`] entry and zennit's
//! `epsilon-gamma-box` with the scenes' input range as its bounds) it runs the scenes benchmark with the faithfulness measures
//! (`rsp evaluate --faithfulness`, default options: step 128 pixels, baseline
//! 0, seed 0) on the embedded digits model, in f32 by default, and prints one
//! markdown table row per method as it finishes, then the whole table, then
//! one JSON line per method (the `rsp evaluate --json` line plus
//! `"wall_s"`, the method's wall time for the whole benchmark).

use rsp::eval::benchmark::{evaluate, EvalOptions, Report};
use rsp::eval::dataset::Scenes;
use rsp::eval::faithfulness::FaithfulnessOptions;
use rsp::{Float, Method, Network, RspError};
use std::process::ExitCode;
use std::time::Instant;

const MODEL: &[u8] = include_bytes!("../data/digits_vgg.safetensors");
const SCENES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/scenes_public.safetensors");

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), RspError> {
    let bad = |m: String| RspError::InvalidArgument(m);
    let mut limit = None;
    let mut methods: Vec<Method> = Method::ALL.to_vec();
    // ZBox's bounds: the scenes' normalised range, (0 − 0.3)/0.3 and (1 − 0.3)/0.3.
    methods.push(Method::EpsilonGammaBox { low: -1.0, high: 0.7 / 0.3 });
    let mut chosen: Vec<Method> = Vec::new();
    let mut f64_run = false;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| bad(format!("{flag} needs a value")))?;
        match flag.as_str() {
            "--limit" => limit = Some(value.parse().map_err(|_| bad(format!("--limit: `{value}`")))?),
            "--method" => chosen.push(value.parse()?),
            "--dtype" => {
                f64_run = match value.as_str() {
                    "f32" => false,
                    "f64" => true,
                    _ => return Err(bad(format!("--dtype: `{value}` (f32 or f64)"))),
                }
            }
            _ => return Err(bad(format!("unknown option {flag}"))),
        }
    }
    if !chosen.is_empty() {
        methods = chosen;
    }
    let scenes = Scenes::load(SCENES)?;
    let rows = if f64_run { table::<f64>(&scenes, &methods, limit)? } else { table::<f32>(&scenes, &methods, limit)? };
    println!();
    println!("{HEADER}");
    for (report, secs) in &rows {
        println!("{}", row(report, *secs));
    }
    for (report, secs) in &rows {
        let json = report.to_json();
        println!("{},\"wall_s\":{secs:.1}}}", &json[..json.len() - 1]);
    }
    Ok(())
}

const HEADER: &str = "| method | pointing game ↑ | hostile pointing ↑ | mIoU ↑ | deletion AUC ↓ | insertion AUC ↑ | LeRF AUC ↑ | positive mass ↑ | hostile mass ↑ | random-logit Spearman ↓ | wall time |\n|---|---|---|---|---|---|---|---|---|---|---|";

fn table<T: Float>(scenes: &Scenes, methods: &[Method], limit: Option<usize>) -> Result<Vec<(Report, f64)>, RspError> {
    let net: Network<T> = rsp::io::safetensors::from_bytes(MODEL, "digits_vgg.safetensors (embedded)")?;
    let options = EvalOptions { limit, faithfulness: Some(FaithfulnessOptions::default()), ..Default::default() };
    eprintln!("{HEADER}");
    let mut rows = Vec::new();
    for method in methods {
        let start = Instant::now();
        let mut report = evaluate(&net, scenes, method, &options)?;
        let secs = start.elapsed().as_secs_f64();
        report.method = method.to_string();
        eprintln!("{}", row(&report, secs));
        rows.push((report, secs));
    }
    Ok(rows)
}

fn row(r: &Report, secs: f64) -> String {
    let num = |v: f64, digits: usize| if v.is_nan() { "n/a".to_string() } else { format!("{v:.digits$}") };
    let f = r.faithfulness.as_ref();
    let get = |g: fn(&rsp::eval::faithfulness::FaithfulnessSummary) -> f64, digits| {
        f.map(|s| num(g(s), digits)).unwrap_or_else(|| "—".into())
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {secs:.0} s |",
        r.method,
        num(r.pointing_game, 4),
        num(r.hostile_pointing_game, 4),
        num(r.miou, 4),
        get(|s| s.deletion_auc, 3),
        get(|s| s.insertion_auc, 3),
        get(|s| s.lerf_auc, 3),
        get(|s| s.positive_mass, 4),
        get(|s| s.hostile_mass, 4),
        get(|s| s.random_logit_spearman, 4),
    )
}

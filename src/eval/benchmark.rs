//! The benchmark of `data/README.md` over a [`Scenes`] file: pointing game,
//! hostile pointing game and mIoU for any [`Method`], and model sensitivity
//! (cascading weight randomisation).
//!
//! Scenes are explained in parallel (rayon); per-scene results are combined in
//! scene order, so the numbers do not depend on the number of threads.

use super::dataset::Scenes;
use super::faithfulness::{FaithfulnessOptions, FaithfulnessSummary, PairFaithfulness};
use super::metrics::{hostile_pointing_hit, pointing_hit, spearman, top_k_iou, BoxRegion};
use crate::attribution::{Method, Target};
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::network::Network;
use ndarray::{Array2, Array4, Axis};
use serde::Serialize;

/// Pixels by which a box is enlarged (on each side, clipped) in the pointing games.
pub const BOX_MARGIN: usize = 3;

/// Which scenes to evaluate and how to report progress.
#[derive(Clone, Copy, Default)]
pub struct EvalOptions<'a> {
    /// Only the first `limit` scenes (all if `None`).
    pub limit: Option<usize>,
    /// Called once per finished scene (from any thread).
    pub progress: Option<&'a (dyn Fn() + Sync)>,
    /// Only this shard's share of those scenes (scene `i` belongs to shard
    /// `i mod N + 1`); the whole selection by default.
    pub shard: crate::shard::Shard,
    /// Also compute the faithfulness measures of [`super::faithfulness`] for
    /// every pair (pixel flipping costs about 100 forward passes per pair).
    pub faithfulness: Option<FaithfulnessOptions>,
}

/// The scores of one method, as `data/README.md` defines them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The method's name.
    pub method: String,
    /// Hits of the first maximum in the target's enlarged box / pairs.
    pub pointing_game: f64,
    /// Hits of the first minimum in another object's enlarged box / pairs in
    /// scenes with ≥ 2 objects (`NaN` if there are none; serialised as `null`).
    pub hostile_pointing_game: f64,
    /// Mean over pairs of the IoU of the top-k map pixels with the ink mask.
    pub miou: f64,
    /// Number of (scene, object) pairs.
    pub pairs: usize,
    /// Number of pairs in scenes with ≥ 2 objects.
    #[serde(skip)]
    pub hostile_pairs: usize,
    /// Number of scenes evaluated.
    #[serde(skip)]
    pub scenes: usize,
    /// The faithfulness measures, if they were computed (their keys are then
    /// part of the JSON line).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub faithfulness: Option<FaithfulnessSummary>,
}

impl Report {
    /// The report as the one-line JSON object the CLI prints:
    /// `{"method":…,"pointing_game":…,"hostile_pointing_game":…,"miou":…,"pairs":…}`.
    ///
    /// ```
    /// let r = rsp::eval::benchmark::Report { method: "rsp".into(), pointing_game: 1.0, hostile_pointing_game: 0.5, miou: 0.25, pairs: 2, hostile_pairs: 2, scenes: 1, faithfulness: None };
    /// assert_eq!(r.to_json(), r#"{"method":"rsp","pointing_game":1.0,"hostile_pointing_game":0.5,"miou":0.25,"pairs":2}"#);
    /// ```
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The scores of one (scene, object) pair.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct PairScore {
    /// The scene.
    pub scene: usize,
    /// The object's class (the explained target).
    pub class: usize,
    /// Pointing game hit.
    pub hit: bool,
    /// Hostile pointing game hit (`None` in a scene with one object).
    pub hostile_hit: Option<bool>,
    /// IoU of the top-k region with the ink mask.
    pub iou: f64,
    /// The faithfulness measures, if they were asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faithfulness: Option<PairFaithfulness>,
}

/// The maps of one scene: `(slot, box)` of each object and the maps `(objects, H, W)`.
pub type SceneMaps<T> = (Vec<(usize, BoxRegion)>, ndarray::Array3<T>);

/// The maps `(objects, H, W)` of scene `i`, one per object in slot order
/// (target = the object's class), with the boxes.
pub fn scene_heatmaps<T: Float>(net: &Network<T>, scenes: &Scenes, i: usize, method: &Method) -> Result<SceneMaps<T>> {
    if i >= scenes.len() {
        return Err(RspError::InvalidArgument(format!(
            "scene {i} is out of range: the file has {} scenes",
            scenes.len()
        )));
    }
    let slots = scenes.slots(i);
    let (_, h, w) = scenes.input(i).dim();
    if slots.is_empty() {
        return Ok((slots, ndarray::Array3::zeros((0, h, w))));
    }
    let x = scenes.input(i).mapv(|v| T::of(f64::from(v)));
    let batch: Array4<T> = x.broadcast((slots.len(), x.dim().0, h, w)).expect("same shape").to_owned();
    let targets: Vec<usize> = slots.iter().map(|(_, b)| b.class).collect();
    let a = net.explain(&batch, Target::PerSample(targets), method)?;
    Ok((slots, a.heatmaps))
}

/// The scores of every pair of scene `i`.
pub fn score_scene<T: Float>(net: &Network<T>, scenes: &Scenes, i: usize, method: &Method) -> Result<Vec<PairScore>> {
    score_scene_with(net, scenes, i, method, None)
}

/// The scores of every pair of scene `i`, with the faithfulness measures if
/// `faithfulness` is given.
pub fn score_scene_with<T: Float>(
    net: &Network<T>,
    scenes: &Scenes,
    i: usize,
    method: &Method,
    faithfulness: Option<&FaithfulnessOptions>,
) -> Result<Vec<PairScore>> {
    let (slots, maps) = scene_heatmaps(net, scenes, i, method)?;
    let boxes: Vec<BoxRegion> = slots.iter().map(|(_, b)| *b).collect();
    let mut out = Vec::with_capacity(slots.len());
    for (j, ((slot, b), map)) in slots.iter().zip(maps.axis_iter(Axis(0))).enumerate() {
        if let Some(index) = map.iter().position(|v| !v.is_finite()) {
            return Err(RspError::NonFinite { tensor: format!("heatmap of scene {i}, class {}", b.class), index });
        }
        let others: Vec<BoxRegion> = boxes.iter().enumerate().filter(|&(o, _)| o != j).map(|(_, b)| *b).collect();
        out.push(PairScore {
            scene: i,
            class: b.class,
            hit: pointing_hit(map, b, BOX_MARGIN),
            hostile_hit: (!others.is_empty()).then(|| hostile_pointing_hit(map, &others, BOX_MARGIN)),
            iou: top_k_iou(map, scenes.mask(i, *slot))?,
            faithfulness: None,
        });
    }
    if let Some(options) = faithfulness {
        let measures = super::faithfulness::score_scene(net, scenes, i, method, &slots, &maps, options)?;
        for (pair, m) in out.iter_mut().zip(measures) {
            pair.faithfulness = Some(m);
        }
    }
    Ok(out)
}

fn scene_count(scenes: &Scenes, limit: Option<usize>) -> usize {
    limit.map_or(scenes.len(), |l| l.min(scenes.len()))
}

/// Refuses a selection of scenes without any object: every score would be
/// 0 / 0.
fn check_scorable(scenes: &Scenes, n: usize) -> Result<()> {
    if (0..n).all(|i| scenes.slots(i).is_empty()) {
        return Err(RspError::InvalidArgument(format!(
            "the {n} scenes evaluated hold no objects: there is nothing to score"
        )));
    }
    Ok(())
}

/// The pre-flight check of an evaluation of the first `n` scenes: scenes run
/// in parallel, at most as many at once as the pool has threads
/// ([`crate::backend::map_samples`]), each an attribution of a batch of its
/// objects; so at most that many times the estimate of the largest scene's
/// call is held at once. (A scene whose shape the network refuses is reported
/// by its own call.)
fn check_evaluation_budget<T: Float>(net: &Network<T>, scenes: &Scenes, n: usize) -> Result<()> {
    let Some(objects) = (0..n).map(|i| scenes.slots(i).len()).max().filter(|&m| m > 0) else {
        return Ok(());
    };
    let (c, h, w) = scenes.input(0).dim();
    let Ok(e) = net.estimate(&[objects, c, h, w], crate::budget::Pass::Attribution) else {
        return Ok(());
    };
    let at_once = n.min(rayon::current_num_threads()).max(1);
    let estimate = e.memory.saturating_mul(at_once as u64);
    let budget = net.memory_budget();
    if estimate > budget {
        return Err(RspError::MemoryBudget {
            estimate,
            budget,
            what: format!("the evaluation ({at_once} scenes of up to {objects} objects of {c}×{h}×{w} at once)"),
        });
    }
    Ok(())
}

/// Scores `method` on the scenes: every pair's [`PairScore`], in scene order.
pub fn score_pairs<T: Float>(
    net: &Network<T>,
    scenes: &Scenes,
    method: &Method,
    options: &EvalOptions<'_>,
) -> Result<Vec<PairScore>> {
    let n = scene_count(scenes, options.limit);
    let selected: Vec<usize> = (0..n).filter(|&i| options.shard.owns(i)).collect();
    check_evaluation_budget(net, scenes, n)?;
    let per_scene: Vec<Vec<PairScore>> = crate::backend::map_samples(selected.len(), |k| {
        let r = score_scene_with(net, scenes, selected[k], method, options.faithfulness.as_ref());
        if let Some(p) = options.progress {
            p();
        }
        r
    })?;
    Ok(per_scene.into_iter().flatten().collect())
}

/// Combines pair scores into a [`Report`] (sums in the given order).
pub fn summarise(method: &Method, scenes: usize, pairs: &[PairScore]) -> Report {
    Report::from_pairs(method.to_string(), scenes, pairs)
}

impl Report {
    /// The report of a method named `method` over `scenes` scenes whose pairs
    /// scored `pairs` (sums in the given order, so pairs in scene order give
    /// the numbers of one unsharded run bit for bit).
    ///
    /// ```
    /// use rsp::eval::benchmark::{PairScore, Report};
    /// let pairs = [
    ///     PairScore { scene: 0, class: 1, hit: true, hostile_hit: Some(false), iou: 0.5, faithfulness: None },
    ///     PairScore { scene: 0, class: 2, hit: false, hostile_hit: Some(true), iou: 0.25, faithfulness: None },
    /// ];
    /// let r = Report::from_pairs("rsp".into(), 1, &pairs);
    /// assert_eq!((r.pointing_game, r.hostile_pointing_game, r.miou), (0.5, 0.5, 0.375));
    /// ```
    pub fn from_pairs(method: String, scenes: usize, pairs: &[PairScore]) -> Report {
        let n = pairs.len();
        let hits = pairs.iter().filter(|p| p.hit).count();
        let hostile: Vec<bool> = pairs.iter().filter_map(|p| p.hostile_hit).collect();
        let hostile_hits = hostile.iter().filter(|&&h| h).count();
        let iou_sum: f64 = pairs.iter().map(|p| p.iou).sum();
        let ratio = |a: usize, b: usize| {
            if b == 0 {
                f64::NAN
            } else {
                a as f64 / b as f64
            }
        };
        Report {
            method,
            pointing_game: ratio(hits, n),
            hostile_pointing_game: ratio(hostile_hits, hostile.len()),
            miou: if n == 0 { f64::NAN } else { iou_sum / n as f64 },
            pairs: n,
            hostile_pairs: hostile.len(),
            scenes,
            faithfulness: FaithfulnessSummary::of(
                &pairs.iter().map(|p| (p.faithfulness, p.hostile_hit.is_some())).collect::<Vec<_>>(),
            ),
        }
    }
}

/// Evaluates `method` on the scenes: pointing game, hostile pointing game and mIoU.
///
/// With a [`EvalOptions::shard`] other than the whole run, the report covers
/// that shard's scenes only (and may have no pairs: its ratios are then NaN).
///
/// # Errors
/// [`RspError::InvalidArgument`] if the scenes evaluated (the whole run) hold
/// no object (no score is defined), and any error of explaining a scene.
///
/// ```no_run
/// use rsp::eval::{benchmark::{evaluate, EvalOptions}, dataset::Scenes};
/// let net = rsp::Network::<f64>::load("data/digits_vgg.safetensors")?;
/// let scenes = Scenes::load("data/scenes_public.safetensors")?;
/// let report = evaluate(&net, &scenes, &rsp::Method::default(), &EvalOptions { limit: Some(20), ..Default::default() })?;
/// println!("{}", report.to_json());
/// # Ok::<(), rsp::RspError>(())
/// ```
pub fn evaluate<T: Float>(
    net: &Network<T>,
    scenes: &Scenes,
    method: &Method,
    options: &EvalOptions<'_>,
) -> Result<Report> {
    let n = scene_count(scenes, options.limit);
    // A shard may hold no object; the merged run is checked as a whole.
    if options.shard.is_whole() {
        check_scorable(scenes, n)?;
    }
    let pairs = score_pairs(net, scenes, method, options)?;
    Ok(summarise(method, options.shard.share_of(n), &pairs))
}

/// One step of the cascading randomisation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SensitivityStep {
    /// The node whose weights were re-drawn at this step (all later
    /// parameterised nodes are already random).
    pub node: usize,
    /// The node's description.
    pub layer: String,
    /// Mean over pairs of the Spearman correlation of `|h|` with the original model's.
    pub spearman: f64,
}

/// A small deterministic generator (SplitMix64) for the He-normal draws and
/// the random-logit test's classes.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Re-draws the `weight` parameters of node `k` with a He-normal of the same
/// shape (`std = sqrt(2 / fan_in)`, `fan_in` = the product of all but the
/// first dimension); biases are kept. Returns false for a node without weights.
///
/// ```
/// use rsp::layers::{Flatten, Layer, Linear};
/// use rsp::eval::benchmark::randomise_layer;
/// let fc = Linear::new("fc", ndarray::Array2::<f64>::zeros((3, 200)), None).unwrap();
/// let mut net = rsp::Network::sequential(vec![Box::new(Flatten) as Box<dyn Layer<f64>>, Box::new(fc)]);
/// assert!(!randomise_layer(&mut net, 0, 7));
/// assert!(randomise_layer(&mut net, 1, 7));
/// ```
pub fn randomise_layer<T: Float>(net: &mut Network<T>, k: usize, seed: u64) -> bool {
    let Some(layer) = net.layer_mut(k) else {
        return false;
    };
    let mut rng = SplitMix64(seed ^ (k as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut changed = false;
    for (name, mut p) in layer.parameters_mut() {
        if name != "weight" || p.is_empty() {
            continue;
        }
        let fan_in: usize = p.shape().iter().skip(1).product::<usize>().max(1);
        let std = (2.0 / fan_in as f64).sqrt();
        p.iter_mut().for_each(|v| *v = T::of(rng.normal() * std));
        changed = true;
    }
    changed
}

/// Model sensitivity (cascading randomisation from the top): for each
/// parameterised node from the last to the first, re-draw its weights
/// ([`randomise_layer`], seeded), keeping the earlier randomisations, and
/// report the Spearman rank correlation between `|h|` of the original and of
/// the randomised model, averaged over the (scene, object) pairs.
pub fn model_sensitivity<T: Float>(
    net: &Network<T>,
    scenes: &Scenes,
    method: &Method,
    seed: u64,
    options: &EvalOptions<'_>,
) -> Result<Vec<SensitivityStep>> {
    let n = scene_count(scenes, options.limit);
    check_scorable(scenes, n)?;
    check_evaluation_budget(net, scenes, n)?;
    let abs_maps = |model: &Network<T>| -> Result<Vec<Array2<T>>> {
        let per_scene: Vec<Vec<Array2<T>>> = crate::backend::map_samples(n, |i| {
            let (_, maps) = scene_heatmaps(model, scenes, i, method)?;
            if let Some(p) = options.progress {
                p();
            }
            Ok(maps.axis_iter(Axis(0)).map(|m| m.mapv(|v| v.abs())).collect())
        })?;
        Ok(per_scene.into_iter().flatten().collect())
    };
    let original = abs_maps(net)?;
    let mut model = net.clone();
    let mut steps = Vec::new();
    for k in (0..net.len()).rev() {
        if !randomise_layer(&mut model, k, seed) {
            continue;
        }
        let maps = abs_maps(&model)?;
        let rhos =
            original.iter().zip(&maps).map(|(a, b)| spearman(a.view(), b.view())).collect::<Result<Vec<f64>>>()?;
        let mean = if rhos.is_empty() { f64::NAN } else { rhos.iter().sum::<f64>() / rhos.len() as f64 };
        steps.push(SensitivityStep { node: k, layer: net.nodes()[k].describe(), spearman: mean });
    }
    Ok(steps)
}

/// Number of progress ticks [`model_sensitivity`] makes (scenes × (1 + parameterised nodes)).
pub fn sensitivity_ticks<T: Float>(net: &Network<T>, scenes: &Scenes, limit: Option<usize>) -> usize {
    let mut probe = net.clone();
    let layers = (0..net.len())
        .filter(|&k| probe.layer_mut(k).is_some_and(|l| l.parameters_mut().iter().any(|(n, _)| *n == "weight")))
        .count();
    scene_count(scenes, limit) * (1 + layers)
}

//! Faithfulness and sign-aware measures (issue #14, point 3; definitions in
//! `docs/evaluation.md`):
//!
//! - **pixel flipping** ([`flip_curves`]): the target's logit as the pixels of
//!   the map are replaced by a baseline value in order of relevance —
//!   deletion of the most relevant first (MoRF), insertion of the most
//!   relevant first into the baseline image, and deletion of the least
//!   relevant first (LeRF) — with the areas under the curves ([`auc`]);
//! - **positive mass in the target's mask** and **hostile mass on the other
//!   objects** ([`positive_mass_in`],
//!   [`negative_mass_in`]);
//! - the **random-logit test** (Sixt, Granz & Landgraf, ICML 2020): the
//!   Spearman rank correlation between the map for the target and the map for
//!   a class absent from the scene ([`random_other_class`]).
//!
//! [`crate::eval::benchmark::evaluate`] computes them for every (scene,
//! object) pair when [`EvalOptions::faithfulness`](super::benchmark::EvalOptions::faithfulness)
//! is set.

use super::benchmark::SplitMix64;
use super::dataset::Scenes;
use super::metrics::{negative_mass_in, positive_mass_in, spearman};
use crate::attribution::{Method, Target};
use crate::error::{Result, RspError};
use crate::float::Float;
use crate::limits::{DEFAULT_FLIP_STEPS, FLIP_BATCH};
use crate::network::Network;
use ndarray::{Array2, Array3, Array4, ArrayView2, ArrayView3, Axis};
use serde::{Deserialize, Serialize};

/// How the faithfulness measures are computed.
///
/// ```
/// let o = rsp::eval::faithfulness::FaithfulnessOptions::default();
/// assert_eq!((o.step, o.baseline, o.seed), (None, 0.0, 0));
/// assert_eq!(o.step_for(64 * 64).unwrap(), 128);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaithfulnessOptions {
    /// Pixels replaced per step of a flipping curve (`None`: the map's pixel
    /// count / [`DEFAULT_FLIP_STEPS`], rounded up — 128 for 64×64).
    pub step: Option<usize>,
    /// The value, in the model's normalised input units, that replaces a pixel
    /// in every channel. 0 is the normalisation's mean (rgb 0.3 for the
    /// scenes: `x = (rgb − 0.3) / 0.3`), the usual "no information" value.
    pub baseline: f64,
    /// Seed of the random-logit test's class draw.
    pub seed: u64,
}

impl Default for FaithfulnessOptions {
    fn default() -> Self {
        FaithfulnessOptions { step: None, baseline: 0.0, seed: 0 }
    }
}

impl FaithfulnessOptions {
    /// The step size for a map of `pixels` pixels.
    ///
    /// # Errors
    /// [`RspError::InvalidArgument`] for a step of 0 or a non-finite baseline.
    pub fn step_for(&self, pixels: usize) -> Result<usize> {
        if !self.baseline.is_finite() {
            return Err(RspError::InvalidArgument(format!(
                "the pixel-flipping baseline must be a finite number, not {}",
                self.baseline
            )));
        }
        match self.step {
            Some(0) => Err(RspError::InvalidArgument("the pixel-flipping step must be at least 1 pixel".into())),
            Some(s) => Ok(s),
            None => Ok(pixels.div_ceil(DEFAULT_FLIP_STEPS).max(1)),
        }
    }
}

/// Which pixels a flipping curve takes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlipOrder {
    /// Most relevant first (descending `h`).
    MostRelevantFirst,
    /// Least relevant first (ascending `h`).
    LeastRelevantFirst,
}

/// The row-major indices of the pixels of `h` in the given order; ties keep
/// the lower row-major index first in both orders.
///
/// # Errors
/// [`RspError::NonFinite`] if `h` holds NaN or an infinity.
///
/// ```
/// use rsp::eval::faithfulness::{pixel_order, FlipOrder};
/// let h = ndarray::array![[1.0, 3.0], [1.0, -2.0]];
/// assert_eq!(pixel_order(h.view(), FlipOrder::MostRelevantFirst)?, vec![1, 0, 2, 3]);
/// assert_eq!(pixel_order(h.view(), FlipOrder::LeastRelevantFirst)?, vec![3, 0, 2, 1]);
/// # Ok::<(), rsp::RspError>(())
/// ```
pub fn pixel_order<T: Float>(h: ArrayView2<T>, order: FlipOrder) -> Result<Vec<usize>> {
    let values: Vec<T> = h.iter().copied().collect();
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(RspError::NonFinite { tensor: "the heatmap to flip".into(), index });
    }
    let mut indices: Vec<usize> = (0..values.len()).collect();
    // Stable sorts: equal values stay in row-major order.
    let cmp = |a: &T, b: &T| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal);
    match order {
        FlipOrder::MostRelevantFirst => indices.sort_by(|&i, &j| cmp(&values[j], &values[i])),
        FlipOrder::LeastRelevantFirst => indices.sort_by(|&i, &j| cmp(&values[i], &values[j])),
    }
    Ok(indices)
}

/// The three pixel-flipping curves of one map: the target's logit after
/// each step. Point `k` has `min(k · step, P)` of the `P` pixels replaced;
/// point 0 has none, the last has all.
#[derive(Clone, Debug, PartialEq)]
pub struct FlipCurves {
    /// The fraction of pixels replaced at each point (`0` to `1`).
    pub fractions: Vec<f64>,
    /// Deletion, most relevant first (MoRF): from the image to the baseline image.
    pub deletion: Vec<f64>,
    /// Insertion, most relevant first: from the baseline image to the image.
    pub insertion: Vec<f64>,
    /// Deletion, least relevant first (LeRF).
    pub lerf: Vec<f64>,
}

impl FlipCurves {
    /// The areas `(deletion, insertion, lerf)` under the curves ([`auc`]).
    pub fn areas(&self) -> (f64, f64, f64) {
        (auc(&self.fractions, &self.deletion), auc(&self.fractions, &self.insertion), auc(&self.fractions, &self.lerf))
    }
}

/// The trapezoid area under `values` over `fractions` (the x axis, from 0
/// to 1): a curve's mean height, in the units of the values.
///
/// ```
/// let a = rsp::eval::faithfulness::auc(&[0.0, 0.5, 1.0], &[4.0, 2.0, 0.0]);
/// assert_eq!(a, 2.0);
/// ```
pub fn auc(fractions: &[f64], values: &[f64]) -> f64 {
    fractions.windows(2).zip(values.windows(2)).map(|(x, v)| (x[1] - x[0]) * (v[0] + v[1]) / 2.0).sum()
}

/// The pixel-flipping curves of the map `h` (`H × W`) of image `x`
/// (`C × H × W`) for class `target`: pixels are replaced in all channels, by
/// `options.baseline` (deletion) or by the image's values (insertion),
/// `options.step` at a time. The perturbed images go through
/// [`Network::forward`] in batches of at most [`FLIP_BATCH`], so the curves
/// do not depend on the number of threads.
///
/// # Errors
/// [`RspError::Shape`] if `h` is not `H × W`, [`RspError::InvalidArgument`]
/// for a bad step or baseline or a target past the model's classes,
/// [`RspError::NonFinite`] for a non-finite map, and the forward pass's errors.
///
/// ```
/// use rsp::layers::{Flatten, Layer, Linear};
/// use rsp::eval::faithfulness::{flip_curves, FaithfulnessOptions};
/// // logit = x₀ + 2·x₁ over a 1×1×2 image (1, 1): deleting pixel 1 first drops it by 2.
/// let fc = Linear::new("fc", ndarray::arr2(&[[1.0, 2.0]]), None).unwrap();
/// let net = rsp::Network::<f64>::sequential(vec![Box::new(Flatten) as Box<dyn Layer<f64>>, Box::new(fc)]);
/// let x = ndarray::Array3::ones((1, 1, 2));
/// let h = ndarray::array![[0.0, 5.0]];
/// let options = FaithfulnessOptions { step: Some(1), ..Default::default() };
/// let c = flip_curves(&net, x.view(), h.view(), 0, &options)?;
/// assert_eq!(c.deletion, vec![3.0, 1.0, 0.0]);
/// assert_eq!(c.insertion, vec![0.0, 2.0, 3.0]);
/// assert_eq!(c.lerf, vec![3.0, 2.0, 0.0]);
/// # Ok::<(), rsp::RspError>(())
/// ```
pub fn flip_curves<T: Float>(
    net: &Network<T>,
    x: ArrayView3<T>,
    h: ArrayView2<T>,
    target: usize,
    options: &FaithfulnessOptions,
) -> Result<FlipCurves> {
    let (c, rows, cols) = x.dim();
    if h.dim() != (rows, cols) {
        return Err(RspError::shape("the heatmap to flip", format!("the image's size ({rows}, {cols})"), h.shape()));
    }
    let pixels = rows * cols;
    let step = options.step_for(pixels)?;
    let steps = pixels.div_ceil(step);
    let counts: Vec<usize> = (0..=steps).map(|k| k.saturating_mul(step).min(pixels)).collect();
    let morf = pixel_order(h, FlipOrder::MostRelevantFirst)?;
    let lerf = pixel_order(h, FlipOrder::LeastRelevantFirst)?;
    let image = x.to_owned();
    let baseline = Array3::from_elem((c, rows, cols), T::of(options.baseline));
    // (start image, where replaced pixels come from, order)
    let plans = [(&image, &baseline, &morf), (&baseline, &image, &morf), (&image, &baseline, &lerf)];
    let mut scores: Vec<f64> = Vec::with_capacity(3 * (steps + 1));
    let mut batch: Vec<T> = Vec::with_capacity(FLIP_BATCH.min(3 * (steps + 1)) * image.len());
    let flush = |batch: &mut Vec<T>, scores: &mut Vec<f64>| -> Result<()> {
        let n = batch.len() / image.len();
        let images = Array4::from_shape_vec((n, c, rows, cols), std::mem::take(batch)).expect("whole images");
        let logits = net.forward(images.view())?;
        if target >= logits.ncols() {
            return Err(RspError::InvalidArgument(format!(
                "target class {target} is out of range: the model has {} classes",
                logits.ncols()
            )));
        }
        scores.extend(logits.column(target).iter().map(|v| v.to_f64_exact()));
        Ok(())
    };
    for (start, source, order) in plans {
        let mut work = start.clone();
        for k in 0..=steps {
            if k > 0 {
                for &i in &order[counts[k - 1]..counts[k]] {
                    let (y, x) = (i / cols, i % cols);
                    for ch in 0..c {
                        work[[ch, y, x]] = source[[ch, y, x]];
                    }
                }
            }
            batch.extend(work.iter().copied());
            if batch.len() == FLIP_BATCH * image.len() {
                flush(&mut batch, &mut scores)?;
            }
        }
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut scores)?;
    }
    let mut curves = scores.chunks_exact(steps + 1).map(<[f64]>::to_vec);
    let (deletion, insertion, lerf) = (curves.next(), curves.next(), curves.next());
    Ok(FlipCurves {
        fractions: counts.iter().map(|&n| n as f64 / pixels as f64).collect(),
        deletion: deletion.expect("three curves"),
        insertion: insertion.expect("three curves"),
        lerf: lerf.expect("three curves"),
    })
}

/// The class whose map the random-logit test compares with the target's: drawn
/// uniformly (SplitMix64 seeded by `seed`, `scene` and `target`) among the
/// classes absent from the scene (`present[k]` false) other than `target`;
/// among all other classes if every class is present; `None` if there is no
/// other class.
///
/// ```
/// use rsp::eval::faithfulness::random_other_class;
/// let present = [true, false, true, false];
/// let k = random_other_class(7, 0, 2, &present).unwrap();
/// assert!(k == 1 || k == 3);
/// assert_eq!(random_other_class(7, 0, 0, &[true]), None);
/// ```
pub fn random_other_class(seed: u64, scene: usize, target: usize, present: &[bool]) -> Option<usize> {
    let absent: Vec<usize> = (0..present.len()).filter(|&k| k != target && !present[k]).collect();
    let candidates =
        if absent.is_empty() { (0..present.len()).filter(|&k| k != target).collect::<Vec<_>>() } else { absent };
    if candidates.is_empty() {
        return None;
    }
    let mut rng = SplitMix64(
        seed ^ (scene as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (target as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
    );
    Some(candidates[(rng.next_u64() % candidates.len() as u64) as usize])
}

/// The faithfulness measures of one (scene, object) pair.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairFaithfulness {
    /// Area under the MoRF deletion curve of the target's logit.
    pub deletion_auc: f64,
    /// Area under the insertion curve (most relevant first).
    pub insertion_auc: f64,
    /// Area under the LeRF deletion curve.
    pub lerf_auc: f64,
    /// Σ of `h⁺` over the target's ink mask / Σ `h⁺` (0 when Σ `h⁺` = 0).
    pub positive_mass: f64,
    /// Σ of `h⁻` over the other objects' ink masks / Σ `h⁻`; `None` in a scene
    /// with one object or for a map without negative values.
    pub hostile_mass: Option<f64>,
    /// The class of the random-logit test (`None`: the model has one class).
    pub random_class: Option<usize>,
    /// Spearman correlation of the target's map and the random class's map;
    /// `None` if there is no random class or either map is constant.
    pub random_logit_spearman: Option<f64>,
}

/// The faithfulness measures over a set of pairs, as [`Report`](super::benchmark::Report)
/// carries them (means in pair order).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaithfulnessSummary {
    /// Mean deletion (MoRF) AUC, in logit units: lower is more faithful.
    pub deletion_auc: f64,
    /// Mean insertion AUC: higher is more faithful.
    pub insertion_auc: f64,
    /// Mean LeRF deletion AUC: higher is more faithful.
    pub lerf_auc: f64,
    /// Mean positive mass in the target's mask (0 to 1, higher is better).
    pub positive_mass: f64,
    /// Mean hostile mass on the other objects over the pairs where it is
    /// defined (NaN, serialised as `null`, if none).
    pub hostile_mass: f64,
    /// Pairs the hostile mass is averaged over.
    pub hostile_mass_pairs: usize,
    /// Pairs of scenes with ≥ 2 objects skipped because their map has no
    /// negative part (Grad-CAM's maps never have one).
    pub hostile_mass_skipped: usize,
    /// Mean Spearman correlation of the target's map with a random absent
    /// class's map (lower: more class-sensitive).
    pub random_logit_spearman: f64,
    /// Pairs skipped by the random-logit test (a constant map, or no other class).
    pub random_logit_skipped: usize,
}

impl FaithfulnessSummary {
    /// The summary of the pairs' measures (`hostile_pairs[i]`: pair `i` is in
    /// a scene with ≥ 2 objects); `None` if no pair has them.
    ///
    /// ```
    /// use rsp::eval::faithfulness::{FaithfulnessSummary, PairFaithfulness};
    /// let p = PairFaithfulness { deletion_auc: 1.0, insertion_auc: 3.0, lerf_auc: 2.0, positive_mass: 0.5,
    ///     hostile_mass: None, random_class: Some(4), random_logit_spearman: Some(0.25) };
    /// let q = PairFaithfulness { deletion_auc: 2.0, hostile_mass: Some(0.75), random_logit_spearman: None, ..p };
    /// let s = FaithfulnessSummary::of(&[(Some(p), true), (Some(q), true)]).unwrap();
    /// assert_eq!((s.deletion_auc, s.hostile_mass, s.hostile_mass_skipped), (1.5, 0.75, 1));
    /// assert_eq!((s.random_logit_spearman, s.random_logit_skipped), (0.25, 1));
    /// ```
    pub fn of(pairs: &[(Option<PairFaithfulness>, bool)]) -> Option<FaithfulnessSummary> {
        let measured: Vec<(&PairFaithfulness, bool)> =
            pairs.iter().filter_map(|(p, hostile)| p.as_ref().map(|p| (p, *hostile))).collect();
        if measured.is_empty() {
            return None;
        }
        let mean = |values: &[f64]| {
            if values.is_empty() {
                f64::NAN
            } else {
                values.iter().sum::<f64>() / values.len() as f64
            }
        };
        let all = |f: fn(&PairFaithfulness) -> f64| mean(&measured.iter().map(|(p, _)| f(p)).collect::<Vec<_>>());
        let hostile: Vec<f64> = measured.iter().filter_map(|(p, _)| p.hostile_mass).collect();
        let random: Vec<f64> = measured.iter().filter_map(|(p, _)| p.random_logit_spearman).collect();
        let multi = measured.iter().filter(|(_, h)| *h).count();
        Some(FaithfulnessSummary {
            deletion_auc: all(|p| p.deletion_auc),
            insertion_auc: all(|p| p.insertion_auc),
            lerf_auc: all(|p| p.lerf_auc),
            positive_mass: all(|p| p.positive_mass),
            hostile_mass: mean(&hostile),
            hostile_mass_pairs: hostile.len(),
            hostile_mass_skipped: multi - hostile.len().min(multi),
            random_logit_spearman: mean(&random),
            random_logit_skipped: measured.len() - random.len(),
        })
    }

    /// The summary as the lines of the human-readable report.
    pub fn lines(&self) -> Vec<String> {
        let or_na = |v: f64| if v.is_nan() { "n/a".to_string() } else { format!("{v:.4}") };
        vec![
            format!("deletion AUC (MoRF):   {:.4} (logit; lower = more faithful)", self.deletion_auc),
            format!("insertion AUC:         {:.4} (logit; higher = more faithful)", self.insertion_auc),
            format!("deletion AUC (LeRF):   {:.4} (logit; higher = more faithful)", self.lerf_auc),
            format!("positive mass in mask: {:.4}", self.positive_mass),
            format!(
                "hostile mass (others): {} ({} pairs; {} without negative relevance skipped)",
                or_na(self.hostile_mass),
                self.hostile_mass_pairs,
                self.hostile_mass_skipped
            ),
            format!(
                "random-logit Spearman: {} ({} pairs skipped: constant map or no other class)",
                or_na(self.random_logit_spearman),
                self.random_logit_skipped
            ),
        ]
    }
}

fn is_constant<T: Float>(h: ArrayView2<T>) -> bool {
    let first = h.iter().next().copied();
    h.iter().all(|&v| Some(v) == first)
}

/// The faithfulness measures of scene `i`'s pairs, given their maps
/// (`objects × H × W`, slot order, as
/// [`scene_heatmaps`](super::benchmark::scene_heatmaps) returns them).
pub(crate) fn score_scene<T: Float>(
    net: &Network<T>,
    scenes: &Scenes,
    i: usize,
    method: &Method,
    slots: &[(usize, super::metrics::BoxRegion)],
    maps: &Array3<T>,
    options: &FaithfulnessOptions,
) -> Result<Vec<PairFaithfulness>> {
    let x = scenes.input(i).mapv(|v| T::of(f64::from(v)));
    let present: Vec<bool> = scenes.labels.row(i).iter().map(|&l| l != 0.0).collect();
    let random: Vec<Option<usize>> =
        slots.iter().map(|(_, b)| random_other_class(options.seed, i, b.class, &present)).collect();
    // The random classes' maps, in one batch (the target's class where there is none; unused).
    let classes: Vec<usize> = random.iter().zip(slots).map(|(r, (_, b))| r.unwrap_or(b.class)).collect();
    let batch: Array4<T> = x.broadcast((slots.len(), x.dim().0, x.dim().1, x.dim().2)).expect("same").to_owned();
    let random_maps = net.explain(&batch, Target::PerSample(classes), method)?.heatmaps;
    let mut out = Vec::with_capacity(slots.len());
    for (j, (slot, b)) in slots.iter().enumerate() {
        let h = maps.index_axis(Axis(0), j);
        let (deletion_auc, insertion_auc, lerf_auc) = flip_curves(net, x.view(), h, b.class, options)?.areas();
        let others: Vec<ArrayView2<u8>> =
            slots.iter().filter(|(s, _)| s != slot).map(|(s, _)| scenes.mask(i, *s)).collect();
        let union = (!others.is_empty())
            .then(|| Array2::from_shape_fn(h.dim(), |(y, x)| u8::from(others.iter().any(|m| m[[y, x]] != 0))));
        let hostile_mass = match union {
            Some(u) => negative_mass_in(h, u.view())?,
            None => None,
        };
        let r = random_maps.index_axis(Axis(0), j);
        let random_logit_spearman = match random[j] {
            Some(_) if !is_constant(h) && !is_constant(r) => Some(spearman(h, r)?),
            _ => None,
        };
        out.push(PairFaithfulness {
            deletion_auc,
            insertion_auc,
            lerf_auc,
            positive_mass: positive_mass_in(h, scenes.mask(i, *slot))?,
            hostile_mass,
            random_class: random[j],
            random_logit_spearman,
        });
    }
    Ok(out)
}

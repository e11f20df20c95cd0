//! The faithfulness measures of `rsp::eval::faithfulness` (docs/evaluation.md):
//! pixel-flipping curves on linear models whose logit after every step is a
//! hand sum, the masses on hand maps, the random-logit class draw, and
//! invariants on a few of the shipped scenes.

use ndarray::{array, Array2, Array3};
use rsp::eval::benchmark::{evaluate, score_pairs, EvalOptions};
use rsp::eval::dataset::Scenes;
use rsp::eval::faithfulness::{auc, flip_curves, pixel_order, random_other_class, FaithfulnessOptions, FlipOrder};
use rsp::eval::metrics::{negative_mass_in, positive_mass_in};
use rsp::layers::{Flatten, Layer, Linear};
use rsp::{Method, Network, RspError};

fn path(p: &str) -> String {
    format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
}

/// `Flatten` then a linear layer: the logits are `w · x + b` over the
/// channel-major flattened input.
fn linear(w: Array2<f64>, b: &[f64]) -> Network<f64> {
    let fc = Linear::new("fc", w, Some(ndarray::Array1::from(b.to_vec()))).unwrap();
    Network::sequential(vec![Box::new(Flatten) as Box<dyn Layer<f64>>, Box::new(fc)])
}

fn step(s: usize) -> FaithfulnessOptions {
    FaithfulnessOptions { step: Some(s), ..Default::default() }
}

#[test]
fn curves_of_a_linear_model_on_a_2x2_image_are_the_hand_sums() {
    // logit = x₀ − x₁ + 2·x₂ + 0.5·x₃ + 0.5; x = [1, 2, 3, 4]: contributions
    // [1, −2, 6, 2], logit 7.5, baseline image (0) logit 0.5.
    let net = linear(array![[1.0, -1.0, 2.0, 0.5]], &[0.5]);
    let x = Array3::from_shape_vec((1, 2, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    // Pixels 1 and 2 tie: MoRF order [1, 2, 0, 3], LeRF order [3, 0, 1, 2].
    let h = array![[0.1, 0.4], [0.4, -1.0]];
    assert_eq!(pixel_order(h.view(), FlipOrder::MostRelevantFirst).unwrap(), vec![1, 2, 0, 3]);
    assert_eq!(pixel_order(h.view(), FlipOrder::LeastRelevantFirst).unwrap(), vec![3, 0, 1, 2]);
    let c = flip_curves(&net, x.view(), h.view(), 0, &step(1)).unwrap();
    assert_eq!(c.fractions, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    assert_eq!(c.deletion, vec![7.5, 9.5, 3.5, 2.5, 0.5]);
    assert_eq!(c.insertion, vec![0.5, -1.5, 4.5, 5.5, 7.5]);
    assert_eq!(c.lerf, vec![7.5, 5.5, 4.5, 6.5, 0.5]);
    // Trapezoids: 0.25 · (8.5 + 6.5 + 3 + 1.5), 0.25 · (−0.5 + 1.5 + 5 + 6.5), 0.25 · (6.5 + 5 + 5.5 + 3.5).
    assert_eq!(c.areas(), (4.875, 3.125, 5.125));

    // Two pixels per step: points after 0, 2 and 4 pixels.
    let c = flip_curves(&net, x.view(), h.view(), 0, &step(2)).unwrap();
    assert_eq!((c.fractions.clone(), c.deletion.clone()), (vec![0.0, 0.5, 1.0], vec![7.5, 3.5, 0.5]));
    assert_eq!(c.areas().0, 0.5 * (7.5 + 3.5) / 2.0 + 0.5 * (3.5 + 0.5) / 2.0);
    // A step that does not divide the pixels: points after 0, 3 and 4 pixels.
    let c = flip_curves(&net, x.view(), h.view(), 0, &step(3)).unwrap();
    assert_eq!((c.fractions.clone(), c.deletion.clone()), (vec![0.0, 0.75, 1.0], vec![7.5, 2.5, 0.5]));
    assert_eq!(c.areas().0, 0.75 * 5.0 + 0.25 * 1.5);
    // A step past the pixel count flips everything at once.
    let c = flip_curves(&net, x.view(), h.view(), 0, &step(99)).unwrap();
    assert_eq!((c.fractions.clone(), c.insertion.clone()), (vec![0.0, 1.0], vec![0.5, 7.5]));
    // The default: 4 pixels / 32 steps rounds up to 1 pixel a step.
    let c = flip_curves(&net, x.view(), h.view(), 0, &FaithfulnessOptions::default()).unwrap();
    assert_eq!(c.fractions.len(), 5);
}

#[test]
fn every_channel_is_replaced_by_the_baseline_and_the_target_column_is_read() {
    // Two channels of 1×2; class 0 = x·[1, 2, 3, 4], class 1 = x·[0, 0, 0, 1].
    let net = linear(array![[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]], &[0.0, 0.0]);
    let x = Array3::from_shape_vec((2, 1, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let h = array![[1.0, 0.0]];
    let options = FaithfulnessOptions { step: Some(1), baseline: 1.0, seed: 0 };
    let c = flip_curves(&net, x.view(), h.view(), 0, &options).unwrap();
    // Pixel 0 of both channels becomes 1: 1·1 + 2·2 + 3·1 + 4·4 = 24; all of them: 1 + 2 + 3 + 4 = 10.
    assert_eq!(c.deletion, vec![30.0, 24.0, 10.0]);
    assert_eq!(c.insertion, vec![10.0, 1.0 + 2.0 + 9.0 + 4.0, 30.0]);
    assert_eq!(c.lerf, vec![30.0, 1.0 + 2.0 * 1.0 + 9.0 + 4.0 * 1.0, 10.0]);
    let c = flip_curves(&net, x.view(), h.view(), 1, &options).unwrap();
    assert_eq!(c.deletion, vec![4.0, 4.0, 1.0]);
}

#[test]
fn curves_longer_than_one_forward_batch_are_the_hand_sums() {
    // 1×8×8 flipped one pixel at a time: 3 × 65 images, several forward batches.
    let w = Array2::from_shape_fn((1, 64), |(_, i)| ((i * 37) % 11) as f64 - 5.0);
    let net = linear(w.clone(), &[0.25]);
    let x = Array3::from_shape_fn((1, 8, 8), |(_, y, x)| ((y * 8 + x) % 7) as f64 * 0.5 - 1.0);
    let h = Array2::from_shape_fn((8, 8), |(y, x)| (((y * 8 + x) * 13) % 17) as f64);
    let contribution: Vec<f64> = (0..64).map(|i| w[[0, i]] * x.as_slice().unwrap()[i]).collect();
    let full: f64 = 0.25 + contribution.iter().sum::<f64>();
    let c = flip_curves(&net, x.view(), h.view(), 0, &step(1)).unwrap();
    let morf = pixel_order(h.view(), FlipOrder::MostRelevantFirst).unwrap();
    let lerf = pixel_order(h.view(), FlipOrder::LeastRelevantFirst).unwrap();
    for k in 0..=64 {
        let removed = |order: &[usize]| order[..k].iter().map(|&i| contribution[i]).sum::<f64>();
        assert!((c.deletion[k] - (full - removed(&morf))).abs() < 1e-12, "deletion at {k}");
        assert!((c.insertion[k] - (0.25 + removed(&morf))).abs() < 1e-12, "insertion at {k}");
        assert!((c.lerf[k] - (full - removed(&lerf))).abs() < 1e-12, "lerf at {k}");
        // For a linear model deletion and insertion add up to f(x) + f(baseline).
        assert!((c.deletion[k] + c.insertion[k] - (full + 0.25)).abs() < 1e-12);
    }
    let (d, i, _) = c.areas();
    assert!((d + i - (full + 0.25)).abs() < 1e-12);
}

#[test]
fn bad_flipping_inputs_are_typed_errors() {
    let net = linear(array![[1.0, 1.0, 1.0, 1.0]], &[0.0]);
    let x = Array3::<f64>::ones((1, 2, 2));
    let h = array![[1.0, 2.0], [3.0, 4.0]];
    let err = |r: Result<_, RspError>| r.unwrap_err();
    assert!(matches!(err(flip_curves(&net, x.view(), h.view(), 0, &step(0))), RspError::InvalidArgument(_)));
    let nan = FaithfulnessOptions { baseline: f64::NAN, ..Default::default() };
    assert!(matches!(err(flip_curves(&net, x.view(), h.view(), 0, &nan)), RspError::InvalidArgument(_)));
    let e = err(flip_curves(&net, x.view(), h.view(), 1, &step(1)));
    assert!(matches!(&e, RspError::InvalidArgument(m) if m.contains("1 classes")), "{e}");
    let wide = array![[1.0, 2.0, 3.0]];
    assert!(matches!(err(flip_curves(&net, x.view(), wide.view(), 0, &step(1))), RspError::Shape { .. }));
    let bad = array![[1.0, f64::NAN], [3.0, 4.0]];
    assert!(matches!(err(flip_curves(&net, x.view(), bad.view(), 0, &step(1))), RspError::NonFinite { .. }));
}

#[test]
fn masses_on_hand_maps() {
    let h = array![[4.0, -1.0, 0.0], [-3.0, 2.0, 2.0]];
    // h⁺ = 4, 2, 2 (total 8); h⁻ = 1, 3 (total 4).
    let mask = array![[255u8, 1, 0], [0, 0, 1]];
    assert_eq!(positive_mass_in(h.view(), mask.view()).unwrap(), 6.0 / 8.0);
    assert_eq!(negative_mass_in(h.view(), mask.view()).unwrap(), Some(1.0 / 4.0));
    let rest = mask.mapv(|m| u8::from(m == 0));
    assert_eq!(positive_mass_in(h.view(), rest.view()).unwrap(), 2.0 / 8.0);
    assert_eq!(negative_mass_in(h.view(), rest.view()).unwrap(), Some(3.0 / 4.0));
    // No positive part: 0; no negative part: undefined.
    assert_eq!(positive_mass_in((-h.clone()).mapv(|v: f64| v.min(0.0)).view(), mask.view()).unwrap(), 0.0);
    assert_eq!(negative_mass_in(h.mapv(f64::abs).view(), mask.view()).unwrap(), None);
    assert_eq!(negative_mass_in(Array2::<f32>::zeros((2, 3)).view(), mask.view()).unwrap(), None);
    let wrong = Array2::<u8>::ones((3, 2));
    assert!(matches!(positive_mass_in(h.view(), wrong.view()), Err(RspError::Shape { .. })));
    assert!(matches!(negative_mass_in(h.view(), wrong.view()), Err(RspError::Shape { .. })));
}

#[test]
fn the_random_class_is_absent_deterministic_and_spread() {
    let present = [false, true, false, false, true, false, false, true, false, false];
    let mut counts = [0usize; 10];
    for scene in 0..7000 {
        let k = random_other_class(3, scene, 4, &present).unwrap();
        assert!(!present[k] && k != 4);
        assert_eq!(random_other_class(3, scene, 4, &present), Some(k));
        counts[k] += 1;
    }
    // 7 absent classes, 1000 draws expected each.
    for (k, &n) in counts.iter().enumerate() {
        if !present[k] {
            assert!((850..1150).contains(&n), "class {k} drawn {n} times");
        }
    }
    assert!((0..50).any(|s| random_other_class(3, s, 4, &present) != random_other_class(4, s, 4, &present)));
    // Every class present: any other class; a single class: none.
    assert!(random_other_class(0, 0, 1, &[true, true, true]).is_some_and(|k| k != 1));
    assert_eq!(random_other_class(0, 0, 0, &[true]), None);
}

fn scenes() -> Scenes {
    Scenes::load(path("data/scenes_public.safetensors")).unwrap()
}

fn options(limit: usize) -> EvalOptions<'static> {
    EvalOptions { limit: Some(limit), faithfulness: Some(FaithfulnessOptions::default()), ..Default::default() }
}

#[test]
fn curves_on_shipped_scenes_start_and_end_at_the_forward_logits() {
    let net = Network::<f32>::load(path("data/digits_vgg.safetensors")).unwrap();
    let scenes = scenes();
    let baseline = Array3::<f32>::zeros((3, 64, 64)).insert_axis(ndarray::Axis(0));
    let base_logits = net.forward(baseline.view()).unwrap();
    for i in 0..2 {
        let (slots, maps) = rsp::eval::benchmark::scene_heatmaps(&net, &scenes, i, &Method::default()).unwrap();
        let x = scenes.input(i).to_owned();
        let logits = net.forward(x.clone().insert_axis(ndarray::Axis(0)).view()).unwrap();
        for (j, (_, b)) in slots.iter().enumerate() {
            let h = maps.index_axis(ndarray::Axis(0), j);
            let c = flip_curves(&net, x.view(), h, b.class, &FaithfulnessOptions::default()).unwrap();
            assert_eq!(c.fractions.len(), 33, "64×64 in steps of 128 pixels");
            let (full, empty) = (f64::from(logits[[0, b.class]]), f64::from(base_logits[[0, b.class]]));
            assert_eq!((c.deletion[0], c.lerf[0], *c.insertion.last().unwrap()), (full, full, full));
            assert_eq!((*c.deletion.last().unwrap(), *c.lerf.last().unwrap(), c.insertion[0]), (empty, empty, empty));
            // Deleting the most relevant first under −h is deleting the least
            // relevant first under h (ties go to the lower index in both).
            let negated =
                flip_curves(&net, x.view(), h.mapv(|v| -v).view(), b.class, &FaithfulnessOptions::default()).unwrap();
            assert_eq!(negated.deletion, c.lerf);
            assert_eq!(auc(&c.fractions, &negated.deletion), c.areas().2);
        }
    }
}

#[test]
fn scene_measures_satisfy_their_invariants_and_leave_the_other_scores_alone() {
    let net = Network::<f32>::load(path("data/digits_vgg.safetensors")).unwrap();
    let scenes = scenes();
    let plain =
        evaluate(&net, &scenes, &Method::default(), &EvalOptions { limit: Some(6), ..Default::default() }).unwrap();
    assert!(plain.faithfulness.is_none());
    assert!(!plain.to_json().contains("deletion_auc"));
    let rsp = evaluate(&net, &scenes, &Method::default(), &options(6)).unwrap();
    let f = rsp.faithfulness.clone().unwrap();
    assert_eq!(
        (rsp.pointing_game, rsp.hostile_pointing_game, rsp.miou),
        (plain.pointing_game, plain.hostile_pointing_game, plain.miou)
    );
    assert!(rsp.to_json().contains("\"deletion_auc\":"));
    // RSP's ranking matters: deleting its most relevant pixels first hurts the
    // logit more than deleting its least relevant first.
    assert!(f.deletion_auc < f.lerf_auc, "{f:?}");
    let pairs = score_pairs(&net, &scenes, &Method::default(), &options(6)).unwrap();
    assert_eq!(pairs.len(), rsp.pairs);
    for p in &pairs {
        let m = p.faithfulness.unwrap();
        assert!((0.0..=1.0).contains(&m.positive_mass));
        assert!(m.hostile_mass.is_some_and(|v| (0.0..=1.0).contains(&v)), "RSP maps have a negative part");
        let k = m.random_class.unwrap();
        assert!(scenes.labels[[p.scene, k]] == 0.0 && k != p.class);
        assert!(m.random_logit_spearman.is_some_and(|r| (-1.0..=1.0).contains(&r)));
    }
    // Grad-CAM's maps are ReLUs: no negative part, so every hostile mass is skipped.
    let gradcam = evaluate(&net, &scenes, &Method::GradCam, &options(6)).unwrap();
    let g = gradcam.faithfulness.clone().unwrap();
    assert_eq!((g.hostile_mass_pairs, g.hostile_mass_skipped), (0, gradcam.pairs));
    assert!(g.hostile_mass.is_nan());
    assert!(gradcam.to_json().contains("\"hostile_mass\":null"));
}

#[test]
fn faithfulness_does_not_depend_on_the_thread_count() {
    let net = Network::<f32>::load(path("data/digits_vgg.safetensors")).unwrap();
    let scenes = scenes();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| score_pairs(&net, &scenes, &Method::GradientXInput, &options(3)).unwrap())
    };
    let one = run(1);
    assert_eq!(one, run(3));
    assert!(one.iter().all(|p| p.faithfulness.is_some()));
}

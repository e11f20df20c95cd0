//! The multi-digit scenes format of `data/README.md`: a safetensors file with
//! `input` (N, 3, H, W) float32, `labels` (N, K) float32 multi-hot, `boxes`
//! (N, S, 5) int32 rows `(class, y0, x0, y1, x1)` (class −1: unused slot),
//! `masks` (N, S, H, W) uint8 and optionally `logits` (N, K) float32.
//!
//! Reading validates every shape, dtype and box, and is bounded by the file
//! size: nothing is allocated beyond what the (size-checked) file holds.
//! Every object must be scorable: a nonempty box inside the image, a
//! nonempty mask, and at most one object per class in a scene (the class is
//! the explained target).

use super::metrics::BoxRegion;
use crate::error::{Result, RspError};
use ndarray::{Array2, Array3, Array4, ArrayView2, ArrayView3, Axis};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::path::Path;

/// Evaluation scenes with their ground truth.
///
/// ```no_run
/// let scenes = rsp::eval::dataset::Scenes::load("data/scenes_public.safetensors")?;
/// assert_eq!(scenes.len(), 200);
/// for object in scenes.objects(0) {
///     println!("digit {} in rows {}..{}", object.class, object.y0, object.y1);
/// }
/// # Ok::<(), rsp::RspError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Scenes {
    /// The normalised images `(N, 3, H, W)`.
    pub inputs: Array4<f32>,
    /// Multi-hot labels `(N, K)`.
    pub labels: Array2<f32>,
    /// Per scene, per slot: `(class, y0, x0, y1, x1)`, class −1 for an unused slot.
    pub boxes: Array3<i32>,
    /// Per scene, per slot: the object's pixels (nonzero) `(N, S, H, W)`.
    pub masks: Array4<u8>,
    /// The logits the file was made with `(N, K)`, if present.
    pub logits: Option<Array2<f32>>,
}

/// The largest scenes file [`Scenes::load`] reads (4 GiB).
pub const MAX_SCENES_FILE_BYTES: u64 = 4 << 30;

fn tensor<'a>(st: &'a SafeTensors<'a>, name: &str, origin: &str) -> Result<TensorView<'a>> {
    st.tensor(name).map_err(|_| RspError::format(origin, format!("no tensor `{name}`")))
}

fn rank<const R: usize>(t: &TensorView<'_>, name: &str, dtype: Dtype, origin: &str) -> Result<[usize; R]> {
    if t.dtype() != dtype {
        return Err(RspError::format(origin, format!("tensor `{name}` has dtype {:?}, expected {dtype:?}", t.dtype())));
    }
    <[usize; R]>::try_from(t.shape())
        .map_err(|_| RspError::shape(format!("tensor `{name}` of {origin}"), format!("rank {R}"), t.shape()))
}

fn f32s(t: &TensorView<'_>) -> Vec<f32> {
    t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn i32s(t: &TensorView<'_>) -> Vec<i32> {
    t.data().chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

impl Scenes {
    /// Reads a scenes file (at most [`MAX_SCENES_FILE_BYTES`]).
    ///
    /// # Errors
    /// [`RspError::Io`] if it cannot be read, [`RspError::Format`] or
    /// [`RspError::Shape`] if it is not a valid scenes file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let io = |source| RspError::Io { path: shown.clone(), source };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_SCENES_FILE_BYTES {
            return Err(RspError::format(
                &shown,
                format!("{size} bytes is larger than the {MAX_SCENES_FILE_BYTES} bytes a scenes file may have"),
            ));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::from_bytes(&bytes, &shown)
    }

    /// Parses a scenes file held in memory; `origin` names it in errors.
    ///
    /// ```
    /// let err = rsp::eval::dataset::Scenes::from_bytes(b"not safetensors", "<memory>").unwrap_err();
    /// assert!(matches!(err, rsp::RspError::Format { .. }));
    /// ```
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let st = crate::io::safetensors::deserialize(bytes, origin)?;
        let t_input = tensor(&st, "input", origin)?;
        let [n, c, h, w] = rank::<4>(&t_input, "input", Dtype::F32, origin)?;
        let t_labels = tensor(&st, "labels", origin)?;
        let [ln, k] = rank::<2>(&t_labels, "labels", Dtype::F32, origin)?;
        let t_boxes = tensor(&st, "boxes", origin)?;
        let [bn, slots, five] = rank::<3>(&t_boxes, "boxes", Dtype::I32, origin)?;
        let t_masks = tensor(&st, "masks", origin)?;
        let mask_shape = rank::<4>(&t_masks, "masks", Dtype::U8, origin)?;
        let context = |name: &str| format!("tensor `{name}` of {origin}");
        if n == 0 || c == 0 || h == 0 || w == 0 {
            return Err(RspError::shape(context("input"), "(N, C, H, W) with every size ≥ 1", &[n, c, h, w]));
        }
        if ln != n || k == 0 {
            return Err(RspError::shape(context("labels"), format!("({n}, K) with K ≥ 1"), &[ln, k]));
        }
        if bn != n || five != 5 {
            return Err(RspError::shape(context("boxes"), format!("({n}, S, 5)"), &[bn, slots, five]));
        }
        if mask_shape != [n, slots, h, w] {
            return Err(RspError::shape(context("masks"), format!("({n}, {slots}, {h}, {w})"), &mask_shape));
        }
        let logits = match st.tensor("logits") {
            Ok(t) => {
                let shape = rank::<2>(&t, "logits", Dtype::F32, origin)?;
                if shape != [n, k] {
                    return Err(RspError::shape(context("logits"), format!("({n}, {k})"), &shape));
                }
                Some(Array2::from_shape_vec((n, k), f32s(&t)).expect("checked shape"))
            }
            Err(_) => None,
        };
        let inputs = Array4::from_shape_vec((n, c, h, w), f32s(&t_input)).expect("checked shape");
        if let Some(index) = inputs.iter().position(|v| !v.is_finite()) {
            return Err(RspError::NonFinite { tensor: format!("input of {origin}"), index });
        }
        let labels = Array2::from_shape_vec((n, k), f32s(&t_labels)).expect("checked shape");
        let boxes = Array3::from_shape_vec((n, slots, 5), i32s(&t_boxes)).expect("checked shape");
        let masks = Array4::from_shape_vec((n, slots, h, w), t_masks.data().to_vec()).expect("checked shape");
        for (i, scene) in boxes.axis_iter(Axis(0)).enumerate() {
            let mut seen = vec![false; k];
            for (s, b) in scene.axis_iter(Axis(0)).enumerate() {
                let (class, y0, x0, y1, x1) = (b[0], b[1], b[2], b[3], b[4]);
                if class == -1 {
                    continue;
                }
                let fits = |lo: i32, hi: i32, size: usize| lo >= 0 && lo < hi && (hi as usize) <= size;
                if class < 0 || class as usize >= k || !fits(y0, y1, h) || !fits(x0, x1, w) {
                    return Err(RspError::format(
                        origin,
                        format!("scene {i} slot {s}: box {:?} is not a class in 0..{k} (or −1) with 0 ≤ y0 < y1 ≤ {h}, 0 ≤ x0 < x1 ≤ {w}", b.to_vec()),
                    ));
                }
                // The target of a pair is its class: two objects of one class
                // would be scored against one map with two answers.
                if std::mem::replace(&mut seen[class as usize], true) {
                    return Err(RspError::format(
                        origin,
                        format!("scene {i} has two objects of class {class}; the benchmark needs one object per class"),
                    ));
                }
                if masks.index_axis(Axis(0), i).index_axis(Axis(0), s).iter().all(|&m| m == 0) {
                    return Err(RspError::format(
                        origin,
                        format!(
                            "scene {i} slot {s}: the object (class {class}) has an empty mask, which mIoU cannot score"
                        ),
                    ));
                }
            }
        }
        Ok(Scenes { inputs, labels, boxes, masks, logits })
    }

    /// Number of scenes.
    pub fn len(&self) -> usize {
        self.inputs.shape()[0]
    }

    /// True for a file without scenes (never, after a successful load).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of classes (the labels' width).
    pub fn classes(&self) -> usize {
        self.labels.shape()[1]
    }

    /// Scene `i`'s image `(3, H, W)`. Panics past the end (use `i < len()`).
    pub fn input(&self, i: usize) -> ArrayView3<'_, f32> {
        self.inputs.index_axis(Axis(0), i)
    }

    /// The objects of scene `i`: `(slot, box)` for each used slot, in slot order.
    pub fn slots(&self, i: usize) -> Vec<(usize, BoxRegion)> {
        self.boxes
            .index_axis(Axis(0), i)
            .axis_iter(Axis(0))
            .enumerate()
            .filter(|(_, b)| b[0] >= 0)
            .map(|(s, b)| {
                (
                    s,
                    BoxRegion {
                        class: b[0] as usize,
                        y0: b[1] as usize,
                        x0: b[2] as usize,
                        y1: b[3] as usize,
                        x1: b[4] as usize,
                    },
                )
            })
            .collect()
    }

    /// The boxes of scene `i`'s objects, in slot order.
    pub fn objects(&self, i: usize) -> Vec<BoxRegion> {
        self.slots(i).into_iter().map(|(_, b)| b).collect()
    }

    /// The pixel mask of scene `i`, slot `slot` `(H, W)`.
    pub fn mask(&self, i: usize, slot: usize) -> ArrayView2<'_, u8> {
        self.masks.index_axis(Axis(0), i).index_axis_move(Axis(0), slot)
    }
}

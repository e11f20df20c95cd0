//! [`Explanation`]: what one attribution call returns, for every method.

use super::Method;
use crate::float::Float;
use ndarray::{Array2, Array3, Array4, ArrayD, ArrayView2, Axis};

/// The result of [`crate::Network::explain`] for a batch of `N` samples, the
/// same type for every [`Method`].
///
/// The input relevance is bi-polar: positive values are evidence **for** the
/// target, negative values are **hostile** evidence (what speaks against it),
/// so its sum need not be positive. [`Explanation::positive`] and
/// [`Explanation::hostile`] split it; [`Explanation::heatmap`] is the picture.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Explanation<T: Float> {
    /// The method that produced it.
    pub method: Method,
    /// The input relevance `(N, C, H, W)` (the gradient for
    /// [`Method::Gradient`]); `None` for Grad-CAM, which has only a map.
    pub relevance: Option<Array4<T>>,
    /// The maps `(N, H, W)`: the channel sum of the input relevance, or
    /// Grad-CAM's upsampled map.
    pub heatmaps: Array3<T>,
    /// The logits `(N, classes)`.
    pub logits: Array2<T>,
    /// The class explained for each sample.
    pub targets: Vec<usize>,
    /// The start layer (RSP and Grad-CAM).
    pub start_layer: Option<usize>,
    /// The relevance at the start layer's output `(N, …)` (RSP and Grad-CAM;
    /// for Grad-CAM the unnormalised `A ⊙ α`).
    pub start_relevance: Option<ArrayD<T>>,
    /// The hostile classes used for each sample (RSP's comparative start;
    /// empty otherwise).
    pub hostile_classes: Vec<Vec<usize>>,
    /// Per sample, per node: the relevance the node's RSP rule returned at
    /// its first input (only with [`crate::RspOptions::keep_layer_relevances`]).
    pub layer_relevances: Vec<Vec<Option<ArrayD<T>>>>,
}

impl<T: Float> Explanation<T> {
    /// `max(R, 0)`: the evidence for the target (`None` for Grad-CAM).
    pub fn positive(&self) -> Option<Array4<T>> {
        self.relevance.as_ref().map(|r| r.mapv(|v| v.max(T::zero())))
    }

    /// `min(R, 0)`: the hostile evidence, ≤ 0 (`None` for Grad-CAM).
    pub fn hostile(&self) -> Option<Array4<T>> {
        self.relevance.as_ref().map(|r| r.mapv(|v| v.min(T::zero())))
    }

    /// The map of sample `n` (`H × W`), or `None` past the batch.
    pub fn heatmap(&self, n: usize) -> Option<ArrayView2<'_, T>> {
        (n < self.heatmaps.shape()[0]).then(|| self.heatmaps.index_axis(Axis(0), n))
    }

    /// The map of sample `n` as a picture: red for the target, blue for
    /// hostile evidence, white for none, symmetric around zero (see
    /// [`crate::render::heatmap_rgb`]); `None` past the batch.
    ///
    /// ```
    /// # use rsp::layers::{Flatten, Layer, Linear};
    /// let fc = Linear::new("fc", ndarray::arr2(&[[2.0f32, -1.0]]), None).unwrap();
    /// let net = rsp::Network::sequential(vec![Box::new(Flatten) as Box<dyn Layer<f32>>, Box::new(fc)]);
    /// let x = ndarray::Array4::from_shape_vec((1, 1, 1, 2), vec![3.0, 1.0]).unwrap();
    /// let e = net.explain(&x, 0, &rsp::Method::GradientXInput).unwrap();
    /// let img = e.heatmap_image(0, rsp::render::Scale::MaxAbs).unwrap();
    /// assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]); // the strongest positive value: full red
    /// // e.heatmap_image(0, Scale::MaxAbs).unwrap().save("map.png") writes it.
    /// ```
    #[cfg(feature = "image")]
    pub fn heatmap_image(&self, n: usize, scale: crate::render::Scale) -> Option<image::RgbImage> {
        let h = self.heatmap(n)?.mapv(|v| v.to_f64_exact() as f32);
        Some(crate::render::heatmap_rgb(h.view(), scale))
    }
}

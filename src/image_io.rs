//! Loading images as normalised NCHW tensors, and turning tensors back into
//! pictures.
//!
//! The networks this crate explains take `(1, 3, H, W)` `f32` tensors whose
//! channels were normalised the way the network was trained. This module does
//! that preprocessing ([`load_image`], [`image_to_tensor`]) and its inverse
//! ([`tensor_to_rgb`]) for display.

use std::path::Path;

use image::imageops::FilterType;
use image::{ImageError, ImageFormat, ImageReader, Rgb, RgbImage};
use ndarray::{Array4, ArrayView3};

use crate::error::{Result, RspError};

/// How RGB values in `[0, 1]` are normalised per channel: `(rgb - mean) / std`.
///
/// ```
/// use rsp::image_io::Normalization;
/// let (mean, std) = Normalization::Scenes.mean_std();
/// assert_eq!((mean, std), ([0.3; 3], [0.3; 3]));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalization {
    /// torchvision's ImageNet statistics: mean `(0.485, 0.456, 0.406)`,
    /// std `(0.229, 0.224, 0.225)`.
    ImageNet,
    /// The scene-classification models' `(rgb - 0.3) / 0.3` on every channel.
    Scenes,
    /// Any other per-channel statistics. Every `std` must be finite and
    /// positive (see [`Normalization::validate`]).
    Custom {
        /// Per-channel mean (R, G, B), subtracted first.
        mean: [f32; 3],
        /// Per-channel standard deviation (R, G, B), divided by second.
        std: [f32; 3],
    },
    /// Leave values in `[0, 1]`.
    None,
}

impl Normalization {
    /// The per-channel `(mean, std)` this normalisation applies.
    ///
    /// ```
    /// use rsp::image_io::Normalization;
    /// assert_eq!(Normalization::None.mean_std(), ([0.0; 3], [1.0; 3]));
    /// ```
    pub fn mean_std(&self) -> ([f32; 3], [f32; 3]) {
        match *self {
            Normalization::ImageNet => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            Normalization::Scenes => ([0.3; 3], [0.3; 3]),
            Normalization::Custom { mean, std } => (mean, std),
            Normalization::None => ([0.0; 3], [1.0; 3]),
        }
    }

    /// Checks that the statistics are usable: finite means and finite,
    /// positive standard deviations (a zero std would divide by zero).
    ///
    /// ```
    /// use rsp::image_io::Normalization;
    /// assert!(Normalization::ImageNet.validate().is_ok());
    /// let bad = Normalization::Custom { mean: [0.5; 3], std: [0.2, 0.0, 0.2] };
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        let (mean, std) = self.mean_std();
        if mean.iter().any(|m| !m.is_finite()) {
            return Err(RspError::InvalidArgument(format!("normalisation mean must be finite, got {mean:?}")));
        }
        if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(RspError::InvalidArgument(format!(
                "normalisation std must be finite and positive, got {std:?}"
            )));
        }
        Ok(())
    }
}

/// Loads an image file (PNG or JPEG) as a `(1, 3, H, W)` normalised tensor.
///
/// `size` is `(height, width)`; when given, the image is resized to it with a
/// triangle (bilinear) filter, which also antialiases when shrinking. Grey and
/// RGBA images are converted to RGB (alpha is dropped).
///
/// # Errors
/// [`RspError::Io`] if the file cannot be read, [`RspError::Format`] if it is
/// not a decodable image or is truncated or corrupt, [`RspError::InvalidArgument`] for a zero target size
/// or unusable normalisation statistics.
///
/// ```
/// use rsp::image_io::{load_image, Normalization};
/// # let dir = std::env::temp_dir().join("rsp_doc_load_image");
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let path = dir.join("red.png");
/// # image::RgbImage::from_pixel(4, 6, image::Rgb([255, 0, 0])).save(&path).unwrap();
/// let x = load_image(&path, Some((2, 3)), &Normalization::None)?;
/// assert_eq!(x.shape(), &[1, 3, 2, 3]);
/// assert_eq!(x[[0, 0, 1, 2]], 1.0); // red channel of a pure red image
/// # Ok::<(), rsp::RspError>(())
/// ```
pub fn load_image(path: &Path, size: Option<(u32, u32)>, norm: &Normalization) -> Result<Array4<f32>> {
    norm.validate()?;
    if let Some((h, w)) = size {
        if h == 0 || w == 0 {
            return Err(RspError::InvalidArgument(format!(
                "target image size must be non-zero, got {h}x{w} (height x width)"
            )));
        }
    }
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| RspError::Io { path: shown.clone(), source })?;
    let decoded = decode_image(&bytes).map_err(|reason| RspError::format(shown, reason))?;
    let mut rgb = decoded.to_rgb8();
    if let Some((h, w)) = size {
        if rgb.dimensions() != (w, h) {
            rgb = image::imageops::resize(&rgb, w, h, FilterType::Triangle);
        }
    }
    Ok(image_to_tensor(&rgb, norm))
}

/// Decodes PNG or JPEG bytes, refusing a truncated or corrupt file: every
/// decoder error (a read past the end included) is the file's fault, and a
/// JPEG must end its compressed data with an end-of-image marker (the JPEG
/// decoder fills missing rows in silently).
fn decode_image(bytes: &[u8]) -> std::result::Result<image::DynamicImage, String> {
    // Trust the bytes over the extension: files are often misnamed.
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("not a readable image ({e})"))?;
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_has_end_marker(bytes) {
        return Err("truncated JPEG: the compressed data has no end-of-image marker".into());
    }
    reader.decode().map_err(|e| match e {
        ImageError::IoError(e) => format!("truncated or corrupt image ({e})"),
        other => format!("corrupt or unsupported image ({other})"),
    })
}

/// Whether a JPEG's compressed data end with an EOI marker (`FF D9`). The
/// segments before the first scan are skipped by their lengths (an EXIF
/// thumbnail holds its own EOI); inside scan data a literal `FF` is always
/// followed by `00` or a marker, so the first `FF D9` after it is the end.
fn jpeg_has_end_marker(bytes: &[u8]) -> bool {
    let mut at = 2; // after SOI
    loop {
        match bytes.get(at..at + 4) {
            Some([0xFF, 0xDA, hi, lo]) => {
                at += 2 + usize::from(u16::from_be_bytes([*hi, *lo]));
                break;
            }
            Some([0xFF, 0xFF, ..]) => at += 1, // fill byte
            Some([0xFF, marker, hi, lo]) if *marker != 0 => {
                at += 2 + usize::from(u16::from_be_bytes([*hi, *lo]));
            }
            _ => return false,
        }
    }
    bytes.get(at..).is_some_and(|scan| scan.windows(2).any(|w| w == [0xFF, 0xD9]))
}

/// Converts an RGB image to a `(1, 3, H, W)` tensor: bytes are scaled to
/// `[0, 1]`, then normalised with `norm`.
///
/// Statistics that fail [`Normalization::validate`] give non-finite values;
/// [`load_image`] checks them first.
///
/// ```
/// use rsp::image_io::{image_to_tensor, Normalization};
/// let img = image::RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 51]));
/// let x = image_to_tensor(&img, &Normalization::Scenes);
/// // (1.0 - 0.3) / 0.3, (0.0 - 0.3) / 0.3, (0.2 - 0.3) / 0.3
/// assert!((x[[0, 0, 0, 0]] - 7.0 / 3.0).abs() < 1e-6);
/// assert!((x[[0, 1, 0, 0]] + 1.0).abs() < 1e-6);
/// assert!((x[[0, 2, 0, 0]] + 1.0 / 3.0).abs() < 1e-6);
/// ```
pub fn image_to_tensor(img: &RgbImage, norm: &Normalization) -> Array4<f32> {
    let (w, h) = img.dimensions();
    let (mean, std) = norm.mean_std();
    Array4::from_shape_fn((1, 3, h as usize, w as usize), |(_, c, y, x)| {
        let v = f32::from(img.get_pixel(x as u32, y as u32)[c]) / 255.0;
        (v - mean[c]) / std[c]
    })
}

/// Converts a `(3, H, W)` normalised tensor back to an RGB image: undoes
/// `norm`, clamps to `[0, 1]` and rounds to bytes. NaN becomes 0.
///
/// # Errors
/// [`RspError::Shape`] if the tensor does not have 3 channels or is too large
/// for an image.
///
/// ```
/// use ndarray::Array3;
/// use rsp::image_io::{tensor_to_rgb, Normalization};
/// let x = Array3::from_shape_vec((3, 1, 2), vec![2.0, -1.0, 0.0, 0.5, -9.0, 1.0]).unwrap();
/// let img = tensor_to_rgb(x.view(), &Normalization::Scenes)?;
/// // red: 2*0.3+0.3 = 0.9 -> 230; -1*0.3+0.3 = 0 -> 0
/// assert_eq!(img.get_pixel(0, 0).0, [230, 77, 0]);
/// assert_eq!(img.get_pixel(1, 0).0, [0, 115, 153]);
/// # Ok::<(), rsp::RspError>(())
/// ```
pub fn tensor_to_rgb(x: ArrayView3<f32>, norm: &Normalization) -> Result<RgbImage> {
    let shape = x.shape();
    let (h, w) = (shape[1], shape[2]);
    let too_big = u32::try_from(h).is_err() || u32::try_from(w).is_err();
    if shape[0] != 3 || too_big {
        return Err(RspError::shape("tensor_to_rgb input", "(3, H, W) with H, W < 2^32", shape));
    }
    let (mean, std) = norm.mean_std();
    let to_byte = |c: usize, v: f32| {
        let v = (v * std[c] + mean[c]).clamp(0.0, 1.0);
        // `as u8` saturates and maps NaN to 0, so no value can panic here.
        (v * 255.0).round() as u8
    };
    Ok(RgbImage::from_fn(w as u32, h as u32, |px, py| {
        let (px, py) = (px as usize, py as usize);
        Rgb([to_byte(0, x[[0, py, px]]), to_byte(1, x[[1, py, px]]), to_byte(2, x[[2, py, px]])])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::Array3;

    /// Removed when the guard drops, also when the test panics.
    fn temp_dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("rsp-image-io-{name}-")).tempdir().unwrap()
    }

    #[test]
    fn imagenet_normalisation_of_known_pixel() {
        let img = RgbImage::from_pixel(2, 1, Rgb([255, 128, 0]));
        let x = image_to_tensor(&img, &Normalization::ImageNet);
        assert_eq!(x.shape(), &[1, 3, 1, 2]);
        assert_abs_diff_eq!(x[[0, 0, 0, 1]], (1.0 - 0.485) / 0.229, epsilon = 1e-6);
        assert_abs_diff_eq!(x[[0, 1, 0, 1]], (128.0 / 255.0 - 0.456) / 0.224, epsilon = 1e-6);
        assert_abs_diff_eq!(x[[0, 2, 0, 1]], -0.406 / 0.225, epsilon = 1e-6);
    }

    #[test]
    fn tensor_layout_is_nchw() {
        // 2 wide, 3 high; pixel (x, y) has red = 10*y + x.
        let img = RgbImage::from_fn(2, 3, |x, y| Rgb([(10 * y + x) as u8, 0, 255]));
        let x = image_to_tensor(&img, &Normalization::None);
        assert_eq!(x.shape(), &[1, 3, 3, 2]);
        assert_abs_diff_eq!(x[[0, 0, 2, 1]], 21.0 / 255.0, epsilon = 1e-7);
        assert_abs_diff_eq!(x[[0, 2, 1, 0]], 1.0);
    }

    #[test]
    fn round_trip_is_exact_for_every_normalisation() {
        let img = RgbImage::from_fn(5, 4, |x, y| Rgb([(x * 50) as u8, (y * 60) as u8, (x * y * 10) as u8]));
        let custom = Normalization::Custom { mean: [0.1, 0.2, 0.3], std: [0.5, 0.25, 2.0] };
        for norm in [Normalization::ImageNet, Normalization::Scenes, custom, Normalization::None] {
            let x = image_to_tensor(&img, &norm);
            let back = tensor_to_rgb(x.index_axis(ndarray::Axis(0), 0), &norm).unwrap();
            assert_eq!(back, img, "{norm:?}");
        }
    }

    #[test]
    fn tensor_to_rgb_clamps_and_rejects_bad_shapes() {
        let x = Array3::from_shape_vec((3, 1, 1), vec![5.0, -5.0, f32::NAN]).unwrap();
        let img = tensor_to_rgb(x.view(), &Normalization::None).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]);
        let four = Array3::<f32>::zeros((4, 2, 2));
        assert!(matches!(tensor_to_rgb(four.view(), &Normalization::None), Err(RspError::Shape { .. })));
    }

    #[test]
    fn load_png_with_and_without_resize() {
        let scratch_dir = temp_dir("png");
        let dir = scratch_dir.path();
        let path = dir.join("grad.png");
        let img = RgbImage::from_fn(4, 2, |x, _| Rgb([(x * 60) as u8, 10, 20]));
        img.save(&path).unwrap();

        let x = load_image(&path, None, &Normalization::None).unwrap();
        assert_eq!(x.shape(), &[1, 3, 2, 4]);
        assert_abs_diff_eq!(x[[0, 0, 1, 3]], 180.0 / 255.0, epsilon = 1e-7);

        // Downscale 4x2 -> 2x1: a uniform image must stay uniform, and the
        // horizontal ramp must stay increasing.
        let y = load_image(&path, Some((1, 2)), &Normalization::None).unwrap();
        assert_eq!(y.shape(), &[1, 3, 1, 2]);
        assert_abs_diff_eq!(y[[0, 1, 0, 0]], 10.0 / 255.0, epsilon = 1e-7);
        assert_abs_diff_eq!(y[[0, 2, 0, 1]], 20.0 / 255.0, epsilon = 1e-7);
        assert!(y[[0, 0, 0, 0]] < y[[0, 0, 0, 1]]);
    }

    #[test]
    fn load_grey_and_rgba_as_rgb() {
        let scratch_dir = temp_dir("modes");
        let dir = scratch_dir.path();
        let grey = dir.join("grey.png");
        image::GrayImage::from_pixel(2, 2, image::Luma([51])).save(&grey).unwrap();
        let x = load_image(&grey, None, &Normalization::None).unwrap();
        assert_eq!(x.shape(), &[1, 3, 2, 2]);
        assert!(x.iter().all(|&v| (v - 0.2).abs() < 1e-7));
        // Alpha is dropped, not premultiplied.
        let rgba = dir.join("rgba.png");
        image::RgbaImage::from_pixel(1, 1, image::Rgba([255, 0, 102, 0])).save(&rgba).unwrap();
        let x = load_image(&rgba, None, &Normalization::None).unwrap();
        assert_eq!(x.iter().copied().collect::<Vec<_>>(), vec![1.0, 0.0, 0.4]);
    }

    #[test]
    fn load_jpeg_of_flat_colour() {
        let scratch_dir = temp_dir("jpeg");
        let dir = scratch_dir.path();
        let path = dir.join("grey.jpg");
        RgbImage::from_pixel(16, 16, Rgb([128, 128, 128])).save(&path).unwrap();
        let x = load_image(&path, Some((8, 8)), &Normalization::None).unwrap();
        assert_eq!(x.shape(), &[1, 3, 8, 8]);
        // JPEG is lossy, but a flat grey survives within a couple of levels.
        assert!(x.iter().all(|v| (v - 128.0 / 255.0).abs() < 3.0 / 255.0));
    }

    #[test]
    fn load_errors_are_typed_and_name_the_path() {
        let scratch_dir = temp_dir("errors");
        let dir = scratch_dir.path();
        let missing = dir.join("nope.png");
        match load_image(&missing, None, &Normalization::None) {
            Err(RspError::Io { path, .. }) => assert!(path.contains("nope.png")),
            other => panic!("expected Io error, got {other:?}"),
        }
        let garbage = dir.join("garbage.png");
        std::fs::write(&garbage, b"this is not an image").unwrap();
        match load_image(&garbage, None, &Normalization::None) {
            Err(RspError::Format { path, .. }) => assert!(path.contains("garbage.png")),
            other => panic!("expected Format error, got {other:?}"),
        }
        let ok = dir.join("ok.png");
        RgbImage::new(2, 2).save(&ok).unwrap();
        assert!(matches!(load_image(&ok, Some((0, 3)), &Normalization::None), Err(RspError::InvalidArgument(_))));
        let bad = Normalization::Custom { mean: [0.0; 3], std: [1.0, -1.0, 1.0] };
        assert!(matches!(load_image(&ok, None, &bad), Err(RspError::InvalidArgument(_))));
    }
}

//! Heatmap rendering: a diverging colour map, overlays on the input image, and
//! side-by-side figures with captions.
//!
//! Attribution maps are bi-polar, so they are drawn with a colour map centred
//! at zero: positive relevance is red, negative is blue and zero is white.
//! Captions use the public-domain 8x8 bitmap font of the `font8x8` crate drawn
//! at 2x, so rendering needs no system fonts and is identical everywhere.

use std::path::Path;

use font8x8::UnicodeFonts;
use image::imageops::FilterType;
use image::{ImageError, ImageFormat, Rgb, RgbImage};
use ndarray::ArrayView2;

use crate::error::{Result, RspError};

/// How heatmap values are mapped onto `[-1, 1]` before colouring. Both are
/// symmetric around zero so that white always means "no relevance".
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// Divide by the largest finite `|value|`.
    MaxAbs,
    /// Divide by the given percentile (0–100, linear interpolation as numpy's
    /// default) of the finite `|value|`s; larger values saturate. `99.5`
    /// keeps a few extreme pixels from washing out the rest. Out-of-range
    /// percentiles are clamped; NaN counts as 100.
    Percentile(f32),
}

impl Scale {
    /// The positive divisor this scale gives for `h`, or `None` when every
    /// finite value is zero (the map is then drawn all white).
    ///
    /// A percentile that is zero while the map is not (a sparse map) falls
    /// back to the maximum, so the map never turns into solid colour.
    ///
    /// ```
    /// use ndarray::array;
    /// use rsp::render::Scale;
    /// let h = array![[1.0_f32, -4.0], [2.0, 3.0]];
    /// assert_eq!(Scale::MaxAbs.divisor(h.view()), Some(4.0));
    /// assert_eq!(Scale::Percentile(50.0).divisor(h.view()), Some(2.5));
    /// ```
    pub fn divisor(&self, h: ArrayView2<f32>) -> Option<f32> {
        let mut mags: Vec<f32> = h.iter().filter(|v| v.is_finite()).map(|v| v.abs()).collect();
        let max = mags.iter().copied().fold(0.0_f32, f32::max);
        if max <= 0.0 {
            return None;
        }
        match *self {
            Scale::MaxAbs => Some(max),
            Scale::Percentile(p) => {
                let p = if p.is_nan() { 100.0 } else { p.clamp(0.0, 100.0) };
                mags.sort_by(f32::total_cmp);
                let q = percentile_sorted(&mags, p);
                Some(if q > 0.0 { q } else { max })
            }
        }
    }
}

/// numpy's default ("linear") percentile of already sorted, non-empty data.
fn percentile_sorted(sorted: &[f32], p: f32) -> f32 {
    let pos = f64::from(p) / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    (f64::from(sorted[lo]) + frac * (f64::from(sorted[hi]) - f64::from(sorted[lo]))) as f32
}

/// The diverging "bwr" colour map: `-1` is blue `(0, 0, 255)`, `0` is white,
/// `1` is red `(255, 0, 0)`, linear in between (rounded to bytes). Only an
/// exact zero is pure white: any nonzero value keeps a tint of its sign's hue.
/// Values outside `[-1, 1]` are clamped and NaN is drawn white.
///
/// ```
/// use rsp::render::bwr;
/// assert_eq!(bwr(0.0).0, [255, 255, 255]);
/// assert_eq!(bwr(1.0).0, [255, 0, 0]);
/// assert_eq!(bwr(-0.5).0, [128, 128, 255]);
/// ```
pub fn bwr(v: f32) -> Rgb<u8> {
    if v.is_nan() {
        return Rgb([255, 255, 255]);
    }
    let v = v.clamp(-1.0, 1.0);
    // The fading channels go from 255 at zero to 0 at the extreme.
    let mut fade = ((1.0 - v.abs()) * 255.0).round() as u8;
    if v != 0.0 {
        // Keep the sign visible: only an exact zero is pure white.
        fade = fade.min(254);
    }
    if v >= 0.0 {
        Rgb([255, fade, fade])
    } else {
        Rgb([fade, fade, 255])
    }
}

/// Colours a heatmap (`H x W`, row = y) with [`bwr`] after dividing by the
/// symmetric `scale`. An all-zero map is all white; NaN pixels are white and
/// infinities saturate.
///
/// ```
/// use ndarray::array;
/// use rsp::render::{heatmap_rgb, Scale};
/// let h = array![[2.0_f32, 0.0, -1.0]];
/// let img = heatmap_rgb(h.view(), Scale::MaxAbs);
/// assert_eq!((img.width(), img.height()), (3, 1));
/// assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]);
/// assert_eq!(img.get_pixel(1, 0).0, [255, 255, 255]);
/// assert_eq!(img.get_pixel(2, 0).0, [128, 128, 255]);
/// ```
pub fn heatmap_rgb(h: ArrayView2<f32>, scale: Scale) -> RgbImage {
    let (rows, cols) = h.dim();
    let div = scale.divisor(h);
    // Dimensions beyond u32 cannot be an image; the clamp keeps indexing in
    // bounds instead of panicking.
    let (w, hgt) = (u32::try_from(cols).unwrap_or(u32::MAX), u32::try_from(rows).unwrap_or(u32::MAX));
    RgbImage::from_fn(w, hgt, |x, y| {
        let v = h[[y as usize, x as usize]];
        match div {
            Some(d) => bwr(v / d),
            None => bwr(if v.is_infinite() { v.signum() } else { 0.0 }),
        }
    })
}

/// Blends `heat` over a greyscale copy of `base`:
/// `alpha * heat + (1 - alpha) * grey(base)`, per channel, rounded.
///
/// Grey is ITU-R 601 luma (`0.299 R + 0.587 G + 0.114 B`, as PIL's `"L"`), so
/// the colours of the heatmap are not confused with the colours of the photo.
/// `base` is resized (triangle filter) to the size of `heat` if they differ.
/// `alpha` is clamped to `[0, 1]`; NaN counts as 1.
///
/// ```
/// use image::{Rgb, RgbImage};
/// use rsp::render::overlay;
/// let heat = RgbImage::from_pixel(1, 1, Rgb([255, 0, 0]));
/// let base = RgbImage::from_pixel(1, 1, Rgb([100, 100, 100]));
/// // 0.6 * 255 + 0.4 * 100 = 193 and 0.6 * 0 + 0.4 * 100 = 40
/// assert_eq!(overlay(&heat, &base, 0.6).get_pixel(0, 0).0, [193, 40, 40]);
/// ```
pub fn overlay(heat: &RgbImage, base: &RgbImage, alpha: f32) -> RgbImage {
    let alpha = if alpha.is_nan() { 1.0 } else { alpha.clamp(0.0, 1.0) };
    let (w, h) = heat.dimensions();
    let resized;
    let base = if base.dimensions() == (w, h) || w == 0 || h == 0 {
        base
    } else {
        resized = image::imageops::resize(base, w, h, FilterType::Triangle);
        &resized
    };
    RgbImage::from_fn(w, h, |x, y| {
        let hp = heat.get_pixel(x, y).0;
        let bp = base.get_pixel(x, y).0;
        let grey = 0.299 * f32::from(bp[0]) + 0.587 * f32::from(bp[1]) + 0.114 * f32::from(bp[2]);
        let mix = |c: u8| (alpha * f32::from(c) + (1.0 - alpha) * grey).round().clamp(0.0, 255.0) as u8;
        Rgb([mix(hp[0]), mix(hp[1]), mix(hp[2])])
    })
}

/// Writes `img` as a PNG file.
///
/// # Errors
/// [`RspError::InvalidArgument`] for an image with no pixels (PNG cannot hold
/// one), [`RspError::Io`] if the file cannot be written or encoding fails.
/// The file is written atomically ([`crate::io::atomic::write_atomic`]): a
/// failure leaves the previous file intact.
///
/// ```
/// use rsp::render::save_png;
/// let path = std::env::temp_dir().join("rsp_doc_save_png.png");
/// save_png(&image::RgbImage::new(2, 2), &path)?;
/// assert!(save_png(&image::RgbImage::new(0, 2), &path).is_err());
/// # Ok::<(), rsp::RspError>(())
/// ```
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    if img.width() == 0 || img.height() == 0 {
        return Err(RspError::InvalidArgument(format!(
            "cannot save an empty {}x{} image to {}",
            img.width(),
            img.height(),
            path.display()
        )));
    }
    // Atomically: a failed write leaves the previous file intact.
    crate::io::atomic::write_atomic(path, |w| {
        img.write_to(w, ImageFormat::Png).map_err(|e| match e {
            ImageError::IoError(source) => source,
            other => std::io::Error::other(other),
        })
    })
}

/// Pixels between panels and around the figure.
const GAP: u32 = 8;
/// Each font pixel is drawn as a `TEXT_SCALE x TEXT_SCALE` block.
const TEXT_SCALE: u32 = 2;
/// Width and height of one character cell on screen.
const GLYPH: u32 = 8 * TEXT_SCALE;
/// Vertical distance between caption lines.
const LINE_HEIGHT: u32 = GLYPH + 2;
/// Captions wrap onto at most this many lines; the rest is cut with "…".
const MAX_CAPTION_LINES: usize = 3;
/// font8x8 has no "…", so it is drawn as three dots on the baseline row.
const ELLIPSIS: [u8; 8] = [0, 0, 0, 0, 0, 0, 0b1001_0010, 0];

/// A row of equally sized image panels, each with a caption under it.
///
/// Panels are scaled with nearest-neighbour sampling, so heatmap pixels stay
/// crisp, until their longer side is `panel_size`, and centred in a
/// `panel_size` square. Captions are word-wrapped to the panel width (at most
/// three lines, then cut with "…"), drawn in black on white.
///
/// ```
/// use image::{Rgb, RgbImage};
/// use rsp::render::Figure;
/// let mut fig = Figure::new(64);
/// fig.add_panel(RgbImage::from_pixel(8, 8, Rgb([255, 0, 0])), "input")
///     .add_panel(RgbImage::from_pixel(8, 8, Rgb([0, 0, 255])), "RSP");
/// let img = fig.render();
/// assert_eq!(img.width(), 8 + 64 + 8 + 64 + 8);
/// assert_eq!(img.get_pixel(8 + 10, 8 + 10).0, [255, 0, 0]);
/// ```
#[derive(Debug, Clone)]
pub struct Figure {
    panel_size: u32,
    panels: Vec<(RgbImage, String)>,
}

impl Figure {
    /// An empty figure whose panels are `panel_size` pixels square (at least 1).
    ///
    /// ```
    /// let fig = rsp::render::Figure::new(128);
    /// assert_eq!(fig.len(), 0);
    /// ```
    pub fn new(panel_size: u32) -> Self {
        Figure { panel_size: panel_size.max(1), panels: Vec::new() }
    }

    /// Appends a panel to the right of the existing ones.
    ///
    /// ```
    /// let mut fig = rsp::render::Figure::new(32);
    /// fig.add_panel(image::RgbImage::new(4, 4), "class 3");
    /// assert_eq!(fig.len(), 1);
    /// ```
    pub fn add_panel(&mut self, img: RgbImage, caption: impl Into<String>) -> &mut Self {
        self.panels.push((img, caption.into()));
        self
    }

    /// Number of panels.
    ///
    /// ```
    /// assert_eq!(rsp::render::Figure::new(8).len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.panels.len()
    }

    /// Whether the figure has no panels.
    ///
    /// ```
    /// assert!(rsp::render::Figure::new(8).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.panels.is_empty()
    }

    /// Draws the figure on a white background. An empty figure is a blank
    /// `GAP x GAP` (8 x 8) image.
    ///
    /// ```
    /// let mut fig = rsp::render::Figure::new(160);
    /// fig.add_panel(image::RgbImage::new(10, 10), "a caption");
    /// let img = fig.render();
    /// // 160 px fit 10 glyphs of 16 px, so the caption takes one line.
    /// assert_eq!(img.height(), 8 + 160 + 4 + 18 + 8);
    /// ```
    pub fn render(&self) -> RgbImage {
        let size = self.panel_size;
        let max_chars = (size / GLYPH) as usize;
        let captions: Vec<Vec<String>> = self.panels.iter().map(|(_, c)| wrap_caption(c, max_chars)).collect();
        let lines = captions.iter().map(Vec::len).max().unwrap_or(0) as u32;
        let caption_h = if lines == 0 { 0 } else { 4 + lines * LINE_HEIGHT };
        let n = self.panels.len() as u32;
        if n == 0 {
            return RgbImage::from_pixel(GAP, GAP, Rgb([255, 255, 255]));
        }
        let width = GAP.saturating_add(n.saturating_mul(size.saturating_add(GAP)));
        let height = GAP.saturating_mul(2).saturating_add(size).saturating_add(caption_h);
        let mut out = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
        for (i, ((img, _), lines)) in self.panels.iter().zip(&captions).enumerate() {
            let left = GAP + i as u32 * (size + GAP);
            let scaled = resize_nearest_fit(img, size);
            let dx = left + (size - scaled.width()) / 2;
            let dy = GAP + (size - scaled.height()) / 2;
            image::imageops::replace(&mut out, &scaled, i64::from(dx), i64::from(dy));
            for (j, line) in lines.iter().enumerate() {
                let text_w = line.chars().count() as u32 * GLYPH;
                let x = left + (size.saturating_sub(text_w)) / 2;
                let y = GAP + size + 4 + j as u32 * LINE_HEIGHT;
                draw_text(&mut out, x, y, line, Rgb([0, 0, 0]));
            }
        }
        out
    }

    /// Renders the figure and writes it as a PNG file (see [`save_png`]).
    ///
    /// ```
    /// let mut fig = rsp::render::Figure::new(16);
    /// fig.add_panel(image::RgbImage::new(4, 4), "x");
    /// fig.save_png(std::env::temp_dir().join("rsp_doc_figure.png"))?;
    /// # Ok::<(), rsp::RspError>(())
    /// ```
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        save_png(&self.render(), path.as_ref())
    }
}

/// Nearest-neighbour resize so the longer side becomes `size` (aspect kept).
/// Each output pixel takes the source pixel under its centre, so integer
/// upscales replicate pixels exactly.
fn resize_nearest_fit(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
    }
    let longer = u64::from(w.max(h));
    let ow = ((u64::from(w) * u64::from(size) + longer / 2) / longer).max(1) as u32;
    let oh = ((u64::from(h) * u64::from(size) + longer / 2) / longer).max(1) as u32;
    let pick = |o: u32, out: u32, inp: u32| {
        let src = ((2 * u64::from(o) + 1) * u64::from(inp)) / (2 * u64::from(out));
        (src as u32).min(inp - 1)
    };
    RgbImage::from_fn(ow, oh, |x, y| *img.get_pixel(pick(x, ow, w), pick(y, oh, h)))
}

/// Greedy word wrap to `max_chars` per line, at most [`MAX_CAPTION_LINES`]
/// lines; words longer than a line are split, overflow is cut with "…".
fn wrap_caption(caption: &str, max_chars: usize) -> Vec<String> {
    if max_chars == 0 {
        return Vec::new();
    }
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in caption.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let cur_len = cur.chars().count();
            let sep = usize::from(cur_len > 0);
            if cur_len + sep + word.len() <= max_chars {
                if sep == 1 {
                    cur.push(' ');
                }
                cur.extend(word.iter());
                break;
            }
            if cur_len > 0 {
                lines.push(std::mem::take(&mut cur));
                continue;
            }
            // A word longer than a whole line: hard-break it.
            let rest = word.split_off(max_chars);
            lines.push(word.into_iter().collect());
            word = rest;
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    if lines.len() > MAX_CAPTION_LINES {
        let rest = lines[MAX_CAPTION_LINES - 1..].join(" ");
        lines.truncate(MAX_CAPTION_LINES - 1);
        lines.push(ellipsize(&rest, max_chars));
    }
    lines
}

/// Cuts `s` to `max_chars` characters, the last being "…", if it is longer.
fn ellipsize(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

/// The 8x8 bitmap of `c`: bit `i` of row byte `r` is the pixel at column `i`.
/// Characters the font lacks are drawn as "?".
fn glyph(c: char) -> [u8; 8] {
    if c == '…' {
        return ELLIPSIS;
    }
    font8x8::BASIC_FONTS
        .get(c)
        .or_else(|| font8x8::LATIN_FONTS.get(c))
        .or_else(|| font8x8::GREEK_FONTS.get(c))
        .or_else(|| font8x8::BASIC_FONTS.get('?'))
        .unwrap_or([0; 8])
}

/// Draws one line of text with its top-left corner at `(x, y)`, clipped to
/// the image.
fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str, colour: Rgb<u8>) {
    for (i, c) in text.chars().enumerate() {
        let gx = x.saturating_add((i as u32).saturating_mul(GLYPH));
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..8u32 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..TEXT_SCALE {
                    for dx in 0..TEXT_SCALE {
                        let px = gx.saturating_add(col * TEXT_SCALE + dx);
                        let py = y.saturating_add(row as u32 * TEXT_SCALE + dy);
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, colour);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    const WHITE: [u8; 3] = [255, 255, 255];

    #[test]
    fn bwr_ramp_hand_values() {
        assert_eq!(bwr(0.0).0, WHITE);
        assert_eq!(bwr(-0.0).0, WHITE);
        assert_eq!(bwr(1.0).0, [255, 0, 0]);
        assert_eq!(bwr(-1.0).0, [0, 0, 255]);
        assert_eq!(bwr(0.2).0, [255, 204, 204]);
        assert_eq!(bwr(-0.2).0, [204, 204, 255]);
        assert_eq!(bwr(7.0).0, [255, 0, 0]);
        assert_eq!(bwr(-7.0).0, [0, 0, 255]);
        assert_eq!(bwr(f32::NAN).0, WHITE);
    }

    #[test]
    fn sign_maps_to_hue_for_tiny_values() {
        // Even the smallest nonzero value must lean to its sign's hue.
        assert_eq!(bwr(1e-3).0, [255, 254, 254]);
        assert_eq!(bwr(-1e-30).0, [254, 254, 255]);
    }

    #[test]
    fn all_zero_map_is_white() {
        let h = Array2::<f32>::zeros((3, 4));
        for scale in [Scale::MaxAbs, Scale::Percentile(99.5)] {
            let img = heatmap_rgb(h.view(), scale);
            assert_eq!(img.dimensions(), (4, 3));
            assert!(img.pixels().all(|p| p.0 == WHITE));
        }
    }

    #[test]
    fn heatmap_orientation_and_scaling() {
        let h = array![[0.0_f32, 0.5], [-1.0, -0.25]];
        let img = heatmap_rgb(h.view(), Scale::MaxAbs);
        // x is the column, y the row.
        assert_eq!(img.get_pixel(0, 0).0, WHITE);
        assert_eq!(img.get_pixel(1, 0).0, [255, 128, 128]);
        assert_eq!(img.get_pixel(0, 1).0, [0, 0, 255]);
        assert_eq!(img.get_pixel(1, 1).0, [191, 191, 255]);
    }

    #[test]
    fn percentile_scale_matches_numpy_and_saturates() {
        // |h| sorted: 0,1,2,...,9. np.percentile(range(10), 50) = 4.5,
        // np.percentile(range(10), 90) = 8.1.
        let h = Array2::from_shape_fn((2, 5), |(r, c)| (r * 5 + c) as f32);
        assert_eq!(Scale::Percentile(50.0).divisor(h.view()), Some(4.5));
        assert!((Scale::Percentile(90.0).divisor(h.view()).unwrap() - 8.1).abs() < 1e-5);
        assert_eq!(Scale::Percentile(100.0).divisor(h.view()), Some(9.0));
        assert_eq!(Scale::Percentile(f32::NAN).divisor(h.view()), Some(9.0));
        let img = heatmap_rgb(h.view(), Scale::Percentile(50.0));
        // 9 / 4.5 > 1 saturates; 2 / 4.5 = 0.444 -> 255 * 0.556 = 141.7.
        assert_eq!(img.get_pixel(4, 1).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(2, 0).0, [255, 142, 142]);
    }

    #[test]
    fn sparse_map_percentile_falls_back_to_max() {
        let mut h = Array2::<f32>::zeros((10, 10));
        h[[3, 3]] = -2.0;
        assert_eq!(Scale::Percentile(50.0).divisor(h.view()), Some(2.0));
        let img = heatmap_rgb(h.view(), Scale::Percentile(50.0));
        assert_eq!(img.get_pixel(3, 3).0, [0, 0, 255]);
        assert_eq!(img.get_pixel(0, 0).0, WHITE);
    }

    #[test]
    fn non_finite_values_do_not_poison_the_scale() {
        let h = array![[f32::NAN, 2.0, f32::INFINITY, -1.0]];
        let img = heatmap_rgb(h.view(), Scale::MaxAbs);
        assert_eq!(img.get_pixel(0, 0).0, WHITE);
        assert_eq!(img.get_pixel(1, 0).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(2, 0).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(3, 0).0, [128, 128, 255]);
        let empty = Array2::<f32>::zeros((0, 0));
        assert_eq!(heatmap_rgb(empty.view(), Scale::MaxAbs).dimensions(), (0, 0));
    }

    #[test]
    fn overlay_blends_over_luma() {
        let heat = RgbImage::from_pixel(2, 1, Rgb([0, 0, 255]));
        // Luma of (200, 100, 50) = 59.8 + 58.7 + 5.7 = 124.2.
        let base = RgbImage::from_pixel(2, 1, Rgb([200, 100, 50]));
        assert_eq!(overlay(&heat, &base, 0.0).get_pixel(0, 0).0, [124, 124, 124]);
        assert_eq!(overlay(&heat, &base, 1.0).get_pixel(1, 0).0, [0, 0, 255]);
        // 0.25 * 255 + 0.75 * 124.2 = 156.9; 0.75 * 124.2 = 93.15.
        assert_eq!(overlay(&heat, &base, 0.25).get_pixel(0, 0).0, [93, 93, 157]);
        assert_eq!(overlay(&heat, &base, 5.0).get_pixel(0, 0).0, [0, 0, 255]);
        // A base of another size is resized: flat stays flat.
        let big = RgbImage::from_pixel(6, 3, Rgb([200, 100, 50]));
        assert_eq!(overlay(&heat, &big, 0.0).get_pixel(1, 0).0, [124, 124, 124]);
    }

    #[test]
    fn nearest_resize_replicates_pixels() {
        let img = RgbImage::from_fn(2, 2, |x, y| Rgb([(x * 100) as u8, (y * 100) as u8, 0]));
        let big = resize_nearest_fit(&img, 4);
        assert_eq!(big.dimensions(), (4, 4));
        for y in 0..4 {
            for x in 0..4 {
                assert_eq!(big.get_pixel(x, y), img.get_pixel(x / 2, y / 2));
            }
        }
        // Aspect ratio is kept: 4x2 into 8 -> 8x4.
        let wide = RgbImage::new(4, 2);
        assert_eq!(resize_nearest_fit(&wide, 8).dimensions(), (8, 4));
    }

    #[test]
    fn captions_wrap_and_truncate() {
        assert_eq!(wrap_caption("class 3", 10), vec!["class 3"]);
        assert_eq!(wrap_caption("RSP  positive  map", 8), vec!["RSP", "positive", "map"]);
        assert_eq!(wrap_caption("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap_caption("one two three four five", 5), vec!["one", "two", "thre…"]);
        assert_eq!(wrap_caption("anything", 0), Vec::<String>::new());
        assert_eq!(wrap_caption("", 5), Vec::<String>::new());
        assert_eq!(ellipsize("ab cd", 4), "ab…");
    }

    #[test]
    fn figure_layout_and_pixels() {
        let mut fig = Figure::new(32);
        let red = RgbImage::from_pixel(4, 4, Rgb([255, 0, 0]));
        let blue = RgbImage::from_pixel(2, 2, Rgb([0, 0, 255]));
        fig.add_panel(red, "I").add_panel(blue, "");
        let img = fig.render();
        // Two 32 px panels with 8 px gaps; one caption line (4 + 18 px).
        assert_eq!(img.dimensions(), (8 + 32 + 8 + 32 + 8, 8 + 32 + 4 + 18 + 8));
        assert_eq!(img.get_pixel(8, 8).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(8 + 31, 8 + 31).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(8 + 32, 8).0, WHITE);
        assert_eq!(img.get_pixel(48, 8).0, [0, 0, 255]);
        // The caption "I" is drawn in black somewhere below the first panel
        // and nothing black appears under the second.
        let black_in =
            |x0: u32, x1: u32| (44..img.height()).any(|y| (x0..x1).any(|x| img.get_pixel(x, y).0 == [0, 0, 0]));
        assert!(black_in(8, 40));
        assert!(!black_in(48, 80));
    }

    #[test]
    fn glyph_pixels_are_scaled_font_pixels() {
        // font8x8 'I': row 0 = 0x1E, i.e. columns 1..=4 set.
        let mut img = RgbImage::from_pixel(16, 16, Rgb(WHITE));
        draw_text(&mut img, 0, 0, "I", Rgb([0, 0, 0]));
        assert_eq!(glyph('I')[0], 0x1E);
        assert_eq!(img.get_pixel(1, 0).0, WHITE);
        assert_eq!(img.get_pixel(2, 0).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(9, 1).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(10, 1).0, WHITE);
        // Unknown characters fall back to '?', clipping never panics.
        assert_eq!(glyph('\u{4E2D}'), glyph('?'));
        draw_text(&mut img, 10, 10, "clipped", Rgb([0, 0, 0]));
    }

    #[test]
    fn empty_figure_and_save_round_trip() {
        let scratch_dir = tempfile::Builder::new().prefix("rsp-render-").tempdir().unwrap();
        let dir = scratch_dir.path();
        assert_eq!(Figure::new(0).render().dimensions(), (GAP, GAP));
        let mut fig = Figure::new(20);
        fig.add_panel(RgbImage::from_pixel(5, 5, Rgb([1, 2, 3])), "x");
        let path = dir.join("fig.png");
        fig.save_png(&path).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back, fig.render());
        let bad = dir.join("no_such_dir").join("x.png");
        assert!(matches!(fig.save_png(&bad), Err(RspError::Io { .. })));
    }
}

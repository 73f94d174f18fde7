//! Decoded RGB images and Pillow-compatible resampling.
//!
//! Vision-language processors resize with Pillow (`Image.resize`), and a model's image tokens
//! depend on every pixel they get, so the resampling here is Pillow's own algorithm: separable
//! convolution with the filter stretched by the downscale factor, coefficients normalised and
//! rounded to 22-bit fixed point, a horizontal pass then a vertical pass, each rounded to 8
//! bits. That reproduces Pillow's output exactly (tested against it), where a float resampler
//! would be off by a level here and there.

use std::path::Path;

use crate::error::VisionError;

/// Images past this many pixels are refused before decoding (a 50-megapixel photo is far more
/// than any processor keeps; a decompression bomb is refused instead of filling memory).
pub const MAX_PIXELS: u64 = 50_000_000;

/// An 8-bit RGB image, row-major, 3 bytes a pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Reads a PNG or JPEG file. Grey is spread to three channels and transparency is
    /// composited onto white, as Transformers' `convert_to_rgb` does before processing.
    pub fn open(path: &Path) -> Result<Self, VisionError> {
        let bytes = std::fs::read(path).map_err(|e| VisionError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::decode(&bytes, path)
    }

    /// Decodes image bytes; `path` names them in errors.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self, VisionError> {
        let bad = |message: String| VisionError::BadImage {
            path: path.to_path_buf(),
            message,
        };
        let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| bad(e.to_string()))?;
        let format = reader
            .format()
            .ok_or_else(|| bad("unknown format".into()))?;
        if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
            return Err(bad(format!("{format:?} is not supported")));
        }
        let (width, height) = reader.into_dimensions().map_err(|e| bad(e.to_string()))?;
        check_size(path, width, height)?;
        let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(MAX_PIXELS * 8);
        reader.limits(limits);
        let decoded = reader.decode().map_err(|e| bad(e.to_string()))?;
        let data = if decoded.color().has_alpha() {
            decoded
                .to_rgba8()
                .into_raw()
                .chunks(4)
                .flat_map(|p| over_white(p[..3].try_into().expect("4 bytes"), p[3]))
                .collect()
        } else {
            decoded.to_rgb8().into_raw()
        };
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// The pixel at column `x`, row `y`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = 3 * (y as usize * self.width as usize + x as usize);
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// The `width × height` block whose top-left corner is `(x, y)`.
    pub fn crop(&self, x: u32, y: u32, width: u32, height: u32) -> Self {
        let mut data = Vec::with_capacity(3 * width as usize * height as usize);
        for row in y..y + height {
            let start = 3 * (row as usize * self.width as usize + x as usize);
            data.extend_from_slice(&self.data[start..start + 3 * width as usize]);
        }
        Self {
            width,
            height,
            data,
        }
    }

    /// The image resampled to `width × height` as Pillow's `Image.resize` does with `filter`
    /// (a copy when the size is unchanged, as in Pillow).
    pub fn resize(&self, width: u32, height: u32, filter: Filter) -> Self {
        let mut out = self.clone();
        if width != self.width {
            out = out.resample_rows(width, filter);
        }
        if height != self.height {
            out = out.resample_columns(height, filter);
        }
        out
    }

    fn resample_rows(&self, width: u32, filter: Filter) -> Self {
        let taps = Taps::new(self.width as usize, width as usize, filter);
        let (w_in, w_out) = (self.width as usize, width as usize);
        let mut data = vec![0u8; 3 * w_out * self.height as usize];
        for (row_in, row_out) in self.data.chunks(3 * w_in).zip(data.chunks_mut(3 * w_out)) {
            for (x, px) in row_out.chunks_mut(3).enumerate() {
                let (start, weights) = taps.of(x);
                for (c, v) in px.iter_mut().enumerate() {
                    let mut acc = ROUNDING;
                    for (i, &w) in weights.iter().enumerate() {
                        acc += row_in[3 * (start + i) + c] as i32 * w;
                    }
                    *v = clip8(acc);
                }
            }
        }
        Self {
            width,
            height: self.height,
            data,
        }
    }

    fn resample_columns(&self, height: u32, filter: Filter) -> Self {
        let taps = Taps::new(self.height as usize, height as usize, filter);
        let stride = 3 * self.width as usize;
        let mut data = vec![0u8; stride * height as usize];
        for (y, row_out) in data.chunks_mut(stride).enumerate() {
            let (start, weights) = taps.of(y);
            for (j, v) in row_out.iter_mut().enumerate() {
                let mut acc = ROUNDING;
                for (i, &w) in weights.iter().enumerate() {
                    acc += self.data[(start + i) * stride + j] as i32 * w;
                }
                *v = clip8(acc);
            }
        }
        Self {
            width: self.width,
            height,
            data,
        }
    }
}

/// A pixel with alpha `a` over opaque white, in Pillow's `alpha_composite` integer arithmetic
/// (7-bit fixed-point coefficients and its rounded division by 255).
fn over_white(rgb: [u8; 3], a: u8) -> [u8; 3] {
    if a == 0 {
        return [255; 3];
    }
    const BITS: u32 = 7;
    let a = a as u32;
    let blend = 255 * (255 - a);
    let out_a = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << BITS) / out_a;
    let coef2 = 255 * (1 << BITS) - coef1;
    let div255 = |v: u32| ((v >> 8) + v) >> 8;
    rgb.map(|c| {
        let t = c as u32 * coef1 + 255 * coef2 + (0x80 << BITS);
        (div255(t) >> BITS) as u8
    })
}

fn check_size(path: &Path, width: u32, height: u32) -> Result<(), VisionError> {
    if width == 0 || height == 0 {
        return Err(VisionError::EmptyImage {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    if width as u64 * height as u64 > MAX_PIXELS {
        return Err(VisionError::ImageTooLarge {
            path: path.to_path_buf(),
            width,
            height,
            limit: MAX_PIXELS,
        });
    }
    Ok(())
}

/// Pillow's resampling filters (its `Image.Resampling` numbers in processor configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    Bilinear,
    Bicubic,
    Lanczos,
}

impl Filter {
    /// The filter of a processor config's `resample` number (Pillow: 1 LANCZOS, 2 BILINEAR,
    /// 3 BICUBIC); nearest, box and Hamming are not used by the supported processors.
    pub fn from_pillow(code: u64) -> Option<Self> {
        match code {
            1 => Some(Self::Lanczos),
            2 => Some(Self::Bilinear),
            3 => Some(Self::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let sinc = |x: f64| {
            if x == 0.0 {
                1.0
            } else {
                let x = x * std::f64::consts::PI;
                x.sin() / x
            }
        };
        match self {
            Self::Bilinear => (1.0 - x.abs()).max(0.0),
            Self::Bicubic => {
                // Keys' cubic with a = -0.5, as Pillow.
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Lanczos if (-3.0..3.0).contains(&x) => sinc(x) * sinc(x / 3.0),
            Self::Lanczos => 0.0,
        }
    }
}

/// Pillow's fixed point: 32 bits less 8 for the pixel and 2 of headroom.
const PRECISION_BITS: u32 = 22;
const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The source span and fixed-point weights of every output pixel along one axis.
struct Taps {
    starts: Vec<usize>,
    lens: Vec<usize>,
    /// `ksize` weights an output pixel.
    weights: Vec<i32>,
    ksize: usize,
}

impl Taps {
    fn new(in_size: usize, out_size: usize, filter: Filter) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter.support() * filter_scale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut taps = Self {
            starts: Vec::with_capacity(out_size),
            lens: Vec::with_capacity(out_size),
            weights: vec![0; out_size * ksize],
            ksize,
        };
        // Pillow multiplies by the reciprocal; dividing would round differently now and then.
        let inverse_scale = 1.0 / filter_scale;
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // `as` truncates toward zero, as C's (int) does in Pillow.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let len = hi - lo;
            let mut total = 0.0;
            for (x, w) in k.iter_mut().enumerate().take(len) {
                *w = filter.weight((x as f64 + lo as f64 - center + 0.5) * inverse_scale);
                total += *w;
            }
            let out = &mut taps.weights[xx * ksize..xx * ksize + len];
            for (o, &w) in out.iter_mut().zip(&k) {
                let w = if total != 0.0 { w / total } else { w };
                let fixed = w * (1u32 << PRECISION_BITS) as f64;
                *o = if w < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            taps.starts.push(lo);
            taps.lens.push(len);
        }
        taps
    }

    fn of(&self, i: usize) -> (usize, &[i32]) {
        let w = &self.weights[i * self.ksize..i * self.ksize + self.lens[i]];
        (self.starts[i], w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(width: u32, height: u32) -> RgbImage {
        let data = (0..width * height)
            .flat_map(|i| {
                let (x, y) = (i % width, i / width);
                [
                    (x * 7 % 256) as u8,
                    (y * 11 % 256) as u8,
                    ((x + y) * 5 % 256) as u8,
                ]
            })
            .collect();
        RgbImage {
            width,
            height,
            data,
        }
    }

    #[test]
    fn same_size_is_a_copy_and_weights_sum_to_one() {
        let img = ramp(9, 7);
        assert_eq!(img.resize(9, 7, Filter::Lanczos), img);
        for filter in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos] {
            for (n_in, n_out) in [(50, 64), (64, 32), (37, 48), (5, 3)] {
                let taps = Taps::new(n_in, n_out, filter);
                for i in 0..n_out {
                    let sum: i32 = taps.of(i).1.iter().sum();
                    assert!(
                        (sum - (1 << PRECISION_BITS)).abs() <= taps.ksize as i32,
                        "{sum}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let img = RgbImage {
            width: 13,
            height: 5,
            data: [10u8, 200, 77].repeat(65),
        };
        let out = img.resize(29, 3, Filter::Lanczos);
        assert!(out.data.chunks(3).all(|p| p == [10, 200, 77]));
    }

    #[test]
    fn compositing_keeps_opaque_pixels_and_whitens_clear_ones() {
        for c in [0u8, 1, 20, 128, 254, 255] {
            assert_eq!(over_white([c, c, c], 255), [c, c, c]);
        }
        assert_eq!(over_white([0, 0, 0], 0), [255, 255, 255]);
        // Half transparent black over white is mid grey.
        let [g, ..] = over_white([0, 0, 0], 128);
        assert!((126..=128).contains(&g), "{g}");
    }

    #[test]
    fn size_limits_are_checked_before_decoding() {
        let p = Path::new("x.png");
        assert!(matches!(
            check_size(p, 0, 10),
            Err(VisionError::EmptyImage { .. })
        ));
        assert!(matches!(
            check_size(p, 10_000, 10_000),
            Err(VisionError::ImageTooLarge { .. })
        ));
        assert!(check_size(p, 4000, 3000).is_ok());
    }
}

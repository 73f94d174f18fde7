//! Image processing and prompt layout, as the models' Hugging Face processors do them.
//!
//! Idefics3 (SmolVLM): an image is resized so its longest edge is `size.longest_edge`, then (with splitting) to
//! multiples of the vision tile and cut into row-major tiles plus a downscaled global image;
//! without splitting it is squashed to one tile. Each tile becomes `image_seq_len` `<image>`
//! tokens, wrapped in `<fake_token_around_image>` and tagged `<row_i_col_j>` or
//! `<global-img>`.
//!
//! LLaVA-style (SigLIP image processor): an image is resized to the tower's fixed size and
//! becomes one run of `<image>` tokens.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::VisionError;
use crate::image::{Filter, RgbImage};

/// Pillow refuses to resize past 4096 pixels an edge in this processor; so do we.
const MAX_EDGE: u32 = 4096;

/// The settings of an Idefics3 image processor (`processor_config.json`'s `image_processor`
/// or `preprocessor_config.json`) and processor (`image_seq_len`).
#[derive(Debug, Clone, Serialize)]
pub struct Idefics3Processing {
    /// The first resize's longest edge (`size.longest_edge`), if `do_resize`.
    pub resize_longest_edge: Option<u32>,
    /// The vision tower's tile edge (`max_image_size.longest_edge`).
    pub tile: u32,
    pub image_splitting: bool,
    pub filter: Filter,
    pub rescale_factor: Option<f64>,
    /// Per-channel mean and standard deviation, if `do_normalize`.
    pub normalize: Option<([f64; 3], [f64; 3])>,
    /// `<image>` tokens per tile.
    pub image_seq_len: usize,
}

impl Idefics3Processing {
    /// Reads the processor settings of a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self, VisionError> {
        let processor_path = dir.join("processor_config.json");
        let processor = read_optional(&processor_path)?;
        let (image, image_path) = image_processor_settings(dir)?;
        let image_seq_len = processor
            .as_ref()
            .and_then(|p| p["image_seq_len"].as_u64())
            .or_else(|| image["image_seq_len"].as_u64())
            .ok_or_else(|| VisionError::bad_config(&processor_path, "image_seq_len", "missing"))?
            as usize;
        Self::from_json(&image, &image_path, image_seq_len)
    }

    fn from_json(json: &Value, origin: &Path, image_seq_len: usize) -> Result<Self, VisionError> {
        let flag = |key: &str, default: bool| json[key].as_bool().unwrap_or(default);
        let edge = |key: &str| -> Result<u32, VisionError> {
            json[key]["longest_edge"]
                .as_u64()
                .filter(|&v| v > 0 && v <= MAX_EDGE as u64)
                .map(|v| v as u32)
                .ok_or_else(|| {
                    VisionError::bad_config(origin, key, "needs a `longest_edge` in 1..=4096")
                })
        };
        // Idefics3's processor resamples with LANCZOS unless told otherwise.
        let common = Common::from_json(json, origin, 1)?;
        Ok(Self {
            resize_longest_edge: if flag("do_resize", true) {
                Some(edge("size")?)
            } else {
                None
            },
            tile: edge("max_image_size")?,
            image_splitting: flag("do_image_splitting", true),
            filter: common.filter,
            rescale_factor: common.rescale_factor,
            normalize: common.normalize,
            image_seq_len,
        })
    }

    /// The tiles of one image: row-major split tiles then the global image (with splitting),
    /// or the one squashed tile, each normalised `[3, tile, tile]`.
    pub fn process(&self, image: &RgbImage, splitting: bool) -> ProcessedImage {
        let mut image = image.clone();
        if let Some(longest) = self.resize_longest_edge {
            let (h, w) = fit_longest_edge(image.height, image.width, longest);
            image = image.resize(w, h, self.filter);
        }
        let t = self.tile;
        let (frames, rows, cols) = if splitting {
            let (h, w) = tile_multiples(image.height, image.width, t);
            image = image.resize(w, h, self.filter);
            if h > t || w > t {
                let (rows, cols) = (h / t, w / t);
                let mut frames = Vec::with_capacity((rows * cols + 1) as usize);
                for r in 0..rows {
                    for c in 0..cols {
                        frames.push(image.crop(c * t, r * t, t, t));
                    }
                }
                frames.push(image.resize(t, t, self.filter));
                (frames, rows as usize, cols as usize)
            } else {
                (vec![image], 0, 0)
            }
        } else {
            (vec![image.resize(t, t, self.filter)], 0, 0)
        };
        ProcessedImage {
            tiles: frames
                .iter()
                .map(|f| pixels(f, self.rescale_factor, self.normalize.as_ref()))
                .collect(),
            rows,
            cols,
        }
    }

    /// The text that stands for one processed image in the prompt.
    pub fn image_text(&self, image: &ProcessedImage) -> String {
        let tokens = IMAGE_TOKEN.repeat(self.image_seq_len);
        let global = format!("{FAKE_TOKEN}{GLOBAL_TOKEN}{tokens}{FAKE_TOKEN}");
        if image.rows == 0 && image.cols == 0 {
            return global;
        }
        let mut text = String::new();
        for r in 1..=image.rows {
            for c in 1..=image.cols {
                text.push_str(&format!("{FAKE_TOKEN}<row_{r}_col_{c}>{tokens}"));
            }
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&global);
        text
    }
}

/// What a fixed-size processor (SigLIP's, as LLaVA-style models use it) does: resize to
/// `width × height`, rescale, normalise; one tile an image.
#[derive(Debug, Clone, Serialize)]
pub struct FixedProcessing {
    pub width: u32,
    pub height: u32,
    pub filter: Filter,
    pub rescale_factor: Option<f64>,
    pub normalize: Option<([f64; 3], [f64; 3])>,
    /// `<image>` tokens an image.
    pub image_seq_len: usize,
}

impl FixedProcessing {
    /// Reads a LLaVA processor's settings (`processor_config.json`'s `image_processor` or
    /// `preprocessor_config.json`); `image_seq_len` comes from the model.
    pub fn from_dir(dir: &Path, image_seq_len: usize) -> Result<Self, VisionError> {
        let (json, origin) = image_processor_settings(dir)?;
        let common = Common::from_json(&json, &origin, 3)?;
        let side = |key: &str| -> Result<u32, VisionError> {
            json["size"][key]
                .as_u64()
                .filter(|&v| v > 0 && v <= MAX_EDGE as u64)
                .map(|v| v as u32)
                .ok_or_else(|| {
                    VisionError::bad_config(
                        &origin,
                        &format!("size.{key}"),
                        "needs a fixed height and width (shortest-edge resizing with a \
                         centre crop, as CLIP's processor does, is not implemented)",
                    )
                })
        };
        Ok(Self {
            width: side("width")?,
            height: side("height")?,
            filter: common.filter,
            rescale_factor: common.rescale_factor,
            normalize: common.normalize,
            image_seq_len,
        })
    }
}

/// A model's image processing.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Processing {
    Idefics3(Idefics3Processing),
    Fixed(FixedProcessing),
}

impl Processing {
    /// The tiles of one image; `splitting` overrides an Idefics3 processor's setting (fixed
    /// processors do not split, and refuse `Some(true)`).
    pub fn process(
        &self,
        image: &RgbImage,
        splitting: Option<bool>,
    ) -> Result<ProcessedImage, VisionError> {
        match self {
            Processing::Idefics3(p) => Ok(p.process(image, splitting.unwrap_or(p.image_splitting))),
            Processing::Fixed(_) if splitting == Some(true) => Err(VisionError::bad_config(
                Path::new("--image-splitting"),
                "on",
                "this model's processor does not split images",
            )),
            Processing::Fixed(p) => {
                let frame = image.resize(p.width, p.height, p.filter);
                Ok(ProcessedImage {
                    tiles: vec![pixels(&frame, p.rescale_factor, p.normalize.as_ref())],
                    rows: 0,
                    cols: 0,
                })
            }
        }
    }

    /// The text that stands for one processed image in the prompt.
    pub fn image_text(&self, image: &ProcessedImage) -> String {
        match self {
            Processing::Idefics3(p) => p.image_text(image),
            Processing::Fixed(p) => IMAGE_TOKEN.repeat(p.image_seq_len),
        }
    }

    /// `<image>` tokens a tile.
    pub fn tokens_per_tile(&self) -> usize {
        match self {
            Processing::Idefics3(p) => p.image_seq_len,
            Processing::Fixed(p) => p.image_seq_len,
        }
    }
}

/// Settings every processor has: resampling filter, rescaling and normalisation.
struct Common {
    filter: Filter,
    rescale_factor: Option<f64>,
    normalize: Option<([f64; 3], [f64; 3])>,
}

impl Common {
    /// `default_filter` is the processor's Pillow filter when the config names none.
    fn from_json(json: &Value, origin: &Path, default_filter: u64) -> Result<Self, VisionError> {
        let flag = |key: &str| json[key].as_bool().unwrap_or(true);
        let triple = |key: &str| -> Result<[f64; 3], VisionError> {
            let v: Vec<f64> = json[key]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            v.try_into()
                .map_err(|_| VisionError::bad_config(origin, key, "needs three numbers"))
        };
        let resample = json["resample"].as_u64().unwrap_or(default_filter);
        let filter = Filter::from_pillow(resample).ok_or_else(|| {
            VisionError::bad_config(
                origin,
                "resample",
                format!("Pillow filter {resample} is not supported (1, 2 and 3 are)"),
            )
        })?;
        let normalize = if flag("do_normalize") {
            let std = triple("image_std")?;
            if std.iter().any(|&s| s <= 0.0) {
                return Err(VisionError::bad_config(origin, "image_std", "must be > 0"));
            }
            Some((triple("image_mean")?, std))
        } else {
            None
        };
        Ok(Self {
            filter,
            rescale_factor: flag("do_rescale")
                .then(|| json["rescale_factor"].as_f64().unwrap_or(1.0 / 255.0)),
            normalize,
        })
    }
}

/// Rescaled and normalised channel-first pixels, in f64 then rounded as NumPy does.
fn pixels(
    frame: &RgbImage,
    rescale_factor: Option<f64>,
    normalize: Option<&([f64; 3], [f64; 3])>,
) -> Vec<f32> {
    let n = frame.width as usize * frame.height as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in frame.data.chunks(3).enumerate() {
        for c in 0..3 {
            let mut v = px[c] as f64;
            if let Some(f) = rescale_factor {
                v *= f;
            }
            if let Some((mean, std)) = normalize {
                v = (v - mean[c]) / std[c];
            }
            out[c * n + i] = v as f32;
        }
    }
    out
}

/// The image processor's settings of a model directory and the file they came from.
fn image_processor_settings(dir: &Path) -> Result<(Value, std::path::PathBuf), VisionError> {
    let processor_path = dir.join("processor_config.json");
    if let Some(v) = read_optional(&processor_path)?
        && v["image_processor"].is_object()
    {
        return Ok((v["image_processor"].clone(), processor_path));
    }
    let path = dir.join("preprocessor_config.json");
    match read_optional(&path)? {
        Some(v) => Ok((v, path)),
        None => Err(VisionError::bad_config(
            dir,
            "preprocessor_config.json",
            "no image processor settings (processor_config.json or preprocessor_config.json)",
        )),
    }
}

/// The placeholder for an image in prompts, and each image token.
pub const IMAGE_TOKEN: &str = "<image>";
const FAKE_TOKEN: &str = "<fake_token_around_image>";
const GLOBAL_TOKEN: &str = "<global-img>";

/// One image after processing.
#[derive(Debug, Clone)]
pub struct ProcessedImage {
    /// Channel-first normalised pixels of each tile (`[3, tile, tile]`), global image last.
    pub tiles: Vec<Vec<f32>>,
    /// The split grid (0 × 0 when the image is one tile).
    pub rows: usize,
    pub cols: usize,
}

/// `(height, width)` with the longest edge scaled to `longest` (odd results rounded up to even),
/// as the processor's first resize computes it.
fn fit_longest_edge(height: u32, width: u32, longest: u32) -> (u32, u32) {
    let aspect = width as f64 / height as f64;
    let even = |v: u32| if v.is_multiple_of(2) { v } else { v + 1 };
    let (mut h, mut w) = if width >= height {
        (even((longest as f64 / aspect) as u32), longest)
    } else {
        (longest, even((longest as f64 * aspect) as u32))
    };
    // Then below the processor's absolute bound.
    let aspect = w as f64 / h as f64;
    if w >= h && w > MAX_EDGE {
        w = MAX_EDGE;
        h = (w as f64 / aspect) as u32;
    } else if h > w && h > MAX_EDGE {
        h = MAX_EDGE;
        w = (h as f64 * aspect) as u32;
    }
    (h.max(1), w.max(1))
}

/// `(height, width)` rounded up to multiples of the tile, keeping the aspect ratio first.
fn tile_multiples(height: u32, width: u32, tile: u32) -> (u32, u32) {
    let aspect = width as f64 / height as f64;
    let up = |v: u32| v.div_ceil(tile) * tile;
    if width >= height {
        let w = up(width);
        (up((w as f64 / aspect) as u32), w)
    } else {
        let h = up(height);
        (h, up((h as f64 * aspect) as u32))
    }
}

fn read_optional(path: &Path) -> Result<Option<Value>, VisionError> {
    if !path.is_file() {
        return Ok(None);
    }
    Ok(Some(glassbox_runtime::read_json(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_processor() {
        // 50 × 37 → longest edge 64: height 47.36 → 47 → even 48.
        assert_eq!(fit_longest_edge(37, 50, 64), (48, 64));
        assert_eq!(fit_longest_edge(24, 20, 64), (64, 54));
        assert_eq!(tile_multiples(48, 64, 32), (64, 64));
        assert_eq!(tile_multiples(64, 54, 32), (64, 64));
        assert_eq!(tile_multiples(20, 90, 32), (32, 96));
    }

    #[test]
    fn prompt_text_of_a_split_image() {
        let p = Idefics3Processing {
            resize_longest_edge: None,
            tile: 32,
            image_splitting: true,
            filter: Filter::Lanczos,
            rescale_factor: None,
            normalize: None,
            image_seq_len: 2,
        };
        let image = ProcessedImage {
            tiles: vec![],
            rows: 1,
            cols: 2,
        };
        assert_eq!(
            p.image_text(&image),
            "<fake_token_around_image><row_1_col_1><image><image>\
             <fake_token_around_image><row_1_col_2><image><image>\n\n\
             <fake_token_around_image><global-img><image><image><fake_token_around_image>"
        );
    }
}

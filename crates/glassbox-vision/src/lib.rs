//! Vision-language models on the Glassbox runtime.
//!
//! Images are decoded (PNG, JPEG), processed as the model's Hugging Face processor does it
//! (Pillow-exact resampling, tiling, normalisation), encoded by the vision tower and connector,
//! and spliced into the prompt as input embeddings for the runtime's text decoder, which then
//! scores, generates, captures and differentiates as it does for text. Each image's token
//! positions and grid shapes come with the prompt, for maps over the image.
//!
//! Architectures: Idefics3 (SmolVLM) and LLaVA-style models with SigLIP towers.

mod error;
mod image;
mod model;
mod processor;
mod tensors;
mod tower;

pub use error::VisionError;
pub use image::{Filter, MAX_PIXELS, RgbImage};
pub use model::{
    ImageFeatures, ImagePlacement, Prompt, SUPPORTED_ARCHITECTURES, TileKind, TileTokens,
    VisionLanguageModel, generate_from_embeddings, is_vision_checkpoint,
};
pub use processor::{FixedProcessing, IMAGE_TOKEN, Idefics3Processing, ProcessedImage, Processing};
pub use tower::{TowerConfig, VisionTower, unfold_patches};

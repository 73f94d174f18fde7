//! `fetch_vader` against a fake pip (`GLASSBOX_PYTHON` names a script) and fake sdists built
//! here from the fixtures: the checksum is enforced on downloads and on the cache, a verified
//! cache is used without running pip, and a sdist missing a member is refused.
//!
//! One test function, so that setting the environment races with no other test thread.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::{Compression, write::GzEncoder};
use glassbox_datasets::{DatasetError, VADER_SDIST_SHA256, fetch_vader, read_snippets};
use glassbox_models::{Cache, ModelsError, NoProgress, PYTHON_ENV, write_verified_marker};

fn fixture(name: &str) -> Vec<u8> {
    fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// A `.tar.gz` holding `files` (path, contents).
fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A sdist laid out like vaderSentiment 3.3.2's, with the fixtures as its data; without the
/// tweets file when `complete` is false.
fn fake_sdist(complete: bool) -> Vec<u8> {
    let movies = fixture("movieReviewSnippets_GroundTruth.txt");
    let mut inner: Vec<(&str, &[u8])> = vec![
        ("hutto_ICWSM_2014/_README_.txt", b"readme"),
        (
            "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
            &movies,
        ),
        (
            "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
            b"1_1\t-0.9\tno picture",
        ),
        (
            "hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt",
            b"1_2\t0.15\tevents",
        ),
    ];
    if complete {
        inner.push(("hutto_ICWSM_2014/tweets_GroundTruth.txt", b"2\t1.4\tYay."));
    }
    let resources = tar_gz(&inner);
    let lexicon = fixture("vader_lexicon.txt");
    tar_gz(&[
        ("vaderSentiment-3.3.2/LICENSE.txt", b"The MIT License (MIT)"),
        ("vaderSentiment-3.3.2/setup.py", b"# not run"),
        (
            "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
            &resources,
        ),
        (
            "vaderSentiment-3.3.2/vaderSentiment/vader_lexicon.txt",
            &lexicon,
        ),
    ])
}

/// A stand-in for `python3 -m pip download ... --dest DIR SPEC` that logs its arguments and
/// saves `sdist` into DIR.
fn fake_python(dir: &Path, sdist: &Path, log: &Path) -> PathBuf {
    let script = dir.join("fake-python");
    let text = format!(
        "#!/bin/sh\necho \"$@\" >> '{log}'\nwhile [ \"$1\" != --dest ]; do shift; done\n\
         cp '{sdist}' \"$2/vaderSentiment-3.3.2.tar.gz\"\n",
        log = log.display(),
        sdist = sdist.display()
    );
    fs::write(&script, text).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn pip_calls(log: &Path) -> usize {
    fs::read_to_string(log).map_or(0, |s| s.lines().count())
}

/// Puts `sdist` where a verified earlier fetch would have left the real one.
fn cache_as_verified(cache: &Cache, sdist: &[u8]) -> PathBuf {
    let dir = cache.root().join("datasets/vadersentiment-3.3.2");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vaderSentiment-3.3.2.tar.gz");
    fs::File::create(&path).unwrap().write_all(sdist).unwrap();
    write_verified_marker(&path, VADER_SDIST_SHA256).unwrap();
    path
}

#[test]
fn fetch_verifies_downloads_and_reuses_a_verified_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let sdist = tmp.path().join("served.tar.gz");
    fs::write(&sdist, fake_sdist(true)).unwrap();
    let log = tmp.path().join("pip.log");
    let python = fake_python(tmp.path(), &sdist, &log);
    // SAFETY: this is the only test of this binary, so no other thread reads the environment.
    unsafe { std::env::set_var(PYTHON_ENV, &python) };

    // A download that is not the published file is refused and nothing is cached.
    let cache = Cache::new(tmp.path().join("cache1"));
    let err = fetch_vader(&cache, &NoProgress).unwrap_err();
    assert!(
        matches!(err, DatasetError::DownloadMismatch { .. }),
        "{err}"
    );
    assert!(!err.is_input_error());
    assert_eq!(pip_calls(&log), 1);
    let args = fs::read_to_string(&log).unwrap();
    assert!(
        args.starts_with("-m pip download --no-deps --no-binary=:all:"),
        "{args}"
    );
    assert!(args.trim_end().ends_with("vaderSentiment==3.3.2"), "{args}");
    let dir = cache.root().join("datasets/vadersentiment-3.3.2");
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        0,
        "no partial file or work folder is left"
    );

    // A verified cache is unpacked and read without pip, and unpacked only once.
    let cache = Cache::new(tmp.path().join("cache2"));
    cache_as_verified(&cache, &fake_sdist(true));
    let files = fetch_vader(&cache, &NoProgress).unwrap();
    assert_eq!(read_snippets(&files.movie_snippets).unwrap().len(), 40);
    assert_eq!(
        fs::read(&files.lexicon).unwrap(),
        fixture("vader_lexicon.txt")
    );
    assert_eq!(
        read_snippets(&files.tweet_snippets).unwrap()[0].text,
        "Yay."
    );
    assert_eq!(read_snippets(&files.amazon_snippets).unwrap()[0].id, "1_1");
    assert_eq!(read_snippets(&files.nyt_snippets).unwrap()[0].rating, 0.15);
    assert!(fs::read_to_string(&files.license).unwrap().contains("MIT"));
    let unpacked_at = fs::metadata(&files.movie_snippets)
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(fetch_vader(&cache, &NoProgress).unwrap(), files);
    assert_eq!(
        fs::metadata(&files.movie_snippets)
            .unwrap()
            .modified()
            .unwrap(),
        unpacked_at
    );
    assert_eq!(pip_calls(&log), 1, "pip is not run for a cached sdist");

    // A cached sdist that changed since it was verified is hashed, refused and left alone.
    fs::write(&files.sdist, b"truncated").unwrap();
    let err = fetch_vader(&cache, &NoProgress).unwrap_err();
    assert!(matches!(err, DatasetError::CorruptCache { .. }), "{err}");
    assert!(err.is_input_error());
    assert!(err.to_string().contains("Delete it"), "{err}");
    assert_eq!(fs::read(&files.sdist).unwrap(), b"truncated");
    assert_eq!(pip_calls(&log), 1);

    // A sdist without one of the wanted files is refused, naming it, and nothing is unpacked.
    let cache = Cache::new(tmp.path().join("cache3"));
    let path = cache_as_verified(&cache, &fake_sdist(false));
    let err = fetch_vader(&cache, &NoProgress).unwrap_err();
    assert!(matches!(err, DatasetError::BadArchive { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("hutto_ICWSM_2014.tar.gz has no hutto_ICWSM_2014/tweets_GroundTruth.txt"),
        "{err}"
    );
    let left: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "only the sdist and its marker: {left:?}");

    // A pip that cannot run is reported as such.
    // SAFETY: as above.
    unsafe { std::env::set_var(PYTHON_ENV, tmp.path().join("no-such-python")) };
    let err = fetch_vader(&Cache::new(tmp.path().join("cache4")), &NoProgress).unwrap_err();
    assert!(
        matches!(
            err,
            DatasetError::Models(ModelsError::PipUnavailable { .. })
        ),
        "{err}"
    );
}

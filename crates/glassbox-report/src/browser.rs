//! Checking HTML reports in a real browser: headless Chromium loads a page, runs its script
//! and dumps the DOM, which tests then read. Shared by the test suites of every crate that
//! writes a page.
//!
//! Without a browser the checks say so on standard error and are skipped (so the README's
//! test command passes on a machine without one); with `GLASSBOX_REQUIRE_BROWSER=1` (set by
//! `.ci/run`, which installs Chromium) a missing browser is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Chromium from `$CHROMIUM`, Debian's path, or `PATH`.
fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(path.into());
    }
    if Path::new("/usr/bin/chromium").exists() {
        return Some("/usr/bin/chromium".into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.exists())
    })
}

/// The browser for `test`, or `None` after one line on standard error saying the test was
/// skipped and how to run it. The line goes to the process's stderr directly, past the test
/// harness's capture, so `cargo test` shows it. Panics instead when `GLASSBOX_REQUIRE_BROWSER`
/// is set: there a skip would be a hidden failure.
pub fn chromium(test: &str) -> Option<PathBuf> {
    use std::io::Write;
    let found = find_chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("GLASSBOX_REQUIRE_BROWSER").is_none(),
            "GLASSBOX_REQUIRE_BROWSER is set but no Chromium was found: apt-get install chromium \
             (or set CHROMIUM to the browser's path)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "skipped browser test {test}: no Chromium found (apt-get install chromium, or set \
             CHROMIUM to a Chromium binary, to run it)"
        );
    }
    found
}

/// The page after its script ran, as headless Chromium serialises it. The flags keep Chromium
/// off the network and away from any existing profile.
pub fn dump_dom(browser: &Path, page: &Path, hash: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}{hash}", page.display()))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; install Chromium (apt-get install chromium) or set CHROMIUM",
                browser.display()
            )
        });
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of attribute `name` in an opening tag.
pub fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let start = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    &tag[start..start + tag[start..].find('"').unwrap()]
}

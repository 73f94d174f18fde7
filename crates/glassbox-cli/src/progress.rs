//! Progress bars on standard error (hidden when it is not a terminal).

use std::sync::Mutex;

use glassbox::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// Draws one bar per phase reported through [`Progress`].
pub(crate) struct Bars {
    current: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub fn new() -> Self {
        Self {
            current: Mutex::new(None),
        }
    }
}

impl Progress for Bars {
    fn begin(&self, label: &str, total: Option<u64>) {
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{msg:32} [{bar:30}] {bytes}/{total_bytes} ({eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("valid template"),
            ),
        };
        bar.set_message(label.to_string());
        if total.is_none() {
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
        }
        if let Some(old) = self.current.lock().expect("not poisoned").replace(bar) {
            old.finish_and_clear();
        }
    }

    fn advance(&self, amount: u64) {
        if let Some(bar) = &*self.current.lock().expect("not poisoned") {
            bar.inc(amount);
        }
    }

    fn end(&self) {
        if let Some(bar) = self.current.lock().expect("not poisoned").take() {
            bar.finish_and_clear();
        }
    }
}

/// A bar over `total` steps of a long computation, labelled `label`.
pub(crate) fn steps(label: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}

/// A spinner for work of unknown length.
pub(crate) fn spinner(label: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    bar.set_message(label.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

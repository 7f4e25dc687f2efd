//! Real browsers for the tests: Debian's headless Chromium (which `.ci/run` installs).

use std::path::Path;
use std::process::{Child, Command, Stdio};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless Chromium on `url`, with a fresh profile, and the flags a machine without a
/// network and a root user need (no sandbox as root; no calls home).
pub fn chromium(url: &str, profile: &Path) -> Child {
    chromium_with(url, profile, &[])
}

/// [`chromium`] with more flags (`--remote-debugging-port=0`, say).
pub fn chromium_with(url: &str, profile: &Path, extra: &[&str]) -> Child {
    Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1000,700",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start /usr/bin/chromium (install Debian's chromium; .ci/run does)")
}

//! Build script of the `gsync` binary: records the commit the binary is
//! built from, so `gsync --version` names it. Without git (a source
//! tarball, a package build) the version says so instead of failing;
//! packagers may set GSYNC_BUILD_COMMIT themselves.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=GSYNC_BUILD_COMMIT");
    // Rebuild the version when HEAD moves (a commit, a checkout).
    for p in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = std::env::var("GSYNC_BUILD_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown (built without git)".to_string());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=GSYNC_LONG_VERSION={version} (commit {commit})");
}

//! Harness helpers for the mounts tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{wait_until, Cluster};

/// A replica-3 volume "v" over three nodes, mounted on each at `m{i}`.
pub fn three_mounts() -> (Cluster, [PathBuf; 3]) {
    let c = Cluster::start(3);
    c.form_pool();
    c.create_volume("v");
    let m = [c.mount("v", 1), c.mount("v", 2), c.mount("v", 3)];
    (c, m)
}

/// Waits until `rel` under `dir` holds exactly `content`.
#[track_caller]
pub fn wait_content(dir: &Path, rel: &str, content: &str, timeout: Duration) {
    let p = dir.join(rel);
    wait_until(timeout, &format!("{} == {content:?}", p.display()), || {
        std::fs::read(&p).is_ok_and(|d| d == content.as_bytes())
    });
}

/// Waits until nothing exists at `rel` under `dir`.
#[track_caller]
pub fn wait_gone(dir: &Path, rel: &str, timeout: Duration) {
    let p = dir.join(rel);
    wait_until(timeout, &format!("{} gone", p.display()), || {
        p.symlink_metadata().is_err()
    });
}

/// The three mounts and the three bricks of volume `vol`.
pub fn all_trees(c: &Cluster, vol: &str, m: &[PathBuf; 3]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = m.to_vec();
    v.extend((1..=3).map(|i| c.brick(vol, i)));
    v
}

/// `gsync mount` (list) output of node `i`.
pub fn mount_list(c: &Cluster, i: usize) -> String {
    c.node(i).cli(&["mount"]).ok().stdout
}

/// Percentile (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = (sorted.len() * p)
        .div_ceil(100)
        .saturating_sub(1)
        .min(sorted.len() - 1);
    sorted[i]
}

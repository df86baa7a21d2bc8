//! Harness helpers for the heal tests: parsing the GlusterFS-shaped heal
//! reports, isolating nodes, and reading heal statistics.

use std::path::Path;
use std::time::Duration;

use super::{eventually, manifest, read, wait_until, Cluster, Node};

/// One `Brick …` block of `heal info` / `info split-brain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// `HOST:/PATH`.
    pub brick: String,
    /// The path lines (as printed, trailing space trimmed).
    pub entries: Vec<String>,
    /// The `Status:` value.
    pub status: String,
    /// The value of the `Number of entries…:` line (`-` when unknown).
    pub number: String,
}

/// Parses `heal info` or `heal info split-brain` output.
pub fn parse(out: &str) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for line in out.lines() {
        if let Some(b) = line.strip_prefix("Brick ") {
            blocks.push(Block {
                brick: b.to_string(),
                entries: Vec::new(),
                status: String::new(),
                number: String::new(),
            });
        } else if let Some(last) = blocks.last_mut() {
            if let Some(s) = line.strip_prefix("Status: ") {
                last.status = s.to_string();
            } else if let Some(n) = line
                .strip_prefix("Number of entries")
                .and_then(|r| r.split_once(": "))
                .map(|x| x.1)
            {
                last.number = n.to_string();
            } else if line.starts_with('/') {
                last.entries.push(line.trim_end().to_string());
            }
        }
    }
    blocks
}

/// `volume heal VOL info` on node `n`, parsed.
pub fn info(n: &Node, vol: &str) -> (String, Vec<Block>) {
    let out = n.cli(&["volume", "heal", vol, "info"]).ok().stdout;
    let b = parse(&out);
    (out, b)
}

/// True when every brick is Connected with 0 entries.
pub fn all_clean(n: &Node, vol: &str) -> bool {
    let r = n.cli(&["volume", "heal", vol, "info"]);
    if r.code != 0 {
        return false;
    }
    let b = parse(&r.stdout);
    !b.is_empty() && b.iter().all(|b| b.status == "Connected" && b.number == "0")
}

/// Cuts node `i` off from every other node (both directions).
pub fn isolate(c: &Cluster, i: usize) {
    for n in &c.nodes {
        if n.n != i {
            c.partition(i, n.n);
        }
    }
}

/// Waits until node `i` sees `count` peers disconnected.
pub fn wait_disconnected(c: &Cluster, i: usize, count: usize) {
    wait_until(
        Duration::from_secs(30),
        "peers seen as disconnected",
        || {
            c.node(i)
                .cli(&["peer", "status"])
                .stdout
                .matches("(Disconnected)")
                .count()
                >= count
        },
    );
}

/// `heals_done` per brick (in volume order; `None` for an unreachable one).
pub fn heals_done(n: &Node, vol: &str) -> Vec<Option<u64>> {
    let j = n
        .cli(&["--json", "volume", "heal", vol, "statistics"])
        .ok()
        .json();
    j.as_array()
        .expect("array")
        .iter()
        .map(|r| r["info"]["heals_done"].as_u64())
        .collect()
}

/// Waits until the file at `p` has exactly `want` as content.
pub fn wait_content(p: &Path, want: &str, timeout: Duration, what: &str) {
    let ok = eventually(timeout, || read(p) == want);
    assert!(
        ok,
        "{what}: {} has {:?}, want {:?}",
        p.display(),
        read(p),
        want
    );
}

/// Waits until the trees at `a` and `b` have equal manifests.
pub fn wait_same_tree(a: &Path, b: &Path, timeout: Duration, what: &str) {
    let ok = eventually(timeout, || {
        manifest::diff(&manifest::of(a), &manifest::of(b)).is_none()
    });
    if !ok {
        let d = manifest::diff(&manifest::of(a), &manifest::of(b));
        panic!("{what}: {} vs {}: {d:?}", a.display(), b.display());
    }
}

/// The `HOST:/PATH` name of brick `i` of `vol`.
pub fn brick_name(c: &Cluster, vol: &str, i: usize) -> String {
    format!("{}:{}", c.node(i).ip, c.brick(vol, i).display())
}

/// Kept losing versions: files under `<brick>/.gsync/trash/` (where losers
/// of resolutions go) and the older `.gsync/retained/`, with contents.
pub fn retained(brick: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push((
                    p.to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    walk(&brick.join(".gsync/trash"), &mut out);
    walk(&brick.join(".gsync/retained"), &mut out);
    out
}

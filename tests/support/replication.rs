//! Harness helpers for the replication tests: brick counters, daemon
//! memory, large pseudo-random files and brick-tree comparisons.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{eventually, Cluster, Node};

/// A replica-N volume "v" over all nodes of a fresh `n`-node pool.
pub fn volume(n: usize) -> Cluster {
    let c = Cluster::start(n);
    c.form_pool();
    c.create_volume("v");
    c
}

/// Per-brick counters from `--json volume status VOL`, keyed by brick
/// number (1-based, in volume order). Bricks that did not answer are
/// missing.
pub fn counters(node: &Node, vol: &str) -> BTreeMap<usize, serde_json::Value> {
    let r = node.cli(&["--json", "volume", "status", vol]);
    let mut out = BTreeMap::new();
    if r.code != 0 {
        return out;
    }
    let j: serde_json::Value = match serde_json::from_str(&r.stdout) {
        Ok(j) => j,
        Err(_) => return out,
    };
    let Some(bricks) = j
        .get(0)
        .and_then(|v| v.get("bricks"))
        .and_then(|b| b.as_array())
    else {
        return out;
    };
    for (i, b) in bricks.iter().enumerate() {
        if let Some(c) = b.get("detail").and_then(|d| d.get("counters")) {
            if !c.is_null() {
                out.insert(i + 1, c.clone());
            }
        }
    }
    out
}

/// One counter of one brick (0 when missing).
pub fn counter(all: &BTreeMap<usize, serde_json::Value>, brick: usize, name: &str) -> u64 {
    all.get(&brick)
        .and_then(|c| c.get(name))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// Counters of every brick, retried until all `n` bricks answer.
#[track_caller]
pub fn all_counters(node: &Node, vol: &str, n: usize) -> BTreeMap<usize, serde_json::Value> {
    let mut got = BTreeMap::new();
    let ok = eventually(Duration::from_secs(20), || {
        got = counters(node, vol);
        got.len() == n
    });
    assert!(ok, "not every brick reported its counters: {got:?}");
    got
}

/// A field of `/proc/PID/status` in KiB (e.g. `VmHWM`, `VmRSS`).
pub fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(&format!("{field}:")))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Fills `buf` with xorshift64* output, continuing from `state`.
pub fn fill(buf: &mut [u8], state: &mut u64) {
    let mut x = *state;
    for c in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    *state = x;
}

/// Writes `size` pseudo-random bytes (seeded) to `path`; returns the blake3.
pub fn write_random(path: &Path, size: u64, seed: u64) -> [u8; 32] {
    let mut f =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("create"));
    let mut h = blake3::Hasher::new();
    let mut state = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        fill(&mut buf[..n], &mut state);
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    f.into_inner().expect("flush").sync_all().expect("fsync");
    *h.finalize().as_bytes()
}

/// Writes `size` pseudo-random bytes to a temp file beside the cluster and
/// renames it to `dest` (so a mount agent never sees a half-written file).
pub fn place_random(c: &Cluster, dest: &Path, size: u64, seed: u64) -> [u8; 32] {
    let tmp = c.path(&format!("staging-{seed:x}"));
    let h = write_random(&tmp, size, seed);
    std::fs::rename(&tmp, dest).expect("rename into mount");
    h
}

/// blake3 of a file, streamed.
pub fn hash_file(path: &Path) -> Option<[u8; 32]> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(*h.finalize().as_bytes())
}

/// True once `path` is a regular file of `size` bytes (content is placed
/// by rename, so the right size means the transfer completed).
pub fn has_size(path: &Path, size: u64) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// The brick trees of volume `vol` of every node.
pub fn bricks(c: &Cluster, vol: &str) -> Vec<PathBuf> {
    c.nodes.iter().map(|n| c.brick(vol, n.n)).collect()
}

/// Lists every file below `dir` (following nothing), as relative paths.
pub fn list(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.to_string_lossy().into_owned());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Split-brain paths per brick from `--json volume heal VOL info`
/// (brick number, 1-based, -> paths).
pub fn split_brain(node: &Node, vol: &str) -> BTreeMap<usize, Vec<String>> {
    let r = node.cli(&["--json", "volume", "heal", vol, "info"]);
    let mut out = BTreeMap::new();
    let Ok(j) = serde_json::from_str::<serde_json::Value>(&r.stdout) else {
        return out;
    };
    for (i, b) in j.as_array().into_iter().flatten().enumerate() {
        let Some(entries) = b
            .get("info")
            .and_then(|x| x.get("entries"))
            .and_then(|x| x.as_array())
        else {
            continue;
        };
        let paths = entries
            .iter()
            .filter(|e| e.get("split_brain").and_then(serde_json::Value::as_bool) == Some(true))
            .filter_map(|e| e.get("path").and_then(|p| p.as_str()).map(String::from))
            .collect();
        out.insert(i + 1, paths);
    }
    out
}

/// MiB/s for `bytes` moved in `d`.
pub fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64().max(1e-9)
}

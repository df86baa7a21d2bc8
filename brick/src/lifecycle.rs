//! Brick lifecycle mechanics shared by the management commands and the
//! replicators: re-initialising a brick directory in place (`reset-brick`),
//! remembering which incarnation of each peer brick this brick has already
//! been compared with (so a replaced, reset or added brick is filled by a
//! full crawl exactly once, even across restarts), and the heal rate limit.
//!
//! A brick's place in the volume (its replica id) survives `replace-brick`
//! and `reset-brick`: version vectors and pending rows that name it stay
//! valid and simply reach the new directory. What changes is the brick
//! definition's `incarnation`; every other brick notices the change and
//! compares its whole tree with the new one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::pool::Volume;
use crate::wire::path::RESERVED;

/// True if `peers` are exactly the other bricks of `v` as seen by brick `id`.
pub fn same_peers(peers: &[u64], v: &Volume, id: u64) -> bool {
    let mut want: Vec<u64> = v
        .bricks
        .iter()
        .filter(|b| b.id != id)
        .map(|b| b.id)
        .collect();
    let mut have = peers.to_vec();
    want.sort_unstable();
    have.sort_unstable();
    want == have
}

/// File name of the volume-id marker inside `.gsync/`.
pub const MARKER: &str = "volume-id";

/// File inside `.gsync/` of a brick re-initialised by `reset-brick`: it is
/// filled from its peers only. Whatever stands in its directory when it
/// opens with a new database was put there by nobody the volume knows (a
/// write of the instance stopped before the reset, still in flight) and is
/// set aside, never adopted as this brick's own new paths, which would
/// bring deleted paths back on every brick.
///
/// It holds [`REFILL_FRESH`] until the brick first opens its new database,
/// then [`REFILL_OPENED`]: a brick whose database is gone after that is not
/// served (what its files are is unknown) until reset again.
pub const REFILL_ONLY: &str = "refill-only";

/// [`REFILL_ONLY`] of a brick not opened since its reset.
pub const REFILL_FRESH: &str = "fresh";

/// [`REFILL_ONLY`] of a brick opened since its reset.
pub const REFILL_OPENED: &str = "opened";

/// Re-initialises the brick directory `path` of `volume` in place: the old
/// `.gsync/` and every file of the brick are moved under
/// `.gsync/before-reset-<unix time>/` (kept on disk, never served), then a
/// fresh `.gsync/` with the volume-id marker is written. The brick is
/// refilled from its peers by a full heal once it is served again.
pub fn reinit_brick_dir(path: &Path, volume: Uuid) -> Result<String, String> {
    if !path.is_absolute() {
        return Err(format!("brick path {} must be absolute", path.display()));
    }
    std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = path.join(RESERVED);
    if let Ok(id) = std::fs::read_to_string(meta.join(MARKER)) {
        if id.trim() != volume.to_string() {
            return Err(format!(
                "{} belongs to another volume ({})",
                path.display(),
                id.trim()
            ));
        }
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside_name = format!("before-reset-{stamp}");
    // Everything is renamed, never copied: one directory, the same
    // filesystem, no data moved.
    let staging_name = format!("{RESERVED}-reset-{stamp}");
    let staging = path.join(&staging_name);
    let old: Vec<std::ffi::OsString> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_str() != Some(staging_name.as_str()))
        .collect();
    let mut moved = 0usize;
    if !old.is_empty() {
        std::fs::create_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
        for name in &old {
            let from = path.join(name);
            let to = staging.join(name);
            std::fs::rename(&from, &to).map_err(|e| format!("{}: {e}", from.display()))?;
            moved += 1;
        }
    }
    std::fs::create_dir_all(&meta).map_err(|e| format!("{}: {e}", meta.display()))?;
    if moved > 0 {
        let aside = meta.join(&aside_name);
        std::fs::rename(&staging, &aside).map_err(|e| format!("{}: {e}", aside.display()))?;
    }
    std::fs::write(meta.join(REFILL_ONLY), REFILL_FRESH)
        .map_err(|e| format!("{}: {e}", meta.join(REFILL_ONLY).display()))?;
    let marker = meta.join(MARKER);
    let tmp = meta.join(format!("{MARKER}.tmp"));
    std::fs::write(&tmp, volume.to_string()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &marker).map_err(|e| format!("{}: {e}", marker.display()))?;
    if let Ok(d) = std::fs::File::open(&meta) {
        let _ = d.sync_all();
    }
    if let Ok(d) = std::fs::File::open(path) {
        let _ = d.sync_all();
    }
    Ok(if moved > 0 {
        format!("{moved} earlier entries kept under {RESERVED}/{aside_name}")
    } else {
        String::new()
    })
}

/// Moves every entry of brick directory `path` but `.gsync/` under
/// `.gsync/stray-<unix time>/` (renamed, kept on disk, never served).
/// Returns how many.
pub fn set_aside_strays(path: &Path) -> Result<usize, String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let aside = path.join(RESERVED).join(format!("stray-{stamp}"));
    let names: Vec<std::ffi::OsString> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_str() != Some(RESERVED))
        .collect();
    if names.is_empty() {
        return Ok(0);
    }
    std::fs::create_dir_all(&aside).map_err(|e| format!("{}: {e}", aside.display()))?;
    for name in &names {
        let from = path.join(name);
        std::fs::rename(&from, aside.join(name)).map_err(|e| format!("{}: {e}", from.display()))?;
    }
    Ok(names.len())
}

fn filled_key(peer: u64) -> String {
    format!("filled-incarnation:{peer}")
}

/// The incarnation of brick `peer` this brick last finished comparing with.
pub fn filled_incarnation(conn: &Connection, peer: u64) -> rusqlite::Result<u64> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT value FROM kv WHERE key = ?1",
            params![filled_key(peer)],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.unwrap_or(0) as u64)
}

/// Records that this brick finished comparing with incarnation `inc` of `peer`.
pub fn set_filled_incarnation(conn: &Connection, peer: u64, inc: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
        params![filled_key(peer), inc as i64],
    )?;
    Ok(())
}

/// Deletes pending rows for bricks that are no longer peers (after
/// `remove-brick`), so heal info does not report them forever.
pub fn prune_pending(conn: &Connection, peers: &[u64]) -> rusqlite::Result<usize> {
    let keep: Vec<String> = peers.iter().map(|p| (*p as i64).to_string()).collect();
    let sql = if keep.is_empty() {
        "DELETE FROM pending".to_string()
    } else {
        format!("DELETE FROM pending WHERE peer NOT IN ({})", keep.join(","))
    };
    conn.execute(&sql, [])
}

/// Paces heal transfers of one sending brick to `rate` bytes per second,
/// whatever the number of peers and concurrent pushes.
#[derive(Debug, Default)]
pub struct RateLimit {
    next_free: Mutex<Option<tokio::time::Instant>>,
}

/// Most a brick may run ahead of its rate (a small burst).
const BURST: Duration = Duration::from_millis(250);

impl RateLimit {
    /// Waits until `bytes` more may be sent at `rate` bytes/s (0 = no limit).
    pub async fn take(&self, bytes: u64, rate: u64) {
        if rate == 0 || bytes == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / rate as f64);
        let start = {
            let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            let floor = now.checked_sub(BURST).unwrap_or(now);
            let start = next.map_or(floor, |n| n.max(floor));
            *next = Some(start + cost);
            start
        };
        // The reservation is [start, start + cost): send once it has begun
        // and the bucket has no debt left beyond the burst.
        let ready = start + cost;
        let now = tokio::time::Instant::now();
        if ready > now + BURST {
            tokio::time::sleep_until(ready - BURST).await;
        }
    }
}

/// The heal rate limiter of brick `id` (one per sending brick).
pub fn limiter(id: u64) -> Arc<RateLimit> {
    static ALL: OnceLock<Mutex<HashMap<u64, Arc<RateLimit>>>> = OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.entry(id).or_default().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reinit_sets_aside_and_writes_marker() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("b");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), b"x").unwrap();
        std::fs::create_dir_all(root.join(RESERVED)).unwrap();
        std::fs::write(root.join(RESERVED).join("meta.db"), b"old").unwrap();
        let vol = Uuid::new_v4();
        let msg = reinit_brick_dir(&root, vol).unwrap();
        assert!(msg.contains("2 earlier entries"), "{msg}");
        let names: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(RESERVED)]);
        let marker = std::fs::read_to_string(root.join(RESERVED).join(MARKER)).unwrap();
        assert_eq!(marker, vol.to_string());
        assert!(!root.join(RESERVED).join("meta.db").exists());
        // A marker of another volume is refused.
        assert!(reinit_brick_dir(&root, Uuid::new_v4()).is_err());
    }

    #[test]
    fn reinit_of_a_wiped_dir() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("gone");
        let vol = Uuid::new_v4();
        assert_eq!(reinit_brick_dir(&root, vol).unwrap(), "");
        assert!(root.join(RESERVED).join(MARKER).exists());
    }

    /// Runs on tokio's paused clock: the pacing is exact, not a timing guess.
    #[tokio::test(start_paused = true)]
    async fn rate_limit_paces_bytes() {
        let l = RateLimit::default();
        let t0 = tokio::time::Instant::now();
        for _ in 0..10 {
            l.take(100_000, 1_000_000).await;
        }
        // 1 MB at 1 MB/s is 1 s of sending; the bucket may start BURST in
        // the past and run BURST ahead, so the caller waits 1 s - 2 BURST.
        assert_eq!(t0.elapsed(), Duration::from_secs(1) - 2 * BURST);
        // The next 1 MB at the same rate waits its full second less the
        // burst it may run ahead.
        let t1 = tokio::time::Instant::now();
        l.take(1_000_000, 1_000_000).await;
        assert_eq!(t1.elapsed(), Duration::from_secs(1));
        // No limit never waits.
        let t2 = tokio::time::Instant::now();
        l.take(1 << 20, 0).await;
        assert_eq!(t2.elapsed(), Duration::ZERO);
    }
}

//! The trash of a brick: every version of a file that a brick replaces or
//! deletes (an overwrite, a deletion, the loser of a split-brain
//! resolution) is kept under `<brick>/.gsync/trash/` for
//! `features.trash-retention`, so a mistake replicated to every brick can
//! still be undone with `gsync volume trash VOL restore`.
//!
//! Content is stored once per blake3 hash (`.gsync/trash/<hex>`): the old
//! file is hard-linked before the brick path is renamed over or removed,
//! so keeping it copies no data, and a content kept twice (or still
//! current elsewhere) takes no more room. Each kept version is a row of the
//! `trash` table (path, entry, chunk list, when, which node's change
//! replaced it, why); its chunks are indexed in `chunks`, so a restore
//! replicates to other bricks without transferring what they also kept.
//!
//! A restore is a new change: the kept version gets a vector that
//! dominates every version the brick holds, is placed like any incoming
//! version (the one it replaces goes to the trash in turn), and replicates
//! through the pending rows. The sweep removes expired rows in small
//! batches, each its own short transaction, so it never holds writes up.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use super::files::{self, TempFile};
use super::types::{ChunkRef, Entry, Kind};
use super::{chunking, hex, Brick, StoreError};
use crate::wire::codec;
use crate::wire::path::RESERVED;
use crate::RelPath;

/// Why a version is in the trash.
pub const DELETED: &str = "deleted";
/// A newer content replaced it.
pub const OVERWRITTEN: &str = "overwritten";
/// It lost a split-brain resolution (manual or by policy).
pub const SPLIT_BRAIN: &str = "split-brain";

/// Rows removed per sweep transaction.
const SWEEP_BATCH: usize = 256;

/// Live trash settings of a brick (from the volume options).
#[derive(Debug)]
pub struct Settings {
    /// `features.trash`: keep deleted and overwritten versions.
    pub enabled: AtomicBool,
    /// `features.trash-retention` in seconds.
    pub retention_secs: AtomicU64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: AtomicBool::new(true),
            retention_secs: AtomicU64::new(7 * 86400),
        }
    }
}

/// One kept version, as `trash list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrashItem {
    /// Path in the volume.
    pub path: String,
    /// Version: the first 12 hex digits of the content's blake3.
    pub version: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was replaced or deleted (seconds since the epoch).
    pub at: u64,
    /// Node whose change replaced or deleted it.
    pub by: String,
    /// `deleted`, `overwritten` or `split-brain`.
    pub reason: String,
    /// Version vector it had.
    pub vv: String,
    /// Replica id of the brick that holds it.
    pub brick: u64,
}

/// Creates the trash table if missing (idempotent; runs at every open).
pub fn ensure_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS trash (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL,
            entry BLOB NOT NULL,
            chunks BLOB NOT NULL,
            hash BLOB NOT NULL,
            at INTEGER NOT NULL,
            by TEXT NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS trash_path ON trash(path);
        CREATE INDEX IF NOT EXISTS trash_hash ON trash(hash);
        CREATE INDEX IF NOT EXISTS trash_at ON trash(at);",
    )
}

/// Directory of kept contents.
pub fn dir(root: &Path) -> PathBuf {
    root.join(RESERVED).join("trash")
}

/// Brick-relative name of the kept content `hash`.
pub fn file_rel(hash: &[u8; 32]) -> String {
    format!("{RESERVED}/trash/{}", hex(hash))
}

/// A version to record in the trash once its content is kept.
#[derive(Debug)]
pub struct Kept {
    /// The version.
    pub entry: Entry,
    /// Its chunks.
    pub chunks: Vec<ChunkRef>,
    /// Why.
    pub reason: &'static str,
    /// The node whose change replaced it.
    pub by: uuid::Uuid,
    /// The content file was created now (its chunks need indexing).
    pub new_file: bool,
}

/// Keeps the content at `src` (the file about to be replaced or removed)
/// under its hash. Must run before the brick path changes. Returns whether
/// a new file was stored (false: the content was kept already).
pub fn keep_content(root: &Path, hash: &[u8; 32], src: &Path) -> std::io::Result<bool> {
    let d = dir(root);
    std::fs::create_dir_all(&d)?;
    let dest = d.join(hex(hash));
    if dest.exists() {
        return Ok(false);
    }
    // A hard link keeps the old inode alive when the brick path is renamed
    // over or removed: no data is copied. Fall back to a copy elsewhere.
    if std::fs::hard_link(src, &dest).is_err() {
        let tmp = files::tmp_dir(root);
        let (t, _) = TempFile::create(&tmp)?;
        std::fs::copy(src, t.path())?;
        t.persist(&dest)?;
    }
    Ok(true)
}

/// Records kept versions in the commit's transaction.
pub fn record(tx: &Connection, kept: &[Kept]) -> Result<(), StoreError> {
    let at = now_secs() as i64;
    for k in kept {
        let enc =
            codec::encode(&k.entry).map_err(|_| StoreError::Corrupt(k.entry.path.to_string()))?;
        tx.execute(
            "INSERT INTO trash (path, entry, chunks, hash, at, by, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                k.entry.path.as_str(),
                enc,
                chunking::encode_list(&k.chunks),
                k.entry.hash.as_slice(),
                at,
                k.by.to_string(),
                k.reason
            ],
        )?;
        if k.new_file {
            let file = file_rel(&k.entry.hash);
            let mut st = tx.prepare_cached(
                "INSERT INTO chunks (hash, file, offset, len) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (c, off) in k.chunks.iter().zip(chunking::offsets(&k.chunks)) {
                st.execute(params![c.hash.as_slice(), file, off as i64, c.len])?;
            }
        }
    }
    Ok(())
}

/// What a brick keeps when `old` (current) gives way to `new`: `None` when
/// nothing is lost (not a file, same content, or the trash is off).
pub fn reason_for(old: &Entry, new: &Entry, kept_as_sibling: bool) -> Option<&'static str> {
    if old.kind != Kind::File || kept_as_sibling {
        return None;
    }
    match new.kind {
        Kind::File if new.hash == old.hash => None,
        Kind::File => Some(OVERWRITTEN),
        _ => Some(DELETED),
    }
}

pub(super) struct Row {
    pub(super) id: i64,
    pub(super) entry: Entry,
    pub(super) chunks: Vec<ChunkRef>,
    pub(super) at: u64,
    pub(super) by: String,
    pub(super) reason: String,
}

pub(super) fn rows(conn: &Connection, prefix: Option<&str>) -> Result<Vec<Row>, StoreError> {
    let (sql, args): (&str, Vec<String>) = match prefix {
        Some(p) => (
            "SELECT id, path, entry, chunks, at, by, reason FROM trash
             WHERE path = ?1 OR (path > ?2 AND path < ?3) ORDER BY path, id",
            vec![p.to_string(), format!("{p}/"), format!("{p}0")],
        ),
        None => (
            "SELECT id, path, entry, chunks, at, by, reason FROM trash ORDER BY path, id",
            vec![],
        ),
    };
    let mut st = conn.prepare_cached(sql)?;
    let it = st.query_map(rusqlite::params_from_iter(args.iter()), |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, Vec<u8>>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in it {
        let (id, path, e, c, at, by, reason) = r?;
        let entry: Entry = codec::decode(&e).map_err(|_| StoreError::Corrupt(path.clone()))?;
        let chunks = chunking::decode_list(&c).ok_or_else(|| StoreError::Corrupt(path.clone()))?;
        out.push(Row {
            id,
            entry,
            chunks,
            at: at as u64,
            by,
            reason,
        });
    }
    Ok(out)
}

/// The kept versions under `prefix` (a file or a directory; all when
/// `None`), oldest first per path.
pub fn list(
    brick: &Brick,
    conn: &Connection,
    prefix: Option<&str>,
) -> Result<Vec<TrashItem>, StoreError> {
    Ok(rows(conn, prefix)?
        .into_iter()
        .map(|r| TrashItem {
            path: r.entry.path.to_string(),
            version: hex(&r.entry.hash)[..12].to_string(),
            size: r.entry.size,
            at: r.at,
            by: r.by,
            reason: r.reason,
            vv: r.entry.vv.to_string(),
            brick: brick.id,
        })
        .collect())
}

/// The split-brain losers of `path`, for `split-brain show`:
/// `(version, kept file)`.
pub fn losers(conn: &Connection, path: &RelPath) -> Result<Vec<(Entry, String)>, StoreError> {
    Ok(rows(conn, Some(path.as_str()))?
        .into_iter()
        .filter(|r| r.reason == SPLIT_BRAIN && r.entry.path == *path)
        .map(|r| {
            let f = file_rel(&r.entry.hash);
            (r.entry, f)
        })
        .collect())
}

/// Removes rows older than their retention (`retention` for deletions
/// and overwrites, `loser_retention` for split-brain losers), one small
/// transaction per batch; a content file goes when no row names it.
/// Returns how many rows were removed.
pub async fn sweep(
    brick: &Arc<Brick>,
    retention: u64,
    loser_retention: u64,
) -> Result<u64, StoreError> {
    let now = now_secs();
    let cut = now.saturating_sub(retention) as i64;
    let cut_losers = now.saturating_sub(loser_retention) as i64;
    let mut total = 0;
    loop {
        // Alone among placements: one could be linking a content this
        // removes (see `apply::commit`).
        let _placing = brick.placing.write().await;
        let n = brick
            .with_db(move |b, conn| -> Result<usize, StoreError> {
                let old: Vec<(i64, Vec<u8>)> = {
                    let mut st = conn.prepare_cached(
                        "SELECT id, hash FROM trash
                         WHERE (reason != ?1 AND at < ?2) OR (reason = ?1 AND at < ?3)
                         LIMIT ?4",
                    )?;
                    let rows = st.query_map(
                        params![SPLIT_BRAIN, cut, cut_losers, SWEEP_BATCH as i64],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    rows.collect::<Result<_, _>>()?
                };
                let tx = conn.transaction()?;
                let mut gone = Vec::new();
                for (id, h) in &old {
                    tx.execute("DELETE FROM trash WHERE id = ?1", params![id])?;
                    let left: i64 = tx.query_row(
                        "SELECT COUNT(*) FROM trash WHERE hash = ?1",
                        params![h],
                        |r| r.get(0),
                    )?;
                    if left == 0 {
                        if let Ok(h) = <[u8; 32]>::try_from(h.as_slice()) {
                            let f = file_rel(&h);
                            tx.execute("DELETE FROM chunks WHERE file = ?1", params![f])?;
                            gone.push(b.root.join(f));
                        }
                    }
                }
                tx.commit()?;
                for f in gone {
                    let _ = std::fs::remove_file(f);
                }
                Ok(old.len())
            })
            .await?;
        total += n as u64;
        if n < SWEEP_BATCH {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Applies the volume options to a brick's live settings.
pub fn configure(brick: &Brick, enabled: bool, retention_secs: u64) {
    brick.trash.enabled.store(enabled, Ordering::Relaxed);
    brick
        .trash
        .retention_secs
        .store(retention_secs, Ordering::Relaxed);
}

/// `secs` since the epoch as an RFC 3339 UTC time, for listings.
pub fn format_when(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::reconcile::{Plan, Src};
    use crate::store::restore::set_vv;
    use crate::wire::vv::VersionVector;

    fn file(hash: u8) -> Entry {
        let mut e = Entry::tombstone(RelPath::new("a").unwrap(), uuid::Uuid::nil());
        e.kind = Kind::File;
        e.hash = [hash; 32];
        e
    }

    /// Disk use under `dir` (allocated blocks), recursively.
    fn du(dir: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let mut n = 0;
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let m = e.metadata().unwrap();
            n += if m.is_dir() {
                du(&e.path())
            } else {
                m.blocks() * 512
            };
        }
        n
    }

    /// 10,000 overwrites of 4 KiB files (1,000 files, 10 versions each)
    /// through the brick's commit path, with and without the trash:
    /// prints the time and the disk used. Run with
    /// `cargo test --release -p gsync-brick trash_cost -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore]
    async fn trash_cost() {
        for on in [false, true] {
            let d = tempfile::tempdir().unwrap();
            let b = Brick::open(
                d.path(),
                uuid::Uuid::new_v4(),
                "v",
                1,
                uuid::Uuid::new_v4(),
                vec![2],
            )
            .unwrap();
            let b = Arc::new(b);
            b.trash.enabled.store(on, Ordering::Relaxed);
            let start = std::time::Instant::now();
            for i in 0..10_000u32 {
                let mut data = vec![0u8; 4096];
                for (k, c) in data.chunks_mut(32).enumerate() {
                    c.copy_from_slice(
                        blake3::hash(&[i.to_le_bytes(), (k as u32).to_le_bytes()].concat())
                            .as_bytes(),
                    );
                }
                let hash = *blake3::hash(&data).as_bytes();
                let mut e = file(0);
                e.path = RelPath::new(&format!("d/f{}", i % 1000)).unwrap();
                e.hash = hash;
                e.size = 4096;
                e.mode = 0o644;
                let vv = VersionVector::from_entries([(1, u64::from(i) + 1)]);
                set_vv(&mut e, vv);
                let chunks = vec![ChunkRef { hash, len: 4096 }];
                let (t, mut f) = TempFile::create(&files::tmp_dir(d.path())).unwrap();
                std::io::Write::write_all(&mut f, &data).unwrap();
                f.sync_all().unwrap();
                let plan = Plan {
                    current: (e.clone(), Src::Incoming),
                    siblings: Vec::new(),
                    members: Vec::new(),
                    diverged: false,
                };
                super::super::apply::commit_local(&b, plan, e, chunks, Some(t))
                    .await
                    .unwrap();
            }
            let took = start.elapsed();
            let trash = du(&dir(d.path()));
            let total = du(d.path());
            eprintln!(
                "trash {}: 10000 overwrites of 4 KiB in {:.2}s ({:.0}/s); brick dir {} KiB, of which trash {} KiB",
                if on { "on " } else { "off" },
                took.as_secs_f64(),
                10_000.0 / took.as_secs_f64(),
                total / 1024,
                trash / 1024
            );
        }
    }

    #[test]
    fn what_is_kept() {
        let tomb = Entry::tombstone(RelPath::new("a").unwrap(), uuid::Uuid::nil());
        let mut dir = tomb.clone();
        dir.kind = Kind::Dir;
        let table: &[(Entry, Entry, bool, Option<&str>)] = &[
            (file(1), file(2), false, Some(OVERWRITTEN)),
            (file(1), file(1), false, None),
            (file(1), tomb.clone(), false, Some(DELETED)),
            (file(1), dir.clone(), false, Some(DELETED)),
            (file(1), file(2), true, None),
            (dir.clone(), tomb.clone(), false, None),
            (tomb.clone(), file(2), false, None),
        ];
        for (old, new, sib, want) in table {
            assert_eq!(
                reason_for(old, new, *sib),
                *want,
                "{:?} -> {:?}",
                old.kind,
                new.kind
            );
        }
    }
}

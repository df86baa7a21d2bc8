//! One brick: the volume's files as plain files in a directory, and their
//! metadata, versions, chunk index and heal index in SQLite under
//! `<brick>/.gsync/`.
//!
//! Layout:
//! - `types`: the data model of a path (plain data, shared with the wire).
//! - `schema`: the database and its migrations.
//! - `chunking`: FastCDC chunking and verified chunk reads.
//! - `db`: the thread that owns the database; group commit.
//! - `files`: path resolution inside the brick and atomic placement.
//! - `reconcile`: the pure decision for an incoming version.
//! - `apply`: receiving an offered version (content, commit), in the
//!   store's own terms (`Offered` -> `Applied` | `Refusal`).
//! - `batch`: many small versions at once, each as its own offer.
//! - `intents`: placements not yet recorded, undone at the next open.
//! - `import`: files already in a new brick directory adopted.
//! - `digest`: Merkle digests of a directory's children (full crawl).
//! - `trash`, `restore`: replaced and deleted versions, kept and brought back.
//! - `changeset`: which stored versions were written together.
//! - `marker`: the volume-id marker of a brick directory.
//! - `outages`: the outage history tables.
//!
//! Nothing here names a request, a response, a frame or the node: the
//! brick service (`service`) converts at the wire's edge.

pub mod apply;
pub mod batch;
pub mod changeset;
pub mod chunking;
pub mod db;
pub mod digest;
pub mod files;
pub(crate) mod import;
pub mod intents;
pub mod marker;
pub mod outages;
pub mod reconcile;
pub mod restore;
pub mod schema;
pub mod trash;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

pub use apply::choose;
pub use marker::{check_brick_dir, marker_path, prepare_brick_dir, DirProblem};
use types::{ChunkRef, Entry};

use crate::heal_types::{BrickHealInfo, HealEntry};
use crate::status::Counters;
use crate::wire::codec;
use crate::RelPath;

/// Errors of a brick.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("brick database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Disk IO failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A stored row is unreadable.
    #[error("brick database: corrupt row for {0}")]
    Corrupt(String),
    /// The offered content does not match its hash.
    #[error("content of {0} does not match its hash")]
    BadContent(String),
    /// The group transaction holding this commit failed.
    #[error("brick database: commit failed: {0}")]
    Commit(String),
}

impl StoreError {
    pub(crate) fn io(
        op: &'static str,
        path: impl std::fmt::Display,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            op,
            path: path.to_string(),
            source,
        }
    }

    /// True when retrying later may help (disk full, busy database).
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Corrupt(_))
    }
}

/// Live counters of a brick.
#[derive(Debug, Default)]
pub struct LiveCounters {
    changes_applied: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    chunks_reused: AtomicU64,
    chunks_fetched: AtomicU64,
    heals: AtomicU64,
    heal_bytes: AtomicU64,
    /// Paths being transferred right now.
    pub healing: AtomicU64,
    /// Content bytes written by heals so far, counted chunk by chunk (so
    /// the fill of one big file shows progress before it completes).
    pub heal_streamed: AtomicU64,
}

/// Where the current heal started: when, and the heal counters then.
#[derive(Debug, Clone, Copy)]
pub struct HealMark {
    /// When it started.
    pub at: std::time::Instant,
    /// Heals completed before it.
    pub heals: u64,
    /// Bytes of completed heals before it.
    pub heal_bytes: u64,
    /// Bytes streamed by heals before it.
    pub streamed: u64,
}

impl LiveCounters {
    fn snapshot(&self) -> Counters {
        Counters {
            changes_applied: self.changes_applied.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            chunks_reused: self.chunks_reused.load(Ordering::Relaxed),
            chunks_fetched: self.chunks_fetched.load(Ordering::Relaxed),
            heals: self.heals.load(Ordering::Relaxed),
            heal_bytes: self.heal_bytes.load(Ordering::Relaxed),
        }
    }

    /// Counts bytes sent by this brick.
    pub fn add_sent(&self, n: u64) {
        self.bytes_sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a completed heal of `bytes`.
    pub fn add_heal(&self, bytes: u64) {
        self.heals.fetch_add(1, Ordering::Relaxed);
        self.heal_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// One brick served by this node.
#[derive(Debug)]
pub struct Brick {
    /// Brick directory.
    pub root: PathBuf,
    /// Volume id.
    pub volume: Uuid,
    /// Volume name.
    pub volume_name: String,
    /// Replica id.
    pub id: u64,
    /// Node that serves it.
    pub node: Uuid,
    /// Replica ids of the other bricks of the volume; changed in place
    /// when bricks are added or removed (see [`Brick::set_peers`]).
    peers: Mutex<Vec<u64>>,
    db: db::Db,
    seq: Arc<tokio::sync::watch::Sender<u64>>,
    /// Shared by placements that touch only their own path, taken alone by
    /// those that remove or replace what others may use; held until the
    /// commit is durable (see `apply::commit`).
    placing: tokio::sync::RwLock<()>,
    /// Counters.
    pub counters: LiveCounters,
    /// Last local error (e.g. disk full), for heal info.
    pub last_error: Mutex<Option<String>>,
    /// Whether the brick currently reaches quorum (`None`: not configured).
    pub quorum: Mutex<Option<bool>>,
    /// Wakes the replicators when new pending rows exist.
    pub pending_notify: tokio::sync::Notify,
    /// Paths being updated right now (see [`Brick::lock_path`]).
    busy: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When the current heal (replay after a peer came back) started, and
    /// the heal counters (entries, bytes) then: gives the rates and ETA in
    /// `statistics`.
    pub heal_started: Mutex<Option<HealMark>>,
    /// The latest full heal toward each peer brick (see `crawl`).
    pub full_heal: Mutex<std::collections::BTreeMap<u64, crate::heal_types::FullHealTrack>>,
    /// Trash settings (`features.trash`, `features.trash-retention`).
    pub trash: trash::Settings,
    /// Placements in flight (see [`intents`]).
    intents: intents::Intents,
}

/// Exclusive right to update one path of a brick; released on drop.
pub struct PathGuard<'a> {
    brick: &'a Brick,
    path: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for PathGuard<'_> {
    fn drop(&mut self) {
        let mut busy = self.brick.busy.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map and this guard hold it: nobody waits, forget it.
        if busy
            .get(&self.path)
            .is_some_and(|m| Arc::strong_count(m) <= 2)
        {
            busy.remove(&self.path);
        }
    }
}

impl Brick {
    /// Replica ids of the other bricks of the volume, as of now.
    pub fn peers(&self) -> Vec<u64> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the peer bricks (a brick was added to or removed from the
    /// volume). The brick stays open: its writers, change-feed waiters and
    /// per-path locks carry on; only the replicators are restarted.
    pub fn set_peers(&self, peers: Vec<u64>) {
        *self.peers.lock().unwrap_or_else(|e| e.into_inner()) = peers;
    }

    /// Opens the brick at `root` (which must exist), creating `.gsync/`.
    pub fn open(
        root: &Path,
        volume: Uuid,
        volume_name: &str,
        id: u64,
        node: Uuid,
        peers: Vec<u64>,
    ) -> Result<Self, StoreError> {
        let meta = root.join(crate::wire::path::RESERVED);
        std::fs::create_dir_all(&meta).map_err(|e| StoreError::io("create", meta.display(), e))?;
        // Leftover temp files of an interrupted write are garbage.
        let tmp = files::tmp_dir(root);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| StoreError::io("create", tmp.display(), e))?;
        let conn = schema::open(&meta.join("meta.db"))?;
        trash::ensure_schema(&conn)?;
        outages::ensure_schema(&conn)?;
        match intents::recover(root, &conn) {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(brick = %root.display(), "{n} changes placed but not recorded before a crash were undone")
            }
            Err(e) => {
                tracing::error!(brick = %root.display(), "cannot undo the changes in flight at a crash: {e}")
            }
        }
        let seq: u64 = conn
            .query_row("SELECT value FROM kv WHERE key = 'seq'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .unwrap_or(0) as u64;
        let seq = Arc::new(tokio::sync::watch::channel(seq).0);
        let db = db::Db::start(conn, &format!("gsync-db-{id}"), seq.clone())
            .map_err(|e| StoreError::io("start the database thread of", root.display(), e))?;
        Ok(Self {
            root: root.to_path_buf(),
            volume,
            volume_name: volume_name.to_string(),
            id,
            node,
            peers: Mutex::new(peers),
            db,
            seq,
            placing: tokio::sync::RwLock::new(()),
            counters: LiveCounters::default(),
            last_error: Mutex::new(None),
            quorum: Mutex::new(None),
            pending_notify: tokio::sync::Notify::new(),
            heal_started: Mutex::new(None),
            full_heal: Mutex::default(),
            busy: Mutex::default(),
            trash: trash::Settings::default(),
            intents: intents::Intents::new(root),
        })
    }

    /// Waits (at most `wait`) for the exclusive right to update `path`.
    ///
    /// An update decides against the path's current state, may then spend
    /// a long time receiving content, and commits that decision: two
    /// updates of one path at once would each decide against the old state
    /// and the later commit would undo the earlier (an older version over
    /// a newer one, a lost sibling), or the same content would be received
    /// twice (the origin and a relaying brick offering it together).
    pub async fn lock_path(
        &self,
        path: &RelPath,
        wait: std::time::Duration,
    ) -> Option<PathGuard<'_>> {
        let m = {
            let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            busy.entry(path.as_str().to_string()).or_default().clone()
        };
        let guard = tokio::time::timeout(wait, m.lock_owned()).await.ok();
        let Some(guard) = guard else {
            // Drop our claim on the entry the same way a guard would.
            let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            if busy
                .get(path.as_str())
                .is_some_and(|x| Arc::strong_count(x) <= 2)
            {
                busy.remove(path.as_str());
            }
            return None;
        };
        Some(PathGuard {
            brick: self,
            path: path.as_str().to_string(),
            _guard: guard,
        })
    }

    /// Runs `f` with the database on its owner thread (see `db`) and
    /// waits for the answer.
    pub async fn with_db<T, F>(self: &Arc<Self>, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&Self, &mut Connection) -> T + Send + 'static,
    {
        let me = self.clone();
        self.db.call(move |conn| f(&me, conn)).await
    }

    /// Runs `f` with the database on its owner thread, blocking the current
    /// thread until it is done (never from inside a database job).
    pub fn with_db_sync<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        self.db.call_sync(f)
    }

    /// Queues `f` for the next group commit (see `db`), after an fsync of
    /// each directory of `dirs`; answers once that commit is durable.
    pub(crate) async fn commit<T, F>(&self, dirs: Vec<PathBuf>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.commit(dirs, f).await
    }

    /// Group-commit statistics: transactions and commits written so far.
    pub fn commit_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.db.stats.batches.load(Relaxed),
            self.db.stats.commits.load(Relaxed),
        )
    }

    /// The current change sequence.
    pub fn seq(&self) -> u64 {
        *self.seq.borrow()
    }

    /// Subscribes to sequence changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.seq.subscribe()
    }

    pub(crate) fn publish_seq(&self, seq: u64) {
        self.seq.send_replace(seq);
    }

    /// The entry and chunk list of `path`.
    pub fn load(
        conn: &Connection,
        path: &RelPath,
    ) -> Result<Option<(Entry, Vec<ChunkRef>)>, StoreError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = conn
            .prepare_cached("SELECT entry, chunks FROM entries WHERE path = ?1")?
            .query_row(params![path.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(e, c)| decode_row(path.as_str(), &e, &c))
            .transpose()
    }

    /// The split-brain siblings of `path`.
    pub fn siblings(
        conn: &Connection,
        path: &RelPath,
    ) -> Result<Vec<(Entry, Vec<ChunkRef>)>, StoreError> {
        Self::versions_in(conn, "siblings", path)
    }

    /// The members behind what `path` shows, when that is a merge of
    /// several (see `store::reconcile`); empty when the shown versions are
    /// the members.
    pub fn members(
        conn: &Connection,
        path: &RelPath,
    ) -> Result<Vec<(Entry, Vec<ChunkRef>)>, StoreError> {
        Self::versions_in(conn, "members", path)
    }

    /// The versions of `path` in `table` (siblings or members), by vector.
    fn versions_in(
        conn: &Connection,
        table: &str,
        path: &RelPath,
    ) -> Result<Vec<(Entry, Vec<ChunkRef>)>, StoreError> {
        let mut st = conn.prepare_cached(&format!(
            "SELECT entry, chunks FROM {table} WHERE path = ?1 ORDER BY vv"
        ))?;
        let rows = st.query_map(params![path.as_str()], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (e, c) = r?;
            out.push(decode_row(path.as_str(), &e, &c)?);
        }
        Ok(out)
    }

    /// Entries changed after `since`, in sequence order.
    pub fn changes_since(
        conn: &Connection,
        since: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Entry)>, StoreError> {
        let mut st = conn.prepare_cached(
            "SELECT path, entry, seq FROM entries WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = st.query_map(params![since as i64, limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (p, e, s) = r?;
            let e: Entry = codec::decode(&e).map_err(|_| StoreError::Corrupt(p))?;
            out.push((s as u64, e));
        }
        Ok(out)
    }

    /// Where a chunk can be read locally: `(file, offset)`.
    pub fn find_chunk(
        conn: &Connection,
        hash: &[u8; 32],
    ) -> Result<Option<(String, u64)>, StoreError> {
        let mut st =
            conn.prepare_cached("SELECT file, offset FROM chunks WHERE hash = ?1 LIMIT 1")?;
        Ok(st
            .query_row(params![hash.as_slice()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .optional()?)
    }

    /// The physical file holding content `hash` for `path`: the brick path,
    /// a sibling or a retained version.
    pub fn content_file(
        &self,
        conn: &Connection,
        path: &RelPath,
        hash: &[u8; 32],
    ) -> Result<Option<PathBuf>, StoreError> {
        if let Some((e, _)) = Self::load(conn, path)? {
            if e.hash == *hash && e.kind == types::Kind::File {
                return Ok(Some(path.under(&self.root)));
            }
        }
        let sib = files::siblings_dir(&self.root).join(hex(hash));
        if sib.exists() {
            return Ok(Some(sib));
        }
        let kept = trash::dir(&self.root).join(hex(hash));
        if kept.exists() {
            return Ok(Some(kept));
        }
        let mut st = conn.prepare_cached("SELECT file FROM retained WHERE path = ?1")?;
        let files: Vec<String> = st
            .query_map(params![path.as_str()], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for f in files {
            if f.ends_with(&hex(hash)) {
                return Ok(Some(self.root.join(f)));
            }
        }
        Ok(None)
    }

    /// The most paths pending for one of the `peers` bricks.
    pub fn pending_count(conn: &Connection, peers: &[u64]) -> Result<u64, StoreError> {
        let mut st = conn.prepare_cached("SELECT COUNT(*) FROM pending WHERE peer = ?1")?;
        let mut max = 0u64;
        for p in peers {
            let n: i64 = st.query_row(params![*p as i64], |r| r.get(0))?;
            max = max.max(n as u64);
        }
        Ok(max)
    }

    /// Heal state for reports.
    pub fn heal_info(conn: &Connection, limit: usize) -> Result<BrickHealInfo, StoreError> {
        let pending: i64 =
            conn.query_row("SELECT COUNT(DISTINCT path) FROM pending", [], |r| r.get(0))?;
        let split: i64 = conn.query_row("SELECT COUNT(DISTINCT path) FROM siblings", [], |r| {
            r.get(0)
        })?;
        let total: i64 = conn.query_row(
            "SELECT COUNT(*) FROM (SELECT path FROM pending UNION SELECT path FROM siblings)",
            [],
            |r| r.get(0),
        )?;
        let mut st = conn.prepare_cached("SELECT peer, COUNT(*) FROM pending GROUP BY peer")?;
        let by_peer = st
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = conn.prepare_cached(
            "SELECT path, 1 FROM (SELECT DISTINCT path FROM siblings)
             UNION SELECT path, 0 FROM (SELECT DISTINCT path FROM pending)
             ORDER BY path LIMIT ?1",
        )?;
        let rows = st.query_map(params![limit as i64 * 2], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut entries: Vec<HealEntry> = Vec::new();
        for r in rows {
            let (p, sb) = r?;
            let Ok(path) = RelPath::new(&p) else { continue };
            match entries.last_mut() {
                Some(last) if last.path == path => last.split_brain |= sb == 1,
                _ => entries.push(HealEntry {
                    path,
                    split_brain: sb == 1,
                }),
            }
        }
        entries.truncate(limit);
        Ok(BrickHealInfo {
            entries,
            total: total as u64,
            pending: pending as u64,
            split_brain: split as u64,
            pending_by_peer: by_peer,
            pending_bytes: Self::pending_bytes(conn, pending as u64)?,
            ..Default::default()
        })
    }

    /// File bytes of the pending paths' current versions: exact for the
    /// first `PENDING_BYTES_SCAN` paths, scaled up for the rest.
    fn pending_bytes(conn: &Connection, pending: u64) -> Result<u64, StoreError> {
        let scan = crate::heal_types::PENDING_BYTES_SCAN;
        let mut st = conn.prepare_cached(
            "SELECT e.path, e.entry FROM entries e
             WHERE e.path IN (SELECT DISTINCT path FROM pending LIMIT ?1)",
        )?;
        let rows = st.query_map(params![scan as i64], |r| r.get::<_, Vec<u8>>(1))?;
        let (mut seen, mut bytes) = (0u64, 0u64);
        for r in rows {
            seen += 1;
            if let Ok(e) = codec::decode::<Entry>(&r?) {
                if e.kind == types::Kind::File {
                    bytes += e.size;
                }
            }
        }
        Ok(if pending > seen && seen > 0 {
            (bytes as f64 * pending as f64 / seen as f64) as u64
        } else {
            bytes
        })
    }

    /// The current version, siblings and retained versions of `path`.
    pub fn versions(
        &self,
        conn: &Connection,
        path: &RelPath,
    ) -> Result<crate::heal_types::SplitBrainVersions, StoreError> {
        let mut versions: Vec<Entry> = Self::load(conn, path)?.into_iter().map(|x| x.0).collect();
        versions.extend(Self::siblings(conn, path)?.into_iter().map(|x| x.0));
        let mut st =
            conn.prepare_cached("SELECT entry, file FROM retained WHERE path = ?1 ORDER BY id")?;
        let rows = st.query_map(params![path.as_str()], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut retained = Vec::new();
        for r in rows {
            let (e, f) = r?;
            let e: Entry = codec::decode(&e).map_err(|_| StoreError::Corrupt(path.to_string()))?;
            retained.push((e, f));
        }
        retained.extend(trash::losers(conn, path)?);
        Ok(crate::heal_types::SplitBrainVersions {
            brick: self.id,
            versions,
            retained,
        })
    }

    /// Paths in split-brain on this brick.
    pub fn split_brain_paths(conn: &Connection) -> Result<Vec<String>, StoreError> {
        let mut st = conn.prepare_cached("SELECT DISTINCT path FROM siblings ORDER BY path")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes retained versions older than `max_age_secs`.
    pub fn expire_retained(&self, conn: &Connection, max_age_secs: u64) -> Result<u64, StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let cutoff = now.saturating_sub(max_age_secs) as i64;
        let mut st = conn.prepare_cached("SELECT id, file FROM retained WHERE at < ?1")?;
        let old: Vec<(i64, String)> = st
            .query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, f) in &old {
            let _ = std::fs::remove_file(self.root.join(f));
            conn.execute("DELETE FROM retained WHERE id = ?1", params![id])?;
        }
        Ok(old.len() as u64)
    }

    /// Counters snapshot.
    pub fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    /// Number of tracked paths.
    pub fn entry_count(&self) -> u64 {
        self.with_db_sync(|c| {
            c.query_row("SELECT COUNT(*) FROM entries", [], |r| r.get::<_, i64>(0))
        })
        .unwrap_or(0) as u64
    }

    /// The next pending rows for `peer`: `(path, seq)` in sequence order.
    pub fn pending_for(
        conn: &Connection,
        peer: u64,
        limit: u32,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut st = conn.prepare_cached(
            "SELECT path, seq FROM pending WHERE peer = ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = st.query_map(params![peer as i64, limit], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Like [`Self::pending_for`], but only rows after sequence `after`,
    /// each with the brick that delivers it (0: this one; see the schema),
    /// and of the rows another brick delivers only those at or below
    /// `watched_upto`.
    pub fn pending_after(
        conn: &Connection,
        peer: u64,
        after: u64,
        watched_upto: u64,
        limit: u32,
    ) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let mut st = conn.prepare_cached(
            "SELECT path, seq, sender FROM pending WHERE peer = ?1 AND seq > ?2 \
             AND (sender = 0 OR seq <= ?3) ORDER BY seq LIMIT ?4",
        )?;
        let rows = st.query_map(
            params![peer as i64, after as i64, watched_upto as i64, limit],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Clears a pending row if it is still at `seq`.
    pub fn confirm(conn: &Connection, peer: u64, path: &str, seq: u64) -> Result<(), StoreError> {
        conn.prepare_cached("DELETE FROM pending WHERE peer = ?1 AND path = ?2 AND seq <= ?3")?
            .execute(params![peer as i64, path, seq as i64])?;
        Ok(())
    }

    /// Adds pending rows for `peer` for the given paths (full crawl).
    pub fn mark_pending(
        conn: &mut Connection,
        peer: u64,
        paths: &[String],
    ) -> Result<u64, StoreError> {
        let tx = conn.transaction()?;
        let mut n = 0;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO pending (peer, path, seq) SELECT ?1, path, seq FROM entries WHERE path = ?2",
            )?;
            for p in paths {
                n += st.execute(params![peer as i64, p])? as u64;
            }
        }
        tx.commit()?;
        Ok(n)
    }
}

fn decode_row(path: &str, e: &[u8], c: &[u8]) -> Result<(Entry, Vec<ChunkRef>), StoreError> {
    let entry: Entry = codec::decode(e).map_err(|_| StoreError::Corrupt(path.to_string()))?;
    let chunks = chunking::decode_list(c).ok_or_else(|| StoreError::Corrupt(path.to_string()))?;
    Ok((entry, chunks))
}

/// Hex form of a hash.
pub fn hex(h: &[u8; 32]) -> String {
    blake3::Hash::from_bytes(*h).to_hex().to_string()
}

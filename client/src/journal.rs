//! The agent's journal (SQLite, one per mount, in the daemon's state
//! directory): for each path, the version the local file was last synced
//! with and the local stat it had then; the queue of local paths waiting
//! to be pushed; the follow cursor (brick, its incarnation, sequence); the
//! deletions the mass-delete guard holds, with why; and the incoming
//! versions the validator rejected, with why (so a restarted agent still
//! keeps them out of the folder and reports them).
//!
//! A local path is "changed" when its stat (kind, size, mtime, mode, inode)
//! no longer matches the journal. That is how the agent tells the user's
//! edits from the files it wrote itself (no echo loops), and how it finds,
//! at start-up, the changes made while it was not running.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use gsync_brick::sqlite::owner::{self, Batcher, CommitError, Owner, Staged};
use gsync_brick::store::chunking;
use gsync_brick::store::types::{ChunkRef, Entry, Kind};
use gsync_brick::wire::codec;
use rusqlite::{params, Connection, OptionalExtension};

use crate::local::LocalStat;

/// Journal errors.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite failed.
    #[error("journal: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row is unreadable.
    #[error("journal: corrupt row for {0}")]
    Corrupt(String),
    /// The transaction a write was part of failed, or the journal's
    /// owner thread is gone.
    #[error("journal: {0}")]
    Commit(String),
}

/// What the journal knows about one path.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The synced version.
    pub entry: Entry,
    /// Its chunk list (files).
    pub chunks: Vec<ChunkRef>,
    /// The local stat after the sync.
    pub stat: LocalStat,
    /// The path is in split-brain as seen from this mount.
    pub conflict: bool,
}

/// A `files` row before decoding: entry, chunks, stat, conflict flag.
type RawRow = (Vec<u8>, Vec<u8>, Vec<u8>, i64);

const MIGRATIONS: &[&str] = &["
    CREATE TABLE files (path TEXT PRIMARY KEY, entry BLOB NOT NULL, chunks BLOB NOT NULL, stat BLOB NOT NULL, conflict INTEGER NOT NULL);
    CREATE TABLE queue (path TEXT PRIMARY KEY);
    CREATE TABLE kv (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
", "
    CREATE TABLE applying (path TEXT PRIMARY KEY, entry BLOB NOT NULL, chunks BLOB NOT NULL, stat BLOB NOT NULL, conflict INTEGER NOT NULL);
", "
    CREATE TABLE held (path TEXT PRIMARY KEY);
    CREATE TABLE notes (key TEXT PRIMARY KEY, value TEXT NOT NULL);
", "
    CREATE TABLE rejected (path TEXT PRIMARY KEY, seq INTEGER NOT NULL, entry BLOB NOT NULL, listed INTEGER NOT NULL);
"];

/// The changes the validator rejected and that are not live, as the
/// journal keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The changeset named in reports.
    pub name: String,
    /// `changeset N (why)`, as the mount's state shows it.
    pub line: String,
    /// The rejected versions with their feed sequence, and whether the
    /// path is one the rejected changes would have changed in the folder
    /// (those are listed in reports).
    pub entries: Vec<(u64, Entry, bool)>,
}

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 4096;

/// The journal's group commit, run on its owner thread: every write
/// queued while the previous transaction was being written goes into one
/// transaction (see [`gsync_brick::sqlite::owner::write_group`]).
struct Group {
    stats: Arc<CommitStats>,
}

impl Batcher for Group {
    type Item = Box<dyn Staged>;
    const MAX_BATCH: usize = MAX_BATCH;

    fn write(&mut self, conn: &mut Connection, mut batch: Vec<Box<dyn Staged>>) {
        let failed = owner::write_group(conn, &mut batch, |_| ()).err();
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.batches.fetch_add(1, Relaxed);
        self.stats.writes.fetch_add(batch.len() as u64, Relaxed);
        owner::finish_group(batch, failed.as_deref());
    }
}

impl CommitError for JournalError {
    fn commit_failed(why: String) -> Self {
        JournalError::Commit(why)
    }

    fn stopped() -> Self {
        stopped()
    }

    fn panicked() -> Self {
        JournalError::Commit("a journal write panicked".into())
    }
}

/// Group-commit statistics of a journal.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Transactions written (each one WAL fsync).
    pub batches: AtomicU64,
    /// Writes committed in them.
    pub writes: AtomicU64,
}

/// An open journal: the handle to the thread that owns its connection.
///
/// That thread runs, in order, what callers queue: reads, and writes,
/// which are committed in groups — every write queued while the previous
/// transaction was being written goes into the next one, each in its own
/// savepoint (one that fails is rolled back alone), with one WAL fsync
/// (`synchronous = FULL`) for the whole group. A writer gets its answer
/// only once its transaction is durable. No SQLite call runs on the async
/// executor: the async methods (`*_async`) await the owner, the others
/// block the calling thread until it answers (start-up and rare paths).
///
/// The journal is not opened in exclusive locking mode: `gsync wait` and
/// `gsync mount` (to tell whether a folder is attached) read it from
/// other connections while the agent runs.
///
/// Dropping the handle stops the thread, which closes the connection.
#[derive(Debug)]
pub struct Journal {
    owner: Owner<Group>,
    /// Group-commit statistics.
    pub stats: Arc<CommitStats>,
}

fn stopped() -> JournalError {
    JournalError::Commit("the journal thread stopped".into())
}

impl Journal {
    /// Opens (creating) the journal at `path` and starts its owner thread.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let mut conn = Connection::open(path)?;
        // `gsync wait` may be reading it a moment.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.set_prepared_statement_cache_capacity(32);
        gsync_brick::sqlite::migrate(&mut conn, MIGRATIONS)?;
        let stats = Arc::new(CommitStats::default());
        let group = Group {
            stats: stats.clone(),
        };
        let owner = Owner::with_batcher(conn, "gsync-journal", group)
            .map_err(|e| JournalError::Commit(format!("cannot start the journal thread: {e}")))?;
        Ok(Self { owner, stats })
    }

    fn not_owner(&self) -> Result<(), JournalError> {
        if self.owner.on_owner_thread() {
            return Err(JournalError::Commit(
                "a journal job waits for the journal".into(),
            ));
        }
        Ok(())
    }

    /// Runs the read `f` on the owner thread and blocks until it answers.
    fn read<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, JournalError> + Send + 'static,
    {
        self.not_owner()?;
        self.owner.call_sync(f).unwrap_or_else(|_| Err(stopped()))
    }

    /// Runs the read `f` on the owner thread and awaits its answer.
    async fn read_async<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, JournalError> + Send + 'static,
    {
        self.owner.call(f).await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Queues the write `f` for the next group transaction and blocks
    /// until that transaction is durable (or failed).
    fn write<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    {
        self.not_owner()?;
        self.owner.commit_sync(Vec::new(), f)
    }

    /// [`Self::write`], awaiting.
    async fn write_async<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    {
        self.owner.commit(Vec::new(), f).await
    }

    fn get_in(conn: &Connection, path: &str) -> Result<Option<Record>, JournalError> {
        let row: Option<RawRow> = conn
            .prepare_cached("SELECT entry, chunks, stat, conflict FROM files WHERE path = ?1")?
            .query_row(params![path], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        match row {
            Some(raw) => Self::decode(path, raw),
            None => Ok(None),
        }
    }

    /// The record of `path`.
    pub fn get(&self, path: &str) -> Result<Option<Record>, JournalError> {
        let path = path.to_string();
        self.read(move |c| Self::get_in(c, &path))
    }

    /// The records of `paths` (those it has), in one trip to the owner.
    pub async fn get_many_async(
        &self,
        paths: Vec<String>,
    ) -> Result<std::collections::HashMap<String, Record>, JournalError> {
        self.read_async(move |c| {
            let mut out = std::collections::HashMap::new();
            for p in paths {
                if let Some(r) = Self::get_in(c, &p)? {
                    out.insert(p, r);
                }
            }
            Ok(out)
        })
        .await
    }

    /// [`Self::get`], awaiting.
    pub async fn get_async(&self, path: &str) -> Result<Option<Record>, JournalError> {
        let path = path.to_string();
        self.read_async(move |c| Self::get_in(c, &path)).await
    }

    fn decode(path: &str, (e, c, s, conflict): RawRow) -> Result<Option<Record>, JournalError> {
        let bad = || JournalError::Corrupt(path.to_string());
        Ok(Some(Record {
            entry: codec::decode(&e).map_err(|_| bad())?,
            chunks: chunking::decode_list(&c).ok_or_else(bad)?,
            stat: codec::decode(&s).map_err(|_| bad())?,
            conflict: conflict != 0,
        }))
    }

    fn put_in(conn: &Connection, rs: &[Record]) -> Result<(), JournalError> {
        for r in rs {
            Self::insert(conn, "files", r)?;
            conn.prepare_cached("DELETE FROM applying WHERE path = ?1")?
                .execute(params![r.entry.path.as_str()])?;
        }
        Ok(())
    }

    /// Stores the record of a path (and clears any apply intent for it).
    pub fn put(&self, r: &Record) -> Result<(), JournalError> {
        let r = r.clone();
        self.write(move |c| Self::put_in(c, std::slice::from_ref(&r)))
    }

    /// [`Self::put`], awaiting.
    pub async fn put_async(&self, r: Record) -> Result<(), JournalError> {
        self.write_async(move |c| Self::put_in(c, std::slice::from_ref(&r)))
            .await
    }

    /// [`Self::put`] of several records in one transaction, awaiting.
    pub async fn put_many_async(&self, rs: Vec<Record>) -> Result<(), JournalError> {
        if rs.is_empty() {
            return Ok(());
        }
        self.write_async(move |c| Self::put_in(c, &rs)).await
    }

    /// Records, before remote versions are renamed into place, what the
    /// files will be: if the agent dies between the rename and
    /// [`Self::put`], the next start finds the file matching the intent
    /// and completes the record, instead of mistaking the file for a local
    /// creation. One transaction for all of `rs`.
    pub async fn put_intents_async(&self, rs: Vec<Record>) -> Result<(), JournalError> {
        if rs.is_empty() {
            return Ok(());
        }
        self.write_async(move |c| {
            for r in &rs {
                Self::insert(c, "applying", r)?;
            }
            Ok(())
        })
        .await
    }

    /// Settles the intents left by a crash: a file that matches its intent
    /// was placed, so its record is completed; the others never were.
    pub fn settle_intents(&self, matches: impl Fn(&Record) -> bool) -> Result<u64, JournalError> {
        let rows: Vec<(String, RawRow)> = self.read(|conn| {
            let mut st =
                conn.prepare_cached("SELECT path, entry, chunks, stat, conflict FROM applying")?;
            let rows = st.query_map([], |r| {
                Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut placed = Vec::new();
        let mut paths = Vec::new();
        for (path, raw) in rows {
            if let Some(rec) = Self::decode(&path, raw)? {
                if matches(&rec) {
                    placed.push(rec);
                }
            }
            paths.push(path);
        }
        let done = placed.len() as u64;
        self.write(move |c| {
            Self::put_in(c, &placed)?;
            let mut st = c.prepare_cached("DELETE FROM applying WHERE path = ?1")?;
            for p in &paths {
                st.execute(params![p])?;
            }
            Ok(())
        })?;
        Ok(done)
    }

    fn insert(conn: &Connection, table: &str, r: &Record) -> Result<(), JournalError> {
        let path = r.entry.path.as_str();
        let bad = || JournalError::Corrupt(path.to_string());
        conn.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {table} (path, entry, chunks, stat, conflict) VALUES (?1, ?2, ?3, ?4, ?5)"
        ))?
        .execute(params![
            path,
            codec::encode(&r.entry).map_err(|_| bad())?,
            chunking::encode_list(&r.chunks),
            codec::encode(&r.stat).map_err(|_| bad())?,
            i64::from(r.conflict)
        ])?;
        Ok(())
    }

    /// Forgets a path.
    pub fn remove(&self, path: &str) -> Result<(), JournalError> {
        let path = path.to_string();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM files WHERE path = ?1")?
                .execute(params![path])?;
            Ok(())
        })
    }

    /// Paths recorded at or below `prefix` (all paths for "").
    pub fn paths_under(&self, prefix: &str) -> Result<Vec<String>, JournalError> {
        let prefix = prefix.to_string();
        self.read(move |conn| {
            let mut st = conn.prepare_cached(
                "SELECT path FROM files WHERE path = ?1 OR (path > ?2 AND path < ?3) OR ?1 = ''",
            )?;
            let lo = format!("{prefix}/");
            let hi = format!("{prefix}0");
            let rows = st.query_map(params![prefix, lo, hi], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Number of paths in split-brain.
    pub fn conflicts(&self) -> Result<u64, JournalError> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT COUNT(*) FROM files WHERE conflict = 1", [], |r| {
                    r.get::<_, i64>(0)
                })? as u64,
            )
        })
    }

    /// Adds paths to the push queue.
    pub fn enqueue<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), JournalError> {
        let paths: Vec<String> = paths.into_iter().map(str::to_string).collect();
        if paths.is_empty() {
            return Ok(());
        }
        self.write(move |c| {
            let mut st = c.prepare_cached("INSERT OR IGNORE INTO queue (path) VALUES (?1)")?;
            for p in &paths {
                st.execute(params![p])?;
            }
            Ok(())
        })
    }

    /// [`Self::enqueue`], awaiting.
    pub async fn enqueue_async(&self, paths: Vec<String>) -> Result<(), JournalError> {
        if paths.is_empty() {
            return Ok(());
        }
        self.write_async(move |c| {
            let mut st = c.prepare_cached("INSERT OR IGNORE INTO queue (path) VALUES (?1)")?;
            for p in &paths {
                st.execute(params![p])?;
            }
            Ok(())
        })
        .await
    }

    /// Removes a path from the push queue.
    pub fn dequeue(&self, path: &str) -> Result<(), JournalError> {
        let path = path.to_string();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM queue WHERE path = ?1")?
                .execute(params![path])?;
            Ok(())
        })
    }

    /// Removes paths from the push queue, in one transaction, awaiting.
    pub async fn dequeue_many_async(&self, paths: Vec<String>) -> Result<(), JournalError> {
        if paths.is_empty() {
            return Ok(());
        }
        self.write_async(move |c| {
            let mut st = c.prepare_cached("DELETE FROM queue WHERE path = ?1")?;
            for p in &paths {
                st.execute(params![p])?;
            }
            Ok(())
        })
        .await
    }

    /// The queued paths.
    pub fn queued(&self) -> Result<Vec<String>, JournalError> {
        self.read(|conn| {
            let mut st = conn.prepare_cached("SELECT path FROM queue ORDER BY path")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// A counter value.
    pub fn kv(&self, key: &str) -> Result<Option<u64>, JournalError> {
        let key = key.to_string();
        self.read(move |c| {
            Ok(
                c.query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()?
                .map(|v| v as u64),
            )
        })
    }

    /// Sets a counter value.
    pub fn set_kv(&self, key: &str, v: u64) -> Result<(), JournalError> {
        let key = key.to_string();
        self.write(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)",
                params![key, v as i64],
            )?;
            Ok(())
        })
    }

    fn set_cursor_in(
        c: &Connection,
        brick: u64,
        incarnation: u64,
        seq: u64,
    ) -> Result<(), JournalError> {
        for (k, v) in [("brick", brick), ("incarnation", incarnation), ("seq", seq)] {
            c.prepare_cached("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)")?
                .execute(params![k, v as i64])?;
        }
        Ok(())
    }

    /// Records the follow cursor: the brick, its incarnation and the
    /// sequence reached, together (a cursor is meaningless without the
    /// incarnation it belongs to).
    pub async fn set_cursor_async(
        &self,
        brick: u64,
        incarnation: u64,
        seq: u64,
    ) -> Result<(), JournalError> {
        self.write_async(move |c| Self::set_cursor_in(c, brick, incarnation, seq))
            .await
    }

    /// Forgets every record, the queue, the held deletions, the rejected
    /// changes and the cursor:
    /// the next sync is a first attach (used when the mount folder itself
    /// vanished and came back, so its contents are compared, never taken as
    /// deletions).
    pub fn forget_all(&self) -> Result<(), JournalError> {
        self.write(|c| {
            c.execute_batch(
                "DELETE FROM files; DELETE FROM queue; DELETE FROM applying; DELETE FROM kv; DELETE FROM held; DELETE FROM notes; DELETE FROM rejected;",
            )?;
            Ok(())
        })
    }

    /// Number of files and links the mount holds as synced (every record
    /// but deletions and directories).
    pub fn live_count(&self) -> Result<u64, JournalError> {
        self.read(|conn| {
            let mut st = conn.prepare_cached("SELECT path, entry FROM files")?;
            let mut rows = st.query([])?;
            let mut n = 0;
            while let Some(r) = rows.next()? {
                let e: Vec<u8> = r.get(1)?;
                let entry: Entry = codec::decode(&e)
                    .map_err(|_| JournalError::Corrupt(r.get(0).unwrap_or_default()))?;
                if !matches!(entry.kind, Kind::Tombstone | Kind::Dir) {
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    /// Holds deletions (mass-delete guard) for `why`, taking them out of
    /// the push queue.
    pub fn hold<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
        why: &str,
    ) -> Result<(), JournalError> {
        let paths: Vec<String> = paths.into_iter().map(str::to_string).collect();
        let why = why.to_string();
        self.write(move |c| {
            {
                let mut add = c.prepare_cached("INSERT OR IGNORE INTO held (path) VALUES (?1)")?;
                let mut unqueue = c.prepare_cached("DELETE FROM queue WHERE path = ?1")?;
                for p in &paths {
                    add.execute(params![p])?;
                    unqueue.execute(params![p])?;
                }
            }
            c.execute(
                "INSERT OR REPLACE INTO notes (key, value) VALUES ('held-why', ?1)",
                params![why],
            )?;
            Ok(())
        })
    }

    /// The held deletions, shallowest first.
    pub fn held(&self) -> Result<Vec<String>, JournalError> {
        self.read(|conn| {
            let mut st = conn.prepare_cached("SELECT path FROM held ORDER BY path")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            let mut v: Vec<String> = rows.collect::<Result<_, _>>()?;
            v.sort_by_key(|p| p.matches('/').count());
            Ok(v)
        })
    }

    /// Why deletions are held (the reason of the last hold).
    pub fn held_why(&self) -> Result<Option<String>, JournalError> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT value FROM notes WHERE key = 'held-why'", [], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
    }

    /// Releases held deletions (pushed, reverted, or no longer deletions).
    pub fn release<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), JournalError> {
        let paths: Vec<String> = paths.into_iter().map(str::to_string).collect();
        self.write(move |c| {
            {
                let mut st = c.prepare_cached("DELETE FROM held WHERE path = ?1")?;
                for p in &paths {
                    st.execute(params![p])?;
                }
            }
            c.execute(
                "DELETE FROM notes WHERE key = 'held-why' AND NOT EXISTS (SELECT 1 FROM held)",
                [],
            )?;
            Ok(())
        })
    }
}

impl Journal {
    /// Replaces the rejected changes with `r`.
    pub fn set_rejected(&self, r: &Rejection) -> Result<(), JournalError> {
        let r = r.clone();
        self.write(move |c| {
            c.execute("DELETE FROM rejected", [])?;
            {
                let mut st = c.prepare_cached(
                    "INSERT OR REPLACE INTO rejected (path, seq, entry, listed) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (seq, e, listed) in &r.entries {
                    let path = e.path.as_str();
                    let blob =
                        codec::encode(e).map_err(|_| JournalError::Corrupt(path.to_string()))?;
                    st.execute(params![path, *seq as i64, blob, i64::from(*listed)])?;
                }
            }
            for (k, v) in [("rejected-name", &r.name), ("rejected-line", &r.line)] {
                c.execute(
                    "INSERT OR REPLACE INTO notes (key, value) VALUES (?1, ?2)",
                    params![k, v],
                )?;
            }
            Ok(())
        })
    }

    /// The rejected changes not live, if any.
    pub fn rejected(&self) -> Result<Option<Rejection>, JournalError> {
        self.read(|conn| {
            let note = |k: &str| -> Result<Option<String>, JournalError> {
                Ok(conn
                    .query_row("SELECT value FROM notes WHERE key = ?1", params![k], |r| {
                        r.get(0)
                    })
                    .optional()?)
            };
            let (Some(name), Some(line)) = (note("rejected-name")?, note("rejected-line")?) else {
                return Ok(None);
            };
            let mut st =
                conn.prepare_cached("SELECT path, seq, entry, listed FROM rejected ORDER BY path")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let mut entries = Vec::new();
            for row in rows {
                let (path, seq, blob, listed) = row?;
                let e: Entry = codec::decode(&blob).map_err(|_| JournalError::Corrupt(path))?;
                entries.push((seq as u64, e, listed != 0));
            }
            if entries.is_empty() {
                return Ok(None);
            }
            Ok(Some(Rejection {
                name,
                line,
                entries,
            }))
        })
    }

    /// Forgets the rejected changes (they went live, or were superseded).
    pub fn clear_rejected(&self) -> Result<(), JournalError> {
        self.write(|c| {
            c.execute_batch(
                "DELETE FROM rejected; DELETE FROM notes WHERE key IN ('rejected-name', 'rejected-line');",
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_changes_survive_a_reopen_until_cleared() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("j.db");
        let e = |path: &str| {
            Entry::tombstone(gsync_brick::RelPath::new(path).unwrap(), uuid::Uuid::nil())
        };
        let r = Rejection {
            name: "00000000000000a7".into(),
            line: "changeset 00000000000000a7 (validator exit 1: bad)".into(),
            entries: vec![(7, e("a.conf"), true), (9, e("b/c.conf"), false)],
        };
        {
            let j = Journal::open(&p).unwrap();
            assert_eq!(j.rejected().unwrap(), None);
            j.set_rejected(&r).unwrap();
        }
        let j = Journal::open(&p).unwrap();
        assert_eq!(j.rejected().unwrap().as_ref(), Some(&r));
        // A newer rejection replaces the whole set.
        let r2 = Rejection {
            name: "#12".into(),
            line: "changeset #12 (validator exit 2)".into(),
            entries: vec![(12, e("a.conf"), true)],
        };
        j.set_rejected(&r2).unwrap();
        assert_eq!(j.rejected().unwrap().as_ref(), Some(&r2));
        j.clear_rejected().unwrap();
        assert_eq!(j.rejected().unwrap(), None);
        j.set_rejected(&r).unwrap();
        j.forget_all().unwrap();
        assert_eq!(j.rejected().unwrap(), None);
    }

    fn rec(path: &str, n: u64) -> Record {
        let mut e = Entry::tombstone(gsync_brick::RelPath::new(path).unwrap(), uuid::Uuid::nil());
        e.size = n;
        Record {
            entry: e,
            chunks: Vec::new(),
            stat: LocalStat::missing(),
            conflict: false,
        }
    }

    /// Many writers at once, from threads and from async tasks: each gets
    /// its answer once its transaction is committed, the writes share
    /// transactions (one WAL fsync each), a failing write is rolled back
    /// alone, and everything answered is there after a reopen.
    #[test]
    fn concurrent_writes_are_committed_in_groups() {
        use std::sync::atomic::Ordering::Relaxed;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("j.db");
        let j = Arc::new(Journal::open(&p).unwrap());
        let threads: Vec<_> = (0..16u64)
            .map(|t| {
                let j = j.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        j.put(&rec(&format!("t{t}/f{i}"), i)).unwrap();
                    }
                })
            })
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let tasks: Vec<_> = (0..200u64)
                .map(|i| {
                    let j = j.clone();
                    tokio::spawn(async move {
                        if i % 10 == 9 {
                            // Fails after writing: rolled back alone.
                            let r = j
                                .write_async(move |c| {
                                    Journal::put_in(c, &[rec(&format!("bad/f{i}"), i)])?;
                                    Err::<(), _>(JournalError::Corrupt(format!("bad/f{i}")))
                                })
                                .await;
                            assert!(matches!(r, Err(JournalError::Corrupt(_))), "{r:?}");
                        } else {
                            j.put_async(rec(&format!("a/f{i}"), i)).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        for t in threads {
            t.join().unwrap();
        }
        let (batches, writes) = (j.stats.batches.load(Relaxed), j.stats.writes.load(Relaxed));
        assert_eq!(writes, 16 * 50 + 200);
        assert!(
            batches < writes,
            "{batches} transactions for {writes} writes"
        );
        drop(j);
        let j = Journal::open(&p).unwrap();
        for t in 0..16 {
            for i in 0..50 {
                let r = j.get(&format!("t{t}/f{i}")).unwrap().unwrap();
                assert_eq!(r.entry.size, i);
            }
        }
        for i in 0..200u64 {
            let r = rt.block_on(j.get_async(&format!("a/f{i}"))).unwrap();
            assert_eq!(r.is_some(), i % 10 != 9, "a/f{i}");
            assert_eq!(j.get(&format!("bad/f{i}")).unwrap(), None);
        }
    }

    /// An intent written before a rename is completed at the next start
    /// when the file matches it, and dropped otherwise.
    #[test]
    fn intents_are_settled_after_a_crash() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("j.db");
        {
            let j = Journal::open(&p).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(j.put_intents_async(vec![rec("placed", 1), rec("not-placed", 2)]))
                .unwrap();
        }
        let j = Journal::open(&p).unwrap();
        assert_eq!(j.get("placed").unwrap(), None);
        let n = j
            .settle_intents(|r| r.entry.path.as_str() == "placed")
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(j.get("placed").unwrap(), Some(rec("placed", 1)));
        assert_eq!(j.get("not-placed").unwrap(), None);
        assert_eq!(j.settle_intents(|_| true).unwrap(), 0);
    }

    #[test]
    fn held_deletions_survive_a_reopen_until_released() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("j.db");
        {
            let j = Journal::open(&p).unwrap();
            j.enqueue(["a", "a/b", "c"]).unwrap();
            j.hold(["a/b", "a"], "300 of 301 files deleted").unwrap();
            assert_eq!(j.queued().unwrap(), vec!["c".to_string()]);
        }
        let j = Journal::open(&p).unwrap();
        assert_eq!(j.held().unwrap(), vec!["a".to_string(), "a/b".to_string()]);
        assert_eq!(
            j.held_why().unwrap().as_deref(),
            Some("300 of 301 files deleted")
        );
        j.release(["a"]).unwrap();
        assert_eq!(
            j.held_why().unwrap().as_deref(),
            Some("300 of 301 files deleted")
        );
        j.release(["a/b"]).unwrap();
        assert!(j.held().unwrap().is_empty());
        assert_eq!(j.held_why().unwrap(), None);
        j.hold(["x"], "again").unwrap();
        j.forget_all().unwrap();
        assert!(j.held().unwrap().is_empty());
    }
}

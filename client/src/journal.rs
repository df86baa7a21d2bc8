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

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    conn: std::sync::Mutex<Connection>,
}

impl Journal {
    /// Opens (creating) the journal at `path`.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let have: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(have) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: std::sync::Mutex::new(conn),
        })
    }

    fn c(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The record of `path`.
    pub fn get(&self, path: &str) -> Result<Option<Record>, JournalError> {
        let row: Option<RawRow> = self
            .c()
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

    fn decode(path: &str, (e, c, s, conflict): RawRow) -> Result<Option<Record>, JournalError> {
        let bad = || JournalError::Corrupt(path.to_string());
        Ok(Some(Record {
            entry: codec::decode(&e).map_err(|_| bad())?,
            chunks: chunking::decode_list(&c).ok_or_else(bad)?,
            stat: codec::decode(&s).map_err(|_| bad())?,
            conflict: conflict != 0,
        }))
    }

    /// Stores the record of a path (and clears any apply intent for it).
    pub fn put(&self, r: &Record) -> Result<(), JournalError> {
        self.put_in("files", r)?;
        self.c()
            .prepare_cached("DELETE FROM applying WHERE path = ?1")?
            .execute(params![r.entry.path.as_str()])?;
        Ok(())
    }

    /// [`Self::put`] of several records in one transaction.
    pub fn put_many(&self, rs: &[Record]) -> Result<(), JournalError> {
        let mut conn = self.c();
        let tx = conn.transaction()?;
        for r in rs {
            Self::insert(&tx, "files", r)?;
            tx.prepare_cached("DELETE FROM applying WHERE path = ?1")?
                .execute(params![r.entry.path.as_str()])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records, before a remote version is renamed into place, what the
    /// file will be: if the agent dies between the rename and [`Self::put`],
    /// the next start finds the file matching the intent and completes the
    /// record, instead of mistaking the file for a local creation.
    pub fn put_intent(&self, r: &Record) -> Result<(), JournalError> {
        self.put_in("applying", r)
    }

    /// Settles the intents left by a crash: a file that matches its intent
    /// was placed, so its record is completed; the others never were.
    pub fn settle_intents(&self, matches: impl Fn(&Record) -> bool) -> Result<u64, JournalError> {
        let rows: Vec<(String, RawRow)> = {
            let conn = self.c();
            let mut st =
                conn.prepare_cached("SELECT path, entry, chunks, stat, conflict FROM applying")?;
            let rows = st.query_map([], |r| {
                Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut done = 0;
        for (path, raw) in rows {
            if let Some(rec) = Self::decode(&path, raw)? {
                if matches(&rec) {
                    self.put(&rec)?;
                    done += 1;
                }
            }
            self.c()
                .prepare_cached("DELETE FROM applying WHERE path = ?1")?
                .execute(params![path])?;
        }
        Ok(done)
    }

    fn put_in(&self, table: &str, r: &Record) -> Result<(), JournalError> {
        Self::insert(&self.c(), table, r)
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
        self.c()
            .prepare_cached("DELETE FROM files WHERE path = ?1")?
            .execute(params![path])?;
        Ok(())
    }

    /// Paths recorded at or below `prefix` (all paths for "").
    pub fn paths_under(&self, prefix: &str) -> Result<Vec<String>, JournalError> {
        let conn = self.c();
        let mut st = conn.prepare_cached(
            "SELECT path FROM files WHERE path = ?1 OR (path > ?2 AND path < ?3) OR ?1 = ''",
        )?;
        let lo = format!("{prefix}/");
        let hi = format!("{prefix}0");
        let rows = st.query_map(params![prefix, lo, hi], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of paths in split-brain.
    pub fn conflicts(&self) -> Result<u64, JournalError> {
        Ok(self
            .c()
            .query_row("SELECT COUNT(*) FROM files WHERE conflict = 1", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// Adds paths to the push queue.
    pub fn enqueue<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), JournalError> {
        let mut conn = self.c();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached("INSERT OR IGNORE INTO queue (path) VALUES (?1)")?;
            for p in paths {
                st.execute(params![p])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes a path from the push queue.
    pub fn dequeue(&self, path: &str) -> Result<(), JournalError> {
        self.c()
            .prepare_cached("DELETE FROM queue WHERE path = ?1")?
            .execute(params![path])?;
        Ok(())
    }

    /// The queued paths.
    pub fn queued(&self) -> Result<Vec<String>, JournalError> {
        let conn = self.c();
        let mut st = conn.prepare_cached("SELECT path FROM queue ORDER BY path")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A counter value.
    pub fn kv(&self, key: &str) -> Result<Option<u64>, JournalError> {
        Ok(self
            .c()
            .query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map(|v| v as u64))
    }

    /// Sets a counter value.
    pub fn set_kv(&self, key: &str, v: u64) -> Result<(), JournalError> {
        self.c().execute(
            "INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)",
            params![key, v as i64],
        )?;
        Ok(())
    }

    /// Records the follow cursor: the brick, its incarnation and the
    /// sequence reached, together (a cursor is meaningless without the
    /// incarnation it belongs to).
    pub fn set_cursor(&self, brick: u64, incarnation: u64, seq: u64) -> Result<(), JournalError> {
        let mut conn = self.c();
        let tx = conn.transaction()?;
        for (k, v) in [("brick", brick), ("incarnation", incarnation), ("seq", seq)] {
            tx.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)",
                params![k, v as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets every record, the queue, the held deletions, the rejected
    /// changes and the cursor:
    /// the next sync is a first attach (used when the mount folder itself
    /// vanished and came back, so its contents are compared, never taken as
    /// deletions).
    pub fn forget_all(&self) -> Result<(), JournalError> {
        self.c().execute_batch(
            "DELETE FROM files; DELETE FROM queue; DELETE FROM applying; DELETE FROM kv; DELETE FROM held; DELETE FROM notes; DELETE FROM rejected;",
        )?;
        Ok(())
    }

    /// Number of files and links the mount holds as synced (every record
    /// but deletions and directories).
    pub fn live_count(&self) -> Result<u64, JournalError> {
        let conn = self.c();
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
    }

    /// Holds deletions (mass-delete guard) for `why`, taking them out of
    /// the push queue.
    pub fn hold<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
        why: &str,
    ) -> Result<(), JournalError> {
        let mut conn = self.c();
        let tx = conn.transaction()?;
        {
            let mut add = tx.prepare_cached("INSERT OR IGNORE INTO held (path) VALUES (?1)")?;
            let mut unqueue = tx.prepare_cached("DELETE FROM queue WHERE path = ?1")?;
            for p in paths {
                add.execute(params![p])?;
                unqueue.execute(params![p])?;
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO notes (key, value) VALUES ('held-why', ?1)",
            params![why],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The held deletions, shallowest first.
    pub fn held(&self) -> Result<Vec<String>, JournalError> {
        let conn = self.c();
        let mut st = conn.prepare_cached("SELECT path FROM held ORDER BY path")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut v: Vec<String> = rows.collect::<Result<_, _>>()?;
        v.sort_by_key(|p| p.matches('/').count());
        Ok(v)
    }

    /// Why deletions are held (the reason of the last hold).
    pub fn held_why(&self) -> Result<Option<String>, JournalError> {
        Ok(self
            .c()
            .query_row("SELECT value FROM notes WHERE key = 'held-why'", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Releases held deletions (pushed, reverted, or no longer deletions).
    pub fn release<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), JournalError> {
        let mut conn = self.c();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached("DELETE FROM held WHERE path = ?1")?;
            for p in paths {
                st.execute(params![p])?;
            }
        }
        tx.execute(
            "DELETE FROM notes WHERE key = 'held-why' AND NOT EXISTS (SELECT 1 FROM held)",
            [],
        )?;
        tx.commit()?;
        Ok(())
    }
}

impl Journal {
    /// Replaces the rejected changes with `r`.
    pub fn set_rejected(&self, r: &Rejection) -> Result<(), JournalError> {
        let mut conn = self.c();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM rejected", [])?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO rejected (path, seq, entry, listed) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (seq, e, listed) in &r.entries {
                let path = e.path.as_str();
                let blob = codec::encode(e).map_err(|_| JournalError::Corrupt(path.to_string()))?;
                st.execute(params![path, *seq as i64, blob, i64::from(*listed)])?;
            }
        }
        for (k, v) in [("rejected-name", &r.name), ("rejected-line", &r.line)] {
            tx.execute(
                "INSERT OR REPLACE INTO notes (key, value) VALUES (?1, ?2)",
                params![k, v],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The rejected changes not live, if any.
    pub fn rejected(&self) -> Result<Option<Rejection>, JournalError> {
        let conn = self.c();
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
    }

    /// Forgets the rejected changes (they went live, or were superseded).
    pub fn clear_rejected(&self) -> Result<(), JournalError> {
        self.c().execute_batch(
            "DELETE FROM rejected; DELETE FROM notes WHERE key IN ('rejected-name', 'rejected-line');",
        )?;
        Ok(())
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

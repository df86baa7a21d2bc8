//! The brick database schema (`<brick>/.gsync/meta.db`, SQLite in WAL
//! mode), applied by numbered migrations keyed on `PRAGMA user_version`.
//!
//! - `entries`: one row per path (tombstones included) with its metadata,
//!   version vectors, chunk list and the change sequence `seq` at which it
//!   last changed. `seq` is unique and increasing: followers ask for
//!   "everything after S".
//! - `chunks`: where each content chunk can be read locally (`file` is the
//!   brick-relative physical path: an entry's path or a sibling/retained
//!   file under `.gsync/`). Lets a receiver reuse chunks of any file.
//! - `pending`: the heal index. `(peer, path)` means brick `peer` has not
//!   confirmed the path's state as of `seq`; written in the same
//!   transaction as the change, deleted when the peer confirms that seq.
//!   `sender` is the peer brick this brick received that version from
//!   unchanged, which delivers it to `peer` itself: such a row only
//!   watches that it arrives (see `replicate`); 0 means this brick
//!   delivers it.
//! - `siblings`: concurrent versions of a path in split-brain, with their
//!   content stored content-addressed under `.gsync/siblings/`.
//! - `members`: the versions received that no other supersedes, when what
//!   the path shows (the entry and its siblings) merges several of them
//!   (see `store::reconcile`); no rows when the shown versions are the
//!   members themselves. Content is kept only for the shown versions.
//! - `retained`: losing versions of resolved split-brains, kept for
//!   `cluster.conflict-retention`.
//! - `kv`: the sequence counter and the brick's identity, including its
//!   incarnation: a random number created with the database. Sequence
//!   numbers only mean something within one incarnation, so a follower
//!   (a mount) whose cursor names another one (the brick was wiped and
//!   rebuilt) resynchronises by comparison instead of trusting it.
//! - `changesets`: the changeset tag of a path's current version, when it
//!   was written as part of one (see `store::changeset`).
//!
//! The `entry` and `chunks` blobs are encoded with the wire codec, but
//! their format is the database's, not the wire's: `kv.row_format` says
//! which one the rows are in ([`ROW_FORMAT`]). A protocol change that
//! changes `Entry` bumps it and converts the rows in a migration; a
//! database in a newer row format (or schema) is refused at open, never
//! read as if it were this one. A golden test pins the bytes of format 1.

use rusqlite::Connection;

/// The format of the `entry` and `chunks` blobs this build reads and
/// writes (see the module comment).
pub const ROW_FORMAT: i64 = 1;

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE kv (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE entries (
        path TEXT PRIMARY KEY,
        entry BLOB NOT NULL,
        chunks BLOB NOT NULL,
        seq INTEGER NOT NULL
    );
    CREATE INDEX entries_seq ON entries(seq);
    CREATE TABLE chunks (hash BLOB NOT NULL, file TEXT NOT NULL, offset INTEGER NOT NULL, len INTEGER NOT NULL);
    CREATE INDEX chunks_hash ON chunks(hash);
    CREATE INDEX chunks_file ON chunks(file);
    CREATE TABLE pending (peer INTEGER NOT NULL, path TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (peer, path));
    CREATE INDEX pending_seq ON pending(peer, seq);
    CREATE TABLE siblings (path TEXT NOT NULL, vv BLOB NOT NULL, entry BLOB NOT NULL, chunks BLOB NOT NULL, PRIMARY KEY (path, vv));
    CREATE TABLE retained (id INTEGER PRIMARY KEY, path TEXT NOT NULL, entry BLOB NOT NULL, file TEXT NOT NULL, at INTEGER NOT NULL);
    CREATE INDEX retained_path ON retained(path);
",
    super::changeset::MIGRATION,
    "ALTER TABLE pending ADD COLUMN sender INTEGER NOT NULL DEFAULT 0;",
    "CREATE TABLE members (path TEXT NOT NULL, vv BLOB NOT NULL, entry BLOB NOT NULL, chunks BLOB NOT NULL, PRIMARY KEY (path, vv));",
];

/// Opens and migrates a brick database.
///
/// The connection is the only one (its owner thread holds it, see
/// `store::db`), so it takes the database in exclusive locking mode: the
/// file lock is taken once and kept, the WAL index lives in the process's
/// memory instead of a shared `-shm` file, and no transaction takes file
/// locks. A second connection to the same file, from this process or
/// another, waits (busy timeout) and fails while this one is open.
pub fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    // A brick closed a moment ago (its last handle still being dropped)
    // releases the file soon: wait for it rather than fail.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Before the first access in WAL mode, so no shared memory is used.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Every statement of the hot paths (offers, commits, the replicators)
    // stays prepared.
    conn.set_prepared_statement_cache_capacity(64);
    crate::sqlite::migrate(&mut conn, MIGRATIONS)?;
    // A database without an incarnation (new, or from before they
    // existed) gets one now; it never changes afterwards.
    conn.execute(
        "INSERT OR IGNORE INTO kv (key, value) VALUES ('incarnation', ?1)",
        [(rand::random::<u64>() >> 1 | 1) as i64],
    )?;
    // Every database so far holds format 1 (the marker came later).
    conn.execute(
        "INSERT OR IGNORE INTO kv (key, value) VALUES ('row_format', ?1)",
        [ROW_FORMAT],
    )?;
    let rows: i64 = conn.query_row("SELECT value FROM kv WHERE key = 'row_format'", [], |r| {
        r.get(0)
    })?;
    if rows != ROW_FORMAT {
        return Err(crate::sqlite::refused(format!(
            "the brick database holds rows in format {rows}; this gsync reads format {ROW_FORMAT} (written by a newer version?)"
        )));
    }
    Ok(conn)
}

/// The incarnation of the brick whose database is `conn` (see the module
/// comment).
pub fn incarnation(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT COALESCE((SELECT value FROM kv WHERE key = 'incarnation'), 0)",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::types::{ChunkRef, Entry, Kind};
    use crate::wire::vv::VersionVector;

    /// The bytes of a row in format 1. If this fails, `Entry` or
    /// `ChunkRef` changed how they encode: every stored row would be read
    /// wrongly. Bump `ROW_FORMAT` and convert the rows in a migration
    /// (then pin the new bytes here), never just re-bless.
    #[test]
    fn row_format_1_is_pinned() {
        let vv = VersionVector::from_entries([(3, 2), (9, 1)]);
        let e = Entry {
            path: crate::RelPath::new("d/f.conf").unwrap(),
            kind: Kind::File,
            size: 5,
            mode: 0o644,
            mtime_ns: 1_700_000_000_000_000_000,
            owner: Some((1000, 100)),
            hash: [7; 32],
            target: None,
            vv: vv.clone(),
            data_vv: vv,
            meta_vv: VersionVector::from_entries([(3, 1)]),
            origin: uuid::Uuid::from_u128(0x1234),
        };
        let chunks = vec![ChunkRef {
            hash: [8; 32],
            len: 5,
        }];
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let entry = hex(crate::wire::codec::encode(&e).unwrap());
        let chunks = hex(crate::wire::codec::encode(&chunks).unwrap());
        assert_eq!(entry, ENTRY_V1, "entry row bytes changed");
        assert_eq!(chunks, CHUNKS_V1, "chunks row bytes changed");
        assert_eq!(ROW_FORMAT, 1);
    }

    const ENTRY_V1: &str = "08642f662e636f6e660005fba401fd0000546cfc392f2f01fbe80364070707070707070707070707070707070707070707070707070707070707070700020302090102030209010103011000000000000000000000000000001234";
    const CHUNKS_V1: &str = "01080808080808080808080808080808080808080808080808080808080808080805";

    #[test]
    fn a_newer_row_format_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("meta.db");
        drop(open(&p).unwrap());
        {
            let c = Connection::open(&p).unwrap();
            c.execute("UPDATE kv SET value = 2 WHERE key = 'row_format'", [])
                .unwrap();
        }
        let err = open(&p).unwrap_err().to_string();
        assert!(err.contains("rows in format 2"), "{err}");
    }
}

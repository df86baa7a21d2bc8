//! Node state in SQLite (`<state-dir>/node.db`): the identity, created once,
//! the current pool document, and the pool's consensus log, vote and
//! state-machine state (`raft_log`, `raft_meta`; used by `node::raft`).
//!
//! Schema migrations are numbered and applied by `PRAGMA user_version`.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::net::Identity;
use crate::pool::PoolConfig;

/// Errors of the node database.
#[derive(Debug, thiserror::Error)]
pub enum NodeDbError {
    /// SQLite failed.
    #[error("node database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value is unreadable.
    #[error("node database: corrupt {what}: {why}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// Creating the identity failed.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
}

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE identity (uuid TEXT NOT NULL, cert BLOB NOT NULL, key BLOB NOT NULL);
    CREATE TABLE pool (id INTEGER PRIMARY KEY CHECK (id = 1), doc TEXT NOT NULL);
    CREATE TABLE mounts (dir TEXT PRIMARY KEY, spec TEXT NOT NULL);
",
    "
    CREATE TABLE raft_log (idx INTEGER PRIMARY KEY, entry TEXT NOT NULL);
    CREATE TABLE raft_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
",
];

/// The node database.
#[derive(Debug)]
pub struct NodeDb {
    conn: Connection,
}

impl NodeDb {
    /// Opens (creating and migrating) the database in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, NodeDbError> {
        let conn = Connection::open(state_dir.join("node.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut db = Self { conn };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<(), NodeDbError> {
        crate::sqlite::migrate(&mut self.conn, MIGRATIONS)?;
        Ok(())
    }

    /// The node's identity, created on first call.
    pub fn identity(&self) -> Result<(Uuid, Identity), NodeDbError> {
        let row: Option<(String, Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row("SELECT uuid, cert, key FROM identity", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        if let Some((u, cert, key)) = row {
            let uuid = Uuid::parse_str(&u).map_err(|e| NodeDbError::Corrupt {
                what: "identity",
                why: e.to_string(),
            })?;
            return Ok((uuid, Identity { cert, key }));
        }
        let uuid = Uuid::new_v4();
        let id = Identity::generate(&uuid.to_string())?;
        self.conn.execute(
            "INSERT INTO identity (uuid, cert, key) VALUES (?1, ?2, ?3)",
            params![uuid.to_string(), id.cert, id.key],
        )?;
        Ok((uuid, id))
    }

    /// The stored pool document, if any, with a line for each volume that
    /// could not be read and was left out.
    pub fn pool(&self) -> Result<Option<(PoolConfig, Vec<String>)>, NodeDbError> {
        let doc: Option<String> = self
            .conn
            .query_row("SELECT doc FROM pool WHERE id = 1", [], |r| r.get(0))
            .optional()?;
        doc.map(|d| {
            PoolConfig::from_stored(&d).map_err(|e| NodeDbError::Corrupt {
                what: "pool document",
                why: e.to_string(),
            })
        })
        .transpose()
    }

    /// Stores the pool document.
    pub fn save_pool(&self, cfg: &PoolConfig) -> Result<(), NodeDbError> {
        let doc = serde_json::to_string(cfg).map_err(|e| NodeDbError::Corrupt {
            what: "pool document",
            why: e.to_string(),
        })?;
        self.conn.execute(
            "INSERT INTO pool (id, doc) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET doc = ?1",
            params![doc],
        )?;
        Ok(())
    }

    /// Mount definitions hosted by this daemon: `(dir, spec json)`.
    pub fn mounts(&self) -> Result<Vec<(String, String)>, NodeDbError> {
        let mut st = self
            .conn
            .prepare("SELECT dir, spec FROM mounts ORDER BY dir")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds or replaces a mount definition.
    pub fn save_mount(&self, dir: &str, spec: &str) -> Result<(), NodeDbError> {
        self.conn.execute(
            "INSERT INTO mounts (dir, spec) VALUES (?1, ?2) ON CONFLICT(dir) DO UPDATE SET spec = ?2",
            params![dir, spec],
        )?;
        Ok(())
    }

    /// Removes a mount definition.
    pub fn remove_mount(&self, dir: &str) -> Result<bool, NodeDbError> {
        Ok(self
            .conn
            .execute("DELETE FROM mounts WHERE dir = ?1", params![dir])?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let (u1, i1) = NodeDb::open(dir.path()).unwrap().identity().unwrap();
        let (u2, i2) = NodeDb::open(dir.path()).unwrap().identity().unwrap();
        assert_eq!(u1, u2);
        assert_eq!(i1.cert, i2.cert);
    }
}

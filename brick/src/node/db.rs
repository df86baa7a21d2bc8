//! Node state in SQLite (`<state-dir>/node.db`): the identity, created once,
//! the current pool document, the mounts this daemon hosts, and the pool's
//! consensus log, vote and state-machine state (`raft_log`, `raft_meta`;
//! used by `node::raft` through the same handle).
//!
//! Like every gsync database, it is owned by one thread
//! ([`crate::sqlite::Owner`]): the async methods await it, the `*_sync`
//! ones block a thread that is not the executor's (start-up, the blocking
//! pool). Schema migrations are numbered and applied by `PRAGMA
//! user_version`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::net::Identity;
use crate::pool::PoolConfig;
use crate::sqlite::{Owner, OwnerError};
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
    /// The database's owner thread could not start.
    #[error("node database: cannot start its thread: {0}")]
    Start(std::io::Error),
    /// The database's owner thread did not answer.
    #[error("node database: {0}")]
    Owner(#[from] OwnerError),
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

/// The handle to the node database's owner thread. Clones share the
/// thread; the last one dropped stops it, which closes the connection.
#[derive(Debug, Clone)]
pub struct NodeDb {
    owner: Arc<Owner>,
}

impl NodeDb {
    /// Opens (creating and migrating) the database in `state_dir` and
    /// starts its owner thread. Blocks: call it at start-up or from the
    /// blocking pool.
    pub fn open(state_dir: &Path) -> Result<Self, NodeDbError> {
        let mut conn = Connection::open(state_dir.join("node.db"))?;
        // Tools may read it a moment (tests, an operator's `sqlite3`).
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        crate::sqlite::migrate(&mut conn, MIGRATIONS)?;
        let owner = Owner::start(conn, "gsync-node-db").map_err(NodeDbError::Start)?;
        Ok(Self {
            owner: Arc::new(owner),
        })
    }

    /// The owner thread, for the consensus tables (`node::raft`).
    pub(crate) fn owner(&self) -> &Arc<Owner> {
        &self.owner
    }

    /// Runs `f` with the connection on the owner thread and awaits it.
    pub async fn call<T, F>(&self, f: F) -> Result<T, NodeDbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, NodeDbError> + Send + 'static,
    {
        self.owner.call(f).await?
    }

    /// Runs `f` with the connection on the owner thread and blocks until
    /// it answers (not from the async executor).
    pub fn call_sync<T, F>(&self, f: F) -> Result<T, NodeDbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, NodeDbError> + Send + 'static,
    {
        self.owner.call_sync(f)?
    }

    /// The node's identity, created on first call.
    pub async fn identity(&self) -> Result<(Uuid, Identity), NodeDbError> {
        self.call(|c| identity(c)).await
    }

    /// The stored pool document, if any, with a line for each volume that
    /// could not be read and was left out.
    pub async fn pool(&self) -> Result<Option<(PoolConfig, Vec<String>)>, NodeDbError> {
        self.call(|c| pool(c)).await
    }

    /// Stores the pool document.
    pub async fn save_pool(&self, cfg: &PoolConfig) -> Result<(), NodeDbError> {
        let doc = serde_json::to_string(cfg).map_err(|e| NodeDbError::Corrupt {
            what: "pool document",
            why: e.to_string(),
        })?;
        self.call(move |c| {
            c.execute(
                "INSERT INTO pool (id, doc) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET doc = ?1",
                params![doc],
            )?;
            Ok(())
        })
        .await
    }

    /// Mount definitions hosted by this daemon: `(dir, spec json)`.
    pub async fn mounts(&self) -> Result<Vec<(String, String)>, NodeDbError> {
        self.call(|c| mounts(c)).await
    }

    /// [`Self::mounts`], blocking (not from the async executor).
    pub fn mounts_sync(&self) -> Result<Vec<(String, String)>, NodeDbError> {
        self.call_sync(|c| mounts(c))
    }

    /// Adds or replaces a mount definition.
    pub async fn save_mount(&self, dir: &str, spec: &str) -> Result<(), NodeDbError> {
        let (dir, spec) = (dir.to_string(), spec.to_string());
        self.call(move |c| {
            c.execute(
                "INSERT INTO mounts (dir, spec) VALUES (?1, ?2) ON CONFLICT(dir) DO UPDATE SET spec = ?2",
                params![dir, spec],
            )?;
            Ok(())
        })
        .await
    }

    /// Removes a mount definition.
    pub async fn remove_mount(&self, dir: &str) -> Result<bool, NodeDbError> {
        let dir = dir.to_string();
        self.call(move |c| Ok(c.execute("DELETE FROM mounts WHERE dir = ?1", params![dir])? > 0))
            .await
    }
}

fn identity(c: &Connection) -> Result<(Uuid, Identity), NodeDbError> {
    let row: Option<(String, Vec<u8>, Vec<u8>)> = c
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
    c.execute(
        "INSERT INTO identity (uuid, cert, key) VALUES (?1, ?2, ?3)",
        params![uuid.to_string(), id.cert, id.key],
    )?;
    Ok((uuid, id))
}

fn pool(c: &Connection) -> Result<Option<(PoolConfig, Vec<String>)>, NodeDbError> {
    let doc: Option<String> = c
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

fn mounts(c: &Connection) -> Result<Vec<(String, String)>, NodeDbError> {
    let mut st = c.prepare("SELECT dir, spec FROM mounts ORDER BY dir")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn identity_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let (u1, i1) = NodeDb::open(dir.path()).unwrap().identity().await.unwrap();
        let (u2, i2) = NodeDb::open(dir.path()).unwrap().identity().await.unwrap();
        assert_eq!(u1, u2);
        assert_eq!(i1.cert, i2.cert);
    }
}

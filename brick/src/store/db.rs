//! The owner of a brick's metadata database: one thread holds the SQLite
//! connection and runs, in order, what callers send it through a queue;
//! each caller waits for its answer on a reply channel (gsync's one kind of
//! database handle, [`crate::sqlite::Owner`], with the group commit below
//! plugged in). No SQLite call runs on the async executor and none waits
//! on a lock.
//!
//! Commits are grouped: every commit queued while the previous one was
//! being written goes into one transaction, with one WAL fsync
//! (`synchronous = FULL`), preceded by one fsync of each directory where
//! content was renamed into place for them. Each commit runs inside its own
//! savepoint, so one that fails is rolled back alone; each caller gets its
//! answer only once the whole transaction is durable (or has failed), and
//! the brick's change sequence is published only then.

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::Connection;

use super::StoreError;
use crate::sqlite::owner::{self, Batcher, CommitError, Owner, OwnerError, Staged};

/// Most commits written in one transaction.
const MAX_BATCH: usize = 1024;

impl CommitError for StoreError {
    fn commit_failed(why: String) -> Self {
        StoreError::Commit(why)
    }
}

/// Group-commit statistics of one brick database.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Transactions written by the group commit.
    pub batches: std::sync::atomic::AtomicU64,
    /// Commits written in them.
    pub commits: std::sync::atomic::AtomicU64,
}

/// The brick database's group commit, run on its owner thread.
struct Group {
    seq: Arc<tokio::sync::watch::Sender<u64>>,
    stats: Arc<CommitStats>,
}

impl Batcher for Group {
    type Item = Box<dyn Staged>;
    const MAX_BATCH: usize = MAX_BATCH;

    fn write(&mut self, conn: &mut Connection, mut batch: Vec<Box<dyn Staged>>) {
        // Content renamed into place must be durable before the commit
        // that records it: one fsync per directory, for the whole batch.
        owner::sync_dirs(&mut batch);
        let res = owner::write_group(conn, &mut batch, |tx| {
            tx.prepare_cached("SELECT value FROM kv WHERE key = 'seq'")
                .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
                .ok()
                .map(|s| s as u64)
        });
        let failed = match res {
            Ok(s) => {
                crate::failpoint::hit("store-after-commit");
                if let Some(s) = s {
                    self.seq.send_if_modified(|v| {
                        let newer = s > *v;
                        if newer {
                            *v = s;
                        }
                        newer
                    });
                }
                None
            }
            Err(e) => Some(e),
        };
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.batches.fetch_add(1, Relaxed);
        self.stats.commits.fetch_add(batch.len() as u64, Relaxed);
        owner::finish_group(batch, failed.as_deref());
    }
}

/// The handle to a brick database's owner thread. Dropping the last handle
/// stops the thread, which closes the connection; the drop waits for that
/// (unless it happens on the owner thread itself).
#[derive(Debug)]
pub struct Db {
    owner: Owner<Group>,
    /// Group-commit statistics.
    pub stats: Arc<CommitStats>,
}

impl Db {
    /// Starts the owner thread of `conn`. After each committed transaction
    /// it publishes the `seq` value of the `kv` table through `seq`.
    pub fn start(
        conn: Connection,
        name: &str,
        seq: Arc<tokio::sync::watch::Sender<u64>>,
    ) -> std::io::Result<Self> {
        let stats = Arc::new(CommitStats::default());
        let group = Group {
            seq,
            stats: stats.clone(),
        };
        Ok(Self {
            owner: Owner::with_batcher(conn, name, group)?,
            stats,
        })
    }

    /// Runs `f` with the connection on the owner thread and waits (async).
    pub async fn call<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        match self.owner.call(f).await {
            Ok(t) => t,
            // The job panicked (the owner thread carries on): so does the
            // caller, as it would have running `f` itself.
            Err(_) => panic!("brick database job failed"),
        }
    }

    /// Runs `f` with the connection on the owner thread and blocks until
    /// it is done. Must not be called from the owner thread (a job).
    pub fn call_sync<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        match self.owner.call_sync(f) {
            Ok(t) => t,
            Err(OwnerError::Reentrant) => panic!("a brick database job waits for another"),
            Err(OwnerError::Failed) => panic!("brick database job failed"),
        }
    }

    /// Queues a commit: after every directory of `dirs` is fsynced, `f`
    /// writes its rows into the next group transaction. Answers once that
    /// transaction is durable, with `f`'s result (or why it failed).
    pub async fn commit<T, F>(&self, dirs: Vec<PathBuf>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.owner.commit(dirs, f).await
    }

    /// [`Db::commit`], blocking (not from the owner thread).
    pub fn commit_sync<T, F>(&self, dirs: Vec<PathBuf>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        assert!(
            !self.owner.on_owner_thread(),
            "a brick database job waits for a commit"
        );
        self.owner.commit_sync(dirs, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits sent together from many threads: a failing one is rolled
    /// back alone, the others are all durable, and each caller gets its
    /// own answer.
    #[test]
    fn a_failing_commit_is_rolled_back_alone() {
        let d = tempfile::tempdir().unwrap();
        let conn = super::super::schema::open(&d.path().join("meta.db")).unwrap();
        let seq = Arc::new(tokio::sync::watch::channel(0).0);
        let db = Arc::new(Db::start(conn, "test-db", seq.clone()).unwrap());
        let threads: Vec<_> = (0..64i64)
            .map(|i| {
                let db = db.clone();
                std::thread::spawn(move || {
                    db.commit_sync(Vec::new(), move |c| {
                        c.execute(
                            "INSERT INTO kv (key, value) VALUES (?1, ?2)",
                            rusqlite::params![format!("k{i}"), i],
                        )?;
                        if i % 4 == 3 {
                            return Err(StoreError::Corrupt(format!("k{i}")));
                        }
                        c.execute(
                            "INSERT OR REPLACE INTO kv (key, value) VALUES ('seq', MAX(?1, COALESCE((SELECT value FROM kv WHERE key = 'seq'), 0)))",
                            [i],
                        )?;
                        Ok(i)
                    })
                })
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            let r = t.join().unwrap();
            if i % 4 == 3 {
                assert!(matches!(r, Err(StoreError::Corrupt(_))), "{i}: {r:?}");
            } else {
                assert_eq!(r.unwrap(), i as i64);
            }
        }
        let keys: Vec<String> = db.call_sync(|c| {
            c.prepare("SELECT key FROM kv WHERE key LIKE 'k%' ORDER BY value")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        });
        let want: Vec<String> = (0..64)
            .filter(|i| i % 4 != 3)
            .map(|i| format!("k{i}"))
            .collect();
        assert_eq!(keys, want);
        // The sequence is published once committed.
        assert_eq!(*seq.borrow(), 62);
        drop(db);
        // The owner closed the connection: the database opens again.
        super::super::schema::open(&d.path().join("meta.db")).unwrap();
    }
}

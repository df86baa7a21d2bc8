//! The owner of a brick's metadata database: one thread holds the SQLite
//! connection and runs, in order, what callers send it through a queue;
//! each caller waits for its answer on a reply channel. No SQLite call runs
//! on the async executor and none waits on a lock.
//!
//! Commits are grouped: every commit queued while the previous one was
//! being written goes into one transaction, with one WAL fsync
//! (`synchronous = FULL`), preceded by one fsync of each directory where
//! content was renamed into place for them. Each commit runs inside its own
//! savepoint, so one that fails is rolled back alone; each caller gets its
//! answer only once the whole transaction is durable (or has failed), and
//! the brick's change sequence is published only then.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

use rusqlite::Connection;

use super::StoreError;

/// Most commits written in one transaction.
const MAX_BATCH: usize = 1024;

/// A closure run on the owner thread with the connection.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// One queued commit, type-erased.
trait Staged: Send {
    /// Directories to fsync before the transaction commits.
    fn dirs(&mut self) -> Vec<PathBuf>;
    /// Writes into the open transaction, inside a savepoint of its own.
    fn write(&mut self, tx: &mut rusqlite::Transaction<'_>);
    /// Answers the caller: the transaction committed (`None`) or failed.
    fn finish(self: Box<Self>, failed: Option<&str>);
}

enum Cmd {
    Run(Job),
    Commit(Box<dyn Staged>),
}

/// How a caller is answered.
enum Reply<T> {
    Async(tokio::sync::oneshot::Sender<T>),
    Sync(mpsc::SyncSender<T>),
}

impl<T> Reply<T> {
    fn send(self, t: T) {
        match self {
            Reply::Async(s) => {
                let _ = s.send(t);
            }
            Reply::Sync(s) => {
                let _ = s.send(t);
            }
        }
    }
}

struct Item<T, F> {
    f: Option<F>,
    dirs: Vec<PathBuf>,
    out: Option<Result<T, StoreError>>,
    reply: Option<Reply<Result<T, StoreError>>>,
}

impl<T, F> Staged for Item<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn dirs(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.dirs)
    }

    fn write(&mut self, tx: &mut rusqlite::Transaction<'_>) {
        let Some(f) = self.f.take() else { return };
        let out = match tx.savepoint() {
            Err(e) => Err(e.into()),
            Ok(mut sp) => {
                sp.set_drop_behavior(rusqlite::DropBehavior::Rollback);
                match catch_unwind(AssertUnwindSafe(|| f(&sp))) {
                    Ok(Ok(t)) => sp.commit().map(|()| t).map_err(StoreError::from),
                    // Dropping the savepoint rolls this commit back alone.
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(StoreError::Commit("a commit panicked".into())),
                }
            }
        };
        self.out = Some(out);
    }

    fn finish(mut self: Box<Self>, failed: Option<&str>) {
        let out = match (self.out.take(), failed) {
            (Some(Err(e)), _) => Err(e),
            (_, Some(why)) => Err(StoreError::Commit(why.to_string())),
            (Some(Ok(t)), None) => Ok(t),
            (None, None) => Err(StoreError::Commit("not written".into())),
        };
        if let Some(r) = self.reply.take() {
            r.send(out);
        }
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

/// The handle to a brick database's owner thread. Dropping the last handle
/// stops the thread, which closes the connection; the drop waits for that
/// (unless it happens on the owner thread itself).
#[derive(Debug)]
pub struct Db {
    queue: Option<mpsc::Sender<Cmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
    owner: std::thread::ThreadId,
    /// Group-commit statistics.
    pub stats: Arc<CommitStats>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Run(_) => "Run",
            Cmd::Commit(_) => "Commit",
        })
    }
}

impl Db {
    /// Starts the owner thread of `conn`. After each committed transaction
    /// it publishes the `seq` value of the `kv` table through `seq`.
    pub fn start(
        conn: Connection,
        name: &str,
        seq: Arc<tokio::sync::watch::Sender<u64>>,
    ) -> std::io::Result<Self> {
        let (queue, rx) = mpsc::channel();
        let stats = Arc::new(CommitStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || run(conn, &rx, &seq, &st))?;
        Ok(Self {
            queue: Some(queue),
            owner: thread.thread().id(),
            thread: Some(thread),
            stats,
        })
    }

    fn send(&self, cmd: Cmd) {
        // The thread lives as long as this handle: sending cannot fail
        // unless it died, which `catch_unwind` below prevents.
        if let Some(q) = &self.queue {
            let _ = q.send(cmd);
        }
    }

    /// Runs `f` on the owner thread; the answer comes back through `reply`.
    fn run_job<T, F>(&self, f: F, reply: Reply<T>)
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        self.send(Cmd::Run(Box::new(move |c: &mut Connection| {
            reply.send(f(c));
        })));
    }

    /// Runs `f` with the connection on the owner thread and waits (async).
    pub async fn call<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.run_job(f, Reply::Async(tx));
        match rx.await {
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
        assert!(
            std::thread::current().id() != self.owner,
            "a brick database job waits for another"
        );
        let (tx, rx) = mpsc::sync_channel(1);
        self.run_job(f, Reply::Sync(tx));
        match rx.recv() {
            Ok(t) => t,
            Err(_) => panic!("brick database job failed"),
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
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Cmd::Commit(Box::new(Item {
            f: Some(f),
            dirs,
            out: None,
            reply: Some(Reply::Async(tx)),
        })));
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Commit("the database thread stopped".into())))
    }

    /// [`Db::commit`], blocking (not from the owner thread).
    pub fn commit_sync<T, F>(&self, dirs: Vec<PathBuf>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        assert!(
            std::thread::current().id() != self.owner,
            "a brick database job waits for a commit"
        );
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Cmd::Commit(Box::new(Item {
            f: Some(f),
            dirs,
            out: None,
            reply: Some(Reply::Sync(tx)),
        })));
        rx.recv()
            .unwrap_or_else(|_| Err(StoreError::Commit("the database thread stopped".into())))
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(t) = self.thread.take() {
            if std::thread::current().id() != self.owner {
                let _ = t.join();
            }
        }
    }
}

fn run(
    mut conn: Connection,
    rx: &mpsc::Receiver<Cmd>,
    seq: &tokio::sync::watch::Sender<u64>,
    stats: &CommitStats,
) {
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Run(job) => run_one(&mut conn, job),
            Cmd::Commit(first) => {
                // Everything queued meanwhile: commits join this
                // transaction, other jobs run right after it.
                let mut batch = vec![first];
                let mut after = Vec::new();
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Cmd::Commit(c)) => batch.push(c),
                        Ok(Cmd::Run(j)) => after.push(j),
                        Err(_) => break,
                    }
                }
                commit_batch(&mut conn, batch, seq, stats);
                for j in after {
                    run_one(&mut conn, j);
                }
            }
        }
    }
}

fn run_one(conn: &mut Connection, job: Job) {
    // A panicking job drops its reply channel: its caller panics, the
    // owner thread carries on (an open transaction rolls back on drop).
    let _ = catch_unwind(AssertUnwindSafe(|| job(conn)));
}

fn commit_batch(
    conn: &mut Connection,
    mut batch: Vec<Box<dyn Staged>>,
    seq: &tokio::sync::watch::Sender<u64>,
    stats: &CommitStats,
) {
    // Content renamed into place must be durable before the commit that
    // records it: one fsync per directory, for the whole batch.
    let dirs: BTreeSet<PathBuf> = batch.iter_mut().flat_map(|b| b.dirs()).collect();
    for d in &dirs {
        if let Err(e) = std::fs::File::open(d).and_then(|f| f.sync_all()) {
            tracing::debug!(dir = %d.display(), "fsync: {e}");
        }
    }
    let res = (|| -> rusqlite::Result<Option<u64>> {
        let mut tx = conn.transaction()?;
        for b in batch.iter_mut() {
            b.write(&mut tx);
        }
        let s: Option<i64> = tx
            .prepare_cached("SELECT value FROM kv WHERE key = 'seq'")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .ok();
        tx.commit()?;
        Ok(s.map(|s| s as u64))
    })();
    let failed = match res {
        Ok(s) => {
            crate::failpoint::hit("store-after-commit");
            if let Some(s) = s {
                seq.send_if_modified(|v| {
                    let newer = s > *v;
                    if newer {
                        *v = s;
                    }
                    newer
                });
            }
            None
        }
        Err(e) => Some(e.to_string()),
    };
    use std::sync::atomic::Ordering::Relaxed;
    stats.batches.fetch_add(1, Relaxed);
    stats.commits.fetch_add(batch.len() as u64, Relaxed);
    for b in batch {
        b.finish(failed.as_deref());
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

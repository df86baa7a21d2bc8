//! The one kind of handle gsync has on an SQLite database: a thread owns
//! the connection and runs, in order, what callers send it through a
//! queue; each caller waits for its answer on a reply channel (awaiting it,
//! or blocking a thread that is not the owner). So no SQLite call runs on
//! the async executor, and none waits on a lock.
//!
//! A database that commits in groups (a brick's `meta.db`, a mount's
//! journal) plugs a [`Batcher`] into its owner: the commits queued while
//! the previous group was being written are handed to it together, to
//! write in one transaction. [`write_group`] and [`Commit`] are the shared
//! pieces of such a group commit: one savepoint per commit, so a commit
//! that fails is rolled back alone, and each caller answered only once the
//! whole transaction is durable (or has failed).

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc;

use rusqlite::{Connection, Transaction};

/// A closure run on the owner thread with the connection.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Why a job got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// The job panicked (the owner thread carries on), or the thread is
    /// gone.
    #[error("the database job failed or its thread stopped")]
    Failed,
    /// A job of the owner thread waited for another job of the same
    /// database, which would never run.
    #[error("a database job waits for another job of its database")]
    Reentrant,
}

/// Writes the staged commits of one group. Runs on the owner thread.
pub trait Batcher: Send + 'static {
    /// One staged commit.
    type Item: Send + 'static;
    /// Most commits handed over in one group.
    const MAX_BATCH: usize;
    /// Writes `batch` (in one transaction, typically) and answers each
    /// of its callers.
    fn write(&mut self, conn: &mut Connection, batch: Vec<Self::Item>);
}

/// The batcher of a database that does not commit in groups: nothing is
/// ever staged.
#[derive(Debug, Default)]
pub struct NoBatch;

impl Batcher for NoBatch {
    type Item = std::convert::Infallible;
    const MAX_BATCH: usize = 1;
    fn write(&mut self, _: &mut Connection, _: Vec<Self::Item>) {}
}

enum Cmd<I> {
    Run(Job),
    Stage(I),
}

/// How a caller is answered.
pub enum Reply<T> {
    /// A task awaiting.
    Async(tokio::sync::oneshot::Sender<T>),
    /// A thread blocked.
    Sync(mpsc::SyncSender<T>),
}

impl<T> Reply<T> {
    /// Sends the answer (to nobody if the caller gave up).
    pub fn send(self, t: T) {
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

/// The handle to a database's owner thread. Dropping it stops the thread,
/// which closes the connection; the drop waits for that (unless it happens
/// on the owner thread itself).
pub struct Owner<B: Batcher = NoBatch> {
    queue: Option<mpsc::Sender<Cmd<B::Item>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    owner: std::thread::ThreadId,
}

impl<B: Batcher> std::fmt::Debug for Owner<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("thread", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Owner<NoBatch> {
    /// Starts the owner thread `name` of `conn`, for a database that does
    /// not commit in groups.
    pub fn start(conn: Connection, name: &str) -> std::io::Result<Self> {
        Self::with_batcher(conn, name, NoBatch)
    }
}

impl<B: Batcher> Owner<B> {
    /// Starts the owner thread `name` of `conn`; staged commits go to
    /// `batcher`.
    pub fn with_batcher(conn: Connection, name: &str, batcher: B) -> std::io::Result<Self> {
        let (queue, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || run(conn, &rx, batcher))?;
        Ok(Self {
            queue: Some(queue),
            owner: thread.thread().id(),
            thread: Some(thread),
        })
    }

    /// Whether the calling thread is the owner thread (a job running).
    pub fn on_owner_thread(&self) -> bool {
        std::thread::current().id() == self.owner
    }

    fn send(&self, cmd: Cmd<B::Item>) {
        // The thread lives as long as this handle (`catch_unwind` keeps it
        // alive); a failed send drops the reply, which the caller reports.
        if let Some(q) = &self.queue {
            let _ = q.send(cmd);
        }
    }

    /// Queues `item` for the next group the batcher writes. The item
    /// carries its own way of answering its caller.
    pub fn stage(&self, item: B::Item) {
        self.send(Cmd::Stage(item));
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

    /// Runs `f` with the connection on the owner thread and awaits its
    /// answer.
    pub async fn call<T, F>(&self, f: F) -> Result<T, OwnerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.run_job(f, Reply::Async(tx));
        rx.await.map_err(|_| OwnerError::Failed)
    }

    /// Runs `f` with the connection on the owner thread and blocks until
    /// it answers. Refused on the owner thread itself (from a job), where
    /// it would wait forever.
    pub fn call_sync<T, F>(&self, f: F) -> Result<T, OwnerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        if self.on_owner_thread() {
            return Err(OwnerError::Reentrant);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.run_job(f, Reply::Sync(tx));
        rx.recv().map_err(|_| OwnerError::Failed)
    }
}

impl<B: Batcher<Item = Box<dyn Staged>>> Owner<B> {
    /// Queues a group commit: after every directory of `dirs` is fsynced,
    /// `f` writes its rows into the next group transaction, in a savepoint
    /// of its own. Answers once that transaction is durable, with `f`'s
    /// result (or why it failed).
    pub async fn commit<T, E, F>(&self, dirs: Vec<PathBuf>, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: CommitError,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.stage(Box::new(Commit::new(dirs, f, Reply::Async(tx))));
        rx.await.unwrap_or_else(|_| Err(E::stopped()))
    }

    /// [`Owner::commit`], blocking. Refused on the owner thread.
    pub fn commit_sync<T, E, F>(&self, dirs: Vec<PathBuf>, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: CommitError,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        if self.on_owner_thread() {
            return Err(E::commit_failed("a database job waits for a commit".into()));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.stage(Box::new(Commit::new(dirs, f, Reply::Sync(tx))));
        rx.recv().unwrap_or_else(|_| Err(E::stopped()))
    }
}

impl<B: Batcher> Drop for Owner<B> {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(t) = self.thread.take() {
            if !self.on_owner_thread() {
                let _ = t.join();
            }
        }
    }
}

fn run<B: Batcher>(mut conn: Connection, rx: &mpsc::Receiver<Cmd<B::Item>>, mut batcher: B) {
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Run(job) => run_one(&mut conn, job),
            Cmd::Stage(first) => {
                // Everything queued meanwhile: commits join this group,
                // other jobs run right after it.
                let mut batch = vec![first];
                let mut after = Vec::new();
                while batch.len() < B::MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Cmd::Stage(c)) => batch.push(c),
                        Ok(Cmd::Run(j)) => after.push(j),
                        Err(_) => break,
                    }
                }
                // A batcher that panics drops the batch's replies: its
                // callers get an error, the thread carries on.
                let _ = catch_unwind(AssertUnwindSafe(|| batcher.write(&mut conn, batch)));
                for j in after {
                    run_one(&mut conn, j);
                }
            }
        }
    }
}

fn run_one(conn: &mut Connection, job: Job) {
    // A panicking job drops its reply channel: its caller gets an error,
    // the owner thread carries on (an open transaction rolls back on drop).
    let _ = catch_unwind(AssertUnwindSafe(|| job(conn)));
}

// ------------------------------------------------------------ group commit

/// The error type of a database's group commits.
pub trait CommitError: From<rusqlite::Error> + Send + 'static {
    /// The group's transaction failed, with why.
    fn commit_failed(why: String) -> Self;
    /// The owner thread stopped before answering.
    fn stopped() -> Self {
        Self::commit_failed("the database thread stopped".into())
    }
    /// The commit's closure panicked (it was rolled back alone).
    fn panicked() -> Self {
        Self::commit_failed("a commit panicked".into())
    }
}

/// One staged commit of a group, type-erased.
pub trait Staged: Send {
    /// Directories to fsync before the transaction commits.
    fn dirs(&mut self) -> Vec<PathBuf>;
    /// Writes into the open transaction, inside a savepoint of its own.
    fn write(&mut self, tx: &mut Transaction<'_>);
    /// Answers the caller: the transaction committed (`None`) or failed.
    fn finish(self: Box<Self>, failed: Option<&str>);
}

/// A staged commit: `f`, the directories to fsync first, and its caller.
pub struct Commit<T, E, F> {
    f: Option<F>,
    dirs: Vec<PathBuf>,
    out: Option<Result<T, E>>,
    reply: Option<Reply<Result<T, E>>>,
}

impl<T, E, F> Commit<T, E, F> {
    /// A commit of `f`, answered through `reply`.
    pub fn new(dirs: Vec<PathBuf>, f: F, reply: Reply<Result<T, E>>) -> Self {
        Self {
            f: Some(f),
            dirs,
            out: None,
            reply: Some(reply),
        }
    }
}

impl<T, E, F> Staged for Commit<T, E, F>
where
    T: Send,
    E: CommitError,
    F: FnOnce(&Connection) -> Result<T, E> + Send,
{
    fn dirs(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.dirs)
    }

    fn write(&mut self, tx: &mut Transaction<'_>) {
        let Some(f) = self.f.take() else { return };
        let out = match tx.savepoint() {
            Err(e) => Err(e.into()),
            Ok(mut sp) => {
                sp.set_drop_behavior(rusqlite::DropBehavior::Rollback);
                match catch_unwind(AssertUnwindSafe(|| f(&sp))) {
                    Ok(Ok(t)) => sp.commit().map(|()| t).map_err(E::from),
                    // Dropping the savepoint rolls this commit back alone.
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(E::panicked()),
                }
            }
        };
        self.out = Some(out);
    }

    fn finish(mut self: Box<Self>, failed: Option<&str>) {
        let out = match (self.out.take(), failed) {
            (Some(Err(e)), _) => Err(e),
            (_, Some(why)) => Err(E::commit_failed(why.to_string())),
            (Some(Ok(t)), None) => Ok(t),
            (None, None) => Err(E::commit_failed("not written".into())),
        };
        if let Some(r) = self.reply.take() {
            r.send(out);
        }
    }
}

/// Fsyncs, once each, the directories the commits of `batch` named: the
/// content renamed into place there must be durable before the commit
/// that records it.
pub fn sync_dirs(batch: &mut [Box<dyn Staged>]) {
    let dirs: BTreeSet<PathBuf> = batch.iter_mut().flat_map(|b| b.dirs()).collect();
    for d in &dirs {
        if let Err(e) = std::fs::File::open(d).and_then(|f| f.sync_all()) {
            tracing::debug!(dir = %d.display(), "fsync: {e}");
        }
    }
}

/// Writes `batch` in one transaction, each commit in a savepoint of its
/// own; `tail` runs in the transaction after them (to read what to publish
/// once it is committed). Returns `tail`'s value once the transaction is
/// committed, or why it failed. The callers are not answered yet: see
/// [`finish_group`].
pub fn write_group<X>(
    conn: &mut Connection,
    batch: &mut [Box<dyn Staged>],
    tail: impl FnOnce(&Transaction<'_>) -> X,
) -> Result<X, String> {
    let res = (|| -> rusqlite::Result<X> {
        let mut tx = conn.transaction()?;
        for b in batch.iter_mut() {
            b.write(&mut tx);
        }
        let x = tail(&tx);
        tx.commit()?;
        Ok(x)
    })();
    res.map_err(|e| e.to_string())
}

/// Answers every caller of `batch`: its transaction committed (`failed`
/// is `None`) or failed, with why.
pub fn finish_group(batch: Vec<Box<dyn Staged>>, failed: Option<&str>) {
    for b in batch {
        b.finish(failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(d: &tempfile::TempDir) -> Connection {
        let c = Connection::open(d.path().join("t.db")).unwrap();
        c.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY);")
            .unwrap();
        c
    }

    #[test]
    fn jobs_run_in_order_and_a_panic_does_not_stop_the_thread() {
        let d = tempfile::tempdir().unwrap();
        let owner = Owner::start(open(&d), "test-owner").unwrap();
        for i in 0..10 {
            owner
                .call_sync(move |c| c.execute("INSERT INTO t VALUES (?1)", [i]))
                .unwrap()
                .unwrap();
        }
        let r = owner.call_sync(|_| -> () { panic!("a failing job") });
        assert_eq!(r, Err(OwnerError::Failed));
        let n: i64 = owner
            .call_sync(|c| c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)))
            .unwrap()
            .unwrap();
        assert_eq!(n, 10);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let max: i64 = rt
            .block_on(owner.call(|c| c.query_row("SELECT MAX(x) FROM t", [], |r| r.get(0))))
            .unwrap()
            .unwrap();
        assert_eq!(max, 9);
    }

    #[test]
    fn a_job_cannot_wait_for_its_own_database() {
        let d = tempfile::tempdir().unwrap();
        let owner = std::sync::Arc::new(Owner::start(open(&d), "test-owner").unwrap());
        let o2 = owner.clone();
        let inner = owner
            .call_sync(move |_| o2.call_sync(|_| 1).map(|_| ()))
            .unwrap();
        assert_eq!(inner, Err(OwnerError::Reentrant));
    }

    #[test]
    fn dropping_the_handle_closes_the_connection() {
        let d = tempfile::tempdir().unwrap();
        let owner = Owner::start(open(&d), "test-owner").unwrap();
        owner
            .call_sync(|c| {
                c.execute_batch("PRAGMA locking_mode = EXCLUSIVE; INSERT INTO t VALUES (1);")
            })
            .unwrap()
            .unwrap();
        drop(owner);
        // The exclusive lock went with the connection.
        let c = Connection::open(d.path().join("t.db")).unwrap();
        c.execute("INSERT INTO t VALUES (2)", []).unwrap();
    }
}

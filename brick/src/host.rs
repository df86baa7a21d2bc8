//! What the brick-level services need from the node that runs them, as two
//! traits: [`Peers`] (calls and streams to members, this node's own id
//! answered in-process) and [`Host`] (the pool document, the bricks served
//! here, task spawning and the shutdown token).
//!
//! The services (the brick service answering requests, the replicator,
//! the crawler, the outage recorder) depend on these traits, never on
//! `node`: the node composes them and implements the traits, so the
//! dependencies point one way, node -> services -> {store, host, wire}.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::pool::{PoolConfig, Volume};
use crate::store::Brick;
use crate::wire::call::{self, AnswerError, Call};
use crate::wire::frame::FrameError;
use crate::wire::proto::{Request, Response};

/// A member counts for quorum only if it was heard from this recently.
pub const QUORUM_SILENCE: Duration = Duration::from_millis(1500);

/// Why a call to a member failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No live connection.
    #[error("{0} is not connected")]
    NotConnected(String),
    /// The deadline passed.
    #[error("{0} did not answer in time")]
    Timeout(String),
    /// QUIC error.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Framing error.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer refused.
    #[error("{reason}")]
    Refused {
        /// Error code.
        code: u16,
        /// Reason.
        reason: String,
    },
    /// Dial failure.
    #[error("{0}")]
    Dial(String),
    /// An answer that is not the request's (see `wire::call`).
    #[error("{0}")]
    Unexpected(String),
}

impl From<AnswerError> for CallError {
    fn from(e: AnswerError) -> Self {
        match e {
            AnswerError::Refused { code, reason } => Self::Refused { code, reason },
            e @ AnswerError::Unexpected(_) => Self::Unexpected(e.to_string()),
        }
    }
}

/// A boxed writing half of a request stream.
pub type BoxWrite = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;
/// A boxed reading half of a request stream.
pub type BoxRead = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

/// Calls and streams to the members of the pool. A call or stream to this
/// node's own id is served in-process by the same handler a remote member
/// reaches, so callers never branch on "is it me".
pub trait Peers: Send + Sync + 'static {
    /// This node's id.
    fn me(&self) -> Uuid;
    /// True if a live connection to `peer` exists (always for `me`).
    fn is_connected(&self, peer: Uuid) -> bool;
    /// True if `peer` is connected and was heard from within `within`.
    fn is_alive(&self, peer: Uuid, within: Duration) -> bool;
    /// Hostname of a member, or its id.
    fn peer_name(&self, peer: Uuid) -> String;
    /// Sends one request and waits (bounded) for its response.
    fn call(&self, peer: Uuid, req: Request) -> BoxFuture<'_, Result<Response, CallError>>;
    /// Like [`Peers::call`] with a caller-chosen deadline.
    fn call_timeout(
        &self,
        peer: Uuid,
        req: Request,
        limit: Duration,
    ) -> BoxFuture<'_, Result<Response, CallError>>;
    /// Opens a request stream to `target`.
    fn open_stream(
        self: Arc<Self>,
        target: Uuid,
    ) -> BoxFuture<'static, Result<(BoxWrite, BoxRead), CallError>>;
}

/// Typed calls on [`Peers`]: a request's payload in, its reply out, the
/// pairing checked by the compiler (see `wire::call`).
pub trait Ask: Peers {
    /// Sends `c` to `peer` and waits (bounded) for its reply.
    fn ask<C: Call>(
        &self,
        peer: Uuid,
        c: C,
    ) -> impl std::future::Future<Output = Result<C::Reply, CallError>> + Send {
        async move {
            let resp = self.call(peer, c.into_request()).await?;
            Ok(call::reply::<C>(resp)?)
        }
    }

    /// Like [`Ask::ask`] with a caller-chosen deadline.
    fn ask_timeout<C: Call>(
        &self,
        peer: Uuid,
        c: C,
        limit: Duration,
    ) -> impl std::future::Future<Output = Result<C::Reply, CallError>> + Send {
        async move {
            let resp = self.call_timeout(peer, c.into_request(), limit).await?;
            Ok(call::reply::<C>(resp)?)
        }
    }
}

impl<P: Peers + ?Sized> Ask for P {}

/// Makes a task, given the token it must stop at (made again by its
/// supervisor after a panic).
pub type MakeTask = Box<dyn FnMut(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// A long-lived task started under supervision (see [`supervise`]): it
/// can be told to stop, and waited for.
#[derive(Debug, Clone)]
pub struct TaskHandle {
    name: Arc<str>,
    token: CancellationToken,
    ended: tokio::sync::watch::Receiver<bool>,
}

impl TaskHandle {
    /// The task's name, as its log lines give it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tells the task to stop (it ends at its next await point).
    pub fn stop(&self) {
        self.token.cancel();
    }

    /// True once the task has ended for good (returned, stopped, or its
    /// runtime shut down): it is not made again.
    pub fn is_finished(&self) -> bool {
        *self.ended.borrow() || self.ended.has_changed().is_err()
    }

    /// Waits until the task has ended for good.
    pub async fn stopped(&self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
    }
}

/// The one shape of every long-lived task: `make` builds it with its own
/// token (a child of `parent`, so stopping the parent stops it), which the
/// task honours (at once, or at its next quiet point so it never stops
/// half-way through a step), and if it panics (the panic is logged by the daemon's hook) it is made
/// and started again after a backoff (1 s, doubling to 60 s), never left
/// stopped while its parent runs. It ends when it returns or is stopped.
/// Returns the supervisor, for the caller to spawn where its tasks are
/// tracked, and the task's handle.
pub fn supervise(
    name: String,
    parent: &CancellationToken,
    mut make: MakeTask,
) -> (BoxFuture<'static, ()>, TaskHandle) {
    let token = parent.child_token();
    let (done, ended) = tokio::sync::watch::channel(false);
    let handle = TaskHandle {
        name: name.clone().into(),
        token: token.clone(),
        ended,
    };
    let supervisor = Box::pin(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            match tokio::spawn(make(token.clone())).await {
                Err(e) if e.is_panic() && !token.is_cancelled() => {
                    tracing::error!(task = %name, "task panicked; restarted in {backoff:?}");
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
                _ => break,
            }
        }
        let _ = done.send(true);
    });
    (supervisor, handle)
}

/// The node as the brick-level services see it.
pub trait Host: Peers {
    /// A copy of the current pool document.
    fn config(&self) -> PoolConfig;
    /// Cancelled at shutdown.
    fn token(&self) -> CancellationToken;
    /// The brick with replica id `id`, if served here.
    fn local_brick(&self, id: u64) -> Option<Arc<Brick>>;
    /// The bricks of a volume served here.
    fn local_bricks(&self, volume: Uuid) -> Vec<Arc<Brick>>;
    /// Why the brick with replica id `id` is not served here, if this node
    /// should serve it and does not.
    fn unserved_reason(&self, id: u64) -> Option<String>;
    /// This daemon's process id and QUIC port, for status rows.
    fn pid_port(&self) -> (u32, u16);
    /// Sees a change whenever the pool document changes or a member
    /// connects or disconnects (so a task follows them without polling).
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Spawns a task awaited at shutdown.
    fn spawn_task(&self, fut: BoxFuture<'static, ()>);
    /// Spawns a long-lived task under a child of `token` (see
    /// [`supervise`]), awaited at shutdown.
    fn spawn_task_supervised(
        &self,
        name: String,
        token: &CancellationToken,
        make: MakeTask,
    ) -> TaskHandle;

    /// Whether this node reaches a quorum of `v`'s bricks (`None`: the
    /// volume has no quorum configured). A brick counts when its node was
    /// heard from within [`QUORUM_SILENCE`].
    fn quorum(&self, v: &Volume) -> Option<bool> {
        let up: Vec<bool> = v
            .bricks
            .iter()
            .map(|b| self.is_alive(b.node, QUORUM_SILENCE))
            .collect();
        v.quorum(&up)
    }
}

impl dyn Host {
    /// Spawns a task awaited at shutdown.
    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.spawn_task(Box::pin(fut));
    }

    /// Spawns a supervised long-lived task under a child of `token` (see
    /// [`supervise`]).
    pub fn spawn_supervised<F, Fut>(
        &self,
        name: impl Into<String>,
        token: &CancellationToken,
        mut make: F,
    ) -> TaskHandle
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.spawn_task_supervised(name.into(), token, Box::new(move |t| Box::pin(make(t))))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A task that panics is made again (after its backoff), runs until
    /// told to stop, and its handle then says it ended.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_made_again_and_stops_when_told() {
        let made = Arc::new(AtomicU32::new(0));
        let m = made.clone();
        let parent = CancellationToken::new();
        let (supervisor, handle) = supervise(
            "test task".into(),
            &parent,
            Box::new(move |stop: CancellationToken| {
                let n = m.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    if n == 0 {
                        panic!("first run fails");
                    }
                    stop.cancelled().await;
                })
            }),
        );
        let running = tokio::spawn(supervisor);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(made.load(Ordering::SeqCst), 2, "made again after the panic");
        assert!(!handle.is_finished());
        handle.stop();
        handle.stopped().await;
        assert!(handle.is_finished());
        assert!(
            !parent.is_cancelled(),
            "stopping a task leaves its parent running"
        );
        running.await.unwrap();
        assert_eq!(
            made.load(Ordering::SeqCst),
            2,
            "a stopped task is not made again"
        );
    }

    /// Stopping the parent token stops every task under it; a task that
    /// returns on its own ends for good.
    #[tokio::test(start_paused = true)]
    async fn the_parent_token_stops_its_tasks() {
        let parent = CancellationToken::new();
        let (s1, waiting) = supervise(
            "waits".into(),
            &parent,
            Box::new(|stop: CancellationToken| Box::pin(async move { stop.cancelled().await })),
        );
        let (s2, returns) = supervise("returns".into(), &parent, Box::new(|_| Box::pin(async {})));
        tokio::spawn(s1);
        tokio::spawn(s2);
        returns.stopped().await;
        assert!(!waiting.is_finished());
        parent.cancel();
        waiting.stopped().await;
        assert_eq!(waiting.name(), "waits");
    }
}

//! Talking to the brick an agent follows: pushes (writes with their base
//! version), the change feed, stats and chunk reads. Works the same for the
//! node's own brick (in-process stream) and a remote one (QUIC).

use std::sync::Arc;
use std::time::Duration;

use gsync_brick::node::Node;
use gsync_brick::store::types::{ChunkRef, Entry};
use gsync_brick::wire::call::{self, AnswerError, Call, TaggedPage};
use gsync_brick::wire::frame;
use gsync_brick::wire::proto::{self, Changeset, Offer, Request, Response};
use gsync_brick::RelPath;
use uuid::Uuid;

/// The brick an agent talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Volume id.
    pub volume: Uuid,
    /// Brick replica id.
    pub brick: u64,
    /// Node serving it.
    pub node: Uuid,
    /// `host:/path`.
    pub name: String,
}

/// Errors talking to a brick.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// Unreachable, timed out or the stream broke: retry later.
    #[error("{0}")]
    Unreachable(String),
    /// The brick refused (code, reason).
    #[error("brick refused: {1}")]
    Refused(u16, String),
    /// The local side failed (disk).
    #[error("{0}")]
    Local(String),
}

const TIMEOUT: Duration = Duration::from_secs(20);

/// Sends request `c` to the brick and waits (bounded) for its reply.
pub async fn ask<C: Call>(node: &Arc<Node>, t: &Target, c: C) -> Result<C::Reply, RemoteError> {
    let (mut w, mut r) = node
        .open_stream(t.node)
        .await
        .map_err(|e| RemoteError::Unreachable(e.to_string()))?;
    let answer = tokio::time::timeout(TIMEOUT * 2, call::over(&mut w, &mut r, c))
        .await
        .map_err(|_| RemoteError::Unreachable("brick timed out".into()))?
        .map_err(|e| RemoteError::Unreachable(e.to_string()))?;
    answer.map_err(|e| match e {
        AnswerError::Refused { code, reason } => RemoteError::Refused(code, reason),
        e @ AnswerError::Unexpected(_) => RemoteError::Unreachable(e.to_string()),
    })
}

/// Pushes a local version (a member of `changeset`, if given); returns
/// `(assigned vv, conflict)`.
pub async fn push(
    node: &Arc<Node>,
    t: &Target,
    offer: &Offer,
    changeset: Option<Changeset>,
    file: Option<&std::path::Path>,
) -> Result<(gsync_brick::wire::vv::VersionVector, bool), RemoteError> {
    let (mut w, mut r) = node
        .open_stream(t.node)
        .await
        .map_err(|e| RemoteError::Unreachable(e.to_string()))?;
    let (resp, _) =
        gsync_brick::replicate::send_offer(&mut w, &mut r, (offer, changeset), file, &offer.chunks)
            .await
            .map_err(|e| match e {
                gsync_brick::replicate::PushError::Store(s) => RemoteError::Local(s.to_string()),
                other => RemoteError::Unreachable(other.to_string()),
            })?;
    match resp {
        Response::Applied { vv, conflict } => Ok((vv, conflict)),
        Response::Error { code, reason } => Err(RemoteError::Refused(code, reason)),
        _ => Err(RemoteError::Unreachable("unexpected answer".into())),
    }
}

/// The brick's current version of a path and its chunks.
pub async fn stat(
    node: &Arc<Node>,
    t: &Target,
    path: &RelPath,
) -> Result<Option<(Entry, Vec<ChunkRef>)>, RemoteError> {
    let req = proto::Stat {
        volume: t.volume,
        brick: t.brick,
        path: path.clone(),
    };
    ask(node, t, req).await
}

/// True if the brick holds more than one version of `path` (split-brain).
pub async fn in_split_brain(
    node: &Arc<Node>,
    t: &Target,
    volume: &str,
    path: &RelPath,
) -> Result<bool, RemoteError> {
    let req = proto::SplitBrain {
        volume: volume.to_string(),
        path: path.clone(),
    };
    let v = ask(node, t, req).await?;
    Ok(v.iter().any(|b| b.brick == t.brick && b.versions.len() > 1))
}

/// Opens a chunk read: returns the stream to read raw chunk frames from.
pub async fn read_chunks(
    node: &Arc<Node>,
    t: &Target,
    path: &RelPath,
    hash: [u8; 32],
    chunks: Vec<u32>,
) -> Result<gsync_brick::node::BoxRead, RemoteError> {
    let (mut w, mut r) = node
        .open_stream(t.node)
        .await
        .map_err(|e| RemoteError::Unreachable(e.to_string()))?;
    let req = Request::ReadChunks(proto::ReadChunks {
        volume: t.volume,
        brick: t.brick,
        path: path.clone(),
        hash,
        chunks,
    });
    frame::write_msg(&mut w, &req)
        .await
        .map_err(|e| RemoteError::Unreachable(e.to_string()))?;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
    let resp = tokio::time::timeout(TIMEOUT, frame::read_msg::<_, Response>(&mut r))
        .await
        .map_err(|_| RemoteError::Unreachable("brick timed out".into()))?
        .map_err(|e| RemoteError::Unreachable(e.to_string()))?;
    match resp {
        Response::Ok => Ok(r),
        Response::Error { code, reason } => Err(RemoteError::Refused(code, reason)),
        _ => Err(RemoteError::Unreachable("unexpected answer".into())),
    }
}

/// Reads one chunk frame from a chunk read.
pub async fn next_chunk(r: &mut gsync_brick::node::BoxRead) -> Result<Vec<u8>, RemoteError> {
    tokio::time::timeout(TIMEOUT, frame::read_raw(r))
        .await
        .map_err(|_| RemoteError::Unreachable("brick timed out".into()))?
        .map_err(|e| RemoteError::Unreachable(e.to_string()))
}

/// A batch from the change feed.
#[derive(Debug)]
pub struct Batch {
    /// Changed entries, in order, with their sequence numbers.
    pub entries: Vec<(u64, Entry)>,
    /// True when the feed has reached the brick's current sequence.
    pub caught_up: bool,
    /// The brick this came from.
    pub brick: u64,
    /// The brick's incarnation (see [`feed`]).
    pub incarnation: u64,
    /// The sequence this batch brings the follower to.
    pub upto: u64,
    /// Changeset tags of entries: (index into `entries`, tag).
    pub changesets: Vec<(u32, Changeset)>,
}

/// What the change feed reports to the agent.
#[derive(Debug)]
pub enum FeedEvent {
    /// Entries to apply.
    Batch(Batch),
    /// The brick is not the incarnation the cursor belongs to (it was
    /// rebuilt), or its history is shorter than the cursor: the feed starts
    /// again from the beginning, and every path is compared.
    Resync(String),
    /// The brick did not answer, or refused (e.g. `auth.allow`).
    Trouble(String),
    /// The brick's node does not serve it (its directory lost the
    /// volume-id marker, or it is out of service): follow another one.
    /// The feed ends after this event.
    NotServed(String),
}

/// Most entries per feed request.
pub const FEED_LIMIT: u32 = 500;

/// Follows the brick's change feed from `since`, sending events to `tx`
/// until cancelled or the receiver goes away. Errors are retried.
///
/// `expect` is the incarnation the cursor `since` belongs to: sequence
/// numbers mean nothing across incarnations, so on a mismatch (or when the
/// brick's sequence is behind the cursor) the feed restarts from 0 and the
/// agent compares the whole listing with its journal and folder.
pub async fn feed(
    node: Arc<Node>,
    t: Target,
    mut since: u64,
    expect: Option<u64>,
    tx: tokio::sync::mpsc::Sender<FeedEvent>,
) {
    let mut announced = false;
    let mut known = expect;
    let mut troubled = false;
    loop {
        let req = proto::FeedInSets {
            volume: t.volume,
            brick: t.brick,
            since,
            wait_ms: if announced { 5000 } else { 0 },
            limit: FEED_LIMIT,
        };
        let trouble = match ask(&node, &t, req).await {
            Ok(TaggedPage {
                entries,
                seq,
                incarnation,
                changesets,
            }) => {
                if since > 0 && (known != Some(incarnation) || seq < since) {
                    let why = if known != Some(incarnation) {
                        format!("{} is a new incarnation of the brick (rebuilt)", t.name)
                    } else {
                        format!("{} has a shorter history than this mount", t.name)
                    };
                    since = 0;
                    announced = false;
                    known = Some(incarnation);
                    if tx.send(FeedEvent::Resync(why)).await.is_err() {
                        return;
                    }
                    continue;
                }
                known = Some(incarnation);
                let recovered = std::mem::take(&mut troubled);
                let last = entries.last().map_or(since, |e| e.0);
                let caught_up = last >= seq;
                // An empty answer is news only when it ends a trouble.
                if entries.is_empty() && announced && !recovered {
                    continue;
                }
                announced = announced || caught_up;
                since = last;
                let b = Batch {
                    entries,
                    caught_up,
                    brick: t.brick,
                    incarnation,
                    upto: last,
                    changesets,
                };
                if tx.send(FeedEvent::Batch(b)).await.is_err() {
                    return;
                }
                continue;
            }
            Err(RemoteError::Refused(c, reason)) if c == proto::code::NOT_FOUND => {
                let _ = tx
                    .send(FeedEvent::NotServed(format!("{}: {reason}", t.name)))
                    .await;
                return;
            }
            Err(e) => e.to_string(),
        };
        tracing::debug!(brick = %t.name, "change feed: {trouble}");
        if !troubled {
            troubled = true;
            if tx.send(FeedEvent::Trouble(trouble)).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! The full crawl (`gsync volume heal VOL full`): finds what the pending
//! index cannot know, such as a brick replaced by an empty disk.
//!
//! A brick compares its tree with a peer brick's by Merkle digests of
//! directory children (`store::digest`), starting at the root and
//! descending only into children whose digests differ. Every local path in
//! a differing child is marked pending for the peer; the replicator then
//! offers it, and the peer takes what it lacks (an equal version costs one
//! small round trip, no content). Each node crawls toward its peers, so
//! paths only the peer holds come back by the peer's own crawl.

use std::sync::Arc;

use uuid::Uuid;

use crate::node::{CallError, Node};
use crate::proto::{Request, Response};
use crate::store::digest::{self, ChildDigest};
use crate::store::{Brick, StoreError};

/// What a crawl did.
#[derive(Debug, Default, Clone, Copy)]
pub struct CrawlStats {
    /// Directories whose children were compared.
    pub dirs_walked: u64,
    /// Paths marked pending for the peer.
    pub paths_marked: u64,
}

/// Errors of a crawl.
#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    /// The peer could not be asked.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The peer answered something else.
    #[error("unexpected answer from the peer")]
    Unexpected,
}

async fn remote(
    node: &Arc<Node>,
    brick: &Brick,
    peer: u64,
    target: Uuid,
    dir: &str,
) -> Result<Vec<ChildDigest>, CrawlError> {
    let req = Request::Digests {
        volume: brick.volume,
        brick: peer,
        dir: dir.to_string(),
    };
    if target == node.me.uuid {
        // Both bricks on this node: read the peer brick directly.
        let Some(other) = node.bricks.get(peer) else {
            return Err(CrawlError::Unexpected);
        };
        let d = dir.to_string();
        return Ok(other.with_db(move |_, c| digest::children(c, &d)).await?);
    }
    let resp = node.call(target, req).await?;
    match resp {
        Response::Digests(d) => Ok(d),
        _ => Err(CrawlError::Unexpected),
    }
}

/// Compares `brick` with brick `peer` on node `target` and marks every
/// local path that differs as pending for the peer.
pub async fn crawl(
    node: &Arc<Node>,
    brick: &Arc<Brick>,
    peer: u64,
    target: Uuid,
) -> Result<CrawlStats, CrawlError> {
    let mut stats = CrawlStats::default();
    let mut stack: Vec<String> = vec![String::new()];
    while let Some(dir) = stack.pop() {
        if node.token.is_cancelled() {
            break;
        }
        stats.dirs_walked += 1;
        let d2 = dir.clone();
        let mine = brick.with_db(move |_, c| digest::children(c, &d2)).await?;
        let theirs = remote(node, brick, peer, target, &dir).await?;
        let mut differing: Vec<String> = Vec::new();
        for child in mine {
            let same = theirs
                .iter()
                .any(|t| t.name == child.name && t.digest == child.digest);
            if same {
                continue;
            }
            let path = if dir.is_empty() {
                child.name.clone()
            } else {
                format!("{dir}/{}", child.name)
            };
            if child.has_children {
                stack.push(path.clone());
            }
            differing.push(path);
        }
        if !differing.is_empty() {
            let n = brick
                .with_db(move |_, c| Brick::mark_pending(c, peer, &differing))
                .await?;
            stats.paths_marked += n;
            brick.publish_seq(brick.seq());
        }
    }
    Ok(stats)
}

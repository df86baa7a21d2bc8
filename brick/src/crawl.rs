//! The full crawl (`gsync volume heal VOL full`): finds what the pending
//! index cannot know, such as a brick replaced by an empty disk.
//!
//! A brick compares its tree with a peer brick's by Merkle digests of
//! directory children (`store::digest`), starting at the root and
//! descending only into children whose digests differ. Every local path in
//! a differing child is marked pending for the peer; the replicator then
//! offers it, and the peer takes what it lacks (an equal version costs one
//! small round trip, no content). Each host crawls toward its peers, so
//! paths only the peer holds come back by the peer's own crawl.
//!
//! A full heal is done only when every pair was compared. Each (brick,
//! peer brick) crawl is a job ([`start_full`]) whose state heal reports
//! show: a crawl that fails (peer unreachable, an answer too slow under
//! load, the peer brick not served) is retried with a doubling backoff, up
//! to [`FULL_HEAL_ATTEMPTS`] attempts, and then reported as failed with the
//! reason until the next `heal VOL full`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::heal_types::{FullHealPhase, FullHealState};
use crate::host::{Ask, CallError, Host};
use crate::store::digest::{self, ChildDigest};
use crate::store::{Brick, StoreError};
use crate::wire::proto;

/// Attempts of one full heal toward one peer brick before it is reported
/// failed (about three minutes with [`RETRY_BACKOFF`]).
pub const FULL_HEAL_ATTEMPTS: u32 = 12;
/// Wait after the first failed attempt; doubles per failure up to the cap.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(15));
/// Longest wait for one directory's digests from the peer: a large
/// directory on a loaded host may take longer than a management call.
const DIGESTS_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries of one digests request before the attempt fails.
const DIGESTS_TRIES: u32 = 2;

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
    /// The peer brick is not served on its host.
    #[error("peer brick not served")]
    NotServed,
    /// The peer brick is no longer part of the volume.
    #[error("peer brick no longer in the volume")]
    Gone,
}

async fn remote(
    host: &Arc<dyn Host>,
    brick: &Brick,
    peer: u64,
    target: Uuid,
    dir: &str,
) -> Result<Vec<ChildDigest>, CrawlError> {
    let req = proto::Digests {
        volume: brick.volume,
        brick: peer,
        dir: dir.to_string(),
    };
    if target == host.me() {
        // Both bricks on this host: read the peer brick directly.
        let Some(other) = host.local_brick(peer) else {
            return Err(CrawlError::NotServed);
        };
        let d = dir.to_string();
        return Ok(other.with_db(move |_, c| digest::children(c, &d)).await?);
    }
    let mut tries = 0;
    loop {
        tries += 1;
        match host.ask_timeout(target, req.clone(), DIGESTS_TIMEOUT).await {
            Ok(d) => return Ok(d),
            Err(e @ (CallError::Timeout(_) | CallError::Connection(_)))
                if tries < DIGESTS_TRIES && !host.token().is_cancelled() =>
            {
                tracing::debug!(peer, dir, "digests: {e}; asking again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Launches a full heal from `brick` toward brick `peer` (unless one is
/// already running): crawls, and retries a failed crawl with backoff.
pub fn start_full(host: &Arc<dyn Host>, brick: &Arc<Brick>, peer: u64) {
    {
        let mut jobs = brick.full_heal.lock().unwrap_or_else(|e| e.into_inner());
        let active = jobs.get(&peer).is_some_and(|j| {
            matches!(
                j.state.phase,
                FullHealPhase::Running | FullHealPhase::Retrying
            )
        });
        if active {
            return;
        }
        jobs.insert(
            peer,
            crate::heal_types::FullHealTrack {
                state: FullHealState {
                    peer,
                    phase: FullHealPhase::Running,
                    attempts: 0,
                    last_error: None,
                    dirs_compared: 0,
                    paths_marked: 0,
                    elapsed_secs: 0.0,
                },
                started: Instant::now(),
            },
        );
    }
    let (n, b) = (host.clone(), brick.clone());
    host.spawn(async move { full_heal_job(n, b, peer).await });
}

fn update(brick: &Brick, peer: u64, f: impl FnOnce(&mut FullHealState)) {
    let mut jobs = brick.full_heal.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(j) = jobs.get_mut(&peer) {
        f(&mut j.state);
    }
}

fn peer_node(host: &dyn Host, brick: &Brick, peer: u64) -> Option<Uuid> {
    let cfg = host.config();
    let v = cfg.volumes.iter().find(|v| v.id == brick.volume)?;
    v.brick(peer).map(|b| b.node)
}

async fn full_heal_job(host: Arc<dyn Host>, brick: Arc<Brick>, peer: u64) {
    let mut backoff = RETRY_BACKOFF.0;
    for attempt in 1..=FULL_HEAL_ATTEMPTS {
        update(&brick, peer, |s| {
            s.phase = FullHealPhase::Running;
            s.attempts = attempt;
            s.dirs_compared = 0;
            s.paths_marked = 0;
        });
        let res = match peer_node(&*host, &brick, peer) {
            Some(target) => crawl(&host, &brick, peer, target).await,
            None => Err(CrawlError::Gone),
        };
        let served = host
            .local_brick(brick.id)
            .is_some_and(|b| Arc::ptr_eq(&b, &brick));
        if host.token().is_cancelled() || !served {
            // The daemon or this brick stopped: the job ends with it.
            update(&brick, peer, |s| {
                s.phase = FullHealPhase::Failed;
                s.last_error = Some("interrupted: the brick stopped".into());
            });
            return;
        }
        match res {
            Ok(st) => {
                tracing::info!(
                    brick = %brick.root.display(), peer, attempt,
                    "full crawl done: {} directories compared, {} paths to heal", st.dirs_walked, st.paths_marked
                );
                update(&brick, peer, |s| {
                    s.phase = FullHealPhase::Done;
                    s.dirs_compared = st.dirs_walked;
                    s.paths_marked = st.paths_marked;
                });
                return;
            }
            Err(CrawlError::Gone) => {
                update(&brick, peer, |s| {
                    s.phase = FullHealPhase::Failed;
                    s.last_error = Some(CrawlError::Gone.to_string());
                });
                return;
            }
            Err(e) => {
                let last = attempt == FULL_HEAL_ATTEMPTS;
                let reason = e.to_string();
                if last {
                    tracing::error!(brick = %brick.root.display(), peer, "full crawl failed after {attempt} attempts: {reason}");
                } else {
                    tracing::warn!(brick = %brick.root.display(), peer, "full crawl attempt {attempt} failed: {reason}; retrying in {backoff:?}");
                }
                update(&brick, peer, |s| {
                    s.phase = if last {
                        FullHealPhase::Failed
                    } else {
                        FullHealPhase::Retrying
                    };
                    s.last_error = Some(reason);
                });
                if last {
                    return;
                }
                let token = host.token();
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RETRY_BACKOFF.1);
            }
        }
    }
}

/// Compares `brick` with brick `peer` on host `target` and marks every
/// local path that differs as pending for the peer.
pub async fn crawl(
    host: &Arc<dyn Host>,
    brick: &Arc<Brick>,
    peer: u64,
    target: Uuid,
) -> Result<CrawlStats, CrawlError> {
    let mut stats = CrawlStats::default();
    let mut stack: Vec<String> = vec![String::new()];
    while let Some(dir) = stack.pop() {
        if host.token().is_cancelled() {
            break;
        }
        stats.dirs_walked += 1;
        update(brick, peer, |s| {
            s.dirs_compared = stats.dirs_walked;
            s.paths_marked = stats.paths_marked;
        });
        let d2 = dir.clone();
        let mine = brick.with_db(move |_, c| digest::children(c, &d2)).await?;
        let theirs = remote(host, brick, peer, target, &dir).await?;
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

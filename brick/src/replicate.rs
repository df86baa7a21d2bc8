//! Brick-to-brick replication driven by the pending index.
//!
//! Every change a brick commits adds a `pending(peer, path, seq)` row for
//! each other brick of the volume, in the same transaction. One replicator
//! task per (brick, peer brick) replays those rows in sequence order: it
//! offers the path's current version (and any split-brain siblings) to the
//! peer, streams only the chunks the peer asks for, and deletes the row when
//! the peer confirms. Live replication and index self-heal after an outage
//! are the same loop; rows created before the peer came back count as heals
//! and honour `cluster.heal-rate-limit`.
//!
//! One offer per change per peer: a brick that takes a version unchanged
//! from a peer brick (the sender) does not offer it on, since the sender
//! offers it to every brick itself. Its rows for the other bricks carry
//! the sender and only watch: once they are [`WATCH_GRACE`] old, the
//! replicator asks the peer for the versions it holds of a whole batch
//! of them in one request, and drops the rows the peer already holds (or
//! holds something newer of). A path the peer still lacks is asked about
//! again later, and offered from here when the sender is unreachable (it
//! died or was cut off mid-way through its offers) or after
//! [`WATCH_MISSES`] asks: every brick holding a version still makes sure
//! every other brick gets it, as before, without each offering it.
//!
//! Small versions travel in batches: the directories, links, deletions and
//! files smaller than the smallest chunk of one push group go out as
//! `Request::OfferBatch` requests (up to [`MAX_BATCH_ENTRIES`] versions and
//! [`MAX_BATCH_BYTES`] of content each, content inline), several in flight
//! at once, each answered with one outcome per version; the rows of the
//! versions applied are confirmed together, the refused ones deferred one
//! by one as a refused single offer is. Larger files, and paths with
//! split-brain siblings, keep one offer each with their chunks streamed,
//! in a lane beside the passes ([`Lane`]): a pass does not wait for a big
//! file's transfer, so the small changes written after it are not held
//! up behind it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::host::{CallError, Host, TaskHandle};
use crate::store::types::{ChunkRef, Entry, Kind};
use crate::store::{chunking, Brick, StoreError};
use crate::wire::call;
use crate::wire::frame::{self, FrameError};
use crate::wire::proto::{
    self, BatchEntry, BatchOutcome, Changeset, Offer, Request, Response, MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
};
use crate::wire::vv::{Relation, VersionVector};
use crate::RelPath;

/// Errors of one push.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The peer is unreachable or the stream failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A frame failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The peer refused.
    #[error("peer refused: {0}")]
    Refused(String),
    /// The peer stopped answering.
    #[error("peer timed out")]
    Timeout,
    /// The request of a whole batch failed on the link (the peer
    /// unreachable, the stream broken, no answer in time).
    #[error("batch failed: {0}")]
    Link(String),
}

/// Starts one replicator per peer brick of `brick`, stopped with `token`
/// or through their handles.
pub fn spawn(
    host: &Arc<dyn Host>,
    brick: &Arc<Brick>,
    token: &CancellationToken,
) -> Vec<TaskHandle> {
    // Rows for bricks removed from the volume would never be confirmed.
    let b = brick.clone();
    host.spawn(async move {
        let peers = b.peers();
        match b
            .with_db(move |_, c| crate::lifecycle::prune_pending(c, &peers))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(brick = %b.root.display(), "dropped {n} pending rows for bricks no longer in the volume"),
            Err(e) => tracing::warn!(brick = %b.root.display(), "cannot drop pending rows of removed bricks: {e}"),
        }
    });
    let mut handles = Vec::new();
    for peer in brick.peers() {
        let (n, b) = (host.clone(), brick.clone());
        handles.push(host.spawn_supervised(
            format!("replicator to brick {peer}"),
            token,
            move |stop| {
                let (n, b) = (n.clone(), b.clone());
                async move {
                    stop.run_until_cancelled(replicator(n, b, peer))
                        .await
                        .unwrap_or(())
                }
            },
        ));
    }
    handles
}

/// Rows fetched per pass over the pending index.
const BATCH: u32 = 1024;
/// Requests (offers of one path, or batches) in flight to one peer brick
/// at once.
const PUSH_CONCURRENCY: usize = 16;
/// First and longest wait before retrying a path the peer refused.
const REFUSED_RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(60));
/// Age of a watched row (one whose version its sender delivers, see the
/// module comment) before the peer is first asked whether it holds it.
const WATCH_GRACE: Duration = Duration::from_secs(1);
/// Wait before asking again about a watched path the peer still lacks
/// while its sender is reachable; doubled at each ask.
const WATCH_RECHECK: Duration = Duration::from_secs(1);
/// Asks about a watched path before this brick offers it anyway (its
/// sender reachable from here, but not, it seems, from the peer).
const WATCH_MISSES: u32 = 4;
/// The longest an idle replicator sleeps (a backstop: commits, peers
/// connecting and document changes wake it at once).
const IDLE_BACKSTOP: Duration = Duration::from_secs(30);

/// A path the peer refused at `seq` (or, for a watched row, still
/// lacked), not retried before `at`.
struct Deferred {
    seq: u64,
    at: tokio::time::Instant,
    backoff: Duration,
    /// Times the peer was found lacking a watched row's version.
    misses: u32,
}

/// The brick's sequence over the last moments: which rows are older than
/// [`WATCH_GRACE`] (a row at sequence `s` was written no later than the
/// first time the brick's sequence reached `s`).
struct SeqMarks(std::collections::VecDeque<(tokio::time::Instant, u64)>);

impl SeqMarks {
    fn new(seq: u64) -> Self {
        Self(std::iter::once((tokio::time::Instant::now(), seq)).collect())
    }

    /// Records the current sequence; returns the highest sequence written
    /// at least [`WATCH_GRACE`] ago.
    fn settled(&mut self, seq: u64) -> u64 {
        let now = tokio::time::Instant::now();
        if self.0.back().is_none_or(|(_, s)| *s != seq) {
            self.0.push_back((now, seq));
        }
        let old = |at: &tokio::time::Instant| now.saturating_duration_since(*at) >= WATCH_GRACE;
        // Keep the newest old mark and everything after it.
        while self.0.len() > 1 && self.0.get(1).is_some_and(|(at, _)| old(at)) {
            self.0.pop_front();
        }
        match self.0.front() {
            Some((at, s)) if old(at) => *s,
            _ => 0,
        }
    }
}

async fn replicator(host: Arc<dyn Host>, brick: Arc<Brick>, peer: u64) {
    let mut seq_rx = brick.subscribe();
    let mut changes = host.changes();
    // Rows at or below this sequence were written while the peer was away.
    let mut heal_upto = brick.seq();
    let mut failing = false;
    // Paths the peer refused (a symlinked parent on its side, a full disk,
    // no quorum...): retried with backoff, without holding up the rows
    // behind them.
    let mut deferred: std::collections::HashMap<String, Deferred> =
        std::collections::HashMap::new();
    // Pass over the pending index in sequence order, `BATCH` rows at a time.
    let mut cursor = 0u64;
    let mut pushed_this_pass = false;
    let mut fill = FillCheck::default();
    let mut marks = SeqMarks::new(brick.seq());
    let mut lane = Lane::default();
    let mut finished: Vec<Pushed> = Vec::new();
    loop {
        // Offers of single paths that finished meanwhile.
        finished.extend(lane.finished());
        let done = std::mem::take(&mut finished);
        if !done.is_empty()
            && settle(&brick, peer, done, &mut deferred, &mut pushed_this_pass).await
        {
            failing = true;
            cursor = 0;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if let Some(upto) = fill.run(&host, &brick, peer).await {
            heal_upto = heal_upto.max(upto);
        }
        // Mark the current sequence seen *before* reading the index, so a
        // commit that lands after the read still wakes the wait below.
        seq_rx.borrow_and_update();
        changes.borrow_and_update();
        let current = brick.seq();
        let settled = marks.settled(current);
        let rows = brick
            .with_db(move |_, c| Brick::pending_after(c, peer, cursor, settled, BATCH))
            .await
            .unwrap_or_default();
        if rows.is_empty() {
            // End of a pass. Start the next one at once if it moved
            // something; otherwise wait for a change, a deferred retry or
            // a watched row coming of age.
            cursor = 0;
            if std::mem::take(&mut pushed_this_pass) {
                continue;
            }
            let now = tokio::time::Instant::now();
            // Rows written in the last moments may be watched ones.
            let longest = if settled < current {
                WATCH_GRACE / 4
            } else {
                IDLE_BACKSTOP
            };
            let wake = deferred
                .values()
                .map(|d| d.at)
                .chain(fill.retry_at)
                .min()
                .map_or(longest, |at| at.saturating_duration_since(now))
                .clamp(Duration::from_millis(50), longest);
            // A commit, a peer (re)connecting or a new document (a peer's
            // new incarnation to fill) ends the wait.
            tokio::select! {
                _ = seq_rx.changed() => {}
                _ = changes.changed() => {}
                done = lane.next_finished() => finished = done,
                _ = tokio::time::sleep(wake) => {}
            }
            continue;
        }
        let Some(target) = peer_node(&*host, &brick, peer) else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if !host.is_connected(target) {
            failing = true;
            cursor = 0;
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        if failing {
            failing = false;
            // The outage history keeps what this side changed meanwhile;
            // the replay below deletes the rows that say so.
            let nodes = host
                .config()
                .volumes
                .iter()
                .find(|v| v.id == brick.volume)
                .map(crate::outage::brick_nodes)
                .unwrap_or_default();
            if let Err(e) = brick
                .with_db(move |_, c| crate::store::outages::collect(c, peer, &nodes))
                .await
            {
                tracing::warn!(brick = %brick.root.display(), "outage history: {e}");
            }
            heal_upto = brick.seq();
            *brick.heal_started.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(heal_start(&brick));
            deferred.clear();
            tracing::info!(brick = %brick.root.display(), peer, "peer brick reachable; replaying pending entries");
        }
        // The batch, minus rows waiting out a refusal, in push order: live
        // entries first (all at once: a rename's new path arrives while
        // the old one still holds the content), then deletions deepest
        // first, one depth at a time (a directory's contents go before it).
        let mut work: Vec<(String, RelPath, u64)> = Vec::new();
        let mut watch: Vec<(String, RelPath, u64)> = Vec::new();
        for (path, seq, sender) in rows {
            cursor = cursor.max(seq);
            let Ok(rel) = RelPath::new(&path) else {
                let _ = brick
                    .with_db(move |_, c| Brick::confirm(c, peer, &path, seq))
                    .await;
                continue;
            };
            if lane.holds_up(&rel) {
                // Its path (or one above or below it) is being offered:
                // the next pass looks again.
                continue;
            }
            let misses = match deferred.get(&path) {
                Some(d) if d.seq == seq && d.at > tokio::time::Instant::now() => continue,
                Some(d) if d.seq == seq => d.misses,
                _ => 0,
            };
            if sender != 0 && misses < WATCH_MISSES {
                let sender_up =
                    peer_node(&*host, &brick, sender).is_some_and(|n| host.is_connected(n));
                if sender_up {
                    watch.push((path, rel, seq));
                    continue;
                }
            }
            work.push((path, rel, seq));
        }
        let mut link_failed = false;
        if !watch.is_empty() {
            match check_watched(&host, &brick, peer, target, watch).await {
                Ok((held, lacking)) => {
                    let now = tokio::time::Instant::now();
                    for (path, seq) in lacking {
                        let misses = deferred
                            .get(&path)
                            .filter(|d| d.seq == seq)
                            .map_or(0, |d| d.misses)
                            + 1;
                        let backoff = WATCH_RECHECK * (1 << (misses - 1).min(5));
                        deferred.insert(
                            path,
                            Deferred {
                                seq,
                                at: now + backoff,
                                backoff,
                                misses,
                            },
                        );
                    }
                    if !held.is_empty() {
                        pushed_this_pass = true;
                        for (p, _) in &held {
                            deferred.remove(p);
                        }
                        confirm_rows(&brick, peer, held).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(peer, "replication deferred: {e}");
                    link_failed = true;
                }
            }
        }
        let groups = if link_failed {
            Vec::new()
        } else {
            push_order(&brick, work).await
        };
        for group in groups {
            // A group goes after the one before it: a deletion waits for
            // an offer still in the lane below or above it.
            while group.iter().any(|(_, rel, _)| lane.holds_up(rel)) {
                let done = lane.next_finished().await;
                link_failed |=
                    settle(&brick, peer, done, &mut deferred, &mut pushed_this_pass).await;
            }
            if link_failed {
                break;
            }
            let jobs = plan_jobs(&brick, group, heal_upto).await;
            let mut batches = Vec::new();
            for job in jobs {
                match job {
                    Job::Batch(items) => batches.push(items),
                    Job::Path((path, rel, seq)) => {
                        // A full lane: wait for a place in it.
                        while lane.is_full() && !link_failed {
                            let done = lane.next_finished().await;
                            link_failed |=
                                settle(&brick, peer, done, &mut deferred, &mut pushed_this_pass)
                                    .await;
                        }
                        if !link_failed {
                            lane.start(
                                &host,
                                &brick,
                                peer,
                                target,
                                (path, rel, seq),
                                seq <= heal_upto,
                            );
                        }
                    }
                }
            }
            let results: Vec<_> = futures_util::stream::iter(batches)
                .map(|items| push_batch(&host, &brick, peer, target, items))
                .buffer_unordered(PUSH_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .flatten()
                .collect();
            link_failed |=
                settle(&brick, peer, results, &mut deferred, &mut pushed_this_pass).await;
            if link_failed {
                break;
            }
        }
        if link_failed {
            failing = true;
            cursor = 0;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        deferred.retain(|_, d| d.at + REFUSED_RETRY.1 > tokio::time::Instant::now());
    }
}

/// What became of one pushed row: its path, sequence, whether it counted
/// as a heal, and the push's outcome (bytes sent).
type Pushed = (String, u64, bool, Result<u64, PushError>);

/// Records what became of pushed rows: confirms the applied ones (one
/// commit, with the brick's others), defers the refused ones with a
/// growing backoff. Returns true if the peer or the link failed.
async fn settle(
    brick: &Arc<Brick>,
    peer: u64,
    results: Vec<Pushed>,
    deferred: &mut std::collections::HashMap<String, Deferred>,
    pushed: &mut bool,
) -> bool {
    let mut link_failed = false;
    let mut confirmed: Vec<(String, u64)> = Vec::new();
    for (path, seq, is_heal, res) in results {
        match res {
            Ok(bytes) => {
                *pushed = true;
                deferred.remove(&path);
                if is_heal {
                    crate::failpoint::hit("heal-mid-replay");
                    brick.counters.add_heal(bytes);
                }
                confirmed.push((path, seq));
            }
            Err(e @ (PushError::Refused(_) | PushError::Store(_))) => {
                // About this path only: retry it later, go on with the rest.
                let backoff = deferred
                    .get(&path)
                    .filter(|d| d.seq == seq)
                    .map_or(REFUSED_RETRY.0, |d| (d.backoff * 2).min(REFUSED_RETRY.1));
                if backoff == REFUSED_RETRY.0 {
                    tracing::warn!(%path, peer, "replication refused; will retry: {e}");
                } else {
                    tracing::debug!(%path, peer, "replication refused again: {e}");
                }
                deferred.insert(
                    path,
                    Deferred {
                        seq,
                        at: tokio::time::Instant::now() + backoff,
                        backoff,
                        misses: WATCH_MISSES,
                    },
                );
            }
            Err(e) => {
                // The peer or the link failed: stop, start over later.
                tracing::debug!(path, peer, "replication deferred: {e}");
                link_failed = true;
            }
        }
    }
    if !confirmed.is_empty() {
        confirm_rows(brick, peer, confirmed).await;
    }
    link_failed
}

/// Deletes the pending rows `(path, seq)` the peer now holds, in one
/// commit shared with the brick's others (one fsync for all).
async fn confirm_rows(brick: &Arc<Brick>, peer: u64, rows: Vec<(String, u64)>) {
    let _ = brick
        .commit(Vec::new(), move |c| {
            for (p, s) in &rows {
                Brick::confirm(c, peer, p, *s)?;
            }
            Ok(())
        })
        .await;
}

/// Offers of single paths (files of a chunk or more, paths with
/// split-brain siblings) in flight to the peer, outside the passes: a
/// pass does not wait for them, so a big file's transfer does not hold up
/// the small changes written after it. A row whose path is in the lane,
/// or lies above or below one that is, waits for the next pass (a
/// directory's deletion never overtakes the offer of a file inside it).
#[derive(Default)]
struct Lane {
    running: futures_util::stream::FuturesUnordered<
        std::pin::Pin<Box<dyn std::future::Future<Output = Pushed> + Send>>,
    >,
    /// The pending row's path and the path of each offer running.
    paths: Vec<(String, RelPath)>,
}

impl Lane {
    fn is_full(&self) -> bool {
        self.running.len() >= PUSH_CONCURRENCY
    }

    /// True if `rel` must wait for an offer in the lane.
    fn holds_up(&self, rel: &RelPath) -> bool {
        self.paths
            .iter()
            .any(|(_, p)| p.starts_with(rel) || rel.starts_with(p))
    }

    /// Starts offering `rel` (pending row `path`, `seq`) to the peer.
    fn start(
        &mut self,
        host: &Arc<dyn Host>,
        brick: &Arc<Brick>,
        peer: u64,
        target: Uuid,
        (path, rel, seq): (String, RelPath, u64),
        is_heal: bool,
    ) {
        let (host, brick) = (host.clone(), brick.clone());
        self.paths.push((path.clone(), rel.clone()));
        self.running.push(Box::pin(async move {
            // Test builds: a big transfer made long, to see what overtakes it.
            crate::failpoint::delay("replicate-slow-offer", Duration::from_secs(20)).await;
            if is_heal {
                brick.counters.healing.fetch_add(1, Ordering::Relaxed);
            }
            let res = push_path_paced(&host, &brick, peer, target, &rel, is_heal).await;
            if is_heal {
                brick.counters.healing.fetch_sub(1, Ordering::Relaxed);
            }
            (path, seq, is_heal, res)
        }));
    }

    /// The offers finished by now, without waiting.
    fn finished(&mut self) -> Vec<Pushed> {
        let mut out = Vec::new();
        while let Some(Some(r)) = self.running.next().now_or_never() {
            self.forget(&r.0);
            out.push(r);
        }
        out
    }

    /// Waits for the next offer to finish (forever when none runs).
    async fn next_finished(&mut self) -> Vec<Pushed> {
        match self.running.next().await {
            Some(r) => {
                self.forget(&r.0);
                vec![r]
            }
            None => std::future::pending().await,
        }
    }

    fn forget(&mut self, path: &str) {
        if let Some(i) = self.paths.iter().position(|(p, _)| p == path) {
            self.paths.swap_remove(i);
        }
        if self.running.is_empty() {
            self.paths.clear();
        }
    }
}

/// Asks brick `peer` (on host `target`) which of the watched rows' versions
/// it holds, in one request. Returns the rows it holds (its version is this
/// brick's current one, or newer) and those it lacks, as `(path, seq)`.
async fn check_watched(
    host: &Arc<dyn Host>,
    brick: &Arc<Brick>,
    peer: u64,
    target: Uuid,
    watch: Vec<(String, RelPath, u64)>,
) -> Result<WatchOutcome, PushError> {
    let paths: Vec<RelPath> = watch.iter().map(|w| w.1.clone()).collect();
    let p2 = paths.clone();
    // This brick's current version of each path; none to compare with when
    // it holds split-brain siblings (those are offered as usual).
    let ours = brick
        .with_db(
            move |_, c| -> Result<Vec<Option<Option<VersionVector>>>, StoreError> {
                p2.iter()
                    .map(|p| {
                        if !Brick::siblings(c, p)?.is_empty() || !Brick::members(c, p)?.is_empty() {
                            return Ok(None);
                        }
                        Ok(Some(Brick::load(c, p)?.map(|(e, _)| e.vv)))
                    })
                    .collect()
            },
        )
        .await?;
    let req = proto::Versions {
        volume: brick.volume,
        brick: peer,
        paths,
    };
    let (mut w, mut r) = host.clone().open_stream(target).await?;
    let theirs = match tokio::time::timeout(STEP_TIMEOUT, call::over(&mut w, &mut r, req))
        .await
        .map_err(|_| PushError::Timeout)??
    {
        Ok(v) if v.len() == watch.len() => v,
        Ok(_) => return Err(PushError::Refused("unexpected answer".into())),
        Err(e) => return Err(PushError::Refused(e.to_string())),
    };
    let (mut held, mut lacking) = (Vec::new(), Vec::new());
    for (((path, _, seq), ours), theirs) in watch.into_iter().zip(ours).zip(theirs) {
        let has = match (ours, theirs) {
            // Nothing here to offer: nothing to wait for.
            (Some(None), _) => true,
            (Some(Some(ours)), Some(theirs)) => {
                matches!(theirs.compare(&ours), Relation::Equal | Relation::Dominates)
            }
            _ => false,
        };
        if has {
            held.push((path, seq));
        } else {
            lacking.push((path, seq));
        }
    }
    Ok((held, lacking))
}

/// Watched rows the peer holds, and those it lacks: `(path, seq)`.
type WatchOutcome = (Vec<(String, u64)>, Vec<(String, u64)>);

/// Splits a batch into groups pushed one after the other (see
/// [`crate::order`]): existing paths parents first, then deletions
/// children first.
async fn push_order(
    brick: &Arc<Brick>,
    work: Vec<(String, RelPath, u64)>,
) -> Vec<Vec<(String, RelPath, u64)>> {
    let paths: Vec<RelPath> = work.iter().map(|w| w.1.clone()).collect();
    let kinds = brick
        .with_db(move |_, c| {
            paths
                .iter()
                .map(|p| Brick::load(c, p).ok().flatten().map(|(e, _)| e.kind))
                .collect::<Vec<_>>()
        })
        .await;
    crate::order::push_groups(work.into_iter().zip(kinds).map(|(w, k)| {
        let depth = w.1.depth();
        (w, depth, k == Some(Kind::Tombstone))
    }))
}

/// What one request to the peer carries: one path offered alone (its
/// versions, chunks streamed), or a batch of small versions.
enum Job {
    Path((String, RelPath, u64)),
    Batch(Vec<Small>),
}

/// A small version going out in a batch: its pending row (path, seq),
/// whether it counts as a heal, and the version with its content.
struct Small {
    path: String,
    seq: u64,
    heal: bool,
    entry: BatchEntry,
}

/// Splits one push group into requests: the paths whose only version is
/// small enough to travel inline go out in batches (in the group's order,
/// cut at [`MAX_BATCH_ENTRIES`] versions or [`MAX_BATCH_BYTES`] of
/// content), the others one by one. Reads the versions in one trip to the
/// database thread and the small files' content on the blocking pool; a
/// content that no longer matches its version leaves that path to the
/// single offer (which fails and retries it as before).
async fn plan_jobs(
    brick: &Arc<Brick>,
    group: Vec<(String, RelPath, u64)>,
    heal_upto: u64,
) -> Vec<Job> {
    let paths: Vec<RelPath> = group.iter().map(|g| g.1.clone()).collect();
    let found = brick
        .with_db(move |b, c| {
            paths
                .iter()
                .map(|p| inline_candidate(b, c, p).ok().flatten())
                .collect::<Vec<_>>()
        })
        .await;
    let loaded = tokio::task::spawn_blocking(move || {
        found
            .into_iter()
            .map(|f| {
                let (mut e, file) = f?;
                if let Some(file) = file {
                    let data = std::fs::read(file).ok()?;
                    if data.len() as u64 != e.entry.size
                        || blake3::hash(&data).as_bytes() != &e.entry.hash
                    {
                        return None;
                    }
                    e.content = data;
                }
                Some(e)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let mut jobs = Vec::new();
    let mut batch: Vec<Small> = Vec::new();
    let mut bytes = 0usize;
    for ((path, rel, seq), e) in group.into_iter().zip(loaded) {
        let Some(entry) = e else {
            jobs.push(Job::Path((path, rel, seq)));
            continue;
        };
        let len = entry.content.len();
        if batch.len() == MAX_BATCH_ENTRIES || bytes + len > MAX_BATCH_BYTES {
            jobs.push(Job::Batch(std::mem::take(&mut batch)));
            bytes = 0;
        }
        bytes += len;
        batch.push(Small {
            path,
            seq,
            heal: seq <= heal_upto,
            entry,
        });
    }
    if !batch.is_empty() {
        jobs.push(Job::Batch(batch));
    }
    jobs
}

/// The current version of `path` as a batch entry (content still to be
/// read from the returned file), if it can travel inline: no split-brain
/// siblings nor merged members, and a directory, link, deletion or a file smaller than the
/// smallest chunk whose content is here.
fn inline_candidate(
    b: &Brick,
    c: &mut rusqlite::Connection,
    path: &RelPath,
) -> Result<Option<(BatchEntry, Option<PathBuf>)>, StoreError> {
    let Some((entry, chunks)) = Brick::load(c, path)? else {
        return Ok(None);
    };
    if !Brick::siblings(c, path)?.is_empty() || !Brick::members(c, path)?.is_empty() {
        return Ok(None);
    }
    let file = if entry.kind == Kind::File {
        if entry.size >= u64::from(chunking::MIN_CHUNK) || chunks.len() > 1 {
            return Ok(None);
        }
        match b.content_file(c, path, &entry.hash)? {
            Some(f) => Some(f),
            None => return Ok(None),
        }
    } else {
        None
    };
    let changeset = crate::store::changeset::of(c, &entry)?;
    Ok(Some((
        BatchEntry {
            entry,
            chunks,
            changeset,
            content: Vec::new(),
        },
        file,
    )))
}

/// Outcome of one pending row: (path, seq, counted as a heal, content
/// bytes sent or why not).
type PushResult = (String, u64, bool, Result<u64, PushError>);

/// Sends one batch to brick `peer` on host `target` in one request and
/// returns each version's outcome. Heal versions are paced by
/// `cluster.heal-rate-limit` before the request goes.
async fn push_batch(
    host: &Arc<dyn Host>,
    brick: &Arc<Brick>,
    peer: u64,
    target: Uuid,
    items: Vec<Small>,
) -> Vec<PushResult> {
    let heals = items.iter().filter(|i| i.heal).count();
    let heal_bytes: u64 = items
        .iter()
        .filter(|i| i.heal)
        .map(|i| i.entry.content.len() as u64)
        .sum();
    if heals > 0 {
        brick
            .counters
            .healing
            .fetch_add(heals as u64, Ordering::Relaxed);
        let rate = heal_rate(&**host, brick);
        if rate > 0 && heal_bytes > 0 {
            crate::lifecycle::limiter(brick.id)
                .take(heal_bytes, rate)
                .await;
        }
    }
    let mut rows = Vec::with_capacity(items.len());
    let mut entries = Vec::with_capacity(items.len());
    for i in items {
        rows.push((i.path, i.seq, i.heal, i.entry.content.len() as u64));
        entries.push(i.entry);
    }
    let req = proto::OfferBatch {
        volume: brick.volume,
        brick: peer,
        from_brick: brick.id,
        entries,
    };
    let answer = async {
        let (mut w, mut r) = host.clone().open_stream(target).await?;
        tokio::time::timeout(STEP_TIMEOUT * 4, call::over(&mut w, &mut r, req))
            .await
            .map_err(|_| PushError::Timeout)?
            .map_err(PushError::from)
    }
    .await;
    if heals > 0 {
        brick
            .counters
            .healing
            .fetch_sub(heals as u64, Ordering::Relaxed);
    }
    let outcomes: Vec<Result<(), PushError>> = match answer.map(|a| call::outcomes(rows.len(), a)) {
        Ok(Ok(o)) => o
            .into_iter()
            .map(|o| match o {
                BatchOutcome::Applied { .. } => Ok(()),
                BatchOutcome::Refused { reason, .. } => Err(PushError::Refused(reason)),
            })
            .collect(),
        Ok(Err(e)) => {
            let e = e.to_string();
            rows.iter()
                .map(|_| Err(PushError::Refused(e.clone())))
                .collect()
        }
        Err(e) => {
            let e = e.to_string();
            rows.iter()
                .map(|_| Err(PushError::Link(e.clone())))
                .collect()
        }
    };
    let mut sent = 0;
    let out = rows
        .into_iter()
        .zip(outcomes)
        .map(|((path, seq, heal, bytes), o)| {
            if o.is_ok() {
                sent += bytes;
                if heal {
                    brick
                        .counters
                        .heal_streamed
                        .fetch_add(bytes, Ordering::Relaxed);
                }
            }
            (path, seq, heal, o.map(|()| bytes))
        })
        .collect();
    brick.counters.add_sent(sent);
    out
}

/// The heal rate limit of `brick`'s volume in bytes/s (0 = none).
fn heal_rate(host: &dyn Host, brick: &Brick) -> u64 {
    host.config()
        .volumes
        .iter()
        .find(|v| v.id == brick.volume)
        .and_then(|v| crate::options::parse_bytes(v.option("cluster.heal-rate-limit")))
        .unwrap_or(0)
}

/// Whether this brick still has to compare its tree with the current
/// incarnation of a peer brick (new, replaced or reset), and doing it.
#[derive(Default)]
struct FillCheck {
    /// Pool document version last found with nothing to do.
    settled: u64,
    /// Earliest next attempt after a failure.
    retry_at: Option<tokio::time::Instant>,
    failures: u32,
}

impl FillCheck {
    /// Runs the full crawl toward `peer` if its incarnation is newer than
    /// the one this brick last compared with. Returns the sequence up to
    /// which the marked rows count as heals.
    async fn run(&mut self, host: &Arc<dyn Host>, brick: &Arc<Brick>, peer: u64) -> Option<u64> {
        let cfg = host.config();
        if cfg.version == self.settled {
            return None;
        }
        if self
            .retry_at
            .is_some_and(|t| t > tokio::time::Instant::now())
        {
            return None;
        }
        let def = cfg
            .volumes
            .iter()
            .find(|v| v.id == brick.volume)
            .and_then(|v| v.brick(peer))?
            .clone();
        let done = brick
            .with_db(move |_, c| crate::lifecycle::filled_incarnation(c, peer))
            .await
            .unwrap_or(0);
        if def.incarnation <= done {
            self.settled = cfg.version;
            return None;
        }
        if def.out_of_service || !host.is_connected(def.node) {
            self.retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            return None;
        }
        let started = std::time::Instant::now();
        match crate::crawl::crawl(host, brick, peer, def.node).await {
            Ok(s) => {
                let inc = def.incarnation;
                if let Err(e) = brick
                    .with_db(move |_, c| crate::lifecycle::set_filled_incarnation(c, peer, inc))
                    .await
                {
                    tracing::warn!(brick = %brick.root.display(), "cannot record the fill of {}: {e}", def.name());
                }
                tracing::info!(
                    brick = %brick.root.display(), peer = %def.name(),
                    "new brick compared in {:.1} s: {} directories, {} paths to send",
                    started.elapsed().as_secs_f64(), s.dirs_walked, s.paths_marked
                );
                self.settled = cfg.version;
                self.retry_at = None;
                self.failures = 0;
                *brick.heal_started.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(heal_start(brick));
                Some(brick.seq())
            }
            Err(e) => {
                self.failures += 1;
                let wait = Duration::from_millis(500 << self.failures.min(5));
                if self.failures == 1 || self.failures % 10 == 0 {
                    tracing::warn!(brick = %brick.root.display(), peer = %def.name(), "comparing with the new brick failed; retrying: {e}");
                }
                self.retry_at = Some(tokio::time::Instant::now() + wait);
                None
            }
        }
    }
}

fn peer_node(host: &dyn Host, brick: &Brick, peer: u64) -> Option<Uuid> {
    let cfg = host.config();
    let v = cfg.volumes.iter().find(|v| v.id == brick.volume)?;
    v.brick(peer).map(|b| b.node)
}

/// Offers the current version of `path` (and its siblings) to brick `peer`
/// on host `target`. Returns the content bytes sent.
pub async fn push_path(
    host: &Arc<dyn Host>,
    brick: &Arc<Brick>,
    peer: u64,
    target: Uuid,
    path: &RelPath,
) -> Result<u64, PushError> {
    push_path_paced(host, brick, peer, target, path, false).await
}

/// A stored version to offer: entry, chunks, changeset.
type Version = (Entry, Vec<ChunkRef>, Option<Changeset>);

/// [`push_path`], paced by `cluster.heal-rate-limit` when `heal` is set.
async fn push_path_paced(
    host: &Arc<dyn Host>,
    brick: &Arc<Brick>,
    peer: u64,
    target: Uuid,
    path: &RelPath,
    heal: bool,
) -> Result<u64, PushError> {
    let limit = heal
        .then(|| {
            (
                crate::lifecycle::limiter(brick.id),
                heal_rate(&**host, brick),
            )
        })
        .filter(|(_, rate)| *rate > 0);
    let p = path.clone();
    // The current version carries its changeset on; siblings never do.
    // Each with the local file its content is read from (one trip to the
    // database thread for all).
    let versions = brick
        .with_db(
            move |b, c| -> Result<Vec<(Version, Option<PathBuf>)>, StoreError> {
                let mut v = Vec::new();
                let members = Brick::members(c, &p)?;
                if members.is_empty() {
                    if let Some((e, ch)) = Brick::load(c, &p)? {
                        let tag = crate::store::changeset::of(c, &e)?;
                        v.push((e, ch, tag));
                    }
                    v.extend(
                        Brick::siblings(c, &p)?
                            .into_iter()
                            .map(|(e, ch)| (e, ch, None)),
                    );
                } else {
                    // What the path shows merges several versions: each
                    // travels as it was written (see `store::reconcile`).
                    for (e, ch) in members {
                        let tag = crate::store::changeset::of(c, &e)?;
                        v.push((e, ch, tag));
                    }
                }
                let mut v: Vec<(Version, Option<PathBuf>)> = v
                    .into_iter()
                    .map(|(e, ch, tag)| {
                        let file = if e.kind == Kind::File {
                            b.content_file(c, &p, &e.hash)?
                        } else {
                            None
                        };
                        Ok(((e, ch, tag), file))
                    })
                    .collect::<Result<_, StoreError>>()?;
                // Versions whose content is here go first: a member whose
                // content this brick no longer holds is superseded by one
                // of them, and a receiver that has those never needs it.
                v.sort_by_key(|((e, _, _), file)| e.kind == Kind::File && file.is_none());
                Ok(v)
            },
        )
        .await?;
    let mut sent = 0;
    for ((entry, chunks, changeset), file) in versions {
        let offer = Offer {
            volume: brick.volume,
            brick: peer,
            entry,
            chunks: chunks.clone(),
            write: None,
            from_brick: Some(brick.id),
        };
        let (mut w, mut r) = host.clone().open_stream(target).await?;
        let (resp, n) = send_offer_paced(
            &mut w,
            &mut r,
            (&offer, changeset),
            file.as_deref(),
            &chunks,
            heal.then(|| Pace {
                limit: limit.as_ref().map(|(l, rate)| (l.as_ref(), *rate)),
                streamed: &brick.counters.heal_streamed,
            }),
        )
        .await?;
        brick.counters.add_sent(n);
        sent += n;
        match resp {
            Response::Applied { .. } => {}
            Response::Error { reason, .. } => return Err(PushError::Refused(reason)),
            _ => return Err(PushError::Refused("unexpected answer".into())),
        }
    }
    Ok(sent)
}

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the sender side of an offer on a stream: request (with the
/// version's changeset, if any), the chunks the receiver needs (read from
/// `file`), and the final answer. Returns the answer and the content bytes
/// sent.
pub async fn send_offer<W, R>(
    w: &mut W,
    r: &mut R,
    offer: (&Offer, Option<Changeset>),
    file: Option<&std::path::Path>,
    chunks: &[ChunkRef],
) -> Result<(Response, u64), PushError>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    send_offer_paced(w, r, offer, file, chunks, None).await
}

/// How a heal's chunks are sent: at most at the heal rate limit, and
/// counted as they go.
struct Pace<'a> {
    /// The limiter and its rate in bytes/s, if one is set.
    limit: Option<(&'a crate::lifecycle::RateLimit, u64)>,
    /// Bytes sent so far.
    streamed: &'a std::sync::atomic::AtomicU64,
}

/// [`send_offer`], paced and counted by `pace` chunk by chunk.
async fn send_offer_paced<W, R>(
    w: &mut W,
    r: &mut R,
    (offer, changeset): (&Offer, Option<Changeset>),
    file: Option<&std::path::Path>,
    chunks: &[ChunkRef],
    pace: Option<Pace<'_>>,
) -> Result<(Response, u64), PushError>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    let req = match changeset {
        Some(changeset) => Request::OfferInSet(proto::OfferInSet {
            offer: offer.clone(),
            changeset,
        }),
        None => Request::Offer(offer.clone()),
    };
    frame::write_msg(w, &req).await?;
    w.flush().await.map_err(FrameError::Io)?;
    let first: Response = tokio::time::timeout(STEP_TIMEOUT, frame::read_msg(r))
        .await
        .map_err(|_| PushError::Timeout)??;
    let need = match first {
        Response::Need(n) => n,
        other => {
            let _ = w.shutdown().await;
            return Ok((other, 0));
        }
    };
    let mut sent = 0u64;
    if !need.is_empty() {
        let Some(path) = file else {
            return Err(PushError::Refused("content not available locally".into()));
        };
        let mut f =
            std::fs::File::open(path).map_err(|e| StoreError::io("open", path.display(), e))?;
        let offsets = chunking::offsets(chunks);
        let half = need.len() / 2;
        for (k, i) in need.into_iter().enumerate() {
            if k == half && half > 0 && offer.write.is_none() {
                crate::failpoint::hit("replicate-mid-send");
            }
            let Some(c) = chunks.get(i as usize) else {
                return Err(PushError::Refused("chunk index out of range".into()));
            };
            if let Some((limit, rate)) = pace.as_ref().and_then(|p| p.limit) {
                limit.take(u64::from(c.len), rate).await;
            }
            let data = chunking::read_verified(&mut f, offsets[i as usize], c.len, &c.hash)
                .map_err(|e| StoreError::io("read", path.display(), e))?;
            tokio::time::timeout(STEP_TIMEOUT, frame::write_raw(w, &data))
                .await
                .map_err(|_| PushError::Timeout)??;
            sent += data.len() as u64;
            if let Some(p) = &pace {
                p.streamed.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = w.shutdown().await;
    let last: Response = tokio::time::timeout(STEP_TIMEOUT * 4, frame::read_msg(r))
        .await
        .map_err(|_| PushError::Timeout)??;
    Ok((last, sent))
}

/// The mark a heal's rate and ETA are measured from: now, and the heal
/// counters (entries, bytes) so far.
fn heal_start(brick: &Brick) -> crate::store::HealMark {
    let c = brick.counters();
    crate::store::HealMark {
        at: std::time::Instant::now(),
        heals: c.heals,
        heal_bytes: c.heal_bytes,
        streamed: brick.counters.heal_streamed.load(Ordering::Relaxed),
    }
}

//! The outage recorder: after a partition an operator wants to know what
//! happened while bricks could not reach each other, not only what is
//! still wrong. A recorder task per brick opens and closes periods in the
//! brick's outage history (`store::outages`) as each peer brick's host
//! disconnects and reconnects, and copies the paths this side changes
//! meanwhile as they appear; the replicator copies them once more before
//! it replays them, so no change made during the outage is missed however
//! quickly the link returns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::host::{Host, TaskHandle};
use crate::store::outages::{close, collect, now_secs, open, open_peers};
use crate::store::Brick;

/// A peer must stay unreachable this long to open a period (a blip of the
/// link is not an outage).
const SETTLE: Duration = Duration::from_secs(1);
/// After a start, peers are given this long to connect before their
/// absence counts.
const START_GRACE: Duration = Duration::from_secs(5);
/// The longest the recorder sleeps without a change to look at (a
/// backstop: connects, disconnects, document changes and, during an
/// outage, the brick's own commits wake it at once).
const BACKSTOP: Duration = Duration::from_secs(30);
/// The shortest time between two looks (a burst of commits during an
/// outage is copied in a few looks, not one per commit).
const MIN_GAP: Duration = Duration::from_millis(250);

/// Starts the recorder of `brick`, stopped with `token`.
pub fn spawn(host: &Arc<dyn Host>, brick: &Arc<Brick>, token: &CancellationToken) -> TaskHandle {
    let (n, b) = (host.clone(), brick.clone());
    host.spawn_supervised("outage recorder", token, move |stop| {
        let (n, b) = (n.clone(), b.clone());
        async move { stop.run_until_cancelled(recorder(n, b)).await.unwrap_or(()) }
    })
}

async fn recorder(host: Arc<dyn Host>, brick: Arc<Brick>) {
    let started = Instant::now();
    // Periods left open by an earlier run go on (a restart during an
    // outage); they close when the peer is seen again.
    let mut away: Away = brick
        .with_db(|_, c| open_peers(c))
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p, ()))
        .collect();
    // When a peer was first seen unreachable, and the sequence at the last
    // look that found it reachable (changes after it may not have reached
    // the peer: those still pending belong to the outage).
    let mut down: Down = HashMap::new();
    let mut seen_at: HashMap<u64, u64> = HashMap::new();
    let mut changes = host.changes();
    let mut seq = brick.subscribe();
    loop {
        // Seen before looking, so a change during the look wakes the wait.
        changes.borrow_and_update();
        seq.borrow_and_update();
        look(&*host, &brick, started, &mut away, &mut down, &mut seen_at).await;
        // Until the next thing that can change the answer: a connection or
        // the document; while away, a commit to copy; a peer's settle time
        // or the start grace running out.
        let now = Instant::now();
        let deadline = down
            .values()
            .map(|(since, _, _)| (*since + SETTLE).max(started + START_GRACE))
            .filter(|at| *at > now)
            .min()
            .map_or(BACKSTOP, |at| at - now)
            .min(BACKSTOP);
        let away_now = !away.is_empty();
        tokio::select! {
            _ = changes.changed() => {}
            _ = seq.changed(), if away_now => {}
            _ = tokio::time::sleep(deadline) => {}
        }
        tokio::time::sleep_until((now + MIN_GAP).into()).await;
    }
}

/// Peers being recorded as away.
type Away = HashMap<u64, ()>;
/// Per peer seen unreachable: since when (monotonic), since when (wall
/// clock, seconds), and the sequence at the last look that found it
/// reachable.
type Down = HashMap<u64, (Instant, u64, u64)>;

/// One look at the peers: opens, extends and closes outage periods.
async fn look(
    host: &dyn Host,
    brick: &Arc<Brick>,
    started: Instant,
    away: &mut Away,
    down: &mut Down,
    seen_at: &mut HashMap<u64, u64>,
) {
    {
        let cfg = host.config();
        let Some(v) = cfg.volumes.iter().find(|v| v.id == brick.volume) else {
            return;
        };
        for &peer in &brick.peers() {
            let Some(def) = v.brick(peer) else { continue };
            let reachable = host.is_connected(def.node);
            if reachable {
                down.remove(&peer);
                seen_at.insert(peer, brick.seq());
                if away.remove(&peer).is_some() {
                    // What this side changed was copied while the peer was
                    // away, and is copied once more by the replicator
                    // before its replay; copying now would take in what
                    // the other side sends back.
                    let end = now_secs();
                    let r = brick.with_db(move |_, c| close(c, peer, end)).await;
                    if let Err(e) = r {
                        tracing::warn!(brick = %brick.root.display(), "outage history: {e}");
                    }
                    tracing::info!(brick = %brick.root.display(), peer = %def.name(), "peer brick reachable again; outage recorded");
                }
                continue;
            }
            if away.contains_key(&peer) {
                let nodes = brick_nodes(v);
                if let Err(e) = brick.with_db(move |_, c| collect(c, peer, &nodes)).await {
                    tracing::warn!(brick = %brick.root.display(), "outage history: {e}");
                }
                continue;
            }
            let seq_then = seen_at.get(&peer).copied().unwrap_or_else(|| brick.seq());
            let (since, start, seq0) = *down
                .entry(peer)
                .or_insert_with(|| (Instant::now(), now_secs(), seq_then));
            if since.elapsed() < SETTLE || started.elapsed() < START_GRACE {
                continue;
            }
            match brick.with_db(move |_, c| open(c, peer, start, seq0)).await {
                Ok(_) => {
                    away.insert(peer, ());
                    tracing::warn!(brick = %brick.root.display(), peer = %def.name(), "peer brick unreachable; recording the outage");
                }
                Err(e) => tracing::warn!(brick = %brick.root.display(), "outage history: {e}"),
            }
        }
    }
}

/// The host of each brick of `v`.
pub fn brick_nodes(v: &crate::pool::Volume) -> HashMap<u64, Uuid> {
    v.bricks.iter().map(|b| (b.id, b.node)).collect()
}

//! Big files in flight beside the agent's loop: offers of local files too
//! big to travel in a batch (a push round starts them and ends without
//! waiting), and fetches of big files the feed brought on their own (the
//! sets behind them go live meanwhile). A transfer of seconds no longer
//! holds up the small changes written after it, on either side.
//!
//! What keeps the order safe is in the agent: a path in flight here, or
//! one above or below it, waits for a later push round (a directory's
//! deletion never overtakes the file inside it), and the loop lets the
//! transfers finish before it applies anything of the volume about such a
//! path (the echo of a push must find the push recorded; versions of one
//! path go live in order). A changeset with members among the offers is
//! counted here until the last of them ends.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use gsync_brick::store::types::Entry;
use gsync_brick::wire::proto;
use gsync_brick::RelPath;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::mount::Mount;
use crate::remote::RemoteError;
use crate::sync;

/// Tasks in flight, each about one path, with what each was started for:
/// the bookkeeping offers and fetches share.
struct InFlight<T, K> {
    tasks: JoinSet<Result<T, RemoteError>>,
    running: HashMap<tokio::task::Id, (RelPath, K)>,
    /// Their paths (as strings: the range of a folder's contents is
    /// `folder/..`).
    paths: BTreeSet<String>,
}

impl<T: Send + 'static, K> InFlight<T, K> {
    fn new() -> Self {
        Self {
            tasks: JoinSet::new(),
            running: HashMap::new(),
            paths: BTreeSet::new(),
        }
    }

    fn spawn(
        &mut self,
        path: RelPath,
        key: K,
        task: impl std::future::Future<Output = Result<T, RemoteError>> + Send + 'static,
    ) {
        self.paths.insert(path.as_str().to_string());
        let id = self.tasks.spawn(task).id();
        self.running.insert(id, (path, key));
    }

    /// True if `rel` is in flight, or lies above or below a path that is.
    fn holds_up(&self, rel: &RelPath) -> bool {
        if self.paths.is_empty() {
            return false;
        }
        // Paths below `rel` sort together, right from `rel/`.
        let below = format!("{}/", rel.as_str());
        if self
            .paths
            .range(below.clone()..)
            .next()
            .is_some_and(|p| p.starts_with(&below))
        {
            return true;
        }
        let mut up = Some(rel.clone());
        while let Some(p) = up {
            if self.paths.contains(p.as_str()) {
                return true;
            }
            up = p.parent();
        }
        false
    }

    /// The next task to end (`what` names it in the error of one that
    /// panicked); `None` at once if none runs.
    async fn next(&mut self, what: &str) -> Option<(RelPath, K, Result<T, RemoteError>)> {
        let (id, result) = match self.tasks.join_next_with_id().await? {
            Ok((id, r)) => (id, r),
            Err(e) => (
                e.id(),
                Err(RemoteError::Local(format!("{what} ended abnormally: {e}"))),
            ),
        };
        let (path, key) = self.running.remove(&id)?;
        self.paths.remove(path.as_str());
        Some((path, key, result))
    }
}

/// One offer of the lane, ended.
pub(crate) struct Done {
    pub(crate) path: RelPath,
    pub(crate) result: Result<(), RemoteError>,
    /// Its changeset, once every member of it in the lane ended: how many
    /// members went out of how many (see `Gate::sent_short`).
    pub(crate) set_done: Option<(proto::Changeset, u32)>,
}

/// A changeset with members in the lane.
struct SetCount {
    cs: proto::Changeset,
    /// Members that went out (in the round and in the lane so far).
    sent: u32,
    /// Members still in the lane.
    running: u32,
}

pub(crate) struct Lane {
    /// Each offer with its changeset's id.
    flight: InFlight<(), Option<u64>>,
    sets: HashMap<u64, SetCount>,
    /// Offers sending at once (the others wait their turn).
    permits: Arc<Semaphore>,
}

impl Lane {
    pub(crate) fn new(concurrency: usize) -> Self {
        Self {
            flight: InFlight::new(),
            sets: HashMap::new(),
            permits: Arc::new(Semaphore::new(concurrency)),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.flight.tasks.is_empty()
    }

    /// Offers running or waiting their turn.
    pub(crate) fn len(&self) -> usize {
        self.flight.tasks.len()
    }

    /// True if `rel` must wait for an offer in the lane: it is in the lane,
    /// or lies above or below a path that is.
    pub(crate) fn holds_up(&self, rel: &RelPath) -> bool {
        self.flight.holds_up(rel)
    }

    /// Starts offering `r` as a member of `changeset`.
    pub(crate) fn start(
        &mut self,
        mount: &Arc<Mount>,
        r: sync::Ready,
        changeset: Option<proto::Changeset>,
    ) {
        let path = r.path().clone();
        if let Some(cs) = changeset {
            self.sets
                .entry(cs.id)
                .or_insert(SetCount {
                    cs,
                    sent: 0,
                    running: 0,
                })
                .running += 1;
        }
        let (m, permits) = (mount.clone(), self.permits.clone());
        self.flight
            .spawn(path, changeset.map(|c| c.id), async move {
                let Ok(_turn) = permits.acquire_owned().await else {
                    return Err(RemoteError::Unreachable("stopping".into()));
                };
                // Test builds: a big transfer made long, to see what overtakes it.
                gsync_brick::failpoint::delay(
                    "agent-slow-offer",
                    std::time::Duration::from_secs(20),
                )
                .await;
                sync::send(&m, r, changeset).await
            });
    }

    /// Members of `cs` the round itself sent; returns the changeset's count
    /// if none of its members is left in the lane (or it has none there).
    pub(crate) fn round_sent(&mut self, cs: proto::Changeset, sent: u32) -> Option<u32> {
        match self.sets.get_mut(&cs.id) {
            Some(s) => {
                s.sent += sent;
                None
            }
            None => Some(sent),
        }
    }

    /// The next offer to end; `None` at once if none runs.
    pub(crate) async fn next(&mut self) -> Option<Done> {
        // A panicked offer fails: its path is pushed again by a later round.
        let (path, set, result) = self.flight.next("offer").await?;
        let mut set_done = None;
        if let Some(id) = set {
            if let Some(s) = self.sets.get_mut(&id) {
                s.running = s.running.saturating_sub(1);
                if result.is_ok() {
                    s.sent += 1;
                }
                if s.running == 0 {
                    set_done = Some((s.cs, s.sent));
                    self.sets.remove(&id);
                }
            }
        }
        Some(Done {
            path,
            result,
            set_done,
        })
    }
}

/// Files of at least this size, changed on their own (no changeset),
/// are fetched beside the loop (see [`Fetches`]).
pub(crate) const FETCH_BESIDE: u64 = 1 << 20;

/// A remote version fetched beside the loop, ended.
pub(crate) struct Fetched {
    pub(crate) path: RelPath,
    /// The staged version (settled: durable, its intent in the journal),
    /// `None` if nothing changes in the folder.
    pub(crate) result: Result<Option<sync::Staged>, RemoteError>,
}

/// Big files the feed brought on their own, fetched and staged beside the
/// agent's loop: the changes behind one in the feed (small files written
/// after it) go live without waiting for its seconds of transfer. It goes
/// live (the rename, quick) in the loop when its fetch ends; the journal's
/// cursor stays below it until then, and what is about its path waits.
pub(crate) struct Fetches {
    /// Each fetch with its feed sequence.
    flight: InFlight<Option<sync::Staged>, u64>,
}

impl Fetches {
    pub(crate) fn new() -> Self {
        Self {
            flight: InFlight::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.flight.tasks.is_empty()
    }

    /// Fetches running.
    pub(crate) fn len(&self) -> usize {
        self.flight.tasks.len()
    }

    /// True if `rel` must wait for a fetch: it is fetched, or lies above or
    /// below a path that is.
    pub(crate) fn holds_up(&self, rel: &RelPath) -> bool {
        self.flight.holds_up(rel)
    }

    /// The lowest feed sequence fetched (the cursor stays below it).
    pub(crate) fn min_seq(&self) -> Option<u64> {
        self.flight.running.values().map(|(_, s)| *s).min()
    }

    /// Starts deciding, fetching and staging version `e` (feed sequence
    /// `seq`) of a path whose journal record is read first.
    pub(crate) fn start(&mut self, mount: &Arc<Mount>, seq: u64, e: Entry) {
        let m = mount.clone();
        self.flight.spawn(e.path.clone(), seq, async move {
            let j = m
                .journal
                .get_async(e.path.as_str())
                .await
                .map_err(|e| RemoteError::Local(e.to_string()))?;
            let p = match sync::prepare_known(&m, e, j).await? {
                sync::Prep::Nothing => return Ok(None),
                sync::Prep::Place(p) => p,
            };
            let Some(staged) = sync::stage(&m, *p).await? else {
                return Ok(None);
            };
            sync::settle_staged(&m, std::slice::from_ref(&staged)).await?;
            Ok(Some(staged))
        });
    }

    /// The next fetch to end; `None` at once if none runs.
    pub(crate) async fn next(&mut self) -> Option<Fetched> {
        let (path, _, result) = self.flight.next("fetch").await?;
        Some(Fetched { path, result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane_with(paths: &[&str]) -> Lane {
        let mut l = Lane::new(1);
        l.flight.paths = paths.iter().map(|p| p.to_string()).collect();
        l
    }

    #[test]
    fn what_an_offer_in_the_lane_holds_up() {
        let l = lane_with(&["d/big.bin", "d-x", "top.bin"]);
        let held = |p: &str| l.holds_up(&RelPath::new(p).unwrap());
        // The path itself, the folders above it ("d-x", which sorts
        // between "d" and "d/...", does not hide "d/big.bin").
        assert!(held("d/big.bin"));
        assert!(held("d"));
        assert!(held("top.bin"));
        assert!(held("d-x"));
        // Paths below an offered one (a file replaced by a folder).
        assert!(held("top.bin/inner"));
        // Siblings and look-alike names are free.
        assert!(!held("d/small.txt"));
        assert!(!held("dd"));
        assert!(!held("top"));
        assert!(!held("e/f"));
        assert!(!lane_with(&[]).holds_up(&RelPath::new("d").unwrap()));
    }
}

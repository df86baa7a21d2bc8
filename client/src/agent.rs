//! The sync agent of one mount: one task that owns the journal and
//! serialises everything that touches it (the offers of big files it
//! starts run beside it, in its `lane`, and it settles them as they end).
//!
//! ```text
//!  notify ──paths──┐
//!  start-up scan ──┼─> dirty set ──(debounce)──> push to brick (with base)
//!                                                  └─ big files ─> lane
//!  feed task ──batches──> apply remote changes (temp + rename) ──> on-change
//! ```
//!
//! The agent follows the node's own brick when it has one, else the brick
//! on the mount's host, else any reachable brick (failover), and goes back
//! when the preferred one returns.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gsync_brick::node::Node;
use gsync_brick::pool::VolumeState;
use gsync_brick::store::files;
use gsync_brick::store::types::{Entry, Kind};
use gsync_brick::wire::proto::{self, code, Offer};
use gsync_brick::wire::vv::VersionVector;
use gsync_brick::RelPath;
use tokio_util::sync::CancellationToken;

use crate::guard::{self, Root, Verdict};
use crate::journal::{Journal, Record};
use crate::local::{self, Found, Ignore};
use crate::mount::Mount;
use crate::remote::{self, Batch, FeedEvent, RemoteError, Target};
use crate::spec::{MountSpec, Prefer};
use crate::sync;

/// What `gsync mount` (list) shows about an agent.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Following a brick now.
    pub online: bool,
    /// The brick followed.
    pub brick: Option<String>,
    /// Local changes not yet accepted.
    pub pending: u64,
    /// Paths in split-brain.
    pub split_brain: u64,
    /// First sync done and nothing pending.
    pub in_sync: bool,
    /// Why pushes are held back.
    pub held: Option<String>,
    /// Remote entries applied so far (progress of a first sync).
    pub applied: u64,
    /// Last error.
    pub error: Option<String>,
    /// Why the followed brick does not answer (or refuses), while it does
    /// not.
    pub feed_error: Option<String>,
    /// The feed of the followed brick has reached its current sequence
    /// since the agent started following it.
    pub caught_up: bool,
    /// Comparing every path with a brick that is not the incarnation the
    /// journal followed (why).
    pub resync: Option<String>,
    /// Why no brick is followed (or the folder cannot be synced), while so.
    pub offline: Option<String>,
    /// The first sync of the folder is done.
    pub attached: bool,
    /// Deletions held by the mass-delete guard.
    pub held_deletes: u64,
    /// Why they are held.
    pub held_deletes_why: Option<String>,
    /// The volume and replica id of the brick followed.
    pub brick_id: Option<(uuid::Uuid, u64)>,
    /// Set by the host when the brick followed is on this node and holds
    /// changes that peer bricks it cannot reach lack: (changes, bricks).
    pub unreplicated: Option<(u64, usize)>,
    /// Incoming changesets held back while members are missing.
    pub waiting: u64,
    /// Big files of the volume being fetched beside the loop.
    pub receiving: u64,
    /// The last changeset the validator rejected and why (`changeset N
    /// (validator exit 1: ...)`), while its changes are not live.
    pub rejected: Option<String>,
    /// The paths of rejected changes not live yet.
    pub rejected_paths: Vec<String>,
}

/// What `gsync accept-deletes` / `revert-deletes` did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct DeletesOutcome {
    /// The mount folder.
    pub dir: String,
    /// Deletions accepted (to be pushed now) or files put back.
    pub deletions: u64,
    /// Held paths that could not be put back (still held), with why.
    pub failed: Vec<String>,
}

/// A request from the CLI to a running agent.
pub(crate) enum Cmd {
    /// Push the held deletions.
    Accept(tokio::sync::oneshot::Sender<Result<DeletesOutcome, String>>),
    /// Put the held files back from the volume.
    Revert(tokio::sync::oneshot::Sender<Result<DeletesOutcome, String>>),
}

/// When to walk a new directory a second time.
const REWALK_AFTER: Duration = Duration::from_millis(500);
/// The shortest time between two comparisons of the whole folder with the
/// journal while the watcher reports changes (a safety net for events it
/// lost; an overflow rescans at once). Grown with the scan's cost.
const FULL_SCAN_EVERY: Duration = Duration::from_secs(60);
/// A full scan costs at most 1/this of the agent's time.
const SCAN_COST_FACTOR: u32 = 1000;
/// The longest between two full scans.
const FULL_SCAN_MAX: Duration = Duration::from_secs(3600);
/// The longest an idle agent sleeps (a backstop: events, the feed, commands
/// and connection or document changes wake it at once).
const IDLE_WAKE: Duration = Duration::from_secs(5);

/// Pushes in flight at once.
const PUSH_CONCURRENCY: usize = 64;

/// How long a stopping agent lets the offers of its lane finish.
const LANE_DRAIN_ON_STOP: Duration = Duration::from_secs(10);

/// Batches of small changes in flight at once (see `sync::send_batch`).
const BATCH_CONCURRENCY: usize = 4;

/// Debounce for local events: the default changeset window.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// Under a continuous stream of local events, a push round (a changeset)
/// is cut after this many settle windows.
const SETTLE_CUT: u32 = 10;

/// Longest a file open for writing waits for its close before what it
/// holds is pushed anyway (and again, while it stays open and written to).
const OPEN_WRITE_WAIT: Duration = Duration::from_secs(10);

/// Whether `auth.allow` of `v` lets the node named `me` mount it; if not,
/// the line that says so.
pub(crate) fn allowed(v: &gsync_brick::pool::Volume, me: &str) -> Result<(), String> {
    let allow = v.option("auth.allow");
    if allow == "*" || allow.split(',').any(|h| h.trim() == me) {
        return Ok(());
    }
    Err(format!(
        "{me} is not allowed to mount {} (auth.allow)",
        v.name
    ))
}

pub(crate) struct Agent {
    /// What the executor (`sync`) works on: the folder, its journal, the
    /// brick followed, and the notes it leaves for this loop.
    pub(crate) mount: Arc<Mount>,
    pub(crate) status: Arc<Mutex<Status>>,
    pub(crate) dirty: BTreeSet<RelPath>,
    pub(crate) attached: bool,
    /// New directories to walk again, and when.
    rewalk: Vec<(Instant, PathBuf)>,
    /// Cancelled when the agent is told to stop (umount, shutdown): a
    /// push round in progress sends nothing more and the agent ends; what
    /// it did not send is found again by the next start's scan (the
    /// journal records a change only once its brick acknowledged it).
    stop: CancellationToken,
    /// Files written to and not closed since (by the watcher's events),
    /// with when the first such write was seen: a file still being written
    /// is not pushed (other mounts would show it half-written) until it is
    /// closed, or for at most [`OPEN_WRITE_WAIT`] at a time (a log kept
    /// open forever is still synced).
    writing: HashMap<RelPath, Instant>,
    /// The last push failure of each failing path: a failure repeated on
    /// every retry is logged once, not twice a second.
    failures: HashMap<RelPath, String>,
    /// Bricks whose node answered that it does not serve them (a wiped
    /// brick without its marker), and when: not followed for a while.
    unserved: HashMap<u64, Instant>,
    /// Deletions held by the mass-delete guard (mirrors the journal).
    held: BTreeSet<RelPath>,
    /// Deletions the user accepted: pushed without asking the guard.
    accepted: BTreeSet<RelPath>,
    /// Deletions pushed within the guard's window.
    recent: guard::Recent,
    /// Deletions seen by the last push round that deferred them: a burst
    /// is judged once it stops growing.
    last_gone: usize,
    /// While the feed lists a brick from the beginning (a first attach, a
    /// new incarnation, another brick after failover): every path listed
    /// so far. Once caught up, what the journal holds and the brick did not
    /// list was lost by the brick (acknowledged, then wiped before it
    /// replicated) and is pushed again.
    listing: Option<BTreeSet<String>>,
    /// Synced paths the brick followed did not list, that no brick was
    /// known to hold when last asked: offered again until a brick has
    /// them (or the folder changed them), never forgotten on a failure.
    lost: BTreeSet<String>,
    /// Paths the current listing showed in a version older than the one
    /// the journal synced (an edit or a deletion the brick lacks).
    listed_older: BTreeSet<String>,
    /// When `lost` is looked at again.
    lost_retry: Instant,
    /// Paths queued for a push when the agent last stopped that are gone
    /// from the folder and from the journal: a push of them may have been
    /// acknowledged by the brick just before the stop, unrecorded. See
    /// [`Self::adopt_unrecorded_pushes`].
    unrecorded: Vec<RelPath>,
    /// Of those, paths no brick reachable at the restart knew in a version
    /// of ours while some brick could not be asked: if one of them later
    /// brings our own version (the brick that acknowledged it is back), it
    /// is recognised as ours and its deletion pushed, never applied as a
    /// remote creation.
    unrecorded_unsure: BTreeSet<RelPath>,
    /// Incoming changes held until their changeset is complete.
    gate: crate::changeset::Gate,
    /// Changes the validator rejected, not live: validated again with the
    /// next changeset. Kept in the journal too, so a restarted agent still
    /// reports them and keeps them out of the folder.
    rejected: Option<Rejected>,
    /// With `--validate`, the first sync's versions, held until the brick's
    /// feed is caught up, then validated and made live as one changeset.
    first: std::collections::BTreeMap<RelPath, (u64, Entry)>,
    /// Offers of big files in flight beside the loop (see `lane`).
    lane: crate::lane::Lane,
    /// Big files of the feed fetched beside the loop (see `lane`).
    fetches: crate::lane::Fetches,
    /// An apply failed: the feed is fetched again from the cursor.
    refetch: bool,
}

/// A changeset the validator rejected.
struct Rejected {
    /// Its name in reports.
    name: String,
    /// `changeset N (why)`, as the state shows it.
    line: String,
    /// The paths it would have changed in the folder.
    paths: Vec<String>,
    /// Its versions (and those of earlier rejected ones).
    entries: std::collections::BTreeMap<RelPath, (u64, Entry)>,
}

impl Rejected {
    /// The rejection the journal kept, less the versions that are live or
    /// superseded in the folder since (a later changeset went live just
    /// before the agent stopped); `None` if nothing is left of it.
    fn load(journal: &Journal) -> Option<Self> {
        let r = match journal.rejected() {
            Ok(r) => r?,
            Err(e) => {
                tracing::warn!("{e}");
                return None;
            }
        };
        let mut entries = std::collections::BTreeMap::new();
        let mut paths = Vec::new();
        for (seq, e, listed) in r.entries {
            let synced = journal
                .get(e.path.as_str())
                .ok()
                .flatten()
                .is_some_and(|j| {
                    matches!(
                        e.vv.compare(&j.entry.vv),
                        gsync_brick::wire::vv::Relation::DominatedBy
                            | gsync_brick::wire::vv::Relation::Equal
                    )
                });
            if synced {
                continue;
            }
            if listed {
                paths.push(e.path.as_str().to_string());
            }
            entries.insert(e.path.clone(), (seq, e));
        }
        if entries.is_empty() {
            let _ = journal.clear_rejected();
            return None;
        }
        Some(Self {
            name: r.name,
            line: r.line,
            paths,
            entries,
        })
    }

    /// Stores it in the journal.
    fn save(&self, journal: &Journal) -> Result<(), crate::journal::JournalError> {
        journal.set_rejected(&crate::journal::Rejection {
            name: self.name.clone(),
            line: self.line.clone(),
            entries: self
                .entries
                .iter()
                .map(|(p, (seq, e))| (*seq, e.clone(), self.paths.iter().any(|x| x == p.as_str())))
                .collect(),
        })
    }
}

/// What went wrong in a push round.
#[derive(Default)]
struct Outcome {
    /// Pushes are held (no quorum), with why.
    held: Option<String>,
    /// The last failure.
    failed: Option<String>,
    /// The round stopped (brick unreachable, no quorum).
    stop: bool,
}

/// How often paths lost with a brick are looked at again while some brick
/// could not tell whether it holds them, or an offer failed.
const LOST_RETRY: Duration = Duration::from_secs(3);

/// How long a brick that answered "not served here" is passed over before
/// it is tried again.
const UNSERVED_RETRY: Duration = Duration::from_secs(10);

struct Feed {
    target: Target,
    rx: tokio::sync::mpsc::Receiver<FeedEvent>,
    token: CancellationToken,
}

impl Agent {
    pub(crate) fn new(
        node: Arc<Node>,
        spec: MountSpec,
        journal: Journal,
        status: Arc<Mutex<Status>>,
    ) -> Self {
        let ignore = Ignore::load(&if spec.atomic {
            crate::atomic::work(&spec.dir)
        } else {
            spec.dir.clone()
        });
        let attached = journal.kv("attached").ok().flatten() == Some(1);
        let held: BTreeSet<RelPath> = journal
            .held()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| RelPath::new(p).ok())
            .collect();
        let rejected = Rejected::load(&journal);
        if let Some(r) = &rejected {
            tracing::warn!(mount = %spec.dir.display(), "rejected: {}; its changes stay out of the folder until a later changeset is accepted", r.line);
            let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
            s.rejected = Some(r.line.clone());
            s.rejected_paths = r.paths.clone();
        }
        Self {
            mount: Arc::new(Mount::new(node, spec, journal, ignore)),
            status,
            dirty: BTreeSet::new(),
            attached,
            rewalk: Vec::new(),
            stop: CancellationToken::new(),
            writing: HashMap::new(),
            failures: HashMap::new(),
            unserved: HashMap::new(),
            held,
            accepted: BTreeSet::new(),
            recent: guard::Recent::default(),
            last_gone: 0,
            listing: None,
            gate: crate::changeset::Gate::default(),
            rejected,
            first: std::collections::BTreeMap::new(),
            lost: BTreeSet::new(),
            listed_older: BTreeSet::new(),
            lost_retry: Instant::now(),
            unrecorded: Vec::new(),
            unrecorded_unsure: BTreeSet::new(),
            lane: crate::lane::Lane::new(PUSH_CONCURRENCY),
            fetches: crate::lane::Fetches::new(),
            refetch: false,
        }
    }

    /// The window in which local changes form one changeset.
    fn settle(&self) -> Duration {
        self.mount
            .spec
            .settle_ms
            .map_or(DEBOUNCE, Duration::from_millis)
            .max(DEBOUNCE)
    }

    /// An atomic mount shows the working tree as a new generation.
    fn publish(&self) {
        if !self.mount.spec.atomic {
            return;
        }
        match crate::atomic::publish(&self.mount.spec.dir) {
            Ok(n) => tracing::debug!(mount = %self.mount.spec.dir.display(), "generation {n} live"),
            Err(e) => self.set_error(format!("cannot make a new generation: {e}")),
        }
    }

    /// The brick to follow: own node's, the mount host's, then any; or
    /// why there is none.
    fn pick_target(&self) -> Result<Target, String> {
        if !self.mount.root().is_dir() {
            return Err(format!(
                "{} no longer exists; create it again, or gsync umount it",
                self.mount.spec.dir.display()
            ));
        }
        let cfg = self.mount.node.config();
        let Some(v) = cfg.volume(&self.mount.spec.volume) else {
            return Err(format!("volume {} does not exist", self.mount.spec.volume));
        };
        if v.state != VolumeState::Started {
            return Err(format!("volume {} is not started", self.mount.spec.volume));
        }
        // auth.allow holds for the whole life of a mount, not only when it
        // attaches: a node it excludes stops following (and pushing).
        allowed(v, &self.mount.node.me.hostname)?;
        let host_node = cfg.member_by_host(&self.mount.spec.host).map(|m| m.uuid);
        let mut order: Vec<&gsync_brick::pool::BrickDef> = Vec::new();
        order.extend(
            v.bricks
                .iter()
                .filter(|b| b.node == self.mount.node.me.uuid),
        );
        order.extend(v.bricks.iter().filter(|b| Some(b.node) == host_node));
        order.extend(v.bricks.iter());
        let found = order.into_iter().find_map(|b| {
            let up = if b.node == self.mount.node.me.uuid {
                self.mount.node.bricks.get(b.id).is_some()
            } else {
                self.mount.node.is_connected(b.node)
                    && self
                        .unserved
                        .get(&b.id)
                        .is_none_or(|at| at.elapsed() >= UNSERVED_RETRY)
            };
            up.then(|| Target {
                volume: v.id,
                brick: b.id,
                node: b.node,
                name: b.name(),
            })
        });
        found.ok_or_else(|| format!("no brick of {} is reachable", self.mount.spec.volume))
    }

    pub(crate) async fn run(
        mut self,
        token: CancellationToken,
        cmds: &mut tokio::sync::mpsc::UnboundedReceiver<Cmd>,
    ) {
        self.stop = token.clone();
        // A folder that vanished after its first sync is reported, never
        // silently recreated (its files would count as deleted).
        if !self.attached {
            if let Err(e) = std::fs::create_dir_all(self.mount.root()) {
                self.set_error(format!(
                    "cannot create {}: {e}",
                    self.mount.root().display()
                ));
            }
        }
        let mut lost_root = !self.mount.root().is_dir();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = match crate::watch::start(&self.mount.root(), tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %self.mount.spec.dir.display(), "file watcher unavailable ({e}); scanning every 2 s");
                None
            }
        };
        let root = self.mount.root();
        match self.mount.journal.settle_intents(
            |r| matches!(local::stat_in(&root, &r.entry.path), Ok(Found::Some(st)) if st == r.stat),
        ) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(mount = %self.mount.spec.dir.display(), "completed {n} records of an interrupted sync")
            }
            Err(e) => tracing::warn!(mount = %self.mount.spec.dir.display(), "journal: {e}"),
        }
        let stale = local::remove_temp_files(&self.mount.root());
        if stale > 0 {
            tracing::info!(mount = %self.mount.spec.dir.display(), "removed {stale} temp files left by an interrupted sync");
        }
        for p in self.mount.journal.queued().unwrap_or_default() {
            if let Ok(r) = RelPath::new(&p) {
                if matches!(local::stat_in(&root, &r), Ok(Found::Missing))
                    && matches!(self.mount.journal.get(r.as_str()), Ok(None))
                {
                    self.unrecorded.push(r.clone());
                }
                self.dirty.insert(r);
            }
        }
        self.scan_all();
        if !self.held.is_empty() {
            tracing::warn!(
                mount = %self.mount.spec.dir.display(),
                "mass-delete guard: {} deletions still held ({}); gsync accept-deletes {dir} sends them, gsync revert-deletes {dir} puts the files back",
                self.held.len(),
                self.mount.journal.held_why().ok().flatten().unwrap_or_default(),
                dir = self.mount.spec.dir.display()
            );
        }
        let mut feed: Option<Feed> = None;
        let mut push_at = Instant::now();
        // When the current burst of local events began (see SETTLE_CUT).
        let mut burst: Option<Instant> = None;
        let mut last_scan = Instant::now();
        let mut scan_every = FULL_SCAN_EVERY;
        let mut changes = self.mount.node.subscribe_changes();
        loop {
            changes.borrow_and_update();
            self.collect_marks().await;
            let (want, offline) = match self.pick_target() {
                Ok(t) => (Some(t), None),
                Err(why) => (None, Some(why)),
            };
            let root_there = self.mount.root().is_dir();
            if !root_there && !lost_root {
                lost_root = true;
                tracing::warn!(mount = %self.mount.spec.dir.display(), "the mount folder vanished; nothing is synced until it exists again");
            } else if root_there && lost_root {
                // The folder is back (recreated, or its disk remounted): what
                // it holds is compared with the volume as on a first attach,
                // so nothing the vanished folder lacked counts as deleted.
                lost_root = false;
                tracing::info!(mount = %self.mount.spec.dir.display(), "the mount folder is back; attaching it again");
                if let Err(e) = self.mount.journal.forget_all() {
                    self.set_error(e.to_string());
                }
                self.dirty.clear();
                self.attached = false;
                if let Some(f) = feed.take() {
                    f.token.cancel();
                }
                watcher = crate::watch::start(&self.mount.root(), tx.clone()).ok();
                self.scan_all();
            }
            if lost_root {
                self.dirty.clear();
                self.mount.take_marks();
            }
            self.set_feed_state(|s| s.offline = offline);
            if want.as_ref() != feed.as_ref().map(|f| &f.target) {
                if let Some(f) = feed.take() {
                    f.token.cancel();
                }
                if let Some(t) = want.clone() {
                    tracing::info!(mount = %self.mount.spec.dir.display(), brick = %t.name, "following brick");
                    feed = Some(self.start_feed(t));
                }
            }
            self.mount.set_target(want);
            self.update_status();
            let mut wait = if self.dirty.is_empty() {
                IDLE_WAKE
            } else {
                push_at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(5))
            };
            let lost_due = (!self.lost.is_empty()).then_some(self.lost_retry);
            let rewalk_due = self.rewalk.iter().map(|(at, _)| *at).min();
            let scan_due = watcher
                .is_none()
                .then(|| last_scan + Duration::from_secs(2));
            for d in [self.gate.deadline(), lost_due, rewalk_due, scan_due]
                .into_iter()
                .flatten()
            {
                wait = wait.min(
                    d.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(5)),
                );
            }
            tokio::select! {
                _ = token.cancelled() => break,
                // A member connecting or leaving, or a new pool document:
                // the brick to follow may change.
                _ = changes.changed() => {}
                Some(c) = cmds.recv() => {
                    self.command(c).await;
                    push_at = Instant::now();
                    continue;
                }
                Some(p) = rx.recv() => {
                    self.note_event(p);
                    while let Ok(p) = rx.try_recv() {
                        self.note_event(p);
                    }
                    let now = Instant::now();
                    let start = *burst.get_or_insert(now);
                    push_at = (now + self.settle()).min(start + self.settle() * SETTLE_CUT);
                    continue;
                }
                b = async {
                    match feed.as_mut() {
                        Some(f) => f.rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match b {
                        Some(FeedEvent::Batch(batch)) => {
                            self.set_feed_state(|s| s.feed_error = None);
                            if !self.apply_batch(batch).await {
                                // Refetch from the journal's cursor.
                                if let Some(f) = feed.take() {
                                    f.token.cancel();
                                }
                            }
                        }
                        Some(FeedEvent::Resync(why)) => {
                            tracing::warn!(mount = %self.mount.spec.dir.display(), "{why}: comparing every path with it");
                            self.listing = Some(BTreeSet::new());
            self.listed_older.clear();
                            self.set_feed_state(|s| {
                                s.caught_up = false;
                                s.resync = Some(why);
                            });
                        }
                        Some(FeedEvent::NotServed(why)) => {
                            // Fail over: the next turn picks another brick.
                            tracing::warn!(mount = %self.mount.spec.dir.display(), "brick not served ({why}); following another brick");
                            if let Some(f) = feed.take() {
                                self.unserved.insert(f.target.brick, Instant::now());
                                f.token.cancel();
                            }
                            continue;
                        }
                        Some(FeedEvent::Trouble(e)) => {
                            tracing::warn!(mount = %self.mount.spec.dir.display(), brick = ?feed.as_ref().map(|f| &f.target.name), "brick does not serve this mount: {e}");
                            self.set_feed_state(|s| s.feed_error = Some(e));
                        }
                        None => {
                            feed = None;
                        }
                    }
                }
                Some(done) = self.lane.next(), if !self.lane.is_empty() => {
                    self.lane_done(done).await;
                    if !self.dirty.is_empty() {
                        push_at = push_at.min(Instant::now());
                    }
                }
                Some(f) = self.fetches.next(), if !self.fetches.is_empty() => {
                    self.fetch_done(f).await;
                    if !self.dirty.is_empty() {
                        push_at = push_at.min(Instant::now());
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
            if std::mem::take(&mut self.refetch) {
                // Fetch again from the journal's cursor.
                if let Some(f) = feed.take() {
                    f.token.cancel();
                }
            }
            // Without a watcher, scan often; with one, a periodic scan is the
            // safety net for events the kernel or the watcher lost.
            let every = if watcher.is_none() {
                Duration::from_secs(2)
            } else {
                scan_every
            };
            if last_scan.elapsed() > every {
                last_scan = Instant::now();
                self.scan_all();
                // Rate-limited by its cost: a tree that takes 1 s to scan
                // is scanned at most every 1,000 s (0.1 % of a core).
                scan_every =
                    (last_scan.elapsed() * SCAN_COST_FACTOR).clamp(FULL_SCAN_EVERY, FULL_SCAN_MAX);
            }
            if !self.rewalk.is_empty() {
                self.rewalk_due();
            }
            if !self.gate.is_empty() && self.mount.target().is_some() && !self.release().await {
                // Fetch again from the journal's cursor.
                if let Some(f) = feed.take() {
                    f.token.cancel();
                }
            }
            {
                let mut met = self
                    .mount
                    .met_concurrent
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                self.lost.append(&mut met);
            }
            if !self.lost.is_empty()
                && Instant::now() >= self.lost_retry
                && self.mount.target().is_some()
            {
                self.offer_lost().await;
            }
            if self.attached
                && !self.dirty.is_empty()
                && Instant::now() >= push_at
                && self.mount.target().is_some()
            {
                burst = None;
                self.push_dirty().await;
                if !self.dirty.is_empty() {
                    push_at = Instant::now() + Duration::from_millis(500);
                }
            }
        }
        if let Some(f) = feed {
            f.token.cancel();
        }
        // Offers on their way finish (bounded): what does not is found
        // again by the next start (it stays in the journal's queue).
        let _ = tokio::time::timeout(LANE_DRAIN_ON_STOP, self.drain_lane()).await;
    }

    fn start_feed(&mut self, t: Target) -> Feed {
        let same = self.mount.journal.kv("brick").ok().flatten() == Some(t.brick);
        let (since, expect) = if same {
            (
                self.mount.journal.kv("seq").ok().flatten().unwrap_or(0),
                self.mount.journal.kv("incarnation").ok().flatten(),
            )
        } else {
            (0, None)
        };
        if since == 0 {
            self.listing = Some(BTreeSet::new());
            self.listed_older.clear();
        }
        // The new feed delivers again what the first sync holds (the cursor
        // stays below it).
        self.first.clear();
        self.set_feed_state(|s| {
            s.caught_up = false;
            s.feed_error = None;
            s.resync = None;
        });
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let token = CancellationToken::new();
        let tk = token.clone();
        let node = self.mount.node.clone();
        let t2 = t.clone();
        self.mount.node.spawn(async move {
            tk.run_until_cancelled(remote::feed(node, t2, since, expect, tx))
                .await;
        });
        Feed {
            target: t,
            rx,
            token,
        }
    }

    fn set_feed_state(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(crate) fn set_error(&self, e: String) {
        tracing::warn!(mount = %self.mount.spec.dir.display(), "{e}");
        self.status.lock().unwrap_or_else(|p| p.into_inner()).error = Some(e);
    }

    fn update_status(&self) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.online = self.mount.target().is_some();
        s.brick = self.mount.target().as_ref().map(|t| t.name.clone());
        s.brick_id = self.mount.target().as_ref().map(|t| (t.volume, t.brick));
        s.pending = (self.dirty.len() + self.lost.len() + self.lane.len()) as u64;
        s.split_brain = self.mount.journal.conflicts().unwrap_or(0);
        s.attached = self.attached;
        s.held_deletes = self.held.len() as u64;
        s.held_deletes_why = if self.held.is_empty() {
            None
        } else {
            self.mount.journal.held_why().ok().flatten()
        };
        let (_, waiting) = self.gate.held();
        s.waiting = waiting as u64;
        s.receiving = self.fetches.len() as u64;
        if self.rejected.is_none() {
            s.rejected = None;
            s.rejected_paths.clear();
        }
        s.in_sync = self.attached
            && self.dirty.is_empty()
            && self.lane.is_empty()
            && self.fetches.is_empty()
            && self.lost.is_empty()
            && self.held.is_empty()
            && self.gate.is_empty()
            && self.rejected.is_none()
            && self.mount.target().is_some()
            && s.caught_up
            && s.feed_error.is_none();
    }

    fn note_event(&mut self, hint: crate::watch::Hint) {
        let root = self.mount.root();
        use crate::watch::Hint;
        let created = matches!(hint, Hint::Created(_));
        let (p, mut writing) = match hint {
            Hint::Rescan => {
                self.scan_all();
                return;
            }
            Hint::Path(p) => (p, None),
            Hint::Written(p) => (p, Some(true)),
            // Decided below, with the path's metadata.
            Hint::Created(p) => (p, None),
            Hint::Closed(p) => (p, Some(false)),
        };
        if p == root {
            return;
        }
        let Ok(rel) = RelPath::from_local(&root, &p) else {
            return;
        };
        if rel.as_str() == ".gsyncignore" {
            self.mount.set_ignore(Ignore::load(&root));
        }
        // A path under a symlinked directory is not in the folder, and a
        // symlink to a directory is a link, not a directory: never follow.
        if files::resolve(&root, &rel, false)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
        {
            return;
        }
        let meta = p.symlink_metadata().ok();
        let is_dir = meta.as_ref().is_some_and(|m| m.is_dir());
        if created {
            // A new regular file (one link: not a hard link to an existing
            // one) is open for writing until its close.
            use std::os::unix::fs::MetadataExt;
            let open = meta
                .as_ref()
                .is_some_and(|m| m.file_type().is_file() && m.nlink() == 1);
            writing = open.then_some(true);
        }
        if self.mount.ignore().ignored(&rel, is_dir) {
            return;
        }
        // A directory new to the journal (moved in, or untarred) brings its
        // whole subtree.
        if is_dir
            && self
                .mount
                .journal
                .get(rel.as_str())
                .ok()
                .flatten()
                .is_none()
        {
            for c in local::walk(&root, &p, &self.mount.ignore()) {
                self.mount.mark(c);
            }
            // Files created in it before the watcher covered it raise no
            // event: look again once the watch is surely in place.
            self.rewalk.push((Instant::now() + REWALK_AFTER, p));
        }
        match writing {
            Some(true) => {
                self.writing.entry(rel.clone()).or_insert_with(Instant::now);
            }
            Some(false) => {
                self.writing.remove(&rel);
            }
            None => {}
        }
        self.mount.mark(rel);
    }

    /// Walks the directories whose second look is due, marking what
    /// differs from the journal.
    fn rewalk_due(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rewalk)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.rewalk = later;
        let root = self.mount.root();
        for (_, dir) in due {
            for rel in local::walk(&root, &dir, &self.mount.ignore()) {
                if self.differs(&rel) {
                    self.mount.mark(rel);
                }
            }
        }
    }

    /// Moves paths marked by concurrent work into the dirty set, writing
    /// them to the journal's queue first, all in one transaction (a burst
    /// of events costs one commit, not one per path).
    async fn collect_marks(&mut self) {
        let marks = self.mount.take_marks();
        let new: Vec<String> = marks
            .iter()
            .filter(|p| !self.dirty.contains(*p))
            .map(|p| p.as_str().to_string())
            .collect();
        if let Err(e) = self.mount.journal.enqueue_async(new).await {
            tracing::warn!(mount = %self.mount.spec.dir.display(), "{e}");
        }
        self.dirty.extend(marks);
    }

    /// True if the local state of `rel` is not what the journal recorded.
    fn differs(&self, rel: &RelPath) -> bool {
        match (
            local::stat_in(&self.mount.root(), rel),
            self.mount.journal.get(rel.as_str()),
        ) {
            (Ok(Found::Some(st)), Ok(Some(j))) => j.stat != st,
            _ => true,
        }
    }

    /// Marks every path whose state differs from the journal.
    fn scan_all(&mut self) {
        let root = self.mount.root();
        if !root.is_dir() {
            // A vanished folder is not a deletion of everything in it.
            return;
        }
        for rel in local::walk(&root, &root, &self.mount.ignore()) {
            if self.differs(&rel) {
                self.mount.mark(rel);
            }
        }
        for p in self.mount.journal.paths_under("").unwrap_or_default() {
            let Ok(rel) = RelPath::new(&p) else { continue };
            if let Ok(Some(j)) = self.mount.journal.get(&p) {
                if j.entry.kind != Kind::Tombstone
                    && matches!(local::stat_in(&root, &rel), Ok(Found::Missing))
                {
                    self.mount.mark(rel);
                }
            }
        }
    }

    /// Pushes dirty paths: existing ones parents first, then deletions
    /// children first (so a rename sends the new path, reusing its content,
    /// before the delete of the old one). Paths of the same depth go out
    /// concurrently (bounded), which lets the brick commit them together.
    async fn push_dirty(&mut self) {
        let root = self.mount.root();
        let mut present = Vec::new();
        let mut gone = Vec::new();
        let mut back = Vec::new();
        let now = Instant::now();
        let mut later = Vec::new();
        for p in std::mem::take(&mut self.dirty) {
            if self.replaced_once_accepted(&p) {
                continue;
            }
            // Its offer or a fetch of it (or of one above or below it) is
            // still on its way.
            if self.lane.holds_up(&p) || self.fetches.holds_up(&p) {
                later.push(p);
                continue;
            }
            if p.under(&root).symlink_metadata().is_ok() {
                // Still being written: wait for its close (bounded).
                // Past the bound, it is pushed as it is; its next write
                // starts another wait.
                match self.writing.get(&p) {
                    Some(since) if now.duration_since(*since) < OPEN_WRITE_WAIT => {
                        self.dirty.insert(p);
                        continue;
                    }
                    Some(_) => {
                        self.writing.remove(&p);
                    }
                    None => {}
                }
                // A held deletion whose file is there again is no deletion.
                if self.held.remove(&p) {
                    back.push(p.clone());
                }
                present.push(p);
            } else {
                self.writing.remove(&p);
                gone.push(p);
            }
        }
        if !back.is_empty() {
            let _ = self.mount.journal.release(back.iter().map(RelPath::as_str));
        }
        let (mut gone, deferred) = self.guard_deletions(gone, &present);
        present.sort();
        gone.sort();
        let groups = gsync_brick::order::push_groups(
            present
                .into_iter()
                .map(|p| (p, false))
                .chain(gone.into_iter().map(|p| (p, true)))
                .map(|(p, deletion)| {
                    let depth = p.depth();
                    (p, depth, deletion)
                }),
        );
        let mut rest: Vec<RelPath> = deferred;
        rest.extend(later);
        let mut out = Outcome::default();
        // First every path is looked at and described, so the round knows
        // how many versions its changeset holds before sending any.
        let mut planned: Vec<sync::Ready> = Vec::new();
        let mut seen: BTreeSet<RelPath> = BTreeSet::new();
        let mut looked: Vec<RelPath> = Vec::new();
        for group in groups {
            if out.stop || self.stop.is_cancelled() {
                rest.extend(group);
                continue;
            }
            // The group's records in one read: the planning of each path
            // then needs the journal no more.
            let mut known = match self
                .mount
                .journal
                .get_many_async(group.iter().map(|p| p.as_str().to_string()).collect())
                .await
            {
                Ok(k) => k,
                Err(e) => {
                    for p in group {
                        self.push_failed(p, RemoteError::Local(e.to_string()), &mut rest, &mut out);
                    }
                    continue;
                }
            };
            let this: &Agent = self;
            let results: Vec<(RelPath, Result<Vec<sync::Ready>, RemoteError>)> =
                futures_util::stream::iter(group)
                    .map(|p| {
                        let j = known.remove(p.as_str());
                        async move {
                            let r = sync::plan_known(&this.mount, &p, j).await;
                            (p, r)
                        }
                    })
                    .buffer_unordered(PUSH_CONCURRENCY)
                    .collect()
                    .await;
            for (p, r) in results {
                match r {
                    Ok(v) => {
                        for x in v {
                            if seen.insert(x.path().clone()) {
                                planned.push(x);
                            }
                        }
                        looked.push(p);
                    }
                    Err(e) => self.push_failed(p, e, &mut rest, &mut out),
                }
            }
        }
        // Then they go out, tagged as one changeset when there are several:
        // parents first, deletions deepest first.
        let changeset = (planned.len() > 1).then(|| proto::Changeset {
            id: rand::random::<u64>() | 1,
            members: u32::try_from(planned.len()).unwrap_or(u32::MAX),
        });
        if let Some(cs) = changeset {
            tracing::debug!(mount = %self.mount.spec.dir.display(), "changeset {:016x}: {} changes", cs.id, cs.members);
        }
        planned.sort_by(|a, b| {
            let key = |r: &sync::Ready| {
                let dead = r.is_deletion();
                let d = r.path().depth() as i64;
                (dead, if dead { -d } else { d })
            };
            key(a).cmp(&key(b)).then_with(|| a.path().cmp(b.path()))
        });
        let mut sends: Vec<Vec<sync::Ready>> = Vec::new();
        let mut last = None;
        for r in planned {
            let k = (r.is_deletion(), r.path().depth());
            if last != Some(k) {
                last = Some(k);
                sends.push(Vec::new());
            }
            if let Some(g) = sends.last_mut() {
                g.push(r);
            }
        }
        let mut sent_failed: BTreeSet<RelPath> = BTreeSet::new();
        let mut in_lane: BTreeSet<RelPath> = BTreeSet::new();
        let mut sent = 0u32;
        for group in sends {
            if out.stop || self.stop.is_cancelled() {
                for r in group {
                    sent_failed.insert(r.path().clone());
                    rest.push(r.path().clone());
                }
                continue;
            }
            // Small changes go in batches (one request and one answer for
            // up to 256); the others, one offer each, go to the lane: the
            // round does not wait for them (see `lane`).
            let (inline, single): (Vec<sync::Ready>, Vec<sync::Ready>) =
                group.into_iter().partition(|r| r.inline());
            for r in single {
                in_lane.insert(r.path().clone());
                self.lane.start(&self.mount, r, changeset);
            }
            let this: &Agent = self;
            let results: Vec<_> = futures_util::stream::iter(sync::batches(inline))
                .map(|b| sync::send_batch(&this.mount, b, changeset))
                .buffer_unordered(BATCH_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .flatten()
                .collect();
            for (p, r) in results {
                match r {
                    Ok(()) => {
                        sent += 1;
                        self.failures.remove(&p);
                    }
                    Err(e) => {
                        sent_failed.insert(p.clone());
                        self.push_failed(p, e, &mut rest, &mut out);
                    }
                }
            }
        }
        // The versions that did not go out never come back through the
        // feed: this mount's own copy of the set does not wait for them
        // (other mounts wait for the bound).
        if let Some(cs) = changeset {
            match self.lane.round_sent(cs, sent) {
                Some(sent) if sent < cs.members => self.gate.sent_short(cs.id, sent),
                _ => {}
            }
        }
        let remarked = self.mount.marked();
        let mut pushed = Vec::new();
        for p in looked {
            // Settled when its offer ends (`lane_done`).
            if sent_failed.contains(&p) || in_lane.contains(&p) {
                continue;
            }
            self.failures.remove(&p);
            self.accepted.remove(&p);
            // Unless it changed again meanwhile (re-marked).
            if !remarked.contains(&p) {
                pushed.push(p.as_str().to_string());
            }
        }
        let _ = self.mount.journal.dequeue_many_async(pushed).await;
        self.note_outcome(out);
        self.dirty.extend(rest);
        self.collect_marks().await;
    }

    /// Shows what a push round (or a lane offer) met.
    fn note_outcome(&mut self, out: Outcome) {
        let (held, failed) = (out.held, out.failed);
        {
            let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            s.held = held;
            if failed.is_some() || self.failures.is_empty() {
                s.error = failed;
            }
        }
        if self.failures.len() > 10_000 {
            self.failures.clear();
        }
    }

    /// Settles an offer of the lane as its round would have: accepted, it
    /// leaves the journal's queue (unless changed again meanwhile); else it
    /// stays dirty. The last member of a changeset to end says how many of
    /// them went out.
    async fn lane_done(&mut self, d: crate::lane::Done) {
        if let Some((cs, sent)) = d.set_done {
            if sent < cs.members {
                self.gate.sent_short(cs.id, sent);
            }
        }
        match d.result {
            Ok(()) => {
                self.failures.remove(&d.path);
                self.accepted.remove(&d.path);
                if !self.mount.marked().contains(&d.path) {
                    let _ = self
                        .mount
                        .journal
                        .dequeue_many_async(vec![d.path.as_str().to_string()])
                        .await;
                }
                if self.failures.is_empty() {
                    self.status.lock().unwrap_or_else(|p| p.into_inner()).error = None;
                }
            }
            Err(e) => {
                let (mut rest, mut out) = (Vec::new(), Outcome::default());
                self.push_failed(d.path, e, &mut rest, &mut out);
                self.note_outcome(out);
                self.dirty.extend(rest);
            }
        }
    }

    /// Lets the lane's offers and fetches end before anything of the
    /// volume about `paths` is applied: the echo of a push must find it
    /// recorded, a remote version must not be weighed against a push in
    /// flight, and versions of one path go live in the feed's order.
    async fn settle_lane_for<'a>(&mut self, mut paths: impl Iterator<Item = &'a RelPath>) {
        if self.lane.is_empty() && self.fetches.is_empty() {
            return;
        }
        if paths.any(|p| self.lane.holds_up(p) || self.fetches.holds_up(p)) {
            self.drain_lane().await;
        }
    }

    /// Waits for every offer and fetch of the lane to end, and settles each.
    async fn drain_lane(&mut self) {
        while let Some(done) = self.lane.next().await {
            self.lane_done(done).await;
        }
        while let Some(f) = self.fetches.next().await {
            self.fetch_done(f).await;
        }
    }

    /// The version of `g` to fetch beside the loop, if it is one: a big
    /// file changed on its own (no changeset), on a mount that neither
    /// validates sets nor publishes generations, nothing rejected pending,
    /// its path free of offers and fetches.
    fn fetch_beside(&self, g: &crate::changeset::Group) -> Option<(u64, Entry)> {
        if g.id.is_some()
            || g.entries.len() != 1
            || self.rejected.is_some()
            || self.mount.spec.validate.is_some()
            || self.mount.spec.atomic
        {
            return None;
        }
        let (seq, e) = g.entries.values().next()?;
        let big = e.kind == Kind::File && e.size >= crate::lane::FETCH_BESIDE;
        (big && !self.lane.holds_up(&e.path) && !self.fetches.holds_up(&e.path))
            .then(|| (*seq, e.clone()))
    }

    /// A fetch of the lane ended: its version goes live now (a rename), or
    /// the feed is fetched again if it could not.
    async fn fetch_done(&mut self, f: crate::lane::Fetched) {
        let staged = match f.result {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(path = %f.path, "apply deferred: {e}");
                self.refetch = true;
                return;
            }
        };
        let mut done = Vec::new();
        let live = sync::go_live(&self.mount, staged, &mut done).await;
        let settled = sync::settle_burst(&self.mount, done).await;
        match live {
            Ok(p) => {
                self.publish();
                self.status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .applied += 1;
                self.changes_live(false, false, &[p]);
            }
            Err(e) => {
                tracing::debug!(path = %f.path, "apply deferred: {e}");
                self.refetch = true;
            }
        }
        if let Err(e) = settled {
            tracing::debug!(path = %f.path, "apply deferred: {e}");
            self.refetch = true;
        }
    }

    /// A local file that `--prefer remote` gives up for the volume's
    /// version on first contact, while the validator holds that version
    /// back: the file stays as it is, and is not pushed (it would become a
    /// concurrent version of the one it yields to); it is replaced when the
    /// version goes live.
    fn replaced_once_accepted(&self, p: &RelPath) -> bool {
        self.mount.spec.prefer == Some(Prefer::Remote)
            && self
                .rejected
                .as_ref()
                .is_some_and(|r| r.entries.contains_key(p))
            && matches!(self.mount.journal.get(p.as_str()), Ok(None))
    }

    /// Records why the push of `p` failed: it stays dirty; an unreachable
    /// brick or a missing quorum stops the round.
    fn push_failed(
        &mut self,
        p: RelPath,
        e: RemoteError,
        rest: &mut Vec<RelPath>,
        out: &mut Outcome,
    ) {
        match e {
            RemoteError::Refused(c, reason) if c == code::NO_QUORUM => {
                out.held = Some(format!("held: {reason}"));
                out.stop = true;
            }
            RemoteError::Unreachable(e) => {
                tracing::debug!(path = %p, "push deferred: {e}");
                out.stop = true;
            }
            e => {
                let msg = e.to_string();
                if self.failures.get(&p) != Some(&msg) {
                    tracing::warn!(path = %p, "push failed: {msg}");
                } else {
                    tracing::debug!(path = %p, "push failed again: {msg}");
                }
                out.failed = Some(format!("push of {p}: {msg}"));
                self.failures.insert(p.clone(), msg);
            }
        }
        rest.push(p);
    }

    /// Applies a feed batch; false if it must be refetched. Until the
    /// first sync is complete, entries are applied as they come; after
    /// it, through the changeset gate (see `changeset`).
    async fn apply_batch(&mut self, b: Batch) -> bool {
        // Our own unrecorded pushes are settled before anything from the
        // brick is applied (it would bring them back as remote creations).
        if !self.unrecorded.is_empty() {
            self.adopt_unrecorded_pushes().await;
            if !self.unrecorded.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return false;
            }
        }
        if !self.unrecorded_unsure.is_empty() {
            for (_, e) in &b.entries {
                if self.unrecorded_unsure.remove(&e.path)
                    && e.kind != Kind::Tombstone
                    && e.vv.get(self.mount.spec.writer) > 0
                {
                    self.adopt_own_push(&e.path, e.vv.clone());
                }
            }
        }
        let initial = !self.attached;
        if self.listing.is_some() {
            // A path the brick holds only in a version older than the one
            // this mount synced counts as not listed: that version may have
            // been lost with a brick too (see `offer_lost`).
            let mut listed = Vec::new();
            for (_, e) in &b.entries {
                let p = e.path.as_str().to_string();
                if self.synced_unknown_to(e) {
                    self.listed_older.insert(p);
                } else {
                    listed.push(p);
                }
            }
            if let Some(l) = self.listing.as_mut() {
                l.extend(listed);
            }
        }
        let mut changed = Vec::new();
        // With a validator, the first sync is one changeset too: nothing of
        // the volume's content goes live before the validator accepted it.
        let validate_first = initial && self.mount.spec.validate.is_some();
        if validate_first {
            for (seq, e) in b.entries {
                self.first.insert(e.path.clone(), (seq, e));
            }
        } else if initial {
            if !self.apply_at_once(b.entries, &mut changed).await {
                self.on_change(&changed, initial);
                return false;
            }
        } else {
            let tags: HashMap<u32, proto::Changeset> = b.changesets.iter().copied().collect();
            let now = Instant::now();
            for (i, (seq, e)) in b.entries.into_iter().enumerate() {
                let tag = u32::try_from(i).ok().and_then(|i| tags.get(&i)).copied();
                self.gate.admit(seq, e, tag, now);
            }
        }
        // The cursor stays below what is held (not live yet), so a restart
        // fetches it again.
        let upto = match self.held_min_seq() {
            Some(m) => b.upto.min(m.saturating_sub(1)),
            None => b.upto,
        };
        if let Err(e) = self
            .mount
            .journal
            .set_cursor_async(b.brick, b.incarnation, upto)
            .await
        {
            tracing::warn!(mount = %self.mount.spec.dir.display(), "{e}");
        }
        if validate_first && b.caught_up && !self.first.is_empty() {
            let entries = std::mem::take(&mut self.first);
            let name = format!("#{}", entries.values().map(|(s, _)| *s).min().unwrap_or(0));
            if !self.apply_group(&name, true, true, entries).await {
                return false;
            }
        }
        if !initial && !self.release().await {
            return false;
        }
        if b.caught_up {
            if let Some(listed) = self.listing.take() {
                self.offer_what_the_brick_lost(&listed).await;
            }
            self.set_feed_state(|s| {
                s.caught_up = true;
                s.resync = None;
            });
        }
        if b.caught_up && !self.attached {
            self.attached = true;
            self.note_root_device();
            let _ = self.mount.journal.set_kv("attached", 1);
            tracing::info!(mount = %self.mount.spec.dir.display(), "first sync complete");
            self.publish();
        }
        self.on_change(&changed, initial);
        true
    }

    /// Applies entries one by one as they come (the first sync): live
    /// entries in parallel (parents are created on demand), deletions
    /// after them, deepest first, one depth at a time. False on a failure
    /// (the batch is fetched again; what was applied is skipped as equal).
    async fn apply_at_once(
        &mut self,
        entries: Vec<(u64, Entry)>,
        changed: &mut Vec<RelPath>,
    ) -> bool {
        if !self.lane.is_empty() {
            let paths: Vec<RelPath> = entries.iter().map(|(_, e)| e.path.clone()).collect();
            self.settle_lane_for(paths.iter()).await;
        }
        let mut live = Vec::new();
        let mut dead: std::collections::BTreeMap<std::cmp::Reverse<usize>, Vec<Entry>> =
            std::collections::BTreeMap::new();
        for (_, e) in entries {
            if e.kind == Kind::Tombstone {
                dead.entry(std::cmp::Reverse(e.path.depth()))
                    .or_default()
                    .push(e);
            } else {
                live.push(e);
            }
        }
        let mut groups = vec![live];
        groups.extend(dead.into_values());
        for group in groups {
            let n = group.len() as u64;
            let this: &Agent = self;
            let results: Vec<Result<Option<RelPath>, RemoteError>> =
                futures_util::stream::iter(group)
                    .map(|e| sync::apply_remote(&this.mount, e))
                    .buffer_unordered(PUSH_CONCURRENCY)
                    .collect()
                    .await;
            for r in results {
                match r {
                    Ok(Some(p)) => changed.push(p),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!("apply deferred: {e}");
                        return false;
                    }
                }
            }
            self.status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .applied += n;
        }
        true
    }

    /// The lowest feed sequence not live yet (held, rejected, or waiting
    /// for the end of a validated first sync).
    fn held_min_seq(&self) -> Option<u64> {
        let rejected = self
            .rejected
            .as_ref()
            .and_then(|r| r.entries.values().map(|(s, _)| *s).min());
        let first = self.first.values().map(|(s, _)| *s).min();
        [self.gate.min_seq(), rejected, first, self.fetches.min_seq()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Makes live the changesets the gate releases; false if the feed must
    /// be fetched again (the gate is emptied: it refills from the cursor).
    async fn release(&mut self) -> bool {
        let ready = self.gate.ready(Instant::now());
        for g in ready {
            if let Some((seq, e)) = self.fetch_beside(&g) {
                self.fetches.start(&self.mount, seq, e);
                continue;
            }
            let name = match g.id {
                Some(id) => format!("{id:016x}"),
                None => format!(
                    "#{}",
                    g.entries.values().map(|(s, _)| *s).min().unwrap_or(0)
                ),
            };
            if !g.complete() {
                let (n, m) = g.arrived();
                let dir = self.mount.spec.dir.display().to_string();
                tracing::warn!(mount = %dir, "changeset {name}: {n} of its {m} changes arrived within {}s; applying them without the others", crate::changeset::MAX_WAIT.as_secs());
                self.mount.node.events.emit(
                    "changeset-incomplete",
                    format!("{dir}: changeset {name} applied with {n} of its {m} changes (the others did not arrive in time)"),
                    serde_json::json!({"dir": dir, "changeset": name, "arrived": n, "members": m}),
                );
            }
            if !self
                .apply_group(&name, g.id.is_some(), false, g.entries)
                .await
            {
                self.gate = crate::changeset::Gate::default();
                return false;
            }
        }
        true
    }

    /// Makes a set live together with the changes rejected earlier (see
    /// [`Self::apply_set`]). A set that only brings again versions already
    /// rejected (the brick delivers them anew after a restart or a refetch)
    /// stays rejected as it is: it is not validated, nor reported, again.
    async fn apply_group(
        &mut self,
        name: &str,
        tagged: bool,
        initial: bool,
        mut entries: std::collections::BTreeMap<RelPath, (u64, Entry)>,
    ) -> bool {
        if !self.lane.is_empty() {
            let paths: Vec<RelPath> = entries.keys().cloned().collect();
            self.settle_lane_for(paths.iter()).await;
        }
        let Some(r) = self.rejected.as_mut() else {
            return self.apply_set(name, name, tagged, initial, entries).await;
        };
        let again = entries
            .iter()
            .all(|(p, (_, e))| r.entries.get(p).is_some_and(|(_, x)| x.vv == e.vv));
        if again {
            // The brick's sequence numbers now (another brick after a
            // failover numbers them otherwise).
            let mut moved = false;
            for (p, (seq, _)) in &entries {
                if let Some(x) = r.entries.get_mut(p) {
                    moved |= x.0 != *seq;
                    x.0 = *seq;
                }
            }
            let saved = if moved {
                r.save(&self.mount.journal)
            } else {
                Ok(())
            };
            tracing::debug!(mount = %self.mount.spec.dir.display(), "changeset {name}: changes already rejected in changeset {}", r.name);
            if let Err(e) = saved {
                self.set_error(e.to_string());
            }
            return true;
        }
        for (p, v) in &r.entries {
            entries.entry(p.clone()).or_insert_with(|| v.clone());
        }
        let what = format!("{name} (with rejected {})", r.name);
        self.apply_set(name, &what, tagged, initial, entries).await
    }

    /// Stages a set of remote versions (files fetched beside their
    /// destination), runs the validator if the mount has one, then makes
    /// them live in one burst of renames and runs --on-change once (for the
    /// first sync, as --on-change-initial says). False if it must be
    /// fetched again.
    async fn apply_set(
        &mut self,
        name: &str,
        what: &str,
        tagged: bool,
        initial: bool,
        entries: std::collections::BTreeMap<RelPath, (u64, Entry)>,
    ) -> bool {
        let root = self.mount.root();
        let this: &Agent = self;
        let list: Vec<Entry> = entries.values().map(|(_, e)| e.clone()).collect();
        // The set's records in one read.
        let mut known = match self
            .mount
            .journal
            .get_many_async(list.iter().map(|e| e.path.as_str().to_string()).collect())
            .await
        {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!("apply deferred: {e}");
                return false;
            }
        };
        let preps: Vec<Result<sync::Prep, RemoteError>> = futures_util::stream::iter(list)
            .map(|e| {
                let j = known.remove(e.path.as_str());
                sync::prepare_known(&this.mount, e, j)
            })
            .buffer_unordered(PUSH_CONCURRENCY)
            .collect()
            .await;
        let mut changed = Vec::new();
        let mut to_place = Vec::new();
        for r in preps {
            match r {
                Ok(sync::Prep::Nothing) => {}
                Ok(sync::Prep::Place(p)) => to_place.push(*p),
                Err(e) => {
                    tracing::debug!("apply deferred: {e}");
                    return false;
                }
            }
        }
        let staged: Vec<Result<Option<sync::Staged>, RemoteError>> =
            futures_util::stream::iter(to_place)
                .map(|p| sync::stage(&this.mount, p))
                .buffer_unordered(PUSH_CONCURRENCY)
                .collect()
                .await;
        let mut ready = Vec::new();
        for r in staged {
            match r {
                Ok(s) => ready.extend(s),
                Err(e) => {
                    tracing::debug!("staging deferred: {e}");
                    return false;
                }
            }
        }
        if let Err(e) = sync::settle_staged(&self.mount, &ready).await {
            tracing::debug!("staging deferred: {e}");
            return false;
        }
        if let (Some(cmd), false) = (self.mount.spec.validate.clone(), ready.is_empty()) {
            let changes: Vec<(RelPath, crate::validate::Change<'_>)> = ready
                .iter()
                .map(|s| {
                    let e = &s.p.e;
                    let c = match (e.kind, s.content()) {
                        (Kind::File, Some(f)) => crate::validate::Change::File(f),
                        (Kind::Dir, _) => crate::validate::Change::Dir,
                        (Kind::Symlink, _) => {
                            crate::validate::Change::Symlink(e.target.as_deref().unwrap_or(""))
                        }
                        _ => crate::validate::Change::Gone,
                    };
                    (e.path.clone(), c)
                })
                .collect();
            let paths: Vec<String> = changes
                .iter()
                .map(|(p, _)| p.as_str().to_string())
                .collect();
            let dir_name = name.trim_start_matches('#').to_string();
            let verdict = match crate::validate::lay_out(&root, &dir_name, &changes) {
                Ok(view) => {
                    let timeout = self
                        .mount
                        .spec
                        .validate_timeout_ms
                        .map_or(crate::validate::DEFAULT_TIMEOUT, Duration::from_millis);
                    crate::validate::run(&cmd, &root, &view, &paths, timeout)
                        .await
                        .map_err(|why| (why, view))
                }
                Err(e) => Err((
                    format!("cannot lay out the staged tree: {e}"),
                    root.join(crate::validate::STAGED_DIR).join(&dir_name),
                )),
            };
            drop(changes);
            match verdict {
                Ok(()) => crate::validate::discard(&root, &dir_name),
                Err((why, view)) => {
                    // The staged files are dropped (temp files removed):
                    // the folder keeps what it had.
                    drop(ready);
                    self.reject(name, what, entries, &why, &view, paths);
                    crate::validate::prune(&root);
                    return true;
                }
            }
        }
        // One burst: directories first, then files and links, then
        // deletions deepest first.
        ready.sort_by(|a, b| {
            let key = |s: &sync::Staged| {
                let d = s.p.e.path.depth() as i64;
                match s.p.e.kind {
                    Kind::Dir => (0, d),
                    Kind::Tombstone => (2, -d),
                    _ => (1, d),
                }
            };
            key(a)
                .cmp(&key(b))
                .then_with(|| a.p.e.path.cmp(&b.p.e.path))
        });
        let n = ready.len() as u64;
        let burst = Instant::now();
        let mut done = Vec::new();
        let mut failed = None;
        for s in ready {
            match sync::go_live(&self.mount, s, &mut done).await {
                Ok(p) => changed.push(p),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let renamed = burst.elapsed();
        if let Err(e) = sync::settle_burst(&self.mount, done).await {
            failed = failed.or(Some(e));
        }
        if !changed.is_empty() {
            self.publish();
        }
        if let Some(e) = failed {
            tracing::debug!("apply deferred: {e}");
            self.changes_live(tagged, initial, &changed);
            return false;
        }
        tracing::debug!(mount = %self.mount.spec.dir.display(), "changeset {what}: {n} changes live in {renamed:?} ({:?} with the journal)", burst.elapsed());
        if let Some(r) = self.rejected.take() {
            tracing::info!(mount = %self.mount.spec.dir.display(), "changeset {name} accepted; the changes of rejected changeset {} went live with it", r.name);
            if let Err(e) = self.mount.journal.clear_rejected() {
                self.set_error(e.to_string());
            }
        }
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .applied += n;
        self.changes_live(tagged, initial, &changed);
        true
    }

    /// --on-change for what went live: once for a changeset, batched with
    /// others for a change made on its own; for the first sync only with
    /// --on-change-initial.
    fn changes_live(&self, tagged: bool, initial: bool, changed: &[RelPath]) {
        if initial {
            self.on_change(changed, true);
        } else if tagged {
            crate::hooks::changeset_live(
                &self.mount.node,
                &self.mount.spec,
                self.mount.spec.dir.clone(),
                changed,
            );
        } else {
            self.on_change(changed, false);
        }
    }

    /// Keeps a changeset the validator rejected out of the folder: it is
    /// reported (state, event, log) and validated again with the next one.
    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        name: &str,
        what: &str,
        entries: std::collections::BTreeMap<RelPath, (u64, Entry)>,
        why: &str,
        view: &std::path::Path,
        paths: Vec<String>,
    ) {
        let dir = self.mount.spec.dir.display().to_string();
        let line = format!("changeset {name} ({why})");
        tracing::warn!(mount = %dir, "rejected: changeset {what} ({why}); the folder keeps what it had; the staged tree is kept in {}", view.display());
        self.mount.node.events.emit(
            "changeset-rejected",
            format!("{dir}: rejected: {line}"),
            serde_json::json!({
                "dir": dir,
                "changeset": name,
                "why": why,
                "paths": paths,
                "staged": view.display().to_string(),
            }),
        );
        {
            let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            s.rejected = Some(line.clone());
            s.rejected_paths = paths.clone();
        }
        let r = Rejected {
            name: name.to_string(),
            line,
            paths,
            entries,
        };
        if let Err(e) = r.save(&self.mount.journal) {
            self.set_error(e.to_string());
        }
        self.rejected = Some(r);
    }

    /// A path pushed and acknowledged just before the agent stopped (kill
    /// -9, a crash) is in the brick but not in the journal; deleted from the
    /// folder while the agent was down, it would come back from the brick
    /// as a remote creation. Each such path the brick followed holds in a
    /// version this mount's writer wrote is recorded as that version, gone
    /// from the folder, so its deletion is pushed instead. Paths the brick
    /// does not know (never pushed) are left alone. Kept for a later turn
    /// while the brick cannot tell.
    async fn adopt_unrecorded_pushes(&mut self) {
        let Some(t) = self.mount.target() else {
            return;
        };
        let paths = std::mem::take(&mut self.unrecorded);
        let writer = self.mount.spec.writer;
        // The brick followed first: without its answer nothing is decided.
        let mine = match self.versions_on(&t, &paths).await {
            Ok(have) => have,
            Err(e) => {
                tracing::debug!(mount = %self.mount.spec.dir.display(), "versions of unrecorded pushes: {e}");
                self.unrecorded = paths;
                return;
            }
        };
        let own = |v: Option<VersionVector>| v.filter(|v| v.get(writer) > 0);
        let mut best: Vec<Option<VersionVector>> = mine.into_iter().map(own).collect();
        // The push may have been acknowledged by another brick (the one
        // followed before the stop): every brick of the volume is asked,
        // and the newest version of ours found anywhere is the one deleted.
        let mut all_asked = true;
        for other in self.volume_targets() {
            if other.brick == t.brick {
                continue;
            }
            match self.versions_on(&other, &paths).await {
                Ok(have) => {
                    for (b, h) in best.iter_mut().zip(have) {
                        if let Some(h) = own(h) {
                            if b.as_ref().is_none_or(|x| h.get(writer) > x.get(writer)) {
                                *b = Some(h);
                            }
                        }
                    }
                }
                // A brick not served (wiped) knows nothing.
                Err(RemoteError::Refused(c, _)) if c == code::NOT_FOUND => {}
                Err(_) => all_asked = false,
            }
        }
        for (p, vv) in paths.iter().zip(best) {
            match vv {
                Some(vv) => self.adopt_own_push(p, vv),
                None if !all_asked => {
                    self.unrecorded_unsure.insert(p.clone());
                }
                None => {}
            }
        }
        if !self.unrecorded_unsure.is_empty() {
            tracing::info!(mount = %self.mount.spec.dir.display(), "{} paths pushed just before the agent stopped and deleted since are not on any brick reachable now; recognised as this mount's own if a brick brings them later", self.unrecorded_unsure.len());
        }
    }

    /// Records `vv` (a version this mount pushed, acknowledged just before
    /// the agent stopped, unrecorded) as synced for `p`, which the folder
    /// deleted since, and queues that deletion. Only while the folder and
    /// the journal still know nothing of `p`.
    fn adopt_own_push(&mut self, p: &RelPath, vv: VersionVector) {
        if !matches!(self.mount.journal.get(p.as_str()), Ok(None))
            || !matches!(local::stat_in(&self.mount.root(), p), Ok(Found::Missing))
        {
            return;
        }
        let mut entry = Entry::tombstone(p.clone(), self.mount.node.me.uuid);
        // Any live kind: what matters is the version it deletes.
        entry.kind = Kind::File;
        entry.data_vv = vv.clone();
        entry.meta_vv = vv.clone();
        entry.vv = vv;
        let rec = Record {
            entry,
            chunks: Vec::new(),
            stat: local::LocalStat::missing(),
            conflict: false,
        };
        if let Err(e) = self.mount.journal.put(&rec) {
            self.set_error(e.to_string());
            return;
        }
        tracing::info!(mount = %self.mount.spec.dir.display(), path = %p, "a push acknowledged before the agent stopped, deleted since: its deletion is pushed");
        self.dirty.insert(p.clone());
    }

    /// Every brick of the mount's volume, as call targets.
    fn volume_targets(&self) -> Vec<Target> {
        let cfg = self.mount.node.config();
        let Some(v) = cfg.volume(&self.mount.spec.volume) else {
            return Vec::new();
        };
        v.bricks
            .iter()
            .map(|b| Target {
                volume: v.id,
                brick: b.id,
                node: b.node,
                name: b.name(),
            })
            .collect()
    }

    /// The version each of `paths` has on brick `t` (`None`: no record),
    /// asked in parts of at most `MAX_VERSION_PATHS`.
    async fn versions_on(
        &self,
        t: &Target,
        paths: &[RelPath],
    ) -> Result<Vec<Option<VersionVector>>, RemoteError> {
        let mut out = Vec::with_capacity(paths.len());
        for part in paths.chunks(proto::MAX_VERSION_PATHS) {
            let req = proto::Versions {
                volume: t.volume,
                brick: t.brick,
                paths: part.to_vec(),
            };
            match remote::ask(&self.mount.node, t, req).await? {
                have if have.len() == part.len() => out.extend(have),
                _ => {
                    return Err(RemoteError::Unreachable(
                        "unexpected answer to a versions request".into(),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// True if the journal holds for `e`'s path a synced version the brick
    /// may not know: newer than `e` (an edit, or a deletion of the live
    /// version listed) or concurrent with it and different.
    fn synced_unknown_to(&self, e: &Entry) -> bool {
        self.mount
            .journal
            .get(e.path.as_str())
            .ok()
            .flatten()
            .is_some_and(|r| unknown_to(&r.entry, e))
    }

    /// After a full listing of the brick followed: paths the journal holds
    /// as synced that the brick never listed (or listed in an older
    /// version only) may have been lost with a brick (acknowledged, then
    /// wiped before it replicated). They are kept in `lost` and looked at
    /// until settled (see [`Self::offer_lost`]).
    async fn offer_what_the_brick_lost(&mut self, listed: &BTreeSet<String>) {
        for p in self.mount.journal.paths_under("").unwrap_or_default() {
            if !listed.contains(&p) {
                // A deletion the brick never heard of deletes nothing there.
                let unlisted_deletion = self
                    .mount
                    .journal
                    .get(&p)
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.entry.kind == Kind::Tombstone)
                    && !self.listed_older.contains(&p);
                if !unlisted_deletion {
                    self.lost.insert(p);
                }
            }
        }
        self.listed_older.clear();
        self.offer_lost().await;
    }

    /// Each path of `lost` that no brick of the volume holds in the
    /// journal's version or one not older (not even as a deletion: a brick
    /// holds nothing, or an older version only) is offered again to the
    /// brick followed as the very
    /// version the journal holds (its vectors unchanged, like a brick
    /// replicating it), from the folder, so nothing stays in this folder
    /// alone while the mount says "in sync". A path some brick knows is
    /// left to the heal: the brick followed may still be filling, and an
    /// old version must never be offered against a newer edit or deletion.
    /// A lost deletion is offered the same way while the path is still
    /// gone; a path the folder changed since is dropped (that edit is
    /// pushed anyway). While a brick cannot tell, or an
    /// offer fails, the rest stays in `lost` and is tried again in
    /// [`LOST_RETRY`]: the mount is not "in sync" meanwhile.
    async fn offer_lost(&mut self) {
        self.drain_lane().await;
        self.lost_retry = Instant::now() + LOST_RETRY;
        let Some(t) = self.mount.target() else {
            return;
        };
        let root = self.mount.root();
        let mut lost: Vec<(RelPath, Record)> = Vec::new();
        for p in std::mem::take(&mut self.lost) {
            let (Ok(rel), Ok(Some(r))) = (RelPath::new(&p), self.mount.journal.get(&p)) else {
                continue;
            };
            // Still as synced: the file unchanged, or the path still gone.
            let unchanged = match local::stat_in(&root, &rel) {
                Ok(Found::Some(st)) => r.entry.kind != Kind::Tombstone && st == r.stat,
                Ok(Found::Missing) => r.entry.kind == Kind::Tombstone,
                _ => false,
            };
            if unchanged {
                lost.push((rel, r));
            }
        }
        if lost.is_empty() {
            return;
        }
        let bricks = self.volume_targets();
        if bricks.is_empty() {
            self.lost = lost
                .into_iter()
                .map(|(p, _)| p.as_str().to_string())
                .collect();
            return;
        }
        for other in bricks {
            let paths: Vec<RelPath> = lost.iter().map(|(p, _)| p.clone()).collect();
            match self.versions_on(&other, &paths).await {
                Ok(have) => {
                    lost = lost
                        .into_iter()
                        .zip(have)
                        .filter(|((_, r), h)| {
                            h.as_ref().is_none_or(|h| {
                                matches!(
                                    r.entry.vv.compare(h),
                                    gsync_brick::wire::vv::Relation::Dominates
                                        | gsync_brick::wire::vv::Relation::Concurrent
                                )
                            })
                        })
                        .map(|(x, _)| x)
                        .collect();
                }
                // A brick not served (wiped) knows nothing.
                Err(RemoteError::Refused(c, _)) if c == code::NOT_FOUND => {}
                Err(e) => {
                    tracing::info!(mount = %self.mount.spec.dir.display(), brick = %other.name, "{} synced versions are missing from the brick followed; offered again once {} can tell whether it has them ({e})", lost.len(), other.name);
                    self.lost = lost
                        .into_iter()
                        .map(|(p, _)| p.as_str().to_string())
                        .collect();
                    return;
                }
            }
        }
        let (mut offered, mut failed) = (0u64, 0u64);
        for (rel, r) in lost {
            let offer = Offer {
                volume: t.volume,
                brick: t.brick,
                entry: r.entry.clone(),
                chunks: r.chunks.clone(),
                write: None,
                from_brick: None,
            };
            let full = rel.under(&root);
            let file = (r.entry.kind == Kind::File).then_some(full.as_path());
            match remote::push(&self.mount.node, &t, &offer, None, file).await {
                Ok(_) => offered += 1,
                Err(e) => {
                    tracing::debug!(path = %rel, "offer of a lost version: {e}");
                    self.lost.insert(rel.as_str().to_string());
                    failed += 1;
                }
            }
        }
        if offered + failed > 0 {
            tracing::warn!(mount = %self.mount.spec.dir.display(), brick = %t.name, "{offered} synced versions that no brick holds offered again ({failed} failed, tried again in {LOST_RETRY:?})");
        }
    }

    /// Hands applied paths to the mount's --on-change batcher.
    fn on_change(&self, changed: &[RelPath], initial: bool) {
        crate::hooks::changed(
            &self.mount.node,
            &self.mount.spec,
            self.mount.spec.dir.clone(),
            changed,
            initial,
        );
    }

    /// The mass-delete guard in front of a push round: of the `gone` dirty
    /// paths, returns those to push now and those to retry shortly (a
    /// burst still growing). Real deletions (paths the mount held) are
    /// held instead when [`guard::decide`] says so, or when deletions are
    /// held already (so a mistake cannot seep out a few files at a time).
    ///
    /// A path renamed within the folder (`mv conf conf.old`) is no loss:
    /// its old path's deletion, and those of everything below a renamed
    /// directory, are pushed without counting, found by the inode the
    /// journal recorded standing again at one of the `present` paths.
    fn guard_deletions(
        &mut self,
        gone: Vec<RelPath>,
        present: &[RelPath],
    ) -> (Vec<RelPath>, Vec<RelPath>) {
        use std::os::unix::fs::MetadataExt;
        // A read-only mount pushes no deletion: it puts the files back.
        if self.mount.spec.read_only {
            return (gone, Vec::new());
        }
        let mut push = Vec::new();
        let mut real = Vec::new();
        let mut files = 0u64;
        let root = self.mount.root();
        let inodes: std::collections::HashSet<u64> = present
            .iter()
            .filter_map(|p| p.under(&root).symlink_metadata().ok())
            .map(|m| m.ino())
            .collect();
        let mut moved: Vec<RelPath> = Vec::new();
        // A deleted directory takes along whatever the journal holds below
        // it (pushing its deletion deletes them), whether or not the
        // watcher reported each one.
        let asked: BTreeSet<RelPath> = gone.iter().cloned().collect();
        let mut todo: Vec<RelPath> = gone;
        // Shallowest first (popped from the end): a renamed directory is
        // met before what was below it.
        todo.sort_by_key(|p| std::cmp::Reverse(p.depth()));
        let mut seen: BTreeSet<RelPath> = asked.clone();
        while let Some(p) = todo.pop() {
            let rec = self.mount.journal.get(p.as_str()).ok().flatten();
            let kind = rec
                .as_ref()
                .map(|r| r.entry.kind)
                .filter(|k| *k != Kind::Tombstone);
            let renamed = rec
                .as_ref()
                .is_some_and(|r| r.stat.ino != 0 && inodes.contains(&r.stat.ino));
            let is_move = renamed || moved.iter().any(|m| p.starts_with(m));
            match kind {
                Some(k) if is_move || !self.accepted.contains(&p) => {
                    if k == Kind::Dir {
                        for c in self
                            .mount
                            .journal
                            .paths_under(p.as_str())
                            .unwrap_or_default()
                        {
                            let Ok(c) = RelPath::new(&c) else { continue };
                            if !seen.contains(&c)
                                && matches!(local::stat_in(&root, &c), Ok(Found::Missing))
                            {
                                seen.insert(c.clone());
                                todo.push(c);
                            }
                        }
                    }
                    if is_move {
                        if k == Kind::Dir {
                            moved.push(p.clone());
                        }
                        push.push(p);
                    } else {
                        files += u64::from(k != Kind::Dir);
                        real.push(p);
                    }
                }
                _ if asked.contains(&p) => push.push(p),
                _ => {}
            }
        }
        real.sort();
        if real.is_empty() {
            self.last_gone = 0;
            if self.held.is_empty() {
                self.note_root_device();
            }
            return (push, Vec::new());
        }
        let cfg = self.mount.node.config();
        let share = cfg
            .volume(&self.mount.spec.volume)
            .and_then(|v| gsync_brick::options::parse_guard(v.option("cluster.mass-delete-guard")))
            .unwrap_or(Some(50));
        if share.is_none() {
            self.last_gone = 0;
            push.extend(real);
            return (push, Vec::new());
        }
        if !self.held.is_empty() {
            let why = self
                .mount
                .journal
                .held_why()
                .ok()
                .flatten()
                .unwrap_or_else(|| "deletions are held".into());
            self.hold(real, &why);
            return (push, Vec::new());
        }
        // Judge a burst (rm -rf) as a whole: wait while it grows.
        if real.len() > 1 && real.len() != self.last_gone {
            self.last_gone = real.len();
            return (push, real);
        }
        self.last_gone = 0;
        let now = Instant::now();
        let recent = self.recent.count(now);
        let input = guard::Input {
            share,
            held_before: self.mount.journal.live_count().unwrap_or(0) + recent,
            recent,
            pending: files,
            root: self.root_state(),
        };
        match guard::decide(&input) {
            Verdict::Push => {
                self.recent.add(now, files);
                push.extend(real);
            }
            Verdict::Hold(why) => self.hold(real, &why),
        }
        (push, Vec::new())
    }

    /// Holds deletions (journal first, so a restart keeps them).
    fn hold(&mut self, paths: Vec<RelPath>, why: &str) {
        let fresh = paths.iter().filter(|p| !self.held.contains(*p)).count();
        if let Err(e) = self
            .mount
            .journal
            .hold(paths.iter().map(RelPath::as_str), why)
        {
            self.set_error(format!("cannot hold deletions: {e}"));
        }
        if fresh > 0 {
            let dir = self.mount.spec.dir.display();
            tracing::warn!(
                mount = %dir,
                "mass-delete guard: holding {fresh} deletions ({} in all): {why}; gsync accept-deletes {dir} sends them, gsync revert-deletes {dir} puts the files back",
                self.held.len() + fresh
            );
            self.mount.node.events.emit(
                "mass-delete-held",
                format!("mass-delete guard: {dir}: holding {fresh} deletions: {why}"),
                serde_json::json!({"dir": dir.to_string(), "held": self.held.len() + fresh, "why": why.to_string()}),
            );
        }
        self.held.extend(paths);
    }

    /// The mount root compared with what the agent last synced.
    fn root_state(&self) -> Root {
        use std::os::unix::fs::MetadataExt;
        let root = self.mount.root();
        let Ok(m) = std::fs::symlink_metadata(&root) else {
            return Root::Vanished;
        };
        if !m.is_dir() {
            return Root::Vanished;
        }
        if self
            .mount
            .journal
            .kv("root-dev")
            .ok()
            .flatten()
            .is_some_and(|d| d != m.dev())
        {
            return Root::OtherDevice;
        }
        if std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_none()) {
            Root::Empty
        } else {
            Root::Normal
        }
    }

    /// Remembers the device of the mount root as the one it belongs on
    /// (after a push round without deletions, or accepted deletions).
    fn note_root_device(&self) {
        use std::os::unix::fs::MetadataExt;
        let root = self.mount.root();
        let Ok(m) = std::fs::symlink_metadata(&root) else {
            return;
        };
        let empty = std::fs::read_dir(&root).map_or(true, |mut d| d.next().is_none());
        if m.is_dir() && !empty && self.mount.journal.kv("root-dev").ok().flatten() != Some(m.dev())
        {
            let _ = self.mount.journal.set_kv("root-dev", m.dev());
        }
    }

    async fn command(&mut self, c: Cmd) {
        self.drain_lane().await;
        match c {
            Cmd::Accept(reply) => {
                let r = self.accept_deletes();
                let _ = reply.send(r);
            }
            Cmd::Revert(reply) => {
                let r = self.revert_deletes().await;
                let _ = reply.send(r);
            }
        }
    }

    fn no_held(&self) -> String {
        format!(
            "{}: no deletions are held by the mass-delete guard",
            self.mount.spec.dir.display()
        )
    }

    /// `gsync accept-deletes`: the held deletions go out now, past the
    /// guard; the root's device becomes the expected one.
    fn accept_deletes(&mut self) -> Result<DeletesOutcome, String> {
        if self.held.is_empty() {
            return Err(self.no_held());
        }
        let held = std::mem::take(&mut self.held);
        let list: Vec<&str> = held.iter().map(RelPath::as_str).collect();
        self.mount
            .journal
            .enqueue(list.iter().copied())
            .and_then(|()| self.mount.journal.release(list.iter().copied()))
            .map_err(|e| e.to_string())?;
        self.recent.clear();
        self.last_gone = 0;
        let n = held.len() as u64;
        tracing::info!(mount = %self.mount.spec.dir.display(), "mass-delete guard: {n} held deletions accepted; pushing them");
        self.accepted.extend(held.iter().cloned());
        self.dirty.extend(held);
        if let Ok(m) = std::fs::symlink_metadata(self.mount.root()) {
            use std::os::unix::fs::MetadataExt;
            let _ = self.mount.journal.set_kv("root-dev", m.dev());
        }
        Ok(DeletesOutcome {
            dir: self.mount.spec.dir.to_string_lossy().into_owned(),
            deletions: n,
            failed: Vec::new(),
        })
    }

    /// `gsync revert-deletes`: every held path comes back from the followed
    /// brick (directories first); what cannot stays held.
    async fn revert_deletes(&mut self) -> Result<DeletesOutcome, String> {
        if self.held.is_empty() {
            return Err(self.no_held());
        }
        if self.mount.target().is_none() {
            return Err(format!(
                "no brick of {} is reachable; the deletions stay held",
                self.mount.spec.volume
            ));
        }
        let mut by_depth: std::collections::BTreeMap<usize, Vec<RelPath>> =
            std::collections::BTreeMap::new();
        for p in &self.held {
            by_depth.entry(p.depth()).or_default().push(p.clone());
        }
        let mut restored = Vec::new();
        let mut failed = Vec::new();
        for group in by_depth.into_values() {
            let this: &Agent = self;
            let results: Vec<(RelPath, Result<(), RemoteError>)> =
                futures_util::stream::iter(group)
                    .map(|p| async move {
                        let r = match local::stat_in(&this.mount.root(), &p) {
                            Ok(Found::Missing) => sync::revert(&this.mount, &p).await,
                            _ => Ok(()),
                        };
                        (p, r)
                    })
                    .buffer_unordered(PUSH_CONCURRENCY)
                    .collect()
                    .await;
            for (p, r) in results {
                match r {
                    Ok(()) => restored.push(p),
                    Err(e) => failed.push(format!("{p}: {e}")),
                }
            }
        }
        self.mount
            .journal
            .release(restored.iter().map(RelPath::as_str))
            .map_err(|e| e.to_string())?;
        for p in &restored {
            self.held.remove(p);
            let _ = self.mount.journal.dequeue(p.as_str());
        }
        self.last_gone = 0;
        tracing::info!(
            mount = %self.mount.spec.dir.display(),
            "mass-delete guard: {} held files put back from the volume{}",
            restored.len(),
            if failed.is_empty() { String::new() } else { format!(", {} still held", failed.len()) }
        );
        Ok(DeletesOutcome {
            dir: self.mount.spec.dir.to_string_lossy().into_owned(),
            deletions: restored.len() as u64,
            failed,
        })
    }
}

/// True if `synced` (a version a mount synced) is one a brick holding
/// `listed` may not know: newer (an edit, or a deletion of a live
/// version), or concurrent and different (same-state concurrent versions
/// merge silently). A deletion against a deletion is nothing to offer.
fn unknown_to(synced: &Entry, listed: &Entry) -> bool {
    use gsync_brick::wire::vv::Relation;
    if synced.kind == Kind::Tombstone && listed.kind == Kind::Tombstone {
        return false;
    }
    match synced.vv.compare(&listed.vv) {
        Relation::Dominates => true,
        Relation::Concurrent => !synced.same_state(listed),
        Relation::Equal | Relation::DominatedBy => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(kind: Kind, hash: u8, vv: &[(u64, u64)]) -> Entry {
        let mut e = Entry::tombstone(RelPath::new("p").unwrap(), uuid::Uuid::nil());
        e.kind = kind;
        e.hash = [hash; 32];
        e.vv = VersionVector::from_entries(vv.iter().copied());
        e
    }

    #[test]
    fn which_synced_versions_a_listing_shows_the_brick_may_lack() {
        use Kind::{Dir, File, Tombstone};
        let table: &[(Entry, Entry, bool)] = &[
            // Newer than listed: an edit or a deletion the brick lacks.
            (v(File, 2, &[(1, 2)]), v(File, 1, &[(1, 1)]), true),
            (v(Tombstone, 0, &[(1, 2)]), v(Dir, 0, &[(1, 1)]), true),
            // The brick has it, or newer.
            (v(File, 1, &[(1, 1)]), v(File, 1, &[(1, 1)]), false),
            (v(File, 1, &[(1, 1)]), v(File, 2, &[(1, 2)]), false),
            // Concurrent and different: the brick does not hold it.
            (
                v(Tombstone, 0, &[(1, 2)]),
                v(Dir, 0, &[(1, 1), (3, 1)]),
                true,
            ),
            (v(File, 1, &[(1, 1)]), v(File, 2, &[(3, 1)]), true),
            // Concurrent but the same state: merges silently.
            (v(File, 1, &[(1, 1)]), v(File, 1, &[(3, 1)]), false),
            // A deletion against a deletion is nothing to offer.
            (
                v(Tombstone, 0, &[(1, 2)]),
                v(Tombstone, 0, &[(1, 1)]),
                false,
            ),
            (
                v(Tombstone, 0, &[(1, 2)]),
                v(Tombstone, 0, &[(3, 1)]),
                false,
            ),
        ];
        for (synced, listed, want) in table {
            assert_eq!(
                unknown_to(synced, listed),
                *want,
                "{synced:?} vs {listed:?}"
            );
        }
    }
}

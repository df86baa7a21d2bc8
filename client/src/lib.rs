//! gsync-client: the sync agent behind `gsync mount`.
//!
//! Layout:
//! - `spec`: a mount's stored definition.
//! - `journal`: the agent's SQLite journal (synced versions, push queue,
//!   follow cursor).
//! - `local`: stat, ignore rules and walks of the local folder.
//! - `watch`: notify events as dirty-path hints.
//! - `remote`: requests to the followed brick (push, feed, stat, reads).
//! - `sync`: push one local change / apply one remote version (executes
//!   on a `mount`, never reaches back into the agent).
//! - `plan`: PURE: what the agent does with one path (local change,
//!   remote version), from the journal's record and the folder's state.
//! - `mount`: one mount as `sync` sees it (folder, journal, brick followed,
//!   notes for the agent's loop).
//! - `guard`: the mass-delete guard's decision (pure) and its window.
//! - `agent`: the per-mount loop; `AgentHost` (here) runs the agents of a
//!   daemon and serves the mount control requests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod agent;
pub mod atomic;
pub mod changeset;
pub mod guard;
pub mod hooks;
pub mod journal;
mod lane;
pub mod local;
mod mount;
mod plan;
mod remote;
pub mod spec;
mod sync;
pub mod validate;
pub mod wait;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gsync_brick::control::{CtlReply, CtlRequest, MountInfo};
use gsync_brick::host::TaskHandle;
use gsync_brick::node::Node;
use gsync_brick::pool::VolumeState;
use serde::Serialize;

pub use agent::DeletesOutcome;
use agent::{Agent, Cmd, Status};
use spec::{MountSpec, Prefer, SPEC_FORMAT};

/// Longest `umount` waits for its agent to stop (it finishes the change in
/// hand first: a large file being placed can take a while).
const UMOUNT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

struct Running {
    spec: MountSpec,
    status: Arc<Mutex<Status>>,
    agent: TaskHandle,
    cmds: tokio::sync::mpsc::UnboundedSender<Cmd>,
}

/// Runs the mount agents of a daemon.
pub struct AgentHost {
    node: Arc<Node>,
    running: Mutex<HashMap<PathBuf, Running>>,
    /// Agents of unmounted folders still finishing the change in hand
    /// (see `umount`): a new mount of the folder waits for them to end.
    stopping: Mutex<HashMap<PathBuf, TaskHandle>>,
}

impl std::fmt::Debug for AgentHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHost").finish_non_exhaustive()
    }
}

fn ok<T: Serialize>(data: T) -> CtlReply {
    CtlReply::ok(data)
}

fn fail(reason: impl Into<String>) -> CtlReply {
    CtlReply::fail(reason)
}

fn journal_path(state: &Path, dir: &Path) -> PathBuf {
    let h = blake3::hash(dir.as_os_str().as_encoded_bytes()).to_hex();
    state.join("mounts").join(format!("{}.db", &h[..16]))
}

/// True if the journal at `path` belongs to an attached mount of `v` (its
/// cursor names a brick of `v`).
fn journal_follows(path: &Path, v: &gsync_brick::pool::Volume) -> bool {
    if !path.exists() {
        return false;
    }
    let Ok(j) = journal::Journal::open(path) else {
        return false;
    };
    j.kv("attached").ok().flatten() == Some(1)
        && j.kv("brick")
            .ok()
            .flatten()
            .is_some_and(|b| v.brick(b).is_some())
}

impl AgentHost {
    /// Starts the agents of every stored mount.
    pub async fn start(node: Arc<Node>) -> Arc<Self> {
        let host = Arc::new(Self {
            node: node.clone(),
            running: Mutex::new(HashMap::new()),
            stopping: Mutex::new(HashMap::new()),
        });
        let specs = node.db().mounts().await.unwrap_or_default();
        for (dir, spec) in specs {
            match serde_json::from_str::<MountSpec>(&spec) {
                Ok(s) => {
                    if let Err(e) = host.spawn(s) {
                        tracing::error!(%dir, "cannot resume mount: {e}");
                    }
                }
                Err(e) => tracing::error!(%dir, "unreadable mount definition: {e}"),
            }
        }
        host
    }

    fn spawn(&self, spec: MountSpec) -> Result<(), String> {
        let jpath = journal_path(&self.node.state_dir, &spec.dir);
        if let Some(p) = jpath.parent() {
            std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        let journal = journal::Journal::open(&jpath).map_err(|e| e.to_string())?;
        let status = Arc::new(Mutex::new(Status::default()));
        let (cmds, rx) = tokio::sync::mpsc::unbounded_channel();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        // Supervised: an agent that panics starts again from its journal
        // (reopened), like after a restart of the daemon, instead of
        // leaving its folder silently unsynced.
        let mut first = Some(journal);
        let (node, sp, st) = (self.node.clone(), spec.clone(), status.clone());
        let name = format!("mount agent {}", spec.dir.display());
        let agent = self
            .node
            .spawn_supervised(name, &self.node.token, move |t| {
                let journal = first.take().map_or_else(|| journal::Journal::open(&jpath), Ok);
                let (node, sp, st, rx) = (node.clone(), sp.clone(), st.clone(), rx.clone());
                async move {
                    let journal = match journal {
                        Ok(j) => j,
                        Err(e) => {
                            tracing::error!(mount = %sp.dir.display(), "cannot reopen the mount journal: {e}");
                            return;
                        }
                    };
                    let mut cmds = rx.lock_owned().await;
                    let dir = sp.dir.clone();
                    Agent::new(node, sp, journal, st).run(t, &mut cmds).await;
                    tracing::info!(dir = %dir.display(), "mount agent stopped");
                }
            });
        tracing::info!(dir = %spec.dir.display(), source = %spec.source, "mount agent started");
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                spec.dir.clone(),
                Running {
                    spec,
                    status,
                    agent,
                    cmds,
                },
            );
        Ok(())
    }

    /// Handles mount control requests; `None` for others.
    pub async fn handle(&self, req: &CtlRequest) -> Option<CtlReply> {
        Some(match req {
            CtlRequest::Mount {
                source,
                dir,
                prefer,
                read_only,
                on_change,
                on_change_delay_ms,
                on_change_initial,
                settle_ms,
                validate,
                validate_timeout_ms,
                atomic,
            } => {
                let hook = OnChange {
                    command: on_change.clone(),
                    delay_ms: *on_change_delay_ms,
                    initial: *on_change_initial,
                    settle_ms: *settle_ms,
                    validate: validate.clone(),
                    validate_timeout_ms: *validate_timeout_ms,
                    atomic: *atomic,
                };
                self.mount(source, dir, prefer.as_deref(), *read_only, hook)
                    .await
            }
            CtlRequest::Umount { dir } => self.umount(dir).await,
            CtlRequest::MountList => ok(self.list()),
            CtlRequest::WaitCheck { dir, replicas } => self.wait_check(dir, *replicas).await,
            CtlRequest::AcceptDeletes { dir } => self.held_deletes(dir, Cmd::Accept).await,
            CtlRequest::RevertDeletes { dir } => self.held_deletes(dir, Cmd::Revert).await,
            _ => return None,
        })
    }

    async fn mount(
        &self,
        source: &str,
        dir: &str,
        prefer: Option<&str>,
        read_only: bool,
        hook: OnChange,
    ) -> CtlReply {
        let Some((host, volume)) = spec::parse_source(source) else {
            return fail(format!("{source} is not HOST:/VOLUME"));
        };
        let cfg = self.node.config();
        let Some(v) = cfg.volume(&volume) else {
            return fail(format!("Volume {volume} does not exist"));
        };
        if v.state != VolumeState::Started {
            return fail(format!("Volume {volume} is not started"));
        }
        if let Err(why) = agent::allowed(v, &self.node.me.hostname) {
            return fail(why);
        }
        if let Err(why) = self.check_host(&host, &cfg).await {
            return fail(why);
        }
        let dir = PathBuf::from(dir);
        if !dir.is_absolute() {
            return fail(format!("{} must be an absolute path", dir.display()));
        }
        // Overlaps are judged on the real path (symlinks and `..` resolved),
        // before anything is created.
        let real = gsync_brick::overlap::real_path(&dir);
        let mounts: Vec<PathBuf> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|d| **d != real)
            .cloned()
            .collect();
        let bricks: Vec<(String, PathBuf)> = cfg
            .volumes
            .iter()
            .flat_map(|v| v.bricks.iter())
            .filter(|b| b.node == self.node.me.uuid)
            .map(|b| {
                (
                    b.name(),
                    gsync_brick::overlap::real_path(Path::new(&b.path)),
                )
            })
            .collect();
        if let Some(why) = gsync_brick::overlap::overlap(&dir, &real, &mounts, &bricks) {
            return fail(why);
        }
        let existed = dir.is_dir();
        let dir = if hook.atomic {
            // DIR itself becomes a symlink: its parent is resolved.
            let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
                return fail(format!("{}: not a folder path", dir.display()));
            };
            let Ok(parent) = parent.canonicalize() else {
                return fail(format!("{}: cannot resolve", parent.display()));
            };
            let dir = parent.join(name);
            if let Err(why) = atomic::prepare(&dir) {
                return fail(why);
            }
            dir
        } else {
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return fail(format!("{}: {e}", dir.display()));
            }
            if !dir.is_dir() {
                return fail(format!("{} is not a directory", dir.display()));
            }
            let Ok(dir) = dir.canonicalize() else {
                return fail(format!("{}: cannot resolve", dir.display()));
            };
            dir
        };
        if let Some(r) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dir)
        {
            return fail(format!(
                "{} is already mounted from {}",
                dir.display(),
                r.spec.source
            ));
        }
        // Two agents never share a folder and its journal: the agent of an
        // earlier mount of it must have ended.
        let old = self
            .stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&dir);
        if let Some(old) = old {
            if tokio::time::timeout(UMOUNT_WAIT, old.stopped())
                .await
                .is_err()
            {
                self.stopping
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(dir.clone(), old);
                return fail(format!(
                    "{} was unmounted and its agent is still finishing a change; mount it again in a moment",
                    dir.display()
                ));
            }
        }
        let prefer = match prefer {
            Some("local") => Some(Prefer::Local),
            Some("remote") => Some(Prefer::Remote),
            Some(o) => return fail(format!("--prefer {o}: expected local or remote")),
            None => None,
        };
        let spec = MountSpec {
            format: SPEC_FORMAT,
            source: source.to_string(),
            host,
            volume,
            dir: dir.clone(),
            prefer,
            read_only: read_only || hook.atomic,
            on_change: hook.command,
            on_change_delay_ms: hook.delay_ms,
            on_change_initial: hook.initial,
            writer: rand::random::<u64>() | 1,
            settle_ms: hook.settle_ms,
            validate: hook.validate,
            validate_timeout_ms: hook.validate_timeout_ms,
            atomic: hook.atomic,
        };
        let text = match serde_json::to_string(&spec) {
            Ok(t) => t,
            Err(e) => return fail(e.to_string()),
        };
        // A folder mounted again (after `gsync umount`) keeps its journal:
        // what it holds is compared with what it had synced, so a file
        // deleted or changed on the volume meanwhile is not pushed back as
        // a new local creation (a resurrection or a split-brain), and edits
        // made while unmounted go out with their base. A journal of another
        // volume, or of a folder that is gone, is discarded.
        let jpath = journal_path(&self.node.state_dir, &dir);
        if !(existed && journal_follows(&jpath, v)) {
            let _ = std::fs::remove_file(&jpath);
        }
        let key = dir.to_string_lossy().into_owned();
        if let Err(e) = self.node.db().save_mount(&key, &text).await {
            return fail(e.to_string());
        }
        match self.spawn(spec) {
            Ok(()) => ok(dir.to_string_lossy()),
            Err(e) => fail(e),
        }
    }

    /// The mount's HOST must be a member of the pool (by name, or by
    /// address): a host that does not exist would otherwise be "mounted"
    /// from this node's own brick without a word.
    async fn check_host(
        &self,
        host: &str,
        cfg: &gsync_brick::pool::PoolConfig,
    ) -> Result<(), String> {
        if host.eq_ignore_ascii_case("localhost")
            || host.eq_ignore_ascii_case(&self.node.me.hostname)
            || cfg.member_by_host(host).is_some()
        {
            return Ok(());
        }
        let ips = |h: &str| {
            let h = h.to_string();
            async move {
                match tokio::net::lookup_host((h.as_str(), 0)).await {
                    Ok(a) => a.map(|a| a.ip()).collect::<Vec<_>>(),
                    Err(_) => Vec::new(),
                }
            }
        };
        let want = ips(host).await;
        if want.is_empty() {
            return Err(format!("{host}: unknown host"));
        }
        if want.contains(&self.node.listen.ip()) {
            return Ok(());
        }
        for m in &cfg.members {
            if ips(&m.hostname).await.iter().any(|ip| want.contains(ip)) {
                return Ok(());
            }
        }
        Err(format!(
            "{host} is not a server of this pool (see gsync pool list)"
        ))
    }

    async fn umount(&self, dir: &str) -> CtlReply {
        let p = PathBuf::from(dir);
        let p = p.canonicalize().unwrap_or(p);
        let r = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&p);
        let Some(r) = r else {
            return fail(format!("{dir} is not mounted"));
        };
        // The agent stops at its next quiet point (never half-way through
        // a change); the answer waits for it, so a mount of the same folder
        // right after never meets the old agent still at work.
        r.agent.stop();
        // Listed until it has ended, so a mount of the folder meanwhile
        // waits for it instead of starting a second agent on its journal.
        self.stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.clone(), r.agent.clone());
        if tokio::time::timeout(UMOUNT_WAIT, r.agent.stopped())
            .await
            .is_err()
        {
            tracing::warn!(dir = %p.display(), "the mount agent is still finishing a change; it stops after it");
        } else {
            self.stopping
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, a| !a.is_finished());
        }
        let key = p.to_string_lossy().into_owned();
        let _ = self.node.db().remove_mount(&key).await;
        // The journal stays: mounting the folder again resumes from it.
        ok(p.to_string_lossy())
    }

    /// Sends an accept/revert request to the agent of the mount `dir` and
    /// waits for its answer.
    async fn held_deletes(
        &self,
        dir: &str,
        make: fn(tokio::sync::oneshot::Sender<Result<DeletesOutcome, String>>) -> Cmd,
    ) -> CtlReply {
        let Ok(d) = Path::new(dir).canonicalize() else {
            return fail(format!("{dir}: no such directory"));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let Some(r) = running.get(&d) else {
                return fail(format!("{} is not a mounted folder", d.display()));
            };
            if r.cmds.send(make(tx)).is_err() {
                return fail(format!("the agent of {} has stopped", d.display()));
            }
        }
        match rx.await {
            Ok(Ok(out)) => ok(out),
            Ok(Err(e)) => fail(e),
            Err(_) => fail(format!("the agent of {} has stopped", d.display())),
        }
    }

    /// The mounts of this daemon, as `gsync mount` lists them.
    pub fn list(&self) -> Vec<MountInfo> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<MountInfo> = running
            .values()
            .map(|r| {
                let mut s = r.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
                s.unreplicated = s.brick_id.and_then(|(v, b)| unreplicated(&self.node, v, b));
                let state = state_line(&s);
                MountInfo {
                    source: r.spec.source.clone(),
                    dir: r.spec.dir.to_string_lossy().into_owned(),
                    state,
                    pending: s.pending,
                    split_brain: s.split_brain,
                    online: s.online && s.offline.is_none() && s.feed_error.is_none(),
                    brick: s.brick,
                    read_only: r.spec.read_only,
                    held: s.held,
                    applied: s.applied,
                    // In sync with the brick followed only is not in sync.
                    in_sync: s.in_sync && s.unreplicated.is_none(),
                    held_deletes: s.held_deletes,
                    held_deletes_why: s.held_deletes_why,
                    rejected: s.rejected,
                    rejected_paths: s.rejected_paths,
                    waiting: s.waiting,
                }
            })
            .collect();
        out.sort_by(|a, b| a.dir.cmp(&b.dir));
        out
    }
}

/// When brick `id` of volume `vol` is served by this node and some of its
/// peer bricks sit on nodes it cannot reach while it holds changes for
/// them: how many paths those bricks lack, and how many such bricks. A
/// mount "in sync" with such a brick is in sync with it only.
fn unreplicated(node: &Node, vol: uuid::Uuid, id: u64) -> Option<(u64, usize)> {
    let brick = node.bricks.get(id).filter(|b| b.volume == vol)?;
    let cfg = node.config();
    let v = cfg.volumes.iter().find(|v| v.id == vol)?;
    let cut: Vec<u64> = v
        .bricks
        .iter()
        .filter(|b| b.id != id && b.node != node.me.uuid && !node.is_connected(b.node))
        .map(|b| b.id)
        .collect();
    if cut.is_empty() {
        return None;
    }
    let peers = cut.clone();
    let n = brick
        .with_db_sync(move |c| gsync_brick::store::Brick::pending_count(c, &peers))
        .ok()?;
    (n > 0).then_some((n, cut.len()))
}

/// The one-line state `gsync mount` shows: what the agent knows, never
/// more. Offline (with why) before anything else; then what is held,
/// pending or in split-brain; "in sync" only when the followed brick's feed
/// was caught up, nothing is pending and no split-brain is known; the brick
/// followed and the last error at the end.
fn state_line(s: &Status) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(why) = s.offline.as_ref().or(s.feed_error.as_ref()) {
        parts.push(format!("offline ({why})"));
    } else if !s.online {
        parts.push("offline".to_string());
    } else if let Some(why) = &s.resync {
        parts.push(format!("resynchronising ({why})"));
    } else if !s.caught_up || !s.attached {
        parts.push(format!("syncing ({} applied)", s.applied));
    }
    if s.pending > 0 {
        match &s.held {
            Some(h) => parts.push(format!("{} pending ({h})", s.pending)),
            None => parts.push(format!("{} pending", s.pending)),
        }
    }
    if s.receiving > 0 {
        parts.push(format!(
            "receiving {} big file{}",
            s.receiving,
            if s.receiving == 1 { "" } else { "s" }
        ));
    }
    if s.held_deletes > 0 {
        parts.push(format!(
            "held: {} deletions (mass-delete guard)",
            s.held_deletes
        ));
    }
    if s.split_brain > 0 {
        parts.push(format!("{} in split-brain", s.split_brain));
    }
    if s.waiting > 0 {
        parts.push(format!(
            "{} changeset{} waiting for members",
            s.waiting,
            if s.waiting == 1 { "" } else { "s" }
        ));
    }
    if let Some(r) = &s.rejected {
        parts.push(format!("rejected: {r}"));
    }
    if parts.is_empty() {
        match s.unreplicated {
            Some((n, k)) => parts.push(format!(
                "in sync with the brick followed only ({n} changes not yet on {k} unreachable brick{})",
                if k == 1 { "" } else { "s" }
            )),
            None => parts.push("in sync".to_string()),
        }
    }
    if let (Some(b), true) = (&s.brick, s.offline.is_none() && s.feed_error.is_none()) {
        parts.push(format!("following {b}"));
    }
    if let Some(e) = &s.error {
        parts.push(format!("last error: {e}"));
    }
    parts.join(", ")
}

/// The --on-change, --settle and --validate settings of a mount request.
struct OnChange {
    command: Option<String>,
    delay_ms: Option<u64>,
    initial: bool,
    settle_ms: Option<u64>,
    validate: Option<String>,
    validate_timeout_ms: Option<u64>,
    atomic: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced() -> Status {
        Status {
            online: true,
            brick: Some("h1:/b1".into()),
            in_sync: true,
            caught_up: true,
            attached: true,
            ..Status::default()
        }
    }

    #[test]
    fn state_lines() {
        let table: Vec<(Status, &str)> = vec![
            (synced(), "in sync, following h1:/b1"),
            (
                Status {
                    pending: 2,
                    ..synced()
                },
                "2 pending, following h1:/b1",
            ),
            (
                Status {
                    pending: 1,
                    held: Some("held: no quorum".into()),
                    ..synced()
                },
                "1 pending (held: no quorum), following h1:/b1",
            ),
            (
                Status {
                    split_brain: 1,
                    ..synced()
                },
                "1 in split-brain, following h1:/b1",
            ),
            (
                Status {
                    receiving: 2,
                    in_sync: false,
                    ..synced()
                },
                "receiving 2 big files, following h1:/b1",
            ),
            (
                Status {
                    unreplicated: Some((3, 2)),
                    ..synced()
                },
                "in sync with the brick followed only (3 changes not yet on 2 unreachable bricks), following h1:/b1",
            ),
            (
                Status {
                    pending: 1,
                    unreplicated: Some((3, 1)),
                    ..synced()
                },
                "1 pending, following h1:/b1",
            ),
            (
                Status {
                    held_deletes: 300,
                    held_deletes_why: Some("300 of 301 files deleted".into()),
                    in_sync: false,
                    ..synced()
                },
                "held: 300 deletions (mass-delete guard), following h1:/b1",
            ),
            (
                Status {
                    pending: 1,
                    held_deletes: 25,
                    split_brain: 2,
                    ..synced()
                },
                "1 pending, held: 25 deletions (mass-delete guard), 2 in split-brain, following h1:/b1",
            ),
            (
                Status {
                    online: false,
                    brick: None,
                    offline: Some("no brick of v is reachable".into()),
                    pending: 3,
                    ..synced()
                },
                "offline (no brick of v is reachable), 3 pending",
            ),
            (
                Status {
                    feed_error: Some("brick refused: not allowed".into()),
                    ..synced()
                },
                "offline (brick refused: not allowed)",
            ),
            (
                Status {
                    caught_up: false,
                    applied: 7,
                    ..synced()
                },
                "syncing (7 applied), following h1:/b1",
            ),
            (
                Status {
                    resync: Some("h1:/b1 is a new incarnation".into()),
                    ..synced()
                },
                "resynchronising (h1:/b1 is a new incarnation), following h1:/b1",
            ),
            (
                Status {
                    error: Some("push of a: disk full".into()),
                    ..synced()
                },
                "in sync, following h1:/b1, last error: push of a: disk full",
            ),
        ];
        for (s, want) in table {
            assert_eq!(state_line(&s), want, "{s:?}");
        }
    }
}

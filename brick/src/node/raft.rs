//! The pool configuration on consensus: an openraft group of the pool's
//! members whose state machine is the pool document (`consensus`).
//!
//! Why: a configuration change must be committed by a majority of the pool
//! or refused with one clear line, never accepted on both sides of a
//! partition and silently dropped on one of them later. Reads (`volume
//! info`, `pool list`) and every data path use the local committed document
//! and keep working without a majority.
//!
//! - Log, vote and state-machine state live in `node.db` (tables `raft_log`
//!   and `raft_meta`; the document itself in `pool`). Every SQLite call runs
//!   on the node database's owner thread (the connection `NodeDb` holds),
//!   never on the async executor.
//! - Messages travel as `Request::Raft` on the members' QUIC connections.
//! - A change is proposed to the leader (forwarded if this node is not it),
//!   made from the document the proposer read ("based on version N"): a
//!   stale change is refused, never merged. A change that cannot reach a
//!   majority within [`CHANGE_WAIT`] fails naming how many members are
//!   reachable.
//! - The leader keeps the raft membership equal to the document's members
//!   (a probed node is added as a learner, then made a voter; a detached one
//!   is removed).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, ChangeMembers, EmptyNode, EntryPayload, LogId, LogState, RaftLogReader, RaftNetwork,
    RaftNetworkFactory, RaftSnapshotBuilder, ServerState, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CallError, Node};
use crate::consensus::{self, Command, Machine, Outcome};
use crate::host::Ask;
use crate::pool::PoolConfig;
use crate::sqlite::Owner;
use crate::wire::proto::Response;

openraft::declare_raft_types!(
    /// The types of the pool's consensus group.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = Uuid,
        Node = EmptyNode,
);

/// The consensus group handle.
pub type Raft = openraft::Raft<TypeConfig>;
type Entry = openraft::Entry<TypeConfig>;
type SErr = StorageError<Uuid>;

/// How long a configuration change may wait for a majority.
pub const CHANGE_WAIT: Duration = Duration::from_secs(8);

/// How soon the leader looks again while membership work is left.
const MAINTAIN: Duration = Duration::from_millis(300);
/// The longest the leader's duties go unchecked when nothing changes.
const MAINTAIN_BACKSTOP: Duration = Duration::from_secs(5);

fn config() -> openraft::Config {
    openraft::Config {
        cluster_name: "gsync-pool".into(),
        heartbeat_interval: 500,
        election_timeout_min: 1500,
        election_timeout_max: 3000,
        install_snapshot_timeout: 2000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    }
}

/// A message of the consensus group on the wire (JSON inside
/// `Request::Raft`, so openraft's serde shapes need nothing of bincode).
#[derive(Debug, Serialize, Deserialize)]
enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<Uuid>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A change proposed by a member to the leader.
    Propose(Command),
    /// The leader's committed index, confirmed by a majority.
    ReadIndex,
    /// Answer once this index is applied here (bounded): a change is
    /// reported done once the members that answer show it.
    WaitApplied(u64),
}

/// The answer to an [`Rpc`].
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Append(AppendEntriesResponse<Uuid>),
    Vote(VoteResponse<Uuid>),
    Snapshot(InstallSnapshotResponse<Uuid>),
    /// The outcome and log index of a proposal.
    Proposed(Result<(Outcome, u64), String>),
    ReadIndex(Result<u64, String>),
    /// Whether the index was applied in time.
    Applied(bool),
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

// ---------------------------------------------------------------- storage

/// The consensus tables of `node.db`, written through the node database's
/// owner thread (the same connection as [`super::db::NodeDb`]). Shared by
/// every instance of the group: an instance stopped by a restart (`gen`
/// behind the node's) can no longer write, even from a task that outlives
/// its shutdown.
#[derive(Clone)]
pub(super) struct RaftDb {
    owner: Arc<Owner>,
    gen: u64,
    current: Arc<std::sync::atomic::AtomicU64>,
}

impl RaftDb {
    pub(super) fn new(db: &super::db::NodeDb) -> Self {
        Self {
            owner: db.owner().clone(),
            gen: 0,
            current: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// A handle for the instance of the group started now.
    fn instance(&self) -> Self {
        let mut h = self.clone();
        h.gen = self.current.load(std::sync::atomic::Ordering::SeqCst);
        h
    }

    /// Stops the current instance (its handles can no longer write).
    pub(super) fn next_instance(&self) {
        self.current
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether instance `gen` is the running one.
    pub(super) fn is_current(&self, gen: u64) -> bool {
        self.current.load(std::sync::atomic::Ordering::SeqCst) == gen
    }

    /// Runs `f` on the owner thread, unless the instance was stopped (as
    /// seen there, in order with the other jobs).
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let (gen, current) = (self.gen, self.current.clone());
        self.owner
            .call(move |c| {
                if current.load(std::sync::atomic::Ordering::SeqCst) != gen {
                    return Err("the pool's consensus was restarted".into());
                }
                f(c)
            })
            .await
            .map_err(|e| e.to_string())?
    }
}

fn get_meta<T: for<'a> Deserialize<'a>>(c: &Connection, key: &str) -> Result<Option<T>, String> {
    let v: Option<String> = c
        .query_row(
            "SELECT value FROM raft_meta WHERE key = ?1",
            params![key],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| e.to_string())?;
    v.map(|s| serde_json::from_str(&s).map_err(|e| format!("raft_meta {key}: {e}")))
        .transpose()
}

fn put_meta<T: Serialize>(c: &Connection, key: &str, v: &T) -> Result<(), String> {
    let s = serde_json::to_string(v).map_err(|e| e.to_string())?;
    c.execute(
        "INSERT INTO raft_meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
        params![key, s],
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

fn save_doc(c: &Connection, doc: &PoolConfig) -> Result<(), String> {
    let s = serde_json::to_string(doc).map_err(|e| e.to_string())?;
    c.execute(
        "INSERT INTO pool (id, doc) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET doc = ?1",
        params![s],
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

fn read_err(e: String) -> SErr {
    StorageIOError::read(AnyError::error(e)).into()
}

fn write_err(e: String) -> SErr {
    StorageIOError::write(AnyError::error(e)).into()
}

/// The log and vote.
#[derive(Clone)]
struct LogStore {
    db: RaftDb,
}

fn bounds(range: &impl RangeBounds<u64>) -> (i64, i64) {
    let clamp = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    let start = match range.start_bound() {
        Bound::Included(x) => clamp(*x),
        Bound::Excluded(x) => clamp(x.saturating_add(1)),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(x) => clamp(x.saturating_add(1)),
        Bound::Excluded(x) => clamp(*x),
        Bound::Unbounded => i64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, SErr> {
        let (start, end) = bounds(&range);
        self.db
            .run(move |c| {
                let mut st = c
                    .prepare("SELECT entry FROM raft_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")
                    .map_err(|e| e.to_string())?;
                let rows = st
                    .query_map(params![start, end], |r| r.get::<_, String>(0))
                    .map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                for r in rows {
                    let s = r.map_err(|e| e.to_string())?;
                    out.push(serde_json::from_str(&s).map_err(|e| e.to_string())?);
                }
                Ok(out)
            })
            .await
            .map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        self.db
            .run(|c| {
                let purged: Option<LogId<Uuid>> = get_meta(c, "purged")?;
                let last: Option<String> = c
                    .query_row(
                        "SELECT entry FROM raft_log ORDER BY idx DESC LIMIT 1",
                        [],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(|e| e.to_string())?;
                let last = match last {
                    Some(s) => {
                        let e: Entry = serde_json::from_str(&s).map_err(|e| e.to_string())?;
                        Some(e.log_id)
                    }
                    None => purged,
                };
                Ok(LogState {
                    last_purged_log_id: purged,
                    last_log_id: last,
                })
            })
            .await
            .map_err(read_err)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<Uuid>) -> Result<(), SErr> {
        let v = *vote;
        self.db
            .run(move |c| put_meta(c, "vote", &v))
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::error(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<Uuid>>, SErr> {
        self.db
            .run(|c| get_meta(c, "vote"))
            .await
            .map_err(|e| StorageIOError::read_vote(AnyError::error(e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<Uuid>>) -> Result<(), SErr> {
        self.db
            .run(move |c| put_meta(c, "committed", &committed))
            .await
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<Uuid>>, SErr> {
        self.db
            .run(|c| Ok(get_meta::<Option<LogId<Uuid>>>(c, "committed")?.flatten()))
            .await
            .map_err(read_err)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        for e in entries {
            let s = serde_json::to_string(&e).map_err(|x| write_err(x.to_string()))?;
            rows.push((i64::try_from(e.log_id.index).unwrap_or(i64::MAX), s));
        }
        let res = self.db.run(move |c| insert_entries(c, &rows)).await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.clone())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<Uuid>) -> Result<(), SErr> {
        let idx = i64::try_from(log_id.index).unwrap_or(i64::MAX);
        self.db
            .run(move |c| {
                c.execute("DELETE FROM raft_log WHERE idx >= ?1", params![idx])
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<Uuid>) -> Result<(), SErr> {
        let idx = i64::try_from(log_id.index).unwrap_or(i64::MAX);
        self.db
            .run(move |c| {
                let tx = c.transaction().map_err(|e| e.to_string())?;
                put_meta(&tx, "purged", &log_id)?;
                tx.execute("DELETE FROM raft_log WHERE idx <= ?1", params![idx])
                    .map_err(|e| e.to_string())?;
                tx.commit().map_err(|e| e.to_string())
            })
            .await
            .map_err(write_err)
    }
}

/// Stores log entries `(index, entry as JSON)` in one transaction.
fn insert_entries(c: &mut Connection, rows: &[(i64, String)]) -> Result<(), String> {
    let tx = c.transaction().map_err(|e| e.to_string())?;
    for (idx, s) in rows {
        tx.execute(
            "INSERT INTO raft_log (idx, entry) VALUES (?1, ?2) ON CONFLICT(idx) DO UPDATE SET entry = ?2",
            params![idx, s],
        )
        .map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}

/// What the state machine keeps beside the document (`raft_meta` "sm").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmMeta {
    applied: Option<LogId<Uuid>>,
    membership: StoredMembership<Uuid, EmptyNode>,
    seeded: bool,
}

/// A stored snapshot: its meta and the machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<Uuid, EmptyNode>,
    machine: Machine,
}

/// The pool document as the state machine.
#[derive(Clone)]
struct StateMachine {
    db: RaftDb,
    node: Weak<Node>,
    meta: SmMeta,
    machine: Machine,
}

impl StateMachine {
    /// Stores the state (document and meta in one transaction) and hands
    /// the document to the node.
    async fn persist(&self, snapshot: Option<StoredSnapshot>) -> Result<(), String> {
        let meta = self.meta.clone();
        let doc = self.machine.doc.clone();
        self.db
            .run(move |c| {
                let tx = c.transaction().map_err(|e| e.to_string())?;
                save_doc(&tx, &doc)?;
                put_meta(&tx, "sm", &meta)?;
                if let Some(s) = &snapshot {
                    put_meta(&tx, "snapshot", s)?;
                }
                tx.commit().map_err(|e| e.to_string())
            })
            .await?;
        if let Some(node) = self.node.upgrade() {
            node.publish_applied(self.db.gen, self.machine.seeded, self.machine.doc.clone());
        }
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let meta = SnapshotMeta {
            last_log_id: self.meta.applied,
            last_membership: self.meta.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                self.meta.applied.map_or(0, |l| l.index),
                Uuid::new_v4().simple()
            ),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            machine: self.machine.clone(),
        };
        let data = serde_json::to_vec(&self.machine).map_err(|e| write_err(e.to_string()))?;
        self.db
            .run(move |c| put_meta(c, "snapshot", &stored))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::error(e)))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<Uuid>>, StoredMembership<Uuid, EmptyNode>), SErr> {
        Ok((self.meta.applied, self.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, SErr>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            self.meta.applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Outcome::Ignored),
                EntryPayload::Normal(cmd) => {
                    let o = self.machine.apply(&cmd);
                    if let (Command::Change { base, .. }, Outcome::Stale { now }) = (&cmd, &o) {
                        tracing::info!("stale pool change refused (made from version {base}, document at {now})");
                    }
                    out.push(o);
                }
                EntryPayload::Membership(m) => {
                    self.meta.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Outcome::Ignored);
                }
            }
        }
        self.meta.seeded = self.machine.seeded;
        self.persist(None).await.map_err(write_err)?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<Uuid, EmptyNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let machine: Machine = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::error(e.to_string())))?;
        self.machine = machine;
        self.meta.applied = meta.last_log_id;
        self.meta.membership = meta.last_membership.clone();
        self.meta.seeded = self.machine.seeded;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            machine: self.machine.clone(),
        };
        self.persist(Some(stored)).await.map_err(write_err)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let stored: Option<StoredSnapshot> = self
            .db
            .run(|c| get_meta(c, "snapshot"))
            .await
            .map_err(read_err)?;
        match stored {
            None => Ok(None),
            Some(s) => {
                let data = serde_json::to_vec(&s.machine).map_err(|e| read_err(e.to_string()))?;
                Ok(Some(Snapshot {
                    meta: s.meta,
                    snapshot: Box::new(Cursor::new(data)),
                }))
            }
        }
    }
}

// ---------------------------------------------------------------- network

/// Makes a client per member: messages go over the member's connection.
struct Network {
    node: Weak<Node>,
}

struct PeerClient {
    node: Weak<Node>,
    target: Uuid,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: Uuid, _node: &EmptyNode) -> PeerClient {
        PeerClient {
            node: self.node.clone(),
            target,
        }
    }
}

impl PeerClient {
    async fn send<E: std::error::Error>(
        &self,
        rpc: Rpc,
        option: &RPCOption,
    ) -> Result<Reply, RPCError<Uuid, EmptyNode, E>> {
        let node = self
            .node
            .upgrade()
            .ok_or_else(|| RPCError::Unreachable(Unreachable::new(&Failed("shut down".into()))))?;
        call(&node, self.target, &rpc, option.hard_ttl())
            .await
            .map_err(|e| match e {
                CallError::NotConnected(_) | CallError::Timeout(_) | CallError::Connection(_) => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                other => RPCError::Network(NetworkError::new(&other)),
            })
    }
}

fn unexpected<E: std::error::Error>(r: Reply) -> RPCError<Uuid, EmptyNode, E> {
    let what = match r {
        Reply::Failed(s) => s,
        other => format!("unexpected answer {other:?}"),
    };
    RPCError::Network(NetworkError::new(&Failed(what)))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Uuid>, RPCError<Uuid, EmptyNode, RaftError<Uuid>>> {
        match self.send(Rpc::Append(rpc), &option).await? {
            Reply::Append(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<Uuid>,
        RPCError<Uuid, EmptyNode, RaftError<Uuid, InstallSnapshotError>>,
    > {
        match self.send(Rpc::Snapshot(rpc), &option).await? {
            Reply::Snapshot(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Uuid>,
        option: RPCOption,
    ) -> Result<VoteResponse<Uuid>, RPCError<Uuid, EmptyNode, RaftError<Uuid>>> {
        match self.send(Rpc::Vote(rpc), &option).await? {
            Reply::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }
}

/// Sends one consensus message to a member.
async fn call(node: &Node, target: Uuid, rpc: &Rpc, limit: Duration) -> Result<Reply, CallError> {
    let body = serde_json::to_vec(rpc).map_err(|e| CallError::Dial(e.to_string()))?;
    let bytes = node
        .ask_timeout(target, crate::wire::call::Raft(body), limit)
        .await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| CallError::Dial(format!("unreadable consensus answer: {e}")))
}

/// Answers a consensus message from member `peer`.
pub(super) async fn serve(node: &Arc<Node>, peer: Uuid, body: &[u8]) -> Response {
    let reply = match serde_json::from_slice::<Rpc>(body) {
        Err(e) => Reply::Failed(format!("unreadable consensus message: {e}")),
        Ok(rpc) => match node.raft() {
            None => Reply::Failed("consensus is restarting".into()),
            Some(raft) => match rpc {
                Rpc::Append(r) => match raft.append_entries(r).await {
                    Ok(x) => Reply::Append(x),
                    Err(e) => Reply::Failed(e.to_string()),
                },
                Rpc::Vote(r) => match raft.vote(r).await {
                    Ok(x) => Reply::Vote(x),
                    Err(e) => Reply::Failed(e.to_string()),
                },
                Rpc::Snapshot(r) => match raft.install_snapshot(r).await {
                    Ok(x) => Reply::Snapshot(x),
                    Err(e) => Reply::Failed(e.to_string()),
                },
                Rpc::Propose(cmd) => {
                    tracing::debug!(peer = %node.peer_name(peer), "pool change proposed by a member");
                    Reply::Proposed(propose_here(&raft, cmd).await)
                }
                Rpc::ReadIndex => Reply::ReadIndex(read_index_here(&raft).await),
                Rpc::WaitApplied(i) => Reply::Applied(
                    raft.wait(Some(super::RPC_TIMEOUT))
                        .applied_index_at_least(Some(i), "pool change applied")
                        .await
                        .is_ok(),
                ),
            },
        },
    };
    match serde_json::to_vec(&reply) {
        Ok(b) => Response::Raft(b),
        Err(e) => Response::error(crate::wire::proto::code::INTERNAL, e.to_string()),
    }
}

/// Appends `cmd` on this node, the leader; waits for it to be applied.
async fn propose_here(raft: &Raft, cmd: Command) -> Result<(Outcome, u64), String> {
    match tokio::time::timeout(CHANGE_WAIT, raft.client_write(cmd)).await {
        Ok(Ok(r)) => {
            // Followers learn the commit at once, not at the next beat.
            let _ = raft.trigger().heartbeat().await;
            Ok((r.data, r.log_id.index))
        }
        Ok(Err(e)) => Err(format!("{NOT_LEADER}: {e}")),
        Err(_) => Err(TIMED_OUT.into()),
    }
}

/// The leader's read index, confirmed by a majority.
async fn read_index_here(raft: &Raft) -> Result<u64, String> {
    match tokio::time::timeout(CHANGE_WAIT, raft.ensure_linearizable()).await {
        Ok(Ok(id)) => Ok(id.map_or(0, |l| l.index)),
        Ok(Err(e)) => Err(format!("{NOT_LEADER}: {e}")),
        Err(_) => Err(TIMED_OUT.into()),
    }
}

const NOT_LEADER: &str = "not the leader";
const TIMED_OUT: &str = "no majority answered in time";

// ---------------------------------------------------------------- node side

/// How the group is (re)started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Start from the stored state; a node without any starts a group of
    /// its document's members (a new node: of itself).
    Resume,
}

/// Creates the tables' initial state and starts the group for `node`.
pub(super) async fn start(node: &Arc<Node>, _mode: Mode) -> Result<(), String> {
    let db = node.raft_db.instance();
    let (meta, joining, fresh): (SmMeta, bool, bool) = db
        .run(|c| {
            let meta: Option<SmMeta> = get_meta(c, "sm")?;
            let joining: Option<bool> = get_meta(c, "joining")?;
            let vote: Option<Vote<Uuid>> = get_meta(c, "vote")?;
            let logs: i64 = c
                .query_row("SELECT COUNT(*) FROM raft_log", [], |r| r.get(0))
                .map_err(|e| e.to_string())?;
            let fresh = vote.is_none() && logs == 0 && meta.is_none();
            Ok((meta.unwrap_or_default(), joining.unwrap_or(false), fresh))
        })
        .await?;
    let doc = node.config();
    node.seeded
        .store(meta.seeded, std::sync::atomic::Ordering::SeqCst);
    let sm = StateMachine {
        db: db.clone(),
        node: Arc::downgrade(node),
        machine: Machine {
            seeded: meta.seeded,
            doc: doc.clone(),
        },
        meta,
    };
    let log = LogStore { db };
    let cfg = config().validate().map_err(|e| e.to_string())?;
    let raft = Raft::new(
        node.me.uuid,
        Arc::new(cfg),
        Network {
            node: Arc::downgrade(node),
        },
        log,
        sm,
    )
    .await
    .map_err(|e| format!("cannot start the pool's consensus: {e}"))?;
    *node.raft.write().unwrap_or_else(|e| e.into_inner()) = Some(raft.clone());
    if fresh && !joining {
        // A new node (a pool of one), or a pool upgraded from a version
        // without consensus: every member starts the same group of the
        // members its document lists.
        let members: BTreeSet<Uuid> = doc.members.iter().map(|m| m.uuid).collect();
        if members.len() > 1 {
            tracing::warn!(
                members = members.len(),
                "starting consensus for a pool that had none: the first leader's document becomes the pool's"
            );
        }
        if let Err(e) = raft.initialize(members).await {
            tracing::debug!("consensus already initialised: {e}");
        }
    }
    Ok(())
}

/// Leaves the group and starts a new one: `Some(doc)` a pool of one with
/// `doc` (detached, or the survivor rewriting membership); `None` a node
/// that was probed and waits for the pool's leader to add it.
pub(super) async fn restart(node: &Arc<Node>, doc: PoolConfig, solo: bool) -> Result<(), String> {
    let _one = node.raft_restart.lock().await;
    node.stop_raft_instance();
    let old = node.raft.write().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(r) = old {
        if let Err(e) = r.shutdown().await {
            tracing::warn!("consensus shutdown: {e}");
        }
    }
    let db = node.raft_db.instance();
    let stored = doc.clone();
    db.run(move |c| {
        let tx = c.transaction().map_err(|e| e.to_string())?;
        tx.execute_batch("DELETE FROM raft_log; DELETE FROM raft_meta;")
            .map_err(|e| e.to_string())?;
        if !solo {
            put_meta(&tx, "joining", &true)?;
        }
        save_doc(&tx, &stored)?;
        tx.commit().map_err(|e| e.to_string())
    })
    .await?;
    node.publish_config(doc);
    start(node, Mode::Resume).await
}

/// The members that vote, and how many of them this node reaches.
fn reach(node: &Node, raft: &Raft) -> (usize, usize) {
    let m = raft.metrics().borrow().membership_config.clone();
    let voters: Vec<Uuid> = m.membership().voter_ids().collect();
    let voters = if voters.is_empty() {
        node.config().members.iter().map(|m| m.uuid).collect()
    } else {
        voters
    };
    let up = voters
        .iter()
        .filter(|u| node.is_alive(**u, super::QUORUM_SILENCE))
        .count();
    (up, voters.len())
}

fn failure(node: &Node, raft: &Raft, last: &str) -> String {
    let (up, of) = reach(node, raft);
    if up < consensus::majority(of) {
        consensus::no_majority(up, of)
    } else {
        format!("the pool's leader did not answer in time ({last}); nothing was changed: run the command again")
    }
}

/// The current document, once this node has applied everything the pool's
/// leader committed: the base a change is made from. Fails with one line
/// when no majority is reachable.
pub(super) async fn config_for_change(node: &Arc<Node>) -> Result<PoolConfig, String> {
    let deadline = Instant::now() + CHANGE_WAIT;
    let mut last = String::from("no leader elected");
    loop {
        let Some(raft) = node.raft() else {
            return Err("the pool's consensus is restarting; run the command again".into());
        };
        let (up, of) = reach(node, &raft);
        if up < consensus::majority(of) {
            return Err(consensus::no_majority(up, of));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(failure(node, &raft, &last));
        }
        let leader = raft.metrics().borrow().current_leader;
        let seeded = node.seeded.load(std::sync::atomic::Ordering::SeqCst);
        let index = match leader {
            Some(l) if l == node.me.uuid && !seeded => {
                // A new group: its first entry is this node's document.
                let seed = Command::Seed(Box::new(node.config()));
                match tokio::time::timeout(left, raft.client_write(seed)).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(TIMED_OUT.to_string()),
                }
            }
            Some(l) if l == node.me.uuid => {
                match tokio::time::timeout(left, raft.ensure_linearizable()).await {
                    Ok(Ok(_)) => return Ok(node.config()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(TIMED_OUT.to_string()),
                }
            }
            Some(l) => match call(node, l, &Rpc::ReadIndex, left).await {
                Ok(Reply::ReadIndex(r)) => r,
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            },
            None => Err("no leader elected".into()),
        };
        match index {
            Ok(i) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match raft
                    .wait(Some(left))
                    .applied_index_at_least(Some(i), "pool document caught up")
                    .await
                {
                    Ok(_) if node.seeded.load(std::sync::atomic::Ordering::SeqCst) => {
                        return Ok(node.config())
                    }
                    Ok(_) => last = "the pool's leader has not seeded its document yet".into(),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Commits `doc`, made from the document of version `doc.version - 1`,
/// through the pool's leader. Returns once this node applied it.
pub(super) async fn propose(node: &Arc<Node>, cmd: Command) -> Result<(), String> {
    let deadline = Instant::now() + CHANGE_WAIT;
    let base = match &cmd {
        Command::Change { base, .. } => *base,
        Command::Seed(d) => d.version,
    };
    let mut last = String::from("no leader elected");
    loop {
        let Some(raft) = node.raft() else {
            return Err("the pool's consensus is restarting; run the command again".into());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(failure(node, &raft, &last));
        }
        let leader = raft.metrics().borrow().current_leader;
        let res = match leader {
            Some(l) if l == node.me.uuid => propose_here(&raft, cmd.clone()).await,
            Some(l) => match call(node, l, &Rpc::Propose(cmd.clone()), left).await {
                Ok(Reply::Proposed(r)) => r,
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                // Not sent: safe to try again (a new leader, a reconnect).
                Err(e @ CallError::NotConnected(_)) => Err(format!("{NOT_LEADER}: {e}")),
                Err(e) => return Err(failure(node, &raft, &e.to_string())),
            },
            None => Err(format!("{NOT_LEADER}: none elected")),
        };
        match res {
            Ok((Outcome::Stale { now }, _)) => return Err(consensus::stale(base, now)),
            Ok((_, index)) => {
                applied_everywhere(node, &raft, index).await;
                return Ok(());
            }
            // Refused before it was appended: another leader may take it.
            Err(e) if e.starts_with(NOT_LEADER) => last = e,
            Err(e) => return Err(failure(node, &raft, &e)),
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Waits (bounded by `RPC_TIMEOUT`) until this node and every member that
/// answers applied log `index`, so a change shows on every reachable member
/// once the command reports it done.
async fn applied_everywhere(node: &Arc<Node>, raft: &Raft, index: u64) {
    let mut set = tokio::task::JoinSet::new();
    for m in node.config().members {
        if m.uuid == node.me.uuid || !node.is_alive(m.uuid, super::QUORUM_SILENCE) {
            continue;
        }
        let n = node.clone();
        set.spawn(async move {
            let limit = super::RPC_TIMEOUT + Duration::from_millis(200);
            let _ = call(&n, m.uuid, &Rpc::WaitApplied(index), limit).await;
        });
    }
    let _ = raft
        .wait(Some(super::RPC_TIMEOUT))
        .applied_index_at_least(Some(index), "pool change applied here")
        .await;
    while set.join_next().await.is_some() {}
}

/// The member leading the pool's consensus, as this node knows it.
pub(super) fn leader(node: &Node) -> Option<Uuid> {
    node.raft()
        .and_then(|r| r.metrics().borrow().current_leader)
}

/// The leader's duties: seed the log with its document (a new group), and
/// keep the voters equal to the document's members. A round runs when the
/// pool document, a member's connection or this node's place in the group
/// (leader, membership) changes; while work is left (a learner catching
/// up, a membership change under way) every [`MAINTAIN`]; otherwise at
/// least every [`MAINTAIN_BACKSTOP`]. An idle pool wakes nobody.
pub(super) async fn maintain(node: Arc<Node>) {
    let mut changes = node.subscribe_changes();
    let mut server = None;
    let mut settled = false;
    loop {
        if server.is_none() {
            server = node.raft().map(|r| r.server_metrics());
        }
        changes.borrow_and_update();
        if let Some(s) = server.as_mut() {
            s.borrow_and_update();
        }
        let wait = if settled { MAINTAIN_BACKSTOP } else { MAINTAIN };
        tokio::select! {
            _ = node.token.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            r = changes.changed() => if r.is_err() { return },
            alive = async {
                match server.as_mut() {
                    Some(s) => s.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            } => if !alive {
                // That group stopped (a detach or probe starts a new
                // one): follow the node's current group.
                server = None;
            },
        }
        // Each round may wait for a majority: shutdown does not wait for it.
        settled = tokio::select! {
            _ = node.token.cancelled() => return,
            s = maintain_once(&node) => s,
        };
    }
}

/// One round of [`maintain`]; true when nothing is left to do.
async fn maintain_once(node: &Arc<Node>) -> bool {
    {
        let Some(raft) = node.raft() else {
            return false;
        };
        let metrics = raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            return true;
        }
        if !node.seeded.load(std::sync::atomic::Ordering::SeqCst) {
            let doc = node.config();
            let cmd = Command::Seed(Box::new(doc));
            if let Ok(Err(e)) = tokio::time::timeout(CHANGE_WAIT, raft.client_write(cmd)).await {
                tracing::debug!("seeding the pool document: {e}");
            }
            return false;
        }
        let membership = metrics.membership_config.membership().clone();
        if membership.get_joint_config().len() > 1 {
            return false;
        }
        let doc = node.config();
        let want: BTreeSet<Uuid> = doc.members.iter().map(|m| m.uuid).collect();
        let nodes: BTreeSet<Uuid> = membership.nodes().map(|(id, _)| *id).collect();
        let voters: BTreeSet<Uuid> = membership.voter_ids().collect();
        if let Some(new) = want.difference(&nodes).next() {
            tracing::info!(peer = %node.peer_name(*new), "adding a member to the pool's consensus");
            let r = tokio::time::timeout(
                CHANGE_WAIT,
                raft.add_learner(*new, EmptyNode::default(), false),
            )
            .await;
            if let Ok(Err(e)) = r {
                tracing::debug!("add learner: {e}");
            }
            return false;
        }
        let last = metrics.last_log_index.unwrap_or(0);
        let caught_up = |u: &Uuid| {
            voters.contains(u)
                || metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(u).copied().flatten())
                    .is_some_and(|m| m.index + 5 >= last)
        };
        let target: BTreeSet<Uuid> = want.iter().copied().filter(caught_up).collect();
        if !target.is_empty() && target != voters {
            tracing::info!(
                voters = target.len(),
                "changing the pool's voting members to match the pool document"
            );
            let r = tokio::time::timeout(
                CHANGE_WAIT,
                raft.change_membership(ChangeMembers::ReplaceAllVoters(target), false),
            )
            .await;
            if let Ok(Err(e)) = r {
                tracing::debug!("change membership: {e}");
            }
            return false;
        }
        let stray: BTreeSet<Uuid> = nodes
            .iter()
            .filter(|u| !want.contains(u) && !voters.contains(u))
            .copied()
            .collect();
        if !stray.is_empty() {
            let r = tokio::time::timeout(
                CHANGE_WAIT,
                raft.change_membership(ChangeMembers::RemoveNodes(stray), false),
            )
            .await;
            if let Ok(Err(e)) = r {
                tracing::debug!("remove learners: {e}");
            }
            return false;
        }
        target == want
    }
}

/// Waits (bounded) until `peer` votes in the pool's consensus (`voter`)
/// or is gone from it (`!voter`), as this node knows it: a probe or detach
/// answers once the new membership counts.
pub(super) async fn wait_membership(node: &Node, peer: Uuid, voter: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let joint = node.raft().is_some_and(|r| {
            r.metrics()
                .borrow()
                .membership_config
                .membership()
                .get_joint_config()
                .len()
                > 1
        });
        let votes = voters(node).get(&peer).copied().unwrap_or(false);
        if !joint && votes == voter {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(
        peer = %node.peer_name(peer),
        "the pool's voting members do not reflect the change yet; the leader keeps reconciling them"
    );
}

/// The ids and whether each is a voter, for `pool list`.
pub(super) fn voters(node: &Node) -> BTreeMap<Uuid, bool> {
    let Some(raft) = node.raft() else {
        return BTreeMap::new();
    };
    let m = raft.metrics().borrow().membership_config.clone();
    let voters: BTreeSet<Uuid> = m.membership().voter_ids().collect();
    m.membership()
        .nodes()
        .map(|(id, _)| (*id, voters.contains(id)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::member;

    fn opened() -> (tempfile::TempDir, RaftDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = RaftDb::new(&crate::node::db::NodeDb::open(dir.path()).unwrap());
        (dir, db)
    }

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, member(1).uuid), index),
            payload,
        }
    }

    fn doc(version: u64) -> PoolConfig {
        let mut d = PoolConfig::solo(member(1));
        d.version = version;
        d
    }

    #[tokio::test]
    async fn the_log_reads_truncates_purges_and_keeps_the_vote() {
        let (_dir, db) = opened();
        let mut log = LogStore { db: db.clone() };
        let st = log.get_log_state().await.unwrap();
        assert_eq!((st.last_purged_log_id, st.last_log_id), (None, None));
        let rows: Vec<(i64, String)> = (0..6u64)
            .map(|i| {
                let e = entry(i, EntryPayload::Blank);
                (i as i64, serde_json::to_string(&e).unwrap())
            })
            .collect();
        db.run(move |c| insert_entries(c, &rows)).await.unwrap();
        let got = log.try_get_log_entries(2..=4).await.unwrap();
        let idx: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
        assert_eq!(idx, [2, 3, 4]);
        assert_eq!(
            log.get_log_state()
                .await
                .unwrap()
                .last_log_id
                .unwrap()
                .index,
            5
        );
        log.truncate(entry(4, EntryPayload::Blank).log_id)
            .await
            .unwrap();
        assert_eq!(
            log.get_log_state()
                .await
                .unwrap()
                .last_log_id
                .unwrap()
                .index,
            3
        );
        log.purge(entry(3, EntryPayload::Blank).log_id)
            .await
            .unwrap();
        let st = log.get_log_state().await.unwrap();
        // Everything purged: the last log id is the purged one.
        assert_eq!(st.last_purged_log_id.unwrap().index, 3);
        assert_eq!(st.last_log_id.unwrap().index, 3);
        assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
        let vote = Vote::new(3, member(2).uuid);
        log.save_vote(&vote).await.unwrap();
        let mut again = LogStore {
            db: RaftDb::new(&crate::node::db::NodeDb::open(_dir.path()).unwrap()),
        };
        assert_eq!(again.read_vote().await.unwrap(), Some(vote));
    }

    #[tokio::test]
    async fn the_machine_applies_stores_and_moves_by_snapshot() {
        let (dir, db) = opened();
        let mut sm = StateMachine {
            db,
            node: Weak::new(),
            meta: SmMeta::default(),
            machine: Machine {
                seeded: false,
                doc: doc(1),
            },
        };
        let change = |base: u64| {
            EntryPayload::Normal(Command::Change {
                base,
                doc: Box::new(doc(base + 1)),
            })
        };
        let out = sm
            .apply(vec![
                entry(1, EntryPayload::Normal(Command::Seed(Box::new(doc(4))))),
                entry(2, change(4)),
                entry(3, change(4)),
            ])
            .await
            .unwrap();
        assert_eq!(
            out,
            [
                Outcome::Applied,
                Outcome::Applied,
                Outcome::Stale { now: 5 }
            ]
        );
        // Stored: the document in `pool`, the rest in `raft_meta`.
        let stored = crate::node::db::NodeDb::open(dir.path())
            .unwrap()
            .pool()
            .await
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(stored.version, 5);
        let meta: SmMeta = sm.db.run(|c| get_meta(c, "sm")).await.unwrap().unwrap();
        assert!(meta.seeded);
        assert_eq!(meta.applied.unwrap().index, 3);
        // A snapshot carries it to a node that has nothing.
        let snap = sm.build_snapshot().await.unwrap();
        let (dir2, db2) = opened();
        let mut fresh = StateMachine {
            db: db2,
            node: Weak::new(),
            meta: SmMeta::default(),
            machine: Machine {
                seeded: false,
                doc: doc(1),
            },
        };
        fresh
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert_eq!(fresh.applied_state().await.unwrap().0.unwrap().index, 3);
        assert!(fresh.machine.seeded);
        assert_eq!(fresh.machine.doc.version, 5);
        assert!(fresh.get_current_snapshot().await.unwrap().is_some());
        drop(dir2);
    }

    #[test]
    fn log_ranges_become_sql_bounds() {
        assert_eq!(bounds(&(3..7)), (3, 7));
        assert_eq!(bounds(&(3..=7)), (3, 8));
        assert_eq!(bounds(&(..)), (0, i64::MAX));
        assert_eq!(bounds(&(5..)), (5, i64::MAX));
        assert_eq!(bounds(&(..=u64::MAX)), (0, i64::MAX));
    }
}

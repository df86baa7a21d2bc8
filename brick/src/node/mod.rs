//! The node: one daemon's pool membership, connections, bricks and control
//! socket, composed around one QUIC endpoint.
//!
//! ```text
//!  CLI ──unix socket──> ctl ──> mgmt ──┐
//!                                      ├─> Node { pool doc, conns, bricks }
//!  peers <──QUIC──> serve (accept) ────┤
//!                   peers (dial loops) ┘
//! ```
//!
//! The pool document lives in memory behind a lock and in `node.db`; every
//! change goes through [`Node::commit_config`], which commits it through the
//! pool's consensus group (`raft`); the applied document is handed back by
//! the state machine ([`Node::publish_config`]).

mod bricks;
mod conn;
mod ctl;
pub mod db;
pub mod disk;
#[cfg(feature = "failpoints")]
mod drill;
mod hosts;
mod lifecycle;
mod mgmt;
pub mod raft;
mod serve;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::faults::FaultRules;
use crate::net::{self, Identity};
use crate::pool::{Member, PoolConfig};
use crate::wire::frame;
use crate::wire::proto::{Hello, Request, Response};
use bricks::BrickSet;
use db::NodeDb;
use futures_util::future::BoxFuture;

pub use crate::host::{BoxRead, BoxWrite, CallError, QUORUM_SILENCE};

/// How often the node re-checks its bricks against the pool document and
/// their directories (a brick whose marker came back is served again; one
/// whose marker vanished stops being served).
pub const BRICK_RECHECK: Duration = Duration::from_secs(2);

/// How long a management RPC to one peer may take before the peer is
/// reported unreachable (keeps every CLI command under 2 s).
pub const RPC_TIMEOUT: Duration = Duration::from_millis(1500);

/// Shortest deadline of a request this node sends itself (see
/// [`Node::call_timeout`]).
pub const LOCAL_CALL_LIMIT: Duration = Duration::from_secs(30);

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// State directory.
    pub state_dir: PathBuf,
    /// Name in the pool (defaults to the listen IP).
    pub name: Option<String>,
    /// Secret required for a first-contact probe.
    pub join_secret: Option<String>,
}

/// A running node.
pub struct Node {
    /// This node as a pool member.
    pub me: Member,
    /// Listen address.
    pub listen: SocketAddr,
    /// State directory.
    pub state_dir: PathBuf,
    identity: Identity,
    endpoint: quinn::Endpoint,
    db: NodeDb,
    config: RwLock<PoolConfig>,
    conns: Mutex<HashMap<Uuid, quinn::Connection>>,
    /// Bumped whenever the pool document changes or a member connects or
    /// disconnects: tasks that follow either wait on it instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
    /// Per connection: datagrams received so far, and when that last grew.
    rx_seen: Mutex<HashMap<(Uuid, usize), (u64, std::time::Instant)>>,
    join_secret: Option<String>,
    /// Network fault rules applied at the endpoint's socket.
    pub faults: Arc<FaultRules>,
    /// The bricks this node serves.
    pub bricks: BrickSet,
    /// Cancelled on shutdown.
    pub token: CancellationToken,
    tasks: TaskTracker,
    /// Hook for the control requests handled outside this crate (mounts).
    ext: RwLock<Option<Arc<dyn CtlExtension>>>,
    /// What happened, for `gsync events` (anything may [`EventLog::emit`]).
    pub events: crate::events::EventLog,
    /// The pool's consensus group (`None` while it restarts).
    raft: RwLock<Option<raft::Raft>>,
    /// One restart of the consensus group at a time.
    raft_restart: tokio::sync::Mutex<()>,
    /// Whether the state machine holds a document committed by the log.
    seeded: std::sync::atomic::AtomicBool,
    /// The consensus tables (one connection, shared by every instance).
    raft_db: raft::RaftDb,
    /// This node, for in-process calls and streams to itself.
    this: std::sync::OnceLock<std::sync::Weak<Node>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("me", &self.me).finish()
    }
}

/// Control requests served by another crate (the mount agents).
pub trait CtlExtension: Send + Sync {
    /// Handles `req` if it is this extension's; `None` otherwise.
    fn handle<'a>(
        &'a self,
        req: &'a crate::control::CtlRequest,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Option<crate::control::CtlReply>> + Send + 'a>,
    >;
}

impl Node {
    /// Opens the state, binds the endpoint (retrying until the address
    /// exists) and starts serving. Returns once the control socket is up.
    pub async fn start(
        opts: NodeOptions,
        token: CancellationToken,
    ) -> anyhow_like::Result<Arc<Self>> {
        std::fs::create_dir_all(&opts.state_dir).map_err(|e| {
            anyhow_like::err(format!("state dir {}: {e}", opts.state_dir.display()))
        })?;
        // Opening and migrating run on the blocking pool, the rest on the
        // database's owner thread: never SQLite on the async executor.
        let dir = opts.state_dir.clone();
        let db = tokio::task::spawn_blocking(move || NodeDb::open(&dir))
            .await
            .map_err(|e| anyhow_like::err(e.to_string()))?
            .map_err(|e| anyhow_like::err(e.to_string()))?;
        let (uuid, identity) = db
            .identity()
            .await
            .map_err(|e| anyhow_like::err(e.to_string()))?;
        let hostname = opts
            .name
            .clone()
            .unwrap_or_else(|| default_name(opts.listen));
        let me = Member {
            uuid,
            hostname,
            port: opts.listen.port(),
            fingerprint: identity.fingerprint(),
        };
        let (mut config, skipped) = db
            .pool()
            .await
            .map_err(|e| anyhow_like::err(e.to_string()))?
            .unwrap_or_else(|| (PoolConfig::solo(me.clone()), Vec::new()));
        for line in skipped {
            tracing::error!("stored pool document: {line}");
        }
        for p in config
            .volumes
            .iter()
            .filter_map(crate::limits::volume_problem)
        {
            tracing::error!("stored pool document: {p}");
        }
        // Keep our own entry's port in step with the current listen port.
        if let Some(m) = config.members.iter_mut().find(|m| m.uuid == uuid) {
            m.port = me.port;
            m.fingerprint = me.fingerprint.clone();
        }
        db.save_pool(&config)
            .await
            .map_err(|e| anyhow_like::err(e.to_string()))?;
        let raft_db = raft::RaftDb::new(&db);
        let faults = Arc::new(FaultRules::default());
        let endpoint = bind_with_retry(&identity, opts.listen, faults.clone(), &token).await?;
        tracing::info!(node = %uuid, listen = %opts.listen, fingerprint = %net::short(&me.fingerprint), "node up");
        let node = Arc::new(Self {
            me,
            listen: opts.listen,
            state_dir: opts.state_dir.clone(),
            identity,
            endpoint,
            db,
            config: RwLock::new(config),
            conns: Mutex::new(HashMap::new()),
            changes: tokio::sync::watch::channel(0).0,
            rx_seen: Mutex::new(HashMap::new()),
            join_secret: opts.join_secret,
            faults,
            bricks: BrickSet::default(),
            token,
            tasks: TaskTracker::new(),
            ext: RwLock::new(None),
            events: crate::events::EventLog::open(&opts.state_dir),
            raft: RwLock::new(None),
            raft_restart: tokio::sync::Mutex::new(()),
            seeded: std::sync::atomic::AtomicBool::new(false),
            raft_db,
            this: std::sync::OnceLock::new(),
        });
        let _ = node.this.set(Arc::downgrade(&node));
        raft::start(&node, raft::Mode::Resume)
            .await
            .map_err(anyhow_like::err)?;
        ctl::start(node.clone()).await?;
        // The node's own tasks live as long as it does and stop with its
        // token (they watch it themselves): their handles are not kept.
        let (n, t) = (node.clone(), &node.token);
        node.spawn_supervised("accept loop", t, move |_| conn::accept_loop(n.clone()));
        let n = node.clone();
        node.spawn_supervised("peer connections", t, move |_| conn::supervise(n.clone()));
        let n = node.clone();
        node.spawn_supervised("pool consensus", t, move |_| raft::maintain(n.clone()));
        node.apply_config_locally();
        let n = node.clone();
        node.spawn_supervised("brick checks", t, move |stop| {
            let n = n.clone();
            async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(BRICK_RECHECK) => n.refresh_bricks(),
                    }
                }
            }
        });
        Ok(node)
    }

    /// Registers the handler of extension control requests.
    pub fn set_extension(&self, ext: Arc<dyn CtlExtension>) {
        *self.ext.write().unwrap_or_else(|e| e.into_inner()) = Some(ext);
    }

    /// Spawns a task tracked by the node (awaited at shutdown).
    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(fut);
    }

    /// Spawns a long-lived task made by `make`, supervised (see
    /// [`crate::host::supervise`]: made again after a panic, stopped at
    /// shutdown), under a child of `token` (the node's, or a narrower
    /// one such as a brick's). Awaited at shutdown.
    pub fn spawn_supervised<F, Fut>(
        &self,
        name: impl Into<String>,
        token: &CancellationToken,
        mut make: F,
    ) -> crate::host::TaskHandle
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let make: crate::host::MakeTask = Box::new(move |t| Box::pin(make(t)));
        let (supervisor, handle) = crate::host::supervise(name.into(), token, make);
        self.tasks.spawn(supervisor);
        handle
    }

    /// Stops everything: stop accepting, cancel tasks, close the endpoint
    /// and wait (bounded) for tasks to finish.
    pub async fn shutdown(&self) {
        self.token.cancel();
        if let Some(r) = self.raft() {
            let _ = tokio::time::timeout(Duration::from_secs(1), r.shutdown()).await;
        }
        self.endpoint.close(0u32.into(), b"shutdown");
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.tasks.wait()).await;
        self.bricks.close_all();
        let _ = std::fs::remove_file(crate::control::socket_path(&self.state_dir));
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    /// A copy of the current pool document.
    pub fn config(&self) -> PoolConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// This node's pid.
    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    fn hello(&self) -> Hello {
        let c = self.config.read().unwrap_or_else(|e| e.into_inner());
        Hello {
            version: crate::failpoint::announced_protocol(),
            node: self.me.uuid,
            config_version: c.version,
            config_by: c.changed_by,
        }
    }

    /// The pool's consensus group, unless it is restarting.
    pub fn raft(&self) -> Option<raft::Raft> {
        self.raft.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current document once this node has caught up with everything
    /// the pool committed: the base of a configuration change. Fails with
    /// one line when no majority of the pool is reachable.
    pub async fn config_for_change(self: &Arc<Self>) -> Result<PoolConfig, String> {
        raft::config_for_change(self).await
    }

    /// Commits `new`, made from the document of version `new.version - 1`,
    /// through the pool's consensus: it is applied by every member, or the
    /// call fails with one line (no majority reachable, or another change
    /// was committed first) and nothing changed.
    pub async fn commit_config(self: &Arc<Self>, new: PoolConfig) -> Result<(), String> {
        let base = new.version.saturating_sub(1);
        raft::propose(
            self,
            crate::consensus::Command::Change {
                base,
                doc: Box::new(new),
            },
        )
        .await
    }

    /// Leaves the pool: a pool of one again, ready to be probed.
    pub(crate) async fn leave_pool(self: &Arc<Self>) {
        let solo = PoolConfig::solo(self.me.clone());
        if let Err(e) = raft::restart(self, solo, true).await {
            tracing::error!("cannot leave the pool: {e}");
        }
    }

    /// Stops the running instance of the consensus group from touching the
    /// document: what it still applies is neither stored nor shown.
    fn stop_raft_instance(&self) {
        let _c = self.config.write().unwrap_or_else(|e| e.into_inner());
        self.raft_db.next_instance();
    }

    /// The state machine of instance `gen` applied `doc`: shown unless the
    /// instance was stopped meanwhile (checked under the document's lock,
    /// which a restart takes to stop the instance).
    fn publish_applied(self: &Arc<Self>, gen: u64, seeded: bool, doc: PoolConfig) {
        self.publish(doc, Some((gen, seeded)));
    }

    /// Makes `new` the document in memory (the state machine stored it):
    /// records what changed, closes the connections of removed members and
    /// starts or stops local bricks.
    fn publish_config(self: &Arc<Self>, new: PoolConfig) {
        self.publish(new, None);
    }

    fn publish(self: &Arc<Self>, new: PoolConfig, applied: Option<(u64, bool)>) {
        let removed: Vec<Uuid> = {
            let mut c = self.config.write().unwrap_or_else(|e| e.into_inner());
            if let Some((gen, seeded)) = applied {
                if !self.raft_db.is_current(gen) {
                    return;
                }
                self.seeded
                    .store(seeded, std::sync::atomic::Ordering::SeqCst);
            }
            if *c == new {
                return;
            }
            volume_events(&self.events, &c, &new);
            let gone = c
                .members
                .iter()
                .filter(|m| new.member(m.uuid).is_none())
                .map(|m| m.uuid)
                .collect();
            *c = new;
            gone
        };
        for u in removed {
            if let Some(conn) = self
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&u)
            {
                conn.close(crate::wire::proto::code::PERMISSION.into(), b"detached");
            }
        }
        self.apply_config_locally();
        self.note_change();
    }

    /// Wakes every task following the pool document or the connections.
    fn note_change(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees a change whenever the pool document changes or
    /// a member connects or disconnects.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Starts and stops local bricks to match the pool document.
    fn apply_config_locally(self: &Arc<Self>) {
        let cfg = self.config();
        self.bricks.reconcile(self, &cfg);
    }

    /// Re-checks the local bricks now: serves a brick whose directory was
    /// just re-initialised (e.g. by `reset-brick ... commit force`) without
    /// waiting for the periodic check, and stops one that lost its marker.
    pub fn refresh_bricks(self: &Arc<Self>) {
        self.apply_config_locally();
    }

    /// The node database: its owner thread's handle (async methods, and
    /// `*_sync` ones for the blocking pool).
    pub fn db(&self) -> &NodeDb {
        &self.db
    }

    /// The live connection to a member, if any.
    pub fn connection(&self, peer: Uuid) -> Option<quinn::Connection> {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns
            .get(&peer)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// True if a live connection to `peer` exists.
    pub fn is_connected(&self, peer: Uuid) -> bool {
        peer == self.me.uuid || self.connection(peer).is_some()
    }

    /// True if `peer` is connected and sent something within `within`.
    /// Keep-alives flow every `KEEP_ALIVE`, so a silent peer is noticed well
    /// before its connection times out.
    pub fn is_alive(&self, peer: Uuid, within: Duration) -> bool {
        if peer == self.me.uuid {
            return true;
        }
        let Some(conn) = self.connection(peer) else {
            return false;
        };
        let rx = conn.stats().udp_rx.datagrams;
        let now = std::time::Instant::now();
        let mut seen = self.rx_seen.lock().unwrap_or_else(|e| e.into_inner());
        let e = seen.entry((peer, conn.stable_id())).or_insert((rx, now));
        if e.0 != rx {
            *e = (rx, now);
        }
        now.duration_since(e.1) <= within
    }

    /// Whether this node reaches a quorum of `v`'s bricks (`None`: the
    /// volume has no quorum configured). A brick counts when its node was
    /// heard from within `QUORUM_SILENCE`.
    pub fn quorum(&self, v: &crate::pool::Volume) -> Option<bool> {
        crate::host::Host::quorum(self, v)
    }

    fn register(&self, peer: Uuid, conn: quinn::Connection) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = conns.get(&peer) {
            if old.close_reason().is_none() && old.stable_id() != conn.stable_id() {
                // Keep the connection dialed by the lower id, so both sides
                // settle on the same one.
                let keep_old = (old.side().is_client()) == (self.me.uuid < peer);
                if keep_old {
                    return;
                }
            }
        }
        conns.insert(peer, conn);
        drop(conns);
        self.note_change();
    }

    /// Sends one request to a member and waits for its response. A
    /// request to this node itself is answered in-process by the same
    /// brick service a member reaches.
    pub async fn call(&self, peer: Uuid, req: Request) -> Result<Response, CallError> {
        self.call_timeout(peer, req, RPC_TIMEOUT).await
    }

    /// Like [`Self::call`], with a caller-chosen deadline (for requests whose
    /// answer may take longer than a management call, such as digests of a
    /// large directory under load). A request to this node itself waits at
    /// least [`LOCAL_CALL_LIMIT`]: the deadline is there to notice a member
    /// that cannot be reached, and this node always can; a busy disk must
    /// not make its own bricks look offline or give up on a brick
    /// preparation that then completes anyway.
    pub async fn call_timeout(
        &self,
        peer: Uuid,
        req: Request,
        limit: Duration,
    ) -> Result<Response, CallError> {
        let name = || self.peer_name(peer);
        if peer == self.me.uuid {
            let this = self
                .this
                .get()
                .and_then(std::sync::Weak::upgrade)
                .ok_or_else(|| CallError::NotConnected(name()))?;
            let call = async {
                let (mut w, mut r) = crate::host::Peers::open_stream(this, peer).await?;
                call_over(&mut w, &mut r, &req).await
            };
            return match tokio::time::timeout(limit.max(LOCAL_CALL_LIMIT), call).await {
                Ok(r) => r,
                Err(_) => Err(CallError::Timeout(name())),
            };
        }
        let conn = self
            .connection(peer)
            .ok_or_else(|| CallError::NotConnected(name()))?;
        match tokio::time::timeout(limit, call_on(&conn, &req)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(name())),
        }
    }

    /// Hostname of a member, or its id.
    pub fn peer_name(&self, peer: Uuid) -> String {
        self.config()
            .member(peer)
            .map_or_else(|| peer.to_string(), |m| m.hostname.clone())
    }

    /// Dials `addr` expecting the key `pinned` (none for first contact).
    async fn dial(
        &self,
        addr: SocketAddr,
        pinned: Option<String>,
    ) -> Result<quinn::Connection, CallError> {
        let cfg = net::client_config(&self.identity, pinned)
            .map_err(|e| CallError::Dial(e.to_string()))?;
        let connecting = self
            .endpoint
            .connect_with(cfg, addr, "gsync")
            .map_err(|e| CallError::Dial(e.to_string()))?;
        match tokio::time::timeout(Duration::from_secs(3), connecting).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(CallError::Connection(e)),
            Err(_) => Err(CallError::Dial(
                "Transport endpoint is not connected".into(),
            )),
        }
    }
}

impl Node {
    /// Opens a request stream to node `target`: a QUIC stream, or an
    /// in-process pipe to the same request handler a member reaches
    /// (`serve::dispatch`).
    pub async fn open_stream(
        self: &Arc<Self>,
        target: Uuid,
    ) -> Result<(BoxWrite, BoxRead), CallError> {
        if target == self.me.uuid {
            let (client_w, server_r) = tokio::io::duplex(1 << 20);
            let (server_w, client_r) = tokio::io::duplex(1 << 20);
            let node = self.clone();
            self.spawn(async move {
                let (mut r, mut w) = (server_r, server_w);
                match frame::read_msg::<_, Request>(&mut r).await {
                    Ok(req) => {
                        let me = node.me.uuid;
                        if let Err(e) = serve::dispatch(&node, me, req, &mut w, &mut r).await {
                            tracing::debug!("local request failed: {e}");
                        }
                    }
                    Err(e) => tracing::debug!("local request unreadable: {e}"),
                }
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
            });
            return Ok((Box::new(client_w), Box::new(client_r)));
        }
        let conn = self
            .connection(target)
            .ok_or_else(|| CallError::NotConnected(self.peer_name(target)))?;
        let (send, recv) = conn.open_bi().await?;
        Ok((Box::new(send), Box::new(recv)))
    }
}

/// Sends one request on a fresh stream of `conn` and reads the response.
pub async fn call_on(conn: &quinn::Connection, req: &Request) -> Result<Response, CallError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    frame::write_msg(&mut send, req).await?;
    let _ = send.finish();
    answer(frame::read_msg(&mut recv).await?)
}

/// Sends `c` on a new stream of `conn` (a connection not registered yet)
/// and reads its reply.
pub async fn ask_on<C: crate::wire::call::Call>(
    conn: &quinn::Connection,
    c: C,
) -> Result<C::Reply, CallError> {
    let resp = call_on(conn, &c.into_request()).await?;
    Ok(crate::wire::call::reply::<C>(resp)?)
}

/// Sends one request on an open stream (in-process) and reads the response.
async fn call_over(
    w: &mut BoxWrite,
    r: &mut BoxRead,
    req: &Request,
) -> Result<Response, CallError> {
    frame::write_msg(w, req).await?;
    let _ = tokio::io::AsyncWriteExt::shutdown(w).await;
    answer(frame::read_msg(r).await?)
}

fn answer(resp: Response) -> Result<Response, CallError> {
    match resp {
        Response::Error { code, reason } => Err(CallError::Refused { code, reason }),
        r => Ok(r),
    }
}

impl crate::host::Peers for Node {
    fn me(&self) -> Uuid {
        self.me.uuid
    }
    fn is_connected(&self, peer: Uuid) -> bool {
        Node::is_connected(self, peer)
    }
    fn is_alive(&self, peer: Uuid, within: Duration) -> bool {
        Node::is_alive(self, peer, within)
    }
    fn peer_name(&self, peer: Uuid) -> String {
        Node::peer_name(self, peer)
    }
    fn call(&self, peer: Uuid, req: Request) -> BoxFuture<'_, Result<Response, CallError>> {
        Box::pin(Node::call(self, peer, req))
    }
    fn call_timeout(
        &self,
        peer: Uuid,
        req: Request,
        limit: Duration,
    ) -> BoxFuture<'_, Result<Response, CallError>> {
        Box::pin(Node::call_timeout(self, peer, req, limit))
    }
    fn open_stream(
        self: Arc<Self>,
        target: Uuid,
    ) -> BoxFuture<'static, Result<(BoxWrite, BoxRead), CallError>> {
        Box::pin(async move { Node::open_stream(&self, target).await })
    }
}

impl crate::host::Host for Node {
    fn config(&self) -> PoolConfig {
        Node::config(self)
    }
    fn token(&self) -> CancellationToken {
        self.token.clone()
    }
    fn local_brick(&self, id: u64) -> Option<Arc<crate::store::Brick>> {
        self.bricks.get(id)
    }
    fn local_bricks(&self, volume: Uuid) -> Vec<Arc<crate::store::Brick>> {
        self.bricks.of_volume(volume)
    }
    fn unserved_reason(&self, id: u64) -> Option<String> {
        self.bricks.unserved_reason(id)
    }
    fn pid_port(&self) -> (u32, u16) {
        (self.pid(), self.listen.port())
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.subscribe_changes()
    }
    fn spawn_task(&self, fut: BoxFuture<'static, ()>) {
        self.spawn(fut);
    }
    fn spawn_task_supervised(
        &self,
        name: String,
        token: &CancellationToken,
        make: crate::host::MakeTask,
    ) -> crate::host::TaskHandle {
        self.spawn_supervised(name, token, make)
    }
}

fn default_name(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    } else {
        listen.ip().to_string()
    }
}

async fn bind_with_retry(
    id: &Identity,
    addr: SocketAddr,
    faults: Arc<FaultRules>,
    token: &CancellationToken,
) -> anyhow_like::Result<quinn::Endpoint> {
    let mut attempt = 0u32;
    loop {
        match net::bind(id, addr, faults.clone()) {
            Ok(e) => return Ok(e),
            // Another process holds the port: waiting would only hide the
            // mistake (a second daemon or demo on the same ports).
            Err(net::NetError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse =>
            {
                return Err(anyhow_like::err(format!(
                    "cannot listen on {addr}: the port is in use by another process"
                )));
            }
            Err(e) => {
                if attempt % 30 == 0 {
                    tracing::warn!(
                        "cannot bind {addr} yet ({e}); retrying until the address exists"
                    );
                }
                attempt += 1;
            }
        }
        tokio::select! {
            _ = token.cancelled() => return Err(anyhow_like::err("stopped before the listen address appeared".into())),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Records what changed between two pool documents: members joined or
/// left; volumes created, deleted, started, stopped, options set or reset,
/// bricks added, removed or replaced.
fn volume_events(log: &crate::events::EventLog, old: &PoolConfig, new: &PoolConfig) {
    use serde_json::json;
    for m in new.members.iter().filter(|m| old.member(m.uuid).is_none()) {
        log.emit(
            "peer-joined",
            format!("{} joined the pool", m.hostname),
            json!({"peer": m.hostname, "uuid": m.uuid.to_string()}),
        );
    }
    for m in old.members.iter().filter(|m| new.member(m.uuid).is_none()) {
        log.emit(
            "peer-left",
            format!("{} left the pool", m.hostname),
            json!({"peer": m.hostname, "uuid": m.uuid.to_string()}),
        );
    }
    let bricks = |v: &crate::pool::Volume| -> Vec<String> {
        v.bricks
            .iter()
            .map(|b| {
                format!(
                    "{}:{}",
                    new.member(b.node)
                        .or_else(|| old.member(b.node))
                        .map_or_else(|| b.node.to_string(), |m| m.hostname.clone()),
                    b.path
                )
            })
            .collect()
    };
    for v in &new.volumes {
        match old.volumes.iter().find(|o| o.id == v.id) {
            None => {
                log.emit(
                    "volume-created",
                    format!("volume {} created (replica {})", v.name, v.replica),
                    json!({"volume": v.name, "replica": v.replica, "bricks": bricks(v)}),
                );
            }
            Some(o) => {
                if o.state != v.state {
                    let kind = match v.state {
                        crate::pool::VolumeState::Started => "volume-started",
                        crate::pool::VolumeState::Stopped => "volume-stopped",
                        crate::pool::VolumeState::Created => "volume-created",
                    };
                    log.emit(
                        kind,
                        format!("volume {} {}", v.name, kind.trim_start_matches("volume-")),
                        json!({"volume": v.name}),
                    );
                }
                if o.options != v.options {
                    let keys: Vec<&String> = o
                        .options
                        .keys()
                        .chain(v.options.keys())
                        .filter(|k| o.options.get(*k) != v.options.get(*k))
                        .collect();
                    let mut keys = keys;
                    keys.sort();
                    keys.dedup();
                    for k in keys {
                        let value = v.options.get(k);
                        let what =
                            value.map_or_else(|| format!("{k} reset"), |x| format!("{k} = {x}"));
                        log.emit(
                            "volume-set",
                            format!("volume {}: {what}", v.name),
                            json!({"volume": v.name, "key": k, "value": value}),
                        );
                    }
                }
                let (was, now) = (bricks(o), bricks(v));
                if was != now {
                    let added: Vec<&String> = now.iter().filter(|b| !was.contains(b)).collect();
                    let removed: Vec<&String> = was.iter().filter(|b| !now.contains(b)).collect();
                    log.emit("volume-bricks-changed", format!("volume {}: bricks added {added:?}, removed {removed:?} (replica {})", v.name, v.replica), json!({"volume": v.name, "replica": v.replica, "added": added, "removed": removed}));
                }
            }
        }
    }
    for o in &old.volumes {
        if !new.volumes.iter().any(|v| v.id == o.id) {
            log.emit(
                "volume-deleted",
                format!("volume {} deleted", o.name),
                json!({"volume": o.name}),
            );
        }
    }
}

/// A minimal error type for node start-up (the binary wraps it in anyhow).
pub mod anyhow_like {
    /// Start-up error: one line for the operator.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct StartError(pub String);
    /// Result of start-up steps.
    pub type Result<T> = std::result::Result<T, StartError>;
    /// Builds a start-up error.
    pub fn err(s: String) -> StartError {
        StartError(s)
    }
}

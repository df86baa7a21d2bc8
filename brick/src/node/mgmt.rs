//! Management commands from the CLI: pool membership and volume
//! definitions. Every command answers within about two seconds: calls to
//! peers are bounded by `RPC_TIMEOUT`, and unreachable peers are reported as
//! such instead of waited for.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use super::{call_on, CallError, Node};
use crate::control::{
    BrickRow, CtlReply, CtlRequest, NodeInfo, PeerInfo, ProbeResult, ShdRow, VolumeStatusReport,
};
use crate::net;
use crate::options;
use crate::pool::{BrickDef, PoolConfig, Volume, VolumeState};
use crate::wire::proto::{code, Probe, Request, Response};

fn ok<T: Serialize>(data: T) -> CtlReply {
    CtlReply::ok(data)
}

fn fail(reason: impl Into<String>) -> CtlReply {
    CtlReply::fail(reason)
}

/// Resolves `host:port` to one socket address.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match tokio::net::lookup_host((host, port)).await {
        Ok(mut addrs) => addrs.next().ok_or_else(|| format!("{host}: no address")),
        Err(e) => Err(format!("{host}: {e}")),
    }
}

pub(super) async fn handle(node: &Arc<Node>, req: CtlRequest) -> CtlReply {
    match req {
        CtlRequest::Ping => ok(NodeInfo {
            uuid: node.me.uuid.to_string(),
            hostname: node.me.hostname.clone(),
            listen: node.listen.to_string(),
            fingerprint: node.me.fingerprint.clone(),
            pid: node.pid(),
        }),
        CtlRequest::PeerProbe { host, port, secret } => probe(node, host, port, secret).await,
        CtlRequest::PeerDetach { host, force } => detach(node, &host, force).await,
        CtlRequest::PeerStatus => ok(peers(node)),
        CtlRequest::Events { since } => ok(node.events.since(since, crate::events::KEEP)),
        CtlRequest::VolumeCreate {
            name,
            replica,
            bricks,
            force,
        } => volume_create(node, name, replica, bricks, force).await,
        CtlRequest::VolumeStart { name, force } => {
            volume_change(node, &name, |v| match v.state {
                VolumeState::Started if !force => Err(format!("Volume {} already started", v.name)),
                _ => {
                    if let Some(p) = crate::limits::volume_problem(v) {
                        return Err(p);
                    }
                    v.state = VolumeState::Started;
                    Ok(())
                }
            })
            .await
        }
        CtlRequest::VolumeStop { name } => {
            volume_change(node, &name, |v| match v.state {
                VolumeState::Started => {
                    v.state = VolumeState::Stopped;
                    Ok(())
                }
                _ => Err(format!("Volume {} is not in the started state", v.name)),
            })
            .await
        }
        CtlRequest::VolumeDelete { name } => volume_delete(node, &name).await,
        CtlRequest::VolumeInfo { name } => {
            let cfg = node.config();
            match name {
                Some(n) => match cfg.volume(&n) {
                    Some(v) => ok(vec![v.clone()]),
                    None => fail(format!("Volume {n} does not exist")),
                },
                None => ok(cfg.volumes),
            }
        }
        CtlRequest::VolumeStatus { name } => volume_status(node, name).await,
        CtlRequest::VolumeSet { name, key, value } => {
            let normalised = match options::validate(&key, &value) {
                Ok(v) => v,
                Err(e) => return fail(e.to_string()),
            };
            volume_change(node, &name, |v| {
                if key == "cluster.quorum-count" {
                    let n: u32 = normalised.parse().unwrap_or(0);
                    if n > v.replica {
                        return Err(format!(
                            "invalid value {n} for cluster.quorum-count: the volume has {} bricks",
                            v.replica
                        ));
                    }
                }
                v.options.insert(key.clone(), normalised.clone());
                Ok(())
            })
            .await
        }
        CtlRequest::VolumeReset { name, key } => {
            if key != "all" && options::spec(&key).is_none() {
                return fail(options::OptionError::UnknownKey { key }.to_string());
            }
            volume_change(node, &name, |v| {
                if key == "all" {
                    v.options.clear();
                } else {
                    v.options.remove(&key);
                }
                Ok(())
            })
            .await
        }
        CtlRequest::DebugNet { ip, rule } => {
            node.faults.set(ip, rule);
            tracing::warn!(%ip, ?rule, "network fault rule set");
            ok(node.faults.list())
        }
        CtlRequest::DebugNetClear => {
            node.faults.clear();
            tracing::warn!("network fault rules cleared");
            ok(node.faults.list())
        }
        CtlRequest::DebugRemoteConfig { addr } => remote_config(node, &addr).await,
        CtlRequest::DebugGarbage { addr } => garbage(node, &addr).await,
        CtlRequest::VolumeReplaceBrick { name, old, new } => {
            super::lifecycle::replace_brick(node, &name, &old, &new).await
        }
        CtlRequest::VolumeResetBrick {
            name,
            brick,
            commit,
        } => super::lifecycle::reset_brick(node, &name, &brick, commit).await,
        CtlRequest::VolumeAddBrick {
            name,
            replica,
            bricks,
            force,
        } => super::lifecycle::add_brick(node, &name, replica, &bricks, force).await,
        CtlRequest::VolumeRemoveBrick {
            name,
            replica,
            bricks,
        } => super::lifecycle::remove_brick(node, &name, replica, &bricks).await,
        other => fail(format!("this daemon does not handle {other:?}")),
    }
}

fn peers(node: &Node) -> Vec<PeerInfo> {
    let cfg = node.config();
    cfg.members
        .iter()
        .map(|m| PeerInfo {
            hostname: m.hostname.clone(),
            uuid: m.uuid.to_string(),
            port: m.port,
            connected: node.is_connected(m.uuid),
            local: m.uuid == node.me.uuid,
            fingerprint: m.fingerprint.clone(),
        })
        .collect()
}

async fn probe(node: &Arc<Node>, host: String, port: u16, secret: Option<String>) -> CtlReply {
    let addr = match resolve(&host, port).await {
        Ok(a) => a,
        Err(e) => return fail(format!("Probe returned with {e}")),
    };
    if addr == node.listen || host.eq_ignore_ascii_case(&node.me.hostname) && port == node.me.port {
        return fail("Probe on localhost not needed");
    }
    let cfg = node.config();
    if let Some(m) = cfg
        .members
        .iter()
        .find(|m| m.hostname.eq_ignore_ascii_case(&host) && m.port == port)
    {
        return ok(ProbeResult {
            already: true,
            hostname: m.hostname.clone(),
            port,
            fingerprint: m.fingerprint.clone(),
        });
    }
    let conn = match node.dial(addr, None).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(%addr, "probe failed: {e}");
            return fail(format!(
                "Probe returned with Transport endpoint is not connected (no gsync daemon answered at {addr}/udp: is it running and listening on port {port}? give HOST:PORT if not)"
            ));
        }
    };
    let Some(fp) = net::peer_fingerprint(&conn) else {
        return fail("peer presented no certificate");
    };
    if let Some(m) = cfg.member_by_fingerprint(&fp) {
        return ok(ProbeResult {
            already: true,
            hostname: m.hostname.clone(),
            port: m.port,
            fingerprint: fp,
        });
    }
    let req = Request::Probe(Box::new(Probe {
        secret,
        host: host.clone(),
        port,
        config: cfg,
    }));
    let resp = tokio::time::timeout(super::RPC_TIMEOUT, call_on(&conn, &req)).await;
    let (member, doc) = match resp {
        Ok(Ok(Response::ProbeAccepted { member, config })) => (member, config),
        Ok(Ok(_)) => return fail("unexpected answer to probe"),
        Ok(Err(CallError::Refused { reason, .. })) => return fail(reason),
        Ok(Err(e)) => return fail(format!("Probe returned with {e}")),
        Err(_) => return fail("Probe returned with Transport endpoint is not connected"),
    };
    if member.fingerprint != fp {
        conn.close(code::PERMISSION.into(), b"key mismatch");
        return fail("peer answered with a key that does not match its certificate");
    }
    tracing::info!(peer = %host, key = %net::short(&fp), "probe accepted; peer key pinned");
    node.register(member.uuid, conn.clone());
    let n = node.clone();
    let c = conn.clone();
    let peer = member.uuid;
    node.spawn(async move { super::serve::serve_conn(n, c, peer).await });
    if let Err(e) = node.commit_config(*doc).await {
        return fail(e);
    }
    ok(ProbeResult {
        already: false,
        hostname: host,
        port,
        fingerprint: fp,
    })
}

/// Handles a probe from a node whose key is not pinned yet.
pub(super) fn accept_probe(node: &Arc<Node>, fp: &str, probe: Probe) -> Response {
    let cfg = node.config();
    let Some(prober) = probe.config.member_by_fingerprint(fp).cloned() else {
        return Response::error(
            code::PERMISSION,
            "probe from a key not in its own pool document",
        );
    };
    if cfg.members.len() > 1 {
        return Response::error(
            code::REFUSED,
            format!("{} is already part of another pool", probe.host),
        );
    }
    if !cfg.volumes.is_empty() {
        return Response::error(
            code::REFUSED,
            format!(
                "{} has volumes defined; delete them before joining a pool",
                probe.host
            ),
        );
    }
    if let Some(want) = &node.join_secret {
        if probe.secret.as_deref() != Some(want.as_str()) {
            return Response::error(
                code::PERMISSION,
                format!(
                    "{} requires a join secret (--secret) and the one given does not match",
                    probe.host
                ),
            );
        }
    }
    if probe.config.member(node.me.uuid).is_some() {
        return Response::error(code::REFUSED, "prober's pool already lists this node");
    }
    let mut me = node.me.clone();
    me.hostname = probe.host.clone();
    me.port = probe.port;
    let mut doc = probe.config.next(node.me.uuid);
    doc.members.push(me.clone());
    crate::lineage::stamp(&probe.config, &mut doc);
    if let Err(e) = node.store_config(doc.clone()) {
        return Response::error(code::INTERNAL, e);
    }
    tracing::warn!(prober = %prober.hostname, key = %net::short(fp), "joined a pool on first contact; prober key pinned");
    Response::ProbeAccepted {
        member: me,
        config: Box::new(doc),
    }
}

async fn detach(node: &Arc<Node>, host: &str, force: bool) -> CtlReply {
    let cfg = node.config();
    let Some(m) = cfg.member_by_host(host).cloned() else {
        return fail(format!("{host} is not part of cluster"));
    };
    if m.uuid == node.me.uuid {
        return fail(format!("{host} is localhost"));
    }
    let hosts_bricks = cfg
        .volumes
        .iter()
        .any(|v| v.bricks.iter().any(|b| b.node == m.uuid));
    if hosts_bricks && !force {
        return fail(format!(
            "Peer {host} hosts one or more bricks. If the peer is in not recoverable state then use either replace-brick or remove-brick command with force to remove all bricks from the peer and attempt the peer detach again."
        ));
    }
    // Tell the node first: once the new document is stored here, its
    // connection is closed and it could no longer learn it.
    super::lifecycle::tell_detached(node, &m).await;
    let mut doc = cfg.next(node.me.uuid);
    doc.members.retain(|x| x.uuid != m.uuid);
    match node.commit_config(doc).await {
        Ok(()) => ok(()),
        Err(e) => fail(e),
    }
}

fn valid_volume_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-')
}

/// Finds the member a brick host names: by hostname, else by address.
pub(super) async fn member_for_host(node: &Node, cfg: &PoolConfig, host: &str) -> Option<Uuid> {
    if let Some(m) = cfg.member_by_host(host) {
        return Some(m.uuid);
    }
    let ip = resolve(host, 0).await.ok()?.ip();
    if ip == node.listen.ip() {
        return Some(node.me.uuid);
    }
    for m in &cfg.members {
        if resolve(&m.hostname, 0).await.ok().map(|a| a.ip()) == Some(ip) {
            return Some(m.uuid);
        }
    }
    None
}

async fn volume_create(
    node: &Arc<Node>,
    name: String,
    replica: u32,
    bricks: Vec<String>,
    force: bool,
) -> CtlReply {
    let cfg = node.config();
    if !valid_volume_name(&name) {
        return fail("volume names use letters, digits, '-' and '_' (at most 64)");
    }
    if cfg.volume(&name).is_some() {
        return fail(format!("Volume {name} already exists"));
    }
    let replica = if replica == 0 {
        bricks.len() as u32
    } else {
        replica
    };
    // Bounded before anything is resolved or created: a command naming
    // 20,000 bricks is refused at once.
    if let Err(e) = crate::limits::check_replica(bricks.len().max(replica as usize)) {
        return fail(e);
    }
    if replica < 2 {
        return fail("replica count must be at least 2");
    }
    if bricks.len() != replica as usize {
        return fail(format!(
            "number of bricks ({}) must equal the replica count ({replica})",
            bricks.len()
        ));
    }
    let vol_id = Uuid::new_v4();
    let mut defs: Vec<BrickDef> = Vec::new();
    for (i, b) in bricks.iter().enumerate() {
        let Some((host, path)) = b.rsplit_once(':') else {
            return fail(format!("brick {b} is not in HOST:/PATH form"));
        };
        if !path.starts_with('/') || path.contains('\0') || path.split('/').any(|c| c == "..") {
            return fail(format!("brick {b}: the path must be absolute without '..'"));
        }
        let path = normalise_dir(path);
        let Some(uuid) = member_for_host(node, &cfg, host).await else {
            return fail(format!("Host {host} is not in 'Peer in Cluster' state"));
        };
        if !node.is_connected(uuid) {
            return fail(format!(
                "Host {host} is not in 'Peer in Cluster' state (disconnected)"
            ));
        }
        if defs.iter().any(|d| d.node == uuid && d.path == path) {
            return fail(format!("Found duplicate exports {host}:{path}"));
        }
        let used = cfg
            .volumes
            .iter()
            .flat_map(|v| v.bricks.iter().map(move |bd| (v, bd)))
            .find(|(_, bd)| bd.node == uuid && bd.path == path);
        if let Some((v, _)) = used {
            return fail(format!(
                "{host}:{path} is already part of volume {}",
                v.name
            ));
        }
        defs.push(BrickDef {
            id: brick_id(vol_id, i),
            node: uuid,
            host: host.to_string(),
            path,
            incarnation: 0,
            out_of_service: false,
        });
    }
    let nested: Vec<(Uuid, &str, &str)> = defs
        .iter()
        .map(|d| (d.node, d.host.as_str(), d.path.as_str()))
        .collect();
    if let Err(e) = super::lifecycle::nested_in_command(&nested) {
        return fail(e);
    }
    let placed: Vec<(Uuid, &str)> = defs.iter().map(|d| (d.node, d.host.as_str())).collect();
    if let Err(e) = crate::limits::check_placement(&cfg, &name, &[], &placed) {
        return fail(e);
    }
    // Each brick's node checks (and creates) its directory.
    for d in &defs {
        let res = if d.node == node.me.uuid {
            super::lifecycle::prepare_local(node, &d.path, force, vol_id)
        } else {
            let req = Request::PrepareBrick {
                path: d.path.clone(),
                force,
                volume: vol_id,
            };
            match node.call(d.node, req).await {
                Ok(_) => Ok(()),
                Err(CallError::Refused { reason, .. }) => Err(reason),
                Err(e) => Err(format!("Host {} is not reachable: {e}", d.host)),
            }
        };
        if let Err(reason) = res {
            return fail(reason.replace("{brick}", &d.name()));
        }
    }
    let mut doc = cfg.next(node.me.uuid);
    doc.volumes.push(Volume {
        name,
        id: vol_id,
        replica,
        bricks: defs,
        state: VolumeState::Created,
        options: Default::default(),
        overridden: Vec::new(),
    });
    match node.commit_config(doc).await {
        Ok(()) => ok(()),
        Err(e) => fail(e),
    }
}

pub(super) fn normalise_dir(p: &str) -> String {
    let s: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", s.join("/"))
}

/// Replica id of brick `i` of a volume: derived from the volume id so it is
/// unique across volumes, never zero.
pub(super) fn brick_id(vol: Uuid, i: usize) -> u64 {
    let h = blake3::hash(&[vol.as_bytes().as_slice(), &(i as u64).to_le_bytes()].concat());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b) | 1
}

async fn volume_change(
    node: &Arc<Node>,
    name: &str,
    f: impl FnOnce(&mut Volume) -> Result<(), String>,
) -> CtlReply {
    let cfg = node.config();
    let mut doc = cfg.next(node.me.uuid);
    let Some(v) = doc.volume_mut(name) else {
        return fail(format!("Volume {name} does not exist"));
    };
    if let Err(e) = f(v) {
        return fail(e);
    }
    match node.commit_config(doc).await {
        Ok(()) => ok(()),
        Err(e) => fail(e),
    }
}

async fn volume_delete(node: &Arc<Node>, name: &str) -> CtlReply {
    let cfg = node.config();
    let Some(v) = cfg.volume(name) else {
        return fail(format!("Volume {name} does not exist"));
    };
    if v.state == VolumeState::Started {
        return fail(format!(
            "Volume {name} has been started. Volume needs to be stopped before deletion."
        ));
    }
    let mut doc = cfg.next(node.me.uuid);
    doc.volumes.retain(|x| x.name != name);
    match node.commit_config(doc).await {
        Ok(()) => ok(()),
        Err(e) => fail(e),
    }
}

async fn volume_status(node: &Arc<Node>, name: Option<String>) -> CtlReply {
    let cfg = node.config();
    let vols: Vec<Volume> = match &name {
        Some(n) => match cfg.volume(n) {
            Some(v) => vec![v.clone()],
            None => return fail(format!("Volume {n} does not exist")),
        },
        None => cfg.volumes.clone(),
    };
    if let Some(v) = vols.first() {
        if name.is_some() && v.state != VolumeState::Started {
            return fail(format!("Volume {} is not started", v.name));
        }
    }
    let mut reports = Vec::new();
    for v in vols.into_iter().filter(|v| v.state == VolumeState::Started) {
        reports.push(status_of(node, &cfg, &v).await);
    }
    ok(reports)
}

async fn status_of(node: &Arc<Node>, cfg: &PoolConfig, v: &Volume) -> VolumeStatusReport {
    let mut nodes: Vec<Uuid> = v.bricks.iter().map(|b| b.node).collect();
    nodes.dedup();
    // Ask every brick node at once; each answer is bounded by RPC_TIMEOUT.
    let mut set = tokio::task::JoinSet::new();
    for u in nodes.clone() {
        let n = node.clone();
        let name = v.name.clone();
        set.spawn(async move {
            if u == n.me.uuid {
                let disks = super::disk::local_bricks(&n, &name);
                return (u, Some(crate::service::status(n.as_ref(), &name)), disks);
            }
            // Both at once, so the answer stays within one RPC_TIMEOUT.
            let (st, disks) = tokio::join!(
                n.call(
                    u,
                    Request::BrickStatus {
                        volume: name.clone()
                    }
                ),
                n.call(u, Request::BrickDisks { volume: name }),
            );
            let st = match st {
                Ok(Response::BrickStatus(s)) => Some(s),
                _ => None,
            };
            // Disks are extra: a node that does not answer (an older
            // version) leaves them out.
            let disks = match disks {
                Ok(Response::BrickDisks(d)) => d,
                _ => Vec::new(),
            };
            (u, st, disks)
        });
    }
    let mut answers = std::collections::HashMap::new();
    let mut disks = std::collections::HashMap::new();
    while let Some(r) = set.join_next().await {
        if let Ok((u, s, d)) = r {
            answers.insert(u, s);
            disks.extend(d);
        }
    }
    let bricks = v
        .bricks
        .iter()
        .map(|b| {
            let st = answers
                .get(&b.node)
                .and_then(|s| s.as_ref())
                .and_then(|s| s.iter().find(|x| x.brick == b.id))
                .cloned();
            let online = st.as_ref().is_some_and(|s| s.online);
            BrickRow {
                brick: b.name(),
                id: b.id,
                port: st.as_ref().filter(|_| online).map(|s| s.port),
                online,
                pid: st.as_ref().filter(|_| online).map(|s| s.pid),
                reason: st.as_ref().and_then(|s| s.offline_reason.clone()),
                detail: st,
                disk: disks.remove(&b.id),
            }
        })
        .collect();
    let self_heal = nodes
        .iter()
        .map(|u| {
            let up = answers.get(u).is_some_and(|s| s.is_some());
            let host = if *u == node.me.uuid {
                "localhost".to_string()
            } else {
                cfg.member(*u)
                    .map_or_else(|| u.to_string(), |m| m.hostname.clone())
            };
            let pid = answers
                .get(u)
                .and_then(|s| s.as_ref())
                .and_then(|s| s.first())
                .map(|s| s.pid);
            ShdRow {
                host,
                online: up,
                pid,
            }
        })
        .collect();
    VolumeStatusReport {
        volume: v.name.clone(),
        started: true,
        bricks,
        self_heal,
    }
}

async fn remote_config(node: &Arc<Node>, addr: &str) -> CtlReply {
    let (host, port) = match addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse().ok()?)))
    {
        Some(x) => x,
        None => (addr, node.listen.port()),
    };
    let sa = match resolve(host, port).await {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let conn = match node.dial(sa, None).await {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let res = tokio::time::timeout(super::RPC_TIMEOUT, call_on(&conn, &Request::PullConfig)).await;
    conn.close(0u32.into(), b"done");
    match res {
        Ok(Ok(Response::Config(doc))) => ok(doc
            .volumes
            .iter()
            .map(|v| v.name.clone())
            .collect::<Vec<_>>()),
        Ok(Ok(_)) => fail("unexpected answer"),
        Ok(Err(e)) => fail(format!("refused: {e}")),
        Err(_) => fail("refused: no answer"),
    }
}

async fn garbage(node: &Arc<Node>, addr: &str) -> CtlReply {
    use crate::store::types::{ChunkRef, Kind};
    use crate::wire::vv::VersionVector;

    /// Wire twin of `Entry` whose path is a plain string, so paths that
    /// `RelPath` refuses can be put on the wire.
    #[derive(Serialize)]
    struct RawEntry {
        path: String,
        kind: Kind,
        size: u64,
        mode: u32,
        mtime_ns: i64,
        owner: Option<(u32, u32)>,
        hash: [u8; 32],
        target: Option<String>,
        vv: VersionVector,
        data_vv: VersionVector,
        meta_vv: VersionVector,
        origin: Uuid,
    }
    /// Wire twin of `Offer`.
    #[derive(Serialize)]
    struct RawOffer {
        volume: Uuid,
        brick: u64,
        entry: RawEntry,
        chunks: Vec<ChunkRef>,
        write: Option<crate::wire::proto::WriteInfo>,
        from_brick: Option<u64>,
    }
    /// Wire twin of `Request` up to variant 6 (`Offer`): bincode encodes
    /// the variant index, so the unit variants only hold the places.
    #[derive(Serialize)]
    #[allow(dead_code)]
    enum RawRequest {
        V0,
        V1,
        V2,
        V3,
        V4,
        V5,
        Offer(Box<RawOffer>),
    }

    let cfg = node.config();
    let Some(m) = cfg
        .members
        .iter()
        .find(|m| format!("{}:{}", m.hostname, m.port) == addr || m.hostname == addr)
    else {
        return fail(format!("{addr} is not a pool member"));
    };
    let Some(conn) = node.connection(m.uuid) else {
        return fail(format!("{addr} is not connected"));
    };
    // A brick of the target, so the offers reach the store when they decode.
    let (volume, brick) = cfg
        .volumes
        .iter()
        .find_map(|v| {
            v.bricks
                .iter()
                .find(|b| b.node == m.uuid)
                .map(|b| (v.id, b.id))
        })
        .unwrap_or((Uuid::nil(), 0));
    const CHUNK: u32 = crate::store::chunking::MAX_CHUNK;
    let offer = |path: &str, size: u64| {
        let chunks: Vec<ChunkRef> = (0..size.div_ceil(u64::from(CHUNK)))
            .map(|i| ChunkRef {
                hash: *blake3::hash(&i.to_le_bytes()).as_bytes(),
                len: CHUNK,
            })
            .collect();
        let vv = VersionVector::new().bumped(0x6a72_6261_6765);
        RawRequest::Offer(Box::new(RawOffer {
            volume,
            brick,
            entry: RawEntry {
                path: path.to_string(),
                kind: Kind::File,
                size: chunks.len() as u64 * u64::from(CHUNK),
                mode: 0o644,
                mtime_ns: 0,
                owner: None,
                hash: [7; 32],
                target: None,
                vv: vv.clone(),
                data_vv: vv.clone(),
                meta_vv: vv,
                origin: node.me.uuid,
            },
            chunks,
            write: None,
            from_brick: Some(0x6a72_6261_6765),
        }))
    };
    let framed = |msg: &RawRequest| -> Result<Vec<u8>, String> {
        let body = crate::wire::codec::encode(msg).map_err(|e| e.to_string())?;
        let len = u32::try_from(body.len()).map_err(|e| e.to_string())?;
        Ok([len.to_be_bytes().as_slice(), &body].concat())
    };
    // The twin must encode exactly like the real request.
    match framed(&offer("garbage-drill", 1)).map(|b| crate::wire::codec::decode::<Request>(&b[4..]))
    {
        Ok(Ok(Request::Offer(o))) if o.entry.path.as_str() == "garbage-drill" => {}
        other => {
            return fail(format!(
                "the crafted offer does not decode as Request::Offer: {other:?}"
            ))
        }
    }
    // (frame bytes, trailing bytes sent after the offer's `Need` answer)
    let mut payloads: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![
        (vec![0x40, 0, 0, 0, 1, 2, 3], None), // announces a 1 GiB frame
        (vec![0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff], None), // unknown message type
        (vec![0, 0, 0, 200, 1, 2], None),     // truncated frame
        ((0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(), None),
    ];
    for path in [
        "../escape",
        "/etc/x",
        "a\0b",
        ".gsync/meta.db",
        "ok/../../escape2",
    ] {
        match framed(&offer(path, 1)) {
            Ok(b) => payloads.push((b, None)),
            Err(e) => return fail(e),
        }
    }
    // A valid offer whose first chunk frame announces 1 GiB.
    match framed(&offer("garbage-drill", 1 << 30)) {
        Ok(b) => payloads.push((b, Some(vec![0x40, 0, 0, 0, 1, 2, 3]))),
        Err(e) => return fail(e),
    }
    let mut sent = 0;
    for (p, after_need) in payloads {
        if let Ok((mut s, mut r)) = conn.open_bi().await {
            let _ = s.write_all(&p).await;
            if let Some(rest) = after_need {
                let need = tokio::time::timeout(
                    super::RPC_TIMEOUT,
                    crate::wire::frame::read_msg::<_, Response>(&mut r),
                )
                .await;
                if matches!(need, Ok(Ok(Response::Need(_)))) {
                    let _ = s.write_all(&rest).await;
                }
            }
            let _ = s.finish();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), r.read_to_end(1 << 16))
                .await;
            sent += 1;
        }
    }
    ok(sent)
}

//! Management commands from the CLI: pool membership and volume
//! definitions. Reads answer from the local document. A change is made from
//! the document the pool committed last (`Node::config_for_change`) and
//! committed through the pool's consensus: it fails within a few seconds,
//! with one line, when no majority of the pool is reachable. Calls to peers
//! are bounded by `RPC_TIMEOUT`.

use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use super::hosts::{member_for_host, resolve};
use super::{ask_on, call_on, CallError, Node};
use crate::control::{
    BrickRow, CtlReply, CtlRequest, NodeInfo, PeerInfo, ProbeResult, ShdRow, VolumeStatusReport,
};
use crate::host::Ask;
use crate::net;
use crate::options;
use crate::pool::{PoolConfig, Volume, VolumeState};
use crate::volume_def;
use crate::wire::call::PullConfig;
use crate::wire::proto::{self, code, Probe, Request};

pub(super) fn ok<T: Serialize>(data: T) -> CtlReply {
    CtlReply::ok(data)
}

pub(super) fn fail(reason: impl Into<String>) -> CtlReply {
    CtlReply::fail(reason)
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
        #[cfg(feature = "failpoints")]
        CtlRequest::DebugGarbage { addr } => super::drill::garbage(node, &addr).await,
        #[cfg(not(feature = "failpoints"))]
        CtlRequest::DebugGarbage { .. } => {
            fail("this daemon is built without the fault drills (feature `failpoints`)")
        }
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
    let leader = super::raft::leader(node);
    let voters = super::raft::voters(node);
    cfg.members
        .iter()
        .map(|m| PeerInfo {
            hostname: m.hostname.clone(),
            uuid: m.uuid.to_string(),
            port: m.port,
            connected: node.is_connected(m.uuid),
            local: m.uuid == node.me.uuid,
            fingerprint: m.fingerprint.clone(),
            leader: leader == Some(m.uuid),
            voter: voters.get(&m.uuid).copied().unwrap_or(false),
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
    // Already a member (answered from the local document, so it needs no
    // majority; checked again on the committed one below).
    let already = |cfg: &PoolConfig| {
        cfg.members
            .iter()
            .find(|m| m.hostname.eq_ignore_ascii_case(&host) && m.port == port)
            .map(|m| {
                ok(ProbeResult {
                    already: true,
                    hostname: m.hostname.clone(),
                    port,
                    fingerprint: m.fingerprint.clone(),
                })
            })
    };
    if let Some(reply) = already(&cfg) {
        return reply;
    }
    // The new member is added by a committed change, made from the
    // document the pool committed last.
    let cfg = match node.config_for_change().await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Some(reply) = already(&cfg) {
        return reply;
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
    let req = Probe {
        secret,
        host: host.clone(),
        port,
        config: cfg,
    };
    let resp = tokio::time::timeout(super::RPC_TIMEOUT, ask_on(&conn, req)).await;
    let (member, doc) = match resp {
        Ok(Ok(accepted)) => accepted,
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
    node.spawn(async move { super::conn::serve_conn(n, c, peer).await });
    if let Err(e) = node.commit_config(*doc).await {
        // The probed node waits for a leader that will never add it: it
        // is told to go back to a pool of one.
        let _ = tokio::time::timeout(super::RPC_TIMEOUT, call_on(&conn, &Request::Detached)).await;
        return fail(e);
    }
    super::raft::wait_membership(node, peer, true).await;
    ok(ProbeResult {
        already: false,
        hostname: host,
        port,
        fingerprint: fp,
    })
}

async fn detach(node: &Arc<Node>, host: &str, force: bool) -> CtlReply {
    let local = node.config();
    let Some(m) = local.member_by_host(host).cloned() else {
        return fail(format!("{host} is not part of cluster"));
    };
    if m.uuid == node.me.uuid {
        return fail(format!("{host} is localhost"));
    }
    let hosts_bricks = local
        .volumes
        .iter()
        .any(|v| v.bricks.iter().any(|b| b.node == m.uuid));
    if hosts_bricks && !force {
        return fail(format!(
            "Peer {host} hosts one or more bricks. If the peer is in not recoverable state then use either replace-brick or remove-brick command with force to remove all bricks from the peer and attempt the peer detach again."
        ));
    }
    let cfg = match node.config_for_change().await {
        Ok(c) => c,
        Err(e)
            if force
                && local.members.len() == 2
                && !node.is_alive(m.uuid, super::QUORUM_SILENCE) =>
        {
            return force_detach(node, local, &m, &e).await;
        }
        Err(e) => return fail(e),
    };
    let mut doc = cfg.next(node.me.uuid);
    doc.members.retain(|x| x.uuid != m.uuid);
    if let Err(e) = node.commit_config(doc).await {
        return fail(e);
    }
    super::raft::wait_membership(node, m.uuid, false).await;
    // Committed: tell the node (it goes back to a pool of one). One that
    // is down finds out when it comes back (every member refuses its key).
    super::lifecycle::tell_detached(node, &m).await;
    ok(())
}

/// The escape hatch of a two-node pool whose other node is dead: this node
/// rewrites the membership alone and becomes a pool of one (with its
/// volumes). Never used while the other node answers: both would then go
/// on alone.
async fn force_detach(
    node: &Arc<Node>,
    cfg: PoolConfig,
    m: &crate::pool::Member,
    why: &str,
) -> CtlReply {
    tracing::warn!(
        peer = %m.hostname,
        "forced detach without a majority ({why}): this node rewrites the pool membership alone and goes on as a pool of one"
    );
    let mut doc = cfg.next(node.me.uuid);
    doc.members.retain(|x| x.uuid != m.uuid);
    if let Err(e) = super::raft::restart(node, doc, true).await {
        return fail(e);
    }
    node.events.emit(
        "peer-force-detached",
        format!("{} detached by force without a majority", m.hostname),
        serde_json::json!({"peer": m.hostname, "uuid": m.uuid.to_string()}),
    );
    ok(())
}

async fn volume_create(
    node: &Arc<Node>,
    name: String,
    replica: u32,
    bricks: Vec<String>,
    force: bool,
) -> CtlReply {
    if !volume_def::valid_volume_name(&name) {
        return fail(volume_def::NAME_RULE);
    }
    let cfg = match node.config_for_change().await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let replica = match volume_def::create_replica(&cfg, &name, replica, bricks.len()) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut named = Vec::with_capacity(bricks.len());
    for b in &bricks {
        let (host, path) = match volume_def::split_brick(b) {
            Ok(x) => x,
            Err(e) => return fail(e),
        };
        let member = member_for_host(node, &cfg, host).await;
        named.push(volume_def::Named {
            host,
            path,
            member,
            connected: member.is_some_and(|m| node.is_connected(m)),
        });
    }
    let vol_id = Uuid::new_v4();
    let defs = match volume_def::create_bricks(&cfg, &name, vol_id, &named) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    // Each brick's node checks (and creates) its directory.
    for d in &defs {
        let req = proto::PrepareBrick {
            path: d.path.clone(),
            force,
            volume: vol_id,
        };
        let res = super::lifecycle::ask_brick_node(node, d.node, &d.host, req).await;
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

async fn volume_change(
    node: &Arc<Node>,
    name: &str,
    f: impl FnOnce(&mut Volume) -> Result<(), String>,
) -> CtlReply {
    if node.config().volume(name).is_none() {
        return fail(format!("Volume {name} does not exist"));
    }
    let cfg = match node.config_for_change().await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
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
    if node.config().volume(name).is_none() {
        return fail(format!("Volume {name} does not exist"));
    }
    let cfg = match node.config_for_change().await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
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
            // Both at once, so the answer stays within one RPC_TIMEOUT.
            let (st, disks) = tokio::join!(
                n.ask(
                    u,
                    proto::BrickStatus {
                        volume: name.clone()
                    }
                ),
                n.ask(u, proto::BrickDisks { volume: name }),
            );
            // Disks are extra: a node that does not answer (an older
            // version) leaves them out.
            let (st, disks) = (st.ok(), disks.unwrap_or_default());
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
    let res = tokio::time::timeout(super::RPC_TIMEOUT, ask_on(&conn, PullConfig)).await;
    conn.close(0u32.into(), b"done");
    match res {
        Ok(Ok(doc)) => ok(doc
            .volumes
            .iter()
            .map(|v| v.name.clone())
            .collect::<Vec<_>>()),
        Ok(Err(e)) => fail(format!("refused: {e}")),
        Err(_) => fail("refused: no answer"),
    }
}

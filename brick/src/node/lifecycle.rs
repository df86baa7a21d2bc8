//! The brick lifecycle commands, online and with GlusterFS's verbs:
//! `replace-brick`, `reset-brick`, `add-brick` and `remove-brick`.
//!
//! Each is one change of the pool document. The nodes react to it like to
//! any other: a node serves exactly the bricks the document gives it (see
//! `store::BrickSet::reconcile`), and every brick compares its whole tree
//! with a peer whose `incarnation` it has not compared with yet (see
//! `replicate`), which is how a new, replaced or reset brick is filled.
//! A replaced or reset brick keeps its replica id, so version vectors and
//! the pending rows the other bricks hold for it stay valid.

use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use super::hosts::member_for_host;
use super::{CallError, Node};
use crate::control::CtlReply;
use crate::host::Ask;
use crate::pool::{BrickDef, PoolConfig, Volume};
use crate::volume_def::{brick_id, nested_in_command, split_brick};
use crate::wire::proto::{self, Request};

/// What a lifecycle command changed (its `--json` answer).
#[derive(Debug, Serialize)]
struct Changed {
    volume: String,
    replica: u32,
    bricks: Vec<String>,
}

fn changed(v: &Volume) -> CtlReply {
    CtlReply::ok(Changed {
        volume: v.name.clone(),
        replica: v.replica,
        bricks: v.bricks.iter().map(BrickDef::name).collect(),
    })
}

/// A `HOST:/PATH` argument resolved to a pool member.
struct Target {
    host: String,
    path: String,
    node: Uuid,
}

async fn parse_brick(node: &Node, cfg: &PoolConfig, b: &str) -> Result<Target, String> {
    let (host, path) = split_brick(b)?;
    let Some(uuid) = member_for_host(node, cfg, host).await else {
        return Err(format!("Host {host} is not in 'Peer in Cluster' state"));
    };
    Ok(Target {
        host: host.to_string(),
        path,
        node: uuid,
    })
}

/// The brick of `v` that `b` names.
async fn find_brick(node: &Node, cfg: &PoolConfig, v: &Volume, b: &str) -> Result<u64, String> {
    let t = parse_brick(node, cfg, b)
        .await
        .map_err(|_| format!("brick: {b} does not exist in volume: {}", v.name))?;
    v.bricks
        .iter()
        .find(|d| d.node == t.node && d.path == t.path)
        .map(|d| d.id)
        .ok_or_else(|| format!("brick: {b} does not exist in volume: {}", v.name))
}

/// Refuses a brick directory already used by a volume, then has its node
/// check and create it (the volume-id marker included).
async fn prepare_new(
    node: &Arc<Node>,
    cfg: &PoolConfig,
    vol: Uuid,
    t: &Target,
    force: bool,
) -> Result<(), String> {
    if !node.is_connected(t.node) {
        return Err(format!(
            "Host {} is not in 'Peer in Cluster' state (disconnected)",
            t.host
        ));
    }
    if let Some(v) = cfg.volumes.iter().find(|v| {
        v.bricks
            .iter()
            .any(|d| d.node == t.node && d.path == t.path)
    }) {
        return Err(format!(
            "{}:{} is already part of volume {}",
            t.host, t.path, v.name
        ));
    }
    let name = format!("{}:{}", t.host, t.path);
    let req = proto::PrepareBrick {
        path: t.path.clone(),
        force,
        volume: vol,
    };
    ask_brick_node(node, t.node, &t.host, req)
        .await
        .map_err(|r| r.replace("{brick}", &name))
}

/// Longest wait for a node to prepare or reset a brick directory.
const PREPARE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Asks the node of a brick (this one included, answered in-process) to
/// prepare or reset a brick directory; the refusal's reason, or why the
/// node could not be asked. The deadline is [`PREPARE_LIMIT`]: setting a
/// directory's content aside and fsyncing it can take seconds on a busy
/// disk, and a command that gave up on it would report a failure for a
/// change that completes anyway.
pub(super) async fn ask_brick_node<C>(
    node: &Arc<Node>,
    target: Uuid,
    host: &str,
    req: C,
) -> Result<(), String>
where
    C: crate::wire::call::Call<Reply = ()>,
{
    match node.ask_timeout(target, req, PREPARE_LIMIT).await {
        Ok(()) => Ok(()),
        Err(CallError::Refused { reason, .. }) => Err(reason),
        Err(e) => Err(format!("Host {host} is not reachable: {e}")),
    }
}

/// Checks and prepares a brick directory of this node for volume `vol`
/// (`volume create`, `add-brick`, `replace-brick`). Refused, with one line
/// naming both paths, when it overlaps after resolving symlinks and `..`:
/// another brick of this node, a directory already marked as a brick
/// (an earlier brick of the same command), or one of this node's mounts.
pub(super) async fn prepare_local(
    node: &Arc<Node>,
    path: &str,
    force: bool,
    vol: Uuid,
) -> Result<(), String> {
    let (n, p) = (node.clone(), path.to_string());
    // The node database and the disk, off the async executor.
    tokio::task::spawn_blocking(move || prepare_local_now(&n, &p, force, vol))
        .await
        .unwrap_or_else(|e| Err(format!("preparing {path} failed: {e}")))
}

fn prepare_local_now(node: &Node, path: &str, force: bool, vol: Uuid) -> Result<(), String> {
    use crate::overlap::{overlap, real_path};
    use std::path::Path;
    let dir = Path::new(path);
    let real = real_path(dir);
    let cfg = node.config();
    let mut bricks: Vec<(String, std::path::PathBuf)> = cfg
        .volumes
        .iter()
        .flat_map(|v| v.bricks.iter())
        .filter(|b| b.node == node.me.uuid)
        .map(|b| (b.name(), real_path(Path::new(&b.path))))
        .collect();
    if let Some(a) = real
        .ancestors()
        .skip(1)
        .find(|a| crate::store::marker_path(a).exists())
    {
        bricks.push((a.display().to_string(), a.to_path_buf()));
    }
    let mounts: Vec<std::path::PathBuf> = node
        .db()
        .mounts_sync()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(d, _)| real_path(Path::new(&d)))
        .collect();
    if let Some(why) = overlap(dir, &real, &mounts, &bricks) {
        return Err(why);
    }
    crate::store::prepare_brick_dir(dir, force, vol)
}

/// Applies `f` to volume `name` in a new document and commits it.
async fn commit_volume(
    node: &Arc<Node>,
    name: &str,
    f: impl FnOnce(&mut Volume) -> Result<(), String>,
) -> Result<Volume, String> {
    let mut doc = node.config().next(node.me.uuid);
    let Some(v) = doc.volume_mut(name) else {
        return Err(format!("Volume {name} does not exist"));
    };
    f(v)?;
    let out = v.clone();
    node.commit_config(doc).await?;
    Ok(out)
}

/// `volume replace-brick VOL OLD NEW commit force`.
pub(super) async fn replace_brick(node: &Arc<Node>, name: &str, old: &str, new: &str) -> CtlReply {
    if node.config().volume(name).is_none() {
        return CtlReply::fail(format!("Volume {name} does not exist"));
    }
    let cfg = match node.config_for_change().await {
        Ok(c) => c,
        Err(e) => return CtlReply::fail(e),
    };
    let Some(v) = cfg.volume(name).cloned() else {
        return CtlReply::fail(format!("Volume {name} does not exist"));
    };
    let id = match find_brick(node, &cfg, &v, old).await {
        Ok(id) => id,
        Err(e) => return CtlReply::fail(e),
    };
    let t = match parse_brick(node, &cfg, new).await {
        Ok(t) => t,
        Err(e) => return CtlReply::fail(e),
    };
    if v.brick(id)
        .is_some_and(|d| d.node == t.node && d.path == t.path)
    {
        return CtlReply::fail(format!(
            "source brick {old} and destination brick {new} are the same; use reset-brick to re-initialise a brick in place"
        ));
    }
    // "commit force" is part of the verb: the new directory may be on the
    // root filesystem or hold files (they are adopted and compared).
    if let Err(e) = prepare_new(node, &cfg, v.id, &t, true).await {
        return CtlReply::fail(e);
    }
    let res = commit_volume(node, name, |v| {
        let d = v
            .bricks
            .iter_mut()
            .find(|d| d.id == id)
            .ok_or_else(|| format!("brick: {old} does not exist in volume: {name}"))?;
        d.node = t.node;
        d.host = t.host.clone();
        d.path = t.path.clone();
        d.incarnation += 1;
        d.out_of_service = false;
        Ok(())
    })
    .await;
    match res {
        Ok(v) => {
            tracing::info!(volume = %name, %old, %new, "brick replaced; the new brick is filled by a full heal");
            changed(&v)
        }
        Err(e) => CtlReply::fail(e),
    }
}

/// `volume reset-brick VOL BRICK start` (`commit` false) and
/// `volume reset-brick VOL BRICK BRICK commit force` (`commit` true).
pub(super) async fn reset_brick(
    node: &Arc<Node>,
    name: &str,
    brick: &str,
    commit: bool,
) -> CtlReply {
    if node.config().volume(name).is_none() {
        return CtlReply::fail(format!("Volume {name} does not exist"));
    }
    let cfg = match node.config_for_change().await {
        Ok(c) => c,
        Err(e) => return CtlReply::fail(e),
    };
    let Some(v) = cfg.volume(name).cloned() else {
        return CtlReply::fail(format!("Volume {name} does not exist"));
    };
    let id = match find_brick(node, &cfg, &v, brick).await {
        Ok(id) => id,
        Err(e) => return CtlReply::fail(e),
    };
    let Some(def) = v.brick(id).cloned() else {
        return CtlReply::fail(format!("brick: {brick} does not exist in volume: {name}"));
    };
    if !commit {
        if def.out_of_service {
            return CtlReply::fail(format!(
                "brick {brick} is already out of service (reset-brick start was done)"
            ));
        }
        return match commit_volume(node, name, |v| set_out_of_service(v, id, true)).await {
            Ok(v) => {
                tracing::warn!(volume = %name, %brick, "brick taken out of service (reset-brick start)");
                changed(&v)
            }
            Err(e) => CtlReply::fail(e),
        };
    }
    if !node.is_connected(def.node) {
        return CtlReply::fail(format!(
            "Host {} is not in 'Peer in Cluster' state (disconnected)",
            def.host
        ));
    }
    // Stop serving it first, so nothing writes to the directory while it is
    // re-initialised.
    if !def.out_of_service {
        if let Err(e) = commit_volume(node, name, |v| set_out_of_service(v, id, true)).await {
            return CtlReply::fail(e);
        }
    }
    let req = proto::ResetBrick {
        path: def.path.clone(),
        volume: v.id,
    };
    let res = ask_brick_node(node, def.node, &def.host, req).await;
    if let Err(e) = res {
        return CtlReply::fail(format!(
            "{e} (the brick stays out of service; run the command again)"
        ));
    }
    let res = commit_volume(node, name, |v| {
        set_out_of_service(v, id, false)?;
        if let Some(d) = v.bricks.iter_mut().find(|d| d.id == id) {
            d.incarnation += 1;
        }
        Ok(())
    })
    .await;
    match res {
        Ok(v) => {
            tracing::info!(volume = %name, %brick, "brick re-initialised; it is filled by a full heal");
            changed(&v)
        }
        Err(e) => CtlReply::fail(e),
    }
}

fn set_out_of_service(v: &mut Volume, id: u64, on: bool) -> Result<(), String> {
    let d = v
        .bricks
        .iter_mut()
        .find(|d| d.id == id)
        .ok_or_else(|| "the brick is no longer part of the volume".to_string())?;
    d.out_of_service = on;
    Ok(())
}

/// Re-initialises a brick directory of this node (it must not be served).
pub(super) async fn reset_local_brick(
    node: &Arc<Node>,
    path: &str,
    volume: Uuid,
) -> Result<(), String> {
    let (n, p) = (node.clone(), path.to_string());
    // The disk, off the async executor.
    tokio::task::spawn_blocking(move || reset_local_brick_now(&n, &p, volume))
        .await
        .unwrap_or_else(|e| Err(format!("re-initialising {path} failed: {e}")))
}

fn reset_local_brick_now(node: &Node, path: &str, volume: Uuid) -> Result<(), String> {
    let cfg = node.config();
    let def = cfg
        .volumes
        .iter()
        .find(|v| v.id == volume)
        .and_then(|v| {
            v.bricks
                .iter()
                .find(|d| d.node == node.me.uuid && d.path == path)
        })
        .ok_or_else(|| format!("{path} is not a brick of this node"))?;
    if node.bricks.get(def.id).is_some() {
        return Err(format!("{path} is still being served; retry"));
    }
    let note = crate::lifecycle::reinit_brick_dir(std::path::Path::new(path), volume)?;
    tracing::warn!(brick = %path, "brick directory re-initialised {note}");
    Ok(())
}

/// `volume add-brick VOL replica N BRICK... [force]`.
pub(super) async fn add_brick(
    node: &Arc<Node>,
    name: &str,
    replica: u32,
    bricks: &[String],
    force: bool,
) -> CtlReply {
    if node.config().volume(name).is_none() {
        return CtlReply::fail(format!("Volume {name} does not exist"));
    }
    let cfg = match node.config_for_change().await {
        Ok(c) => c,
        Err(e) => return CtlReply::fail(e),
    };
    let Some(v) = cfg.volume(name).cloned() else {
        return CtlReply::fail(format!("Volume {name} does not exist"));
    };
    if bricks.is_empty() {
        return CtlReply::fail("no bricks given (HOST:/PATH...)");
    }
    let want = v.replica as usize + bricks.len();
    if replica as usize != want {
        return CtlReply::fail(format!(
            "Incorrect replica count ({replica}) supplied: the volume has {} bricks and {} are added, so the new count is {want}",
            v.replica,
            bricks.len()
        ));
    }
    if let Err(e) = crate::limits::check_replica(want) {
        return CtlReply::fail(e);
    }
    let mut targets: Vec<Target> = Vec::new();
    for b in bricks {
        let t = match parse_brick(node, &cfg, b).await {
            Ok(t) => t,
            Err(e) => return CtlReply::fail(e),
        };
        if targets.iter().any(|d| d.node == t.node && d.path == t.path) {
            return CtlReply::fail(format!("Found duplicate exports {}:{}", t.host, t.path));
        }
        targets.push(t);
    }
    let nested: Vec<(Uuid, &str, &str)> = v
        .bricks
        .iter()
        .map(|d| (d.node, d.host.as_str(), d.path.as_str()))
        .chain(
            targets
                .iter()
                .map(|t| (t.node, t.host.as_str(), t.path.as_str())),
        )
        .collect();
    if let Err(e) = nested_in_command(&nested) {
        return CtlReply::fail(e);
    }
    let placed: Vec<(Uuid, &str)> = targets.iter().map(|t| (t.node, t.host.as_str())).collect();
    if let Err(e) = crate::limits::check_placement(&cfg, name, &v.bricks, &placed) {
        return CtlReply::fail(e);
    }
    let mut defs: Vec<BrickDef> = Vec::new();
    let mut next_index = v.bricks.len();
    for t in targets {
        if let Err(e) = prepare_new(node, &cfg, v.id, &t, force).await {
            return CtlReply::fail(e);
        }
        let mut id = brick_id(v.id, next_index);
        while v.brick(id).is_some() || defs.iter().any(|d| d.id == id) {
            next_index += 1;
            id = brick_id(v.id, next_index);
        }
        next_index += 1;
        defs.push(BrickDef {
            id,
            node: t.node,
            host: t.host,
            path: t.path,
            incarnation: 1,
            out_of_service: false,
        });
    }
    let res = commit_volume(node, name, |v| {
        if v.replica as usize + defs.len() != replica as usize {
            return Err("the volume changed meanwhile; run the command again".into());
        }
        v.bricks.extend(defs);
        v.replica = replica;
        Ok(())
    })
    .await;
    match res {
        Ok(v) => {
            tracing::info!(volume = %name, replica, "bricks added; they are filled by a full heal");
            changed(&v)
        }
        Err(e) => CtlReply::fail(e),
    }
}

/// `volume remove-brick VOL replica N BRICK... force`.
pub(super) async fn remove_brick(
    node: &Arc<Node>,
    name: &str,
    replica: u32,
    bricks: &[String],
) -> CtlReply {
    if node.config().volume(name).is_none() {
        return CtlReply::fail(format!("Volume {name} does not exist"));
    }
    let cfg = match node.config_for_change().await {
        Ok(c) => c,
        Err(e) => return CtlReply::fail(e),
    };
    let Some(v) = cfg.volume(name).cloned() else {
        return CtlReply::fail(format!("Volume {name} does not exist"));
    };
    if bricks.is_empty() {
        return CtlReply::fail("no bricks given (HOST:/PATH...)");
    }
    let mut ids = Vec::new();
    for b in bricks {
        match find_brick(node, &cfg, &v, b).await {
            Ok(id) if !ids.contains(&id) => ids.push(id),
            Ok(_) => return CtlReply::fail(format!("brick {b} is given twice")),
            Err(e) => return CtlReply::fail(e),
        }
    }
    let want = v.replica as usize - ids.len().min(v.replica as usize);
    if replica as usize != want {
        return CtlReply::fail(format!(
            "Incorrect replica count ({replica}) supplied: the volume has {} bricks and {} are removed, so the new count is {want}",
            v.replica,
            ids.len()
        ));
    }
    if replica < 2 {
        return CtlReply::fail("a replicated volume keeps at least 2 bricks");
    }
    let count: u32 = v.option("cluster.quorum-count").parse().unwrap_or(0);
    if count > replica {
        return CtlReply::fail(format!(
            "cluster.quorum-count is {count}, more than the {replica} bricks that would remain; lower it first"
        ));
    }
    let res = commit_volume(node, name, |v| {
        v.bricks.retain(|d| !ids.contains(&d.id));
        v.replica = v.bricks.len() as u32;
        Ok(())
    })
    .await;
    match res {
        Ok(v) => {
            tracing::info!(volume = %name, replica, "bricks removed; their data stays on disk");
            changed(&v)
        }
        Err(e) => CtlReply::fail(e),
    }
}

/// Tells node `m` that it was detached from the pool (bounded wait; a node
/// that is down learns it when it next dials, see `note_dial`). Its pool
/// connection was closed when the change was applied here, so the message
/// goes on a new one, pinned to its key.
pub(super) async fn tell_detached(node: &Arc<Node>, m: &crate::pool::Member) {
    let told = async {
        let addr = super::hosts::resolve(&m.hostname, m.port)
            .await
            .map_err(CallError::Dial)?;
        let conn = node.dial(addr, Some(m.fingerprint.clone())).await?;
        let r = super::call_on(&conn, &Request::Detached).await;
        conn.close(0u32.into(), b"detached");
        r
    };
    match tokio::time::timeout(super::RPC_TIMEOUT, told).await {
        Ok(Ok(_)) => tracing::info!(peer = %m.hostname, "detached node told"),
        Ok(Err(e)) => tracing::warn!(peer = %m.hostname, "could not tell the detached node: {e}"),
        Err(_) => tracing::warn!(peer = %m.hostname, "could not tell the detached node: no answer"),
    }
}

/// A member told this node it was detached: it leaves the pool (a pool of
/// one again, ready to be probed) and stops dialing the others, before it
/// answers, so that a `peer probe` run right after the `peer detach` finds
/// a pool of one. The message comes on a connection of its own (never
/// registered as a member's link), which leaving does not close.
pub(super) async fn detached_by(node: &Arc<Node>, by: Uuid) {
    if node.config().member(by).is_none() {
        return;
    }
    tracing::warn!(by = %node.peer_name(by), "this node was detached from the pool");
    node.leave_pool().await;
}

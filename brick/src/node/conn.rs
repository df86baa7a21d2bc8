//! One connection's life, both ways: dial loops keep a connection to
//! every pool member (the lower id dials; the other only after hearing
//! nothing for a while, e.g. right after a probe), the accept loop takes
//! incoming ones; each starts with a `Hello` whose protocol version both
//! sides check, is registered as the link to that member (only after that
//! check: a refused `Hello` is answered and its connection closed), and has
//! its streams served (`serve::dispatch`) until it closes. A key that is not a
//! member's may only probe (first contact). The pool document itself
//! travels only through the pool's consensus (`raft`). Malformed frames
//! close the offending stream, never the daemon.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::{RecvStream, SendStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{CallError, Node};
use crate::net;
use crate::wire::frame::{self, FrameError};
use crate::wire::proto::{code, Hello, Probe, Request, Response, PROTOCOL_VERSION};

const RETRY: Duration = Duration::from_millis(500);
const HIGHER_WAITS: Duration = Duration::from_secs(3);
/// The longest the member list goes unchecked (a backstop: a new pool
/// document wakes the check at once).
const MEMBERS_BACKSTOP: Duration = Duration::from_secs(30);

pub(super) async fn supervise(node: Arc<Node>) {
    let mut running: HashMap<Uuid, CancellationToken> = HashMap::new();
    let mut changes = node.subscribe_changes();
    loop {
        changes.borrow_and_update();
        let cfg = node.config();
        for m in &cfg.members {
            if m.uuid != node.me.uuid && !running.contains_key(&m.uuid) {
                let t = node.token.child_token();
                running.insert(m.uuid, t.clone());
                let n = node.clone();
                let peer = m.uuid;
                node.spawn(async move { dial_loop(n, peer, t).await });
            }
        }
        running.retain(|u, t| {
            let keep = cfg.member(*u).is_some();
            if !keep {
                t.cancel();
            }
            keep
        });
        // Members come and go with the pool document.
        tokio::select! {
            _ = node.token.cancelled() => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(MEMBERS_BACKSTOP) => {}
        }
    }
}

async fn dial_loop(node: Arc<Node>, peer: Uuid, token: CancellationToken) {
    let mut last_up = Instant::now();
    let mut failures = 0u32;
    let mut was_up = false;
    loop {
        if let Some(conn) = node.connection(peer) {
            if !was_up {
                was_up = true;
                peer_event(&node, peer, true, "");
            }
            tokio::select! {
                _ = token.cancelled() => return,
                reason = conn.closed() => {
                    tracing::warn!(peer = %node.peer_name(peer), "peer disconnected: {reason}");
                    // A replaced connection is not a peer going down.
                    if node.connection(peer).is_none() {
                        was_up = false;
                        peer_event(&node, peer, false, &reason.to_string());
                    }
                }
            }
            last_up = Instant::now();
            continue;
        }
        if node.me.uuid < peer || last_up.elapsed() > HIGHER_WAITS {
            match connect(&node, peer).await {
                Ok(()) => {
                    failures = 0;
                    note_dial(&node, peer, None);
                    continue;
                }
                Err(e) => {
                    note_dial(&node, peer, Some(&e));
                    failures += 1;
                    if failures == 1 || failures % 60 == 0 {
                        tracing::info!(peer = %node.peer_name(peer), "cannot reach peer: {e}");
                    }
                }
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Records a peer coming up or going down in the node's event log.
fn peer_event(node: &Node, peer: Uuid, up: bool, reason: &str) {
    let name = node.peer_name(peer);
    let data = serde_json::json!({"peer": name, "uuid": peer.to_string(), "reason": reason});
    if up {
        node.events
            .emit("peer-up", format!("peer {name} connected"), data);
    } else {
        node.events.emit(
            "peer-down",
            format!("peer {name} disconnected: {reason}"),
            data,
        );
    }
}

async fn connect(node: &Arc<Node>, peer: Uuid) -> Result<(), CallError> {
    let member = node
        .config()
        .member(peer)
        .cloned()
        .ok_or_else(|| CallError::Dial("not a member".into()))?;
    let addr = super::hosts::resolve(&member.hostname, member.port)
        .await
        .map_err(CallError::Dial)?;
    let conn = node.dial(addr, Some(member.fingerprint.clone())).await?;
    let theirs = super::ask_on(&conn, node.hello())
        .await
        .map_err(|e| refusal(&conn).unwrap_or(e))?;
    if theirs.version != PROTOCOL_VERSION || theirs.node != peer {
        conn.close(code::VERSION.into(), b"version");
        return Err(CallError::Dial(format!(
            "peer speaks protocol {} (we speak {PROTOCOL_VERSION})",
            theirs.version
        )));
    }
    node.register(peer, conn.clone());
    tracing::info!(peer = %member.hostname, "peer connected");
    let n = node.clone();
    let c = conn.clone();
    node.spawn(async move { serve_conn(n, c, peer).await });
    Ok(())
}

pub(super) async fn accept_loop(node: Arc<Node>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    loop {
        let incoming = tokio::select! {
            _ = node.token.cancelled() => return,
            i = node.endpoint.accept() => match i {
                Some(i) => i,
                None => return,
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let n = node.clone();
        node.spawn(async move {
            handle_incoming(n, incoming).await;
            drop(permit);
        });
    }
}

async fn handle_incoming(node: Arc<Node>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%remote, "handshake failed: {e}");
            return;
        }
    };
    let Some(fp) = net::peer_fingerprint(&conn) else {
        conn.close(code::PERMISSION.into(), b"no certificate");
        return;
    };
    let member = node.config().member_by_fingerprint(&fp).map(|m| m.uuid);
    match member {
        Some(peer) => {
            if greet(&node, &conn, peer).await {
                node.register(peer, conn.clone());
            }
            serve_conn(node, conn, peer).await;
        }
        None => serve_stranger(node, conn, fp).await,
    }
}

/// Serves the first stream of member `peer`'s incoming connection and says
/// whether it was a good `Hello`: only then is the connection registered as
/// the link to that member. A refused `Hello` (another protocol version, a
/// different node id) is answered and the connection closed once the
/// dialer had the answer; it never shows as a link. Any other first request
/// (a one-off message such as `Detached`) is served without registering.
async fn greet(node: &Arc<Node>, conn: &quinn::Connection, peer: Uuid) -> bool {
    let first = tokio::select! {
        _ = node.token.cancelled() => return false,
        s = tokio::time::timeout(super::RPC_TIMEOUT, conn.accept_bi()) => s,
    };
    let Ok(Ok((mut send, mut recv))) = first else {
        return false;
    };
    let Some(req) = read_request(node, peer, &mut send, &mut recv).await else {
        return false;
    };
    let Request::Hello(h) = req else {
        let n = node.clone();
        node.spawn(async move { serve_request(n, peer, req, send, recv).await });
        return false;
    };
    let answer = answer_hello(node, peer, &h);
    let good = matches!(answer, Response::Hello(_));
    let _ = frame::write_msg(&mut send, &answer).await;
    let _ = send.finish();
    if !good {
        // Let the refusal reach the dialer (it closes on reading it).
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
        conn.close(code::VERSION.into(), b"version");
    }
    good
}

/// Serves the streams a member opens on `conn` until it closes.
pub(super) async fn serve_conn(node: Arc<Node>, conn: quinn::Connection, peer: Uuid) {
    serve_streams(&node, &conn, peer).await;
    // Closed (or shutting down): whoever follows the connections looks again.
    node.note_change();
}

async fn serve_streams(node: &Arc<Node>, conn: &quinn::Connection, peer: Uuid) {
    loop {
        let (send, recv) = tokio::select! {
            _ = node.token.cancelled() => return,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        // A member removed from the pool loses access at once.
        if node.config().member(peer).is_none() {
            conn.close(code::PERMISSION.into(), b"not a pool member");
            return;
        }
        let n = node.clone();
        node.spawn(async move { handle_stream(n, peer, send, recv).await });
    }
}

async fn handle_stream(node: Arc<Node>, peer: Uuid, mut send: SendStream, mut recv: RecvStream) {
    let Some(req) = read_request(&node, peer, &mut send, &mut recv).await else {
        return;
    };
    serve_request(node, peer, req, send, recv).await;
}

/// Reads one request; a malformed one is answered with an error here.
async fn read_request(
    node: &Node,
    peer: Uuid,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Option<Request> {
    match frame::read_msg(recv).await {
        Ok(r) => Some(r),
        Err(FrameError::Closed) => None,
        Err(e) => {
            tracing::warn!(peer = %node.peer_name(peer), "malformed request refused: {e}");
            let _ =
                frame::write_msg(send, &Response::error(code::BAD_REQUEST, e.to_string())).await;
            let _ = send.finish();
            None
        }
    }
}

async fn serve_request(
    node: Arc<Node>,
    peer: Uuid,
    req: Request,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    // A Hello after the first stream (the dialer's check is on the first).
    if let Request::Hello(h) = req {
        let _ = frame::write_msg(&mut send, &answer_hello(&node, peer, &h)).await;
        let _ = send.finish();
        return;
    }
    if let Err(e) = super::serve::dispatch(&node, peer, req, &mut send, &mut recv).await {
        tracing::debug!(peer = %node.peer_name(peer), "request failed: {e}");
    }
    let _ = send.finish();
}

/// The answer to member `peer`'s `Hello`: ours, or a refusal when its
/// version (or node id) is not what this node can serve.
fn answer_hello(node: &Node, peer: Uuid, h: &Hello) -> Response {
    if h.node != peer {
        Response::error(
            code::PERMISSION,
            "hello from a different node id than its key",
        )
    } else if h.version != PROTOCOL_VERSION {
        // Checked on both sides: a node of another version must not
        // exchange pool documents or data it may misread.
        tracing::warn!(
            peer = %node.peer_name(peer),
            "peer speaks protocol {} (this node speaks {}): not served; run the same gsync version on every node",
            h.version,
            PROTOCOL_VERSION
        );
        Response::error(
            code::VERSION,
            format!(
                "this node speaks protocol {} and the peer {}: run the same gsync version on every node",
                PROTOCOL_VERSION,
                h.version
            ),
        )
    } else {
        Response::Hello(node.hello())
    }
}

/// A connection from a key that is not pinned: only a probe is allowed.
async fn serve_stranger(node: Arc<Node>, conn: quinn::Connection, fp: String) {
    let remote = conn.remote_address();
    let Ok(Ok((mut send, mut recv))) =
        tokio::time::timeout(super::RPC_TIMEOUT, conn.accept_bi()).await
    else {
        return;
    };
    let req: Result<Request, _> = frame::read_msg(&mut recv).await;
    let Ok(Request::Probe(probe)) = req else {
        tracing::warn!(%remote, key = %net::short(&fp), "refused connection from a key that is not a pool member");
        let _ = frame::write_msg(
            &mut send,
            &Response::error(code::PERMISSION, "not a pool member"),
        )
        .await;
        let _ = send.finish();
        conn.close(code::PERMISSION.into(), b"not a pool member");
        return;
    };
    let resp = accept_probe(&node, &conn, &fp, *probe).await;
    let accepted = matches!(resp, Response::ProbeAccepted { .. });
    if !accepted {
        tracing::warn!(%remote, key = %net::short(&fp), "refused probe: {resp:?}");
    }
    let _ = frame::write_msg(&mut send, &resp).await;
    let _ = send.finish();
    if !accepted {
        // Let the answer reach the prober before closing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close(code::REFUSED.into(), b"probe refused");
        return;
    }
    if let Some(peer) = node.config().member_by_fingerprint(&fp).map(|m| m.uuid) {
        node.register(peer, conn.clone());
        serve_conn(node, conn, peer).await;
    }
}

/// Handles a probe from a node whose key is not pinned yet: the node
/// leaves its pool of one and waits for the pool's leader to add it.
pub(super) async fn accept_probe(
    node: &Arc<Node>,
    conn: &quinn::Connection,
    fp: &str,
    probe: Probe,
) -> Response {
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
    // The prober's connection is this node's link to the pool from the
    // moment the new document shows: no dial to the prober (refused until
    // its change is committed) may suggest this node was detached.
    node.register(prober.uuid, conn.clone());
    if let Err(e) = super::raft::restart(node, doc.clone(), false).await {
        return Response::error(code::INTERNAL, e);
    }
    tracing::warn!(prober = %prober.hostname, key = %net::short(fp), "joined a pool on first contact; prober key pinned");
    Response::ProbeAccepted {
        member: me,
        config: Box::new(doc),
    }
}

/// Records the outcome of dialing member `peer`. A node detached while it
/// was down was never told; it finds out when every other member refuses
/// its key (their refusal is authenticated: the dial pins each member's
/// key), and then leaves the pool instead of dialing it forever.
pub(super) fn note_dial(node: &Arc<Node>, peer: Uuid, err: Option<&CallError>) {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Mutex, OnceLock};
    static REFUSED: OnceLock<Mutex<HashMap<Uuid, HashSet<Uuid>>>> = OnceLock::new();
    let refused_key = err.is_some_and(|e| match e {
        CallError::Refused { code, .. } => *code == code::PERMISSION,
        CallError::Connection(quinn::ConnectionError::ApplicationClosed(c)) => {
            c.error_code == code::PERMISSION.into()
        }
        _ => false,
    });
    let all_refuse = {
        let mut all = REFUSED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mine = all.entry(node.me.uuid).or_default();
        if refused_key {
            mine.insert(peer);
        } else {
            mine.remove(&peer);
        }
        let cfg = node.config();
        let others: Vec<Uuid> = cfg
            .members
            .iter()
            .map(|m| m.uuid)
            .filter(|u| *u != node.me.uuid)
            .collect();
        let done = !others.is_empty() && others.iter().all(|u| mine.contains(u));
        if done {
            mine.clear();
        }
        done
    };
    if all_refuse {
        tracing::warn!("this node was detached from the pool (every member refuses its key: it was detached while away or before it was told); leaving the pool");
        let n = node.clone();
        node.spawn(async move { n.leave_pool().await });
    }
}

/// The peer's refusal of this node's key, when it closed `conn` for that
/// (its error frame may not arrive before the close does).
pub(super) fn refusal(conn: &quinn::Connection) -> Option<CallError> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(c) if c.error_code == code::PERMISSION.into() => {
            Some(CallError::Refused {
                code: code::PERMISSION,
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            })
        }
        _ => None,
    }
}

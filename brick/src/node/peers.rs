//! Dial loops: one task per pool member keeps a connection to it alive.
//!
//! To settle on one connection per pair, the node with the lower id dials;
//! the other dials only if it has heard nothing for a while (the peer may
//! not know it yet, e.g. right after a probe). Every new connection starts
//! with a `Hello` that checks the protocol version (the pool document itself
//! travels only through the pool's consensus, `raft`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{call_on, serve, CallError, Node};
use crate::wire::proto::{Request, Response, PROTOCOL_VERSION};

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
                    super::lifecycle::note_dial(&node, peer, None);
                    continue;
                }
                Err(e) => {
                    super::lifecycle::note_dial(&node, peer, Some(&e));
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
    let addr = super::mgmt::resolve(&member.hostname, member.port)
        .await
        .map_err(CallError::Dial)?;
    let conn = node.dial(addr, Some(member.fingerprint.clone())).await?;
    let hello = call_on(&conn, &Request::Hello(node.hello()))
        .await
        .map_err(|e| super::lifecycle::refusal(&conn).unwrap_or(e))?;
    let Response::Hello(theirs) = hello else {
        return Err(CallError::Dial("unexpected answer to hello".into()));
    };
    if theirs.version != PROTOCOL_VERSION || theirs.node != peer {
        conn.close(crate::wire::proto::code::VERSION.into(), b"version");
        return Err(CallError::Dial(format!(
            "peer speaks protocol {} (we speak {PROTOCOL_VERSION})",
            theirs.version
        )));
    }
    node.register(peer, conn.clone());
    tracing::info!(peer = %member.hostname, "peer connected");
    let n = node.clone();
    let c = conn.clone();
    node.spawn(async move { serve::serve_conn(n, c, peer).await });
    Ok(())
}

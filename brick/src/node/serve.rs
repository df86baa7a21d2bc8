//! The accept side: incoming connections and the requests on their streams.
//!
//! A connection whose key belongs to a pool member is served in full. Any
//! other key may only send a `Probe` (first contact); everything else is
//! refused, logged, and the connection closed. Malformed frames close the
//! offending stream, never the daemon.

use std::sync::Arc;

use quinn::{RecvStream, SendStream};
use uuid::Uuid;

use super::Node;
use crate::net;
use crate::wire::frame::{self, FrameError};
use crate::wire::proto::{code, Request, Response};

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
            node.register(peer, conn.clone());
            serve_conn(node, conn, peer).await;
        }
        None => serve_stranger(node, conn, fp).await,
    }
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
    let req: Request = match frame::read_msg(&mut recv).await {
        Ok(r) => r,
        Err(FrameError::Closed) => return,
        Err(e) => {
            tracing::warn!(peer = %node.peer_name(peer), "malformed request refused: {e}");
            let _ = frame::write_msg(
                &mut send,
                &Response::error(code::BAD_REQUEST, e.to_string()),
            )
            .await;
            let _ = send.finish();
            return;
        }
    };
    if let Err(e) = dispatch(&node, peer, req, &mut send, &mut recv).await {
        tracing::debug!(peer = %node.peer_name(peer), "request failed: {e}");
    }
    let _ = send.finish();
}

async fn dispatch(
    node: &Arc<Node>,
    peer: Uuid,
    req: Request,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), FrameError> {
    let resp = match req {
        Request::Hello(h) => {
            if h.node != peer {
                Response::error(
                    code::PERMISSION,
                    "hello from a different node id than its key",
                )
            } else if h.version != crate::wire::proto::PROTOCOL_VERSION {
                // Checked on both sides: a node of another version must not
                // exchange pool documents or data it may misread.
                tracing::warn!(
                    peer = %node.peer_name(peer),
                    "peer speaks protocol {} (this node speaks {}): not served; run the same gsync version on every node",
                    h.version,
                    crate::wire::proto::PROTOCOL_VERSION
                );
                Response::error(
                    code::VERSION,
                    format!(
                        "this node speaks protocol {} and the peer {}: run the same gsync version on every node",
                        crate::wire::proto::PROTOCOL_VERSION,
                        h.version
                    ),
                )
            } else {
                Response::Hello(node.hello())
            }
        }
        Request::Probe(p) => {
            // A member re-probing: answer with the current document.
            let _ = p;
            let cfg = node.config();
            match cfg.member(node.me.uuid).cloned() {
                Some(me) => Response::ProbeAccepted {
                    member: me,
                    config: Box::new(cfg),
                },
                None => Response::error(code::INTERNAL, "no self entry"),
            }
        }
        Request::PushConfig(_) => Response::error(
            code::REFUSED,
            "the pool document changes only through the pool's consensus",
        ),
        Request::Raft(body) => super::raft::serve(node, peer, &body).await,
        Request::PullConfig => Response::Config(Box::new(node.config())),
        Request::Detached => {
            super::lifecycle::detached_by(node, peer);
            Response::Ok
        }
        Request::PrepareBrick {
            path,
            force,
            volume,
        } => match super::lifecycle::prepare_local(node, &path, force, volume) {
            Ok(()) => Response::Ok,
            Err(reason) => Response::error(code::REFUSED, reason),
        },
        Request::ResetBrick { path, volume } => {
            match super::lifecycle::reset_local_brick(node, &path, volume) {
                Ok(()) => Response::Ok,
                Err(reason) => Response::error(code::REFUSED, reason),
            }
        }
        Request::BrickDisks { volume } => {
            Response::BrickDisks(super::disk::local_bricks(node, &volume))
        }
        other => {
            return crate::service::handle(
                &(node.clone() as Arc<dyn crate::host::Host>),
                peer,
                other,
                send,
                recv,
            )
            .await
        }
    };
    frame::write_msg(send, &resp).await
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
    let resp = super::mgmt::accept_probe(&node, &conn, &fp, *probe).await;
    let accepted = matches!(resp, Response::ProbeAccepted { .. });
    if !accepted {
        tracing::warn!(%remote, key = %net::short(&fp), "refused probe: {resp:?}");
    }
    let _ = frame::write_msg(&mut send, &resp).await;
    let _ = send.finish();
    if !accepted {
        // Let the answer reach the prober before closing.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        conn.close(code::REFUSED.into(), b"probe refused");
        return;
    }
    if let Some(peer) = node.config().member_by_fingerprint(&fp).map(|m| m.uuid) {
        node.register(peer, conn.clone());
        serve_conn(node, conn, peer).await;
    }
}

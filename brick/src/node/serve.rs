//! What a member's request to this node does: node-level requests (pool
//! consensus, brick preparation, detach notices) answered here, the rest
//! handed to the brick service (`crate::service`). The connection it came
//! on, and its `Hello`, belong to `conn`.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use uuid::Uuid;

use super::Node;
use crate::wire::frame::{self, FrameError};
use crate::wire::proto::{self, code, Request, Response};

/// Answers `req` from member `peer` on its stream (a QUIC stream, or the
/// in-process pipe of a request this node sends itself).
pub(super) async fn dispatch<W, R>(
    node: &Arc<Node>,
    peer: Uuid,
    req: Request,
    send: &mut W,
    recv: &mut R,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    let resp = match req {
        // A prober that knew this node as a member would not probe it: its
        // pool let this node go, and this node has not left yet (it leaves
        // when told, or when every member refuses its key).
        Request::Probe(p) => Response::error(
            code::REFUSED,
            format!(
                "{} is still leaving this pool (it was detached and has not yet gone back to a pool of one); try again in a few seconds",
                p.host
            ),
        ),
        Request::PushConfig(_) => Response::error(
            code::REFUSED,
            "the pool document changes only through the pool's consensus",
        ),
        Request::Raft(body) => super::raft::serve(node, peer, &body).await,
        Request::PullConfig => Response::Config(Box::new(node.config())),
        Request::Detached => {
            super::lifecycle::detached_by(node, peer).await;
            Response::Ok
        }
        Request::PrepareBrick(proto::PrepareBrick {
            path,
            force,
            volume,
        }) => match super::lifecycle::prepare_local(node, &path, force, volume).await {
            Ok(()) => Response::Ok,
            Err(reason) => Response::error(code::REFUSED, reason),
        },
        Request::ResetBrick(proto::ResetBrick { path, volume }) => {
            match super::lifecycle::reset_local_brick(node, &path, volume).await {
                Ok(()) => Response::Ok,
                Err(reason) => Response::error(code::REFUSED, reason),
            }
        }
        Request::BrickDisks(proto::BrickDisks { volume }) => {
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

//! The control socket: a Unix socket (mode 0600) in the state directory
//! through which the local CLI drives the daemon.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};

use super::anyhow_like::{err, Result};
use super::Node;
use crate::control::{socket_path, CtlReply, CtlRequest};
use crate::wire::frame;

pub(super) async fn start(node: Arc<Node>) -> Result<()> {
    let path = socket_path(&node.state_dir);
    if path.exists() {
        // A live daemon answers on it; a stale socket from a crash does not.
        if UnixStream::connect(&path).await.is_ok() {
            return Err(err(format!(
                "another daemon is already running with state dir {}",
                node.state_dir.display()
            )));
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)
        .map_err(|e| err(format!("control socket {}: {e}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(format!("control socket {}: {e}", path.display())))?;
    let n = node.clone();
    node.spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = n.token.cancelled() => return,
                s = listener.accept() => match s {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!("control socket: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let n2 = n.clone();
            n.spawn(async move { serve(n2, stream).await });
        }
    });
    Ok(())
}

async fn serve(node: Arc<Node>, mut stream: UnixStream) {
    let req: CtlRequest = match frame::read_json(&mut stream).await {
        Ok(r) => r,
        Err(e) => {
            let _ = frame::write_json(
                &mut stream,
                &CtlReply::Err {
                    reason: e.to_string(),
                },
            )
            .await;
            return;
        }
    };
    // A resolution by the operator is a policy decision worth an event.
    let resolving = match &req {
        CtlRequest::SplitBrainResolve {
            name,
            policy,
            brick,
            ..
        } => Some((name.clone(), policy.clone(), brick.clone())),
        _ => None,
    };
    let mut ext = node.ext.read().unwrap_or_else(|e| e.into_inner()).clone();
    // The socket answers before the daemon has registered its extensions
    // (heal, mounts): right after a start, wait for them (bounded) rather
    // than answer that their requests are not handled.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while ext.is_none() && tokio::time::Instant::now() < deadline && !node.token.is_cancelled() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        ext = node.ext.read().unwrap_or_else(|e| e.into_inner()).clone();
    }
    let reply = match ext {
        Some(ext) => match ext.handle(&req).await {
            Some(r) => r,
            None => super::mgmt::handle(&node, req).await,
        },
        None => super::mgmt::handle(&node, req).await,
    };
    if let (Some((name, policy, brick)), CtlReply::Ok { data }) = (resolving, &reply) {
        let paths = data.as_array().map_or(0, Vec::len);
        node.events.emit(
            "policy-decision",
            format!("volume {name}: split-brain resolved by the operator with {policy} ({paths} paths)"),
            serde_json::json!({"volume": name, "policy": policy, "brick": brick, "by": "operator", "paths": data}),
        );
    }
    let _ = frame::write_json(&mut stream, &reply).await;
}

//! Talking to the local daemon over its control socket.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use gsync_brick::control::{socket_path, CtlReply, CtlRequest};
use gsync_brick::wire::frame;
use serde::de::DeserializeOwned;

/// The state directory: flag or GSYNC_STATE_DIR, else the default for the
/// user (/var/lib/gsync for root, else $XDG_STATE_HOME/gsync or
/// ~/.local/state/gsync).
pub fn state_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if gsync_brick::store::files::is_root() {
        return PathBuf::from("/var/lib/gsync");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("gsync");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/gsync")
}

/// Error from the daemon: the reason only (the caller adds the prefix).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Sends one request; `Ok(Err(reason))` when the daemon refused it.
pub async fn call_raw(
    state: &Path,
    req: &CtlRequest,
) -> Result<Result<serde_json::Value, Refused>> {
    let path = socket_path(state);
    let mut s = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
        anyhow!(
            "Connection failed. Please check if the gsync daemon is operational ({}: {e})",
            path.display()
        )
    })?;
    frame::write_json(&mut s, req)
        .await
        .map_err(|e| anyhow!("control socket: {e}"))?;
    let reply: CtlReply = frame::read_json(&mut s)
        .await
        .map_err(|e| anyhow!("control socket: {e}"))?;
    Ok(match reply {
        CtlReply::Ok { data } => Ok(data),
        CtlReply::Err { reason } => Err(Refused(reason)),
    })
}

/// Sends one request and decodes the data.
pub async fn call<T: DeserializeOwned>(
    state: &Path,
    req: &CtlRequest,
) -> Result<Result<T, Refused>> {
    Ok(match call_raw(state, req).await? {
        Ok(v) => Ok(serde_json::from_value(v)
            .map_err(|e| anyhow!("unexpected answer from the daemon: {e}"))?),
        Err(r) => Err(r),
    })
}

//! Host names as the CLI and the pool document give them: to a socket
//! address, and to the pool member they name.

use std::net::SocketAddr;

use uuid::Uuid;

use super::Node;
use crate::pool::PoolConfig;

/// Resolves `host:port` to one socket address.
pub(super) async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match tokio::net::lookup_host((host, port)).await {
        Ok(mut addrs) => addrs.next().ok_or_else(|| format!("{host}: no address")),
        Err(e) => Err(format!("{host}: {e}")),
    }
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

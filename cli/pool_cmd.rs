//! `gsync peer …`, `gsync pool list` and the hidden `gsync debug …`.

use std::path::Path;

use anyhow::Result;
use gsync_brick::control::{CtlRequest, PeerInfo, ProbeResult};
use gsync_brick::faults::Rule;

use crate::args::{DebugCmd, PeerCmd, PoolCmd};
use crate::{ctl, print_json, Outcome};

/// Default QUIC port.
pub const DEFAULT_PORT: u16 = 24017;

/// Splits `HOST[:PORT]` (IPv6 as `[addr]:port`).
pub fn host_port(s: &str) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once(']')?;
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if p.is_empty() => DEFAULT_PORT,
            None => return None,
        };
        return Some((h.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        _ if !s.is_empty() => Some((s.to_string(), DEFAULT_PORT)),
        _ => None,
    }
}

pub async fn peer(cmd: PeerCmd, state: &Path, json: bool) -> Result<Outcome> {
    match cmd {
        PeerCmd::Probe { host, secret } => {
            let Some((h, port)) = host_port(&host) else {
                return Ok(Outcome::Failed(format!(
                    "peer probe: failed: {host} is not HOST[:PORT]"
                )));
            };
            let req = CtlRequest::PeerProbe {
                host: h.clone(),
                port,
                secret,
            };
            match ctl::call::<ProbeResult>(state, &req).await? {
                Ok(r) if json => print_json(&r)?,
                Ok(r) if r.already => println!(
                    "peer probe: success. Host {} port {} already in peer list",
                    r.hostname, r.port
                ),
                Ok(r) => {
                    println!("peer probe: success");
                    println!(
                        "Key fingerprint of {}: {}",
                        r.hostname,
                        gsync_brick::net::short(&r.fingerprint)
                    );
                }
                Err(e) if e.0 == "Probe on localhost not needed" => {
                    if json {
                        print_json(
                            &serde_json::json!({"already": true, "hostname": h, "port": port, "localhost": true}),
                        )?;
                    } else {
                        println!("peer probe: {e}");
                    }
                }
                Err(e) => return Ok(Outcome::Failed(format!("peer probe: failed: {e}"))),
            }
        }
        PeerCmd::Detach { host, force } => {
            let req = CtlRequest::PeerDetach {
                host,
                force: force.is_some(),
            };
            match ctl::call_raw(state, &req).await? {
                Ok(_) if json => print_json(&serde_json::json!({"detached": true}))?,
                Ok(_) => println!("peer detach: success"),
                Err(e) => return Ok(Outcome::Failed(format!("peer detach: failed: {e}"))),
            }
        }
        PeerCmd::Status => {
            let peers = match ctl::call::<Vec<PeerInfo>>(state, &CtlRequest::PeerStatus).await? {
                Ok(p) => p,
                Err(e) => return Ok(Outcome::Failed(format!("peer status: failed: {e}"))),
            };
            let others: Vec<&PeerInfo> = peers.iter().filter(|p| !p.local).collect();
            if json {
                print_json(&others)?;
            } else {
                println!("Number of Peers: {}", others.len());
                for p in others {
                    println!();
                    println!("Hostname: {}", p.hostname);
                    println!("Uuid: {}", p.uuid);
                    let s = if p.connected {
                        "Connected"
                    } else {
                        "Disconnected"
                    };
                    println!("State: Peer in Cluster ({s})");
                }
            }
        }
    }
    Ok(Outcome::Done)
}

pub async fn pool(cmd: PoolCmd, state: &Path, json: bool) -> Result<Outcome> {
    let PoolCmd::List = cmd;
    let peers = match ctl::call::<Vec<PeerInfo>>(state, &CtlRequest::PeerStatus).await? {
        Ok(p) => p,
        Err(e) => return Ok(Outcome::Failed(format!("pool list: failed: {e}"))),
    };
    if json {
        print_json(&peers)?;
        return Ok(Outcome::Done);
    }
    println!("{:<38}\t{:<16}\tState", "UUID", "Hostname");
    let mut rows: Vec<&PeerInfo> = peers.iter().filter(|p| !p.local).collect();
    rows.extend(peers.iter().filter(|p| p.local));
    for p in rows {
        let host = if p.local { "localhost" } else { &p.hostname };
        let s = if p.connected {
            "Connected"
        } else {
            "Disconnected"
        };
        println!("{:<38}\t{:<16}\t{s}", p.uuid, host);
    }
    Ok(Outcome::Done)
}

pub async fn debug(cmd: DebugCmd, state: &Path, json: bool) -> Result<Outcome> {
    let req = match cmd {
        DebugCmd::Net { ip, rule } => {
            let Ok(ip) = ip.parse() else {
                return Ok(Outcome::Failed(format!(
                    "debug net: failed: {ip} is not an IP address"
                )));
            };
            let mut r = Rule::default();
            match rule.as_str() {
                "block" => {
                    r.block_in = true;
                    r.block_out = true;
                }
                "block-in" => r.block_in = true,
                "block-out" => r.block_out = true,
                "clear" => {}
                other => {
                    if let Some(ms) = other
                        .strip_prefix("delay=")
                        .and_then(|f| f.parse::<u64>().ok())
                    {
                        r.delay_ms = ms;
                    } else {
                        match other.strip_prefix("loss=").and_then(|f| f.parse::<f64>().ok()) {
                            Some(f) if (0.0..=1.0).contains(&f) => r.loss = f,
                            _ => {
                                return Ok(Outcome::Failed(format!(
                                    "debug net: failed: unknown rule {other} (block, block-in, block-out, loss=F, delay=MS, clear)"
                                )))
                            }
                        }
                    }
                }
            }
            CtlRequest::DebugNet { ip, rule: r }
        }
        DebugCmd::NetClear => CtlRequest::DebugNetClear,
        DebugCmd::RemoteConfig { addr } => CtlRequest::DebugRemoteConfig { addr },
        DebugCmd::Garbage { addr } => CtlRequest::DebugGarbage { addr },
    };
    match ctl::call_raw(state, &req).await? {
        Ok(v) => {
            if json {
                print_json(&v)?;
            } else {
                println!("{v}");
            }
            Ok(Outcome::Done)
        }
        Err(e) => Ok(Outcome::Failed(format!("debug: failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port() {
        assert_eq!(
            host_port("127.0.0.2"),
            Some(("127.0.0.2".into(), DEFAULT_PORT))
        );
        assert_eq!(host_port("h:1"), Some(("h".into(), 1)));
        assert_eq!(host_port("[::1]:5"), Some(("::1".into(), 5)));
        assert_eq!(host_port("h:x"), None);
    }
}

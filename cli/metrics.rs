//! `gsync daemon --metrics-listen ADDR:PORT`: Prometheus text at
//! `GET /metrics`, off unless asked for (a bare port listens on loopback).
//!
//! The values come from the `metrics` facade (set by the monitor and the
//! log layer) and are rendered by `metrics-exporter-prometheus`; the HTTP
//! side is a few lines over tokio rather than the exporter's own hyper
//! listener, which would pull a web stack into the daemon.

use std::net::SocketAddr;

use anyhow::{anyhow, Context, Result};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Parses `ADDR:PORT`, `[V6]:PORT` or a bare `PORT` (127.0.0.1).
pub fn parse_listen(s: &str) -> Result<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| anyhow!("--metrics-listen {s}: expected ADDR:PORT or PORT"))
}

/// Installs the recorder (the `metrics` macros record from now on).
pub fn install() -> Result<PrometheusHandle> {
    // Gauges are set by the monitor every 2 s (spaced out to keep it under
    // 5% of the time): one not set for 10 minutes
    // belongs to something gone (an unmounted folder, a removed brick or
    // volume) and is dropped instead of reported forever. Counters stay.
    let recorder = PrometheusBuilder::new()
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE,
            Some(std::time::Duration::from_secs(600)),
        )
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| anyhow!("metrics recorder: {e}"))?;
    describe();
    Ok(handle)
}

/// Every metric: name, whether it only grows, and its help text.
const METRICS: &[(&str, bool, &str)] = &[
    ("gsync_volumes", false, "Volumes defined in the pool."),
    ("gsync_brick_pending_entries", false, "Entries a brick has not yet confirmed on every peer brick."),
    ("gsync_brick_split_brain_entries", false, "Entries of a brick in split-brain."),
    ("gsync_brick_healing_entries", false, "Entries being healed now."),
    ("gsync_brick_heals_total", true, "Entries healed."),
    ("gsync_brick_heal_bytes_total", true, "Bytes moved by heals."),
    ("gsync_brick_heal_rate_entries_per_second", false, "Recent heal rate."),
    ("gsync_brick_replication_lag_seconds", false, "How long the brick has had entries pending (0 when none): the age of its oldest pending entry, to the monitor's 2 s."),
    ("gsync_brick_online", false, "1 when the brick is served."),
    ("gsync_brick_changes_applied_total", true, "Changes applied to the brick (ops in)."),
    ("gsync_brick_received_bytes_total", true, "Content bytes received by the brick."),
    ("gsync_brick_sent_bytes_total", true, "Content bytes sent by the brick."),
    ("gsync_brick_chunks_reused_total", true, "Chunks found locally instead of transferred."),
    ("gsync_brick_chunks_fetched_total", true, "Chunks transferred."),
    ("gsync_brick_entries", false, "Paths tracked by the brick."),
    ("gsync_mounts", false, "Mounts of this node."),
    ("gsync_mount_online", false, "1 when the mount reaches a brick."),
    ("gsync_mount_in_sync", false, "1 when the mount is in sync."),
    ("gsync_mount_pending", false, "Local changes not yet accepted by a brick."),
    ("gsync_mount_held", false, "1 when pushes are held back (no quorum, a guard)."),
    ("gsync_mount_split_brain", false, "Paths of the mount in split-brain."),
    ("gsync_mount_applied_total", true, "Remote entries applied since the agent started."),
    ("gsync_mount_last_sync_timestamp_seconds", false, "When the mount was last seen in sync with nothing pending (Unix time)."),
    ("gsync_peer_connected", false, "1 when the peer is connected."),
    ("gsync_peer_rtt_seconds", false, "QUIC round-trip time to the peer."),
    ("gsync_log_messages_total", true, "Warnings and errors logged, by level and module (errors by kind)."),
];

fn describe() {
    for (name, counter, help) in METRICS {
        if *counter {
            metrics::describe_counter!(*name, *help);
        } else {
            metrics::describe_gauge!(*name, *help);
        }
    }
}

/// Serves `GET /metrics` on `addr` until `token` is cancelled. Binding
/// fails at once (a port in use is the operator's to fix).
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    token: CancellationToken,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen {addr}"))?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tokio::select! {
                _ = token.cancelled() => return,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("metrics listener: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let reply = match read_head(&mut stream).await {
                    Some(head)
                        if head.starts_with("GET /metrics ") || head.starts_with("GET / ") =>
                    {
                        handle.run_upkeep();
                        let body = handle.render();
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    Some(_) => {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    }
                    None => return,
                };
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(())
}

/// Reads the request head (bounded in size and time).
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Counts warnings and errors by level and module, as
/// `gsync_log_messages_total` (what went wrong, by kind).
pub struct CountLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warn",
            _ => return,
        };
        // The crate and first module: gsync_brick::store, gsync_client::sync...
        let target: String = meta
            .target()
            .split("::")
            .take(2)
            .collect::<Vec<_>>()
            .join("::");
        metrics::counter!("gsync_log_messages_total", "level" => level, "target" => target)
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_documented() {
        let doc = include_str!("../docs/OPERATIONS.md");
        for (name, _, _) in METRICS {
            assert!(
                doc.contains(&format!("`{name}`")),
                "{name} is not in docs/OPERATIONS.md"
            );
        }
    }

    #[test]
    fn listen_addresses() {
        let cases = [
            ("9817", Some("127.0.0.1:9817")),
            ("0.0.0.0:9817", Some("0.0.0.0:9817")),
            ("[::1]:9817", Some("[::1]:9817")),
            ("localhost:x", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(
                parse_listen(s).ok().map(|a| a.to_string()).as_deref(),
                want,
                "{s}"
            );
        }
    }
}

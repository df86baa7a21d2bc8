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
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| anyhow!("metrics recorder: {e}"))?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!("gsync_volumes", "Volumes defined in the pool.");
    describe_gauge!(
        "gsync_brick_pending_entries",
        "Entries a brick has not yet confirmed on every peer brick."
    );
    describe_gauge!(
        "gsync_brick_split_brain_entries",
        "Entries of a brick in split-brain."
    );
    describe_gauge!("gsync_brick_healing_entries", "Entries being healed now.");
    describe_counter!("gsync_brick_heals_total", "Entries healed.");
    describe_counter!("gsync_brick_heal_bytes_total", "Bytes moved by heals.");
    describe_gauge!(
        "gsync_brick_heal_rate_entries_per_second",
        "Recent heal rate."
    );
    describe_gauge!("gsync_brick_replication_lag_seconds", "How long the brick has had entries pending (0 when none): the age of its oldest pending entry, to the monitor's 2 s.");
    describe_gauge!("gsync_brick_online", "1 when the brick is served.");
    describe_counter!(
        "gsync_brick_changes_applied_total",
        "Changes applied to the brick (ops in)."
    );
    describe_counter!(
        "gsync_brick_received_bytes_total",
        "Content bytes received by the brick."
    );
    describe_counter!(
        "gsync_brick_sent_bytes_total",
        "Content bytes sent by the brick."
    );
    describe_counter!(
        "gsync_brick_chunks_reused_total",
        "Chunks found locally instead of transferred."
    );
    describe_counter!("gsync_brick_chunks_fetched_total", "Chunks transferred.");
    describe_gauge!("gsync_brick_entries", "Paths tracked by the brick.");
    describe_gauge!("gsync_mounts", "Mounts of this node.");
    describe_gauge!("gsync_mount_online", "1 when the mount reaches a brick.");
    describe_gauge!("gsync_mount_in_sync", "1 when the mount is in sync.");
    describe_gauge!(
        "gsync_mount_pending",
        "Local changes not yet accepted by a brick."
    );
    describe_gauge!(
        "gsync_mount_held",
        "1 when pushes are held back (no quorum, a guard)."
    );
    describe_gauge!(
        "gsync_mount_split_brain",
        "Paths of the mount in split-brain."
    );
    describe_counter!(
        "gsync_mount_applied_total",
        "Remote entries applied since the agent started."
    );
    describe_gauge!(
        "gsync_mount_last_sync_timestamp_seconds",
        "When the mount was last seen in sync with nothing pending (Unix time)."
    );
    describe_gauge!("gsync_peer_connected", "1 when the peer is connected.");
    describe_gauge!(
        "gsync_peer_rtt_seconds",
        "QUIC round-trip time to the peer."
    );
    describe_counter!(
        "gsync_log_messages_total",
        "Warnings and errors logged, by level and module (errors by kind)."
    );
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

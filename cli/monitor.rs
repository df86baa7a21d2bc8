//! The daemon watching itself: every [`INTERVAL`] it reads what `volume
//! status`, `volume heal VOL info` and `gsync mount` would show, turns
//! transitions into events (a heal started or finished, a split-brain found
//! or resolved) and sets the Prometheus metrics (a no-op unless
//! `--metrics-listen` installed the recorder).
//!
//! It reads this node's own bricks and mounts in-process (no call to
//! another node, so a pool of N nodes costs each one the same); a sample
//! that took long spaces the next ones out, so the monitor never competes
//! with replication under load.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gsync_brick::control::MountInfo;
use gsync_brick::heal_types::BrickHealInfo;
use gsync_brick::node::Node;
use gsync_brick::pool::{Volume, VolumeState};
use gsync_client::AgentHost;
use metrics::{counter, gauge};
use serde_json::json;

/// How often the monitor samples (at least).
pub const INTERVAL: Duration = Duration::from_secs(2);

/// A sample may take at most this share of the time (1/N).
const DUTY: u32 = 20;

/// Samples with entries pending before a heal counts as started (short
/// replication lag is not a heal).
const STARTED_AFTER: u32 = 2;

#[derive(Default)]
struct BrickTrack {
    /// Consecutive samples with entries pending.
    pending_samples: u32,
    /// When pending was last seen at zero (replication lag = now - this).
    clear_at: Option<Instant>,
    /// A heal-started event was emitted and no heal-done yet.
    healing: bool,
    /// heals_done when the heal started.
    heals_at_start: u64,
    heal_bytes_at_start: u64,
    started: Option<Instant>,
}

#[derive(Default)]
struct Monitor {
    bricks: HashMap<(String, u64), BrickTrack>,
    split_brain: HashMap<String, BTreeSet<String>>,
    last_sync: HashMap<String, f64>,
}

/// Starts the monitor for the life of the node.
pub fn start(node: Arc<Node>, mounts: Arc<AgentHost>) {
    let n = node.clone();
    node.spawn(async move {
        let mut m = Monitor::default();
        let mut pause = INTERVAL;
        loop {
            tokio::select! {
                _ = n.token.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            let t = Instant::now();
            m.sample(&n, &mounts).await;
            pause = INTERVAL.max(t.elapsed() * DUTY);
        }
    });
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Monitor {
    async fn sample(&mut self, node: &Arc<Node>, mounts: &AgentHost) {
        let cfg = node.config();
        let started: Vec<_> = cfg
            .volumes
            .iter()
            .filter(|v| v.state == VolumeState::Started)
            .collect();
        gauge!("gsync_volumes").set(cfg.volumes.len() as f64);
        for v in &started {
            let infos = gsync_brick::service::heal::heal_info_local(node.as_ref(), v).await;
            self.heal(node, v, &infos);
            brick_counters(node, v);
        }
        self.mounts(&mounts.list());
        for m in cfg.members.iter().filter(|m| m.uuid != node.me.uuid) {
            let conn = node.connection(m.uuid);
            let labels = [("peer", m.hostname.clone())];
            gauge!("gsync_peer_connected", &labels).set(if conn.is_some() { 1.0 } else { 0.0 });
            if let Some(c) = conn {
                gauge!("gsync_peer_rtt_seconds", &labels).set(c.rtt().as_secs_f64());
            }
        }
    }

    fn heal(&mut self, node: &Node, v: &Volume, infos: &[BrickHealInfo]) {
        let vol = v.name.as_str();
        let mut split: BTreeSet<String> = BTreeSet::new();
        let mut answered = false;
        for info in infos.iter().filter(|i| i.not_served.is_none()) {
            let Some(def) = v.bricks.iter().find(|b| b.id == info.brick) else {
                continue;
            };
            let name = def.name();
            answered = true;
            let labels = [("volume", vol.to_string()), ("brick", name.clone())];
            gauge!("gsync_brick_pending_entries", &labels).set(info.pending as f64);
            gauge!("gsync_brick_split_brain_entries", &labels).set(info.split_brain as f64);
            gauge!("gsync_brick_healing_entries", &labels).set(info.healing as f64);
            counter!("gsync_brick_heals_total", &labels).absolute(info.heals_done);
            counter!("gsync_brick_heal_bytes_total", &labels).absolute(info.heal_bytes);
            gauge!("gsync_brick_heal_rate_entries_per_second", &labels)
                .set(info.heal_rate.unwrap_or(0.0));
            split.extend(
                info.entries
                    .iter()
                    .filter(|e| e.split_brain)
                    .map(|e| e.path.to_string()),
            );
            let t = self
                .bricks
                .entry((vol.to_string(), info.brick))
                .or_default();
            let now = Instant::now();
            if info.pending == 0 {
                t.pending_samples = 0;
                t.clear_at = Some(now);
            } else {
                t.pending_samples += 1;
            }
            let lag = t
                .clear_at
                .map_or(0.0, |c| now.duration_since(c).as_secs_f64());
            gauge!("gsync_brick_replication_lag_seconds", &labels).set(if info.pending == 0 {
                0.0
            } else {
                lag
            });
            if !t.healing && t.pending_samples >= STARTED_AFTER {
                t.healing = true;
                t.heals_at_start = info.heals_done;
                t.heal_bytes_at_start = info.heal_bytes;
                t.started = Some(now);
                node.events.emit(
                    "heal-started",
                    format!(
                        "volume {vol}: brick {name} has {} entries to heal",
                        info.pending
                    ),
                    json!({"volume": vol, "brick": name, "pending": info.pending}),
                );
            } else if t.healing && info.pending == 0 {
                t.healing = false;
                let healed = info.heals_done.saturating_sub(t.heals_at_start);
                let bytes = info.heal_bytes.saturating_sub(t.heal_bytes_at_start);
                let secs = t.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
                node.events.emit(
                    "heal-done",
                    format!(
                        "volume {vol}: brick {name} healed ({healed} entries, {bytes} bytes, {secs:.1} s)"
                    ),
                    json!({"volume": vol, "brick": name, "healed": healed, "bytes": bytes, "seconds": secs}),
                );
            }
        }
        if !answered {
            return;
        }
        let before = self.split_brain.remove(vol).unwrap_or_default();
        for p in split.difference(&before) {
            node.events.emit(
                "split-brain-found",
                format!("volume {vol}: /{p} is in split-brain"),
                json!({"volume": vol, "path": p}),
            );
        }
        for p in before.difference(&split) {
            node.events.emit(
                "split-brain-resolved",
                format!("volume {vol}: /{p} is no longer in split-brain"),
                json!({"volume": vol, "path": p}),
            );
        }
        self.split_brain.insert(vol.to_string(), split);
    }

    fn mounts(&mut self, mounts: &[MountInfo]) {
        gauge!("gsync_mounts").set(mounts.len() as f64);
        for m in mounts {
            let labels = [("dir", m.dir.clone()), ("source", m.source.clone())];
            let flag = |b: bool| if b { 1.0 } else { 0.0 };
            gauge!("gsync_mount_online", &labels).set(flag(m.online));
            gauge!("gsync_mount_in_sync", &labels).set(flag(m.in_sync));
            gauge!("gsync_mount_pending", &labels).set(m.pending as f64);
            gauge!("gsync_mount_held", &labels).set(flag(m.held.is_some()));
            gauge!("gsync_mount_split_brain", &labels).set(m.split_brain as f64);
            counter!("gsync_mount_applied_total", &labels).absolute(m.applied);
            if m.in_sync && m.pending == 0 {
                self.last_sync.insert(m.dir.clone(), unix_now());
            }
            if let Some(t) = self.last_sync.get(&m.dir) {
                gauge!("gsync_mount_last_sync_timestamp_seconds", &labels).set(*t);
            }
        }
    }
}

/// Counters of this node's bricks of `v`.
fn brick_counters(node: &Node, v: &Volume) {
    for st in gsync_brick::service::status(node, &v.name) {
        let Some(def) = v.bricks.iter().find(|b| b.id == st.brick) else {
            continue;
        };
        let labels = [("volume", v.name.clone()), ("brick", def.name())];
        gauge!("gsync_brick_online", &labels).set(if st.online { 1.0 } else { 0.0 });
        if !st.online {
            continue;
        }
        let c = &st.counters;
        counter!("gsync_brick_changes_applied_total", &labels).absolute(c.changes_applied);
        counter!("gsync_brick_received_bytes_total", &labels).absolute(c.bytes_received);
        counter!("gsync_brick_sent_bytes_total", &labels).absolute(c.bytes_sent);
        counter!("gsync_brick_chunks_reused_total", &labels).absolute(c.chunks_reused);
        counter!("gsync_brick_chunks_fetched_total", &labels).absolute(c.chunks_fetched);
        gauge!("gsync_brick_entries", &labels).set(st.entries as f64);
    }
}

//! The bricks a node serves: opened when their volume starts, closed when
//! it stops, each with its replicator and outage-recorder tasks.
//!
//! A brick is served only while its directory carries the volume-id marker
//! (`.gsync/volume-id`) written by `volume create`. A wiped disk, or a disk
//! that failed to mount (leaving the empty mount point), looks exactly like
//! an empty brick; serving it would announce an empty replica as healthy.
//! Such a brick is left alone (nothing created, nothing opened), reported
//! with the reason, and picked up again by the next reconcile once the
//! marker is back (`reset-brick ... commit force`): the node reconciles
//! periodically, not only when the pool document changes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::Node;
use crate::host::{Host, TaskHandle};
use crate::pool::{BrickDef, PoolConfig, Volume, VolumeState};
use crate::store::marker::{check_brick_dir, DirProblem};
use crate::store::Brick;

struct Served {
    brick: Arc<Brick>,
    /// Its replicators, one per peer brick: replaced when the volume
    /// gains or loses a brick.
    replicators: Vec<TaskHandle>,
    /// Its outage recorder.
    recorder: TaskHandle,
}

impl Served {
    /// Stops the brick's tasks (they end at their next await point).
    fn stop(&self) {
        for t in self.replicators.iter().chain([&self.recorder]) {
            t.stop();
        }
    }
}

/// The bricks served by a node, by replica id.
#[derive(Default)]
pub struct BrickSet {
    inner: Mutex<HashMap<u64, Served>>,
    /// Bricks of started volumes this node should serve but does not, with
    /// the reason.
    unserved: Mutex<HashMap<u64, String>>,
    /// Refusals already logged (a recheck repeats them every 2 s).
    logged: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for BrickSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u64> = self.lock().keys().copied().collect();
        f.debug_struct("BrickSet").field("bricks", &ids).finish()
    }
}

/// The operator-facing reason a brick is not served, with the way out.
fn unserved_reason(p: &DirProblem, v: &Volume, b: &BrickDef) -> String {
    format!(
        "{p}: not served until 'volume reset-brick {} {} {} commit force'",
        v.name,
        b.name(),
        b.name()
    )
}

/// The replica ids of the other bricks of `v`, seen from brick `id`.
fn peers_of(v: &Volume, id: u64) -> Vec<u64> {
    v.bricks
        .iter()
        .filter(|x| x.id != id)
        .map(|x| x.id)
        .collect()
}

impl BrickSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Served>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_unserved(&self) -> std::sync::MutexGuard<'_, HashMap<u64, String>> {
        self.unserved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True the first time `line` is seen.
    fn first_time(&self, line: &str) -> bool {
        self.logged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(line.to_string())
    }

    /// Opens and closes bricks to match the pool document, and stops
    /// serving a brick whose directory lost its marker. Cheap when nothing
    /// changed (one small read per brick), so it also runs periodically.
    pub fn reconcile(&self, node: &Arc<Node>, cfg: &PoolConfig) {
        let host: Arc<dyn Host> = node.clone();
        let mut wanted = HashMap::new();
        // Volumes over the limits (stored by an older version) are not
        // served: a node never opens more than it can hold.
        let mut refused: Vec<(u64, String)> = Vec::new();
        for v in cfg
            .volumes
            .iter()
            .filter(|v| v.state == VolumeState::Started)
        {
            let mine = v
                .bricks
                .iter()
                .filter(|b| b.node == node.me.uuid && !b.out_of_service);
            if let Some(p) = crate::limits::volume_problem(v) {
                refused.extend(mine.map(|b| (b.id, p.clone())));
                continue;
            }
            for b in mine {
                if wanted.len() >= crate::limits::MAX_BRICKS_PER_NODE {
                    let p = format!(
                        "this node already serves {} bricks, the limit",
                        crate::limits::MAX_BRICKS_PER_NODE
                    );
                    refused.push((b.id, p));
                } else {
                    wanted.insert(b.id, (v, b));
                }
            }
        }
        let mut served = self.lock();
        let mut unserved = self.lock_unserved();
        unserved.retain(|id, _| wanted.contains_key(id));
        for (id, reason) in refused {
            // One line per volume and reason, not one per brick or recheck.
            if self.first_time(&reason) {
                tracing::error!("{reason}");
            }
            unserved.insert(id, reason);
        }
        served.retain(|id, s| {
            // A brick moved to another path is reopened at its new place.
            let current = wanted
                .get(id)
                .filter(|(_, b)| s.brick.root == Path::new(&b.path));
            let Some((v, b)) = current else {
                tracing::info!(brick = %s.brick.root.display(), "brick stopped");
                s.stop();
                return false;
            };
            if let Err(p) = check_brick_dir(Path::new(&b.path), v.id) {
                let reason = unserved_reason(&p, v, b);
                tracing::error!(brick = %b.path, volume = %v.name, "brick stopped: {reason}");
                s.stop();
                unserved.insert(*id, reason);
                return false;
            }
            // A volume that gained or lost a brick: the brick stays open
            // (writes, change feeds and path locks carry on) and only its
            // replicators restart toward the new peers.
            if !crate::lifecycle::same_peers(&s.brick.peers(), v, *id) {
                s.brick.set_peers(peers_of(v, *id));
                for r in &s.replicators {
                    r.stop();
                }
                s.replicators = crate::replicate::spawn(&host, &s.brick, &node.token);
                tracing::info!(brick = %b.path, volume = %v.name, peers = v.bricks.len() - 1, "peer bricks changed");
            }
            true
        });
        for (id, (v, b)) in wanted {
            if served.contains_key(&id) {
                continue;
            }
            let root = Path::new(&b.path);
            let mut refuse = |reason: String| {
                if unserved.get(&id) != Some(&reason) {
                    tracing::error!(brick = %b.path, volume = %v.name, "brick not served: {reason}");
                }
                unserved.insert(id, reason);
            };
            if let Err(p) = check_brick_dir(root, v.id) {
                refuse(unserved_reason(&p, v, b));
                continue;
            }
            match Brick::open(root, v.id, &v.name, id, node.me.uuid, peers_of(v, id)) {
                Ok(brick) => {
                    let brick = Arc::new(brick);
                    let refill_only = root
                        .join(crate::wire::path::RESERVED)
                        .join(crate::lifecycle::REFILL_ONLY);
                    if refill_only.exists() {
                        if brick.seq() == 0 && crate::store::import::has_content(&brick.root) {
                            match crate::lifecycle::set_aside_strays(&brick.root) {
                                Ok(n) => {
                                    tracing::warn!(brick = %b.path, "{n} entries found in the directory of a brick reset to be refilled set aside under .gsync/ (not adopted)")
                                }
                                Err(e) => {
                                    tracing::error!(brick = %b.path, "cannot set aside what the reset brick's directory holds: {e}")
                                }
                            }
                        }
                        if let Err(e) =
                            std::fs::write(&refill_only, crate::lifecycle::REFILL_OPENED)
                        {
                            tracing::warn!(brick = %b.path, "{}: {e}", refill_only.display());
                        }
                    } else if brick.seq() == 0 && crate::store::import::has_content(&brick.root) {
                        let b2 = brick.clone();
                        node.spawn(async move {
                            let b3 = b2.clone();
                            match tokio::task::spawn_blocking(move || crate::store::import::import_existing(&b3)).await {
                                Ok(Ok(n)) => tracing::info!(brick = %b2.root.display(), "adopted {n} paths already in the brick directory"),
                                Ok(Err(e)) => tracing::error!(brick = %b2.root.display(), "cannot adopt existing files: {e}"),
                                Err(e) => tracing::error!("import task: {e}"),
                            }
                        });
                    }
                    let replicators = crate::replicate::spawn(&host, &brick, &node.token);
                    let recorder = crate::outage::spawn(&host, &brick, &node.token);
                    tracing::info!(brick = %b.path, volume = %v.name, "brick started");
                    unserved.remove(&id);
                    served.insert(
                        id,
                        Served {
                            brick,
                            replicators,
                            recorder,
                        },
                    );
                }
                Err(e) => refuse(format!("cannot open brick: {e}")),
            }
        }
    }

    /// The brick with replica id `id`, if served here.
    pub fn get(&self, id: u64) -> Option<Arc<Brick>> {
        self.lock().get(&id).map(|s| s.brick.clone())
    }

    /// Why the brick with replica id `id` is not served here, if this node
    /// should serve it and does not.
    pub fn unserved_reason(&self, id: u64) -> Option<String> {
        self.lock_unserved().get(&id).cloned()
    }

    /// The bricks of a volume served here.
    pub fn of_volume(&self, volume: Uuid) -> Vec<Arc<Brick>> {
        self.lock()
            .values()
            .filter(|s| s.brick.volume == volume)
            .map(|s| s.brick.clone())
            .collect()
    }

    /// Stops every brick.
    pub fn close_all(&self) {
        for (_, s) in self.lock().drain() {
            s.stop();
        }
    }
}

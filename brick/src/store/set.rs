//! The bricks a node serves: opened when their volume starts, closed when
//! it stops, each with its replicator tasks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Brick;
use crate::node::Node;
use crate::pool::{PoolConfig, VolumeState};
use crate::proto::BrickStatus;

struct Served {
    brick: Arc<Brick>,
    token: CancellationToken,
}

/// The bricks served by a node, by replica id.
#[derive(Default)]
pub struct BrickSet {
    inner: Mutex<HashMap<u64, Served>>,
}

impl std::fmt::Debug for BrickSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u64> = self.lock().keys().copied().collect();
        f.debug_struct("BrickSet").field("bricks", &ids).finish()
    }
}

impl BrickSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Served>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens and closes bricks to match the pool document.
    pub fn reconcile(&self, node: &Arc<Node>, cfg: &PoolConfig) {
        let mut wanted = HashMap::new();
        for v in cfg
            .volumes
            .iter()
            .filter(|v| v.state == VolumeState::Started)
        {
            for b in v
                .bricks
                .iter()
                .filter(|b| b.node == node.me.uuid && !b.out_of_service)
            {
                wanted.insert(b.id, (v, b));
            }
        }
        let mut served = self.lock();
        served.retain(|id, s| {
            // A brick moved to another path, or whose volume gained or lost
            // a brick, is reopened with its new place and peers.
            let keep = wanted.get(id).is_some_and(|(v, b)| {
                s.brick.root == Path::new(&b.path)
                    && crate::lifecycle::same_peers(&s.brick.peers, v, *id)
            });
            if !keep {
                tracing::info!(brick = %s.brick.root.display(), "brick stopped");
                s.token.cancel();
            }
            keep
        });
        for (id, (v, b)) in wanted {
            if served.contains_key(&id) {
                continue;
            }
            let root = Path::new(&b.path);
            if let Err(e) = std::fs::create_dir_all(root) {
                tracing::error!(brick = %b.path, "cannot create brick directory: {e}");
                continue;
            }
            let peers = v
                .bricks
                .iter()
                .filter(|x| x.id != id)
                .map(|x| x.id)
                .collect();
            match Brick::open(root, v.id, &v.name, id, node.me.uuid, peers) {
                Ok(brick) => {
                    let brick = Arc::new(brick);
                    let token = node.token.child_token();
                    if brick.seq() == 0 && super::import::has_content(&brick.root) {
                        let b2 = brick.clone();
                        node.spawn(async move {
                            let b3 = b2.clone();
                            match tokio::task::spawn_blocking(move || super::import::import_existing(&b3)).await {
                                Ok(Ok(n)) => tracing::info!(brick = %b2.root.display(), "adopted {n} paths already in the brick directory"),
                                Ok(Err(e)) => tracing::error!(brick = %b2.root.display(), "cannot adopt existing files: {e}"),
                                Err(e) => tracing::error!("import task: {e}"),
                            }
                        });
                    }
                    crate::replicate::spawn(node, &brick, &token);
                    tracing::info!(brick = %b.path, volume = %v.name, "brick started");
                    served.insert(id, Served { brick, token });
                }
                Err(e) => tracing::error!(brick = %b.path, "cannot open brick: {e}"),
            }
        }
    }

    /// The brick with replica id `id`, if served here.
    pub fn get(&self, id: u64) -> Option<Arc<Brick>> {
        self.lock().get(&id).map(|s| s.brick.clone())
    }

    /// The bricks of a volume served here.
    pub fn of_volume(&self, volume: Uuid) -> Vec<Arc<Brick>> {
        self.lock()
            .values()
            .filter(|s| s.brick.volume == volume)
            .map(|s| s.brick.clone())
            .collect()
    }

    /// Status rows of the local bricks of `volume`.
    pub fn status(&self, node: &Node, volume: &str) -> Vec<BrickStatus> {
        let Some(v) = node.config().volume(volume).cloned() else {
            return Vec::new();
        };
        v.bricks
            .iter()
            .filter(|b| b.node == node.me.uuid)
            .map(|b| match self.get(b.id) {
                Some(brick) => BrickStatus {
                    brick: b.id,
                    online: true,
                    pid: node.pid(),
                    port: node.listen.port(),
                    counters: brick.counters(),
                    entries: brick.entry_count(),
                    seq: brick.seq(),
                },
                None => BrickStatus {
                    brick: b.id,
                    online: false,
                    pid: node.pid(),
                    port: node.listen.port(),
                    counters: Default::default(),
                    entries: 0,
                    seq: 0,
                },
            })
            .collect()
    }

    /// Stops every brick.
    pub fn close_all(&self) {
        for (_, s) in self.lock().drain() {
            s.token.cancel();
        }
    }
}

/// Checks a brick directory for `volume create`, creating it if missing.
/// Errors use `{brick}` where the caller puts the brick's name.
pub fn prepare_brick_dir(path: &Path, force: bool, volume: Uuid) -> Result<(), String> {
    if !path.is_absolute() {
        return Err("brick path {brick} must be absolute".into());
    }
    let marker = path.join(crate::path::RESERVED).join("volume-id");
    if let Ok(id) = std::fs::read_to_string(&marker) {
        if id.trim() != volume.to_string() {
            return Err("{brick} is already part of a volume".into());
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => return Err("{brick} exists and is not a directory".into()),
        Ok(_) if !force => {
            let non_empty = std::fs::read_dir(path)
                .map_err(|e| format!("{{brick}}: {e}"))?
                .filter_map(Result::ok)
                .any(|e| e.file_name() != crate::path::RESERVED);
            if non_empty {
                return Err("The brick {brick} is not empty. Use 'force' at the end of the command if you want to use it anyway".into());
            }
        }
        _ => {}
    }
    if !force && on_root_fs(path) {
        return Err("The brick {brick} is being created in the root partition. It is recommended that you don't use the system's root partition for storage backend. Or use 'force' at the end of the command if you want to override this behavior.".into());
    }
    std::fs::create_dir_all(path.join(crate::path::RESERVED))
        .map_err(|e| format!("{{brick}}: {e}"))?;
    std::fs::write(&marker, volume.to_string()).map_err(|e| format!("{{brick}}: {e}"))?;
    Ok(())
}

fn on_root_fs(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::metadata("/") else {
        return false;
    };
    let mut p = path;
    loop {
        if let Ok(m) = std::fs::metadata(p) {
            return m.dev() == root.dev();
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return false,
        }
    }
}

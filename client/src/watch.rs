//! File-watcher hints: notify events become dirty paths for the agent.
//!
//! Events are only hints: the agent re-reads each path's state and compares
//! it with the journal, so duplicate, reordered or coalesced events are
//! harmless. Reads (access events) are dropped, or the agent's own scans
//! would wake it forever. An overflow marks the whole folder dirty.
//! Symlinks are never followed (a link to a directory is one path).

use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

/// A hint from the watcher.
#[derive(Debug)]
pub enum Hint {
    /// Something happened at this path.
    Path(PathBuf),
    /// Events were lost: rescan everything.
    Rescan,
}

/// Starts watching `root` recursively.
pub fn start(root: &Path, tx: UnboundedSender<Hint>) -> notify::Result<RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            if ev.need_rescan() {
                let _ = tx.send(Hint::Rescan);
            }
            if matches!(ev.kind, EventKind::Access(_)) {
                return;
            }
            for p in ev.paths {
                let _ = tx.send(Hint::Path(p));
            }
        }
        Err(e) => {
            tracing::warn!("file watcher: {e}; rescanning");
            let _ = tx.send(Hint::Rescan);
        }
    };
    // A symlink is synced as a link: the watcher must never descend into
    // what it points to (a directory outside the mount, or a loop).
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut w = RecommendedWatcher::new(handler, config)?;
    w.watch(root, RecursiveMode::Recursive)?;
    Ok(w)
}

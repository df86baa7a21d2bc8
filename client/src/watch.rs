//! File-watcher hints: notify events become dirty paths for the agent.
//!
//! Events are only hints: the agent re-reads each path's state and compares
//! it with the journal, so duplicate, reordered or coalesced events are
//! harmless. An overflow or rescan request marks the whole folder dirty.

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

/// Starts watching `root` recursively; every touched path goes to `tx`
/// (`root` itself means "rescan everything").
pub fn start(root: &Path, tx: UnboundedSender<PathBuf>) -> notify::Result<RecommendedWatcher> {
    let r = root.to_path_buf();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            if ev.need_rescan() {
                let _ = tx.send(r.clone());
            }
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
        Err(e) => {
            tracing::warn!("file watcher: {e}; rescanning");
            let _ = tx.send(r.clone());
        }
    })?;
    w.watch(root, RecursiveMode::Recursive)?;
    Ok(w)
}

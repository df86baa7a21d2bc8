//! File-watcher hints: notify events become dirty paths for the agent.
//!
//! Events are only hints: the agent re-reads each path's state and compares
//! it with the journal, so duplicate, reordered or coalesced events are
//! harmless. Reads (access events) are dropped, or the agent's own scans
//! would wake it forever, except the close of a file written to: with the
//! creation and the writes before it, it tells the agent when a file is
//! complete (see `Agent::writing`). An overflow marks the whole folder dirty.
//! Symlinks are never followed (a link to a directory is one path).

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

/// A hint from the watcher.
#[derive(Debug)]
pub enum Hint {
    /// Something happened at this path.
    Path(PathBuf),
    /// Data was written to this file: it may still be open for writing
    /// (`cp` of a big file, a shell redirection of a slow command).
    Written(PathBuf),
    /// A non-directory was created: a regular file is open for writing by
    /// its creator until its close, even before a first write (a symlink
    /// or a hard link is complete at once).
    Created(PathBuf),
    /// A file open for writing was closed: what it holds now is complete.
    Closed(PathBuf),
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
            let hint: fn(PathBuf) -> Hint = match ev.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => Hint::Closed,
                EventKind::Access(_) => return,
                EventKind::Modify(ModifyKind::Data(_)) => Hint::Written,
                EventKind::Create(CreateKind::File) => Hint::Created,
                _ => Hint::Path,
            };
            for p in ev.paths {
                let _ = tx.send(hint(p));
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

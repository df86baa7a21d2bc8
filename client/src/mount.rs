//! One mount as the executor of the agent's decisions (`sync`) sees it:
//! the folder, its journal, the ignore rules, the brick followed now, and
//! the notes the executor leaves for the agent's loop (paths to push again,
//! versions whose echo is expected, concurrent versions met). The agent
//! owns one and lends it to `sync`; `sync` never reaches back into the
//! agent, so the dependency runs one way: agent -> sync -> mount.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use gsync_brick::node::Node;
use gsync_brick::store::types::{Entry, Kind};
use gsync_brick::wire::proto::{Offer, WriteInfo};
use gsync_brick::wire::vv::VersionVector;
use gsync_brick::RelPath;

use crate::journal::{Journal, Record};
use crate::local::Ignore;
use crate::remote::Target;
use crate::spec::{MountSpec, Prefer};

pub(crate) struct Mount {
    pub(crate) node: Arc<Node>,
    pub(crate) spec: MountSpec,
    pub(crate) journal: Journal,
    /// The ignore rules (reloaded when `.gsyncignore` changes).
    ignore: Mutex<Arc<Ignore>>,
    /// The brick followed now; `None` while none is reachable.
    target: Mutex<Option<Target>>,
    /// Special files (fifo, socket, device) already warned about.
    pub(crate) warned_special: Mutex<BTreeSet<RelPath>>,
    /// Paths whose synced version met a concurrent one on the brick while
    /// applying: if no brick holds that synced version (not even as a
    /// split-brain sibling) it was lost, and is offered again (see
    /// `Agent::offer_lost`), so the bricks decide (merge, or a split-brain
    /// they report) instead of the mount alone saying split-brain.
    pub(crate) met_concurrent: Mutex<BTreeSet<String>>,
    /// Versions this agent pushed whose echo from the feed is still to
    /// come: an entry announced again with the same vector and no echo
    /// expected means the brick changed something else about the path
    /// (a concurrent sibling arrived: split-brain).
    echoes: Mutex<HashMap<RelPath, VersionVector>>,
    /// Paths marked dirty by work running concurrently with the loop.
    remarks: Mutex<Vec<RelPath>>,
}

impl Mount {
    pub(crate) fn new(node: Arc<Node>, spec: MountSpec, journal: Journal, ignore: Ignore) -> Self {
        Self {
            node,
            spec,
            journal,
            ignore: Mutex::new(Arc::new(ignore)),
            target: Mutex::new(None),
            warned_special: Mutex::new(BTreeSet::new()),
            met_concurrent: Mutex::new(BTreeSet::new()),
            echoes: Mutex::new(HashMap::new()),
            remarks: Mutex::new(Vec::new()),
        }
    }

    /// The brick followed now; `None` while none is reachable.
    pub(crate) fn target(&self) -> Option<Target> {
        self.target
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Follows `t` from now on (the agent's loop decides).
    pub(crate) fn set_target(&self, t: Option<Target>) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// The ignore rules in force.
    pub(crate) fn ignore(&self) -> Arc<Ignore> {
        self.ignore
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the ignore rules (the agent's loop reloads them).
    pub(crate) fn set_ignore(&self, i: Ignore) {
        *self.ignore.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(i);
    }

    /// The paths marked and not yet taken.
    pub(crate) fn marked(&self) -> BTreeSet<RelPath> {
        self.remarks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The paths marked since the last call.
    pub(crate) fn take_marks(&self) -> Vec<RelPath> {
        std::mem::take(&mut *self.remarks.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The folder the agent syncs: the mount folder, or for an atomic
    /// mount its working tree (see `atomic`).
    pub(crate) fn root(&self) -> PathBuf {
        if self.spec.atomic {
            crate::atomic::work(&self.spec.dir)
        } else {
            self.spec.dir.clone()
        }
    }

    /// Remembers a version pushed by this agent (see `echoes`).
    pub(crate) fn expect_echo(&self, rel: RelPath, vv: VersionVector) {
        let mut echoes = self.echoes.lock().unwrap_or_else(|p| p.into_inner());
        if echoes.len() > 100_000 {
            echoes.clear();
        }
        echoes.insert(rel, vv);
    }

    /// True (and forgotten) if `vv` is the version this agent pushed for `rel`.
    pub(crate) fn take_echo(&self, rel: &RelPath, vv: &VersionVector) -> bool {
        let mut echoes = self.echoes.lock().unwrap_or_else(|p| p.into_inner());
        if echoes.get(rel) == Some(vv) {
            echoes.remove(rel);
            return true;
        }
        false
    }

    /// Marks a path dirty. It joins the journal's queue (persisted) when
    /// the marks are collected, before it can be pushed.
    pub(crate) fn mark(&self, rel: RelPath) {
        self.remarks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rel);
    }

    /// The first-attach rule for a path both sides have.
    pub(crate) fn prefer(&self) -> Option<Prefer> {
        self.spec.prefer
    }

    /// Write info for a new local version against its journal record.
    pub(crate) fn write_info(&self, entry: &Entry, base: Option<&Record>) -> WriteInfo {
        match base.filter(|b| b.entry.kind != Kind::Tombstone || entry.kind == Kind::Tombstone) {
            Some(b) => WriteInfo {
                writer: self.spec.writer,
                base: b.entry.vv.clone(),
                base_data: b.entry.data_vv.clone(),
                base_meta: b.entry.meta_vv.clone(),
                content_changed: !b.entry.same_content(entry),
                meta_changed: !b.entry.same_meta(entry),
            },
            None => WriteInfo {
                writer: self.spec.writer,
                base: base.map(|b| b.entry.vv.clone()).unwrap_or_default(),
                base_data: Default::default(),
                base_meta: Default::default(),
                content_changed: true,
                meta_changed: true,
            },
        }
    }

    pub(crate) fn offer(
        &self,
        t: &Target,
        entry: Entry,
        chunks: Vec<gsync_brick::store::types::ChunkRef>,
        w: WriteInfo,
    ) -> Offer {
        Offer {
            volume: t.volume,
            brick: t.brick,
            entry,
            chunks,
            write: Some(w),
            from_brick: None,
        }
    }
}

//! Heal report data carried over the wire (filled by the store, formatted
//! by the CLI).

use serde::{Deserialize, Serialize};

use crate::store::types::Entry;
use crate::RelPath;

/// The heal state of one brick.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BrickHealInfo {
    /// Replica id.
    pub brick: u64,
    /// Paths not yet confirmed by every other brick, or in split-brain
    /// (sorted, at most `LIST_LIMIT`).
    pub entries: Vec<HealEntry>,
    /// Number of distinct paths pending or in split-brain.
    pub total: u64,
    /// Number of paths pending for some brick.
    pub pending: u64,
    /// Number of paths in split-brain.
    pub split_brain: u64,
    /// Number of paths being transferred right now.
    pub healing: u64,
    /// Heals completed since the daemon started.
    pub heals_done: u64,
    /// Bytes moved by heals since the daemon started.
    pub heal_bytes: u64,
    /// Pending entries per peer brick.
    pub pending_by_peer: Vec<(u64, u64)>,
    /// Writes refused for lack of space or other local errors (last one).
    pub last_error: Option<String>,
    /// Quorum state: `None` if no quorum is configured, else whether met.
    pub quorum_met: Option<bool>,
    /// Heals per second since the current heal started.
    pub heal_rate: Option<f64>,
    /// Estimated seconds until the pending entries are healed.
    pub eta_secs: Option<f64>,
    /// Set when the brick is not served, with the reason (e.g. its
    /// volume-id marker is missing); the counts above are then empty.
    pub not_served: Option<String>,
}

/// One path in a heal report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealEntry {
    /// The path.
    pub path: RelPath,
    /// True if it is in split-brain.
    pub split_brain: bool,
}

/// The competing versions of a split-brain path on one brick.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SplitBrainVersions {
    /// Replica id of the brick that reports them.
    pub brick: u64,
    /// Versions: the one in the brick directory first.
    pub versions: Vec<Entry>,
    /// Versions retained after a resolution (path, retained file name).
    pub retained: Vec<(Entry, String)>,
}

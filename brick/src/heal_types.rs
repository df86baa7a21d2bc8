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
    /// File bytes of the pending entries (what is left to send), summed
    /// over the first [`PENDING_BYTES_SCAN`] paths and scaled up beyond.
    pub pending_bytes: u64,
    /// Bytes per second moved by heals since the current heal started.
    pub heal_byte_rate: Option<f64>,
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
    /// The latest full heal (`heal VOL full`) from this brick toward each
    /// peer brick, in peer order; empty if none ran since the daemon
    /// started.
    pub full_heal: Vec<FullHealState>,
}

/// Pending paths whose sizes are summed exactly for `pending_bytes`; a
/// larger backlog is estimated from them. Kept small: heal info runs on
/// the brick's database thread, ahead of commits queued behind it, and the
/// node's monitor asks for it every 2 s.
pub const PENDING_BYTES_SCAN: usize = 2_000;

impl BrickHealInfo {
    /// True while a full heal from this brick has not compared every peer
    /// brick (running, retrying or failed): the entry counts are then not
    /// the whole truth.
    pub fn full_heal_unfinished(&self) -> bool {
        self.full_heal
            .iter()
            .any(|f| f.phase != FullHealPhase::Done)
    }
}

/// Where a full heal from one brick toward one peer brick stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullHealPhase {
    /// Comparing now.
    Running,
    /// The last attempt failed; another follows after a backoff.
    Retrying,
    /// Every attempt failed; run `heal VOL full` again.
    Failed,
    /// The trees were compared; what differs is in the pending index.
    Done,
}

impl FullHealPhase {
    /// As heal reports print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Done => "done",
        }
    }
}

/// A full heal from one brick toward one peer brick.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FullHealState {
    /// Replica id of the peer brick compared with.
    pub peer: u64,
    /// Running, retrying, failed or done.
    pub phase: FullHealPhase,
    /// Attempts so far (1 for the first).
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Directories compared by the latest attempt.
    pub dirs_compared: u64,
    /// Paths marked for healing by the latest attempt.
    pub paths_marked: u64,
    /// Seconds since this full heal was launched.
    pub elapsed_secs: f64,
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

/// A full heal job's state and when it was launched.
#[derive(Debug, Clone)]
pub struct FullHealTrack {
    /// As reported.
    pub state: FullHealState,
    /// Launch time.
    pub started: std::time::Instant,
}

impl FullHealTrack {
    /// The state with its elapsed time filled in, for reports.
    pub fn report(&self) -> FullHealState {
        let mut s = self.state.clone();
        s.elapsed_secs = self.started.elapsed().as_secs_f64();
        s
    }
}

//! Status and history records of a brick: what `volume status` (with
//! its disk detail) and `volume heal VOL history` show. They travel on
//! the wire between nodes and over the control socket to the CLI, so
//! they live here, below both protocols and below the brick store that
//! fills them in.

use serde::{Deserialize, Serialize};

/// Brick status for `volume status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BrickStatus {
    /// Replica id.
    pub brick: u64,
    /// Served right now.
    pub online: bool,
    /// Daemon pid.
    pub pid: u32,
    /// QUIC port.
    pub port: u16,
    /// Counters.
    pub counters: Counters,
    /// Paths tracked.
    pub entries: u64,
    /// Current change sequence.
    pub seq: u64,
    /// Why the brick is not served (e.g. its volume-id marker is missing).
    pub offline_reason: Option<String>,
}

/// Per-brick counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    /// Changes applied from peers or writers.
    pub changes_applied: u64,
    /// Content bytes received.
    pub bytes_received: u64,
    /// Content bytes sent.
    pub bytes_sent: u64,
    /// Chunks found locally instead of transferred.
    pub chunks_reused: u64,
    /// Chunks transferred.
    pub chunks_fetched: u64,
    /// Heals completed.
    pub heals: u64,
    /// Bytes moved by heals.
    pub heal_bytes: u64,
}

/// The disk under a brick, for `volume status VOL detail`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiskInfo {
    /// File system type (ext4, xfs...).
    pub filesystem: String,
    /// Source device.
    pub device: String,
    /// Mount options.
    pub mount_options: String,
    /// Where that file system is mounted.
    pub mount_point: String,
    /// Bytes available to the daemon.
    pub free_bytes: u64,
    /// Size of the file system.
    pub total_bytes: u64,
    /// Inodes in all.
    pub inodes_total: u64,
    /// Inodes free.
    pub inodes_free: u64,
    /// File system block size.
    pub block_size: u64,
}

/// One period a brick could not reach a peer brick, as that brick saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutageRecord {
    /// The recording brick (replica id).
    pub brick: u64,
    /// The brick it could not reach.
    pub peer: u64,
    /// Start (seconds since the epoch).
    pub start: u64,
    /// End, or `None` while it lasts.
    pub end: Option<u64>,
    /// Paths the recording brick changed during it, with their state now.
    pub paths: Vec<PathState>,
    /// Changes beyond the paths kept per period, not listed (a path changed
    /// again after it was counted counts again).
    pub more: u64,
}

/// A changed path and its state on the recording brick now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathState {
    /// Volume-relative path.
    pub path: String,
    /// The brick holds concurrent versions of it.
    pub split_brain: bool,
    /// The brick still has to send it to the peer it could not reach.
    pub pending: bool,
}

/// A split-brain resolution made on a brick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// Volume-relative path.
    pub path: String,
    /// When (seconds since the epoch).
    pub at: u64,
    /// How: a policy (`size`, `mtime`, `majority`) or `source-brick`.
    pub how: String,
    /// The winning version: the first 12 hex digits of its content hash
    /// (as `volume trash` names versions), or its kind when not a file.
    pub winner: String,
    /// The losing versions, named the same way; each is in the trash.
    pub losers: Vec<String>,
}

/// Everything one brick recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrickHistory {
    /// Replica id.
    pub brick: u64,
    /// Its periods, oldest first.
    pub outages: Vec<OutageRecord>,
    /// Its resolutions, oldest first.
    pub resolutions: Vec<Resolution>,
}

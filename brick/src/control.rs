//! The control protocol between the `gsync` CLI and its local daemon, over
//! a Unix socket (mode 0600) in the state directory.
//!
//! One request per connection: a JSON [`CtlRequest`] frame, answered by one
//! JSON [`CtlReply`] frame. The reply carries structured data; the CLI
//! formats it as GlusterFS-shaped text or passes it through with `--json`.
//! JSON keeps the socket easy to script and debug; field names are the
//! documented `--json` names.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::faults::Rule;

/// File name of the control socket inside the state directory.
pub const SOCKET_NAME: &str = "gsyncd.sock";

/// Path of the control socket of the daemon using `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// A CLI request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum CtlRequest {
    /// Is the daemon up; who is it.
    Ping,
    /// `peer probe`.
    PeerProbe {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Join secret.
        secret: Option<String>,
    },
    /// `peer detach`.
    PeerDetach {
        /// Host.
        host: String,
        /// Detach even if it hosts bricks.
        force: bool,
    },
    /// `peer status` / `pool list`.
    PeerStatus,
    /// `volume create`.
    VolumeCreate {
        /// Name.
        name: String,
        /// Replica count.
        replica: u32,
        /// `HOST:/PATH` for each brick.
        bricks: Vec<String>,
        /// Allow non-empty or root-filesystem brick dirs.
        force: bool,
    },
    /// `volume start`.
    VolumeStart {
        /// Name.
        name: String,
        /// Start even if already started.
        force: bool,
    },
    /// `volume stop`.
    VolumeStop {
        /// Name.
        name: String,
    },
    /// `volume delete`.
    VolumeDelete {
        /// Name.
        name: String,
    },
    /// `volume info` / `volume list`.
    VolumeInfo {
        /// One volume, or all.
        name: Option<String>,
    },
    /// `volume status`.
    VolumeStatus {
        /// One volume, or all.
        name: Option<String>,
    },
    /// `volume set`.
    VolumeSet {
        /// Volume.
        name: String,
        /// Option key.
        key: String,
        /// Value.
        value: String,
    },
    /// `volume reset`.
    VolumeReset {
        /// Volume.
        name: String,
        /// Option key, or `all`.
        key: String,
    },
    /// `volume heal VOL info|summary|split-brain|statistics` (data gathering).
    HealInfo {
        /// Volume.
        name: String,
    },
    /// `volume heal VOL history`.
    HealHistory {
        /// Volume.
        name: String,
    },
    /// `volume heal VOL [full]`.
    Heal {
        /// Volume.
        name: String,
        /// Full crawl.
        full: bool,
    },
    /// `volume heal VOL split-brain show FILE`.
    SplitBrainShow {
        /// Volume.
        name: String,
        /// Path in the volume.
        path: String,
    },
    /// `volume heal VOL split-brain POLICY ...`.
    SplitBrainResolve {
        /// Volume.
        name: String,
        /// `bigger-file`, `latest-mtime` or `source-brick`.
        policy: String,
        /// The file (optional for source-brick).
        path: Option<String>,
        /// `HOST:/PATH` for source-brick.
        brick: Option<String>,
    },
    /// `gsync mount HOST:/VOL DIR ...`.
    Mount {
        /// `HOST:/VOL`.
        source: String,
        /// Absolute local directory.
        dir: String,
        /// `local` or `remote`.
        prefer: Option<String>,
        /// Only receive.
        read_only: bool,
        /// Command run once per settled batch of applied changes.
        on_change: Option<String>,
        /// Settle time of the batches, in milliseconds (default 300).
        #[serde(default)]
        on_change_delay_ms: Option<u64>,
        /// Run the command for the first download too.
        #[serde(default)]
        on_change_initial: bool,
        /// Changeset window of local changes, in milliseconds.
        #[serde(default)]
        settle_ms: Option<u64>,
        /// Command validating an incoming changeset before it goes live.
        #[serde(default)]
        validate: Option<String>,
        /// Longest run of the validator, in milliseconds.
        #[serde(default)]
        validate_timeout_ms: Option<u64>,
        /// DIR is a symlink swapped to a new generation per changeset.
        #[serde(default)]
        atomic: bool,
    },
    /// `gsync umount DIR`.
    Umount {
        /// Absolute local directory.
        dir: String,
    },
    /// `gsync mount` (list).
    MountList,
    /// Set a network fault rule (testing and drills).
    DebugNet {
        /// Peer address.
        ip: std::net::IpAddr,
        /// The rule (default = remove).
        rule: Rule,
    },
    /// Remove every fault rule.
    DebugNetClear,
    /// Ask a remote node for its pool document (proves who may talk).
    DebugRemoteConfig {
        /// `HOST:PORT`.
        addr: String,
    },
    /// Send malformed frames to a pool member (robustness drills).
    DebugGarbage {
        /// `HOST:PORT`.
        addr: String,
    },
    /// `volume replace-brick VOL OLD NEW commit force`.
    VolumeReplaceBrick {
        /// Volume.
        name: String,
        /// `HOST:/PATH` of the brick to replace.
        old: String,
        /// `HOST:/PATH` of its replacement.
        new: String,
    },
    /// `volume reset-brick VOL BRICK start` / `... BRICK BRICK commit force`.
    VolumeResetBrick {
        /// Volume.
        name: String,
        /// `HOST:/PATH`.
        brick: String,
        /// false: `start` (take out of service); true: `commit force`.
        commit: bool,
    },
    /// `volume add-brick VOL replica N BRICK... [force]`.
    VolumeAddBrick {
        /// Volume.
        name: String,
        /// The new replica count.
        replica: u32,
        /// `HOST:/PATH` of each new brick.
        bricks: Vec<String>,
        /// Allow non-empty or root-filesystem brick dirs.
        force: bool,
    },
    /// `volume remove-brick VOL replica N BRICK... force`.
    VolumeRemoveBrick {
        /// Volume.
        name: String,
        /// The new replica count.
        replica: u32,
        /// `HOST:/PATH` of each brick to remove.
        bricks: Vec<String>,
    },
    /// `volume trash VOL list [PATH]`.
    TrashList {
        /// Volume.
        name: String,
        /// A file or directory in the volume (all when absent).
        path: Option<String>,
    },
    /// `volume trash VOL restore PATH [VERSION]`.
    TrashRestore {
        /// Volume.
        name: String,
        /// A file or directory in the volume.
        path: String,
        /// Content hash prefix of the version (newest when absent).
        version: Option<String>,
    },
    /// `gsync events`: the node's events after `since` (all kept when
    /// absent), oldest first.
    Events {
        /// Last sequence number already seen.
        since: Option<u64>,
    },
    /// `gsync wait DIR`: one check of whether every change in DIR is
    /// stored on `replicas` bricks (the CLI repeats it until its timeout).
    WaitCheck {
        /// A mounted folder or a directory inside one.
        dir: String,
        /// Bricks that must hold every change (default: all of the volume).
        replicas: Option<u32>,
    },
    /// `gsync accept-deletes DIR`: push the deletions the mass-delete guard
    /// holds.
    AcceptDeletes {
        /// A mounted folder.
        dir: String,
    },
    /// `gsync revert-deletes DIR`: put the files whose deletion is held
    /// back from the volume.
    RevertDeletes {
        /// A mounted folder.
        dir: String,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum CtlReply {
    /// Success, with command-specific data.
    Ok {
        /// The data (see the types in this module).
        data: serde_json::Value,
    },
    /// Failure, with the reason (the CLI adds the `command: failed:` prefix).
    Err {
        /// One line.
        reason: String,
    },
}

impl CtlReply {
    /// Success with `data` serialised (a serialisation failure becomes an
    /// error reply).
    pub fn ok<T: Serialize>(data: T) -> Self {
        match serde_json::to_value(data) {
            Ok(data) => Self::Ok { data },
            Err(e) => Self::fail(e.to_string()),
        }
    }

    /// Failure with a one-line reason.
    pub fn fail(reason: impl Into<String>) -> Self {
        Self::Err {
            reason: reason.into(),
        }
    }
}

/// Answer to [`CtlRequest::Ping`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub uuid: String,
    /// Name in the pool.
    pub hostname: String,
    /// QUIC address.
    pub listen: String,
    /// Key fingerprint.
    pub fingerprint: String,
    /// Daemon pid.
    pub pid: u32,
}

/// One peer in `peer status` / `pool list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Hostname.
    pub hostname: String,
    /// Node id.
    pub uuid: String,
    /// QUIC port.
    pub port: u16,
    /// Connected now.
    pub connected: bool,
    /// True for the local node (`localhost` in `pool list`).
    pub local: bool,
    /// Key fingerprint.
    pub fingerprint: String,
}

/// Answer to `peer probe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Already a member before the probe.
    pub already: bool,
    /// Hostname probed.
    pub hostname: String,
    /// Port.
    pub port: u16,
    /// The peer's key fingerprint.
    pub fingerprint: String,
}

/// One brick row in `volume status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrickRow {
    /// `host:/path`.
    pub brick: String,
    /// Replica id.
    pub id: u64,
    /// QUIC port (`None` when offline).
    pub port: Option<u16>,
    /// Online.
    pub online: bool,
    /// Daemon pid.
    pub pid: Option<u32>,
    /// Counters and sizes, when online.
    pub detail: Option<crate::status::BrickStatus>,
    /// Why the brick is not served although its node is up (e.g. its
    /// volume-id marker is missing).
    #[serde(default)]
    pub reason: Option<String>,
    /// The disk under the brick (from its node; none if that node did
    /// not answer).
    #[serde(default)]
    pub disk: Option<crate::status::DiskInfo>,
}

/// One self-heal daemon row in `volume status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShdRow {
    /// `localhost` or the node's hostname.
    pub host: String,
    /// Online.
    pub online: bool,
    /// Daemon pid.
    pub pid: Option<u32>,
}

/// `volume status` of one volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeStatusReport {
    /// Volume name.
    pub volume: String,
    /// Started?
    pub started: bool,
    /// Brick rows.
    pub bricks: Vec<BrickRow>,
    /// Self-heal daemon rows.
    pub self_heal: Vec<ShdRow>,
}

/// One brick's heal report as seen from the asking node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealBrickReport {
    /// `host:/path`.
    pub brick: String,
    /// Replica id.
    pub id: u64,
    /// `Connected` or why not.
    pub status: String,
    /// The data, if reachable.
    pub info: Option<crate::heal_types::BrickHealInfo>,
    /// Changes on this brick that the validator of a mount of the asking
    /// node rejected (filled in by the CLI for the mounts that follow the
    /// brick).
    #[serde(default)]
    pub rejected: Vec<MountRejection>,
}

/// Changes a mount's validator rejected, in heal reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountRejection {
    /// The node the mount is on.
    pub node: String,
    /// The mount folder.
    pub dir: String,
    /// `changeset N (validator exit 1: ...)`.
    pub why: String,
    /// The paths not live in the folder because of it.
    pub paths: Vec<String>,
}

/// One mount in `gsync mount` (list).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountInfo {
    /// `HOST:/VOL`.
    pub source: String,
    /// Local directory.
    pub dir: String,
    /// `in sync`, `N pending`, `offline`, `N in split-brain`...
    pub state: String,
    /// Local changes not yet accepted by a brick.
    pub pending: u64,
    /// Paths in split-brain.
    pub split_brain: u64,
    /// Connected to a brick.
    pub online: bool,
    /// Brick currently followed.
    pub brick: Option<String>,
    /// Read-only mount.
    pub read_only: bool,
    /// Why pushes are held back (e.g. no quorum), if they are.
    pub held: Option<String>,
    /// Remote entries applied since the agent started.
    pub applied: u64,
    /// First sync done, nothing pending, a brick reachable.
    pub in_sync: bool,
    /// Deletions held by the mass-delete guard.
    #[serde(default)]
    pub held_deletes: u64,
    /// Why they are held.
    #[serde(default)]
    pub held_deletes_why: Option<String>,
    /// The last changeset the validator rejected, with why, while its
    /// changes are not live.
    #[serde(default)]
    pub rejected: Option<String>,
    /// The paths of rejected changesets not live yet.
    #[serde(default)]
    pub rejected_paths: Vec<String>,
    /// Changesets waiting for members.
    #[serde(default)]
    pub waiting: u64,
}

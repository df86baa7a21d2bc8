//! Node-to-node wire messages.
//!
//! Goals: one request per bidirectional QUIC stream (a [`Request`] frame,
//! then any bulk frames, then `finish`; the [`Response`] comes back on the
//! same stream), plain-data messages that are validated when decoded (paths
//! are [`RelPath`]s), and a version check on every connection.
//!
//! Non-goals: compatibility across major versions (the ALPN carries the
//! major version; a breaking change bumps it).
//!
//! Enums here are append-only, in wire order: bincode encodes the variant
//! index, so never reorder or remove a variant; retire it as `Reserved…`.
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::pool::{Member, PoolConfig};
pub use crate::store::types::{Changeset, WriteInfo};
use crate::store::types::{ChunkRef, Entry};
use crate::wire::vv::VersionVector;
use crate::RelPath;

/// ALPN of the gsync protocol, major version 1.
pub const ALPN: &[u8] = b"gsync/1";

/// Minor protocol version, checked in [`Hello`]: bumped whenever a message
/// changes shape (2: pool document lineage, heal fill progress; 3:
/// changesets: [`Request::OfferInSet`], [`Request::FeedInSets`]; 4: the
/// pool configuration on consensus, [`Request::Raft`]; 5: batched
/// replication of small versions, [`Request::OfferBatch`]; 6: bricks
/// offer the versions written, never a merge of them, see
/// `store::reconcile`). Nodes of
/// different versions refuse each other in `Hello` with one line naming
/// both versions, so an older node never receives a message it cannot read.
pub const PROTOCOL_VERSION: u32 = 6;

/// Wire error codes carried by [`Response::Error`].
pub mod code {
    /// The request is not allowed for this peer.
    pub const PERMISSION: u16 = 1;
    /// The request was malformed.
    pub const BAD_REQUEST: u16 = 2;
    /// The named volume or brick is not served here.
    pub const NOT_FOUND: u16 = 3;
    /// The node refused (e.g. already in another pool).
    pub const REFUSED: u16 = 4;
    /// A local failure (disk, database).
    pub const INTERNAL: u16 = 5;
    /// Protocol version mismatch.
    pub const VERSION: u16 = 6;
    /// The brick lacks quorum and refuses changes.
    pub const NO_QUORUM: u16 = 7;
    /// A write based on a stale version conflicts with the current one (on
    /// a volume with quorum, where bricks never keep split-brain siblings).
    pub const CONFLICT: u16 = 8;
    /// The volume's `auth.allow` does not admit the requesting node's
    /// mounts (checked on every request of a mount agent).
    pub const AUTH: u16 = 9;
}

/// First message on every connection, both ways.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The sender's node id.
    pub node: Uuid,
    /// Version of the sender's pool document.
    pub config_version: u64,
    /// Node that stamped that document.
    pub config_by: Uuid,
}

/// A join request from a node that wants to add the receiver to its pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    /// Join secret, if the probing user gave one.
    pub secret: Option<String>,
    /// The hostname the prober used to reach the receiver.
    pub host: String,
    /// Port the prober used.
    pub port: u16,
    /// The prober's pool document.
    pub config: PoolConfig,
}

/// A version of one path offered to a brick: by a peer brick (replication)
/// or by a sync agent (a write, with the base version it saw).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offer {
    /// Volume id.
    pub volume: Uuid,
    /// Target brick's replica id.
    pub brick: u64,
    /// The offered entry (its path, metadata and version vector).
    pub entry: Entry,
    /// Content chunks, for a regular file.
    pub chunks: Vec<ChunkRef>,
    /// For a write: the writer and the version it saw; the brick computes
    /// the new version vectors. `None` for replication: `entry`'s vectors
    /// are final.
    pub write: Option<WriteInfo>,
    /// Sender brick's replica id, for replication (used for counters and
    /// the pending index).
    pub from_brick: Option<u64>,
}

/// Requests, in wire order. (Offers are the largest and most frequent
/// message; boxing them would cost an allocation each for no gain.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// 0: version and config exchange.
    Hello(Hello),
    /// 1: join the sender's pool.
    Probe(Box<Probe>),
    /// 2: a newer pool document (refused since protocol 4: the document
    /// changes only by consensus).
    PushConfig(Box<PoolConfig>),
    /// 3: ask for the pool document.
    PullConfig,
    /// 4: the receiver was detached from the pool.
    Detached,
    /// 5: brick status and counters of this node for a volume.
    BrickStatus(BrickStatus),
    /// 6: offer a version of a path; answered with [`Response::Need`], then
    /// the needed chunks follow as raw frames, then [`Response::Applied`].
    Offer(Offer),
    /// 7: read chunks of a path's current content; answered with
    /// [`Response::Ok`] then one raw frame per chunk.
    ReadChunks(ReadChunks),
    /// 8: entries changed after sequence `since`, waiting up to `wait_ms`
    /// for one if there are none yet.
    Changes(Changes),
    /// 9: the chunk list of a path's current content.
    Stat(Stat),
    /// 10: heal state of this node's bricks of a volume.
    HealInfo(HealInfo),
    /// 11: a heal command for this node's bricks of a volume.
    Heal(Heal),
    /// 12: check (and create) a brick directory before `volume create`.
    PrepareBrick(PrepareBrick),
    /// 13: the competing versions of a path on this node's bricks.
    SplitBrain(SplitBrain),
    /// 14: Merkle digests of the children of a directory (`""` = the
    /// volume root), for the full crawl.
    Digests(Digests),
    /// 15: re-initialise a brick directory in place (`reset-brick ...
    /// commit force`): fresh `.gsync/` with the volume-id marker, earlier
    /// content set aside under `.gsync/`.
    ResetBrick(ResetBrick),
    /// 16: like [`Request::Changes`], answered with [`Response::Feed`],
    /// which names the brick's incarnation: a follower whose cursor belongs
    /// to another incarnation (a rebuilt brick) resynchronises instead of
    /// trusting the sequence number.
    Feed(Feed),
    /// 17: the version vectors a brick holds for paths (`gsync wait`),
    /// answered with [`Response::Versions`]; at most [`MAX_VERSION_PATHS`].
    Versions(Versions),
    /// 18: the outage history of this node's bricks of a volume, answered
    /// with [`Response::History`].
    History(History),
    /// 19: the disks under this node's bricks of a volume (`volume status
    /// VOL detail`), answered with [`Response::BrickDisks`].
    BrickDisks(BrickDisks),
    /// 20: [`Request::Offer`] of a version that belongs to a changeset;
    /// the brick records the tag with the version and passes it on.
    OfferInSet(OfferInSet),
    /// 21: like [`Request::Feed`], answered with [`Response::FeedInSets`],
    /// which adds the changeset tags of the entries.
    FeedInSets(FeedInSets),
    /// 22: a message of the pool's consensus group (JSON of
    /// `node::raft`'s message), answered with [`Response::Raft`].
    Raft(Vec<u8>),
    /// 23: replication of many small versions at once, their content
    /// inline (at most [`MAX_BATCH_ENTRIES`] versions and
    /// [`MAX_BATCH_BYTES`] of content); no chunk frames follow. Answered
    /// with [`Response::Batch`], one outcome per version, in order.
    OfferBatch(OfferBatch),
    /// 24: many small local changes of a mount agent at once, each as an
    /// [`Offer`] with its [`WriteInfo`] would be, content inline (the
    /// limits of [`Request::OfferBatch`]). Answered with
    /// [`Response::Batch`], one outcome per change, in order.
    WriteBatch(WriteBatch),
}

/// 5: brick status and counters of this node for a volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrickStatus {
    /// Volume name.
    pub volume: String,
}

/// 7: read chunks of a path's current content; answered with
/// [`Response::Ok`] then one raw frame per chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadChunks {
    /// Volume id.
    pub volume: Uuid,
    /// Brick replica id.
    pub brick: u64,
    /// Path.
    pub path: RelPath,
    /// Expected content hash (the read fails if it changed).
    pub hash: [u8; 32],
    /// Indexes into the entry's chunk list.
    pub chunks: Vec<u32>,
}

/// 8: entries changed after sequence `since`, waiting up to `wait_ms`
/// for one if there are none yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Changes {
    /// Volume id.
    pub volume: Uuid,
    /// Brick replica id.
    pub brick: u64,
    /// Last sequence number the caller has.
    pub since: u64,
    /// How long to wait for a change.
    pub wait_ms: u32,
    /// Most entries to return.
    pub limit: u32,
}

/// 9: the chunk list of a path's current content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stat {
    /// Volume id.
    pub volume: Uuid,
    /// Brick replica id.
    pub brick: u64,
    /// Path.
    pub path: RelPath,
}

/// 10: heal state of this node's bricks of a volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealInfo {
    /// Volume name.
    pub volume: String,
}

/// 11: a heal command for this node's bricks of a volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heal {
    /// Volume name.
    pub volume: String,
    /// What to do.
    pub op: HealOp,
}

/// 12: check (and create) a brick directory before `volume create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareBrick {
    /// Absolute path on the receiving node.
    pub path: String,
    /// Allow a non-empty directory or one on the root filesystem.
    pub force: bool,
    /// The volume it will belong to.
    pub volume: Uuid,
}

/// 13: the competing versions of a path on this node's bricks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitBrain {
    /// Volume name.
    pub volume: String,
    /// Path.
    pub path: RelPath,
}

/// 14: Merkle digests of the children of a directory (`""` = the
/// volume root), for the full crawl.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Digests {
    /// Volume id.
    pub volume: Uuid,
    /// Brick replica id.
    pub brick: u64,
    /// Directory path, `""` for the root.
    pub dir: String,
}

/// 15: re-initialise a brick directory in place (`reset-brick ...
/// commit force`): fresh `.gsync/` with the volume-id marker, earlier
/// content set aside under `.gsync/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResetBrick {
    /// Absolute path on the receiving node.
    pub path: String,
    /// The volume it belongs to.
    pub volume: Uuid,
}

/// 16: like [`Request::Changes`], answered with [`Response::Feed`],
/// which names the brick's incarnation: a follower whose cursor belongs
/// to another incarnation (a rebuilt brick) resynchronises instead of
/// trusting the sequence number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Feed {
    /// Volume id.
    pub volume: Uuid,
    /// Brick replica id.
    pub brick: u64,
    /// Last sequence number the caller has.
    pub since: u64,
    /// How long to wait for a change.
    pub wait_ms: u32,
    /// Most entries to return.
    pub limit: u32,
}

/// The version vectors a brick holds for paths (`gsync wait`),
/// answered with [`Response::Versions`]; at most [`MAX_VERSION_PATHS`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versions {
    /// Volume id.
    pub volume: Uuid,
    /// Brick replica id.
    pub brick: u64,
    /// Paths.
    pub paths: Vec<RelPath>,
}

/// 18: the outage history of this node's bricks of a volume, answered
/// with [`Response::History`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    /// Volume name.
    pub volume: String,
}

/// 19: the disks under this node's bricks of a volume (`volume status
/// VOL detail`), answered with [`Response::BrickDisks`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrickDisks {
    /// Volume name.
    pub volume: String,
}

/// 20: [`Request::Offer`] of a version that belongs to a changeset;
/// the brick records the tag with the version and passes it on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfferInSet {
    /// The offer.
    pub offer: Offer,
    /// Its changeset.
    pub changeset: Changeset,
}

/// 21: like [`Request::Feed`], answered with [`Response::FeedInSets`],
/// which adds the changeset tags of the entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedInSets {
    /// Volume id.
    pub volume: Uuid,
    /// Brick replica id.
    pub brick: u64,
    /// Last sequence number the caller has.
    pub since: u64,
    /// How long to wait for a change.
    pub wait_ms: u32,
    /// Most entries to return.
    pub limit: u32,
}

/// 23: replication of many small versions at once, their content
/// inline (at most [`MAX_BATCH_ENTRIES`] versions and
/// [`MAX_BATCH_BYTES`] of content); no chunk frames follow. Answered
/// with [`Response::Batch`], one outcome per version, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfferBatch {
    /// Volume id.
    pub volume: Uuid,
    /// Target brick's replica id.
    pub brick: u64,
    /// Sender brick's replica id (see [`Offer::from_brick`]).
    pub from_brick: u64,
    /// The versions, each of a different path.
    pub entries: Vec<BatchEntry>,
}

/// 24: many small local changes of a mount agent at once, each as an
/// [`Offer`] with its [`WriteInfo`] would be, content inline (the
/// limits of [`Request::OfferBatch`]). Answered with
/// [`Response::Batch`], one outcome per change, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteBatch {
    /// Volume id.
    pub volume: Uuid,
    /// Target brick's replica id.
    pub brick: u64,
    /// The changeset every change belongs to, if any.
    pub changeset: Option<Changeset>,
    /// The changes, each of a different path.
    pub entries: Vec<WriteEntry>,
}

/// One change of a [`Request::WriteBatch`]: a directory, a link, a
/// deletion or a file smaller than the smallest chunk, with its content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteEntry {
    /// The new version (its vectors are assigned by the brick).
    pub entry: Entry,
    /// Its chunk list: none, or one chunk holding the whole content.
    pub chunks: Vec<ChunkRef>,
    /// What it was written on.
    pub write: WriteInfo,
    /// The whole content of a file (empty for other kinds).
    pub content: Vec<u8>,
}

/// Most versions in one [`Request::OfferBatch`].
pub const MAX_BATCH_ENTRIES: usize = 256;
/// Most content bytes (all entries together) in one [`Request::OfferBatch`].
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// One version of a [`Request::OfferBatch`]: a directory, a link, a
/// deletion or a file smaller than the smallest chunk, with its content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchEntry {
    /// The version (final vectors, as in a replication [`Offer`]).
    pub entry: Entry,
    /// Its chunk list: none, or one chunk holding the whole content.
    pub chunks: Vec<ChunkRef>,
    /// Its changeset, if it belongs to one.
    pub changeset: Option<Changeset>,
    /// The whole content of a file (empty for other kinds).
    pub content: Vec<u8>,
}

/// What became of one version of a [`Request::OfferBatch`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BatchOutcome {
    /// 0: recorded (or already held), as [`Response::Applied`].
    Applied {
        /// The version's final vector (for an ignored offer: the
        /// receiver's current).
        vv: VersionVector,
        /// True if the path is now in split-brain.
        conflict: bool,
    },
    /// 1: refused or failed, as [`Response::Error`]; the sender retries
    /// this version alone later.
    Refused {
        /// One of [`code`].
        code: u16,
        /// Short human-readable reason.
        reason: String,
    },
}

/// Most paths in one [`Request::Versions`].
pub const MAX_VERSION_PATHS: usize = 2000;

/// Heal operations sent to a brick's node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HealOp {
    /// 0: replay pending entries now.
    Index,
    /// 1: full crawl against the other bricks.
    Full,
    /// 2: make this version of a split-brain path win.
    Choose {
        /// Path in split-brain.
        path: RelPath,
        /// Version vector of the chosen version.
        vv: VersionVector,
    },
    /// 3: like `Choose`, and record the resolution in the outage history
    /// with how it was chosen.
    ChooseBy {
        /// Path in split-brain.
        path: RelPath,
        /// Version vector of the chosen version.
        vv: VersionVector,
        /// A policy (`size`, `mtime`, `majority`) or `source-brick`.
        how: String,
    },
}

/// Responses, in wire order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// 0: done.
    Ok,
    /// 1: refused or failed.
    Error {
        /// One of [`code`].
        code: u16,
        /// Short human-readable reason.
        reason: String,
    },
    /// 2: answer to [`Request::Hello`].
    Hello(Hello),
    /// 3: answer to [`Request::Probe`]: the receiver's member entry and the
    /// new pool document that includes it.
    ProbeAccepted {
        /// The receiver.
        member: Member,
        /// The pool document after the join.
        config: Box<PoolConfig>,
    },
    /// 4: answer to [`Request::PullConfig`].
    Config(Box<PoolConfig>),
    /// 5: answer to [`Request::BrickStatus`].
    BrickStatus(Vec<crate::status::BrickStatus>),
    /// 6: answer to an offer: indexes of the chunks the receiver lacks.
    Need(Vec<u32>),
    /// 7: the offer was processed.
    Applied {
        /// The offered version's final vector (for a write: the one the
        /// brick assigned; for an ignored offer: the receiver's current).
        vv: VersionVector,
        /// True if the path is now in split-brain.
        conflict: bool,
    },
    /// 8: answer to [`Request::Changes`].
    Changes {
        /// Changed entries, in sequence order.
        entries: Vec<(u64, Entry)>,
        /// The brick's current sequence.
        seq: u64,
    },
    /// 9: answer to [`Request::Stat`].
    Stat(Option<Box<(Entry, Vec<ChunkRef>)>>),
    /// 10: answer to [`Request::HealInfo`].
    HealInfo(Vec<crate::heal_types::BrickHealInfo>),
    /// 11: answer to [`Request::SplitBrain`].
    SplitBrain(Vec<crate::heal_types::SplitBrainVersions>),
    /// 12: answer to [`Request::Digests`].
    Digests(Vec<crate::store::digest::ChildDigest>),
    /// 13: answer to [`Request::Feed`].
    Feed {
        /// Changed entries, in sequence order.
        entries: Vec<(u64, Entry)>,
        /// The brick's current sequence.
        seq: u64,
        /// The brick store's incarnation: random, created with its
        /// database; a different value means the sequence numbers of an
        /// earlier answer mean nothing here.
        incarnation: u64,
    },
    /// Answer to [`Request::Versions`]: per path, in order, the vector of
    /// the brick's current version (`None`: the brick has no record).
    Versions(Vec<Option<VersionVector>>),
    /// 15: answer to [`Request::History`], one per brick served here.
    History(Vec<crate::status::BrickHistory>),
    /// 16: answer to [`Request::BrickDisks`]: (brick replica id, its disk).
    BrickDisks(Vec<(u64, crate::status::DiskInfo)>),
    /// 17: answer to [`Request::FeedInSets`].
    FeedInSets {
        /// Changed entries, in sequence order.
        entries: Vec<(u64, Entry)>,
        /// The brick's current sequence.
        seq: u64,
        /// The brick store's incarnation (see [`Response::Feed`]).
        incarnation: u64,
        /// The changeset of entries that belong to one: (index into
        /// `entries`, tag).
        changesets: Vec<(u32, Changeset)>,
    },
    /// 18: answer to [`Request::Raft`].
    Raft(Vec<u8>),
    /// 19: answer to [`Request::OfferBatch`] and [`Request::WriteBatch`]:
    /// one outcome per version, in
    /// the order offered.
    Batch(Vec<BatchOutcome>),
}

/// How `auth.allow` applies to a request (enforced in `node::auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScope {
    /// Not mount traffic (management).
    Exempt,
    /// Moves a mount's data: refused for a node `auth.allow` excludes.
    Data(Uuid),
    /// Reads a version, or offers one without a writer (replication
    /// between bricks, or a mount offering again a version it synced that
    /// the bricks lost): refused likewise, unless the node holds a brick of
    /// the volume (bricks ask and offer each other).
    BrickPeer(Uuid),
}

impl Request {
    /// The `auth.allow` scope of this request. The match is exhaustive on
    /// purpose: a new request kind must say whether mounts use it.
    pub fn auth_scope(&self) -> AuthScope {
        match self {
            Request::Offer(o) | Request::OfferInSet(OfferInSet { offer: o, .. })
                if o.write.is_some() =>
            {
                AuthScope::Data(o.volume)
            }
            Request::Offer(o) | Request::OfferInSet(OfferInSet { offer: o, .. }) => {
                AuthScope::BrickPeer(o.volume)
            }
            Request::Changes(Changes { volume, .. })
            | Request::Feed(Feed { volume, .. })
            | Request::FeedInSets(FeedInSets { volume, .. })
            | Request::WriteBatch(WriteBatch { volume, .. })
            | Request::ReadChunks(ReadChunks { volume, .. }) => AuthScope::Data(*volume),
            Request::Stat(Stat { volume, .. })
            | Request::Versions(Versions { volume, .. })
            | Request::OfferBatch(OfferBatch { volume, .. }) => AuthScope::BrickPeer(*volume),
            Request::Hello(_)
            | Request::Probe(_)
            | Request::PushConfig(_)
            | Request::PullConfig
            | Request::Detached
            | Request::BrickStatus(BrickStatus { .. })
            | Request::HealInfo(HealInfo { .. })
            | Request::Heal(Heal { .. })
            | Request::PrepareBrick(PrepareBrick { .. })
            | Request::SplitBrain(SplitBrain { .. })
            | Request::Digests(Digests { .. })
            | Request::ResetBrick(ResetBrick { .. })
            | Request::History(History { .. })
            | Request::BrickDisks(BrickDisks { .. })
            | Request::Raft(_) => AuthScope::Exempt,
        }
    }
}

impl Response {
    /// Builds an error response.
    pub fn error(code: u16, reason: impl Into<String>) -> Self {
        Self::Error {
            code,
            reason: reason.into(),
        }
    }
}

//! The data model of one path in a brick: its kind, metadata and version.
//!
//! These are plain data shared by the store, the wire protocol and the sync
//! agent: the wire's messages carry them, and they validate themselves when
//! decoded (a path is a `RelPath`, a vector a `VersionVector`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::wire::vv::{Relation, VersionVector};
use crate::RelPath;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (stored as a link, never followed).
    Symlink,
    /// Deleted (kept so the delete replicates and orders against writes).
    Tombstone,
}

impl Kind {
    /// Stable name, used in the database and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Dir => "dir",
            Self::Symlink => "symlink",
            Self::Tombstone => "tombstone",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "file" => Self::File,
            "dir" => Self::Dir,
            "symlink" => Self::Symlink,
            "tombstone" => Self::Tombstone,
            _ => return None,
        })
    }
}

/// Content-defined chunk of a file: its blake3 hash and length. Offsets
/// follow from the lengths of the chunks before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// blake3 of the chunk's bytes.
    pub hash: [u8; 32],
    /// Length in bytes.
    pub len: u32,
}

/// One version of one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The path.
    pub path: RelPath,
    /// What it is.
    pub kind: Kind,
    /// Size in bytes (files) or target length (symlinks).
    pub size: u64,
    /// Permission bits (`0o7777` part of st_mode).
    pub mode: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Owner `(uid, gid)`, carried when the writer runs as root.
    pub owner: Option<(u32, u32)>,
    /// blake3 of the content (files) or of the target (symlinks); zero
    /// otherwise.
    pub hash: [u8; 32],
    /// Symlink target.
    pub target: Option<String>,
    /// Version vector.
    pub vv: VersionVector,
    /// Version vector of the last content change (orders content on its own
    /// so a concurrent content change and mode change can merge).
    pub data_vv: VersionVector,
    /// Version vector of the last metadata change.
    pub meta_vv: VersionVector,
    /// Node that wrote this version.
    pub origin: Uuid,
}

impl Entry {
    /// A tombstone for `path`.
    pub fn tombstone(path: RelPath, origin: Uuid) -> Self {
        Self {
            path,
            kind: Kind::Tombstone,
            size: 0,
            mode: 0,
            mtime_ns: 0,
            owner: None,
            hash: [0; 32],
            target: None,
            vv: VersionVector::new(),
            data_vv: VersionVector::new(),
            meta_vv: VersionVector::new(),
            origin,
        }
    }

    /// True if the content (kind, bytes, link target) is the same.
    pub fn same_content(&self, o: &Self) -> bool {
        self.kind == o.kind && self.hash == o.hash && self.size == o.size && self.target == o.target
    }

    /// True if the metadata gsync syncs (mode, owner) is the same. Mtime is
    /// informational and never makes a conflict on its own.
    pub fn same_meta(&self, o: &Self) -> bool {
        self.kind == Kind::Tombstone || (self.mode == o.mode && self.owner == o.owner)
    }

    /// True if content and metadata are the same.
    pub fn same_state(&self, o: &Self) -> bool {
        self.same_content(o) && self.same_meta(o)
    }

    /// Relation of this version to another.
    pub fn relation(&self, o: &Self) -> Relation {
        self.vv.compare(&o.vv)
    }

    /// blake3 hex of the content hash.
    pub fn hash_hex(&self) -> String {
        blake3::Hash::from_bytes(self.hash).to_hex().to_string()
    }
}

/// Changes that a mount made together (settled within its window): every
/// version of the set carries the same tag, so a receiving mount applies
/// them all or none. Kept beside the entry (never inside it), so stored
/// entries and plain offers keep their shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Changeset {
    /// Random id chosen by the writing mount.
    pub id: u64,
    /// How many versions the set holds.
    pub members: u32,
}

/// What a writer (sync agent) knows about the version it changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteInfo {
    /// The writer's replica id (bumped in the new version vector).
    pub writer: u64,
    /// Version vector of the version the writer started from (empty for a
    /// new path).
    pub base: VersionVector,
    /// That version's content vector.
    pub base_data: VersionVector,
    /// That version's metadata vector.
    pub base_meta: VersionVector,
    /// The content differs from the base version.
    pub content_changed: bool,
    /// Mode or owner differ from the base version.
    pub meta_changed: bool,
}

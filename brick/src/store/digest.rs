//! Merkle digests of a brick's tree, computed from the entries table.
//!
//! The digest of a child of a directory covers the child's own entry and,
//! for a directory, every entry below it (path, kind, content hash and
//! version vector, tombstones included, in path order). Two bricks with the
//! same digest for a child hold the same versions of that whole subtree, so
//! the full crawl only descends where digests differ. Digests are computed
//! on demand by one ordered index scan of the subtree; nothing is
//! maintained on the write path.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use super::types::Entry;
use super::StoreError;
use crate::wire::codec;

/// The digest of one child of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildDigest {
    /// The child's name.
    pub name: String,
    /// blake3 over the child's entry and its subtree.
    pub digest: [u8; 32],
    /// True if the child has entries below it.
    pub has_children: bool,
}

/// Digests of the children of `dir` (`""` for the root).
pub fn children(conn: &Connection, dir: &str) -> Result<Vec<ChildDigest>, StoreError> {
    let (lo, hi) = if dir.is_empty() {
        (String::new(), "\u{10ffff}".to_string())
    } else {
        (format!("{dir}/"), format!("{dir}0"))
    };
    let mut st = conn.prepare_cached(
        "SELECT path, entry FROM entries WHERE path > ?1 AND path < ?2 ORDER BY path",
    )?;
    let rows = st.query_map(params![lo, hi], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut acc: BTreeMap<String, (blake3::Hasher, bool)> = BTreeMap::new();
    for r in rows {
        let (path, blob) = r?;
        let rest = &path[lo.len()..];
        let (name, below) = match rest.split_once('/') {
            Some((n, _)) => (n, true),
            None => (rest, false),
        };
        let e: Entry = codec::decode(&blob).map_err(|_| StoreError::Corrupt(path.clone()))?;
        let slot = acc
            .entry(name.to_string())
            .or_insert_with(|| (blake3::Hasher::new(), false));
        slot.1 |= below;
        slot.0.update(path.as_bytes());
        slot.0.update(&[0, e.kind as u8]);
        slot.0.update(&e.hash);
        slot.0.update(&e.vv.to_bytes());
        slot.0.update(&[0xff]);
    }
    Ok(acc
        .into_iter()
        .map(|(name, (h, has_children))| ChildDigest {
            name,
            digest: *h.finalize().as_bytes(),
            has_children,
        })
        .collect())
}

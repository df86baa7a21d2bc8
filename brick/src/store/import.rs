//! Adopting what is already in a brick directory when its database is new:
//! a brick created with `force` on a non-empty directory, or a brick whose
//! `.gsync/` was lost. Each file, directory and symlink becomes an entry
//! written by this brick, pending for every peer, so nothing already
//! stored is hidden or overwritten: identical copies elsewhere merge
//! silently, different ones become a visible split-brain.

use std::path::Path;

use rusqlite::params;

use super::types::{Entry, Kind};
use super::{chunking, files, Brick, StoreError};
use crate::wire::codec;
use crate::wire::path::RESERVED;
use crate::wire::vv::VersionVector;
use crate::RelPath;

/// True if the brick directory holds anything besides `.gsync/`.
pub fn has_content(root: &Path) -> bool {
    std::fs::read_dir(root)
        .map(|rd| rd.flatten().any(|e| e.file_name() != RESERVED))
        .unwrap_or(false)
}

/// Imports every untracked path of the brick. Returns how many.
pub fn import_existing(brick: &Brick) -> Result<u64, StoreError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let root = brick.root.clone();
    let mut stack = vec![root.clone()];
    let mut found: Vec<(RelPath, std::fs::Metadata)> = Vec::new();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(rel) = RelPath::from_local(&root, &p) else {
                continue;
            };
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                stack.push(p);
            }
            found.push((rel, m));
        }
    }
    found.sort_by(|a, b| a.0.depth().cmp(&b.0.depth()).then_with(|| a.0.cmp(&b.0)));
    let vv = VersionVector::new().bumped(brick.id);
    let mut n = 0;
    for batch in found.chunks(500) {
        let mut rows = Vec::new();
        for (rel, m) in batch {
            let full = rel.under(&root);
            let ft = m.file_type();
            let mut e = Entry::tombstone(rel.clone(), brick.node);
            e.mode = m.permissions().mode() & 0o7777;
            e.mtime_ns = files::mtime_ns(m);
            e.owner = files::is_root().then_some((m.uid(), m.gid()));
            e.vv = vv.clone();
            e.data_vv = vv.clone();
            e.meta_vv = vv.clone();
            let mut chunks = Vec::new();
            if ft.is_file() {
                let Ok(c) = chunking::chunk_file(&full) else {
                    continue;
                };
                e.kind = Kind::File;
                e.size = c.size;
                e.hash = c.hash;
                chunks = c.chunks;
            } else if ft.is_dir() {
                e.kind = Kind::Dir;
            } else if ft.is_symlink() {
                let Ok(t) = std::fs::read_link(&full) else {
                    continue;
                };
                let t = t.to_string_lossy().into_owned();
                e.kind = Kind::Symlink;
                e.size = t.len() as u64;
                e.hash = *blake3::hash(t.as_bytes()).as_bytes();
                e.target = Some(t);
            } else {
                tracing::warn!(path = %rel, "special file in the brick skipped");
                continue;
            }
            rows.push((e, chunks));
        }
        let peers = brick.peers();
        let b = brick.seq.clone();
        n += brick.with_db_sync(move |conn| -> Result<u64, StoreError> {
            let tx = conn.transaction()?;
            let mut seq: u64 = tx.query_row(
                "SELECT COALESCE((SELECT value FROM kv WHERE key = 'seq'), 0)",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64;
            let mut added = 0;
            for (e, chunks) in &rows {
                let path = e.path.as_str();
                let exists: bool = tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM entries WHERE path = ?1)",
                    params![path],
                    |r| r.get(0),
                )?;
                if exists {
                    continue;
                }
                seq += 1;
                let enc = codec::encode(e).map_err(|_| StoreError::Corrupt(path.to_string()))?;
                tx.execute(
                    "INSERT INTO entries (path, entry, chunks, seq) VALUES (?1, ?2, ?3, ?4)",
                    params![path, enc, chunking::encode_list(chunks), seq as i64],
                )?;
                for (c, off) in chunks.iter().zip(chunking::offsets(chunks)) {
                    tx.execute(
                        "INSERT INTO chunks (hash, file, offset, len) VALUES (?1, ?2, ?3, ?4)",
                        params![c.hash.as_slice(), path, off as i64, c.len],
                    )?;
                }
                for peer in &peers {
                    tx.execute(
                        "INSERT OR REPLACE INTO pending (peer, path, seq) VALUES (?1, ?2, ?3)",
                        params![*peer as i64, path, seq as i64],
                    )?;
                }
                added += 1;
            }
            tx.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES ('seq', ?1)",
                params![seq as i64],
            )?;
            tx.commit()?;
            b.send_replace(seq);
            Ok(added)
        })?;
    }
    Ok(n)
}

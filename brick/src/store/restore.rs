//! Restoring from the trash (`gsync volume trash VOL restore`): a kept
//! version comes back as a new change. It gets a vector that dominates
//! every version the brick holds, is placed like any incoming version
//! (through `apply`, so the one it replaces goes to the trash in turn),
//! and replicates through the pending rows. Kept apart from `trash`, which
//! `apply` uses to keep what it replaces.

use std::sync::Arc;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::files::{self, TempFile};
use super::reconcile::{Plan, Src};
use super::trash::{file_rel, now_secs, rows, Row};
use super::types::{Entry, Kind};
use super::{hex, Brick, StoreError};
use crate::wire::vv::VersionVector;
use crate::RelPath;

/// One restored path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Restored {
    /// Path in the volume.
    pub path: String,
    /// Version restored (content hash prefix).
    pub version: String,
    /// The new version vector it got.
    pub vv: String,
}

/// Brings `path` back from the trash as a new change: the version named by
/// `version` (a prefix of its content hash; the newest when `None`). When
/// `path` names a directory in the trash (paths below it), every file
/// below it that is deleted now comes back in its newest kept version.
pub async fn restore(
    brick: &Arc<Brick>,
    path: &RelPath,
    version: Option<&str>,
) -> Result<Vec<Restored>, String> {
    let p = path.as_str().to_string();
    let all = brick
        .with_db(move |_, c| rows(c, Some(&p)))
        .await
        .map_err(|e| e.to_string())?;
    let exact: Vec<&Row> = all.iter().filter(|r| r.entry.path == *path).collect();
    let mut picks: Vec<Row> = Vec::new();
    if !exact.is_empty() {
        let pick = match version {
            Some(v) => exact
                .iter()
                .rev()
                .find(|r| hex(&r.entry.hash).starts_with(&v.to_ascii_lowercase()))
                .ok_or_else(|| format!("no version {v} of {path} in the trash"))?,
            None => exact.last().ok_or("empty")?,
        };
        picks.push(clone_row(pick));
    } else {
        if version.is_some() {
            return Err(format!(
                "{path} is not a file in the trash; a directory is restored without VERSION"
            ));
        }
        // A directory: the newest kept version of each file below it that
        // is deleted now.
        let mut newest: std::collections::BTreeMap<String, &Row> = Default::default();
        for r in &all {
            newest.insert(r.entry.path.to_string(), r);
        }
        for r in newest.values() {
            let p = r.entry.path.clone();
            let live = brick
                .with_db(move |_, c| Brick::load(c, &p))
                .await
                .map_err(|e| e.to_string())?
                .is_some_and(|(e, _)| e.kind != Kind::Tombstone);
            if !live {
                picks.push(clone_row(r));
            }
        }
        if picks.is_empty() {
            return Err(format!("nothing deleted under {path} is in the trash"));
        }
    }
    let mut out = Vec::new();
    for r in picks {
        out.push(restore_one(brick, r).await.map_err(|e| e.to_string())?);
    }
    brick.pending_notify.notify_waiters();
    Ok(out)
}

fn clone_row(r: &Row) -> Row {
    Row {
        id: r.id,
        entry: r.entry.clone(),
        chunks: r.chunks.clone(),
        at: r.at,
        by: r.by.clone(),
        reason: r.reason.clone(),
    }
}

async fn restore_one(brick: &Arc<Brick>, row: Row) -> Result<Restored, StoreError> {
    let path = row.entry.path.clone();
    // Deleted parent directories come back first, as new versions too.
    let mut ancestors = Vec::new();
    let mut cur = path.parent();
    while let Some(a) = cur {
        cur = a.parent();
        ancestors.push(a);
    }
    for a in ancestors.into_iter().rev() {
        let Some(_g) = brick
            .lock_path(&a, std::time::Duration::from_secs(20))
            .await
        else {
            return Err(busy(&a));
        };
        let a2 = a.clone();
        let dir = brick
            .with_db(move |b, conn| -> Result<Option<Entry>, StoreError> {
                let Some((t, _)) = Brick::load(conn, &a2)? else {
                    return Ok(None);
                };
                if t.kind != Kind::Tombstone {
                    return Ok(None);
                }
                let mut d = t.clone();
                d.kind = Kind::Dir;
                d.mode = 0o755;
                d.mtime_ns = now_secs() as i64 * 1_000_000_000;
                d.origin = b.node;
                set_vv(&mut d, new_vv(conn, b, &a2)?);
                Ok(Some(d))
            })
            .await?;
        if let Some(d) = dir {
            let plan = Plan {
                current: (d.clone(), Src::Incoming),
                siblings: Vec::new(),
                members: Vec::new(),
                diverged: true,
            };
            super::apply::commit_local(brick, plan, d, Vec::new(), None).await?;
        }
    }
    let Some(_g) = brick
        .lock_path(&path, std::time::Duration::from_secs(20))
        .await
    else {
        return Err(busy(&path));
    };
    let version = hex(&row.entry.hash)[..12].to_string();
    let b = brick.clone();
    let hash = row.entry.hash;
    let name = row.entry.path.to_string();
    let t = tokio::task::spawn_blocking(move || -> Result<TempFile, StoreError> {
        let src = b.root.join(file_rel(&hash));
        let (t, mut f) = TempFile::create(&files::tmp_dir(&b.root))
            .map_err(|e| StoreError::io("create temp in", b.root.display(), e))?;
        let mut input =
            std::fs::File::open(&src).map_err(|e| StoreError::io("open", src.display(), e))?;
        let mut hasher = blake3::Hasher::new();
        let mut w = HashingWriter {
            inner: &mut f,
            hasher: &mut hasher,
        };
        std::io::copy(&mut input, &mut w).map_err(|e| StoreError::io("copy", src.display(), e))?;
        f.sync_all()
            .map_err(|e| StoreError::io("fsync", t.path().display(), e))?;
        if hasher.finalize().as_bytes() != &hash {
            return Err(StoreError::BadContent(name));
        }
        Ok(t)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    let mut e = row.entry.clone();
    let p = e.path.clone();
    let vv = brick.with_db(move |b, conn| new_vv(conn, b, &p)).await?;
    e.origin = brick.node;
    set_vv(&mut e, vv.clone());
    let plan = Plan {
        current: (e.clone(), Src::Incoming),
        siblings: Vec::new(),
        members: Vec::new(),
        diverged: true,
    };
    super::apply::commit_local(brick, plan, e, row.chunks, Some(t)).await?;
    let restored = vv;
    tracing::info!(%path, version = %version, vv = %restored, "restored from the trash");
    Ok(Restored {
        path: path.to_string(),
        version,
        vv: restored.to_string(),
    })
}

fn busy(p: &RelPath) -> StoreError {
    StoreError::io(
        "lock",
        p,
        std::io::Error::other("being updated; retry later"),
    )
}

/// A vector above every version the brick holds for `path`.
fn new_vv(conn: &Connection, b: &Brick, path: &RelPath) -> Result<VersionVector, StoreError> {
    let mut all = VersionVector::new();
    if let Some((c, _)) = Brick::load(conn, path)? {
        all = all.merge(&c.vv);
    }
    for (s, _) in Brick::siblings(conn, path)? {
        all = all.merge(&s.vv);
    }
    Ok(all.bumped(b.id))
}

pub(super) fn set_vv(e: &mut Entry, vv: VersionVector) {
    e.vv = vv.clone();
    e.data_vv = vv.clone();
    e.meta_vv = vv;
}

struct HashingWriter<'a> {
    inner: &'a mut std::fs::File,
    hasher: &'a mut blake3::Hasher,
}

impl std::io::Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

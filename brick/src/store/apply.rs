//! Receiving an offered version of a path: decide, fetch only the missing
//! chunks, build the content in a temp file, then place it and commit the
//! metadata, the new sequence number and the pending rows for the other
//! bricks in one transaction, before the offer is acknowledged.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::{params, Connection};
use tokio::io::{AsyncRead, AsyncWrite};

use super::files::{self, TempFile};
use super::reconcile::{reconcile, Plan, Src};
use super::types::{ChunkRef, Entry, Kind};
use super::{chunking, hex, Brick, StoreError};
use crate::codec;
use crate::frame::{self, FrameError};
use crate::proto::{code, Changeset, Offer, Response};
use crate::vv::VersionVector;

/// Longest wait for the next chunk frame of an offer: a sender that stalls
/// longer loses the transfer (and its temp file) and retries later.
const CHUNK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Longest wait for another update of the same path to finish.
const PATH_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// What the decision step produced.
enum Decided {
    /// Nothing to do: answer with this.
    Done(Response),
    /// Apply `plan`, with the incoming content made of `chunks` if needed.
    Apply(Box<Plan>, Entry),
}

/// Handles an offer on a stream: the request was already read. The
/// version is recorded as a member of `changeset`, if given.
pub async fn handle_offer<W, R>(
    brick: &Arc<Brick>,
    offer: Offer,
    changeset: Option<Changeset>,
    send: &mut W,
    recv: &mut R,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    let resp = match offer_impl(brick, offer, changeset, send, recv).await {
        Ok(r) => r,
        Err(OfferError::Frame(e)) => {
            // A sender that vanished mid-transfer is routine; a frame that
            // breaks the protocol is hostile or buggy and worth a warning.
            if matches!(e, FrameError::TooLarge { .. } | FrameError::Codec(_)) {
                tracing::warn!(brick = %brick.root.display(), "offer refused: {e}");
                let _ = frame::write_msg(send, &Response::error(code::BAD_REQUEST, e.to_string()))
                    .await;
            }
            return Err(e);
        }
        Err(OfferError::Store(e)) => {
            tracing::warn!(brick = %brick.root.display(), "offer failed: {e}");
            *brick.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            Response::error(code::INTERNAL, e.to_string())
        }
        Err(OfferError::Refused(r)) => r,
    };
    frame::write_msg(send, &resp).await
}

enum OfferError {
    Frame(FrameError),
    Store(StoreError),
    Refused(Response),
}

impl From<FrameError> for OfferError {
    fn from(e: FrameError) -> Self {
        Self::Frame(e)
    }
}

impl From<StoreError> for OfferError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

fn refuse(c: u16, reason: impl Into<String>) -> OfferError {
    OfferError::Refused(Response::error(c, reason))
}

async fn offer_impl<W, R>(
    brick: &Arc<Brick>,
    offer: Offer,
    changeset: Option<Changeset>,
    send: &mut W,
    recv: &mut R,
) -> Result<Response, OfferError>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    let Offer {
        mut entry,
        chunks,
        write,
        from_brick,
        ..
    } = offer;
    validate(&entry, &chunks)?;
    if let Err(e) = files::resolve(&brick.root, &entry.path, false) {
        // A deletion below a symlink deletes nothing there (see `commit`).
        if e.kind() == std::io::ErrorKind::PermissionDenied && entry.kind != Kind::Tombstone {
            tracing::warn!(path = %entry.path, "refused: {e}");
            return Err(refuse(code::BAD_REQUEST, e.to_string()));
        }
    }
    if write.is_some()
        && brick
            .quorum
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .eq(&Some(false))
    {
        return Err(refuse(
            code::NO_QUORUM,
            "brick cannot reach quorum; change refused",
        ));
    }
    // One update of a path at a time: decide, receive and commit together.
    // Bounded below the sender's first-answer timeout, so a sender waiting
    // behind a long transfer gets a clear answer and retries later (when
    // it usually finds the version already here).
    let Some(_guard) = brick.lock_path(&entry.path, PATH_BUSY_WAIT).await else {
        return Err(refuse(
            code::INTERNAL,
            format!("{} is being updated; retry later", entry.path),
        ));
    };
    let decided = {
        let e2 = entry.clone();
        let w = write.clone();
        brick.with_db(move |_, conn| decide(conn, e2, w)).await?
    };
    let (plan, final_entry) = match decided {
        Decided::Done(r) => return Ok(r),
        Decided::Apply(p, e) => (p, e),
    };
    // With quorum configured, bricks never diverge: a write based on a
    // version that is no longer current, and really different from it, is
    // refused as a conflict instead of kept as a split-brain sibling; the
    // writer keeps its edit as a conflict copy.
    if write.is_some()
        && brick
            .quorum
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        && plan.siblings.iter().any(|s| s.1 == Src::Incoming)
    {
        return Err(refuse(
            code::CONFLICT,
            format!(
                "{} changed on the volume since this edit's base version",
                final_entry.path
            ),
        ));
    }
    entry = final_entry;
    let needs_content = entry.kind == Kind::File
        && (plan.current.1 == Src::Incoming || plan.siblings.iter().any(|s| s.1 == Src::Incoming));
    let temp = if needs_content {
        let hashes: Vec<[u8; 32]> = chunks.iter().map(|c| c.hash).collect();
        let local = brick
            .with_db(move |_, conn| -> Result<Vec<bool>, StoreError> {
                hashes
                    .iter()
                    .map(|h| Ok(Brick::find_chunk(conn, h)?.is_some()))
                    .collect()
            })
            .await?;
        let need: Vec<u32> = (0..chunks.len() as u32)
            .filter(|i| !local[*i as usize])
            .collect();
        frame::write_msg(send, &Response::Need(need.clone())).await?;
        Some(receive_content(brick, &entry, &chunks, &need, recv).await?)
    } else {
        None
    };
    let from = (from_brick, changeset);
    let vv = entry.vv.clone();
    let (_, conflict) = brick
        .with_db(move |b, conn| commit(b, conn, *plan, entry, chunks, temp, from))
        .await?;
    brick
        .counters
        .changes_applied
        .fetch_add(1, Ordering::Relaxed);
    brick.pending_notify.notify_waiters();
    Ok(Response::Applied { vv, conflict })
}

fn validate(entry: &Entry, chunks: &[ChunkRef]) -> Result<(), OfferError> {
    match entry.kind {
        Kind::File => {
            let total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
            if total != entry.size
                || chunks
                    .iter()
                    .any(|c| c.len == 0 || c.len > chunking::MAX_CHUNK)
            {
                return Err(refuse(
                    code::BAD_REQUEST,
                    "chunk list does not match the size",
                ));
            }
        }
        Kind::Symlink => {
            let Some(t) = &entry.target else {
                return Err(refuse(code::BAD_REQUEST, "symlink without target"));
            };
            if t.is_empty() || t.contains('\0') || t.len() > crate::path::MAX_PATH {
                return Err(refuse(code::BAD_REQUEST, "bad symlink target"));
            }
        }
        Kind::Dir | Kind::Tombstone => {}
    }
    if !chunks.is_empty() && entry.kind != Kind::File {
        return Err(refuse(code::BAD_REQUEST, "chunks for a non-file"));
    }
    Ok(())
}

fn decide(
    conn: &mut Connection,
    mut entry: Entry,
    write: Option<crate::proto::WriteInfo>,
) -> Result<Decided, StoreError> {
    let current = Brick::load(conn, &entry.path)?.map(|(e, _)| e);
    let siblings: Vec<Entry> = Brick::siblings(conn, &entry.path)?
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    if let Some(w) = write {
        // The writer's new version: its base, with the writer's counter above
        // any value seen for it, so it is never equal to an older version.
        let seen = current
            .iter()
            .chain(siblings.iter())
            .map(|e| e.vv.get(w.writer))
            .max()
            .unwrap_or(0)
            .max(w.base.get(w.writer));
        let mut vv = w.base.clone();
        vv.set(w.writer, seen + 1);
        // Aspect vectors: a changed aspect takes the new vector.
        let base_entry = current.as_ref().filter(|c| c.vv == w.base);
        let (content_changed, meta_changed) = match base_entry {
            Some(b) => (!b.same_content(&entry), !b.same_meta(&entry)),
            None => (w.content_changed, w.meta_changed),
        };
        entry.data_vv = if content_changed {
            vv.clone()
        } else {
            base_entry.map_or(w.base_data, |b| b.data_vv.clone())
        };
        entry.meta_vv = if meta_changed {
            vv.clone()
        } else {
            base_entry.map_or(w.base_meta, |b| b.meta_vv.clone())
        };
        entry.vv = vv;
    }
    match reconcile(current.as_ref(), &siblings, &entry) {
        None => {
            let vv = current.map(|c| c.vv).unwrap_or_default();
            Ok(Decided::Done(Response::Applied {
                vv,
                conflict: !siblings.is_empty(),
            }))
        }
        Some(plan) => Ok(Decided::Apply(Box::new(plan), entry)),
    }
}

async fn receive_content<R: AsyncRead + Unpin + Send>(
    brick: &Arc<Brick>,
    entry: &Entry,
    chunks: &[ChunkRef],
    need: &[u32],
    recv: &mut R,
) -> Result<TempFile, OfferError> {
    let (temp, file) = TempFile::create(&files::tmp_dir(&brick.root))
        .map_err(|e| StoreError::io("create temp in", brick.root.display(), e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let need: HashSet<u32> = need.iter().copied().collect();
    let mut whole = blake3::Hasher::new();
    for (i, c) in chunks.iter().enumerate() {
        let data = if need.contains(&(i as u32)) {
            let data = tokio::time::timeout(CHUNK_TIMEOUT, frame::read_raw(recv))
                .await
                .map_err(|_| FrameError::Io(std::io::ErrorKind::TimedOut.into()))??;
            if data.len() != c.len as usize || blake3::hash(&data).as_bytes() != &c.hash {
                return Err(StoreError::BadContent(entry.path.to_string()).into());
            }
            brick
                .counters
                .bytes_received
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            brick
                .counters
                .chunks_fetched
                .fetch_add(1, Ordering::Relaxed);
            data
        } else {
            let h = c.hash;
            let len = c.len;
            let got = brick
                .with_db(move |b, conn| -> Result<Option<Vec<u8>>, StoreError> {
                    let Some((file, off)) = Brick::find_chunk(conn, &h)? else {
                        return Ok(None);
                    };
                    let data = File::open(b.root.join(&file))
                        .and_then(|mut f| chunking::read_verified(&mut f, off, len, &h));
                    if data.is_err() {
                        // The index row is stale (the file changed on disk,
                        // or a crash fell between a rename and its commit):
                        // forget it so the retry asks the sender instead of
                        // failing the same way forever.
                        conn.execute(
                            "DELETE FROM chunks WHERE hash = ?1 AND file = ?2 AND offset = ?3",
                            params![h.as_slice(), file, off as i64],
                        )?;
                    }
                    Ok(data.ok())
                })
                .await?;
            let Some(data) = got else {
                // The local copy changed under us: fail; the sender retries.
                return Err(StoreError::BadContent(entry.path.to_string()).into());
            };
            brick.counters.chunks_reused.fetch_add(1, Ordering::Relaxed);
            data
        };
        whole.update(&data);
        out.write_all(&data)
            .map_err(|e| StoreError::io("write", temp.path().display(), e))?;
    }
    if whole.finalize().as_bytes() != &entry.hash {
        return Err(StoreError::BadContent(entry.path.to_string()).into());
    }
    let file = out
        .into_inner()
        .map_err(|e| StoreError::io("write", temp.path().display(), e.into_error()))?;
    file.sync_all()
        .map_err(|e| StoreError::io("fsync", temp.path().display(), e))?;
    crate::failpoint::hit("store-after-temp");
    Ok(temp)
}

/// Places the plan's content on disk and commits it. `from` is the
/// sending brick (replication) and the incoming version's changeset.
fn commit(
    brick: &Brick,
    conn: &mut Connection,
    plan: Plan,
    incoming: Entry,
    in_chunks: Vec<ChunkRef>,
    temp: Option<TempFile>,
    (from, changeset): (Option<u64>, Option<Changeset>),
) -> Result<(VersionVector, bool), StoreError> {
    let path = incoming.path;
    let old = Brick::load(conn, &path)?;
    let old_sibs = Brick::siblings(conn, &path)?;
    // A deletion never creates anything: with a parent missing, there is
    // nothing on disk to remove (the database still records the tombstone).
    // A deletion never creates anything, nor reaches through a symlink: with
    // a parent missing, not a directory or a link, there is nothing on disk
    // to remove or keep (the database still records the tombstone).
    let deleting = plan.current.0.kind == Kind::Tombstone;
    // A file standing where this path needs a parent directory is about to
    // be replaced by that directory (a concurrent "file here" and "directory
    // here"): keep its content first, never drop it.
    let displaced = if deleting {
        Vec::new()
    } else {
        keep_displaced_parents(brick, conn, &path, plan.current.0.origin)?
    };
    let (real, on_disk) = match files::resolve(&brick.root, &path, !deleting) {
        Ok(p) => (p, true),
        Err(e)
            if deleting
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
        {
            (brick.root.join(path.as_str()), false)
        }
        Err(e) => return Err(StoreError::io("resolve", &path, e)),
    };
    let chunks_of = |src: Src| -> Vec<ChunkRef> {
        match src {
            Src::Current => old.as_ref().map(|o| o.1.clone()).unwrap_or_default(),
            Src::Sibling(i) => old_sibs.get(i).map(|s| s.1.clone()).unwrap_or_default(),
            Src::Incoming => in_chunks.clone(),
        }
    };
    let sib_dir = files::siblings_dir(&brick.root);
    std::fs::create_dir_all(&sib_dir)
        .map_err(|e| StoreError::io("create", sib_dir.display(), e))?;
    // 1. Keep every content that becomes a sibling, before the brick path
    //    changes: content-addressed under .gsync/siblings/.
    let mut temp = temp;
    for (e, src) in &plan.siblings {
        if e.kind != Kind::File {
            continue;
        }
        let dest = sib_dir.join(hex(&e.hash));
        if dest.exists() {
            continue;
        }
        match src {
            Src::Current if !on_disk => {}
            Src::Current => {
                std::fs::copy(&real, &dest)
                    .map_err(|x| StoreError::io("keep sibling", &path, x))?;
            }
            Src::Incoming => {
                if plan.current.1 == Src::Incoming {
                    continue;
                }
                if let Some(t) = temp.take() {
                    t.persist(&dest)
                        .map_err(|x| StoreError::io("keep sibling", &path, x))?;
                }
            }
            Src::Sibling(_) => {}
        }
    }
    // 2. Versions this change loses go to the trash (see `trash`): the
    //    replaced or deleted current file, and the losers of a resolved
    //    split-brain. Content is linked before the brick path changes.
    let cur_old = old.as_ref().filter(|_| on_disk);
    let mut kept = keep_losers(brick, &plan, cur_old, &old_sibs, &real, &sib_dir);
    kept.extend(displaced);
    // 3. The brick path gets the current version.
    let (cur, cur_src) = &plan.current;
    match (cur.kind, cur_src) {
        (Kind::File, Src::Current) => {
            files::set_meta(&real, cur.mode, cur.mtime_ns, cur.owner)
                .map_err(|e| StoreError::io("chmod", &path, e))?;
        }
        (Kind::File, Src::Incoming) => {
            let t = temp
                .take()
                .ok_or_else(|| StoreError::BadContent(path.to_string()))?;
            files::set_meta(t.path(), cur.mode, cur.mtime_ns, cur.owner)
                .map_err(|e| StoreError::io("chmod", &path, e))?;
            if std::fs::symlink_metadata(&real).is_ok_and(|m| m.is_dir()) {
                files::remove_any(&real).map_err(|e| StoreError::io("replace dir", &path, e))?;
            }
            t.persist(&real)
                .map_err(|e| StoreError::io("rename into", &path, e))?;
        }
        (Kind::File, Src::Sibling(_)) => {
            let (t, _) = TempFile::create(&files::tmp_dir(&brick.root))
                .map_err(|e| StoreError::io("temp", &path, e))?;
            std::fs::copy(sib_dir.join(hex(&cur.hash)), t.path())
                .map_err(|e| StoreError::io("copy sibling", &path, e))?;
            files::set_meta(t.path(), cur.mode, cur.mtime_ns, cur.owner)
                .map_err(|e| StoreError::io("chmod", &path, e))?;
            t.persist(&real)
                .map_err(|e| StoreError::io("rename into", &path, e))?;
        }
        (Kind::Dir, _) => {
            files::place_dir(&real, cur.mode, cur.mtime_ns)
                .map_err(|e| StoreError::io("mkdir", &path, e))?;
        }
        (Kind::Symlink, _) => {
            let target = cur.target.clone().unwrap_or_default();
            files::place_symlink(&files::tmp_dir(&brick.root), &target, &real, cur.mtime_ns)
                .map_err(|e| StoreError::io("symlink", &path, e))?;
        }
        (Kind::Tombstone, _) => {
            let gone = !on_disk || remove_for_tombstone(conn, &real, &path)?;
            if gone {
                remove_deleted_parents(conn, &brick.root, &path)?;
            }
        }
    }
    crate::failpoint::hit("store-after-rename");
    // 4. One transaction: entry, chunk index, siblings, trash, pending, seq.
    let cur_chunks = if cur.kind == Kind::File {
        chunks_of(*cur_src)
    } else {
        Vec::new()
    };
    let tx = conn.transaction()?;
    let seq: u64 = tx.query_row(
        "SELECT COALESCE((SELECT value FROM kv WHERE key = 'seq'), 0)",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64
        + 1;
    tx.execute(
        "INSERT OR REPLACE INTO kv (key, value) VALUES ('seq', ?1)",
        params![seq as i64],
    )?;
    let enc = codec::encode(cur).map_err(|_| StoreError::Corrupt(path.to_string()))?;
    tx.execute(
        "INSERT OR REPLACE INTO entries (path, entry, chunks, seq) VALUES (?1, ?2, ?3, ?4)",
        params![
            path.as_str(),
            enc,
            chunking::encode_list(&cur_chunks),
            seq as i64
        ],
    )?;
    tx.execute("DELETE FROM chunks WHERE file = ?1", params![path.as_str()])?;
    index_chunks(&tx, path.as_str(), &cur_chunks)?;
    tx.execute(
        "DELETE FROM siblings WHERE path = ?1",
        params![path.as_str()],
    )?;
    for (e, src) in &plan.siblings {
        let c = if e.kind == Kind::File {
            chunks_of(*src)
        } else {
            Vec::new()
        };
        let enc = codec::encode(e).map_err(|_| StoreError::Corrupt(path.to_string()))?;
        tx.execute(
            "INSERT OR REPLACE INTO siblings (path, vv, entry, chunks) VALUES (?1, ?2, ?3, ?4)",
            params![
                path.as_str(),
                e.vv.to_bytes(),
                enc,
                chunking::encode_list(&c)
            ],
        )?;
        if e.kind == Kind::File {
            let file = format!("{}/siblings/{}", crate::path::RESERVED, hex(&e.hash));
            tx.execute("DELETE FROM chunks WHERE file = ?1", params![file])?;
            index_chunks(&tx, &file, &c)?;
        }
    }
    super::trash::record(&tx, &kept)?;
    let tag = changeset.filter(|_| *cur_src == Src::Incoming);
    super::changeset::record(&tx, path.as_str(), &cur.vv, tag)?;
    for peer in &brick.peers() {
        if Some(*peer) == from && !plan.diverged {
            continue;
        }
        tx.execute(
            "INSERT OR REPLACE INTO pending (peer, path, seq) VALUES (?1, ?2, ?3)",
            params![*peer as i64, path.as_str(), seq as i64],
        )?;
    }
    tx.commit()?;
    crate::failpoint::hit("store-after-commit");
    brick.publish_seq(seq);
    Ok((cur.vv.clone(), !plan.siblings.is_empty()))
}

/// Keeps in the trash what `plan` loses (see `trash`); the rows are
/// recorded in the commit's transaction. A content that cannot be kept
/// is logged, never a reason to refuse the change.
/// Keeps in the trash every regular file that stands where `path` needs a
/// parent directory (it is replaced by the directory when the path is
/// placed). Kept whatever `features.trash` says: it is a conflict's loser.
fn keep_displaced_parents(
    brick: &Brick,
    conn: &Connection,
    path: &crate::RelPath,
    by: uuid::Uuid,
) -> Result<Vec<super::trash::Kept>, StoreError> {
    let mut out = Vec::new();
    let comps: Vec<&str> = path.as_str().split('/').collect();
    for n in 1..comps.len() {
        let anc = comps[..n].join("/");
        let on_disk = brick.root.join(&anc);
        match std::fs::symlink_metadata(&on_disk) {
            Ok(m) if m.is_file() => {}
            // A directory (the usual case), a symlink (refused by resolve)
            // or nothing: nothing to keep at this level.
            Ok(m) if m.is_dir() => continue,
            _ => break,
        }
        let Ok(rel) = crate::RelPath::new(&anc) else {
            break;
        };
        let Some((e, chunks)) = Brick::load(conn, &rel)? else {
            break;
        };
        if e.kind != Kind::File {
            break;
        }
        match super::trash::keep_content(&brick.root, &e.hash, &on_disk) {
            Ok(new_file) => {
                tracing::warn!(path = %rel, "a file stood where {path} needs a directory: the directory wins, the file is kept in the trash");
                out.push(super::trash::Kept {
                    entry: e,
                    chunks,
                    reason: super::trash::SPLIT_BRAIN,
                    by,
                    new_file,
                });
            }
            Err(x) => {
                return Err(StoreError::io(
                    "keep the file a directory replaces",
                    &rel,
                    x,
                ));
            }
        }
        break;
    }
    Ok(out)
}

fn keep_losers(
    brick: &Brick,
    plan: &Plan,
    old: Option<&(Entry, Vec<ChunkRef>)>,
    old_sibs: &[(Entry, Vec<ChunkRef>)],
    real: &std::path::Path,
    sib_dir: &std::path::Path,
) -> Vec<super::trash::Kept> {
    let keep: HashSet<[u8; 32]> = std::iter::once(&plan.current.0)
        .chain(plan.siblings.iter().map(|s| &s.0))
        .filter(|e| e.kind == Kind::File)
        .map(|e| e.hash)
        .collect();
    let resolved = !old_sibs.is_empty();
    let mut out: Vec<super::trash::Kept> = Vec::new();
    let mut cands: Vec<(&Entry, &Vec<ChunkRef>, std::path::PathBuf, &'static str)> = Vec::new();
    if let Some((o, c)) = old {
        let reason = if resolved && o.kind == Kind::File && !keep.contains(&o.hash) {
            Some(super::trash::SPLIT_BRAIN)
        } else if brick.trash.enabled.load(Ordering::Relaxed) {
            super::trash::reason_for(o, &plan.current.0, keep.contains(&o.hash))
        } else {
            None
        };
        if let Some(r) = reason {
            cands.push((o, c, real.to_path_buf(), r));
        }
    }
    for (s, c) in old_sibs {
        if s.kind == Kind::File && !keep.contains(&s.hash) {
            cands.push((s, c, sib_dir.join(hex(&s.hash)), super::trash::SPLIT_BRAIN));
        }
    }
    for (e, c, src, reason) in cands {
        if out.iter().any(|k| k.entry.vv == e.vv) {
            continue;
        }
        match super::trash::keep_content(&brick.root, &e.hash, &src) {
            Ok(new_file) => out.push(super::trash::Kept {
                entry: e.clone(),
                chunks: c.clone(),
                reason,
                by: plan.current.0.origin,
                new_file,
            }),
            Err(x) => {
                tracing::warn!(path = %e.path, "could not keep the replaced version in the trash: {x}")
            }
        }
    }
    out
}

/// Commits a version made on this brick (a restore from the trash).
pub(super) fn commit_local(
    brick: &Brick,
    conn: &mut Connection,
    plan: Plan,
    entry: Entry,
    chunks: Vec<ChunkRef>,
    temp: Option<TempFile>,
) -> Result<(), StoreError> {
    commit(brick, conn, plan, entry, chunks, temp, (None, None)).map(|_| ())
}

fn index_chunks(
    tx: &rusqlite::Transaction<'_>,
    file: &str,
    chunks: &[ChunkRef],
) -> Result<(), StoreError> {
    let mut st =
        tx.prepare_cached("INSERT INTO chunks (hash, file, offset, len) VALUES (?1, ?2, ?3, ?4)")?;
    for (c, off) in chunks.iter().zip(chunking::offsets(chunks)) {
        st.execute(params![c.hash.as_slice(), file, off as i64, c.len])?;
    }
    Ok(())
}

/// Removes what a tombstone deletes. False if a directory was kept
/// because something live remains below it.
fn remove_for_tombstone(
    conn: &Connection,
    real: &std::path::Path,
    path: &crate::RelPath,
) -> Result<bool, StoreError> {
    let Ok(meta) = std::fs::symlink_metadata(real) else {
        return Ok(true);
    };
    if meta.is_dir() {
        // Remove the directory only if nothing live remains below it.
        if live_below(conn, path, None)? {
            tracing::warn!(%path, "directory deleted on one side while files were added below it on another; keeping the directory");
            return Ok(false);
        }
        std::fs::remove_dir_all(real).map_err(|e| StoreError::io("remove", path, e))?;
    } else {
        std::fs::remove_file(real).map_err(|e| StoreError::io("remove", path, e))?;
    }
    files::sync_parent(real);
    Ok(true)
}

/// True if a path below `dir` other than `except` is live in the database.
fn live_below(
    conn: &Connection,
    dir: &crate::RelPath,
    except: Option<&crate::RelPath>,
) -> Result<bool, StoreError> {
    let prefix = format!("{}/", dir.as_str());
    let end = format!("{}0", dir.as_str());
    let mut st =
        conn.prepare_cached("SELECT path, entry FROM entries WHERE path > ?1 AND path < ?2")?;
    let live = st
        .query_map(params![prefix, end], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .filter_map(Result::ok)
        .filter(|(p, _)| except.is_none_or(|x| x.as_str() != p))
        .filter_map(|(_, b)| codec::decode::<Entry>(&b).ok())
        .any(|e| e.kind != Kind::Tombstone);
    Ok(live)
}

/// After a deletion, the parents that were deleted too but kept on disk
/// because this path was still live below them go as well, nearest
/// first, while nothing else live remains below them: a directory whose
/// deletion arrived before its children's (replays and heals send in path
/// order) is never left behind to be served and mounted as if it existed.
fn remove_deleted_parents(
    conn: &Connection,
    root: &std::path::Path,
    path: &crate::RelPath,
) -> Result<(), StoreError> {
    let mut cur = path.parent();
    while let Some(p) = cur {
        let deleted = Brick::load(conn, &p)?.is_some_and(|(e, _)| e.kind == Kind::Tombstone);
        if !deleted {
            break;
        }
        let Ok(real) = files::resolve(root, &p, false) else {
            break;
        };
        if !std::fs::symlink_metadata(&real).is_ok_and(|m| m.is_dir())
            || live_below(conn, &p, Some(path))?
        {
            break;
        }
        std::fs::remove_dir_all(&real).map_err(|e| StoreError::io("remove", &p, e))?;
        files::sync_parent(&real);
        tracing::info!(path = %p, "deleted directory removed now that nothing live remains below it");
        cur = p.parent();
    }
    Ok(())
}

/// Makes the version of `path` with vector `vv` win over every other
/// version this brick holds (split-brain resolution): it gets a vector that
/// dominates them all, and the losers go to the trash. Returns the new vector.
pub fn choose(
    brick: &Brick,
    conn: &mut Connection,
    path: &crate::RelPath,
    vv: &VersionVector,
) -> Result<Option<VersionVector>, StoreError> {
    let current = Brick::load(conn, path)?.map(|x| x.0);
    let sibs: Vec<Entry> = Brick::siblings(conn, path)?
        .into_iter()
        .map(|x| x.0)
        .collect();
    if sibs.is_empty() {
        return Ok(None);
    }
    let (chosen, src) = if current.as_ref().is_some_and(|c| c.vv == *vv) {
        (current.clone(), Src::Current)
    } else {
        match sibs.iter().position(|s| s.vv == *vv) {
            Some(i) => (Some(sibs[i].clone()), Src::Sibling(i)),
            None => (None, Src::Current),
        }
    };
    let Some(mut win) = chosen else {
        return Ok(None);
    };
    let mut all = current
        .iter()
        .chain(sibs.iter())
        .fold(VersionVector::new(), |acc, e| acc.merge(&e.vv));
    all = all.bumped(brick.id);
    win.vv = all.clone();
    win.data_vv = all.clone();
    win.meta_vv = all.clone();
    let plan = Plan {
        current: (win.clone(), src),
        siblings: Vec::new(),
        diverged: true,
    };
    commit(brick, conn, plan, win, Vec::new(), None, (None, None))?;
    Ok(Some(all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RelPath;

    fn apply(b: &Brick, e: Entry) {
        b.with_db_sync(|conn| match decide(conn, e, None).unwrap() {
            Decided::Apply(plan, e) => {
                commit(b, conn, *plan, e, Vec::new(), None, (None, None)).unwrap();
            }
            Decided::Done(_) => panic!("offer ignored"),
        });
    }

    /// A deletion whose parents are gone is recorded, and creates nothing.
    #[test]
    fn tombstone_under_a_missing_parent_creates_nothing() {
        let d = tempfile::tempdir().unwrap();
        let b = Brick::open(
            d.path(),
            uuid::Uuid::new_v4(),
            "v",
            1,
            uuid::Uuid::new_v4(),
            vec![2],
        )
        .unwrap();
        let mut t = Entry::tombstone(RelPath::new("gone/inner/f").unwrap(), uuid::Uuid::nil());
        t.vv = VersionVector::from_entries([(7, 3)]);
        apply(&b, t.clone());
        assert!(!d.path().join("gone").exists(), "parent recreated");
        let stored = b
            .with_db_sync(|c| Brick::load(c, &t.path))
            .unwrap()
            .unwrap();
        assert_eq!(stored.0.kind, Kind::Tombstone);

        // A file where the parent directory should be stays a file.
        std::fs::write(d.path().join("plain"), "x").unwrap();
        let mut t2 = Entry::tombstone(RelPath::new("plain/child").unwrap(), uuid::Uuid::nil());
        t2.vv = VersionVector::from_entries([(7, 4)]);
        apply(&b, t2);
        assert!(d.path().join("plain").is_file());

        // Below a symlink (to a directory outside): nothing is touched.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        let mut t3 = Entry::tombstone(RelPath::new("link/victim").unwrap(), uuid::Uuid::nil());
        t3.vv = VersionVector::from_entries([(7, 5)]);
        apply(&b, t3);
        assert!(outside.path().join("victim").is_file());
    }

    /// A directory whose deletion arrives before its children's (a replay
    /// in path order) is kept while they live, then removed with the last
    /// of them: nothing deleted stays on the brick.
    #[test]
    fn deleted_parent_goes_with_its_last_child() {
        let d = tempfile::tempdir().unwrap();
        let b = Brick::open(
            d.path(),
            uuid::Uuid::new_v4(),
            "v",
            1,
            uuid::Uuid::new_v4(),
            vec![2],
        )
        .unwrap();
        let dir = |p: &str, c: u64| {
            let mut e = Entry::tombstone(RelPath::new(p).unwrap(), uuid::Uuid::nil());
            e.kind = Kind::Dir;
            e.mode = 0o755;
            e.vv = VersionVector::from_entries([(7, c)]);
            e
        };
        let gone = |p: &str, c: u64| {
            let mut e = Entry::tombstone(RelPath::new(p).unwrap(), uuid::Uuid::nil());
            e.vv = VersionVector::from_entries([(7, c)]);
            e
        };
        for (i, p) in ["a", "a/b", "a/b/c", "a/d", "keep"].iter().enumerate() {
            apply(&b, dir(p, 1 + i as u64));
        }
        assert!(d.path().join("a/b/c").is_dir());
        // Parents first, as a path-ordered replay sends them.
        apply(&b, gone("a", 10));
        apply(&b, gone("a/b", 11));
        assert!(d.path().join("a/b/c").is_dir(), "live child removed");
        apply(&b, gone("a/b/c", 12));
        assert!(
            !d.path().join("a/b").exists(),
            "a/b kept after its last child"
        );
        assert!(d.path().join("a/d").is_dir(), "a live sibling keeps a");
        apply(&b, gone("a/d", 13));
        assert!(!d.path().join("a").exists(), "a kept after its last child");
        assert!(d.path().join("keep").is_dir());
    }
}

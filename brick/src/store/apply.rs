//! Receiving an offered version of a path: decide, fetch only the missing
//! chunks, build the content in a temp file, then place it (outside the
//! database thread, beside other paths) and commit the metadata, the new
//! sequence number and the pending rows for the other bricks in the
//! brick's next group commit, before the offer is acknowledged.
//!
//! The store speaks in its own terms: a version is [`Applied`] or meets a
//! [`Refusal`], and the chunks it lacks come from an [`OfferSource`]. The
//! brick service turns those into wire messages and frames (`service`),
//! so nothing here knows a request, a response or a stream.

use std::collections::HashSet;
use std::fs::File;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::{params, Connection};

use super::chunking::{Assembly, CopyError, Finish};
use super::files::{self, TempFile};
use super::reconcile::{reconcile, Plan, Refused, Src};
use super::types::{Changeset, ChunkRef, Entry, Kind, WriteInfo};
use super::{chunking, hex, Brick, StoreError};
use crate::wire::codec;
use crate::wire::vv::VersionVector;

/// Longest wait for another update of the same path to finish.
pub(super) const PATH_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A version the brick recorded (or already held).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The version's final vector: for a writer's change, the one the
    /// brick assigned; for a version already superseded here, the brick's
    /// current one.
    pub vv: VersionVector,
    /// True if the path is now in split-brain.
    pub conflict: bool,
}

/// Why a brick did not record an offered version. The sender may offer it
/// again later, except an [`Refusal::Invalid`] one, which stays refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The offer contradicts itself (a chunk list that does not match the
    /// size, content for a directory) or cannot be placed here (a path
    /// below a symlink).
    #[error("{0}")]
    Invalid(String),
    /// A writer's change while the brick cannot reach its quorum, or
    /// before it caught up with the other bricks for that path.
    #[error("{0}")]
    NoQuorum(String),
    /// A writer's change based on a version that is no longer current, on
    /// a volume with quorum (where bricks never keep split-brain
    /// siblings): the writer keeps its edit as a conflict copy.
    #[error("{0}")]
    Conflict(String),
    /// Taking this version would show a content this brick no longer
    /// holds: the sender offers the versions it shows first.
    #[error("{0}")]
    OthersFirst(String),
    /// The path stayed busy, or the disk or database failed: try later.
    #[error("{0}")]
    Failed(String),
}

/// The sender of an offered version as the brick sees it: told which of
/// the version's chunks the brick lacks, then handing them over one by
/// one, in order.
pub trait OfferSource: Send {
    /// Why the sender could not be heard (a broken or hostile stream).
    type Error: Send;
    /// Tells the sender the indexes of the chunks the brick lacks.
    fn ask(&mut self, need: Vec<u32>) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// The next chunk asked for.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send;
}

/// A version offered to a brick: by a peer brick (replication, its
/// vectors final) or by a sync agent (a write, with what it was written
/// on; the brick assigns its vectors).
#[derive(Debug, Clone)]
pub struct Offered {
    /// The version.
    pub entry: Entry,
    /// Its content's chunk list (files).
    pub chunks: Vec<ChunkRef>,
    /// For a write: the writer and the version it changed.
    pub write: Option<WriteInfo>,
    /// For replication: the sending brick's replica id.
    pub from_brick: Option<u64>,
    /// The changeset it belongs to, if any.
    pub changeset: Option<Changeset>,
}

/// What the decision step produced.
pub(super) enum Decided {
    /// Nothing to do: the version is held or superseded here.
    Done(Applied),
    /// Refused (see [`Refusal`]).
    Refused(Refusal),
    /// Apply `plan`, with the incoming content made of `chunks` if needed.
    Apply(Box<Plan>, Entry),
}

/// Receives an offered version, asking `src` for the chunks the brick
/// lacks. The outer error means the sender could not be heard (nothing was
/// recorded); otherwise the version was applied or refused.
pub async fn receive_offer<S: OfferSource>(
    brick: &Arc<Brick>,
    offer: Offered,
    src: &mut S,
) -> Result<Result<Applied, Refusal>, S::Error> {
    match offer_impl(brick, offer, src).await {
        Ok(a) => Ok(Ok(a)),
        Err(OfferError::Source(e)) => Err(e),
        Err(OfferError::Refused(r)) => Ok(Err(r)),
        Err(OfferError::Store(e)) => Ok(Err(failed(brick, e))),
    }
}

/// A store failure as the refusal the sender sees, logged and kept as the
/// brick's last error.
pub(super) fn failed(brick: &Brick, e: StoreError) -> Refusal {
    tracing::warn!(brick = %brick.root.display(), "offer failed: {e}");
    *brick.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    Refusal::Failed(e.to_string())
}

pub(super) enum OfferError<E> {
    Source(E),
    Store(StoreError),
    Refused(Refusal),
}

impl<E> From<StoreError> for OfferError<E> {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl<E> From<Refusal> for OfferError<E> {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

/// Refuses a version whose path lies below a symlink on this brick (a
/// deletion there deletes nothing, see `commit`, so it passes).
fn refuse_below_symlink(brick: &Brick, entry: &Entry) -> Result<(), Refusal> {
    if let Err(e) = files::resolve(&brick.root, &entry.path, false) {
        if e.kind() == std::io::ErrorKind::PermissionDenied && entry.kind != Kind::Tombstone {
            tracing::warn!(path = %entry.path, "refused: {e}");
            return Err(Refusal::Invalid(e.to_string()));
        }
    }
    Ok(())
}

/// What the checks, the path's lock and the decision leave to do with an
/// offered version. (One lives per version being admitted, on the
/// stack: boxing the larger variant would cost an allocation for nothing.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Admitted<'a> {
    /// Nothing to do: the version is held or superseded here.
    Done(Applied),
    /// Apply the plan to the version (vectors assigned for a writer's),
    /// holding the path's lock until committed.
    Apply(super::PathGuard<'a>, Box<Plan>, Entry),
}

/// The steps every offered version goes through, alone or in a batch,
/// once its shape is checked: nothing below a symlink, a writer's change
/// only with quorum, one update of a path at a time, the decision, and on
/// a quorum volume no split-brain from a writer.
pub(super) async fn admit<'a, E>(
    brick: &'a Arc<Brick>,
    entry: &Entry,
    write: Option<WriteInfo>,
) -> Result<Admitted<'a>, OfferError<E>> {
    refuse_below_symlink(brick, entry)?;
    let writer = write.is_some();
    if writer {
        refuse_without_quorum(brick)?;
    }
    // One update of a path at a time: decide, receive and commit together.
    // Bounded below the sender's first-answer timeout, so a sender waiting
    // behind a long transfer gets a clear answer and retries later (when
    // it usually finds the version already here).
    let guard = lock_for_update(brick, &entry.path).await?;
    let e2 = entry.clone();
    let (plan, entry) = match brick
        .with_db(move |_, conn| decide(conn, e2, write))
        .await?
    {
        Decided::Done(a) => return Ok(Admitted::Done(a)),
        Decided::Refused(r) => return Err(r.into()),
        Decided::Apply(p, e) => (p, e),
    };
    if writer {
        refuse_split_brain_on_quorum(brick, &plan, &entry.path)?;
    }
    Ok(Admitted::Apply(guard, plan, entry))
}

/// Whether placing `plan` needs the content of the incoming `entry`.
pub(super) fn needs_content(plan: &Plan, entry: &Entry) -> bool {
    entry.kind == Kind::File
        && (plan.current.1 == Src::Incoming || plan.siblings.iter().any(|s| s.1 == Src::Incoming))
}

/// Refuses a writer's change while the brick cannot reach its quorum.
fn refuse_without_quorum(brick: &Brick) -> Result<(), Refusal> {
    let quorum = *brick.quorum.lock().unwrap_or_else(|p| p.into_inner());
    if quorum == Some(false) {
        return Err(Refusal::NoQuorum(
            "brick cannot reach quorum; change refused".into(),
        ));
    }
    Ok(())
}

/// With quorum configured, bricks never diverge: a writer's change based
/// on a version that is no longer current, and really different from it,
/// is refused as a conflict instead of kept as a split-brain sibling; the
/// writer keeps its edit as a conflict copy.
fn refuse_split_brain_on_quorum(
    brick: &Brick,
    plan: &Plan,
    path: &crate::RelPath,
) -> Result<(), Refusal> {
    let quorum = brick
        .quorum
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some();
    if quorum && !plan.siblings.is_empty() {
        return Err(Refusal::Conflict(format!(
            "{path} changed on the volume since this edit's base version"
        )));
    }
    Ok(())
}

/// The path's update lock, or a refusal to retry later if it stays busy
/// for [`PATH_BUSY_WAIT`].
async fn lock_for_update<'a>(
    brick: &'a Brick,
    path: &crate::RelPath,
) -> Result<super::PathGuard<'a>, Refusal> {
    brick
        .lock_path(path, PATH_BUSY_WAIT)
        .await
        .ok_or_else(|| Refusal::Failed(format!("{path} is being updated; retry later")))
}

async fn offer_impl<S: OfferSource>(
    brick: &Arc<Brick>,
    offer: Offered,
    src: &mut S,
) -> Result<Applied, OfferError<S::Error>> {
    let Offered {
        entry,
        chunks,
        write,
        from_brick,
        changeset,
    } = offer;
    validate(&entry, &chunks)?;
    let (_guard, plan, entry) = match admit(brick, &entry, write).await? {
        Admitted::Done(a) => return Ok(a),
        Admitted::Apply(g, p, e) => (g, p, e),
    };
    let needs_content = needs_content(&plan, &entry);
    let temp = if needs_content {
        let hashes: Vec<[u8; 32]> = chunks.iter().map(|c| c.hash).collect();
        let local = brick
            .with_db(
                move |_, conn| -> Result<Vec<Option<(String, u64)>>, StoreError> {
                    hashes.iter().map(|h| Brick::find_chunk(conn, h)).collect()
                },
            )
            .await?;
        let need: Vec<u32> = (0..chunks.len() as u32)
            .filter(|i| local[*i as usize].is_none())
            .collect();
        src.ask(need).await.map_err(OfferError::Source)?;
        Some(receive_content(brick, &entry, &chunks, local, src).await?)
    } else {
        None
    };
    let from = (from_brick, changeset);
    let vv = entry.vv.clone();
    let (_, conflict) = commit(brick, *plan, entry, chunks, temp, from).await?;
    brick
        .counters
        .changes_applied
        .fetch_add(1, Ordering::Relaxed);
    brick.pending_notify.notify_waiters();
    Ok(Applied { vv, conflict })
}

/// Whether a version's own description holds together: a file's chunk
/// list adds up to its size, a link has a sane target, nothing else has
/// chunks.
pub(super) fn validate(entry: &Entry, chunks: &[ChunkRef]) -> Result<(), Refusal> {
    let invalid = |why: &str| Err(Refusal::Invalid(why.to_string()));
    match entry.kind {
        Kind::File => {
            let total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
            if total != entry.size
                || chunks
                    .iter()
                    .any(|c| c.len == 0 || c.len > chunking::MAX_CHUNK)
            {
                return invalid("chunk list does not match the size");
            }
        }
        Kind::Symlink => {
            let Some(t) = &entry.target else {
                return invalid("symlink without target");
            };
            if t.is_empty() || t.contains('\0') || t.len() > crate::wire::path::MAX_PATH {
                return invalid("bad symlink target");
            }
        }
        Kind::Dir | Kind::Tombstone => {}
    }
    if !chunks.is_empty() && entry.kind != Kind::File {
        return invalid("chunks for a non-file");
    }
    Ok(())
}

pub(super) fn decide(
    conn: &mut Connection,
    mut entry: Entry,
    write: Option<WriteInfo>,
) -> Result<Decided, StoreError> {
    let current = Brick::load(conn, &entry.path)?.map(|(e, _)| e);
    let siblings: Vec<Entry> = Brick::siblings(conn, &entry.path)?
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    let members: Vec<Entry> = Brick::members(conn, &entry.path)?
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    if let Some(w) = write {
        super::reconcile::assign_vectors(&mut entry, w, current.as_ref(), &siblings);
    }
    match reconcile(current.as_ref(), &siblings, &members, &entry) {
        Ok(None) => {
            let vv = current.map(|c| c.vv).unwrap_or_default();
            Ok(Decided::Done(Applied {
                vv,
                conflict: !siblings.is_empty(),
            }))
        }
        Ok(Some(plan)) => {
            note_delete_lost(&plan, &entry, current.as_ref(), &siblings, &members);
            Ok(Decided::Apply(Box::new(plan), entry))
        }
        // The sender offers the versions it shows first; once those are
        // here this one no longer needs the content it lacks.
        Err(Refused::ContentMissing) => Ok(Decided::Refused(Refusal::OthersFirst(format!(
            "{}: this version would show a content this brick no longer holds; offer the versions the sender shows first",
            entry.path
        )))),
    }
}

/// Logs a deletion that a concurrent change outlives (the change wins,
/// nothing is lost): the incoming version is a deletion and the path still
/// shows a file, or a held deletion the incoming version did not see.
fn note_delete_lost(
    plan: &Plan,
    incoming: &Entry,
    current: Option<&Entry>,
    siblings: &[Entry],
    members: &[Entry],
) {
    if plan.current.0.kind == Kind::Tombstone {
        return;
    }
    let held = super::reconcile::held(current, siblings, members);
    let unseen_delete = held.iter().any(|e| {
        e.kind == Kind::Tombstone
            && e.vv.compare(&incoming.vv) == crate::wire::vv::Relation::Concurrent
    });
    if incoming.kind == Kind::Tombstone || unseen_delete {
        tracing::info!(path = %incoming.path, "a deletion met a concurrent change: the changed version is kept");
    }
}

/// Where this brick holds a chunk: a file under its root and an offset.
type Held = Option<(String, u64)>;

/// Builds the version's content in an fsynced temp file: the chunks
/// asked for from `src` (those `held` has no place for), the others copied
/// from this brick's files, every one checked against its hash, the whole
/// against the entry's. Runs of held chunks are read, checked and written
/// on the blocking pool (a delta inside a big file copies nearly all of
/// it: that must not hold an executor thread), the file each one lives in
/// opened once per run.
async fn receive_content<S: OfferSource>(
    brick: &Arc<Brick>,
    entry: &Entry,
    chunks: &[ChunkRef],
    held: Vec<Held>,
    src: &mut S,
) -> Result<TempFile, OfferError<S::Error>> {
    let (temp, file) = TempFile::create(&files::tmp_dir(&brick.root))
        .map_err(|e| StoreError::io("create temp in", brick.root.display(), e))?;
    let mut out = Assembly::new(file, 1 << 20);
    let mut i = 0;
    while i < chunks.len() {
        if held[i].is_none() {
            let c = &chunks[i];
            let data = src.next_chunk().await.map_err(OfferError::Source)?;
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
            out.add(&data)
                .map_err(|e| StoreError::io("write", temp.path().display(), e))?;
            i += 1;
            continue;
        }
        let mut run = Vec::new();
        let mut bytes = 0u64;
        while i < chunks.len() && bytes < chunking::COPY_RUN {
            let Some((file, off)) = held[i].clone() else {
                break;
            };
            bytes += u64::from(chunks[i].len);
            run.push((chunks[i], file, off));
            i += 1;
        }
        let n = run.len() as u64;
        let root = brick.root.clone();
        let (back, run, copied) = tokio::task::spawn_blocking(move || {
            let r = out.copy_held(&run, |f: &String| File::open(root.join(f)));
            (out, run, r)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        out = back;
        match copied {
            Ok(()) => {
                brick.counters.chunks_reused.fetch_add(n, Ordering::Relaxed);
            }
            Err(CopyError::Write(e)) => {
                return Err(StoreError::io("write", temp.path().display(), e).into());
            }
            Err(CopyError::Stale(k)) => {
                let (h, file, off) = run
                    .get(k)
                    .map(|(c, f, o)| (c.hash, f.clone(), *o))
                    .ok_or_else(|| StoreError::BadContent(entry.path.to_string()))?;
                // The index row is stale (the file changed on disk, or a
                // crash fell between a rename and its commit): forget it so
                // the retry asks the sender instead of failing the same way
                // forever.
                brick
                    .with_db(move |_, conn| {
                        conn.execute(
                            "DELETE FROM chunks WHERE hash = ?1 AND file = ?2 AND offset = ?3",
                            params![h.as_slice(), file, off as i64],
                        )
                    })
                    .await
                    .map_err(StoreError::from)?;
                return Err(StoreError::BadContent(entry.path.to_string()).into());
            }
        }
    }
    let file = match out.finish(&entry.hash) {
        Ok(f) => f,
        Err(Finish::Mismatch) => return Err(StoreError::BadContent(entry.path.to_string()).into()),
        Err(Finish::Write(e)) => {
            return Err(StoreError::io("write", temp.path().display(), e).into())
        }
    };
    // On the blocking pool: an fsync on the executor would stall every
    // other transfer of the node while the disk works.
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        .map_err(|e| StoreError::io("fsync", temp.path().display(), e))?;
    crate::failpoint::hit("store-after-temp");
    Ok(temp)
}

/// Places the plan's content on disk and commits it; returns once the
/// commit is durable. `from` is the sending brick (replication) and the
/// incoming version's changeset.
///
/// The caller holds the path's lock (see [`Brick::lock_path`]). Placement
/// (siblings and trash kept, content renamed into place) runs on the
/// blocking pool, outside the database owner, so many paths place at once;
/// the metadata then joins the next group commit, which fsyncs the
/// directories renamed into before the transaction that records them.
/// Order on disk: content fsynced (temp) -> renamed -> directory fsynced ->
/// transaction durable -> acknowledged. A crash at any point leaves the
/// old or the new file whole at the path, and an acknowledged version
/// always recorded.
///
/// Placements that remove or replace something other paths may be using
/// (a directory, a file standing where a directory is needed, split-brain
/// sibling contents) run alone: they wait for the placements in progress
/// to commit and hold the others off until they commit themselves (the
/// brick's placement lock). The others share it; a shared placement that
/// finds such a change needed after all fails, and the sender retries.
pub(super) async fn commit(
    brick: &Arc<Brick>,
    plan: Plan,
    incoming: Entry,
    in_chunks: Vec<ChunkRef>,
    temp: Option<TempFile>,
    (from, changeset): (Option<u64>, Option<Changeset>),
) -> Result<(VersionVector, bool), StoreError> {
    let p = incoming.path.clone();
    let deleting = plan.current.0.kind == Kind::Tombstone;
    let (old, old_sibs, old_members, parent_deleted) = brick
        .with_db(move |_, c| -> Result<_, StoreError> {
            // A deletion under a directory deleted too (kept for this
            // path) may remove that directory: it runs alone.
            let parent_deleted = match p.parent() {
                Some(pp) if deleting => {
                    Brick::load(c, &pp)?.is_some_and(|(e, _)| e.kind == Kind::Tombstone)
                }
                _ => false,
            };
            Ok((
                Brick::load(c, &p)?,
                Brick::siblings(c, &p)?,
                Brick::members(c, &p)?,
                parent_deleted,
            ))
        })
        .await?;
    let alone = parent_deleted || runs_alone(&brick.root, &plan, &incoming.path, &old_sibs);
    let _placing = if alone {
        Placing::Alone(brick.placing.write().await)
    } else {
        Placing::Shared(brick.placing.read().await)
    };
    // The changeset tag goes with the version it came with only.
    let tag = changeset.filter(|_| plan.current.1 == Src::Incoming);
    // Listed until the commit is durable: a crash in between is undone at
    // the next open (see `intents`).
    let _in_flight = brick.intents.begin(&incoming.path)?;
    let b = brick.clone();
    let mut staged = tokio::task::spawn_blocking(move || {
        place(
            &b,
            plan,
            incoming,
            in_chunks,
            temp,
            from,
            (old, old_sibs, old_members),
            alone,
        )
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    staged.tag = tag;
    let dirs = staged.dirs.clone();
    brick.commit(dirs, move |c| write_staged(c, &staged)).await
}

/// Holds the brick's placement lock until the commit is durable.
enum Placing<'a> {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'a, ()>),
    Alone(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'a, ()>),
}

/// Whether placing `plan` may remove or replace what other paths use (see
/// [`commit`]): a directory at the path (or a tombstone for one), a
/// non-directory where a parent directory is needed, siblings.
fn runs_alone(
    root: &std::path::Path,
    plan: &Plan,
    path: &crate::RelPath,
    old_sibs: &[(Entry, Vec<ChunkRef>)],
) -> bool {
    if !old_sibs.is_empty() || !plan.siblings.is_empty() {
        return true;
    }
    let mut cur = root.to_path_buf();
    let comps: Vec<&str> = path.as_str().split('/').collect();
    for c in &comps[..comps.len() - 1] {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return true,
            Err(_) => break,
        }
    }
    let here = std::fs::symlink_metadata(path.under(root));
    match plan.current.0.kind {
        Kind::Dir => here.is_ok_and(|m| !m.is_dir()),
        _ => here.is_ok_and(|m| m.is_dir()),
    }
}

/// A stored version and its chunk list.
type Versioned = (Entry, Vec<ChunkRef>);

/// What a placed change writes in the group commit.
struct Staged {
    path: crate::RelPath,
    cur: Entry,
    cur_chunks: Vec<ChunkRef>,
    siblings: Vec<(Entry, Vec<ChunkRef>)>,
    /// The members behind the shown versions (empty: they are the shown
    /// ones), with their chunk lists.
    members: Vec<(Entry, Vec<ChunkRef>)>,
    kept: Vec<super::trash::Kept>,
    /// Bricks that have not confirmed this version yet, each with the
    /// brick that delivers it to them (0: this one).
    pending: Vec<(u64, u64)>,
    dirs: Vec<std::path::PathBuf>,
    /// The changeset of the incoming version, when it is what the path
    /// holds now.
    tag: Option<Changeset>,
}

fn changed_meanwhile(path: &crate::RelPath) -> StoreError {
    StoreError::io(
        "place",
        path,
        std::io::Error::other("changed by another update meanwhile; retry later"),
    )
}

/// Places the plan's content on disk (see [`commit`]); runs on the
/// blocking pool, reads the database through its owner.
#[allow(clippy::too_many_arguments)]
fn place(
    brick: &Brick,
    plan: Plan,
    incoming: Entry,
    in_chunks: Vec<ChunkRef>,
    temp: Option<TempFile>,
    from: Option<u64>,
    (old, old_sibs, old_members): (Option<Versioned>, Vec<Versioned>, Vec<Versioned>),
    alone: bool,
) -> Result<Staged, StoreError> {
    let path = incoming.path.clone();
    let mut dirs = Vec::new();
    // A deletion never creates anything, nor reaches through a symlink: with
    // a parent missing, not a directory or a link, there is nothing on disk
    // to remove or keep (the database still records the tombstone).
    let deleting = plan.current.0.kind == Kind::Tombstone;
    // A file standing where this path needs a parent directory is about to
    // be replaced by that directory (a concurrent "file here" and "directory
    // here"): keep its content first, never drop it.
    let displaced = if deleting || !alone {
        Vec::new()
    } else {
        keep_displaced_parents(brick, &path, plan.current.0.origin)?
    };
    // A parent directory this placement creates must be durable in its own
    // parent too: whoever creates one saw it missing here first.
    if !deleting {
        let mut a = path.parent();
        while let Some(p) = a {
            let full = p.under(&brick.root);
            if std::fs::symlink_metadata(&full).is_ok() {
                break;
            }
            if let Some(up) = full.parent() {
                dirs.push(up.to_path_buf());
            }
            a = p.parent();
        }
    }
    let resolved = if alone {
        files::resolve(&brick.root, &path, !deleting)
    } else {
        files::resolve_shared(&brick.root, &path, !deleting)
    };
    let (real, on_disk) = match resolved {
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
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(changed_meanwhile(&path))
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
    let mut temp = temp;
    if !plan.siblings.is_empty() {
        std::fs::create_dir_all(&sib_dir)
            .map_err(|e| StoreError::io("create", sib_dir.display(), e))?;
    }
    // 1. Keep every content that becomes a sibling, before the brick path
    //    changes: content-addressed under .gsync/siblings/.
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
                    // The same bytes go to the brick path too (a
                    // split-brain of metadata alone): copy them.
                    if let Some(t) = &temp {
                        std::fs::copy(t.path(), &dest)
                            .map_err(|x| StoreError::io("keep sibling", &path, x))?;
                    }
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
    let is_dir = || std::fs::symlink_metadata(&real).is_ok_and(|m| m.is_dir());
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
            if is_dir() {
                if !alone {
                    return Err(changed_meanwhile(&path));
                }
                files::remove_any(&real).map_err(|e| StoreError::io("replace dir", &path, e))?;
            }
            // The directory is fsynced by the group commit, before the
            // transaction that records this version.
            t.persist_unsynced(&real)
                .map_err(|e| StoreError::io("rename into", &path, e))?;
            if let Some(d) = real.parent() {
                dirs.push(d.to_path_buf());
            }
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
            if !alone && std::fs::symlink_metadata(&real).is_ok_and(|m| !m.is_dir()) {
                return Err(changed_meanwhile(&path));
            }
            files::place_dir(&real, cur.mode, cur.mtime_ns)
                .map_err(|e| StoreError::io("mkdir", &path, e))?;
        }
        (Kind::Symlink, _) => {
            if !alone && is_dir() {
                return Err(changed_meanwhile(&path));
            }
            let target = cur.target.clone().unwrap_or_default();
            files::place_symlink(&files::tmp_dir(&brick.root), &target, &real, cur.mtime_ns)
                .map_err(|e| StoreError::io("symlink", &path, e))?;
        }
        (Kind::Tombstone, _) => {
            if on_disk && !alone && is_dir() {
                return Err(changed_meanwhile(&path));
            }
            if on_disk && remove_for_tombstone(brick, &real, &path)? {
                if let Some(d) = real.parent() {
                    dirs.push(d.to_path_buf());
                }
            }
            // Parents deleted too but kept for this path go with it (the
            // placement runs alone then: see `commit`).
            if alone && std::fs::symlink_metadata(&real).is_err() {
                remove_deleted_parents(brick, &path, &mut dirs)?;
            }
        }
    }
    crate::failpoint::hit("store-after-rename");
    let cur_chunks = if cur.kind == Kind::File {
        chunks_of(*cur_src)
    } else {
        Vec::new()
    };
    let siblings = plan
        .siblings
        .iter()
        .map(|(e, src)| {
            let c = if e.kind == Kind::File {
                chunks_of(*src)
            } else {
                Vec::new()
            };
            (e.clone(), c)
        })
        .collect();
    // A member's chunk list: from the version with its content here.
    let members = plan
        .members
        .iter()
        .map(|e| {
            let c = if e.kind != Kind::File {
                Vec::new()
            } else if incoming.same_content(e) {
                in_chunks.clone()
            } else {
                old.iter()
                    .chain(&old_sibs)
                    .chain(&old_members)
                    .find(|(o, _)| o.same_content(e))
                    .map(|o| o.1.clone())
                    .unwrap_or_default()
            };
            (e.clone(), c)
        })
        .collect();
    // A version taken unchanged from a peer brick is delivered to the
    // other bricks by that brick itself; the rows here only watch that it
    // arrives there, and deliver it if it does not (see `replicate`). One
    // offer per change per peer instead of one from every brick that holds
    // it.
    let sender = from.filter(|_| !plan.diverged).unwrap_or(0);
    let pending = brick
        .peers()
        .into_iter()
        .filter(|p| Some(*p) != from || plan.diverged)
        .map(|p| (p, sender))
        .collect();
    Ok(Staged {
        path,
        cur: cur.clone(),
        cur_chunks,
        siblings,
        members,
        kept,
        pending,
        dirs,
        tag: None,
    })
}

/// The rows of a placed change: entry, chunk index, siblings, trash,
/// pending, seq; written inside the group transaction.
fn write_staged(tx: &Connection, s: &Staged) -> Result<(VersionVector, bool), StoreError> {
    let path = &s.path;
    let seq: u64 = tx
        .prepare_cached("SELECT COALESCE((SELECT value FROM kv WHERE key = 'seq'), 0)")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64
        + 1;
    tx.prepare_cached("INSERT OR REPLACE INTO kv (key, value) VALUES ('seq', ?1)")?
        .execute(params![seq as i64])?;
    let enc = codec::encode(&s.cur).map_err(|_| StoreError::Corrupt(path.to_string()))?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO entries (path, entry, chunks, seq) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        path.as_str(),
        enc,
        chunking::encode_list(&s.cur_chunks),
        seq as i64
    ])?;
    tx.prepare_cached("DELETE FROM chunks WHERE file = ?1")?
        .execute(params![path.as_str()])?;
    index_chunks(tx, path.as_str(), &s.cur_chunks)?;
    write_versions(tx, "siblings", path, &s.siblings)?;
    for (e, c) in &s.siblings {
        if e.kind == Kind::File {
            let file = format!("{}/siblings/{}", crate::wire::path::RESERVED, hex(&e.hash));
            tx.prepare_cached("DELETE FROM chunks WHERE file = ?1")?
                .execute(params![file])?;
            index_chunks(tx, &file, c)?;
        }
    }
    write_versions(tx, "members", path, &s.members)?;
    super::trash::record(tx, &s.kept)?;
    super::changeset::record(tx, path.as_str(), &s.cur.vv, s.tag)?;
    for (peer, sender) in &s.pending {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO pending (peer, path, seq, sender) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            *peer as i64,
            path.as_str(),
            seq as i64,
            *sender as i64
        ])?;
    }
    Ok((s.cur.vv.clone(), !s.siblings.is_empty()))
}

/// Replaces the rows of `path` in `table` (siblings or members).
fn write_versions(
    tx: &Connection,
    table: &str,
    path: &crate::RelPath,
    versions: &[Versioned],
) -> Result<(), StoreError> {
    tx.prepare_cached(&format!("DELETE FROM {table} WHERE path = ?1"))?
        .execute(params![path.as_str()])?;
    for (e, c) in versions {
        let enc = codec::encode(e).map_err(|_| StoreError::Corrupt(path.to_string()))?;
        tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {table} (path, vv, entry, chunks) VALUES (?1, ?2, ?3, ?4)"
        ))?
        .execute(params![
            path.as_str(),
            e.vv.to_bytes(),
            enc,
            chunking::encode_list(c)
        ])?;
    }
    Ok(())
}

/// Keeps in the trash every regular file that stands where `path` needs a
/// parent directory (it is replaced by the directory when the path is
/// placed). Kept whatever `features.trash` says: it is a conflict's loser.
fn keep_displaced_parents(
    brick: &Brick,
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
        let r2 = rel.clone();
        let Some((e, chunks)) = brick.with_db_sync(move |c| Brick::load(c, &r2))? else {
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

/// Keeps in the trash what `plan` loses (see `trash`); the rows are
/// recorded in the commit's transaction. A content that cannot be kept
/// is logged, never a reason to refuse the change.
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

/// Commits a version made on this brick (a restore from the trash); the
/// caller holds the path's lock.
pub(super) async fn commit_local(
    brick: &Arc<Brick>,
    plan: Plan,
    entry: Entry,
    chunks: Vec<ChunkRef>,
    temp: Option<TempFile>,
) -> Result<(), StoreError> {
    commit(brick, plan, entry, chunks, temp, (None, None))
        .await
        .map(|_| ())
}

fn index_chunks(tx: &Connection, file: &str, chunks: &[ChunkRef]) -> Result<(), StoreError> {
    let mut st =
        tx.prepare_cached("INSERT INTO chunks (hash, file, offset, len) VALUES (?1, ?2, ?3, ?4)")?;
    for (c, off) in chunks.iter().zip(chunking::offsets(chunks)) {
        st.execute(params![c.hash.as_slice(), file, off as i64, c.len])?;
    }
    Ok(())
}

/// Removes what a tombstone deletes; true when something was removed
/// (its directory needs an fsync before the commit). A directory with
/// something live below it is kept.
fn remove_for_tombstone(
    brick: &Brick,
    real: &std::path::Path,
    path: &crate::RelPath,
) -> Result<bool, StoreError> {
    let Ok(meta) = std::fs::symlink_metadata(real) else {
        return Ok(false);
    };
    if meta.is_dir() {
        // Remove the directory only if nothing live remains below it.
        let p = path.clone();
        let live = brick.with_db_sync(move |conn| live_below(conn, &p, None))?;
        if live {
            tracing::warn!(%path, "directory deleted on one side while files were added below it on another; keeping the directory");
            return Ok(false);
        }
        std::fs::remove_dir_all(real).map_err(|e| StoreError::io("remove", path, e))?;
    } else {
        std::fs::remove_file(real).map_err(|e| StoreError::io("remove", path, e))?;
    }
    Ok(true)
}

/// True if a path below `dir` other than `except` is live in the database.
pub(super) fn live_below(
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
/// Runs alone (no placement in flight under those directories).
fn remove_deleted_parents(
    brick: &Brick,
    path: &crate::RelPath,
    dirs: &mut Vec<std::path::PathBuf>,
) -> Result<(), StoreError> {
    let mut cur = path.parent();
    while let Some(p) = cur {
        let (p2, path2) = (p.clone(), path.clone());
        let removable = brick.with_db_sync(move |c| -> Result<bool, StoreError> {
            let deleted = Brick::load(c, &p2)?.is_some_and(|(e, _)| e.kind == Kind::Tombstone);
            Ok(deleted && !live_below(c, &p2, Some(&path2))?)
        })?;
        if !removable {
            break;
        }
        let Ok(real) = files::resolve(&brick.root, &p, false) else {
            break;
        };
        if !std::fs::symlink_metadata(&real).is_ok_and(|m| m.is_dir()) {
            break;
        }
        std::fs::remove_dir_all(&real).map_err(|e| StoreError::io("remove", &p, e))?;
        if let Some(d) = real.parent() {
            dirs.push(d.to_path_buf());
        }
        tracing::info!(path = %p, "deleted directory removed now that nothing live remains below it");
        cur = p.parent();
    }
    Ok(())
}

/// Makes the version of `path` with vector `vv` win over every other
/// version this brick holds (split-brain resolution): it gets a vector that
/// dominates them all, and the losers go to the trash. Returns the new
/// vector. The caller holds the path's lock.
pub async fn choose(
    brick: &Arc<Brick>,
    path: &crate::RelPath,
    vv: &VersionVector,
) -> Result<Option<VersionVector>, StoreError> {
    let (p, v) = (path.clone(), vv.clone());
    let chosen = brick
        .with_db(move |b, conn| -> Result<_, StoreError> {
            let current = Brick::load(conn, &p)?.map(|x| x.0);
            let sibs: Vec<Entry> = Brick::siblings(conn, &p)?
                .into_iter()
                .map(|x| x.0)
                .collect();
            Ok(super::reconcile::choose_winner(
                current.as_ref(),
                &sibs,
                &v,
                b.id,
            ))
        })
        .await?;
    let Some((win, src)) = chosen else {
        return Ok(None);
    };
    let all = win.vv.clone();
    let plan = Plan {
        current: (win.clone(), src),
        siblings: Vec::new(),
        members: Vec::new(),
        diverged: true,
    };
    commit(brick, plan, win, Vec::new(), None, (None, None)).await?;
    Ok(Some(all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RelPath;
    use std::io::Write;

    async fn apply(b: &Arc<Brick>, e: Entry) {
        let _g = b
            .lock_path(&e.path.clone(), std::time::Duration::from_secs(5))
            .await;
        match b
            .with_db(move |_, conn| decide(conn, e, None))
            .await
            .unwrap()
        {
            Decided::Apply(plan, e) => {
                commit(b, *plan, e, Vec::new(), None, (None, None))
                    .await
                    .unwrap();
            }
            Decided::Done(_) => panic!("offer ignored"),
            Decided::Refused(r) => panic!("offer refused: {r}"),
        }
    }

    /// A deletion whose parents are gone is recorded, and creates nothing.
    #[tokio::test]
    async fn tombstone_under_a_missing_parent_creates_nothing() {
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
        let b = Arc::new(b);
        let mut t = Entry::tombstone(RelPath::new("gone/inner/f").unwrap(), uuid::Uuid::nil());
        t.vv = VersionVector::from_entries([(7, 3)]);
        apply(&b, t.clone()).await;
        assert!(!d.path().join("gone").exists(), "parent recreated");
        let stored = b
            .with_db_sync({
                let p = t.path.clone();
                move |c| Brick::load(c, &p)
            })
            .unwrap()
            .unwrap();
        assert_eq!(stored.0.kind, Kind::Tombstone);

        // A file where the parent directory should be stays a file.
        std::fs::write(d.path().join("plain"), "x").unwrap();
        let mut t2 = Entry::tombstone(RelPath::new("plain/child").unwrap(), uuid::Uuid::nil());
        t2.vv = VersionVector::from_entries([(7, 4)]);
        apply(&b, t2).await;
        assert!(d.path().join("plain").is_file());

        // Below a symlink (to a directory outside): nothing is touched.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        let mut t3 = Entry::tombstone(RelPath::new("link/victim").unwrap(), uuid::Uuid::nil());
        t3.vv = VersionVector::from_entries([(7, 5)]);
        apply(&b, t3).await;
        assert!(outside.path().join("victim").is_file());
    }

    /// A directory whose deletion arrives before its children's (a replay
    /// in path order) is kept while they live, then removed with the last
    /// of them: nothing deleted stays on the brick.
    #[tokio::test]
    async fn deleted_parent_goes_with_its_last_child() {
        let d = tempfile::tempdir().unwrap();
        let b = Arc::new(
            Brick::open(
                d.path(),
                uuid::Uuid::new_v4(),
                "v",
                1,
                uuid::Uuid::new_v4(),
                vec![2],
            )
            .unwrap(),
        );
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
            apply(&b, dir(p, 1 + i as u64)).await;
        }
        assert!(d.path().join("a/b/c").is_dir());
        // Parents first, as a path-ordered replay sends them.
        apply(&b, gone("a", 10)).await;
        apply(&b, gone("a/b", 11)).await;
        assert!(d.path().join("a/b/c").is_dir(), "live child removed");
        apply(&b, gone("a/b/c", 12)).await;
        assert!(
            !d.path().join("a/b").exists(),
            "a/b kept after its last child"
        );
        assert!(d.path().join("a/d").is_dir(), "a live sibling keeps a");
        apply(&b, gone("a/d", 13)).await;
        assert!(!d.path().join("a").exists(), "a kept after its last child");
        assert!(d.path().join("keep").is_dir());
    }

    /// Many paths committed at once (group commit): every one is
    /// acknowledged with its own sequence number, its file in place and
    /// its rows written; the brick's sequence is the last one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_commits_are_all_durable_with_distinct_seqs() {
        let d = tempfile::tempdir().unwrap();
        let b = Arc::new(
            Brick::open(
                d.path(),
                uuid::Uuid::new_v4(),
                "v",
                1,
                uuid::Uuid::new_v4(),
                vec![2, 3],
            )
            .unwrap(),
        );
        const N: usize = 200;
        let mut tasks = Vec::new();
        for i in 0..N {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                let data = format!("file {i}\n").repeat(i % 7 + 1).into_bytes();
                let hash = *blake3::hash(&data).as_bytes();
                let path = RelPath::new(&format!("d{}/f{i}", i % 3)).unwrap();
                let mut e = Entry::tombstone(path.clone(), uuid::Uuid::nil());
                e.kind = Kind::File;
                e.size = data.len() as u64;
                e.hash = hash;
                e.mode = 0o644;
                e.vv = VersionVector::from_entries([(9, i as u64 + 1)]);
                let chunks = vec![ChunkRef {
                    hash,
                    len: data.len() as u32,
                }];
                let (t, mut f) = TempFile::create(&files::tmp_dir(&b.root)).unwrap();
                f.write_all(&data).unwrap();
                f.sync_all().unwrap();
                let _g = b
                    .lock_path(&path, std::time::Duration::from_secs(5))
                    .await
                    .unwrap();
                let plan = Plan {
                    current: (e.clone(), Src::Incoming),
                    siblings: Vec::new(),
                    members: Vec::new(),
                    diverged: false,
                };
                let (vv, conflict) = commit(&b, plan, e.clone(), chunks, Some(t), (Some(2), None))
                    .await
                    .unwrap();
                assert_eq!(vv, e.vv);
                assert!(!conflict);
                (path, data)
            }));
        }
        let mut written = Vec::new();
        for t in tasks {
            written.push(t.await.unwrap());
        }
        let (batches, commits) = b.commit_stats();
        eprintln!("{commits} commits in {batches} transactions");
        assert_eq!(commits, N as u64);
        assert_eq!(b.seq(), N as u64);
        let (seqs, pending) = b.with_db_sync(|c| {
            let mut st = c.prepare("SELECT seq FROM entries ORDER BY seq").unwrap();
            let seqs: Vec<u64> = st
                .query_map([], |r| r.get::<_, i64>(0))
                .unwrap()
                .map(|r| r.unwrap() as u64)
                .collect();
            let pending: Vec<(i64, i64)> = c
                .prepare("SELECT peer, COUNT(*) FROM pending GROUP BY peer ORDER BY peer")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            (seqs, pending)
        });
        assert_eq!(seqs, (1..=N as u64).collect::<Vec<_>>());
        // Pending for brick 3 only: brick 2 sent them, and delivers them
        // to brick 3 itself (the rows only watch).
        assert_eq!(pending, vec![(3, N as i64)]);
        let watched: i64 = b.with_db_sync(|c| {
            c.query_row("SELECT COUNT(*) FROM pending WHERE sender = 2", [], |r| {
                r.get(0)
            })
            .unwrap()
        });
        assert_eq!(watched, N as i64);
        for (path, data) in written {
            assert_eq!(std::fs::read(path.under(&b.root)).unwrap(), data);
            let (e, _) = b
                .with_db_sync(move |c| Brick::load(c, &path))
                .unwrap()
                .unwrap();
            assert_eq!(e.hash, *blake3::hash(&data).as_bytes());
        }
    }
}

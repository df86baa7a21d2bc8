//! The two directions of one path: pushing a local change with the version
//! it was based on, and applying a remote version atomically (temp file in
//! the same directory, fsync, rename) without ever overwriting a local edit
//! that was not pushed yet.

use std::collections::HashMap;
use std::path::Path;

use gsync_brick::store::chunking;
use gsync_brick::store::files::{self, TempFile};
use gsync_brick::store::types::{ChunkRef, Entry, Kind};
use gsync_brick::wire::proto;
use gsync_brick::wire::vv::VersionVector;
use gsync_brick::RelPath;

use crate::journal::Record;
use crate::local::{self, Found, LocalStat};
use crate::mount::Mount;
use crate::plan;
use crate::remote::{self, RemoteError};
use crate::spec::Prefer;

fn local_err(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Local(e.to_string())
}

/// The entry (and chunks) describing the local path now.
async fn describe(
    m: &Mount,
    rel: &RelPath,
    st: &LocalStat,
) -> Result<(Entry, Vec<ChunkRef>), RemoteError> {
    let full = rel.under(&m.root());
    let mut e = Entry::tombstone(rel.clone(), m.node.me.uuid);
    e.kind = st.kind;
    e.mode = st.mode;
    e.mtime_ns = st.mtime_ns;
    e.owner = files::is_root().then_some(st.owner);
    let mut chunks = Vec::new();
    match st.kind {
        Kind::File => {
            let size = st.size;
            let c = tokio::task::spawn_blocking(move || chunk_local(&full, size))
                .await
                .map_err(local_err)?
                .map_err(local_err)?;
            e.size = c.size;
            e.hash = c.hash;
            chunks = c.chunks;
        }
        Kind::Symlink => {
            let t = st.target.clone().unwrap_or_default();
            e.size = t.len() as u64;
            e.hash = *blake3::hash(t.as_bytes()).as_bytes();
            e.target = Some(t);
        }
        Kind::Dir | Kind::Tombstone => {}
    }
    Ok((e, chunks))
}

/// Hash and chunk list of a local file whose stat said `size` bytes. A
/// file smaller than the smallest chunk is one chunk (its whole content),
/// so it is read and hashed in one go instead of through the chunker's
/// stream buffers.
fn chunk_local(full: &Path, size: u64) -> std::io::Result<chunking::Chunked> {
    if size == 0 || size >= u64::from(chunking::MIN_CHUNK) {
        return chunking::chunk_file(full);
    }
    let data = std::fs::read(full)?;
    if data.is_empty() || data.len() >= chunking::MIN_CHUNK as usize {
        // It changed since its stat: the general way, on what it holds now.
        return chunking::chunk_reader(data.as_slice());
    }
    let hash = *blake3::hash(&data).as_bytes();
    Ok(chunking::Chunked {
        hash,
        size: data.len() as u64,
        chunks: vec![ChunkRef {
            hash,
            len: data.len() as u32,
        }],
    })
}

/// A local change described and ready to be offered: the first half of a
/// push, so that a push round knows how many versions its changeset holds
/// before it sends the first one.
pub(crate) struct Ready {
    t: remote::Target,
    entry: Entry,
    chunks: Vec<ChunkRef>,
    w: proto::WriteInfo,
    st: LocalStat,
    full: std::path::PathBuf,
}

impl Ready {
    /// The path it changes.
    pub(crate) fn path(&self) -> &RelPath {
        &self.entry.path
    }

    /// True for a deletion.
    pub(crate) fn is_deletion(&self) -> bool {
        self.entry.kind == Kind::Tombstone
    }
}

/// Sends a described change as a member of `changeset`, and records it.
pub(crate) async fn send(
    m: &Mount,
    r: Ready,
    changeset: Option<proto::Changeset>,
) -> Result<(), RemoteError> {
    let Ready {
        t,
        entry,
        chunks,
        w,
        st,
        full,
    } = r;
    if entry.kind != Kind::Tombstone {
        return push_entry(m, &t, entry, chunks, w, st, &full, changeset).await;
    }
    let offer = m.offer(&t, entry.clone(), Vec::new(), w.clone());
    let (vv, conflict) = remote::push(&m.node, &t, &offer, changeset, None).await?;
    recorded(
        m,
        (entry, Vec::new(), w),
        LocalStat::missing(),
        None,
        (vv, conflict),
    )
    .await
}

impl Ready {
    /// True if it can travel in a batch, content inline: a directory, a
    /// link, a deletion or a file smaller than the smallest chunk.
    pub(crate) fn inline(&self) -> bool {
        self.entry.kind != Kind::File
            || (self.entry.size < u64::from(chunking::MIN_CHUNK) && self.chunks.len() <= 1)
    }

    /// Content bytes it adds to a batch.
    fn inline_len(&self) -> usize {
        if self.entry.kind == Kind::File {
            self.entry.size as usize
        } else {
            0
        }
    }
}

/// Splits described changes that can travel inline (see [`Ready::inline`])
/// into batches within the brick's limits, each for one brick.
pub(crate) fn batches(readies: Vec<Ready>) -> Vec<Vec<Ready>> {
    use proto::{MAX_BATCH_BYTES, MAX_BATCH_ENTRIES};
    let mut out: Vec<Vec<Ready>> = Vec::new();
    let mut bytes = 0;
    for r in readies {
        let fits = out.last().is_some_and(|b| {
            b.len() < MAX_BATCH_ENTRIES
                && bytes + r.inline_len() <= MAX_BATCH_BYTES
                && b[0].t == r.t
        });
        if !fits {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += r.inline_len();
        if let Some(b) = out.last_mut() {
            b.push(r);
        }
    }
    out
}

/// Sends described changes that can travel inline (one [`batches`] batch)
/// in one request, as members of `changeset`, and records each as its
/// single push would. A file whose content no longer matches what was
/// described goes out alone instead (its own push checks it again).
pub(crate) async fn send_batch(
    m: &Mount,
    readies: Vec<Ready>,
    changeset: Option<proto::Changeset>,
) -> Vec<(RelPath, Result<(), RemoteError>)> {
    use proto::{BatchOutcome, WriteEntry};
    let Some(t) = readies.first().map(|r| r.t.clone()) else {
        return Vec::new();
    };
    // The small contents, read off the executor.
    let (readies, contents) = tokio::task::spawn_blocking(move || {
        let contents: Vec<Option<Vec<u8>>> = readies
            .iter()
            .map(|r| {
                if r.entry.kind != Kind::File {
                    return Some(Vec::new());
                }
                std::fs::read(&r.full).ok().filter(|d| {
                    d.len() as u64 == r.entry.size && blake3::hash(d).as_bytes() == &r.entry.hash
                })
            })
            .collect();
        (readies, contents)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let mut out = Vec::with_capacity(readies.len());
    let mut batch = Vec::new();
    let mut entries = Vec::new();
    for (r, content) in readies.into_iter().zip(contents) {
        match content {
            Some(content) => {
                entries.push(WriteEntry {
                    entry: r.entry.clone(),
                    chunks: r.chunks.clone(),
                    write: r.w.clone(),
                    content,
                });
                batch.push(r);
            }
            None => {
                let p = r.path().clone();
                out.push((p, send(m, r, changeset).await));
            }
        }
    }
    if batch.is_empty() {
        return out;
    }
    let req = proto::WriteBatch {
        volume: t.volume,
        brick: t.brick,
        changeset,
        entries,
    };
    let outcomes = match remote::ask(&m.node, &t, req).await {
        Ok(o) if o.len() == batch.len() => o,
        other => {
            let e = other
                .err()
                .unwrap_or_else(|| RemoteError::Unreachable("unexpected answer to a batch".into()));
            out.extend(
                batch
                    .into_iter()
                    .map(|r| (r.path().clone(), Err(e.clone()))),
            );
            return out;
        }
    };
    for (r, o) in batch.into_iter().zip(outcomes) {
        let p = r.path().clone();
        let Ready {
            t,
            entry,
            chunks,
            w,
            st,
            full,
        } = r;
        let res = match o {
            BatchOutcome::Applied { vv, conflict } => {
                recorded(m, (entry, chunks, w), st, Some(&full), (vv, conflict)).await
            }
            BatchOutcome::Refused { code, reason }
                if code == proto::code::CONFLICT && entry.kind != Kind::Tombstone =>
            {
                conflict_copy(m, &t, &p, &full, &reason).await
            }
            BatchOutcome::Refused { code, reason } => Err(RemoteError::Refused(code, reason)),
        };
        out.push((p, res));
    }
    out
}

/// Looks at the local state of `rel` against the journal: what changed is
/// described (read and hashed) and returned to be sent, children's
/// deletions before their directory's; what needs no offer (unchanged,
/// only an mtime, a revert on a read-only mount) is settled here.
pub(crate) async fn plan_local(m: &Mount, rel: &RelPath) -> Result<Vec<Ready>, RemoteError> {
    let j = m.journal.get_async(rel.as_str()).await.map_err(local_err)?;
    plan_known(m, rel, j).await
}

/// [`plan_local`] with the journal's record of `rel` at hand (a push round
/// reads the records of all its paths at once).
pub(crate) async fn plan_known(
    m: &Mount,
    rel: &RelPath,
    j: Option<Record>,
) -> Result<Vec<Ready>, RemoteError> {
    tracing::debug!(path = %rel, "push");
    gsync_brick::failpoint::panic_once("agent-panic-once");
    gsync_brick::failpoint::delay("agent-slow-push", std::time::Duration::from_millis(500)).await;
    let Some(t) = m.target() else {
        return Err(RemoteError::Unreachable("offline".into()));
    };
    let full = rel.under(&m.root());
    let found = local::stat_in(&m.root(), rel).map_err(local_err)?;
    let ignored =
        matches!(&found, Found::Some(st) if m.ignore().ignored(rel, st.kind == Kind::Dir));
    match plan::local(&found, j.as_ref(), ignored, m.spec.read_only) {
        plan::Local::Nothing => return Ok(Vec::new()),
        plan::Local::Special => {
            if m.warned_special
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(rel.clone())
            {
                tracing::warn!(path = %rel, "special file (fifo, socket or device) skipped");
            }
            return Ok(Vec::new());
        }
        plan::Local::Delete { dir } => {
            let Some(j) = j else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            // Children recorded in the journal go first.
            if dir {
                let mut kids = m.journal.paths_under(rel.as_str()).map_err(local_err)?;
                kids.retain(|k| k != rel.as_str());
                kids.sort_by_key(|k| std::cmp::Reverse(k.matches('/').count()));
                for k in kids {
                    let Ok(kr) = RelPath::new(&k) else { continue };
                    if matches!(local::stat_in(&m.root(), &kr), Ok(Found::Missing)) {
                        out.extend(Box::pin(plan_local(m, &kr)).await?);
                    }
                }
            }
            let tomb = Entry::tombstone(rel.clone(), m.node.me.uuid);
            let w = m.write_info(&tomb, Some(&j));
            out.push(Ready {
                t,
                entry: tomb,
                chunks: Vec::new(),
                w,
                st: LocalStat::missing(),
                full,
            });
            return Ok(out);
        }
        plan::Local::SettleKept => {
            if settle_kept_dir(m, rel)? {
                if let (Some(j), Ok(Found::Some(now))) = (&j, local::stat_in(&m.root(), rel)) {
                    // Still here for ignored files only: remember its stat.
                    let mut r = j.clone();
                    r.stat = now;
                    m.journal.put_async(r).await.map_err(local_err)?;
                }
                return Ok(Vec::new());
            }
        }
        plan::Local::Changed => {}
    }
    let st = match found {
        Found::Some(st) => Some(st),
        _ => None,
    };
    match plan::changed(st.as_ref(), j.as_ref(), m.spec.read_only) {
        plan::Changed::Describe => {}
        plan::Changed::RecordStat => {
            let (Some(j), Some(st)) = (j, st) else {
                return Ok(Vec::new());
            };
            let mut r = j;
            r.stat = st;
            return m
                .journal
                .put_async(r)
                .await
                .map_err(local_err)
                .map(|()| Vec::new());
        }
        plan::Changed::Revert => {
            tracing::warn!(path = %rel, "read-only mount: local change reverted");
            return revert(m, rel).await.map(|()| Vec::new());
        }
    }
    let Some(st) = st else {
        return Ok(Vec::new());
    };
    let (entry, chunks) = describe(m, rel, &st).await?;
    // Still being written (the content read may mix two states): never
    // push a torn read; it goes out once the file holds still.
    match local::stat(&full) {
        Ok(Found::Some(now)) if now == st => {}
        _ => {
            tracing::debug!(path = %rel, "changed while being read; retried");
            m.mark(rel.clone());
            return Ok(Vec::new());
        }
    }
    if let (plan::Described::RecordStat, Some(j)) = (plan::described(&entry, j.as_ref()), &j) {
        // Only the mtime (or inode) changed: nothing to send.
        let mut r = j.clone();
        r.stat = st;
        m.journal.put_async(r).await.map_err(local_err)?;
        return Ok(Vec::new());
    }
    let w = m.write_info(&entry, j.as_ref());
    tracing::debug!(path = %rel, kind = ?entry.kind, base = ?j.as_ref().map(|j| (j.entry.kind, j.entry.vv.clone(), j.stat.kind)), "local change");
    Ok(vec![Ready {
        t,
        entry,
        chunks,
        w,
        st,
        full,
    }])
}

fn set_vectors(e: &mut Entry, vv: VersionVector, w: &proto::WriteInfo) {
    // As the brick assigns them (`store::reconcile::assign_vectors`): a
    // deletion's content vector names the content it deleted.
    e.data_vv = if e.kind == Kind::Tombstone {
        w.base_data.clone()
    } else if w.content_changed {
        vv.clone()
    } else {
        w.base_data.clone()
    };
    e.meta_vv = if w.meta_changed {
        vv.clone()
    } else {
        w.base_meta.clone()
    };
    e.vv = vv;
}

#[allow(clippy::too_many_arguments)]
async fn push_entry(
    m: &Mount,
    t: &remote::Target,
    entry: Entry,
    chunks: Vec<ChunkRef>,
    w: proto::WriteInfo,
    st: LocalStat,
    full: &Path,
    changeset: Option<proto::Changeset>,
) -> Result<(), RemoteError> {
    let file = (entry.kind == Kind::File).then_some(full);
    let offer = m.offer(t, entry.clone(), chunks.clone(), w.clone());
    let (vv, conflict) = match remote::push(&m.node, t, &offer, changeset, file).await {
        Err(RemoteError::Refused(c, reason)) if c == proto::code::CONFLICT => {
            return conflict_copy(m, t, &entry.path, full, &reason).await;
        }
        other => other?,
    };
    recorded(m, (entry, chunks, w), st, Some(full), (vv, conflict)).await
}

/// Records a change the brick took (`vv` assigned, `conflict` if the path
/// is now in split-brain): its vectors, the echo to expect from the feed,
/// the journal. A file (at `file`) changed again meanwhile goes round once
/// more; a deletion is recorded as missing.
async fn recorded(
    m: &Mount,
    (entry, chunks, w): (Entry, Vec<ChunkRef>, proto::WriteInfo),
    st: LocalStat,
    file: Option<&Path>,
    (vv, conflict): (VersionVector, bool),
) -> Result<(), RemoteError> {
    // A deletion leaves no file to stat again.
    let (st, file) = if entry.kind == Kind::Tombstone {
        (LocalStat::missing(), None)
    } else {
        (st, file)
    };
    if file.is_some() {
        gsync_brick::failpoint::hit("agent-after-push");
    }
    let mut e = entry;
    set_vectors(&mut e, vv, &w);
    m.expect_echo(e.path.clone(), e.vv.clone());
    if conflict {
        tracing::warn!(path = %e.path, "concurrent change on the volume: path is in split-brain; this mount keeps its version");
    }
    let rel = e.path.clone();
    m.journal
        .put_async(Record {
            entry: e,
            chunks,
            stat: st.clone(),
            conflict,
        })
        .await
        .map_err(local_err)?;
    // Changed again while we pushed: go round once more.
    if let Some(Ok(Found::Some(now))) = file.map(local::stat) {
        if now != st {
            m.mark(rel);
        }
    }
    Ok(())
}

/// Keeps a local edit that conflicts with the volume's current version (on
/// a quorum volume) as a conflict copy beside it — `NAME.gsync-conflict-
/// YYYYMMDD-HHMMSS-HOST` — which is then synced like any new file, and puts
/// the volume's version at the original path. Nothing is lost, and the
/// bricks never hold a split-brain.
async fn conflict_copy(
    m: &Mount,
    t: &remote::Target,
    rel: &RelPath,
    full: &Path,
    reason: &str,
) -> Result<(), RemoteError> {
    let name = format!(
        "{}.gsync-conflict-{}-{}",
        rel.file_name(),
        stamp(std::time::SystemTime::now()),
        m.node.me.hostname.replace(['/', ':'], "_")
    );
    let copy_rel = match rel.parent() {
        Some(p) => RelPath::new(&format!("{p}/{name}")),
        None => RelPath::new(&name),
    }
    .map_err(local_err)?;
    std::fs::rename(full, copy_rel.under(&m.root())).map_err(local_err)?;
    tracing::warn!(path = %rel, copy = %copy_rel, "conflicting edit kept as a conflict copy: {reason}");
    m.mark(copy_rel);
    m.journal.remove(rel.as_str()).map_err(local_err)?;
    match remote::stat(&m.node, t, rel).await? {
        Some((e, chunks)) => place(m, t, &e, &chunks, None, None).await,
        None => Ok(()),
    }
}

/// `YYYYMMDD-HHMMSS` (UTC) of a time.
fn stamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Restores the volume's version of `rel` over a local edit (read-only
/// mounts) or a held deletion (`gsync revert-deletes`).
pub(crate) async fn revert(m: &Mount, rel: &RelPath) -> Result<(), RemoteError> {
    let Some(t) = m.target() else {
        return Err(RemoteError::Unreachable("offline".into()));
    };
    match remote::stat(&m.node, &t, rel).await? {
        Some((e, chunks)) => {
            keep_aside(m, rel, false);
            m.journal.remove(rel.as_str()).map_err(local_err)?;
            place(m, &t, &e, &chunks, None, None).await
        }
        None => {
            let synced = m
                .journal
                .get(rel.as_str())
                .map_err(local_err)?
                .is_some_and(|j| j.entry.kind != Kind::Tombstone);
            if synced {
                // The brick has never heard of a path this mount synced: it
                // is behind (rebuilt, not healed yet), not a deletion (that
                // would be a tombstone). Nothing to revert to: keep it.
                tracing::debug!(path = %rel, "not reverted: the brick does not know it yet");
                return Ok(());
            }
            keep_aside(m, rel, true);
            let _ = files::remove_any(&rel.under(&m.root()));
            m.journal.remove(rel.as_str()).map_err(local_err)
        }
    }
}

/// Where a read-only mount keeps the local changes it reverts: below the
/// mount's reserved `.gsync` directory, which is never synced.
pub const REVERTED_DIR: &str = ".gsync/reverted";

/// Keeps the local version of `rel` under `.gsync/reverted/SECONDS/` before
/// a revert replaces (`moved` false: copied, the revert overwrites it) or
/// removes it (`moved` true: renamed away), so an edit made in a read-only
/// mount by mistake is never lost outright.
fn keep_aside(m: &Mount, rel: &RelPath, moved: bool) {
    let full = rel.under(&m.root());
    let Ok(meta) = std::fs::symlink_metadata(&full) else {
        return;
    };
    if meta.is_dir() && !moved {
        return;
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dest = m
        .root()
        .join(REVERTED_DIR)
        .join(secs.to_string())
        .join(rel.as_str());
    let kept = dest
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            if moved {
                std::fs::rename(&full, &dest)
            } else if meta.file_type().is_symlink() {
                std::fs::read_link(&full).and_then(|t| std::os::unix::fs::symlink(t, &dest))
            } else {
                std::fs::copy(&full, &dest).map(|_| ())
            }
        });
    match kept {
        Ok(()) => {
            tracing::warn!(path = %rel, kept = %dest.display(), "read-only mount: the local version is kept aside")
        }
        Err(e) => {
            tracing::warn!(path = %rel, "read-only mount: cannot keep the local version aside: {e}")
        }
    }
}

/// Applies one remote entry. Returns the path if the local folder changed.
pub(crate) async fn apply_remote(m: &Mount, e: Entry) -> Result<Option<RelPath>, RemoteError> {
    match prepare_remote(m, e).await? {
        Prep::Nothing => Ok(None),
        Prep::Place(mut p) => {
            let staged = if p.e.kind == Kind::File {
                let full = resolve_creating_parents(m, &p.e.path).await?;
                match fetch_current(m, &mut p, &full, None).await? {
                    Some(temp) => {
                        temp.sync()?;
                        Some(temp.file)
                    }
                    None => return Ok(None),
                }
            } else {
                None
            };
            place(m, &p.t, &p.e, &p.chunks, p.old.as_ref(), staged).await?;
            Ok(Some(p.e.path))
        }
    }
}

/// A fetched temp file, its content written but maybe not yet durable.
struct Fetched {
    file: TempFile,
}

impl Fetched {
    /// Makes its content and metadata durable.
    fn sync(&self) -> Result<(), RemoteError> {
        sync_path(self.file.path())
    }
}

/// fsyncs the file at `p` (reopened: its writer is closed).
fn sync_path(p: &Path) -> Result<(), RemoteError> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(local_err)
}

/// Fetches `p`'s content into a temp file (not yet synced). When its chunk
/// list was derived from the feed entry (a small file is one chunk: its
/// whole content) and the brick no longer holds that content, a newer
/// version replaced it: the brick's current chunk list is asked for, and
/// `None` returned if the version is gone (the newer one comes later in
/// the feed).
async fn fetch_current(
    m: &Mount,
    p: &mut ToPlace,
    full: &Path,
    dir: Option<&Path>,
) -> Result<Option<Fetched>, RemoteError> {
    match fetch_temp(m, &p.t, &p.e, &p.chunks, p.old.as_ref(), full, dir).await {
        Err(RemoteError::Refused(c, _)) if p.derived && c == proto::code::NOT_FOUND => {
            match remote::stat(&m.node, &p.t, &p.e.path).await? {
                Some((cur, c)) if cur.vv == p.e.vv => {
                    p.chunks = c;
                    p.derived = false;
                    fetch_temp(m, &p.t, &p.e, &p.chunks, p.old.as_ref(), full, dir)
                        .await
                        .map(|file| Some(Fetched { file }))
                }
                _ => Ok(None),
            }
        }
        r => r.map(|file| Some(Fetched { file })),
    }
}

/// What applying a remote entry takes.
pub(crate) enum Prep {
    /// Nothing changes in the folder.
    Nothing,
    /// The version to write into the folder.
    Place(Box<ToPlace>),
}

/// A remote version to write into the folder.
pub(crate) struct ToPlace {
    t: remote::Target,
    pub(crate) e: Entry,
    chunks: Vec<ChunkRef>,
    old: Option<Record>,
    /// `chunks` was derived from the entry, not read from the brick.
    derived: bool,
    /// What the folder held at the path when this was decided (`None`:
    /// nothing): the version goes live only over that same state.
    seen: Option<LocalStat>,
}

/// A remote version staged for a burst: a file's content is already in a
/// temp file under the mount's reserved directory (durable and its intent
/// in the journal once [`settle_staged`] has run).
pub(crate) struct Staged {
    pub(crate) p: ToPlace,
    file: Option<(TempFile, LocalStat)>,
}

impl Staged {
    /// The staged content of a file (a temp file in the folder).
    pub(crate) fn content(&self) -> Option<&Path> {
        self.file.as_ref().map(|(t, _)| t.path())
    }
}

/// Stages `p`: fetches a file's content into a temp file (metadata set,
/// not yet synced: [`settle_staged`] does that for the whole set); other
/// kinds need nothing ahead. `None` if the version is gone from the brick
/// (a newer one replaced it).
pub(crate) async fn stage(m: &Mount, mut p: ToPlace) -> Result<Option<Staged>, RemoteError> {
    if p.e.kind != Kind::File {
        return Ok(Some(Staged { p, file: None }));
    }
    // Staged under the mount's reserved directory (same filesystem, never
    // synced), so a set that is rejected leaves nothing in the folder, not
    // even a new parent directory.
    let root = m.root();
    let full = p.e.path.under(&root);
    let tmp = files::tmp_dir(&root);
    let Some(temp) = fetch_current(m, &mut p, &full, Some(&tmp)).await? else {
        return Ok(None);
    };
    // Test builds: the fetch of a big file made long, to see what happens
    // meanwhile.
    if p.e.size >= 1 << 20 {
        gsync_brick::failpoint::delay("agent-slow-stage", std::time::Duration::from_secs(5)).await;
    }
    let Found::Some(st) = local::stat(temp.file.path()).map_err(local_err)? else {
        return Err(local_err(format!("{}: staged file vanished", p.e.path)));
    };
    Ok(Some(Staged {
        p,
        file: Some((temp.file, st)),
    }))
}

/// Files fsynced at once when a set is settled.
const SYNC_PARALLEL: usize = 16;

/// Makes a staged set ready to go live: every staged file is fsynced (many
/// at once, so the disk sees them together instead of one after another),
/// then the intents of all of them are written in one journal transaction
/// (write-ahead, see `persist_file`) before any is renamed into place.
pub(crate) async fn settle_staged(m: &Mount, set: &[Staged]) -> Result<(), RemoteError> {
    let paths: Vec<std::path::PathBuf> = set
        .iter()
        .filter_map(|s| s.file.as_ref().map(|(t, _)| t.path().to_path_buf()))
        .collect();
    if paths.is_empty() {
        return Ok(());
    }
    let per = paths.len().div_ceil(SYNC_PARALLEL).max(1);
    let tasks: Vec<_> = paths
        .chunks(per)
        .map(|c| {
            let c = c.to_vec();
            tokio::task::spawn_blocking(move || c.iter().try_for_each(|p| sync_path(p)))
        })
        .collect();
    for t in tasks {
        t.await.map_err(local_err)??;
    }
    let intents = set
        .iter()
        .filter_map(|s| {
            s.file.as_ref().map(|(_, st)| Record {
                entry: s.p.e.clone(),
                chunks: s.p.chunks.clone(),
                stat: st.clone(),
                conflict: false,
            })
        })
        .collect();
    m.journal
        .put_intents_async(intents)
        .await
        .map_err(local_err)
}

/// Makes a staged version live. A file is renamed into place without
/// syncing its directory, and its record is added to `done` (the caller
/// syncs the directories and records them together, right after the
/// burst); other kinds are placed and recorded at once.
pub(crate) async fn go_live(
    m: &Mount,
    s: Staged,
    done: &mut Vec<Record>,
) -> Result<RelPath, RemoteError> {
    let Staged { p, file } = s;
    match file {
        Some((temp, st)) => {
            still_as_decided(m, &p)?;
            let full = resolve_creating_parents(m, &p.e.path).await?;
            if std::fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                files::remove_any(&full).map_err(local_err)?;
            }
            temp.persist_unsynced(&full).map_err(local_err)?;
            let rel = p.e.path.clone();
            done.push(Record {
                entry: p.e,
                chunks: p.chunks,
                stat: st,
                conflict: false,
            });
            Ok(rel)
        }
        None => {
            still_as_decided(m, &p)?;
            place(m, &p.t, &p.e, &p.chunks, p.old.as_ref(), None).await?;
            Ok(p.e.path)
        }
    }
}

/// Checks, right before a version goes live, that the folder still holds
/// at its path what the decision to place it saw: a set's big files take
/// seconds to fetch, and an edit made in the folder meanwhile must never be
/// overwritten (nor a file deleted). Changed, the path is marked to be
/// pushed (with the base it was edited on) and the volume decides. A
/// directory's own changes (files added inside) do not count.
fn still_as_decided(m: &Mount, p: &ToPlace) -> Result<(), RemoteError> {
    if p.e.kind == Kind::Dir {
        return Ok(());
    }
    let now = match local::stat_in(&m.root(), &p.e.path).map_err(local_err)? {
        Found::Some(st) => Some(st),
        _ => None,
    };
    let same = match (&now, &p.seen) {
        (Some(a), Some(b)) if a.kind == Kind::Dir && b.kind == Kind::Dir => true,
        _ => now == p.seen,
    };
    if same {
        return Ok(());
    }
    m.mark(p.e.path.clone());
    Err(RemoteError::Local(format!(
        "{}: changed in the folder while its new version was on its way; the folder's version is kept and pushed",
        p.e.path
    )))
}

/// After a burst: syncs the directories of the files renamed and records
/// them.
pub(crate) async fn settle_burst(m: &Mount, done: Vec<Record>) -> Result<(), RemoteError> {
    let root = m.root();
    let dirs: std::collections::BTreeSet<RelPath> =
        done.iter().filter_map(|r| r.entry.path.parent()).collect();
    for d in &dirs {
        files::sync_parent(&d.under(&root).join("x"));
    }
    if done.iter().any(|r| r.entry.path.parent().is_none()) {
        files::sync_parent(&root.join("x"));
    }
    m.journal.put_many_async(done).await.map_err(local_err)
}

/// Decides what a remote entry changes in the folder; a local edit not
/// pushed yet is never overwritten (it is pushed, and the brick decides).
pub(crate) async fn prepare_remote(m: &Mount, e: Entry) -> Result<Prep, RemoteError> {
    let j = m
        .journal
        .get_async(e.path.as_str())
        .await
        .map_err(local_err)?;
    prepare_known(m, e, j).await
}

/// [`prepare_remote`] with the journal's record of the path at hand (a
/// set reads the records of all its paths at once).
pub(crate) async fn prepare_known(
    m: &Mount,
    e: Entry,
    mut j: Option<Record>,
) -> Result<Prep, RemoteError> {
    let rel = e.path.clone();
    if m.ignore().ignored(&rel, e.kind == Kind::Dir) {
        return Ok(Prep::Nothing);
    }
    let Some(t) = m.target() else {
        return Err(RemoteError::Unreachable("offline".into()));
    };
    match (plan::versus_synced(&e, j.as_ref()), &j) {
        (plan::Versus::Older, _) => return Ok(Prep::Nothing),
        (plan::Versus::Same, Some(j)) => {
            if m.take_echo(&rel, &e.vv) {
                return Ok(Prep::Nothing);
            }
            // Announced again without a new version: the brick may now
            // hold a concurrent sibling beside it (or no longer).
            let sb = remote::in_split_brain(&m.node, &t, &m.spec.volume, &rel)
                .await
                .unwrap_or(j.conflict);
            if sb != j.conflict {
                let mut r = j.clone();
                r.conflict = sb;
                m.journal.put_async(r).await.map_err(local_err)?;
                if sb {
                    tracing::warn!(path = %rel, "split-brain: the volume has a concurrent version; this mount keeps its own");
                }
            }
            return Ok(Prep::Nothing);
        }
        (plan::Versus::Concurrent { same_state: true }, Some(j)) => {
            let mut r = j.clone();
            r.entry.vv = r.entry.vv.merge(&e.vv);
            m.journal.put_async(r).await.map_err(local_err)?;
            return Ok(Prep::Nothing);
        }
        (plan::Versus::Concurrent { same_state: false }, Some(j)) => {
            if !j.conflict {
                let mut r = j.clone();
                r.conflict = true;
                m.journal.put_async(r).await.map_err(local_err)?;
                tracing::warn!(path = %rel, "split-brain: the volume has a concurrent version; this mount keeps its own");
            }
            // The bricks may not hold this mount's version at all (lost
            // with a wiped brick): then it is offered again.
            m.met_concurrent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(rel.as_str().to_string());
            return Ok(Prep::Nothing);
        }
        _ => {}
    }
    if let Err(x) = files::resolve(&m.root(), &rel, false) {
        if x.kind() == std::io::ErrorKind::PermissionDenied {
            // Below a local symlink: not in the folder (the link itself is
            // pushed as a link, and the brick decides).
            tracing::debug!(path = %rel, "not applied: below a local symlink");
            return Ok(Prep::Nothing);
        }
    }
    let found = local::stat_in(&m.root(), &rel).map_err(local_err)?;
    let small = match plan::versus_folder(&e, j.as_ref(), &found) {
        plan::Remote::FirstContact => {
            let Found::Some(st) = found else {
                return Ok(Prep::Nothing);
            };
            return first_contact(m, &t, e, st).await;
        }
        plan::Remote::LocalEdit => match only_stat_moved(m, &rel, j.as_ref(), &found).await? {
            // A touch, or the same content saved again: nothing of the
            // folder's is lost by placing the newer version (skipping it
            // would lose it for good: the push finds nothing to send).
            Some(r) => {
                let known = matches!(
                    plan::versus_folder(&e, Some(&r), &found),
                    plan::Remote::Place { known_chunks: true }
                );
                j = Some(r);
                known
            }
            None => {
                // A local edit not pushed yet: it goes out with its base
                // version and the brick decides (newer, or split-brain).
                // Never overwrite it.
                m.mark(rel);
                return Ok(Prep::Nothing);
            }
        },
        plan::Remote::Place { known_chunks } => known_chunks,
    };
    let chunks = if small {
        vec![ChunkRef {
            hash: e.hash,
            len: e.size as u32,
        }]
    } else if e.kind == Kind::File {
        match remote::stat(&m.node, &t, &rel).await? {
            Some((cur, c)) if cur.vv == e.vv => c,
            // A newer version exists; it comes later in the feed.
            _ => return Ok(Prep::Nothing),
        }
    } else {
        Vec::new()
    };
    Ok(Prep::Place(Box::new(ToPlace {
        t,
        e,
        chunks,
        old: j,
        derived: small,
        seen: match found {
            Found::Some(st) => Some(st),
            _ => None,
        },
    })))
}

/// The journal's record `j` with the folder's stat, if the folder's
/// version of `rel` (`found`) differs from it only by its stat (mtime,
/// inode): the same state as synced, so not an edit.
async fn only_stat_moved(
    m: &Mount,
    rel: &RelPath,
    j: Option<&Record>,
    found: &Found,
) -> Result<Option<Record>, RemoteError> {
    let (Some(j), Found::Some(st)) = (j, found) else {
        return Ok(None);
    };
    if j.entry.kind == Kind::Tombstone || j.entry.kind != st.kind {
        return Ok(None);
    }
    let (mine, _) = describe(m, rel, st).await?;
    // Read while it changed: not known to be unchanged.
    if !matches!(local::stat_in(&m.root(), rel), Ok(Found::Some(now)) if now == *st) {
        return Ok(None);
    }
    if plan::described(&mine, Some(j)) != plan::Described::RecordStat {
        return Ok(None);
    }
    let mut r = j.clone();
    r.stat = st.clone();
    Ok(Some(r))
}

/// A path present locally and on the volume with no journal record (first
/// attach, or a file created on both sides): identical content merges,
/// otherwise `--prefer` decides (the volume's version is placed like any
/// other, so it goes through the validator with its changeset), else it is
/// a split-brain.
async fn first_contact(
    m: &Mount,
    t: &remote::Target,
    e: Entry,
    st: LocalStat,
) -> Result<Prep, RemoteError> {
    let rel = e.path.clone();
    let (mine, chunks) = describe(m, &rel, &st).await?;
    if mine.same_state(&e) || (mine.kind == Kind::Dir && e.kind == Kind::Dir) {
        let mut rec = e.clone();
        rec.mtime_ns = mine.mtime_ns;
        let c = if e.kind == Kind::File {
            chunks
        } else {
            Vec::new()
        };
        m.journal
            .put_async(Record {
                entry: rec,
                chunks: c,
                stat: st,
                conflict: false,
            })
            .await
            .map_err(local_err)?;
        return Ok(Prep::Nothing);
    }
    let full = rel.under(&m.root());
    match m.prefer() {
        Some(Prefer::Remote) => {
            let chunks = match remote::stat(&m.node, t, &rel).await? {
                Some((cur, c)) if cur.vv == e.vv => c,
                _ => return Ok(Prep::Nothing),
            };
            Ok(Prep::Place(Box::new(ToPlace {
                t: t.clone(),
                e,
                chunks,
                old: None,
                derived: false,
                seen: Some(st),
            })))
        }
        Some(Prefer::Local) => {
            let base = Record {
                entry: e,
                chunks: Vec::new(),
                stat: st.clone(),
                conflict: false,
            };
            let mut w = m.write_info(&mine, Some(&base));
            w.content_changed = true;
            push_entry(m, t, mine, chunks, w, st, &full, None).await?;
            Ok(Prep::Nothing)
        }
        None => {
            // Based on nothing: concurrent with the volume's version. Unless
            // that version carries this agent's own earlier write (a crash
            // lost the journal record after the push): then the local file
            // descends from that write, and only others' changes since are
            // concurrent with it.
            let mut w = m.write_info(&mine, None);
            let own = e.vv.get(m.spec.writer);
            if own > 0 {
                w.base = VersionVector::from_entries([(m.spec.writer, own)]);
            }
            push_entry(m, t, mine, chunks, w, st, &full, None).await?;
            Ok(Prep::Nothing)
        }
    }
}

/// Writes a remote version into the folder and records it (a file's
/// content from `staged` when it was fetched ahead).
async fn place(
    m: &Mount,
    t: &remote::Target,
    e: &Entry,
    chunks: &[ChunkRef],
    old: Option<&Record>,
    staged: Option<TempFile>,
) -> Result<(), RemoteError> {
    let root = m.root();
    // Applying a deletion never creates anything: a missing parent (or one
    // that is not a directory) means there is nothing to delete.
    let full = if e.kind == Kind::Tombstone {
        match files::resolve(&root, &e.path, false) {
            Ok(p) => p,
            Err(_) => {
                m.journal
                    .put_async(Record {
                        entry: e.clone(),
                        chunks: Vec::new(),
                        stat: LocalStat::missing(),
                        conflict: false,
                    })
                    .await
                    .map_err(local_err)?;
                return Ok(());
            }
        }
    } else {
        resolve_creating_parents(m, &e.path).await?
    };
    match e.kind {
        Kind::File => {
            let temp = match staged {
                Some(temp) => temp,
                None => {
                    let temp = fetch_temp(m, t, e, chunks, old, &full, None).await?;
                    sync_path(temp.path())?;
                    temp
                }
            };
            persist_file(m, e, chunks, temp, &full).await?;
        }
        Kind::Dir => files::place_dir(&full, e.mode, e.mtime_ns).map_err(local_err)?,
        Kind::Symlink => {
            let parent = full.parent().unwrap_or(&root).to_path_buf();
            files::place_symlink(
                &parent,
                e.target.as_deref().unwrap_or(""),
                &full,
                e.mtime_ns,
            )
            .map_err(local_err)?
        }
        Kind::Tombstone => match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => {
                if std::fs::remove_dir(&full).is_err() {
                    tracing::info!(path = %e.path, "directory deleted on the volume still has local files; kept");
                }
            }
            Ok(_) => std::fs::remove_file(&full).map_err(local_err)?,
            Err(_) => {}
        },
    }
    if e.kind == Kind::Tombstone {
        remove_kept_parents(m, &e.path)?;
    }
    tracing::debug!(path = %e.path, kind = ?e.kind, vv = ?e.vv, "applied");
    let stat = match local::stat(&full).map_err(local_err)? {
        Found::Some(st) => st,
        _ => LocalStat::missing(),
    };
    m.journal
        .put_async(Record {
            entry: e.clone(),
            chunks: chunks.to_vec(),
            stat,
            conflict: false,
        })
        .await
        .map_err(local_err)?;
    Ok(())
}

/// Resolves where a remote version of `rel` goes, creating its missing
/// parent directories. Those directories exist because the volume has a
/// path below them, not because this folder made them: each is recorded
/// as a kept directory (the volume's deletion it may have had, or no known
/// version) so it is never pushed as a new local directory and goes with
/// its last path, like a deleted directory kept for its files. Without
/// this, a file that arrives before its directory (a brick may commit a
/// directory's files first) or after the directory's deletion would leave
/// a directory the folder pushes back, where it outlives an `rm -rf` as
/// "a change concurrent with the deletion".
async fn resolve_creating_parents(
    m: &Mount,
    rel: &RelPath,
) -> Result<std::path::PathBuf, RemoteError> {
    let root = m.root();
    let mut missing = Vec::new();
    let mut cur = rel.parent();
    while let Some(p) = cur {
        if !matches!(local::stat_in(&root, &p), Ok(Found::Missing)) {
            break;
        }
        cur = p.parent();
        missing.push(p);
    }
    let full = files::resolve(&root, rel, true).map_err(local_err)?;
    for p in missing.into_iter().rev() {
        let Ok(Found::Some(st)) = local::stat_in(&root, &p) else {
            continue;
        };
        let rec = match m.journal.get_async(p.as_str()).await.map_err(local_err)? {
            Some(mut r) if r.entry.kind == Kind::Tombstone => {
                r.stat = st;
                r
            }
            // Recorded as live: this folder deleted it and has not pushed
            // that yet; the record already keeps it from being new.
            Some(_) => continue,
            None => Record {
                entry: Entry::tombstone(p.clone(), m.node.me.uuid),
                chunks: Vec::new(),
                stat: st,
                conflict: false,
            },
        };
        m.journal.put_async(rec).await.map_err(local_err)?;
        tracing::debug!(path = %p, "parent directory made for a remote path");
    }
    Ok(full)
}

/// Removes `dir` if it is a kept deleted directory that is now empty,
/// recording it as gone; true if removed.
fn remove_if_kept_and_empty(m: &Mount, dir: &RelPath) -> Result<bool, RemoteError> {
    match looked_up(m, dir) {
        Some((rec, st)) => remove_kept_empty(m, dir, rec, &st),
        None => Ok(false),
    }
}

/// The journal record and the folder's stat of `c`, when both exist.
fn looked_up(m: &Mount, c: &RelPath) -> Option<(Record, LocalStat)> {
    match (m.journal.get(c.as_str()), local::stat_in(&m.root(), c)) {
        (Ok(Some(r)), Ok(Found::Some(st))) => Some((r, st)),
        _ => None,
    }
}

/// [`remove_if_kept_and_empty`] with `dir`'s record and stat at hand.
fn remove_kept_empty(
    m: &Mount,
    dir: &RelPath,
    rec: Record,
    st: &LocalStat,
) -> Result<bool, RemoteError> {
    if !plan::kept_after_deletion(&rec, st) || std::fs::remove_dir(dir.under(&m.root())).is_err() {
        return Ok(false);
    }
    let mut r = rec;
    r.stat = LocalStat::missing();
    m.journal.put(&r).map_err(local_err)?;
    tracing::info!(path = %dir, "directory deleted on the volume removed now that its files are gone");
    Ok(true)
}

/// After a deletion, the parents deleted on the volume that were kept only
/// because they held this path go too: a directory that exists only
/// because of stale state is never left behind (it would later look like
/// a new local directory).
fn remove_kept_parents(m: &Mount, rel: &RelPath) -> Result<(), RemoteError> {
    let mut cur = rel.parent();
    while let Some(p) = cur {
        if !remove_if_kept_and_empty(m, &p)? {
            break;
        }
        cur = p.parent();
    }
    Ok(())
}

/// A kept deleted directory met by a push: the kept deleted directories
/// below it are removed deepest first, then it, if nothing else is left
/// (ignored files keep it, locally). True if it holds nothing to push: it
/// exists only because of stale state and is never pushed as a new
/// directory; false if the folder put real content in it.
fn settle_kept_dir(m: &Mount, rel: &RelPath) -> Result<bool, RemoteError> {
    let root = m.root();
    let mut below: Vec<RelPath> = local::walk(&root, &rel.under(&root), &m.ignore())
        .into_iter()
        .filter(|c| c != rel)
        .collect();
    below.sort_by_key(|c| std::cmp::Reverse(c.depth()));
    let mut synced_left = false;
    for c in &below {
        // Real content below (a file, or a directory made here) unless the
        // journal accounts for it.
        let Some((rec, st)) = looked_up(m, c) else {
            return Ok(false);
        };
        let kept = plan::kept_after_deletion(&rec, &st);
        if kept && remove_kept_empty(m, c, rec.clone(), &st)? {
            continue;
        }
        if kept || synced_unchanged(&rec, &st) {
            // A path the volume gave this folder and still holds live: its
            // own deletion may simply not have arrived yet (a replay sends
            // the directory's first). Or a kept directory still holding
            // such paths (everything below it was looked at first).
            // Nothing here to push.
            synced_left = true;
            continue;
        }
        return Ok(false);
    }
    if !synced_left && remove_if_kept_and_empty(m, rel)? {
        remove_kept_parents(m, rel)?;
    }
    Ok(true)
}

/// True if the record `r` and the folder's stat `st` say a path is as the
/// journal synced it: live, the same stat (a directory: still a
/// directory; its mtime moves with its children).
fn synced_unchanged(r: &Record, st: &LocalStat) -> bool {
    match r.entry.kind {
        Kind::Tombstone => false,
        Kind::Dir => st.kind == Kind::Dir,
        _ => *st == r.stat,
    }
}

/// Fetches a file's content (reusing chunks of the old local version at
/// `full`) into a temp file in `dir` (default: beside `full`): verified,
/// metadata set, its writeback started but not waited for (the caller
/// fsyncs it before renaming it into place).
async fn fetch_temp(
    m: &Mount,
    t: &remote::Target,
    e: &Entry,
    chunks: &[ChunkRef],
    old: Option<&Record>,
    full: &Path,
    dir: Option<&Path>,
) -> Result<TempFile, RemoteError> {
    // Chunks of the old local version can be reused.
    let mut have: HashMap<[u8; 32], u64> = HashMap::new();
    if let Some(o) = old.filter(|o| o.entry.kind == Kind::File) {
        for (c, off) in o.chunks.iter().zip(chunking::offsets(&o.chunks)) {
            have.entry(c.hash).or_insert(off);
        }
    }
    let need: Vec<u32> = (0..chunks.len() as u32)
        .filter(|i| !have.contains_key(&chunks[*i as usize].hash))
        .collect();
    let mut stream = if need.is_empty() {
        None
    } else {
        Some(remote::read_chunks(&m.node, t, &e.path, e.hash, need).await?)
    };
    let parent = dir.unwrap_or_else(|| full.parent().unwrap_or(full));
    let (temp, file) = TempFile::create(parent).map_err(local_err)?;
    let cap = usize::try_from(e.size)
        .unwrap_or(usize::MAX)
        .clamp(8 << 10, 1 << 20);
    let mut out = chunking::Assembly::new(file, cap);
    let mut i = 0;
    while i < chunks.len() {
        let c = chunks[i];
        let Some(&off) = have.get(&c.hash) else {
            let Some(s) = stream.as_mut() else {
                return Err(RemoteError::Unreachable("chunk stream missing".into()));
            };
            let d = remote::next_chunk(s).await?;
            if d.len() != c.len as usize || blake3::hash(&d).as_bytes() != &c.hash {
                return Err(RemoteError::Unreachable(format!(
                    "bad chunk for {}",
                    e.path
                )));
            }
            out.add(&d).map_err(local_err)?;
            i += 1;
            continue;
        };
        // A run of chunks the old local version holds: copied on the
        // blocking pool (a small change inside a big file copies nearly
        // all of it), the old file opened once per run.
        let mut run = vec![(c, (), off)];
        let mut bytes = u64::from(c.len);
        i += 1;
        while let Some(&off) = chunks
            .get(i)
            .filter(|_| bytes < chunking::COPY_RUN)
            .and_then(|c| have.get(&c.hash))
        {
            run.push((chunks[i], (), off));
            bytes += u64::from(chunks[i].len);
            i += 1;
        }
        let old = full.to_path_buf();
        let (back, copied) = tokio::task::spawn_blocking(move || {
            let r = out.copy_held(&run, |_| std::fs::File::open(&old));
            (out, r)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        out = back;
        match copied {
            Ok(()) => {}
            Err(chunking::CopyError::Write(err)) => return Err(local_err(err)),
            Err(chunking::CopyError::Stale(_)) => {
                return Err(RemoteError::Unreachable(format!(
                    "local copy of {} changed; refetching",
                    e.path
                )))
            }
        }
    }
    let f = match out.finish(&e.hash) {
        Ok(f) => f,
        Err(chunking::Finish::Write(err)) => return Err(local_err(err)),
        Err(chunking::Finish::Mismatch) => {
            return Err(RemoteError::Unreachable(format!(
                "content of {} does not match its hash",
                e.path
            )))
        }
    };
    start_writeback(&f);
    drop(f);
    files::set_meta(temp.path(), e.mode, e.mtime_ns, e.owner).map_err(local_err)?;
    Ok(temp)
}

/// Starts writing `f`'s dirty pages to disk without waiting: the fsync
/// that follows finds them written, and the disk sees the files of a set
/// together.
fn start_writeback(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the call only schedules writeback.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Renames a fetched temp file (synced) into place, recording the intent
/// first.
async fn persist_file(
    m: &Mount,
    e: &Entry,
    chunks: &[ChunkRef],
    temp: TempFile,
    full: &Path,
) -> Result<(), RemoteError> {
    if std::fs::symlink_metadata(full).is_ok_and(|m| m.is_dir()) {
        files::remove_any(full).map_err(local_err)?;
    }
    // Write-ahead: the file about to appear (the rename keeps inode, size,
    // mode and mtime), so a crash right after the rename is recognised.
    if let Found::Some(st) = local::stat(temp.path()).map_err(local_err)? {
        m.journal
            .put_intents_async(vec![Record {
                entry: e.clone(),
                chunks: chunks.to_vec(),
                stat: st,
                conflict: false,
            }])
            .await
            .map_err(local_err)?;
    }
    temp.persist(full).map_err(local_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::stamp;

    /// The small-file shortcut describes a file exactly as the chunker
    /// does, at every size around the smallest chunk.
    #[test]
    fn small_files_are_described_as_the_chunker_does() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let min = gsync_brick::store::chunking::MIN_CHUNK as usize;
        for n in [0, 1, 2, 100, 4096, min - 1, min, min + 1, 3 * min] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + i / 251) as u8).collect();
            std::fs::write(&p, &data).unwrap();
            assert_eq!(
                super::chunk_local(&p, n as u64).unwrap(),
                gsync_brick::store::chunking::chunk_file(&p).unwrap(),
                "{n} bytes"
            );
        }
    }
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn stamps() {
        assert_eq!(stamp(UNIX_EPOCH), "19700101-000000");
        assert_eq!(
            stamp(UNIX_EPOCH + Duration::from_secs(1_732_233_600 + 3723)),
            "20241122-010203"
        );
        assert_eq!(
            stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229-000000"
        );
    }
}

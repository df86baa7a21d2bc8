//! Receiving many small versions in one request: replicated from a peer
//! brick (`Request::OfferBatch`), or a mount's local changes
//! (`Request::WriteBatch`, each with what it was written on).
//!
//! One offer per path costs a stream, a `Need` round trip and an answer
//! per file, which bounds a receiving brick to a few hundred small files a
//! second. A batch carries directories, links, deletions and files smaller
//! than the smallest chunk with their content inline, so nothing is asked
//! for. Each version is applied exactly as a single offer would be (its
//! own checks, path lock, decision, fsynced temp file, placement), many at
//! once, so their commits share the brick's group commits; the answer
//! lists one outcome per version, sent only once every version it calls
//! applied is durable. A version refused (a symlinked parent here, a full
//! disk) is refused alone: the others are applied, and the sender retries
//! that one later. Everything from the network is checked first: counts,
//! sizes, duplicate paths, and every inline content against its entry's
//! hash and chunk list.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::StreamExt;

use super::apply::{admit, commit, needs_content, refuse, validate, Admitted, OfferError};
use super::files::{self, TempFile};
use super::types::{ChunkRef, Entry, Kind};
use super::{chunking, Brick, StoreError};
use crate::wire::proto::{
    code, BatchEntry, BatchOutcome, Changeset, Response, WriteEntry, WriteInfo, MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
};

/// Versions of one batch being applied at once (their temp files are
/// written and fsynced on the blocking pool meanwhile).
const APPLY_CONCURRENCY: usize = 64;

/// One version of a batch, from a peer brick (final vectors) or from a
/// mount (`write`: vectors assigned here).
struct Inline {
    entry: Entry,
    chunks: Vec<ChunkRef>,
    changeset: Option<Changeset>,
    content: Vec<u8>,
    write: Option<WriteInfo>,
}

/// Applies a batch from brick `from_brick`; returns the answer: one
/// outcome per version, in order, or an error if the batch as a whole is
/// malformed (then nothing of it was applied).
pub async fn handle_batch(
    brick: &Arc<Brick>,
    from_brick: u64,
    entries: Vec<BatchEntry>,
) -> Response {
    let items = entries
        .into_iter()
        .map(|e| Inline {
            entry: e.entry,
            chunks: e.chunks,
            changeset: e.changeset,
            content: e.content,
            write: None,
        })
        .collect();
    apply_all(brick, Some(from_brick), items).await
}

/// Applies a mount's batch of local changes (members of `changeset`, if
/// given), each as its single offer would be: the quorum checks, vectors
/// assigned here, a conflict refused on a quorum volume.
pub async fn handle_write_batch(
    brick: &Arc<Brick>,
    changeset: Option<Changeset>,
    entries: Vec<WriteEntry>,
) -> Response {
    let items = entries
        .into_iter()
        .map(|e| Inline {
            entry: e.entry,
            chunks: e.chunks,
            changeset,
            content: e.content,
            write: Some(e.write),
        })
        .collect();
    apply_all(brick, None, items).await
}

async fn apply_all(brick: &Arc<Brick>, from_brick: Option<u64>, items: Vec<Inline>) -> Response {
    if let Err(reason) = check_batch(&items) {
        tracing::warn!(brick = %brick.root.display(), "batch refused: {reason}");
        return Response::error(code::BAD_REQUEST, reason);
    }
    let n = items.len();
    let mut out = Vec::with_capacity(n);
    let mut applying = futures_util::stream::iter(items)
        .map(|e| apply_one(brick, from_brick, e))
        .buffered(APPLY_CONCURRENCY);
    while let Some(o) = applying.next().await {
        out.push(o);
        if out.len() == n.div_ceil(2) {
            // Half of the batch durable, nothing answered yet.
            crate::failpoint::hit("batch-mid-apply");
        }
    }
    brick.pending_notify.notify_waiters();
    Response::Batch(out)
}

/// The checks on the batch as a whole: counts, total content, one version
/// per path.
fn check_batch(entries: &[Inline]) -> Result<(), String> {
    if entries.len() > MAX_BATCH_ENTRIES {
        return Err(format!(
            "{} versions in one batch (at most {MAX_BATCH_ENTRIES})",
            entries.len()
        ));
    }
    let bytes: usize = entries.iter().map(|e| e.content.len()).sum();
    if bytes > MAX_BATCH_BYTES {
        return Err(format!(
            "{bytes} content bytes in one batch (at most {MAX_BATCH_BYTES})"
        ));
    }
    let mut seen = HashSet::with_capacity(entries.len());
    if let Some(dup) = entries.iter().find(|e| !seen.insert(e.entry.path.as_str())) {
        return Err(format!("{} offered twice in one batch", dup.entry.path));
    }
    Ok(())
}

/// Applies one version of a batch; a failure is its own outcome.
async fn apply_one(brick: &Arc<Brick>, from_brick: Option<u64>, e: Inline) -> BatchOutcome {
    let path = e.entry.path.clone();
    let r = match apply_inline(brick, from_brick, e).await {
        Ok(r) => r,
        Err(OfferError::Refused(r)) => r,
        Err(OfferError::Store(e)) => {
            tracing::warn!(brick = %brick.root.display(), %path, "offer failed: {e}");
            *brick.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            Response::error(code::INTERNAL, e.to_string())
        }
        // Nothing is read from the stream for a batch entry.
        Err(OfferError::Frame(e)) => Response::error(code::INTERNAL, e.to_string()),
    };
    match r {
        Response::Applied { vv, conflict } => BatchOutcome::Applied { vv, conflict },
        Response::Error { code, reason } => BatchOutcome::Refused { code, reason },
        _ => BatchOutcome::Refused {
            code: code::INTERNAL,
            reason: "unexpected outcome".into(),
        },
    }
}

/// [`super::apply::handle_offer`] for a version whose content came
/// inline: the same checks, lock, decision and commit.
async fn apply_inline(
    brick: &Arc<Brick>,
    from_brick: Option<u64>,
    e: Inline,
) -> Result<Response, OfferError> {
    let Inline {
        entry,
        chunks,
        changeset,
        content,
        write,
    } = e;
    validate(&entry, &chunks)?;
    check_inline(&entry, &chunks, &content)?;
    let (_guard, plan, entry) = match admit(brick, &entry, write).await? {
        Admitted::Done(r) => return Ok(r),
        Admitted::Apply(g, p, e) => (g, p, e),
    };
    let needs_content = needs_content(&plan, &entry);
    let temp = if needs_content {
        let len = content.len() as u64;
        let dir = files::tmp_dir(&brick.root);
        // On the blocking pool: many of these fsync at once.
        let temp = tokio::task::spawn_blocking(move || -> std::io::Result<TempFile> {
            let (temp, mut file) = TempFile::create(&dir)?;
            file.write_all(&content)?;
            file.sync_all()?;
            Ok(temp)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        .map_err(|e| StoreError::io("write temp in", brick.root.display(), e))?;
        brick
            .counters
            .bytes_received
            .fetch_add(len, Ordering::Relaxed);
        crate::failpoint::hit("store-after-temp");
        Some(temp)
    } else {
        None
    };
    let vv = entry.vv.clone();
    let (_, conflict) = commit(brick, *plan, entry, chunks, temp, (from_brick, changeset)).await?;
    brick
        .counters
        .changes_applied
        .fetch_add(1, Ordering::Relaxed);
    Ok(Response::Applied { vv, conflict })
}

/// Whether `content` is exactly the version's content: a file smaller than
/// the smallest chunk, matching its size, hash and chunk list (nothing
/// for other kinds).
fn check_inline(entry: &Entry, chunks: &[ChunkRef], content: &[u8]) -> Result<(), OfferError> {
    if entry.kind != Kind::File {
        if !content.is_empty() {
            return Err(refuse(code::BAD_REQUEST, "inline content for a non-file"));
        }
        return Ok(());
    }
    if entry.size >= u64::from(chunking::MIN_CHUNK) || content.len() as u64 != entry.size {
        return Err(refuse(
            code::BAD_REQUEST,
            "inline content does not match the size",
        ));
    }
    if blake3::hash(content).as_bytes() != &entry.hash {
        return Err(refuse(
            code::BAD_REQUEST,
            "inline content does not match its hash",
        ));
    }
    let whole = match chunks {
        [] => content.is_empty(),
        [c] => c.hash == entry.hash && c.len as usize == content.len(),
        _ => false,
    };
    if !whole {
        return Err(refuse(
            code::BAD_REQUEST,
            "chunk list does not describe the inline content",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RelPath;

    fn file(path: &str, content: &[u8]) -> BatchEntry {
        let hash = *blake3::hash(content).as_bytes();
        BatchEntry {
            entry: Entry {
                kind: Kind::File,
                size: content.len() as u64,
                hash,
                mode: 0o644,
                ..Entry::tombstone(RelPath::new(path).unwrap(), uuid::Uuid::nil())
            },
            chunks: if content.is_empty() {
                Vec::new()
            } else {
                vec![ChunkRef {
                    hash,
                    len: content.len() as u32,
                }]
            },
            changeset: None,
            content: content.to_vec(),
        }
    }

    fn refused(r: Result<(), OfferError>) -> bool {
        matches!(
            r,
            Err(OfferError::Refused(Response::Error {
                code: code::BAD_REQUEST,
                ..
            }))
        )
    }

    #[test]
    fn inline_content_must_match_its_entry() {
        let ok = file("a", b"hello");
        assert!(check_inline(&ok.entry, &ok.chunks, &ok.content).is_ok());
        let empty = file("e", b"");
        assert!(check_inline(&empty.entry, &empty.chunks, &empty.content).is_ok());
        // Other bytes than the hash says.
        assert!(refused(check_inline(&ok.entry, &ok.chunks, b"hellO")));
        // Shorter or longer than the size.
        assert!(refused(check_inline(&ok.entry, &ok.chunks, b"hell")));
        // A chunk list naming other content.
        let mut bad = ok.chunks.clone();
        bad[0].hash = [9; 32];
        assert!(refused(check_inline(&ok.entry, &bad, &ok.content)));
        assert!(refused(check_inline(&ok.entry, &[], &ok.content)));
        // Too big to travel inline.
        let big = vec![7u8; chunking::MIN_CHUNK as usize];
        let b = file("big", &big);
        assert!(refused(check_inline(&b.entry, &b.chunks, &b.content)));
        // Content for a directory.
        let mut d = file("d", b"");
        d.entry.kind = Kind::Dir;
        assert!(check_inline(&d.entry, &[], &[]).is_ok());
        assert!(refused(check_inline(&d.entry, &[], b"x")));
    }

    fn check(v: &[BatchEntry]) -> Result<(), String> {
        let items: Vec<Inline> = v
            .iter()
            .map(|e| Inline {
                entry: e.entry.clone(),
                chunks: e.chunks.clone(),
                changeset: None,
                content: e.content.clone(),
                write: None,
            })
            .collect();
        check_batch(&items)
    }

    #[test]
    fn malformed_batches_are_refused_whole() {
        assert!(check(&[]).is_ok());
        let many: Vec<_> = (0..=MAX_BATCH_ENTRIES)
            .map(|i| file(&format!("f{i}"), b"x"))
            .collect();
        assert!(check(&many[..MAX_BATCH_ENTRIES]).is_ok());
        assert!(check(&many).is_err());
        let twice = vec![file("same", b"1"), file("same", b"2")];
        assert!(check(&twice).unwrap_err().contains("twice"));
        let fat: Vec<_> = (0..80)
            .map(|i| file(&format!("f{i}"), &vec![1u8; 16_000]))
            .collect();
        assert!(check(&fat).unwrap_err().contains("content bytes"));
    }
}

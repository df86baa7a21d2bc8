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
//! that one later. Every inline content is checked against its entry's
//! hash and chunk list first, and two versions of one path refuse the
//! batch (the brick service checks a batch's counts and size when it is
//! read).

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::StreamExt;

use super::apply::{
    admit, commit, failed, needs_content, validate, Admitted, Applied, OfferError, Offered, Refusal,
};
use super::files::{self, TempFile};
use super::types::{ChunkRef, Entry, Kind};
use super::{chunking, Brick, StoreError};

/// Versions of one batch being applied at once (their temp files are
/// written and fsynced on the blocking pool meanwhile).
const APPLY_CONCURRENCY: usize = 64;

/// One version of a batch, offered as a single one would be (its chunk
/// list: none, or one chunk holding the whole content), with its whole
/// content inline.
#[derive(Debug, Clone)]
pub struct Inline {
    /// The version and where it comes from.
    pub version: Offered,
    /// The whole content of a file (empty for other kinds).
    pub content: Vec<u8>,
}

/// No version is ever pulled from a stream in a batch.
enum NoSource {}

/// Applies a batch of versions, each as its single offer would be: its
/// checks, path lock, decision and commit. One outcome per version, in
/// order, once every version applied is durable; an error, and nothing
/// applied, if the batch names a path twice.
pub async fn apply_batch(
    brick: &Arc<Brick>,
    items: Vec<Inline>,
) -> Result<Vec<Result<Applied, Refusal>>, String> {
    if let Err(reason) = check_batch(&items) {
        tracing::warn!(brick = %brick.root.display(), "batch refused: {reason}");
        return Err(reason);
    }
    let n = items.len();
    let mut out = Vec::with_capacity(n);
    let mut applying = futures_util::stream::iter(items)
        .map(|e| apply_one(brick, e))
        .buffered(APPLY_CONCURRENCY);
    while let Some(o) = applying.next().await {
        out.push(o);
        if out.len() == n.div_ceil(2) {
            // Half of the batch durable, nothing answered yet.
            crate::failpoint::hit("batch-mid-apply");
        }
    }
    brick.pending_notify.notify_waiters();
    Ok(out)
}

/// One version per path in a batch.
fn check_batch(entries: &[Inline]) -> Result<(), String> {
    let mut seen = HashSet::with_capacity(entries.len());
    if let Some(dup) = entries
        .iter()
        .map(|e| &e.version.entry.path)
        .find(|p| !seen.insert(p.as_str()))
    {
        return Err(format!("{dup} offered twice in one batch"));
    }
    Ok(())
}

/// Applies one version of a batch; a failure is its own outcome.
async fn apply_one(brick: &Arc<Brick>, e: Inline) -> Result<Applied, Refusal> {
    match apply_inline(brick, e).await {
        Ok(a) => Ok(a),
        Err(OfferError::Refused(r)) => Err(r),
        Err(OfferError::Store(e)) => Err(failed(brick, e)),
        Err(OfferError::Source(never)) => match never {},
    }
}

/// [`super::apply::receive_offer`] for a version whose content came
/// inline: the same checks, lock, decision and commit.
async fn apply_inline(brick: &Arc<Brick>, e: Inline) -> Result<Applied, OfferError<NoSource>> {
    let Inline {
        version:
            Offered {
                entry,
                chunks,
                write,
                from_brick,
                changeset,
            },
        content,
    } = e;
    validate(&entry, &chunks)?;
    check_inline(&entry, &chunks, &content)?;
    let (_guard, plan, entry) = match admit(brick, &entry, write).await? {
        Admitted::Done(a) => return Ok(a),
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
    Ok(Applied { vv, conflict })
}

/// Whether `content` is exactly the version's content: a file smaller than
/// the smallest chunk, matching its size, hash and chunk list (nothing
/// for other kinds).
fn check_inline(entry: &Entry, chunks: &[ChunkRef], content: &[u8]) -> Result<(), Refusal> {
    let invalid = |why: &str| Err(Refusal::Invalid(why.to_string()));
    if entry.kind != Kind::File {
        if !content.is_empty() {
            return invalid("inline content for a non-file");
        }
        return Ok(());
    }
    if entry.size >= u64::from(chunking::MIN_CHUNK) || content.len() as u64 != entry.size {
        return invalid("inline content does not match the size");
    }
    if blake3::hash(content).as_bytes() != &entry.hash {
        return invalid("inline content does not match its hash");
    }
    let whole = match chunks {
        [] => content.is_empty(),
        [c] => c.hash == entry.hash && c.len as usize == content.len(),
        _ => false,
    };
    if !whole {
        return invalid("chunk list does not describe the inline content");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RelPath;

    fn file(path: &str, content: &[u8]) -> Inline {
        let hash = *blake3::hash(content).as_bytes();
        let version = Offered {
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
            write: None,
            from_brick: None,
            changeset: None,
        };
        Inline {
            version,
            content: content.to_vec(),
        }
    }

    fn refused(r: Result<(), Refusal>) -> bool {
        matches!(r, Err(Refusal::Invalid(_)))
    }

    #[test]
    fn inline_content_must_match_its_entry() {
        let ok = file("a", b"hello");
        assert!(check_inline(&ok.version.entry, &ok.version.chunks, &ok.content).is_ok());
        let empty = file("e", b"");
        assert!(check_inline(&empty.version.entry, &empty.version.chunks, &empty.content).is_ok());
        // Other bytes than the hash says.
        assert!(refused(check_inline(
            &ok.version.entry,
            &ok.version.chunks,
            b"hellO"
        )));
        // Shorter or longer than the size.
        assert!(refused(check_inline(
            &ok.version.entry,
            &ok.version.chunks,
            b"hell"
        )));
        // A chunk list naming other content.
        let mut bad = ok.version.chunks.clone();
        bad[0].hash = [9; 32];
        assert!(refused(check_inline(&ok.version.entry, &bad, &ok.content)));
        assert!(refused(check_inline(&ok.version.entry, &[], &ok.content)));
        // Too big to travel inline.
        let big = vec![7u8; chunking::MIN_CHUNK as usize];
        let b = file("big", &big);
        assert!(refused(check_inline(
            &b.version.entry,
            &b.version.chunks,
            &b.content
        )));
        // Content for a directory.
        let mut d = file("d", b"");
        d.version.entry.kind = Kind::Dir;
        assert!(check_inline(&d.version.entry, &[], &[]).is_ok());
        assert!(refused(check_inline(&d.version.entry, &[], b"x")));
    }

    #[test]
    fn a_batch_naming_a_path_twice_is_refused_whole() {
        assert!(check_batch(&[]).is_ok());
        assert!(check_batch(&[file("a", b"1"), file("b", b"2")]).is_ok());
        let twice = vec![file("same", b"1"), file("same", b"2")];
        assert!(check_batch(&twice).unwrap_err().contains("twice"));
    }
}

//! Offers on the wire: the edge between the brick protocol's messages and
//! frames and the store's own terms. An [`Offer`] read from a stream
//! becomes a `store::apply::Offered`, the store's `Need` question and the
//! chunks it reads are frames on that stream, and what became of the
//! version (`Applied` or a `Refusal`) is the answer; a batch's entries
//! become `store::batch::Inline` versions after the checks on the batch
//! as a whole.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::store::apply::{self, Applied, OfferSource, Offered, Refusal};
use crate::store::batch::{self, Inline};
use crate::store::Brick;
use crate::wire::frame::{self, FrameError};
use crate::wire::proto::{
    code, BatchEntry, BatchOutcome, Changeset, Offer, Response, WriteEntry, MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
};

/// Longest wait for the next chunk frame of an offer: a sender that stalls
/// longer loses the transfer (and its temp file) and retries later.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(120);

/// The wire code a refusal travels with.
pub fn refusal_code(r: &Refusal) -> u16 {
    match r {
        Refusal::Invalid(_) => code::BAD_REQUEST,
        Refusal::NoQuorum(_) => code::NO_QUORUM,
        Refusal::Conflict(_) => code::CONFLICT,
        Refusal::OthersFirst(_) => code::REFUSED,
        Refusal::Failed(_) => code::INTERNAL,
    }
}

/// The answer to a single offer.
pub fn response(r: Result<Applied, Refusal>) -> Response {
    match r {
        Ok(Applied { vv, conflict }) => Response::Applied { vv, conflict },
        Err(r) => Response::error(refusal_code(&r), r.to_string()),
    }
}

/// The outcome of one version of a batch.
pub fn outcome(r: Result<Applied, Refusal>) -> BatchOutcome {
    match r {
        Ok(Applied { vv, conflict }) => BatchOutcome::Applied { vv, conflict },
        Err(r) => BatchOutcome::Refused {
            code: refusal_code(&r),
            reason: r.to_string(),
        },
    }
}

/// The sender of an offer at the other end of its stream: the chunks the
/// brick lacks are asked for with a `Need` answer and come back as raw
/// frames.
struct StreamSource<'a, W, R> {
    send: &'a mut W,
    recv: &'a mut R,
}

impl<W, R> OfferSource for StreamSource<'_, W, R>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    type Error = FrameError;

    async fn ask(&mut self, need: Vec<u32>) -> Result<(), FrameError> {
        frame::write_msg(self.send, &Response::Need(need)).await
    }

    async fn next_chunk(&mut self) -> Result<Vec<u8>, FrameError> {
        tokio::time::timeout(CHUNK_TIMEOUT, frame::read_raw(self.recv))
            .await
            .map_err(|_| FrameError::Io(std::io::ErrorKind::TimedOut.into()))?
    }
}

/// Serves an offer on its stream (the request was already read): the
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
    let offered = Offered {
        entry: offer.entry,
        chunks: offer.chunks,
        write: offer.write,
        from_brick: offer.from_brick,
        changeset,
    };
    let mut src = StreamSource {
        send: &mut *send,
        recv,
    };
    let resp = match apply::receive_offer(brick, offered, &mut src).await {
        Ok(r) => response(r),
        Err(e) => {
            // A sender that vanished mid-transfer is routine; a frame that
            // breaks the protocol is hostile or buggy and worth a warning.
            if matches!(e, FrameError::TooLarge { .. } | FrameError::Codec(_)) {
                tracing::warn!(brick = %brick.root.display(), "offer refused: {e}");
                let _ = frame::write_msg(send, &Response::error(code::BAD_REQUEST, e.to_string()))
                    .await;
            }
            return Err(e);
        }
    };
    frame::write_msg(send, &resp).await
}

/// The checks on a batch as read from the wire: how many versions, how
/// much content.
fn check_size(count: usize, bytes: usize) -> Result<(), String> {
    if count > MAX_BATCH_ENTRIES {
        return Err(format!(
            "{count} versions in one batch (at most {MAX_BATCH_ENTRIES})"
        ));
    }
    if bytes > MAX_BATCH_BYTES {
        return Err(format!(
            "{bytes} content bytes in one batch (at most {MAX_BATCH_BYTES})"
        ));
    }
    Ok(())
}

/// Applies versions of a batch; the answer, or why the whole batch was
/// refused (then nothing of it was applied).
pub async fn apply(brick: &Arc<Brick>, items: Vec<Inline>) -> Result<Vec<BatchOutcome>, String> {
    let bytes = items.iter().map(|e| e.content.len()).sum();
    if let Err(reason) = check_size(items.len(), bytes) {
        tracing::warn!(brick = %brick.root.display(), "batch refused: {reason}");
        return Err(reason);
    }
    let out = batch::apply_batch(brick, items).await?;
    Ok(out.into_iter().map(outcome).collect())
}

/// A batch of versions replicated from brick `from_brick`.
pub async fn offer_batch(
    brick: &Arc<Brick>,
    from_brick: u64,
    entries: Vec<BatchEntry>,
) -> Response {
    let items = entries
        .into_iter()
        .map(|e| Inline {
            version: Offered {
                entry: e.entry,
                chunks: e.chunks,
                write: None,
                from_brick: Some(from_brick),
                changeset: e.changeset,
            },
            content: e.content,
        })
        .collect();
    batch_response(apply(brick, items).await)
}

/// A mount's batch of local changes (members of `changeset`, if given) as
/// store versions to apply.
pub fn writes(changeset: Option<Changeset>, entries: Vec<WriteEntry>) -> Vec<Inline> {
    entries
        .into_iter()
        .map(|e| Inline {
            version: Offered {
                entry: e.entry,
                chunks: e.chunks,
                write: Some(e.write),
                from_brick: None,
                changeset,
            },
            content: e.content,
        })
        .collect()
}

/// The answer to a batch.
pub fn batch_response(r: Result<Vec<BatchOutcome>, String>) -> Response {
    match r {
        Ok(o) => Response::Batch(o),
        Err(reason) => Response::error(code::BAD_REQUEST, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_batches_are_refused_whole() {
        assert!(check_size(0, 0).is_ok());
        assert!(check_size(MAX_BATCH_ENTRIES, MAX_BATCH_BYTES).is_ok());
        assert!(check_size(MAX_BATCH_ENTRIES + 1, 0)
            .unwrap_err()
            .contains("versions"));
        assert!(check_size(1, MAX_BATCH_BYTES + 1)
            .unwrap_err()
            .contains("content bytes"));
    }

    #[test]
    fn each_refusal_keeps_its_wire_code() {
        let cases = [
            (Refusal::Invalid("x".into()), code::BAD_REQUEST),
            (Refusal::NoQuorum("x".into()), code::NO_QUORUM),
            (Refusal::Conflict("x".into()), code::CONFLICT),
            (Refusal::OthersFirst("x".into()), code::REFUSED),
            (Refusal::Failed("x".into()), code::INTERNAL),
        ];
        for (r, c) in cases {
            assert_eq!(refusal_code(&r), c, "{r:?}");
            match outcome(Err(r.clone())) {
                BatchOutcome::Refused { code, reason } => {
                    assert_eq!((code, reason.as_str()), (c, "x"));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

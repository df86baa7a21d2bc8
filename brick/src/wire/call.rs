//! Requests paired with their answers in the type system.
//!
//! Every request answered by one message implements [`Call`]: its payload
//! names the type of its reply and picks it out of a [`Response`]. A
//! caller writes `peers.ask(node, proto::Stat { .. })` and gets the
//! brick's entry and chunks, never a `Response` to match by hand with a
//! fallback arm for "unexpected answer". Requests answered over a stream
//! in several messages (an offer's `Need` then `Applied`, a chunk read's
//! raw frames) stay with the code that drives their stream.
//!
//! The pairing adds nothing to the bytes: a payload becomes its
//! [`Request`] variant, a reply is read from the variant its request is
//! answered with (`tests/wire_golden.rs` pins both).

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::frame::{self, FrameError};
use super::proto::{
    BatchOutcome, BrickDisks, BrickStatus, Changeset, Digests, Feed, FeedInSets, Heal, HealInfo,
    Hello, History, OfferBatch, PrepareBrick, Request, ResetBrick, Response, SplitBrain, Stat,
    Versions, WriteBatch,
};
use super::vv::VersionVector;
use crate::store::types::{ChunkRef, Entry};

/// A request answered by one message.
pub trait Call: Send + 'static {
    /// What a successful answer carries.
    type Reply: Send + 'static;
    /// Short name, for "unexpected answer" errors.
    const NAME: &'static str;
    /// The request on the wire.
    fn into_request(self) -> Request;
    /// The reply in `resp`, or `resp` back if it is not this request's
    /// answer (an error answer is handled before, by [`reply`]).
    fn reply(resp: Response) -> Result<Self::Reply, Response>;
}

/// Why an answer is not the reply to a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The receiver refused or failed ([`Response::Error`]).
    #[error("{reason}")]
    Refused {
        /// One of `proto::code`.
        code: u16,
        /// Short human-readable reason.
        reason: String,
    },
    /// Another message than this request's answer.
    #[error("unexpected answer to a {0} request")]
    Unexpected(&'static str),
}

/// The reply to request `C` in `resp`.
pub fn reply<C: Call>(resp: Response) -> Result<C::Reply, AnswerError> {
    match resp {
        Response::Error { code, reason } => Err(AnswerError::Refused { code, reason }),
        r => C::reply(r).map_err(|_| AnswerError::Unexpected(C::NAME)),
    }
}

/// A message of the pool's consensus group (see [`Request::Raft`]).
#[derive(Debug, Clone)]
pub struct Raft(pub Vec<u8>);

/// A page of a brick's change feed with the changeset tags of its entries
/// (the answer to [`FeedInSets`]).
#[derive(Debug, Clone)]
pub struct TaggedPage {
    /// Changed entries, in sequence order.
    pub entries: Vec<(u64, Entry)>,
    /// The brick's current sequence.
    pub seq: u64,
    /// The brick store's incarnation (see [`Response::Feed`]).
    pub incarnation: u64,
    /// The changeset of entries that belong to one: (index into
    /// `entries`, tag).
    pub changesets: Vec<(u32, Changeset)>,
}

/// A page of a brick's change feed (the answer to [`Feed`]).
#[derive(Debug, Clone)]
pub struct Page {
    /// Changed entries, in sequence order.
    pub entries: Vec<(u64, Entry)>,
    /// The brick's current sequence.
    pub seq: u64,
    /// The brick store's incarnation (see [`Response::Feed`]).
    pub incarnation: u64,
}

/// Declares the pairing of request payloads with the response variant
/// that answers them.
macro_rules! calls {
    ($($req:ident as $name:literal => $reply:ty { $pat:pat => $val:expr }),* $(,)?) => {$(
        impl Call for $req {
            type Reply = $reply;
            const NAME: &'static str = $name;
            fn into_request(self) -> Request {
                Request::$req(self)
            }
            fn reply(resp: Response) -> Result<$reply, Response> {
                match resp {
                    $pat => Ok($val),
                    other => Err(other),
                }
            }
        }
    )*};
}

calls! {
    Hello as "hello" => Hello { Response::Hello(h) => h },
    BrickStatus as "brick status" => Vec<crate::status::BrickStatus> {
        Response::BrickStatus(s) => s
    },
    Stat as "stat" => Option<(Entry, Vec<ChunkRef>)> { Response::Stat(s) => s.map(|b| *b) },
    HealInfo as "heal info" => Vec<crate::heal_types::BrickHealInfo> {
        Response::HealInfo(h) => h
    },
    Heal as "heal" => () { Response::Ok => () },
    PrepareBrick as "prepare brick" => () { Response::Ok => () },
    SplitBrain as "split-brain" => Vec<crate::heal_types::SplitBrainVersions> {
        Response::SplitBrain(v) => v
    },
    Digests as "digests" => Vec<crate::store::digest::ChildDigest> {
        Response::Digests(d) => d
    },
    ResetBrick as "reset brick" => () { Response::Ok => () },
    Feed as "feed" => Page {
        Response::Feed { entries, seq, incarnation } => Page { entries, seq, incarnation }
    },
    Versions as "versions" => Vec<Option<VersionVector>> { Response::Versions(v) => v },
    History as "history" => Vec<crate::status::BrickHistory> { Response::History(h) => h },
    BrickDisks as "brick disks" => Vec<(u64, crate::status::DiskInfo)> {
        Response::BrickDisks(d) => d
    },
    FeedInSets as "feed" => TaggedPage {
        Response::FeedInSets { entries, seq, incarnation, changesets } => TaggedPage {
            entries,
            seq,
            incarnation,
            changesets,
        }
    },
    OfferBatch as "batch" => Vec<BatchOutcome> { Response::Batch(o) => o },
    WriteBatch as "batch" => Vec<BatchOutcome> { Response::Batch(o) => o },
}

impl Call for Raft {
    type Reply = Vec<u8>;
    const NAME: &'static str = "consensus";
    fn into_request(self) -> Request {
        Request::Raft(self.0)
    }
    fn reply(resp: Response) -> Result<Vec<u8>, Response> {
        match resp {
            Response::Raft(b) => Ok(b),
            other => Err(other),
        }
    }
}

impl Call for super::proto::Probe {
    type Reply = (crate::pool::Member, Box<crate::pool::PoolConfig>);
    const NAME: &'static str = "probe";
    fn into_request(self) -> Request {
        Request::Probe(Box::new(self))
    }
    fn reply(resp: Response) -> Result<Self::Reply, Response> {
        match resp {
            Response::ProbeAccepted { member, config } => Ok((member, config)),
            other => Err(other),
        }
    }
}

/// Asks for the pool document (see [`Request::PullConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct PullConfig;

impl Call for PullConfig {
    type Reply = Box<crate::pool::PoolConfig>;
    const NAME: &'static str = "pool document";
    fn into_request(self) -> Request {
        Request::PullConfig
    }
    fn reply(resp: Response) -> Result<Self::Reply, Response> {
        match resp {
            Response::Config(c) => Ok(c),
            other => Err(other),
        }
    }
}

/// Sends `c` on a request stream, closes the sending half and reads the
/// answer: the reply, or why the answer is not one (the outer error: the
/// stream broke).
pub async fn over<C, W, R>(
    w: &mut W,
    r: &mut R,
    c: C,
) -> Result<Result<C::Reply, AnswerError>, FrameError>
where
    C: Call,
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    frame::write_msg(w, &c.into_request()).await?;
    let _ = w.shutdown().await;
    Ok(reply::<C>(frame::read_msg(r).await?))
}

/// A batch's outcomes, checked to be one per version sent.
pub fn outcomes(
    sent: usize,
    got: Result<Vec<BatchOutcome>, AnswerError>,
) -> Result<Vec<BatchOutcome>, AnswerError> {
    match got {
        Ok(o) if o.len() == sent => Ok(o),
        Ok(_) => Err(AnswerError::Unexpected("batch")),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::code;

    #[test]
    fn a_reply_is_taken_only_from_its_own_answer() {
        let stat = Response::Stat(None);
        assert!(matches!(reply::<Stat>(stat), Ok(None)));
        assert_eq!(
            reply::<Stat>(Response::Ok).unwrap_err(),
            AnswerError::Unexpected("stat")
        );
        assert_eq!(
            reply::<Heal>(Response::error(code::NOT_FOUND, "no such volume")).unwrap_err(),
            AnswerError::Refused {
                code: code::NOT_FOUND,
                reason: "no such volume".into()
            }
        );
        assert!(reply::<Heal>(Response::Ok).is_ok());
        assert!(reply::<Versions>(Response::Versions(vec![None])).is_ok());
        assert!(reply::<OfferBatch>(Response::Versions(vec![None])).is_err());
    }

    #[test]
    fn a_batch_answer_must_have_one_outcome_per_version() {
        let one = || {
            Ok(vec![BatchOutcome::Refused {
                code: 1,
                reason: String::new(),
            }])
        };
        assert!(outcomes(1, one()).is_ok());
        assert!(outcomes(2, one()).is_err());
    }
}

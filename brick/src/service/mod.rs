//! The brick requests a host serves to peers and sync agents: offers
//! (one path, or a batch of small versions from a peer brick), chunk
//! reads, change feeds, stats, status and heal data.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use uuid::Uuid;

use crate::host::{Ask, Host};
use crate::status::BrickStatus;
use crate::store::{chunking, Brick};
use crate::wire::frame::{self, FrameError};
use crate::wire::proto::{self, code, Request, Response};

pub mod auth;
pub mod heal;
pub mod offer;

/// Most entries per change-feed answer.
const MAX_CHANGES: u32 = 2000;
/// Longest a change-feed request may wait.
const MAX_WAIT_MS: u32 = 30_000;
/// Longest path list in a heal report per brick.
pub const HEAL_LIST_LIMIT: usize = 10_000;

fn brick_of(host: &dyn Host, volume: Uuid, brick: u64) -> Result<Arc<Brick>, Response> {
    match host.local_brick(brick) {
        Some(b) if b.volume == volume => Ok(b),
        _ => Err(Response::error(code::NOT_FOUND, "brick not served here")),
    }
}

/// Status rows of the local bricks of `volume`.
pub fn status(host: &dyn Host, volume: &str) -> Vec<BrickStatus> {
    let (pid, port) = host.pid_port();
    let Some(v) = host.config().volume(volume).cloned() else {
        return Vec::new();
    };
    v.bricks
        .iter()
        .filter(|b| b.node == host.me())
        .map(|b| match host.local_brick(b.id) {
            Some(brick) => BrickStatus {
                brick: b.id,
                online: true,
                pid,
                port,
                counters: brick.counters(),
                entries: brick.entry_count(),
                seq: brick.seq(),
                offline_reason: None,
            },
            None => BrickStatus {
                brick: b.id,
                online: false,
                pid,
                port,
                counters: Default::default(),
                entries: 0,
                seq: 0,
                offline_reason: host.unserved_reason(b.id),
            },
        })
        .collect()
}

/// Serves one brick request on a stream (QUIC or in-process). A change
/// feed waiting (up to 30 s) for a change ends at once when the node
/// shuts down, so a stop never waits on it; other requests (an offer
/// being placed) are left to finish.
pub async fn handle<W, R>(
    host: &Arc<dyn Host>,
    peer: Uuid,
    req: Request,
    send: &mut W,
    recv: &mut R,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    let long_poll = matches!(
        req,
        Request::Changes(proto::Changes { .. })
            | Request::Feed(proto::Feed { .. })
            | Request::FeedInSets(proto::FeedInSets { .. })
    );
    if !long_poll {
        return serve(host, peer, req, send, recv).await;
    }
    let token = host.token();
    tokio::select! {
        r = serve(host, peer, req, send, recv) => r,
        _ = token.cancelled() => Ok(()),
    }
}

async fn serve<W, R>(
    host: &Arc<dyn Host>,
    peer: Uuid,
    req: Request,
    send: &mut W,
    recv: &mut R,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    if let Some(refusal) = auth::check(host.as_ref(), peer, &req) {
        return frame::write_msg(send, &refusal).await;
    }
    let resp = match req {
        Request::BrickStatus(proto::BrickStatus { volume }) => {
            Response::BrickStatus(status(host.as_ref(), &volume))
        }
        Request::Offer(offer) => return offer_to(host, offer, None, send, recv).await,
        Request::OfferInSet(proto::OfferInSet { offer, changeset }) => {
            return offer_to(host, offer, Some(changeset), send, recv).await
        }
        Request::OfferBatch(proto::OfferBatch {
            volume,
            brick,
            from_brick,
            entries,
        }) => match brick_of(host.as_ref(), volume, brick) {
            Ok(b) => offer::offer_batch(&b, from_brick, entries).await,
            Err(r) => r,
        },
        Request::WriteBatch(proto::WriteBatch {
            volume,
            brick,
            changeset,
            entries,
        }) => match brick_of(host.as_ref(), volume, brick) {
            Ok(b) => write_batch(host, &b, changeset, entries).await,
            Err(r) => r,
        },
        Request::FeedInSets(proto::FeedInSets {
            volume,
            brick,
            since,
            wait_ms,
            limit,
        }) => match brick_of(host.as_ref(), volume, brick) {
            Ok(b) => {
                feed_in_sets(
                    &b,
                    since,
                    wait_ms.min(MAX_WAIT_MS),
                    limit.clamp(1, MAX_CHANGES),
                )
                .await
            }
            Err(r) => r,
        },
        Request::ReadChunks(proto::ReadChunks {
            volume,
            brick,
            path,
            hash,
            chunks,
        }) => match brick_of(host.as_ref(), volume, brick) {
            Ok(b) => return read_chunks(&b, path, hash, chunks, send).await,
            Err(r) => r,
        },
        Request::Changes(proto::Changes {
            volume,
            brick,
            since,
            wait_ms,
            limit,
        }) => match brick_of(host.as_ref(), volume, brick) {
            Ok(b) => {
                changes(
                    &b,
                    since,
                    wait_ms.min(MAX_WAIT_MS),
                    limit.clamp(1, MAX_CHANGES),
                )
                .await
            }
            Err(r) => r,
        },
        Request::Feed(proto::Feed {
            volume,
            brick,
            since,
            wait_ms,
            limit,
        }) => match brick_of(host.as_ref(), volume, brick) {
            Ok(b) => {
                match changes(
                    &b,
                    since,
                    wait_ms.min(MAX_WAIT_MS),
                    limit.clamp(1, MAX_CHANGES),
                )
                .await
                {
                    Response::Changes { entries, seq } => {
                        match b.with_db(|_, c| crate::store::schema::incarnation(c)).await {
                            Ok(incarnation) => Response::Feed {
                                entries,
                                seq,
                                incarnation,
                            },
                            Err(e) => Response::error(code::INTERNAL, e.to_string()),
                        }
                    }
                    other => other,
                }
            }
            Err(r) => r,
        },
        Request::Stat(proto::Stat {
            volume,
            brick,
            path,
        }) => match brick_of(host.as_ref(), volume, brick) {
            Ok(b) => match b.with_db(move |_, conn| Brick::load(conn, &path)).await {
                Ok(x) => Response::Stat(x.map(Box::new)),
                Err(e) => Response::error(code::INTERNAL, e.to_string()),
            },
            Err(r) => r,
        },
        Request::HealInfo(proto::HealInfo { volume }) => {
            let Some(v) = host.config().volume(&volume).cloned() else {
                return frame::write_msg(send, &Response::error(code::NOT_FOUND, "no such volume"))
                    .await;
            };
            Response::HealInfo(heal::heal_info_local(host.as_ref(), &v).await)
        }
        Request::Digests(proto::Digests { volume, brick, dir }) => {
            match brick_of(host.as_ref(), volume, brick) {
                Ok(b) => match b
                    .with_db(move |_, c| crate::store::digest::children(c, &dir))
                    .await
                {
                    Ok(d) => Response::Digests(d),
                    Err(e) => Response::error(code::INTERNAL, e.to_string()),
                },
                Err(r) => r,
            }
        }
        Request::SplitBrain(proto::SplitBrain { volume, path }) => {
            let Some(v) = host.config().volume(&volume).cloned() else {
                return frame::write_msg(send, &Response::error(code::NOT_FOUND, "no such volume"))
                    .await;
            };
            let mut out = Vec::new();
            for b in host.local_bricks(v.id) {
                let p = path.clone();
                match b.with_db(move |br, c| br.versions(c, &p)).await {
                    Ok(x) => out.push(x),
                    Err(e) => {
                        return frame::write_msg(
                            send,
                            &Response::error(code::INTERNAL, e.to_string()),
                        )
                        .await
                    }
                }
            }
            Response::SplitBrain(out)
        }
        Request::Versions(proto::Versions {
            volume,
            brick,
            paths,
        }) if paths.len() <= proto::MAX_VERSION_PATHS => {
            match brick_of(host.as_ref(), volume, brick) {
                Ok(b) => match b
                    .with_db(move |_, c| -> Result<Vec<_>, crate::store::StoreError> {
                        paths
                            .iter()
                            .map(|p| Ok(Brick::load(c, p)?.map(|(e, _)| e.vv)))
                            .collect()
                    })
                    .await
                {
                    Ok(v) => Response::Versions(v),
                    Err(e) => Response::error(code::INTERNAL, e.to_string()),
                },
                Err(r) => r,
            }
        }
        Request::History(proto::History { volume }) => {
            let Some(v) = host.config().volume(&volume).cloned() else {
                return frame::write_msg(send, &Response::error(code::NOT_FOUND, "no such volume"))
                    .await;
            };
            let mut out = Vec::new();
            for b in host.local_bricks(v.id) {
                let id = b.id;
                match b
                    .with_db(move |_, c| crate::store::outages::history(c, id))
                    .await
                {
                    Ok(h) => out.push(h),
                    Err(e) => {
                        return frame::write_msg(
                            send,
                            &Response::error(code::INTERNAL, e.to_string()),
                        )
                        .await
                    }
                }
            }
            Response::History(out)
        }
        Request::Heal(proto::Heal { volume, op }) => match heal::heal_op(host, &volume, op).await {
            Ok(()) => Response::Ok,
            Err(e) => Response::error(code::REFUSED, e),
        },
        other => Response::error(
            code::BAD_REQUEST,
            format!("unexpected request {}", variant_name(&other)),
        ),
    };
    frame::write_msg(send, &resp).await
}

/// On a quorum volume, a write is accepted only by a brick that is not
/// behind the others for that path: a brick that just regained quorum may
/// not have received the majority's changes yet, and accepting a write
/// based on its stale copy would fork the path. Returns, per path, why it
/// must wait. One database read here and one `Versions` request per other
/// reachable brick (all at once), whatever the number of paths (a mount's
/// batch has up to 256).
async fn behind_peers(
    host: &Arc<dyn Host>,
    b: &Arc<Brick>,
    v: &crate::pool::Volume,
    paths: &[crate::RelPath],
) -> Vec<Option<String>> {
    let ps = paths.to_vec();
    let mine: Vec<crate::wire::vv::VersionVector> = b
        .with_db(move |_, c| -> Result<Vec<_>, crate::store::StoreError> {
            ps.iter()
                .map(|p| Ok(Brick::load(c, p)?.map(|(e, _)| e.vv).unwrap_or_default()))
                .collect()
        })
        .await
        .unwrap_or_else(|_| vec![Default::default(); paths.len()]);
    let others = v.bricks.iter().filter(|x| {
        x.id != b.id && x.node != host.me() && host.is_alive(x.node, crate::host::QUORUM_SILENCE)
    });
    let asks = others.map(|other| {
        let req = proto::Versions {
            volume: v.id,
            brick: other.id,
            paths: paths.to_vec(),
        };
        host.ask(other.node, req)
    });
    let answers = futures_util::future::join_all(asks).await;
    let mut out: Vec<Option<String>> = vec![None; paths.len()];
    // A brick that does not answer is not waited for (it may be the one
    // about to lose quorum); only a newer version seen elsewhere holds.
    for theirs in answers.into_iter().flatten() {
        if theirs.len() != paths.len() {
            continue;
        }
        for (i, t) in theirs.iter().enumerate() {
            let newer = t.as_ref().is_some_and(|t| {
                !matches!(
                    t.compare(&mine[i]),
                    crate::wire::vv::Relation::DominatedBy | crate::wire::vv::Relation::Equal
                )
            });
            if newer && out[i].is_none() {
                out[i] = Some(format!(
                    "{} is being brought up to date from the other bricks; retry",
                    paths[i]
                ));
            }
        }
    }
    out
}

/// Quorum judged now for a write to `b`, not by the last periodic check;
/// the volume, when a quorum is enforced and reached.
fn judge_quorum(host: &Arc<dyn Host>, b: &Brick) -> Option<crate::pool::Volume> {
    let cfg = host.config();
    let v = cfg.volumes.iter().find(|v| v.id == b.volume)?;
    let q = host.quorum(v);
    *b.quorum.lock().unwrap_or_else(|e| e.into_inner()) = q;
    (q == Some(true)).then(|| v.clone())
}

/// Serves a mount's batch of writes as its single offers would be
/// served: quorum judged once, and on a quorum volume each path checked
/// against the other bricks first (see [`behind_peers`]); a path that
/// must wait is refused alone.
async fn write_batch(
    host: &Arc<dyn Host>,
    b: &Arc<Brick>,
    changeset: Option<proto::Changeset>,
    entries: Vec<proto::WriteEntry>,
) -> Response {
    let items = offer::writes(changeset, entries);
    let Some(v) = judge_quorum(host, b) else {
        return offer::batch_response(offer::apply(b, items).await);
    };
    let paths: Vec<crate::RelPath> = items.iter().map(|e| e.version.entry.path.clone()).collect();
    let waits = behind_peers(host, b, &v, &paths).await;
    let (go, wait): (Vec<_>, Vec<_>) = items
        .into_iter()
        .zip(waits)
        .enumerate()
        .partition(|(_, (_, w))| w.is_none());
    let order: Vec<usize> = go.iter().map(|(i, _)| *i).collect();
    let go = go.into_iter().map(|(_, (e, _))| e).collect();
    let outcomes = match offer::apply(b, go).await {
        Ok(o) => o,
        Err(reason) => return offer::batch_response(Err(reason)),
    };
    let mut all: Vec<Option<proto::BatchOutcome>> =
        (0..order.len() + wait.len()).map(|_| None).collect();
    for (i, o) in order.into_iter().zip(outcomes) {
        all[i] = Some(o);
    }
    for (i, (_, w)) in wait {
        all[i] = Some(offer::outcome(Err(crate::store::apply::Refusal::NoQuorum(
            w.unwrap_or_default(),
        ))));
    }
    Response::Batch(all.into_iter().flatten().collect())
}

/// Serves an offer (with its changeset, if any): quorum is judged for a
/// write, then the brick applies it.
async fn offer_to<W, R>(
    host: &Arc<dyn Host>,
    offer: proto::Offer,
    changeset: Option<proto::Changeset>,
    send: &mut W,
    recv: &mut R,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    let b = match brick_of(host.as_ref(), offer.volume, offer.brick) {
        Ok(b) => b,
        Err(r) => return frame::write_msg(send, &r).await,
    };
    if offer.write.is_some() {
        if let Some(v) = judge_quorum(host, &b) {
            let wait = behind_peers(host, &b, &v, std::slice::from_ref(&offer.entry.path)).await;
            if let Some(reason) = wait.into_iter().flatten().next() {
                let refused = crate::store::apply::Refusal::NoQuorum(reason);
                return frame::write_msg(send, &offer::response(Err(refused))).await;
            }
        }
    }
    offer::handle_offer(&b, offer, changeset, send, recv).await
}

/// The change feed with the changeset tags of its entries.
async fn feed_in_sets(b: &Arc<Brick>, since: u64, wait_ms: u32, limit: u32) -> Response {
    wait_for_change(b, since, wait_ms).await;
    let r = b
        .with_db(move |_, conn| {
            let entries = Brick::changes_since(conn, since, limit)?;
            let tags = crate::store::changeset::tags(conn, &entries)?;
            let inc = crate::store::schema::incarnation(conn)?;
            Ok::<_, crate::store::StoreError>((entries, tags, inc))
        })
        .await;
    match r {
        Ok((entries, changesets, incarnation)) => Response::FeedInSets {
            entries,
            seq: b.seq(),
            incarnation,
            changesets,
        },
        Err(e) => Response::error(code::INTERNAL, e.to_string()),
    }
}

/// Waits up to `wait_ms` for the brick's sequence to pass `since`.
async fn wait_for_change(b: &Arc<Brick>, since: u64, wait_ms: u32) {
    if b.seq() <= since && wait_ms > 0 {
        let mut rx = b.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(wait_ms));
        while *rx.borrow_and_update() <= since {
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                break;
            }
        }
    }
}

fn variant_name(r: &Request) -> &'static str {
    match r {
        Request::Hello(_) => "hello",
        Request::Probe(_) => "probe",
        _ => "request",
    }
}

async fn changes(b: &Arc<Brick>, since: u64, wait_ms: u32, limit: u32) -> Response {
    wait_for_change(b, since, wait_ms).await;
    match b
        .with_db(move |_, conn| Brick::changes_since(conn, since, limit))
        .await
    {
        Ok(entries) => Response::Changes {
            entries,
            seq: b.seq(),
        },
        Err(e) => Response::error(code::INTERNAL, e.to_string()),
    }
}

async fn read_chunks<W: AsyncWrite + Unpin + Send>(
    b: &Arc<Brick>,
    path: crate::RelPath,
    hash: [u8; 32],
    want: Vec<u32>,
    send: &mut W,
) -> Result<(), FrameError> {
    let p2 = path.clone();
    let found = b
        .with_db(
            move |br,
                  conn|
                  -> Result<
                Option<(std::path::PathBuf, Vec<crate::store::types::ChunkRef>)>,
                crate::store::StoreError,
            > {
                let Some(file) = br.content_file(conn, &p2, &hash)? else {
                    return Ok(None);
                };
                // The chunk list of that content: current entry or a sibling.
                if let Some((e, c)) = Brick::load(conn, &p2)? {
                    if e.hash == hash {
                        return Ok(Some((file, c)));
                    }
                }
                for (e, c) in Brick::siblings(conn, &p2)? {
                    if e.hash == hash {
                        return Ok(Some((file, c)));
                    }
                }
                // Retained content: re-chunk it.
                let c = chunking::chunk_file(&file)
                    .map_err(|e| crate::store::StoreError::io("read", p2.to_string(), e))?;
                Ok(Some((file, c.chunks)))
            },
        )
        .await;
    let (file, list) = match found {
        Ok(Some(x)) => x,
        Ok(None) => {
            return frame::write_msg(send, &Response::error(code::NOT_FOUND, "content not found"))
                .await
        }
        Err(e) => {
            return frame::write_msg(send, &Response::error(code::INTERNAL, e.to_string())).await
        }
    };
    if want.iter().any(|i| *i as usize >= list.len()) {
        return frame::write_msg(
            send,
            &Response::error(code::BAD_REQUEST, "chunk index out of range"),
        )
        .await;
    }
    frame::write_msg(send, &Response::Ok).await?;
    let offsets = chunking::offsets(&list);
    let mut f = match std::fs::File::open(&file) {
        Ok(f) => f,
        Err(e) => return Err(FrameError::Io(e)),
    };
    for i in want {
        let c = list[i as usize];
        let data = chunking::read_verified(&mut f, offsets[i as usize], c.len, &c.hash)?;
        b.counters.add_sent(data.len() as u64);
        frame::write_raw(send, &data).await?;
    }
    Ok(())
}

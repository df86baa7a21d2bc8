//! The malformed-input drill (`gsync debug garbage`): crafted frames and
//! offers sent to a peer over an authenticated connection, to show a node
//! answers garbage with errors and never crashes or stores it. A testing
//! tool, so it is built only with the `failpoints` feature, never into the
//! shipping daemon.

use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use super::Node;
use crate::control::CtlReply;
use crate::wire::proto::{Request, Response};

pub(super) async fn garbage(node: &Arc<Node>, addr: &str) -> CtlReply {
    use crate::store::types::{ChunkRef, Kind};
    use crate::wire::vv::VersionVector;

    /// Wire twin of `Entry` whose path is a plain string, so paths that
    /// `RelPath` refuses can be put on the wire.
    #[derive(Serialize)]
    struct RawEntry {
        path: String,
        kind: Kind,
        size: u64,
        mode: u32,
        mtime_ns: i64,
        owner: Option<(u32, u32)>,
        hash: [u8; 32],
        target: Option<String>,
        vv: VersionVector,
        data_vv: VersionVector,
        meta_vv: VersionVector,
        origin: Uuid,
    }
    /// Wire twin of `Offer`.
    #[derive(Serialize)]
    struct RawOffer {
        volume: Uuid,
        brick: u64,
        entry: RawEntry,
        chunks: Vec<ChunkRef>,
        write: Option<crate::wire::proto::WriteInfo>,
        from_brick: Option<u64>,
    }
    /// Wire twin of `Request` up to variant 6 (`Offer`): bincode encodes
    /// the variant index, so the unit variants only hold the places.
    #[derive(Serialize)]
    #[allow(dead_code)]
    enum RawRequest {
        V0,
        V1,
        V2,
        V3,
        V4,
        V5,
        Offer(Box<RawOffer>),
    }

    let cfg = node.config();
    let Some(m) = cfg
        .members
        .iter()
        .find(|m| format!("{}:{}", m.hostname, m.port) == addr || m.hostname == addr)
    else {
        return CtlReply::fail(format!("{addr} is not a pool member"));
    };
    let Some(conn) = node.connection(m.uuid) else {
        return CtlReply::fail(format!("{addr} is not connected"));
    };
    // A brick of the target, so the offers reach the store when they decode.
    let (volume, brick) = cfg
        .volumes
        .iter()
        .find_map(|v| {
            v.bricks
                .iter()
                .find(|b| b.node == m.uuid)
                .map(|b| (v.id, b.id))
        })
        .unwrap_or((Uuid::nil(), 0));
    const CHUNK: u32 = crate::store::chunking::MAX_CHUNK;
    let offer = |path: &str, size: u64| {
        let chunks: Vec<ChunkRef> = (0..size.div_ceil(u64::from(CHUNK)))
            .map(|i| ChunkRef {
                hash: *blake3::hash(&i.to_le_bytes()).as_bytes(),
                len: CHUNK,
            })
            .collect();
        let vv = VersionVector::new().bumped(0x6a72_6261_6765);
        RawRequest::Offer(Box::new(RawOffer {
            volume,
            brick,
            entry: RawEntry {
                path: path.to_string(),
                kind: Kind::File,
                size: chunks.len() as u64 * u64::from(CHUNK),
                mode: 0o644,
                mtime_ns: 0,
                owner: None,
                hash: [7; 32],
                target: None,
                vv: vv.clone(),
                data_vv: vv.clone(),
                meta_vv: vv,
                origin: node.me.uuid,
            },
            chunks,
            write: None,
            from_brick: Some(0x6a72_6261_6765),
        }))
    };
    let framed = |msg: &RawRequest| -> Result<Vec<u8>, String> {
        let body = crate::wire::codec::encode(msg).map_err(|e| e.to_string())?;
        let len = u32::try_from(body.len()).map_err(|e| e.to_string())?;
        Ok([len.to_be_bytes().as_slice(), &body].concat())
    };
    // The twin must encode exactly like the real request.
    match framed(&offer("garbage-drill", 1)).map(|b| crate::wire::codec::decode::<Request>(&b[4..]))
    {
        Ok(Ok(Request::Offer(o))) if o.entry.path.as_str() == "garbage-drill" => {}
        other => {
            return CtlReply::fail(format!(
                "the crafted offer does not decode as Request::Offer: {other:?}"
            ))
        }
    }
    // (frame bytes, trailing bytes sent after the offer's `Need` answer)
    let mut payloads: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![
        (vec![0x40, 0, 0, 0, 1, 2, 3], None), // announces a 1 GiB frame
        (vec![0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff], None), // unknown message type
        (vec![0, 0, 0, 200, 1, 2], None),     // truncated frame
        ((0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(), None),
    ];
    for path in [
        "../escape",
        "/etc/x",
        "a\0b",
        ".gsync/meta.db",
        "ok/../../escape2",
    ] {
        match framed(&offer(path, 1)) {
            Ok(b) => payloads.push((b, None)),
            Err(e) => return CtlReply::fail(e),
        }
    }
    // A valid offer whose first chunk frame announces 1 GiB.
    match framed(&offer("garbage-drill", 1 << 30)) {
        Ok(b) => payloads.push((b, Some(vec![0x40, 0, 0, 0, 1, 2, 3]))),
        Err(e) => return CtlReply::fail(e),
    }
    let mut sent = 0;
    for (p, after_need) in payloads {
        if let Ok((mut s, mut r)) = conn.open_bi().await {
            let _ = s.write_all(&p).await;
            if let Some(rest) = after_need {
                let need = tokio::time::timeout(
                    super::RPC_TIMEOUT,
                    crate::wire::frame::read_msg::<_, Response>(&mut r),
                )
                .await;
                if matches!(need, Ok(Ok(Response::Need(_)))) {
                    let _ = s.write_all(&rest).await;
                }
            }
            let _ = s.finish();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), r.read_to_end(1 << 16))
                .await;
            sent += 1;
        }
    }
    CtlReply::ok(sent)
}

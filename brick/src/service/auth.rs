//! `auth.allow` on every request of a mount agent, not only when a mount
//! attaches: a mount attached before its host was excluded must stop
//! pushing and receiving at once.
//!
//! The requests that move a mount's data are refused for a host the
//! volume's `auth.allow` does not name: writes (offers with a writer), the
//! change feed and chunk reads. Stats, version lookups and offers without
//! a writer (replication, and a mount's offer of a version the bricks
//! lost) are refused too unless the requesting host holds a brick of the
//! volume (bricks ask and offer each other, and such a host has the whole
//! volume on its own disk anyway). Management requests are not mount
//! traffic and are never refused here. Local agents go through the same handler (an
//! in-process stream from this host), so they are checked the same way.
//! Which request is which is `Request::auth_scope`, an exhaustive match, so
//! a new request kind cannot slip past this check unnoticed.

use uuid::Uuid;

use crate::host::Host;
use crate::pool::Volume;
use crate::wire::proto::{code, AuthScope, Request, Response};

/// The refusal for `req` from host `peer`, if `auth.allow` excludes it.
pub fn check(host: &dyn Host, peer: Uuid, req: &Request) -> Option<Response> {
    let (volume, stat) = match req.auth_scope() {
        AuthScope::Data(v) => (v, false),
        AuthScope::BrickPeer(v) => (v, true),
        AuthScope::Exempt => return None,
    };
    let cfg = host.config();
    let v = cfg.volumes.iter().find(|v| v.id == volume)?;
    let host = cfg.member(peer)?.hostname.as_str();
    if !refused(v, host, peer, stat) {
        return None;
    }
    tracing::debug!(peer = %host, volume = %v.name, "mount request refused by auth.allow");
    Some(Response::error(
        code::AUTH,
        format!("{host} is not allowed to mount {} (auth.allow)", v.name),
    ))
}

/// The decision: a request of a mount on host `host` (`peer`), a stat or
/// a data request, against the volume's `auth.allow`.
fn refused(v: &Volume, host: &str, peer: Uuid, stat: bool) -> bool {
    if v.mount_allowed(host) {
        return false;
    }
    !(stat && v.bricks.iter().any(|b| b.node == peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{BrickDef, VolumeState};

    fn vol(allow: Option<&str>) -> Volume {
        let mut options = std::collections::BTreeMap::new();
        if let Some(a) = allow {
            options.insert("auth.allow".to_string(), a.to_string());
        }
        Volume {
            name: "v".into(),
            id: Uuid::nil(),
            replica: 2,
            bricks: vec![BrickDef {
                id: 1,
                node: Uuid::from_bytes([1; 16]),
                host: "h1".into(),
                path: "/b".into(),
                incarnation: 0,
                out_of_service: false,
            }],
            state: VolumeState::Started,
            options,
            overridden: Vec::new(),
        }
    }

    #[test]
    fn decisions() {
        let brick_node = Uuid::from_bytes([1; 16]);
        let other = Uuid::from_bytes([2; 16]);
        // (allow, host, peer, stat) -> refused
        let cases = [
            (None, "h2", other, false, false),
            (Some("*"), "h2", other, false, false),
            (Some("h1,h2"), "h2", other, false, false),
            (Some("H2"), "h2", other, false, false),
            (Some("h1"), "h2", other, false, true),
            (Some("h1"), "h2", other, true, true),
            (Some("h3"), "h1", brick_node, true, false),
            (Some("h3"), "h1", brick_node, false, true),
        ];
        for (allow, host, peer, stat, want) in cases {
            assert_eq!(
                refused(&vol(allow), host, peer, stat),
                want,
                "{allow:?} {host} stat={stat}"
            );
        }
    }

    #[test]
    fn which_requests_are_mount_traffic() {
        use crate::wire::proto::{self, Offer, WriteInfo};
        let v = Uuid::from_bytes([7; 16]);
        let offer = |write: Option<WriteInfo>| Offer {
            volume: v,
            brick: 1,
            entry: crate::store::types::Entry::tombstone(
                crate::RelPath::new("p").unwrap(),
                Uuid::nil(),
            ),
            chunks: Vec::new(),
            write,
            from_brick: None,
        };
        let write = WriteInfo {
            writer: 3,
            base: Default::default(),
            base_data: Default::default(),
            base_meta: Default::default(),
            content_changed: true,
            meta_changed: true,
        };
        let table = [
            (Request::Offer(offer(Some(write))), AuthScope::Data(v)),
            // A versioned offer (replication, a lost version offered
            // again): only from a node holding a brick of the volume.
            (Request::Offer(offer(None)), AuthScope::BrickPeer(v)),
            // A batch of replicated versions: the same.
            (
                Request::OfferBatch(proto::OfferBatch {
                    volume: v,
                    brick: 1,
                    from_brick: 2,
                    entries: Vec::new(),
                }),
                AuthScope::BrickPeer(v),
            ),
            // A mount's batch of writes: data.
            (
                Request::WriteBatch(proto::WriteBatch {
                    volume: v,
                    brick: 1,
                    changeset: None,
                    entries: Vec::new(),
                }),
                AuthScope::Data(v),
            ),
            (
                Request::Versions(proto::Versions {
                    volume: v,
                    brick: 1,
                    paths: Vec::new(),
                }),
                AuthScope::BrickPeer(v),
            ),
            (Request::PullConfig, AuthScope::Exempt),
        ];
        for (req, want) in table {
            assert_eq!(req.auth_scope(), want, "{req:?}");
        }
    }
}

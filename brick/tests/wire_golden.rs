//! Golden bytes of every wire message: one sample of each `Request` and
//! `Response` variant, encoded, must match `tests/golden/wire.txt` byte for
//! byte, and decode back to the same bytes. A change to a message's
//! encoding (a reordered variant or field, a changed type) fails here
//! before it can make two versions of gsync misread each other; a new
//! variant fails to compile until it is named below and given a sample.
//!
//! After an intended change of the protocol (with `PROTOCOL_VERSION`
//! bumped), rewrite the file with `GSYNC_BLESS=1 cargo test -p gsync-brick
//! --test wire_golden` and review its diff.

use std::collections::BTreeMap;
use std::path::PathBuf;

use gsync_brick::heal_types::{BrickHealInfo, SplitBrainVersions};
use gsync_brick::pool::{BrickDef, Member, PoolConfig, Volume, VolumeState};
use gsync_brick::status::{
    BrickHistory, BrickStatus, Counters, DiskInfo, OutageRecord, PathState, Resolution,
};
use gsync_brick::store::digest::ChildDigest;
use gsync_brick::store::types::{ChunkRef, Entry, Kind};
use gsync_brick::wire::codec;
use gsync_brick::wire::proto::{
    self, BatchEntry, BatchOutcome, Changeset, HealOp, Hello, Offer, Probe, Request, Response,
    WriteEntry, WriteInfo, PROTOCOL_VERSION,
};
use gsync_brick::wire::vv::VersionVector;
use gsync_brick::RelPath;
use uuid::Uuid;

fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Hello(_) => "Request::Hello",
        Request::Probe(_) => "Request::Probe",
        Request::PushConfig(_) => "Request::PushConfig",
        Request::PullConfig => "Request::PullConfig",
        Request::Detached => "Request::Detached",
        Request::BrickStatus(proto::BrickStatus { .. }) => "Request::BrickStatus",
        Request::Offer(_) => "Request::Offer",
        Request::ReadChunks(proto::ReadChunks { .. }) => "Request::ReadChunks",
        Request::Changes(proto::Changes { .. }) => "Request::Changes",
        Request::Stat(proto::Stat { .. }) => "Request::Stat",
        Request::HealInfo(proto::HealInfo { .. }) => "Request::HealInfo",
        Request::Heal(proto::Heal { .. }) => "Request::Heal",
        Request::PrepareBrick(proto::PrepareBrick { .. }) => "Request::PrepareBrick",
        Request::SplitBrain(proto::SplitBrain { .. }) => "Request::SplitBrain",
        Request::Digests(proto::Digests { .. }) => "Request::Digests",
        Request::ResetBrick(proto::ResetBrick { .. }) => "Request::ResetBrick",
        Request::Feed(proto::Feed { .. }) => "Request::Feed",
        Request::Versions(proto::Versions { .. }) => "Request::Versions",
        Request::History(proto::History { .. }) => "Request::History",
        Request::BrickDisks(proto::BrickDisks { .. }) => "Request::BrickDisks",
        Request::OfferInSet(proto::OfferInSet { .. }) => "Request::OfferInSet",
        Request::FeedInSets(proto::FeedInSets { .. }) => "Request::FeedInSets",
        Request::Raft(_) => "Request::Raft",
        Request::OfferBatch(proto::OfferBatch { .. }) => "Request::OfferBatch",
        Request::WriteBatch(proto::WriteBatch { .. }) => "Request::WriteBatch",
    }
}

fn response_name(r: &Response) -> &'static str {
    match r {
        Response::Ok => "Response::Ok",
        Response::Error { .. } => "Response::Error",
        Response::Hello(_) => "Response::Hello",
        Response::ProbeAccepted { .. } => "Response::ProbeAccepted",
        Response::Config(_) => "Response::Config",
        Response::BrickStatus(_) => "Response::BrickStatus",
        Response::Need(_) => "Response::Need",
        Response::Applied { .. } => "Response::Applied",
        Response::Changes { .. } => "Response::Changes",
        Response::Stat(_) => "Response::Stat",
        Response::HealInfo(_) => "Response::HealInfo",
        Response::SplitBrain(_) => "Response::SplitBrain",
        Response::Digests(_) => "Response::Digests",
        Response::Feed { .. } => "Response::Feed",
        Response::Versions(_) => "Response::Versions",
        Response::History(_) => "Response::History",
        Response::BrickDisks(_) => "Response::BrickDisks",
        Response::FeedInSets { .. } => "Response::FeedInSets",
        Response::Raft(_) => "Response::Raft",
        Response::Batch(_) => "Response::Batch",
    }
}

fn id(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

fn path(p: &str) -> RelPath {
    RelPath::new(p).expect("valid path")
}

fn vv(e: &[(u64, u64)]) -> VersionVector {
    VersionVector::from_entries(e.iter().copied())
}

fn member(n: u8) -> Member {
    Member {
        uuid: id(n),
        hostname: format!("node{n}"),
        port: 24007,
        fingerprint: format!("fp{n}"),
    }
}

fn pool() -> PoolConfig {
    let mut p = PoolConfig::solo(member(1));
    p.members.push(member(2));
    p.version = 7;
    p.volumes.push(Volume {
        name: "conf".into(),
        id: id(9),
        replica: 2,
        bricks: (1..=2u8)
            .map(|n| BrickDef {
                id: u64::from(n),
                node: id(n),
                host: format!("node{n}"),
                path: "/data/conf".into(),
                incarnation: 1,
                out_of_service: false,
            })
            .collect(),
        state: VolumeState::Started,
        options: BTreeMap::from([("features.trash".to_string(), "on".to_string())]),
        overridden: Vec::new(),
    });
    p
}

fn entry() -> Entry {
    Entry {
        path: path("etc/app.conf"),
        kind: Kind::File,
        size: 5,
        mode: 0o644,
        mtime_ns: 1_700_000_000_000_000_000,
        owner: Some((0, 0)),
        hash: [7; 32],
        target: None,
        vv: vv(&[(1, 2), (3, 1)]),
        data_vv: vv(&[(1, 2)]),
        meta_vv: vv(&[(3, 1)]),
        origin: id(1),
    }
}

fn chunk() -> ChunkRef {
    ChunkRef {
        hash: [7; 32],
        len: 5,
    }
}

fn hello() -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        node: id(1),
        config_version: 7,
        config_by: id(2),
    }
}

fn offer() -> Offer {
    Offer {
        volume: id(9),
        brick: 1,
        entry: entry(),
        chunks: vec![chunk()],
        write: Some(write()),
        from_brick: Some(2),
    }
}

fn write() -> WriteInfo {
    WriteInfo {
        writer: 77,
        base: vv(&[(1, 1)]),
        base_data: vv(&[(1, 1)]),
        base_meta: VersionVector::new(),
        content_changed: true,
        meta_changed: false,
    }
}

fn requests() -> Vec<Request> {
    let set = Changeset { id: 42, members: 3 };
    vec![
        Request::Hello(hello()),
        Request::Probe(Box::new(Probe {
            secret: Some("s3cret".into()),
            host: "node2".into(),
            port: 24007,
            config: pool(),
        })),
        Request::PushConfig(Box::new(pool())),
        Request::PullConfig,
        Request::Detached,
        Request::BrickStatus(proto::BrickStatus {
            volume: "conf".into(),
        }),
        Request::Offer(offer()),
        Request::ReadChunks(proto::ReadChunks {
            volume: id(9),
            brick: 1,
            path: path("etc/app.conf"),
            hash: [7; 32],
            chunks: vec![0, 2],
        }),
        Request::Changes(proto::Changes {
            volume: id(9),
            brick: 1,
            since: 10,
            wait_ms: 500,
            limit: 100,
        }),
        Request::Stat(proto::Stat {
            volume: id(9),
            brick: 1,
            path: path("etc/app.conf"),
        }),
        Request::HealInfo(proto::HealInfo {
            volume: "conf".into(),
        }),
        Request::Heal(proto::Heal {
            volume: "conf".into(),
            op: HealOp::ChooseBy {
                path: path("etc/app.conf"),
                vv: vv(&[(1, 2)]),
                how: "mtime".into(),
            },
        }),
        Request::PrepareBrick(proto::PrepareBrick {
            path: "/data/conf".into(),
            force: false,
            volume: id(9),
        }),
        Request::SplitBrain(proto::SplitBrain {
            volume: "conf".into(),
            path: path("etc/app.conf"),
        }),
        Request::Digests(proto::Digests {
            volume: id(9),
            brick: 1,
            dir: "etc".into(),
        }),
        Request::ResetBrick(proto::ResetBrick {
            path: "/data/conf".into(),
            volume: id(9),
        }),
        Request::Feed(proto::Feed {
            volume: id(9),
            brick: 1,
            since: 10,
            wait_ms: 500,
            limit: 100,
        }),
        Request::Versions(proto::Versions {
            volume: id(9),
            brick: 1,
            paths: vec![path("a"), path("b/c")],
        }),
        Request::History(proto::History {
            volume: "conf".into(),
        }),
        Request::BrickDisks(proto::BrickDisks {
            volume: "conf".into(),
        }),
        Request::OfferInSet(proto::OfferInSet {
            offer: offer(),
            changeset: set,
        }),
        Request::FeedInSets(proto::FeedInSets {
            volume: id(9),
            brick: 1,
            since: 10,
            wait_ms: 500,
            limit: 100,
        }),
        Request::Raft(br#"{"ReadIndex":null}"#.to_vec()),
        Request::OfferBatch(proto::OfferBatch {
            volume: id(9),
            brick: 2,
            from_brick: 1,
            entries: vec![
                BatchEntry {
                    entry: entry(),
                    chunks: vec![chunk()],
                    changeset: Some(set),
                    content: b"hi\n".to_vec(),
                },
                BatchEntry {
                    entry: entry(),
                    chunks: Vec::new(),
                    changeset: None,
                    content: Vec::new(),
                },
            ],
        }),
        Request::WriteBatch(proto::WriteBatch {
            volume: id(9),
            brick: 2,
            changeset: Some(set),
            entries: vec![WriteEntry {
                entry: entry(),
                chunks: vec![chunk()],
                write: write(),
                content: b"hi\n".to_vec(),
            }],
        }),
    ]
}

fn responses() -> Vec<Response> {
    let heal = BrickHealInfo {
        brick: 1,
        total: 3,
        pending: 1,
        pending_by_peer: vec![(2, 1)],
        last_error: Some("peer unreachable".into()),
        quorum_met: Some(true),
        heal_rate: Some(1.5),
        ..Default::default()
    };
    let history = BrickHistory {
        brick: 1,
        outages: vec![OutageRecord {
            brick: 1,
            peer: 2,
            start: 100,
            end: Some(160),
            paths: vec![PathState {
                path: "etc/app.conf".into(),
                split_brain: false,
                pending: true,
            }],
            more: 0,
        }],
        resolutions: vec![Resolution {
            path: "etc/app.conf".into(),
            at: 170,
            how: "mtime".into(),
            winner: "070707070707".into(),
            losers: vec!["080808080808".into()],
        }],
    };
    vec![
        Response::Ok,
        Response::Error {
            code: 4,
            reason: "refused".into(),
        },
        Response::Hello(hello()),
        Response::ProbeAccepted {
            member: member(2),
            config: Box::new(pool()),
        },
        Response::Config(Box::new(pool())),
        Response::BrickStatus(vec![BrickStatus {
            brick: 1,
            online: true,
            pid: 4242,
            port: 24007,
            counters: Counters {
                changes_applied: 3,
                ..Default::default()
            },
            entries: 12,
            seq: 40,
            offline_reason: None,
        }]),
        Response::Need(vec![0, 1]),
        Response::Applied {
            vv: vv(&[(1, 3)]),
            conflict: false,
        },
        Response::Changes {
            entries: vec![(11, entry())],
            seq: 11,
        },
        Response::Stat(Some(Box::new((entry(), vec![chunk()])))),
        Response::HealInfo(vec![heal]),
        Response::SplitBrain(vec![SplitBrainVersions {
            brick: 1,
            versions: vec![entry()],
            retained: vec![(entry(), "deleted".into())],
        }]),
        Response::Digests(vec![ChildDigest {
            name: "app.conf".into(),
            digest: [5; 32],
            has_children: false,
        }]),
        Response::Feed {
            entries: vec![(11, Entry::tombstone(path("old"), id(2)))],
            seq: 11,
            incarnation: 2,
        },
        Response::Versions(vec![Some(vv(&[(1, 1)])), None]),
        Response::History(vec![history]),
        Response::BrickDisks(vec![(
            1,
            DiskInfo {
                filesystem: "ext4".into(),
                device: "/dev/sdb1".into(),
                mount_options: "rw,relatime".into(),
                mount_point: "/data".into(),
                free_bytes: 1 << 30,
                total_bytes: 1 << 34,
                inodes_total: 1000,
                inodes_free: 900,
                block_size: 4096,
            },
        )]),
        Response::FeedInSets {
            entries: vec![(12, entry())],
            seq: 12,
            incarnation: 2,
            changesets: vec![(0, Changeset { id: 42, members: 3 })],
        },
        Response::Raft(br#"{"ReadIndex":{"Ok":7}}"#.to_vec()),
        Response::Batch(vec![
            BatchOutcome::Applied {
                vv: vv(&[(1, 3), (2, 1)]),
                conflict: false,
            },
            BatchOutcome::Refused {
                code: 4,
                reason: "parent is a symlink".into(),
            },
        ]),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn golden_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wire.txt")
}

/// Name -> hex of every sample, in wire order.
fn encoded() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in requests() {
        let bytes = codec::encode(&r).expect("encode");
        let back: Request = codec::decode(&bytes).expect("decode");
        assert_eq!(codec::encode(&back).expect("encode"), bytes, "{r:?}");
        out.push((request_name(&r).to_string(), hex(&bytes)));
    }
    for r in responses() {
        let bytes = codec::encode(&r).expect("encode");
        let back: Response = codec::decode(&bytes).expect("decode");
        assert_eq!(codec::encode(&back).expect("encode"), bytes, "{r:?}");
        out.push((response_name(&r).to_string(), hex(&bytes)));
    }
    out
}

#[test]
fn every_message_matches_its_golden_bytes() {
    let now = encoded();
    let names: std::collections::BTreeSet<&String> = now.iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), now.len(), "one sample per variant");
    let text: String = now.iter().map(|(n, h)| format!("{n} {h}\n")).collect();
    let file = golden_file();
    if std::env::var_os("GSYNC_BLESS").is_some() {
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, &text).expect("write golden file");
        return;
    }
    let golden = std::fs::read_to_string(&file).expect("tests/golden/wire.txt");
    let want: BTreeMap<&str, &str> = golden.lines().filter_map(|l| l.split_once(' ')).collect();
    for (name, h) in &now {
        match want.get(name.as_str()) {
            Some(g) => assert_eq!(
                g, h,
                "{name}: its encoding changed; if intended, bump PROTOCOL_VERSION and bless"
            ),
            None => panic!("{name} has no golden bytes: bless the file (see the module doc)"),
        }
    }
    assert_eq!(want.len(), now.len(), "golden entries without a sample");
}

#[test]
fn the_golden_bytes_decode() {
    // Bytes written by this version stay readable: each golden message
    // decodes as the kind it is named for.
    let golden = std::fs::read_to_string(golden_file()).expect("tests/golden/wire.txt");
    for line in golden.lines() {
        let (name, h) = line.split_once(' ').expect("name hex");
        let bytes: Vec<u8> = (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
            .collect();
        if name.starts_with("Request::") {
            let r: Request = codec::decode(&bytes).expect(name);
            assert_eq!(request_name(&r), name);
        } else {
            let r: Response = codec::decode(&bytes).expect(name);
            assert_eq!(response_name(&r), name);
        }
    }
}

//! Bounded-time fuzzing of everything that parses bytes from a peer: the
//! frame decoder for requests and responses, path validation, version
//! vectors and chunk lists. Mutates valid messages (bit flips, truncation,
//! insertions, length-field lies) and throws pure noise; nothing may panic
//! or allocate past the frame cap.
//!
//! `GSYNC_FUZZ_SECS` sets the time (default 5 s); the number of executions
//! is printed.

use std::time::{Duration, Instant};

use gsync_brick::store::chunking;
use gsync_brick::store::types::{ChunkRef, Entry, Kind};
use gsync_brick::wire::proto::{self, Offer, Request, Response, WriteInfo};
use gsync_brick::wire::vv::VersionVector;
use gsync_brick::wire::{codec, frame};
use gsync_brick::RelPath;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let path = RelPath::new("etc/nginx/conf.d/site.conf").unwrap();
    let mut e = Entry::tombstone(path.clone(), uuid::Uuid::nil());
    e.kind = Kind::File;
    e.size = 3;
    e.vv = VersionVector::new().bumped(7).bumped(9);
    let offer = Offer {
        volume: uuid::Uuid::nil(),
        brick: 42,
        entry: e.clone(),
        chunks: vec![ChunkRef {
            hash: [1; 32],
            len: 3,
        }],
        write: Some(WriteInfo {
            writer: 5,
            base: VersionVector::new(),
            base_data: VersionVector::new(),
            base_meta: VersionVector::new(),
            content_changed: true,
            meta_changed: false,
        }),
        from_brick: Some(3),
    };
    let reqs = [
        Request::Offer(offer),
        Request::PullConfig,
        Request::Changes(proto::Changes {
            volume: uuid::Uuid::nil(),
            brick: 1,
            since: 5,
            wait_ms: 10,
            limit: 100,
        }),
        Request::ReadChunks(proto::ReadChunks {
            volume: uuid::Uuid::nil(),
            brick: 1,
            path: path.clone(),
            hash: [3; 32],
            chunks: vec![0, 1, 2],
        }),
        Request::Stat(proto::Stat {
            volume: uuid::Uuid::nil(),
            brick: 1,
            path,
        }),
    ];
    let resps = [
        Response::Need(vec![1, 2, 3]),
        Response::Changes {
            entries: vec![(1, e)],
            seq: 9,
        },
        Response::error(3, "nope"),
    ];
    let mut out: Vec<Vec<u8>> = reqs.iter().map(|r| codec::encode(r).unwrap()).collect();
    out.extend(resps.iter().map(|r| codec::encode(r).unwrap()));
    out
}

fn mutate(rng: &mut Rng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b.truncate(i);
            }
            2 => {
                let i = rng.below(b.len() + 1);
                b.insert(i, rng.next() as u8);
            }
            3 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = [0, 0xff, 0xfb, 0xfc, 0xfd, 0x80][rng.below(6)];
            }
            4 => b = (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
            _ => {}
        }
    }
    b
}

#[test]
fn decoders_never_panic() {
    let secs: u64 = std::env::var("GSYNC_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let seeds = seeds();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ secs);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut execs = 0u64;
    while Instant::now() < deadline {
        for _ in 0..256 {
            let base = seeds[rng.below(seeds.len())].clone();
            let body = mutate(&mut rng, base);
            let _ = codec::decode::<Request>(&body);
            let _ = codec::decode::<Response>(&body);
            // Through the framer, with honest and lying length fields.
            let mut framed = Vec::with_capacity(body.len() + 4);
            let len = if rng.below(8) == 0 {
                rng.next() as u32
            } else {
                body.len() as u32
            };
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&body);
            rt.block_on(async {
                let mut r = &framed[..];
                let _ = frame::read_msg::<_, Request>(&mut r).await;
            });
            let s = String::from_utf8_lossy(&body);
            let _ = RelPath::new(&s);
            let _ = VersionVector::from_bytes(&body);
            let _ = chunking::decode_list(&body);
            execs += 1;
        }
    }
    eprintln!("FUZZ decoders: {execs} executions in {secs} s, no crash");
}

//! `heal info` reads the pending and split-brain indexes, never the tree:
//! its cost must not grow with the number of tracked paths. This builds a
//! brick database with 1,000,000 entries (and 100 pending, 10 split-brain)
//! and times the query. Run with
//! `cargo test --release -p gsync-brick --test heal_info_scale -- --ignored --nocapture`.

use std::time::Instant;

use gsync_brick::store::types::{Entry, Kind};
use gsync_brick::store::{schema, Brick};
use gsync_brick::wire::codec;
use gsync_brick::wire::vv::VersionVector;
use gsync_brick::RelPath;
use rusqlite::params;

#[test]
#[ignore = "scale measurement: run explicitly"]
fn heal_info_on_a_million_paths() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join(".gsync");
    std::fs::create_dir_all(&meta).unwrap();
    let mut conn = schema::open(&meta.join("meta.db")).unwrap();
    let t = Instant::now();
    let n = 1_000_000u64;
    let tx = conn.transaction().unwrap();
    {
        let mut st = tx
            .prepare("INSERT INTO entries (path, entry, chunks, seq) VALUES (?1, ?2, x'', ?3)")
            .unwrap();
        for i in 0..n {
            let path = format!("d{:03}/f{:07}.conf", i % 1000, i);
            let mut e = Entry::tombstone(RelPath::new(&path).unwrap(), uuid::Uuid::nil());
            e.kind = Kind::File;
            e.vv = VersionVector::new().bumped(1);
            st.execute(params![path, codec::encode(&e).unwrap(), i as i64 + 1])
                .unwrap();
        }
        let mut p = tx
            .prepare("INSERT INTO pending (peer, path, seq) VALUES (7, ?1, ?2)")
            .unwrap();
        for i in 0..100u64 {
            p.execute(params![
                format!("d{:03}/f{:07}.conf", i % 1000, i),
                i as i64 + 1
            ])
            .unwrap();
        }
        let mut s = tx
            .prepare("INSERT INTO siblings (path, vv, entry, chunks) VALUES (?1, ?2, x'00', x'')")
            .unwrap();
        for i in 0..10u64 {
            s.execute(params![
                format!("d{:03}/f{:07}.conf", i % 1000, i + 500),
                vec![i as u8]
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    eprintln!("built {n} entries in {:.1} s", t.elapsed().as_secs_f64());
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let info = Brick::heal_info(&conn, 10_000).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(info.pending, 100);
        assert_eq!(info.split_brain, 10);
        assert_eq!(info.total, 110);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    eprintln!(
        "HEAL-INFO-SCALE: heal info on a brick with {n} tracked paths: median {:.2} ms (5 runs)",
        times[2]
    );
}

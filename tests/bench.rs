//! The benchmark: figures, not pass/fail. Run with
//! `cargo test --release --test bench -- --ignored --nocapture`.
//!
//! Three real daemons on loopback, replica 3, a mount per node. Sizes can be
//! scaled down with GSYNC_BENCH_BIG_MIB (default 1024) and
//! GSYNC_BENCH_FILES (default 10000).

#[path = "support/mod.rs"]
mod support;

use std::io::{Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use support::{manifest, wait_until, Cluster};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn counters(c: &Cluster, vol: &str) -> Vec<serde_json::Value> {
    let j = c
        .node(1)
        .cli(&["--json", "volume", "status", vol])
        .ok()
        .json();
    j[0]["bricks"].as_array().cloned().unwrap_or_default()
}

fn received(c: &Cluster, vol: &str) -> u64 {
    counters(c, vol)
        .iter()
        .map(|b| {
            b["detail"]["counters"]["bytes_received"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn fill(f: &mut std::fs::File, bytes: u64, seed: u64) {
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

#[test]
#[ignore = "benchmark: run explicitly"]
fn bench() {
    let c = Cluster::start(3);
    c.form_pool();
    c.create_volume("b");
    let m: Vec<_> = (1..=3).map(|i| c.mount("b", i)).collect();
    println!("BENCH gsync, 3 nodes on loopback, replica 3");

    // 1. write-to-visible latency on another mount.
    let mut lat = Vec::new();
    for i in 0..200 {
        let name = format!("lat{}.txt", i % 20);
        let body = format!("write {i}\n");
        let t = Instant::now();
        std::fs::write(m[0].join(&name), &body).unwrap();
        wait_until(Duration::from_secs(10), "visible", || {
            std::fs::read_to_string(m[1].join(&name)).is_ok_and(|s| s == body)
        });
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    println!("write-to-visible latency m1 -> m2: p50 {p50:.1} ms, p99 {p99:.1} ms (200 writes; GlusterFS reference: synchronous, but a 42 s stall when a brick vanishes)");

    // 2. many small files.
    let n = env("GSYNC_BENCH_FILES", 10_000);
    let t = Instant::now();
    for i in 0..n {
        let d = m[0].join(format!("small/d{}", i / 500));
        if i % 500 == 0 {
            std::fs::create_dir_all(&d).unwrap();
        }
        std::fs::write(d.join(format!("f{i}.conf")), format!("key = {i}\n")).unwrap();
    }
    let written = t.elapsed();
    let want = manifest::of(&m[0].join("small"));
    for mi in &m[1..] {
        wait_until(Duration::from_secs(600), "small files everywhere", || {
            manifest::of(&mi.join("small")).len() == want.len()
        });
    }
    let all = t.elapsed();
    println!(
        "{n} small files: written in {:.1} s, on all 3 mounts after {:.1} s ({:.0} files/s)",
        written.as_secs_f64(),
        all.as_secs_f64(),
        n as f64 / all.as_secs_f64()
    );

    // 3. heal after an outage: N changed of M.
    let changed = (n / 100).max(1);
    c.partition(1, 3);
    c.partition(2, 3);
    for i in 0..changed {
        let p = m[0].join(format!("small/d{}/f{}.conf", i / 500, i));
        std::fs::write(&p, format!("key = {i} changed\n")).unwrap();
    }
    wait_until(Duration::from_secs(60), "changes reach m2", || {
        std::fs::read_to_string(m[1].join(format!(
            "small/d{}/f{}.conf",
            (changed - 1) / 500,
            changed - 1
        )))
        .is_ok_and(|s| s.contains("changed"))
    });
    let t = Instant::now();
    let info_t = Instant::now();
    c.node(1).cli(&["volume", "heal", "b", "info"]).ok();
    let info_ms = info_t.elapsed().as_secs_f64() * 1000.0;
    c.heal_network();
    wait_until(Duration::from_secs(300), "heal complete", || {
        c.node(1)
            .cli(&["volume", "heal", "b", "info"])
            .stdout
            .matches("Number of entries: 0")
            .count()
            == 3
    });
    println!(
        "heal after outage: {changed} changed of {n} files healed in {:.1} s after the network returned (GlusterFS reference: 29.4 s for 1 file); heal info took {info_ms:.0} ms",
        t.elapsed().as_secs_f64()
    );

    // 4. one big file, then a 1 MiB change inside it.
    let big = env("GSYNC_BENCH_BIG_MIB", 1024) << 20;
    let before = received(&c, "b");
    let t = Instant::now();
    let path = m[0].join("big.bin");
    {
        let mut f = std::fs::File::create(&path).unwrap();
        fill(&mut f, big, 7);
    }
    let want = blake3::hash(&std::fs::read(&path).unwrap());
    for mi in &m[1..] {
        wait_until(Duration::from_secs(900), "big file everywhere", || {
            std::fs::metadata(mi.join("big.bin")).is_ok_and(|md| md.len() == big)
                && blake3::hash(&std::fs::read(mi.join("big.bin")).unwrap_or_default()) == want
        });
    }
    let secs = t.elapsed().as_secs_f64();
    let moved = received(&c, "b") - before;
    println!(
        "{} MiB file: on all mounts in {secs:.1} s ({:.0} MB/s), {} MiB received by the 3 bricks (brick 1 from the mount, bricks 2 and 3 by replication)",
        big >> 20,
        big as f64 / 1e6 / secs,
        moved >> 20
    );
    let before = received(&c, "b");
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(big / 2)).unwrap();
        fill(&mut f, 1 << 20, 99);
    }
    let want = blake3::hash(&std::fs::read(&path).unwrap());
    let t = Instant::now();
    for mi in &m[1..] {
        wait_until(Duration::from_secs(900), "change everywhere", || {
            blake3::hash(&std::fs::read(mi.join("big.bin")).unwrap_or_default()) == want
        });
    }
    let moved = received(&c, "b") - before;
    println!(
        "1 MiB change inside the {} MiB file: {:.2} MiB received in all by the 3 bricks (target < 4 MiB per brick), visible on all mounts in {:.1} s",
        big >> 20,
        moved as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    for n in &c.nodes {
        if let Some(pid) = n.pid() {
            println!("daemon {} peak RSS: {} MiB", n.n, peak_rss_kib(pid) / 1024);
        }
    }
}

//! The brick lifecycle as an operator meets it (issue 11): a dead server's
//! brick replaced online by a new server's, a replica added and removed,
//! a node detached and probed again, a rate-limited heal, and a wiped brick
//! re-initialised in place, with mounts in use throughout.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::heal::{all_clean, brick_name};
use crate::support::replication::{hash_file, write_random};
use crate::support::{manifest, read, wait_until, Cluster};

const T: Duration = Duration::from_secs(60);

/// Content of file `i` of the populated tree.
fn content(i: usize) -> String {
    format!("file {i}\n").repeat(1 + i % 37)
}

fn rel(i: usize) -> String {
    format!("d{}/f{i:03}.txt", i % 10)
}

/// Writes 300 files in 10 directories and an executable script.
fn populate(m: &Path) {
    for i in 0..300 {
        let p = m.join(rel(i));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content(i)).expect("write");
    }
    let s = m.join("deploy.sh");
    std::fs::write(&s, "#!/bin/sh\necho deployed\n").expect("write script");
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Reads every populated file of `m` in a loop until stopped, recording
/// any file seen missing or with content other than what was written.
struct Reader {
    stop: Arc<AtomicBool>,
    passes: Arc<AtomicU64>,
    bad: Arc<Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    fn start(m: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let passes = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let (s, p, b) = (stop.clone(), passes.clone(), bad.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for i in 0..300 {
                    let got = std::fs::read_to_string(m.join(rel(i)));
                    match got {
                        Ok(g) if g == content(i) => {}
                        Ok(g) => b.lock().expect("lock").push(format!(
                            "{}: {} bytes, partial or wrong",
                            rel(i),
                            g.len()
                        )),
                        Err(e) => b.lock().expect("lock").push(format!("{}: {e}", rel(i))),
                    }
                }
                let mode = std::fs::metadata(m.join("deploy.sh")).map(|x| x.permissions().mode());
                if !matches!(mode, Ok(md) if md & 0o111 != 0) {
                    b.lock().expect("lock").push(format!("deploy.sh: {mode:?}"));
                }
                p.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            passes,
            bad,
            handle: Some(handle),
        }
    }

    /// Stops the reader; returns its passes and what it saw wrong.
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let bad = std::mem::take(&mut *self.bad.lock().expect("lock"));
        (self.passes.load(Ordering::Relaxed), bad)
    }
}

/// Three nodes in a pool with replica-3 volume `v`, mounted on nodes 1 and
/// 2, holding the populated tree on every brick.
fn populated3() -> (Cluster, PathBuf, PathBuf) {
    let c = Cluster::start(3);
    c.form_pool();
    c.create_volume("v");
    let m1 = c.mount("v", 1);
    let m2 = c.mount("v", 2);
    populate(&m1);
    let bricks: Vec<PathBuf> = (1..=3).map(|i| c.brick("v", i)).collect();
    manifest::wait_same(&[m1.as_path(), m2.as_path()], T);
    let all: Vec<&Path> = bricks.iter().map(PathBuf::as_path).collect();
    manifest::wait_same(&all, T);
    (c, m1, m2)
}

/// Probes node `i` from node `from` and waits until `among` all see each
/// other connected.
fn probe(c: &Cluster, from: usize, i: usize, among: &[usize]) {
    let r = c.node(from).cli(&["peer", "probe", &c.node(i).host()]).ok();
    assert!(r.stdout.starts_with("peer probe: success"), "{}", r.stdout);
    c.wait_connected_among(among);
}

/// Node 3 dies for good (its state and brick deleted) and a node 4 joins
/// the pool: returns node 3's brick name, the name of node 4's brick to
/// be, node 4's index and its brick directory.
fn node3_dies_node4_joins(c: &mut Cluster) -> (String, String, usize, PathBuf) {
    let old = brick_name(c, "v", 3);
    let b3 = c.brick("v", 3);
    c.destroy_node(3, &[b3]);
    let n4 = c.add_node();
    probe(c, 1, n4, &[1, 2, n4]);
    let b4 = c.brick("v", n4);
    let new = format!("{}:{}", c.node(n4).ip, b4.display());
    (old, new, n4, b4)
}

/// `volume replace-brick v OLD NEW commit force` from node 1, which must
/// succeed with GlusterFS's words.
fn replace_commit(c: &Cluster, old: &str, new: &str) {
    let r = c
        .node(1)
        .cli(&["volume", "replace-brick", "v", old, new, "commit", "force"])
        .ok();
    assert_eq!(
        r.stdout.trim(),
        "volume replace-brick: success: replace-brick commit force operation successful"
    );
}

fn brick_count(c: &Cluster, i: usize) -> String {
    c.node(i)
        .cli(&["volume", "info", "v"])
        .ok()
        .stdout
        .lines()
        .find(|l| l.starts_with("Number of Bricks:"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn replace_brick_of_a_dead_node_keeps_mounts_and_history() {
    let (mut c, m1, m2) = populated3();
    let reader = Reader::start(m2.clone());
    let (old, new, n4, b4) = node3_dies_node4_joins(&mut c);
    // Refusals first: a brick that is not in the volume, a wrong keyword.
    let r = c
        .node(1)
        .cli(&[
            "volume",
            "replace-brick",
            "v",
            "127.0.0.9:/nope",
            &new,
            "commit",
            "force",
        ])
        .fails();
    assert!(
        r.stderr.starts_with(
            "volume replace-brick: failed: brick: 127.0.0.9:/nope does not exist in volume: v"
        ),
        "{}",
        r.stderr
    );
    c.node(1)
        .cli(&["volume", "replace-brick", "v", &old, &new, "start"])
        .fails();
    let started = Instant::now();
    replace_commit(&c, &old, &new);
    let b1 = c.brick("v", 1);
    manifest::wait_same(&[b1.as_path(), b4.as_path()], T);
    let fill = started.elapsed();
    println!(
        "replace-brick: 301 files refilled in {:.2} s",
        fill.as_secs_f64()
    );
    let b2 = c.brick("v", 2);
    manifest::wait_same(&[b1.as_path(), b2.as_path(), b4.as_path()], T);
    let exec = std::fs::metadata(b4.join("deploy.sh")).expect("script on the new brick");
    assert_ne!(
        exec.permissions().mode() & 0o111,
        0,
        "the executable bit is kept"
    );
    // Volume info names the new brick in the old one's place.
    let info = c.node(2).cli(&["volume", "info", "v"]).ok().stdout;
    assert!(info.contains(&format!("Brick3: {new}")), "{info}");
    assert!(!info.contains(&old), "{info}");
    // Writes keep flowing to every brick, the new one included, with no
    // split-brain: the new brick took over the old one's history.
    std::fs::write(m1.join("after.txt"), "after the replacement\n").expect("write");
    std::fs::write(m1.join(rel(7)), content(7)).expect("rewrite same content");
    for b in [&b2, &b4] {
        crate::support::heal::wait_content(
            &b.join("after.txt"),
            "after the replacement\n",
            T,
            "write after replace",
        );
    }
    wait_until(T, "heal info clean", || all_clean(c.node(1), "v"));
    let sb = c
        .node(1)
        .cli(&["volume", "heal", "v", "info", "split-brain"])
        .ok()
        .stdout;
    assert!(
        !sb.contains("Is in split-brain") && !sb.contains("entries in split-brain: 1"),
        "{sb}"
    );
    // Node 3 hosts nothing any more: it can be detached.
    let r = c.node(1).cli(&["peer", "detach", "127.0.0.3"]).ok();
    assert_eq!(r.stdout.trim(), "peer detach: success");
    for i in [1, 2, n4] {
        let out = c.node(i).cli(&["peer", "status"]).ok().stdout;
        assert!(!out.contains("127.0.0.3"), "node {i}: {out}");
    }
    let (passes, bad) = reader.finish();
    assert!(passes > 3, "the reader ran {passes} passes");
    assert!(bad.is_empty(), "the mount's reader saw: {bad:?}");
    assert_eq!(read(&m2.join("after.txt")), "after the replacement\n");
    c.assert_no_panics();
}

#[test]
fn add_brick_fills_and_remove_brick_stops_writes_but_keeps_data() {
    let (mut c, m1, m2) = populated3();
    let n4 = c.add_node();
    probe(&c, 2, n4, &[1, 2, 3, n4]);
    let b4 = c.brick("v", n4);
    let nb = format!("{}:{}", c.node(n4).ip, b4.display());
    // The count must be the current one plus the bricks given.
    let r = c
        .node(1)
        .cli(&["volume", "add-brick", "v", "replica", "5", &nb, "force"])
        .fails();
    assert!(
        r.stderr
            .starts_with("volume add-brick: failed: Incorrect replica count (5)"),
        "{}",
        r.stderr
    );
    let reader = Reader::start(m2.clone());
    let r = c
        .node(1)
        .cli(&[
            "--json",
            "volume",
            "add-brick",
            "v",
            "replica",
            "4",
            &nb,
            "force",
        ])
        .ok();
    let j = r.json();
    assert_eq!(j["success"], true, "{j}");
    assert_eq!(j["replica"], 4, "{j}");
    assert_eq!(brick_count(&c, 3), "Number of Bricks: 1 x 4 = 4");
    let b1 = c.brick("v", 1);
    let started = Instant::now();
    manifest::wait_same(&[b1.as_path(), b4.as_path()], T);
    println!(
        "add-brick: 301 files filled in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    std::fs::write(m1.join("four.txt"), "on four bricks\n").expect("write");
    for i in 2..=n4 {
        crate::support::heal::wait_content(
            &c.brick("v", i).join("four.txt"),
            "on four bricks\n",
            T,
            "write to 4 bricks",
        );
    }
    wait_until(T, "heal info clean with 4 bricks", || {
        all_clean(c.node(2), "v")
    });
    // m2 edits four.txt below: it must have the version it edits (an edit
    // of a version not yet seen would rightly be a split-brain).
    crate::support::heal::wait_content(
        &m2.join("four.txt"),
        "on four bricks\n",
        T,
        "m2 has four.txt",
    );
    // Quorum follows the size: a fixed count above what would remain refuses
    // the removal until it is lowered.
    c.node(1)
        .cli(&["volume", "set", "v", "cluster.quorum-count", "4"])
        .ok();
    let r = c
        .node(1)
        .cli(&["volume", "remove-brick", "v", "replica", "3", &nb, "force"])
        .fails();
    assert!(
        r.stderr.contains("cluster.quorum-count is 4"),
        "{}",
        r.stderr
    );
    c.node(1)
        .cli(&["volume", "reset", "v", "cluster.quorum-count"])
        .ok();
    let r = c
        .node(1)
        .cli(&["volume", "remove-brick", "v", "replica", "3", &nb])
        .fails();
    assert!(r.stderr.contains("'force' is required"), "{}", r.stderr);
    let r = c
        .node(1)
        .cli(&["volume", "remove-brick", "v", "replica", "3", &nb, "force"])
        .ok();
    assert_eq!(r.stdout.trim(), "volume remove-brick commit force: success");
    for i in 1..=n4 {
        wait_until(T, "every node sees 3 bricks", || {
            brick_count(&c, i) == "Number of Bricks: 1 x 3 = 3"
        });
    }
    // Writes continue on the remaining bricks, and no longer reach the
    // removed one, which keeps what it had.
    std::fs::write(m1.join("three.txt"), "on three bricks\n").expect("write");
    std::fs::write(m2.join("four.txt"), "changed after removal\n").expect("write");
    for i in 1..=3 {
        let b = c.brick("v", i);
        crate::support::heal::wait_content(
            &b.join("three.txt"),
            "on three bricks\n",
            T,
            "write after remove",
        );
        crate::support::heal::wait_content(
            &b.join("four.txt"),
            "changed after removal\n",
            T,
            "change after remove",
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !b4.join("three.txt").exists(),
        "the removed brick still receives writes"
    );
    assert_eq!(read(&b4.join("four.txt")), "on four bricks\n");
    assert_eq!(
        read(&b4.join(rel(5))),
        content(5),
        "the removed brick keeps its data"
    );
    wait_until(T, "heal info clean with 3 bricks", || {
        all_clean(c.node(1), "v")
    });
    let (passes, bad) = reader.finish();
    assert!(passes > 3, "the reader ran {passes} passes");
    assert!(bad.is_empty(), "the mount's reader saw: {bad:?}");
    c.assert_no_panics();
}

#[test]
fn rate_limited_heal_is_paced() {
    let mut c = Cluster::start(2);
    c.form_pool();
    c.create_volume("v");
    let m1 = c.mount("v", 1);
    let r = c
        .node(1)
        .cli(&["volume", "set", "v", "cluster.heal-rate-limit", "fast"])
        .fails();
    assert!(
        r.stderr.contains("1MB"),
        "the refusal lists the units: {}",
        r.stderr
    );
    c.node(1)
        .cli(&["volume", "set", "v", "cluster.heal-rate-limit", "1MB"])
        .ok();
    c.node(2)
        .cli(&["volume", "set", "v", "cluster.conflict-retention", "1h30m"])
        .ok();
    c.node_mut(2).kill9();
    let size = 12 << 20;
    let want = write_random(&m1.join("big.bin"), size, 11);
    let b1 = c.brick("v", 1);
    wait_until(T, "file on brick 1", || {
        hash_file(&b1.join("big.bin")) == Some(want)
    });
    let b2 = c.brick("v", 2);
    let started = Instant::now();
    c.node_mut(2).start();
    // While the paced heal runs, statistics and info say how far it is:
    // entries and bytes left, the rate, the ETA.
    let mut progress = String::new();
    wait_until(Duration::from_secs(30), "heal progress with an ETA", || {
        for cmd in [
            &["volume", "heal", "v", "statistics"][..],
            &["volume", "heal", "v", "info"],
        ] {
            let out = c.node(1).cli(cmd).stdout;
            match out
                .lines()
                .find(|l| l.starts_with("Heal progress:") && l.contains("ETA"))
            {
                Some(l) => progress = l.to_string(),
                None => return false,
            }
        }
        true
    });
    println!("{progress}");
    assert!(
        progress.contains("1 entries and ")
            && progress.contains("MB left")
            && progress.contains("/s"),
        "{progress}"
    );
    wait_until(Duration::from_secs(60), "heal of the big file", || {
        hash_file(&b2.join("big.bin")) == Some(want)
    });
    let secs = started.elapsed().as_secs_f64();
    println!("heal of 12 MiB at cluster.heal-rate-limit 1MB took {secs:.1} s");
    assert!((4.0..=30.0).contains(&secs), "took {secs:.1} s");
    c.assert_no_panics();
}

/// An operator who detaches a node and probes it straight back (a script,
/// or a change of mind) gets it back: the detach answers once the node has
/// left, so the probe finds a pool of one, never a node half-way out.
#[test]
fn a_detached_node_probed_back_at_once_rejoins() {
    let c = Cluster::start(3);
    c.form_pool();
    for from in [1, 2] {
        let r = c.node(from).cli(&["peer", "detach", "127.0.0.3"]).ok();
        assert_eq!(r.stdout.trim(), "peer detach: success");
        probe(&c, from, 3, &[1, 2, 3]);
        let status = c.node(3).cli(&["peer", "status"]).ok().stdout;
        assert!(status.starts_with("Number of Peers: 2"), "{status}");
    }
    // And it takes part in the pool's next change.
    c.create_volume("w");
}

#[test]
fn detached_node_is_told_and_can_be_probed_again_from_any_member() {
    let mut c = Cluster::start(3);
    c.form_pool();
    let r = c.node(1).cli(&["peer", "detach", "127.0.0.3"]).ok();
    assert_eq!(r.stdout.trim(), "peer detach: success");
    // The detached node learns it and stops dialing the pool.
    wait_until(T, "node 3 knows it left", || {
        c.node(3)
            .cli(&["peer", "status"])
            .stdout
            .starts_with("Number of Peers: 0")
    });
    for i in [1, 2] {
        wait_until(T, "node 3 gone from every member", || {
            !c.node(i)
                .cli(&["peer", "status"])
                .stdout
                .contains("127.0.0.3")
        });
    }
    // Probed again from another member: every member trusts it again.
    let probed = Instant::now();
    probe(&c, 2, 3, &[1, 2, 3]);
    println!(
        "re-probed node connected everywhere in {:.1} s",
        probed.elapsed().as_secs_f64()
    );
    assert!(probed.elapsed() < Duration::from_secs(15));
    let log = c.node(3).log();
    assert!(log.contains("detached from the pool"), "{log}");
    // Detached while it is down: it finds out when it comes back, stops
    // dialing, and can be probed again.
    c.node_mut(3).kill9();
    let r = c.node(1).cli(&["peer", "detach", "127.0.0.3"]).ok();
    assert_eq!(r.stdout.trim(), "peer detach: success");
    c.node_mut(3).start();
    wait_until(T, "node 3 finds out it left", || {
        c.node(3)
            .cli(&["peer", "status"])
            .stdout
            .starts_with("Number of Peers: 0")
    });
    probe(&c, 1, 3, &[1, 2, 3]);
    c.assert_no_panics();
}

/// Waits until `volume status v` on node `on` shows brick `name` online or not.
fn wait_brick_online(c: &Cluster, on: usize, name: &str, online: bool) {
    wait_until(T, "brick online state", || {
        let r = c.node(on).cli(&["--json", "volume", "status", "v"]);
        if r.code != 0 {
            return false;
        }
        let j = r.json();
        j[0]["bricks"].as_array().is_some_and(|b| {
            b.iter()
                .any(|x| x["brick"] == name && x["online"] == online)
        })
    });
}

#[test]
fn reset_brick_takes_out_of_service_and_rebuilds_in_place() {
    let (c, m1, _m2) = populated3();
    let m3 = c.mount("v", 3);
    manifest::wait_same(&[m1.as_path(), m3.as_path()], T);
    let name = brick_name(&c, "v", 3);
    let b3 = c.brick("v", 3);
    let r = c
        .node(1)
        .cli(&["--json", "volume", "reset-brick", "v", &name, "start"])
        .ok();
    assert_eq!(r.json()["success"], true);
    wait_brick_online(&c, 1, &name, false);
    c.node(2)
        .cli(&["volume", "reset-brick", "v", &name, "start"])
        .fails();
    // Out of service: changes still reach node 3's mount (through another
    // brick) but not its brick.
    std::fs::write(m1.join("while-out.txt"), "while out of service\n").expect("write");
    crate::support::heal::wait_content(
        &m3.join("while-out.txt"),
        "while out of service\n",
        T,
        "mount 3 while its brick is out",
    );
    assert!(!b3.join("while-out.txt").exists());
    let r = c.node(2).reset_brick("v", &name).ok();
    assert_eq!(
        r.stdout.trim(),
        "volume reset-brick: success: reset-brick commit force operation successful"
    );
    wait_brick_online(&c, 1, &name, true);
    let b1 = c.brick("v", 1);
    manifest::wait_same(&[b1.as_path(), b3.as_path()], T);
    std::fs::write(m1.join("after-reset.txt"), "after reset\n").expect("write");
    crate::support::heal::wait_content(
        &m3.join("after-reset.txt"),
        "after reset\n",
        T,
        "mount 3 after reset",
    );
    crate::support::heal::wait_content(
        &b3.join("after-reset.txt"),
        "after reset\n",
        T,
        "brick 3 after reset",
    );
    wait_until(T, "heal info clean", || all_clean(c.node(1), "v"));
    c.assert_no_panics();
}

/// Figures, not a check: how long `replace-brick` takes to refill a new
/// brick of many small files and of one big file (median of 3 runs each).
/// Run on a release build:
/// `GSYNC_REFILL_FILES=10000 GSYNC_REFILL_MIB=1024 cargo test --release --features failpoints --test integration refill_figures -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; prints figures"]
fn refill_figures() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let files = env("GSYNC_REFILL_FILES", 10_000);
    let mib = env("GSYNC_REFILL_MIB", 1024);
    let runs = env("GSYNC_REFILL_RUNS", 3);
    let small = |m: &Path| {
        for i in 0..files {
            let p = m.join(format!("d{:02}/f{i:05}.conf", i % 50));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, format!("key{i} = {}\n", "v".repeat(1000 + i % 3000)))
                .expect("write");
        }
    };
    let big = |m: &Path| {
        write_random(&m.join("big.bin"), (mib as u64) << 20, 7);
    };
    type Fill<'a> = &'a dyn Fn(&Path);
    let workloads: [(String, Fill); 2] = [
        (format!("{files} files of 1-4 KiB"), &small),
        (format!("one {mib} MiB file"), &big),
    ];
    for (label, fill) in workloads {
        let mut secs = Vec::new();
        for _ in 0..runs {
            let mut c = Cluster::start(3);
            c.form_pool();
            c.create_volume("v");
            let m1 = c.mount("v", 1);
            fill(&m1);
            let bricks: Vec<PathBuf> = (1..=3).map(|i| c.brick("v", i)).collect();
            // The mount holds the whole tree now: wait until every brick
            // has it too (empty bricks would look "the same" at first).
            let mut all: Vec<&Path> = vec![m1.as_path()];
            all.extend(bricks.iter().map(PathBuf::as_path));
            manifest::wait_same(&all, Duration::from_secs(1800));
            let (old, new, _, b4) = node3_dies_node4_joins(&mut c);
            let started = Instant::now();
            replace_commit(&c, &old, &new);
            manifest::wait_same(
                &[bricks[0].as_path(), b4.as_path()],
                Duration::from_secs(1800),
            );
            secs.push(started.elapsed().as_secs_f64());
            println!("refill of {label}: {:.2} s", secs[secs.len() - 1]);
        }
        secs.sort_by(f64::total_cmp);
        println!(
            "refill of {label}: median {:.2} s of {runs} runs {secs:.2?}",
            secs[secs.len() / 2]
        );
    }
}

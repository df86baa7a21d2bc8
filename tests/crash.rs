//! Crash points: the daemon aborts (like kill -9) at each step of the write
//! path; after a restart every acknowledged write is present, replicas
//! converge, and no torn file was ever visible.
//!
//! Needs a build with crash points: `cargo test --workspace --features
//! failpoints` (the README's test command); skipped otherwise.

use std::path::Path;
use std::time::Duration;

use crate::support::{manifest, wait_until, Cluster};

fn workload(m: &Path, tag: &str) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for i in 0..12 {
        let name = format!("{tag}-{i}.conf");
        let body = format!("{tag} {i}\n").repeat(i + 1).into_bytes();
        std::fs::write(m.join(&name), &body).unwrap();
        files.push((name, body));
    }
    let seed = tag
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    let big: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) ^ seed).wrapping_mul(seed | 1) as u8)
        .collect();
    std::fs::write(m.join(format!("{tag}-big.bin")), &big).unwrap();
    files.push((format!("{tag}-big.bin"), big));
    files
}

/// Runs `workload` through m1 with node `victim` armed with `point`, waits
/// for the abort, restarts the node clean and checks the invariants.
fn crash_at(point: &str, victim: usize, before: impl FnOnce(&Cluster)) {
    if !gsync_brick::failpoint::ENABLED {
        eprintln!("SKIP crash point {point}: build with --features failpoints");
        return;
    }
    let mut c = Cluster::start(3);
    c.form_pool();
    c.create_volume("cr");
    let mounts: Vec<_> = (1..=3).map(|i| c.mount("cr", i)).collect();
    let mut files = workload(&mounts[0], "pre");
    wait_until(Duration::from_secs(60), "initial convergence", || {
        (2..=3).all(|i| {
            manifest::diff(&manifest::of(&mounts[0]), &manifest::of(&mounts[i - 1])).is_none()
        })
    });
    before(&c);
    arm(&mut c, victim, point, "");
    files.extend(workload(&mounts[0], "post"));
    c.heal_network();
    died(&mut c, victim, &format!("node {victim} to hit {point}"));
    restart_clean(&mut c, victim);
    c.wait_connected();
    for (i, m) in mounts.iter().enumerate() {
        wait_until(
            Duration::from_secs(90),
            &format!("m{} converges after the crash at {point}", i + 1),
            || {
                files
                    .iter()
                    .all(|(n, body)| std::fs::read(m.join(n)).is_ok_and(|b| b == *body))
            },
        );
    }
    let want = manifest::of(&mounts[0]);
    for i in 1..=3 {
        wait_until(Duration::from_secs(60), "bricks identical", || {
            manifest::diff(&want, &manifest::of(&c.brick("cr", i))).is_none()
        });
    }
    wait_until(Duration::from_secs(30), "nothing pending", || {
        c.node(1)
            .cli(&["volume", "heal", "cr", "info"])
            .stdout
            .matches("Number of entries: 0")
            .count()
            == 3
    });
    // The abort is deliberate; anything else in the logs is a bug.
    c.assert_no_panics();
}

#[test]
fn crash_receiver_after_temp_write() {
    crash_at("store-after-temp", 2, |_| {});
}

#[test]
fn crash_receiver_after_rename_before_commit() {
    crash_at("store-after-rename", 2, |_| {});
}

#[test]
fn crash_receiver_after_commit_before_reply() {
    crash_at("store-after-commit", 3, |_| {});
}

#[test]
fn crash_sender_mid_replication() {
    crash_at("replicate-mid-send", 1, |_| {});
}

#[test]
fn crash_mid_heal() {
    // Node 3 is cut off while the second workload is written, so node 1
    // replays it as a heal when the network returns, and dies doing so.
    crash_at("heal-mid-replay", 1, |c| {
        c.partition(1, 3);
        c.partition(2, 3);
    });
}

#[test]
fn crash_agent_after_push_before_journal() {
    crash_at("agent-after-push", 1, |_| {});
}

/// Restarts node `i` with crash point `point` armed and, unless `ready` is
/// empty, waits until its mount state says `ready` (the node alive).
fn arm(c: &mut Cluster, i: usize, point: &str, ready: &str) {
    c.node_mut(i).restart_with_failpoint(point);
    if !ready.is_empty() {
        wait_until(Duration::from_secs(30), ready, || {
            c.node(i).cli(&["mount"]).stdout.contains(ready)
        });
        assert!(!c.node_mut(i).exited(), "{}", c.node(i).log());
    }
}

/// Waits until node `i` died at its armed crash point.
fn died(c: &mut Cluster, i: usize, what: &str) {
    wait_until(Duration::from_secs(60), what, || c.node_mut(i).exited());
}

/// Starts node `i` again with no crash point armed.
fn restart_clean(c: &mut Cluster, i: usize) {
    c.node_mut(i).env.clear();
    c.node_mut(i).start();
}

/// A directory and a file pushed and acknowledged just before the agent
/// died (their journal records never written), then deleted while the
/// daemon was down, stay deleted: the restarted agent finds its own
/// unrecorded versions on the brick and pushes their deletions instead of
/// taking them back as remote creations.
#[test]
fn pushed_just_before_a_crash_then_deleted_while_down_stays_deleted() {
    if !gsync_brick::failpoint::ENABLED {
        eprintln!("SKIP: build with --features failpoints");
        return;
    }
    let mut c = Cluster::start(3);
    c.form_pool();
    c.create_volume("cr");
    let m1 = c.mount("cr", 1);
    let m2 = c.mount("cr", 2);
    std::fs::write(m1.join("base"), "base\n").unwrap();
    wait_until(Duration::from_secs(30), "base on m2", || {
        m2.join("base").exists()
    });
    arm(&mut c, 1, "agent-after-push", "");
    std::fs::create_dir(m1.join("brief")).unwrap();
    std::fs::write(m1.join("brief.txt"), "brief\n").unwrap();
    died(&mut c, 1, "node 1 to die after a push");
    // Deleted while the daemon is down.
    let _ = std::fs::remove_dir(m1.join("brief"));
    let _ = std::fs::remove_file(m1.join("brief.txt"));
    restart_clean(&mut c, 1);
    std::fs::write(m1.join("after"), "after\n").unwrap();
    wait_until(Duration::from_secs(60), "after on m2", || {
        m2.join("after").exists()
    });
    std::thread::sleep(Duration::from_secs(3));
    for d in [
        &m1,
        &m2,
        &c.brick("cr", 1),
        &c.brick("cr", 2),
        &c.brick("cr", 3),
    ] {
        for p in ["brief", "brief.txt"] {
            assert!(!d.join(p).exists(), "{p} came back in {}", d.display());
        }
    }
    c.assert_no_panics();
}

/// A brick killed between placing a new file and recording it (the push
/// never acknowledged), whose sender then has nothing to send again (the
/// file was deleted meanwhile): the placed content is not left in the
/// brick directory, where it would look like a file nobody deleted, and
/// an overwrite placed but not recorded gives way to the recorded version.
#[test]
fn a_placement_the_brick_never_recorded_is_not_left_in_its_directory() {
    if !gsync_brick::failpoint::ENABLED {
        eprintln!("SKIP: build with --features failpoints");
        return;
    }
    let mut c = Cluster::start(3);
    c.form_pool();
    c.create_volume("cr");
    let m1 = c.mount("cr", 1);
    let m2 = c.mount("cr", 2);
    std::fs::write(m1.join("kept.txt"), "recorded\n").unwrap();
    wait_until(Duration::from_secs(30), "kept.txt on m2", || {
        m2.join("kept.txt").exists()
    });
    // Nodes 2 and 3 out of reach: node 1 is the only one placing.
    c.partition(1, 2);
    c.partition(1, 3);
    arm(&mut c, 1, "store-after-rename", "in sync");
    std::fs::write(m1.join("orphan.txt"), "never recorded\n").unwrap();
    died(&mut c, 1, "node 1 to die placing orphan.txt");
    let b1 = c.brick("cr", 1);
    assert!(b1.join("orphan.txt").exists(), "placed before the crash");
    // Deleted while the daemon is down: nobody will send it again.
    std::fs::remove_file(m1.join("orphan.txt")).unwrap();
    restart_clean(&mut c, 1);
    c.heal_network();
    std::fs::write(m2.join("after"), "after\n").unwrap();
    for d in [&m1, &b1] {
        wait_until(Duration::from_secs(60), "after everywhere", || {
            d.join("after").exists()
        });
    }
    std::thread::sleep(Duration::from_secs(2));
    for d in [&m1, &m2, &b1, &c.brick("cr", 2), &c.brick("cr", 3)] {
        assert!(
            !d.join("orphan.txt").exists(),
            "orphan.txt left in {}",
            d.display()
        );
        assert_eq!(crate::support::read(&d.join("kept.txt")), "recorded\n");
    }

    // An overwrite placed but never recorded, undone in the folder while
    // the daemon is down (so nothing is pushed again).
    c.partition(1, 2);
    c.partition(1, 3);
    arm(&mut c, 1, "store-after-rename", "in sync");
    std::fs::write(m1.join("kept.txt"), "overwritten, never recorded\n").unwrap();
    died(&mut c, 1, "node 1 to die placing the overwrite");
    assert_eq!(
        crate::support::read(&b1.join("kept.txt")),
        "overwritten, never recorded\n",
        "placed before the crash"
    );
    std::fs::write(m1.join("kept.txt"), "recorded\n").unwrap();
    restart_clean(&mut c, 1);
    c.heal_network();
    std::fs::write(m2.join("after2"), "after\n").unwrap();
    for d in [&m1, &b1] {
        wait_until(Duration::from_secs(60), "after2 everywhere", || {
            d.join("after2").exists()
        });
    }
    for d in [&m1, &m2, &b1, &c.brick("cr", 2), &c.brick("cr", 3)] {
        assert_eq!(
            crate::support::read(&d.join("kept.txt")),
            "recorded\n",
            "{}",
            d.display()
        );
    }
    c.assert_no_panics();
}

/// A push acknowledged just before the agent died and deleted while it
/// was down (as in `pushed_just_before_a_crash_then_deleted_while_down_stays_deleted`),
/// when the brick that acknowledged the push is out of reach once the
/// agent is back: a mount on a node without a brick follows
/// brick 2, which is cut off from the other bricks; the push of
/// `brief.txt` is acknowledged there, the agent dies before recording it,
/// the file is deleted meanwhile, and the restarted agent can only follow
/// brick 3, which never heard of it. When brick 2 returns and replicates
/// that version, the mount knows it for its own and pushes the deletion:
/// the file never comes back.
#[test]
fn pushed_to_a_brick_out_of_reach_after_a_crash_then_deleted_stays_deleted() {
    if !gsync_brick::failpoint::ENABLED {
        eprintln!("SKIP: build with --features failpoints");
        return;
    }
    let mut c = Cluster::start(4);
    c.form_pool();
    // Bricks on nodes 2-4; node 1 only mounts.
    let mut args: Vec<String> = ["volume", "create", "cr", "replica", "3"]
        .map(String::from)
        .to_vec();
    for i in 2..=4 {
        args.push(format!("{}:{}", c.node(i).ip, c.brick("cr", i).display()));
    }
    args.push("force".into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    c.node(1).cli(&a).ok();
    c.node(1).cli(&["volume", "start", "cr"]).ok();
    let m1 = c.path("m1");
    c.mount_from(1, 2, "cr", &m1);
    let m3 = c.mount("cr", 3);
    std::fs::write(m1.join("base"), "base\n").unwrap();
    wait_until(Duration::from_secs(30), "base on m3", || {
        m3.join("base").exists()
    });
    c.partition(2, 3);
    c.partition(2, 4);
    let follows_2 = format!("in sync, following {}:", c.node(2).ip);
    arm(&mut c, 1, "agent-after-push", &follows_2);
    std::fs::write(m1.join("brief.txt"), "brief\n").unwrap();
    died(&mut c, 1, "node 1 to die after a push");
    assert!(
        c.brick("cr", 2).join("brief.txt").exists(),
        "the push went to brick 2"
    );
    // Deleted while the daemon is down; brick 2 is now out of its reach.
    std::fs::remove_file(m1.join("brief.txt")).unwrap();
    c.node(2).block(c.node(1));
    restart_clean(&mut c, 1);
    std::fs::write(m1.join("after"), "after\n").unwrap();
    wait_until(Duration::from_secs(60), "after on m3", || {
        m3.join("after").exists()
    });
    // Brick 2 returns and replicates what it holds.
    c.heal_network();
    wait_until(Duration::from_secs(60), "brick 2 in step again", || {
        !c.brick("cr", 2).join("brief.txt").exists() && c.brick("cr", 2).join("after").exists()
    });
    std::thread::sleep(Duration::from_secs(3));
    for d in [
        &m1,
        &m3,
        &c.brick("cr", 2),
        &c.brick("cr", 3),
        &c.brick("cr", 4),
    ] {
        assert!(
            !d.join("brief.txt").exists(),
            "brief.txt came back in {}",
            d.display()
        );
    }
    c.assert_no_panics();
}

/// Many files written at once (their commits grouped on every brick):
/// once `gsync wait` says every brick stored them, all three daemons are
/// killed with SIGKILL together. Every brick's database then records each
/// file, with its content hash and a sequence number of its own, and the
/// brick holds that content; the daemons start again on those databases.
#[test]
fn acknowledged_group_commits_survive_kill9_of_every_node() {
    let mut c = Cluster::start(3);
    c.form_pool();
    c.create_volume("gc");
    let m1 = c.mount("gc", 1);
    let mut files = Vec::new();
    for i in 0..300 {
        let name = format!("d{}/f{i}.conf", i % 4);
        let body = format!("group commit {i}\n").repeat(i % 9 + 1).into_bytes();
        let p = m1.join(&name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &body).unwrap();
        files.push((name, body));
    }
    let m1s = m1.to_string_lossy().into_owned();
    c.node(1)
        .cli(&["wait", &m1s, "--replicas", "3", "--timeout", "120s"])
        .ok();
    for i in 1..=3 {
        c.node_mut(i).kill9();
    }
    for i in 1..=3 {
        let brick = c.brick("gc", i);
        let db = rusqlite::Connection::open(brick.join(".gsync/meta.db")).unwrap();
        let (rows, seqs): (i64, i64) = db
            .query_row(
                "SELECT COUNT(*), COUNT(DISTINCT seq) FROM entries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(rows, seqs, "brick {i}: two entries share a sequence number");
        for (name, body) in &files {
            let blob: Vec<u8> = db
                .query_row("SELECT entry FROM entries WHERE path = ?1", [name], |r| {
                    r.get(0)
                })
                .unwrap_or_else(|e| panic!("brick {i}: {name} acknowledged, not recorded: {e}"));
            let e: gsync_brick::store::types::Entry =
                gsync_brick::wire::codec::decode(&blob).unwrap();
            assert_eq!(
                e.hash,
                *blake3::hash(body).as_bytes(),
                "brick {i}: {name} recorded with another content"
            );
            assert_eq!(
                std::fs::read(brick.join(name)).ok().as_ref(),
                Some(body),
                "brick {i}: {name} recorded, not on disk"
            );
        }
    }
    for i in 1..=3 {
        c.node_mut(i).start();
    }
    c.wait_connected();
    wait_until(
        Duration::from_secs(60),
        "m1 intact after the restart",
        || {
            files
                .iter()
                .all(|(n, body)| std::fs::read(m1.join(n)).is_ok_and(|b| b == *body))
        },
    );
    c.assert_no_panics();
}

/// Many small files replicated in batches, with one path among them the
/// receiving brick refuses (its parent there was swapped for a link out of
/// the brick), and the receiver dying (abort, as kill -9) half-way through
/// applying a batch, before answering it: after the restart every file is
/// on it with the writer's content, nothing went through the link, the
/// refused path held up none of the others, and it arrives once the cause
/// is gone.
#[test]
fn a_batch_cut_by_a_crash_with_a_refused_path_in_it() {
    if !gsync_brick::failpoint::ENABLED {
        eprintln!("SKIP: build with --features failpoints");
        return;
    }
    let mut c = Cluster::start(3);
    c.form_pool();
    c.create_volume("bt");
    let m1 = c.mount("bt", 1);
    for d in ["a", "b", "sub"] {
        std::fs::create_dir_all(m1.join(d)).unwrap();
        std::fs::write(m1.join(d).join("first.txt"), format!("{d}\n")).unwrap();
    }
    wait_until(
        Duration::from_secs(60),
        "the directories on every brick",
        || {
            (2..=3).all(|i| {
                ["a", "b", "sub"]
                    .iter()
                    .all(|d| c.brick("bt", i).join(d).join("first.txt").is_file())
            })
        },
    );
    // Behind gsync's back, brick 2's `sub` becomes a link out of the brick.
    let outside = c.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let sub2 = c.brick("bt", 2).join("sub");
    let aside = c.path("sub-aside");
    std::fs::rename(&sub2, &aside).unwrap();
    std::os::unix::fs::symlink(&outside, &sub2).unwrap();
    arm(&mut c, 2, "batch-mid-apply", "");
    // One push group (every path at depth 2), the refused one in the middle.
    let mut files = Vec::new();
    for i in 0..400 {
        let name = if i == 200 {
            "sub/blocked.txt".to_string()
        } else {
            format!("{}/f{i:03}.txt", if i < 200 { "a" } else { "b" })
        };
        let body = format!("batch {i}\n").repeat(i % 7 + 1).into_bytes();
        std::fs::write(m1.join(&name), &body).unwrap();
        files.push((name, body));
    }
    died(&mut c, 2, "node 2 to die half-way through a batch");
    restart_clean(&mut c, 2);
    c.wait_connected();
    let b2 = c.brick("bt", 2);
    let b3 = c.brick("bt", 3);
    let holds = |dir: &Path, skip: &str| {
        files
            .iter()
            .filter(|(n, _)| n != skip)
            .all(|(n, body)| std::fs::read(dir.join(n)).is_ok_and(|b| b == *body))
    };
    wait_until(
        Duration::from_secs(90),
        "every other file on brick 2",
        || holds(&b2, "sub/blocked.txt"),
    );
    wait_until(Duration::from_secs(60), "every file on brick 3", || {
        holds(&b3, "")
    });
    let log = c.node(2).log();
    assert!(
        log.contains("escapes the brick through a symlink"),
        "brick 2 did not refuse sub/blocked.txt:\n{log}"
    );
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "written through the link out of brick 2"
    );
    // The cause gone, the refused path arrives.
    std::fs::remove_file(&sub2).unwrap();
    std::fs::rename(&aside, &sub2).unwrap();
    wait_until(
        Duration::from_secs(120),
        "sub/blocked.txt on brick 2 once its parent is a directory again",
        || holds(&b2, ""),
    );
    let want = manifest::of(&m1);
    for i in 1..=3 {
        wait_until(Duration::from_secs(60), "bricks identical", || {
            manifest::diff(&want, &manifest::of(&c.brick("bt", i))).is_none()
        });
    }
    wait_until(Duration::from_secs(30), "nothing pending", || {
        c.node(1)
            .cli(&["volume", "heal", "bt", "info"])
            .stdout
            .matches("Number of entries: 0")
            .count()
            == 3
    });
    c.assert_no_panics();
}

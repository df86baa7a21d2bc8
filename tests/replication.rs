//! Replicated bricks (issue 3): three real daemons on loopback, a replica-3
//! volume, writes made through mount agents (the normal writers), and the
//! bricks compared on disk.

use std::os::unix::fs::{symlink, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::manifest::{self, wait_same};
use crate::support::replication::{
    all_counters, bricks, counter, has_size, hash_file, list, mib_per_s, place_random, proc_kib,
    split_brain, volume,
};
use crate::support::{eventually, wait_until, Cluster};

const MIB: u64 = 1024 * 1024;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// Files, nested and empty directories, symlinks (one pointing outside the
/// volume, kept as a link), mode bits, deletes and renames, written through
/// mounts, reach all three bricks: the brick trees are identical.
#[test]
fn tree_reaches_every_brick() {
    let c = volume(3);
    let m1 = c.mount("v", 1);
    let m2 = c.mount("v", 2);

    std::fs::write(m1.join("a.txt"), "alpha\n").unwrap();
    std::fs::create_dir_all(m1.join("dir/sub")).unwrap();
    std::fs::write(m1.join("dir/sub/deep.txt"), "deep\n").unwrap();
    std::fs::write(m1.join("dir/top.txt"), "").unwrap();
    std::fs::create_dir_all(m1.join("empty")).unwrap();
    std::fs::create_dir_all(m1.join("nested/empty2/empty3")).unwrap();
    std::fs::write(m1.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(m1.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(m1.join("secret"), "s3cret").unwrap();
    std::fs::set_permissions(m1.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(m1.join("private")).unwrap();
    std::fs::set_permissions(m1.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink("a.txt", m1.join("link")).unwrap();
    symlink("dir/sub", m1.join("dirlink")).unwrap();
    symlink("/etc/hostname", m1.join("outside")).unwrap();
    symlink("../../../elsewhere", m1.join("dir/up")).unwrap();

    let b = bricks(&c, "v");
    wait_until(Duration::from_secs(30), "the tree on brick 3", || {
        b.iter()
            .all(|d| d.join("dir/up").symlink_metadata().is_ok() && d.join("private").is_dir())
    });
    let m = wait_same(&b, Duration::from_secs(30));
    let want = manifest::of(&m1);
    assert_eq!(
        manifest::diff(&want, &m),
        None,
        "brick 1 differs from the mount"
    );
    for d in &b {
        assert_eq!(mode(&d.join("run.sh")), 0o755, "{}", d.display());
        assert_eq!(mode(&d.join("secret")), 0o600, "{}", d.display());
        assert_eq!(mode(&d.join("private")), 0o700, "{}", d.display());
        assert!(d.join("empty").is_dir() && d.join("nested/empty2/empty3").is_dir());
        let out = d.join("outside");
        assert!(
            out.symlink_metadata().unwrap().file_type().is_symlink(),
            "outside link resolved on {}",
            d.display()
        );
        assert_eq!(
            std::fs::read_link(&out).unwrap(),
            Path::new("/etc/hostname")
        );
        assert_eq!(
            std::fs::read_link(d.join("dir/up")).unwrap(),
            Path::new("../../../elsewhere")
        );
        assert_eq!(std::fs::read_to_string(d.join("link")).unwrap(), "alpha\n");
    }

    // Changes made on another mount: delete, renames (file and directory),
    // chmod, rewrite, retarget a link.
    wait_until(Duration::from_secs(30), "mount 2 caught up", || {
        manifest::diff(&manifest::of(&m1), &manifest::of(&m2)).is_none()
    });
    std::fs::remove_file(m2.join("secret")).unwrap();
    std::fs::rename(m2.join("dir/sub/deep.txt"), m2.join("dir/moved.txt")).unwrap();
    std::fs::rename(m2.join("nested"), m2.join("renamed")).unwrap();
    std::fs::set_permissions(m2.join("run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(m2.join("a.txt"), "alpha, second version\n").unwrap();
    std::fs::remove_file(m2.join("link")).unwrap();
    symlink("run.sh", m2.join("link")).unwrap();
    std::fs::remove_dir(m2.join("empty")).unwrap();

    wait_until(
        Duration::from_secs(30),
        "the changes on every brick",
        || {
            b.iter().all(|d| {
                d.join("secret").symlink_metadata().is_err()
                    && d.join("dir/moved.txt").is_file()
                    && d.join("dir/sub/deep.txt").symlink_metadata().is_err()
                    && d.join("renamed/empty2/empty3").is_dir()
                    && d.join("nested").symlink_metadata().is_err()
                    && d.join("empty").symlink_metadata().is_err()
                    && std::fs::read_link(d.join("link")).is_ok_and(|t| t == Path::new("run.sh"))
                    && mode(&d.join("run.sh")) == 0o700
            })
        },
    );
    let m = wait_same(&b, Duration::from_secs(30));
    assert_eq!(
        manifest::diff(&manifest::of(&m2), &m),
        None,
        "bricks differ from mount 2"
    );
    assert_eq!(
        std::fs::read_to_string(b[2].join("a.txt")).unwrap(),
        "alpha, second version\n"
    );
    // Nothing of gsync's leaks into the volume.
    for d in &b {
        assert!(
            list(d)
                .iter()
                .all(|p| p.starts_with(".gsync") || !p.contains(".gsync-tmp-")),
            "{:?}",
            list(d)
        );
        assert!(
            list(&d.join(".gsync/tmp")).is_empty(),
            "temp files left in {}",
            d.display()
        );
    }
    c.assert_no_panics();
}

/// Peak RSS (VmHWM, MiB) of node `i`'s daemon.
fn hwm_mib(c: &Cluster, i: usize) -> u64 {
    c.node(i)
        .pid()
        .and_then(|p| proc_kib(p, "VmHWM"))
        .unwrap_or(0)
        / 1024
}

/// A replica-3 volume whose node 1 runs with `failpoint` armed (one that
/// makes big-file offers slow), mounts on nodes 1 and 2, the bricks, and
/// a 1 MiB content to write.
fn slow_offers(failpoint: &str) -> (Cluster, [PathBuf; 2], Vec<PathBuf>, Vec<u8>) {
    let mut c = volume(3);
    c.node_mut(1).restart_with_failpoint(failpoint);
    c.wait_connected();
    let m = [c.mount("v", 1), c.mount("v", 2)];
    let b = bricks(&c, "v");
    let big: Vec<u8> = (0..MIB).map(|i| (i * 7 % 251) as u8).collect();
    (c, m, b, big)
}

/// A small file written into `from` shows on `to` (within 15 s).
fn small_write_reaches(from: &Path, to: &Path) {
    std::fs::write(from.join("small.txt"), "written after the big one\n").unwrap();
    wait_until(Duration::from_secs(15), "small.txt on m2", || {
        std::fs::read(to.join("small.txt")).is_ok_and(|d| d == b"written after the big one\n")
    });
}

/// A file on its way to the other bricks does not hold up the small
/// changes written after it: they reach the other bricks and mounts while
/// the big one is still under way. (A test-build failpoint makes every
/// single-file offer of node 1's brick wait 20 s, as a transfer of
/// gigabytes would; before, the replication pass waited for it and the
/// small file came after.)
#[test]
fn small_changes_overtake_a_big_file_on_its_way() {
    if !gsync_brick::failpoint::ENABLED {
        eprintln!("SKIP: build with --features failpoints");
        return;
    }
    let (c, [m1, m2], b, big) = slow_offers("replicate-slow-offer");
    std::fs::write(m1.join("big.bin"), &big).unwrap();
    wait_until(Duration::from_secs(30), "big.bin on brick 1", || {
        has_size(&b[0].join("big.bin"), MIB)
    });
    small_write_reaches(&m1, &m2);
    assert!(
        !has_size(&b[1].join("big.bin"), MIB),
        "big.bin reached brick 2 before the small file: nothing overtook it"
    );
    wait_until(Duration::from_secs(90), "big.bin on m2 in the end", || {
        std::fs::read(m2.join("big.bin")).is_ok_and(|d| d == big)
    });
    c.assert_no_panics();
}

/// The mount's side of the same story: a big file on its way from the
/// writing mount to its brick does not hold up the small changes written
/// after it; and a folder deleted while a file inside it is on its way is
/// deleted everywhere once that offer ended (never brought back).
#[test]
fn a_mounts_small_changes_overtake_its_big_file_on_its_way() {
    if !gsync_brick::failpoint::ENABLED {
        eprintln!("SKIP: build with --features failpoints");
        return;
    }
    // Every big-file offer of node 1's mount waits 20 s before it starts.
    let (c, [m1, m2], b, big) = slow_offers("agent-slow-offer");
    std::fs::write(m1.join("big.bin"), &big).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    small_write_reaches(&m1, &m2);
    assert!(
        !b[0].join("big.bin").exists(),
        "big.bin reached brick 1 before the small file: nothing overtook it"
    );
    // A folder whose file is on its way, deleted meanwhile.
    std::fs::create_dir(m1.join("d")).unwrap();
    std::fs::write(m1.join("d/keep.txt"), "small\n").unwrap();
    wait_until(Duration::from_secs(15), "d/keep.txt on m2", || {
        m2.join("d/keep.txt").exists()
    });
    std::fs::write(m1.join("d/big2.bin"), &big).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_dir_all(m1.join("d")).unwrap();
    wait_until(Duration::from_secs(90), "big.bin on m2 in the end", || {
        std::fs::read(m2.join("big.bin")).is_ok_and(|d| d == big)
    });
    wait_until(Duration::from_secs(60), "d deleted everywhere", || {
        !m2.join("d").exists() && b.iter().all(|x| !x.join("d").exists())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !m1.join("d").exists() && !m2.join("d").exists(),
        "d came back"
    );
    c.assert_no_panics();
}

/// The receiving side: while a mount fetches a big file (seconds), the
/// small changes the feed brings after it go live at once; the big one
/// follows when its fetch ends.
#[test]
fn small_changes_go_live_while_a_big_file_is_fetched() {
    if !gsync_brick::failpoint::ENABLED {
        eprintln!("SKIP: build with --features failpoints");
        return;
    }
    // Every file node 1's mount fetches waits 5 s before it goes live.
    let (c, [m1, m2], b, big) = slow_offers("agent-slow-stage");
    std::fs::write(m2.join("big.bin"), &big).unwrap();
    wait_until(Duration::from_secs(30), "big.bin on brick 1", || {
        std::fs::read(b[0].join("big.bin")).is_ok_and(|d| d == big)
    });
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(m2.join("small.txt"), "written after the big one\n").unwrap();
    wait_until(Duration::from_secs(4), "small.txt on m1", || {
        m1.join("small.txt").exists()
    });
    assert!(
        !m1.join("big.bin").exists(),
        "big.bin went live before the small file: nothing overtook it"
    );
    // Meanwhile the mount says so, and never "in sync".
    let l = crate::support::mounts::mount_list(&c, 1);
    assert!(
        l.contains("receiving 1 big file") && !l.contains("in sync"),
        "{l}"
    );
    wait_until(Duration::from_secs(30), "big.bin on m1 in the end", || {
        std::fs::read(m1.join("big.bin")).is_ok_and(|d| d == big)
    });
    c.assert_no_panics();
}

/// An edit made in a folder while its mount fetches a set from the volume
/// (seconds, for a big file) is never overwritten nor deleted by that set:
/// the folder keeps it and pushes it, and the volume decides (a new
/// version concurrent with the edit: split-brain, both kept; a deletion
/// concurrent with it: the edit wins).
#[test]
fn an_edit_made_while_a_set_is_on_its_way_is_kept() {
    if !gsync_brick::failpoint::ENABLED {
        eprintln!("SKIP: build with --features failpoints");
        return;
    }
    // Every file node 1's mount fetches waits 5 s before it goes live.
    let (c, [m1, m2], b, big) = slow_offers("agent-slow-stage");
    std::fs::write(m2.join("f.bin"), &big).unwrap();
    wait_until(Duration::from_secs(30), "f.bin on m1", || {
        std::fs::read(m1.join("f.bin")).is_ok_and(|d| d == big)
    });
    let v2: Vec<u8> = big.iter().map(|x| x.wrapping_add(1)).collect();
    std::fs::write(m2.join("f.bin"), &v2).unwrap();
    wait_until(Duration::from_secs(30), "v2 on brick 1", || {
        std::fs::read(b[0].join("f.bin")).is_ok_and(|d| d == v2)
    });
    // m1 is fetching v2 now: the user edits the file there meanwhile.
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(m1.join("f.bin"), "edited on m1 meanwhile\n").unwrap();
    std::thread::sleep(Duration::from_secs(10));
    let now = std::fs::read(m1.join("f.bin")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&now[..now.len().min(64)]),
        "edited on m1 meanwhile\n",
        "the edit made on m1 while it fetched v2 was overwritten"
    );
    // Pushed with the base it was made on: concurrent with v2, so both
    // are kept and the operator is told.
    wait_until(Duration::from_secs(20), "f.bin in split-brain", || {
        c.node(1)
            .cli(&["volume", "heal", "v", "info", "split-brain"])
            .stdout
            .contains("/f.bin")
    });
    // Nor is a file deleted under an edit made while the deletion waited
    // for a big file of its changeset.
    std::fs::write(m2.join("x.txt"), "x v1\n").unwrap();
    wait_until(Duration::from_secs(30), "x.txt on m1", || {
        m1.join("x.txt").exists()
    });
    std::fs::write(m2.join("big2.bin"), &big).unwrap();
    std::fs::remove_file(m2.join("x.txt")).unwrap();
    wait_until(Duration::from_secs(30), "x.txt deleted on brick 1", || {
        !b[0].join("x.txt").exists() && b[0].join("big2.bin").exists()
    });
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(m1.join("x.txt"), "x edited on m1 meanwhile\n").unwrap();
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        std::fs::read_to_string(m1.join("x.txt")).ok().as_deref(),
        Some("x edited on m1 meanwhile\n"),
        "the edit made on m1 while the deletion waited was lost"
    );
    // The edit wins over the deletion it was concurrent with, everywhere.
    wait_until(Duration::from_secs(20), "the edit on m2", || {
        std::fs::read_to_string(m2.join("x.txt")).is_ok_and(|d| d == "x edited on m1 meanwhile\n")
    });
    c.assert_no_panics();
}

/// A 256 MiB file reaches every brick in bounded memory; a 1 MiB change in
/// its middle moves only the chunks around the change.
#[test]
fn large_file_and_small_delta() {
    const SIZE: u64 = 256 * MIB;
    let c = volume(3);
    let m1 = c.mount("v", 1);
    let b = bricks(&c, "v");
    let before = all_counters(c.node(1), "v", 3);

    let t0 = Instant::now();
    let hash = place_random(&c, &m1.join("big.bin"), SIZE, 0x5eed);
    let written = t0.elapsed();
    let t = Instant::now();
    let mut first = None;
    wait_until(
        Duration::from_secs(240),
        "256 MiB on bricks 2 and 3",
        || {
            if first.is_none() && has_size(&b[0].join("big.bin"), SIZE) {
                first = Some(t.elapsed());
            }
            has_size(&b[1].join("big.bin"), SIZE) && has_size(&b[2].join("big.bin"), SIZE)
        },
    );
    let all = t.elapsed();
    let on_brick1 = first.unwrap_or(all);
    for d in &b {
        assert_eq!(
            hash_file(&d.join("big.bin")),
            Some(hash),
            "content on {}",
            d.display()
        );
    }
    let hwm: Vec<u64> = (1..=3).map(|i| hwm_mib(&c, i)).collect();
    let after = all_counters(c.node(1), "v", 3);
    for i in [2, 3] {
        let got = counter(&after, i, "bytes_received") - counter(&before, i, "bytes_received");
        assert!(got >= SIZE, "brick {i} received only {got} bytes");
    }

    // 1 MiB changed in place in the middle.
    let before = after;
    let inodes: Vec<u64> = b
        .iter()
        .map(|d| std::fs::metadata(d.join("big.bin")).unwrap().ino())
        .collect();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m1.join("big.bin"))
        .unwrap();
    let mut patch = vec![0u8; MIB as usize];
    let mut st = 0xdead_beef;
    crate::support::replication::fill(&mut patch, &mut st);
    f.write_all_at(&patch, SIZE / 2).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let new_hash = hash_file(&m1.join("big.bin")).unwrap();
    let t = Instant::now();
    wait_until(
        Duration::from_secs(180),
        "the change placed on every brick",
        || {
            b.iter().zip(&inodes).all(|(d, ino)| {
                std::fs::metadata(d.join("big.bin"))
                    .is_ok_and(|m| m.len() == SIZE && m.ino() != *ino)
            })
        },
    );
    wait_until(
        Duration::from_secs(60),
        "the changed content on every brick",
        || {
            b.iter()
                .all(|d| hash_file(&d.join("big.bin")) == Some(new_hash))
        },
    );
    let delta_time = t.elapsed();
    let after = all_counters(c.node(1), "v", 3);
    let recv: Vec<u64> = (1..=3)
        .map(|i| counter(&after, i, "bytes_received") - counter(&before, i, "bytes_received"))
        .collect();
    let reused: Vec<u64> = (1..=3)
        .map(|i| counter(&after, i, "chunks_reused") - counter(&before, i, "chunks_reused"))
        .collect();
    let hwm_after: Vec<u64> = (1..=3).map(|i| hwm_mib(&c, i)).collect();

    eprintln!(
        "REPLICATION-FIGURES: 256MiB file: generate+write {:.1}s; visible on brick1 {:.1}s; on all 3 bricks {:.1}s = {:.1} MiB/s end to end",
        written.as_secs_f64(),
        on_brick1.as_secs_f64(),
        all.as_secs_f64(),
        mib_per_s(SIZE, all)
    );
    eprintln!(
        "REPLICATION-FIGURES: brick-to-brick (after brick1 had it): {:.1}s = {:.1} MiB/s to 2 peers",
        (all - on_brick1).as_secs_f64(),
        mib_per_s(SIZE, all.saturating_sub(on_brick1))
    );
    eprintln!("REPLICATION-FIGURES: peak RSS (VmHWM) after 256MiB: node1 (writer+agent) {} MiB, node2 {} MiB, node3 {} MiB", hwm[0], hwm[1], hwm[2]);
    eprintln!(
        "REPLICATION-FIGURES: 1MiB in-place change: bytes received brick1 {} / brick2 {} / brick3 {} (chunks reused {:?}), all bricks updated in {:.1}s",
        recv[0],
        recv[1],
        recv[2],
        reused,
        delta_time.as_secs_f64()
    );
    eprintln!("REPLICATION-FIGURES: peak RSS (VmHWM) at end: {hwm_after:?} MiB");

    for i in [1usize, 2] {
        assert!(
            recv[i] < 4 * MIB,
            "brick {} received {} bytes for a 1 MiB change",
            i + 1,
            recv[i]
        );
        assert!(
            recv[i] >= MIB,
            "brick {} received only {} bytes",
            i + 1,
            recv[i]
        );
    }
    for i in [2usize, 3] {
        assert!(
            hwm_after[i - 1] < 150,
            "node {i} peak RSS {} MiB",
            hwm_after[i - 1]
        );
    }
    c.assert_no_panics();
}

/// kill -9 of a receiving daemon in the middle of a large transfer: no
/// partial file ever appears at the real path of its brick, and once it is
/// back the file arrives complete (pending index replay).
#[test]
fn receiver_killed_mid_transfer_never_shows_a_partial_file() {
    const SIZE: u64 = 96 * MIB;
    let mut c = volume(3);
    let m1 = c.mount("v", 1);
    let b3 = c.brick("v", 3);
    let target = b3.join("big.bin");

    // Watch the real path the whole time: absent, or complete and right.
    let stop = Arc::new(AtomicBool::new(false));
    let bad: Arc<Mutex<Vec<String>>> = Arc::default();
    let expect: Arc<Mutex<Option<[u8; 32]>>> = Arc::default();
    let watcher = {
        let (stop, bad, expect, target) =
            (stop.clone(), bad.clone(), expect.clone(), target.clone());
        std::thread::spawn(move || {
            let mut checked = None;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(m) = std::fs::symlink_metadata(&target) {
                    let id = (m.ino(), m.mtime_nsec(), m.len());
                    if m.len() != SIZE {
                        bad.lock()
                            .unwrap()
                            .push(format!("partial file of {} bytes", m.len()));
                    } else if checked != Some(id) {
                        let want = *expect.lock().unwrap();
                        if hash_file(&target) != want {
                            bad.lock()
                                .unwrap()
                                .push("complete-size file with the wrong hash".into());
                        }
                        checked = Some(id);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let hash = {
        let tmp = c.path("staging-kill");
        let h = crate::support::replication::write_random(&tmp, SIZE, 0xc0ffee);
        *expect.lock().unwrap() = Some(h);
        std::fs::rename(&tmp, m1.join("big.bin")).unwrap();
        h
    };
    // Wait until brick 3 is receiving: its temp file grows.
    let tmp3 = b3.join(".gsync/tmp");
    let receiving = eventually(Duration::from_secs(120), || {
        std::fs::read_dir(&tmp3)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 4 * MIB))
    });
    assert!(receiving, "brick 3 never started receiving");
    let partial: u64 = std::fs::read_dir(&tmp3)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let done_before_kill = target.symlink_metadata().is_ok();
    c.node_mut(3).kill9();
    eprintln!("killed node 3 with {partial} of {SIZE} bytes in its temp file (file already placed: {done_before_kill})");
    assert!(
        done_before_kill || target.symlink_metadata().is_err(),
        "the file is at the real path although the transfer was cut"
    );

    c.node_mut(3).start();
    wait_until(
        Duration::from_secs(180),
        "the file on brick 3 after restart",
        || has_size(&target, SIZE),
    );
    assert_eq!(hash_file(&target), Some(hash));
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let bad = bad.lock().unwrap().clone();
    assert!(bad.is_empty(), "the real path showed: {bad:?}");
    // Temp files of the cut transfer were cleaned up.
    wait_until(Duration::from_secs(10), "no temp files on brick 3", || {
        list(&tmp3).is_empty()
    });
    wait_same(&bricks(&c, "v"), Duration::from_secs(30));
    c.assert_no_panics();
}

/// Concurrent writes of different content to one path on two bricks that
/// cannot see each other become siblings (split-brain) on both; identical
/// content written the same way merges silently.
#[test]
fn concurrent_writes_while_partitioned() {
    let c = volume(3);
    let m1 = c.mount("v", 1);
    let m2 = c.mount("v", 2);
    let b = bricks(&c, "v");
    // A base version both sides saw.
    std::fs::write(m1.join("base.txt"), "base\n").unwrap();
    wait_until(Duration::from_secs(30), "base on mount 2", || {
        std::fs::read(m2.join("base.txt")).is_ok_and(|d| d == b"base\n")
    });

    // Nobody can relay: every pair is cut.
    c.partition(1, 2);
    c.partition(1, 3);
    c.partition(2, 3);
    wait_until(
        Duration::from_secs(20),
        "nodes 1 and 2 see the partition",
        || {
            c.node(1)
                .cli(&["peer", "status"])
                .stdout
                .matches("(Disconnected)")
                .count()
                == 2
                && c.node(2)
                    .cli(&["peer", "status"])
                    .stdout
                    .matches("(Disconnected)")
                    .count()
                    == 2
        },
    );

    std::fs::write(m1.join("conflict.txt"), "written on node 1\n").unwrap();
    std::fs::write(m2.join("conflict.txt"), "written on node 2, longer\n").unwrap();
    std::fs::write(m1.join("same.txt"), "identical\n").unwrap();
    std::fs::write(m2.join("same.txt"), "identical\n").unwrap();
    std::fs::write(m1.join("base.txt"), "base changed on 1\n").unwrap();
    std::fs::write(m2.join("base.txt"), "base changed on 2\n").unwrap();
    wait_until(
        Duration::from_secs(30),
        "each brick has its own side",
        || {
            std::fs::read(b[0].join("conflict.txt")).is_ok_and(|d| d == b"written on node 1\n")
                && std::fs::read(b[1].join("conflict.txt"))
                    .is_ok_and(|d| d == b"written on node 2, longer\n")
                && b[0].join("same.txt").is_file()
                && b[1].join("same.txt").is_file()
                && std::fs::read(b[0].join("base.txt")).is_ok_and(|d| d == b"base changed on 1\n")
                && std::fs::read(b[1].join("base.txt")).is_ok_and(|d| d == b"base changed on 2\n")
        },
    );

    c.heal_network();
    c.wait_connected();
    let want = vec!["base.txt".to_string(), "conflict.txt".to_string()];
    let mut last = Default::default();
    let ok = eventually(Duration::from_secs(30), || {
        last = split_brain(c.node(1), "v");
        last.len() == 3 && last.values().all(|v| *v == want)
    });
    assert!(ok, "split-brain lists: {last:?}");
    let text = c
        .node(3)
        .cli(&["volume", "heal", "v", "info", "split-brain"])
        .ok()
        .stdout;
    assert_eq!(text.matches("/conflict.txt").count(), 3, "{text}");
    assert!(!text.contains("same.txt"), "{text}");
    assert_eq!(
        text.matches("Number of entries in split-brain: 2").count(),
        3,
        "{text}"
    );
    // Each mount keeps its own version; the identical file is everywhere.
    assert_eq!(
        std::fs::read(m1.join("conflict.txt")).unwrap(),
        b"written on node 1\n"
    );
    assert_eq!(
        std::fs::read(m2.join("conflict.txt")).unwrap(),
        b"written on node 2, longer\n"
    );
    for d in &b {
        wait_until(Duration::from_secs(20), "same.txt everywhere", || {
            std::fs::read(d.join("same.txt")).is_ok_and(|x| x == b"identical\n")
        });
    }
    let show = c
        .node(1)
        .cli(&["volume", "heal", "v", "split-brain", "show", "conflict.txt"])
        .ok()
        .stdout;
    assert!(
        show.contains(&hex(b"written on node 1\n"))
            && show.contains(&hex(b"written on node 2, longer\n")),
        "{show}"
    );
    c.assert_no_panics();
}

/// Writes a small tree through `m` (a directory, files, a symlink, a
/// deletion of `base.txt`) and returns the files written.
fn fan_out_workload(m: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::create_dir_all(m.join("fan/sub")).unwrap();
    let mut files = Vec::new();
    for i in 0..30 {
        let name = if i % 3 == 0 {
            format!("fan/sub/f{i}.conf")
        } else {
            format!("fan/f{i}.conf")
        };
        let body = format!("fan-out {i}\n").repeat(i + 1).into_bytes();
        std::fs::write(m.join(&name), &body).unwrap();
        files.push((name, body));
    }
    symlink("f1.conf", m.join("fan/link")).unwrap();
    std::fs::remove_file(m.join("base.txt")).unwrap();
    files
}

fn holds(dir: &Path, files: &[(String, Vec<u8>)]) -> bool {
    files
        .iter()
        .all(|(n, body)| std::fs::read(dir.join(n)).is_ok_and(|b| b == *body))
        && std::fs::read_link(dir.join("fan/link")).is_ok_and(|t| t == Path::new("f1.conf"))
        && !dir.join("base.txt").exists()
}

/// The brick a change is written through offers it to every other brick
/// itself (the others do not pass it on). Killed (-9) after it reached
/// brick 2 but not brick 3, and never restarted, it loses nothing: brick
/// 2 finds brick 3 lacking the changes and delivers them.
#[test]
fn writer_brick_killed_mid_fan_out_the_third_brick_still_converges() {
    let mut c = volume(3);
    let m1 = c.mount("v", 1);
    let m3 = c.mount("v", 3);
    std::fs::write(m1.join("base.txt"), "base\n").unwrap();
    wait_until(Duration::from_secs(30), "base on mount 3", || {
        std::fs::read(m3.join("base.txt")).is_ok_and(|d| d == b"base\n")
    });
    // Brick 1 reaches brick 2 only.
    c.partition(1, 3);
    let files = fan_out_workload(&m1);
    let (b2, b3) = (c.brick("v", 2), c.brick("v", 3));
    wait_until(Duration::from_secs(30), "the changes on brick 2", || {
        holds(&b2, &files)
    });
    c.node_mut(1).kill9();
    c.heal_network();
    wait_until(Duration::from_secs(60), "the changes on brick 3", || {
        holds(&b3, &files)
    });
    wait_until(Duration::from_secs(30), "the changes on mount 3", || {
        holds(&m3, &files)
    });
    wait_same(&[b2, b3], Duration::from_secs(30));
    c.assert_no_panics();
}

/// A brick cut off from the brick a change was written through, but not
/// from the others, still gets it: a brick that holds it finds it lacking
/// there while the writer's brick stays reachable from it, and delivers it.
#[test]
fn a_brick_cut_off_from_the_writer_gets_its_changes_through_another() {
    let c = volume(3);
    let m1 = c.mount("v", 1);
    let m3 = c.mount("v", 3);
    std::fs::write(m1.join("base.txt"), "base\n").unwrap();
    wait_until(Duration::from_secs(30), "base on mount 3", || {
        std::fs::read(m3.join("base.txt")).is_ok_and(|d| d == b"base\n")
    });
    c.partition(1, 3);
    let files = fan_out_workload(&m1);
    wait_until(Duration::from_secs(90), "the changes on mount 3", || {
        holds(&m3, &files)
    });
    c.heal_network();
    wait_same(&bricks(&c, "v"), Duration::from_secs(30));
    c.assert_no_panics();
}

/// A prefix of the blake3 of `data` (`split-brain show` prints the full hash).
fn hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex()[..16].to_string()
}

/// Hostile peer input: offers for `../escape`, `/etc/x`, `a\0b`,
/// `.gsync/meta.db`, a 1 GiB frame header (as a request and as a chunk)
/// are refused and logged; the daemon stays up and nothing is written
/// outside the brick or into `.gsync`. A symlinked directory inside a
/// brick never lets a write out of it.
#[test]
fn hostile_peer_input_is_refused() {
    let c = volume(3);
    let b2 = c.brick("v", 2);
    let meta = b2.join(".gsync");
    let db_ino = std::fs::metadata(meta.join("meta.db")).unwrap().ino();
    let before: Vec<String> = list(&meta)
        .into_iter()
        .filter(|p| !p.starts_with("meta.db"))
        .collect();

    let r = c.node(1).cli(&["debug", "garbage", &c.node(2).host()]).ok();
    assert_eq!(r.stdout.trim(), "10", "garbage streams sent");
    wait_until(
        Duration::from_secs(10),
        "the refusals in node 2's log",
        || {
            let log = c.node(2).log();
            log.matches("malformed request refused").count() >= 9 && log.contains("offer refused")
        },
    );
    let log = c.node(2).log();
    for needle in [
        "../escape",
        "/etc/x",
        ".gsync/meta.db",
        "NUL",
        "exceeds the limit",
    ] {
        assert!(
            log.contains(needle),
            "node 2's log does not mention {needle}:\n{log}"
        );
    }
    // Nothing outside the brick, nothing in .gsync.
    let bricks_dir = c.path("bricks");
    assert!(!bricks_dir.join("escape").exists() && !bricks_dir.join("escape2").exists());
    assert!(!c.dir.path().join("escape").exists());
    assert!(!Path::new("/etc/x").exists());
    assert!(b2.join("garbage-drill").symlink_metadata().is_err());
    assert!(
        list(&b2)
            .iter()
            .all(|p| !p.contains("escape") && !p.contains("garbage") && !p.contains('\0')),
        "{:?}",
        list(&b2)
    );
    assert_eq!(
        std::fs::metadata(meta.join("meta.db")).unwrap().ino(),
        db_ino,
        "meta.db was replaced"
    );
    let after: Vec<String> = list(&meta)
        .into_iter()
        .filter(|p| !p.starts_with("meta.db"))
        .collect();
    assert_eq!(before, after, "files appeared in .gsync");
    assert!(list(&meta.join("tmp")).is_empty(), "temp files left behind");

    // Still up and still replicating.
    c.node(2).cli(&["peer", "status"]).ok();
    let m1 = c.mount("v", 1);
    std::fs::write(m1.join("after.txt"), "still fine\n").unwrap();
    wait_until(Duration::from_secs(30), "a write after the garbage", || {
        std::fs::read(b2.join("after.txt")).is_ok_and(|d| d == b"still fine\n")
    });
    // A symlinked directory inside brick 1 pointing outside it.
    let outside = c.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    symlink(&outside, c.brick("v", 1).join("evil")).unwrap();
    let m2 = c.mount("v", 2);
    std::fs::create_dir_all(m2.join("evil")).unwrap();
    std::fs::write(m2.join("evil/x"), "must stay inside\n").unwrap();
    std::fs::write(m2.join("marker.txt"), "after evil\n").unwrap();
    wait_until(
        Duration::from_secs(30),
        "evil/x on brick 3 and the marker on brick 1",
        || c.brick("v", 3).join("evil/x").is_file() && c.brick("v", 1).join("marker.txt").is_file(),
    );
    // Give brick 1 every chance to get it wrong: the marker was written
    // after evil/x, and replication is in order.
    assert!(
        list(&outside).is_empty(),
        "written outside the brick: {:?}",
        list(&outside)
    );
    let evil = c.brick("v", 1).join("evil");
    let m = evil.symlink_metadata().unwrap();
    eprintln!(
        "brick 1's evil is now a {}; its log: {:?}",
        if m.file_type().is_symlink() {
            "symlink"
        } else {
            "directory"
        },
        c.node(1)
            .log()
            .lines()
            .filter(|l| l.contains("evil"))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "node 2 refusals: {:?}",
        c.node(2)
            .log()
            .lines()
            .filter(|l| l.contains("refused"))
            .collect::<Vec<_>>()
    );
    assert!(
        m.is_dir() || m.file_type().is_symlink(),
        "brick 1's evil is neither the link nor a real directory"
    );

    // The directory is known to every brick; now brick 1's copy is swapped
    // for a link out of the brick behind gsync's back, and a new file is
    // written below it: brick 1 refuses it, and later changes still flow.
    std::fs::remove_dir_all(&evil).unwrap();
    symlink(&outside, &evil).unwrap();
    std::fs::write(m2.join("evil/y"), "must stay inside too\n").unwrap();
    wait_until(Duration::from_secs(30), "evil/y on brick 3", || {
        c.brick("v", 3).join("evil/y").is_file()
    });
    std::fs::write(m2.join("marker2.txt"), "after evil/y\n").unwrap();
    wait_until(
        Duration::from_secs(30),
        "a later change still reaches brick 1",
        || c.brick("v", 1).join("marker2.txt").is_file(),
    );
    assert!(
        list(&outside).is_empty(),
        "written outside the brick: {:?}",
        list(&outside)
    );
    assert!(
        c.node(1)
            .log()
            .contains("escapes the brick through a symlink"),
        "brick 1 did not log the refusal"
    );
    c.node(2).cli(&["peer", "status"]).ok();
    c.assert_no_panics();
}

/// Two sites cut off from each other but both still reaching a third
/// server: one edits a script while the other makes it executable, and
/// both write the same new file and then remove it. The third server
/// holds both sides at once and passes each on: every brick and mount ends
/// with the edit and the mode, the removed file stays removed, nothing is
/// reported in split-brain, and the next edit reaches everyone.
#[test]
fn an_edit_and_a_chmod_relayed_by_a_third_brick_merge_everywhere() {
    let c = volume(3);
    let m1 = c.mount("v", 1);
    let m2 = c.mount("v", 2);
    let b = bricks(&c, "v");
    std::fs::write(m1.join("run.sh"), "echo v1\n").unwrap();
    std::fs::set_permissions(m1.join("run.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    wait_until(Duration::from_secs(30), "run.sh on mount 2", || {
        std::fs::read(m2.join("run.sh")).is_ok_and(|d| d == b"echo v1\n")
    });

    c.partition(1, 2);
    wait_until(Duration::from_secs(20), "nodes 1 and 2 apart", || {
        c.node(1)
            .cli(&["peer", "status"])
            .stdout
            .matches("(Disconnected)")
            .count()
            == 1
    });
    std::fs::write(m1.join("run.sh"), "echo v2 edited on 1\n").unwrap();
    std::fs::set_permissions(m2.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(m1.join("twin.txt"), "same\n").unwrap();
    std::fs::write(m2.join("twin.txt"), "same\n").unwrap();
    wait_until(Duration::from_secs(30), "twin.txt on every brick", || {
        b.iter().all(|d| d.join("twin.txt").is_file())
    });
    std::fs::remove_file(m1.join("twin.txt")).unwrap();
    std::fs::remove_file(m2.join("twin.txt")).unwrap();

    let merged = |d: &Path| {
        std::fs::read(d.join("run.sh")).is_ok_and(|x| x == b"echo v2 edited on 1\n")
            && mode(&d.join("run.sh")) == 0o755
            && !d.join("twin.txt").exists()
    };
    let all = || {
        b.iter()
            .map(|d| d.as_path())
            .chain([m1.as_path(), m2.as_path()])
    };
    let ok = eventually(Duration::from_secs(60), || all().all(merged));
    assert!(
        ok,
        "not merged everywhere: {:?}",
        all()
            .map(|d| (
                std::fs::read_to_string(d.join("run.sh")).ok(),
                std::fs::symlink_metadata(d.join("run.sh"))
                    .map(|m| m.mode() & 0o7777)
                    .ok(),
                d.join("twin.txt").exists()
            ))
            .collect::<Vec<_>>()
    );

    c.heal_network();
    c.wait_connected();
    std::fs::write(m2.join("run.sh"), "echo v3 from 2\n").unwrap();
    wait_until(Duration::from_secs(30), "the next edit everywhere", || {
        b.iter().chain([&m1]).all(|d| {
            std::fs::read(d.join("run.sh")).is_ok_and(|x| x == b"echo v3 from 2\n")
                && mode(&d.join("run.sh")) == 0o755
        })
    });
    wait_until(
        Duration::from_secs(30),
        "nothing pending, no split-brain",
        || (1..=3).all(|i| crate::support::heal::all_clean(c.node(i), "v")),
    );
    c.assert_no_panics();
}

/// A file removed on one side of a partition while made executable on the
/// other comes back everywhere, executable, with its content: the change
/// wins over the delete, as an edit would.
#[test]
fn a_chmod_concurrent_with_a_delete_keeps_the_file() {
    let c = volume(3);
    let m1 = c.mount("v", 1);
    let m2 = c.mount("v", 2);
    let b = bricks(&c, "v");
    std::fs::write(m1.join("tool.sh"), "echo tool\n").unwrap();
    wait_until(Duration::from_secs(30), "tool.sh everywhere", || {
        b.iter()
            .chain([&m2])
            .all(|d| std::fs::read(d.join("tool.sh")).is_ok_and(|x| x == b"echo tool\n"))
    });
    c.partition(1, 2);
    c.partition(1, 3);
    c.partition(2, 3);
    wait_until(
        Duration::from_secs(20),
        "node 1 and 2 see the partition",
        || {
            [1, 2].iter().all(|i| {
                c.node(*i)
                    .cli(&["peer", "status"])
                    .stdout
                    .matches("(Disconnected)")
                    .count()
                    == 2
            })
        },
    );
    std::fs::remove_file(m1.join("tool.sh")).unwrap();
    std::fs::set_permissions(m2.join("tool.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_until(Duration::from_secs(30), "each brick has its side", || {
        !b[0].join("tool.sh").exists()
            && b[1].join("tool.sh").is_file()
            && mode(&b[1].join("tool.sh")) == 0o755
    });
    c.heal_network();
    c.wait_connected();
    let all = || {
        b.iter()
            .map(|d| d.as_path())
            .chain([m1.as_path(), m2.as_path()])
    };
    let ok = eventually(Duration::from_secs(60), || {
        all().all(|d| {
            std::fs::read(d.join("tool.sh")).is_ok_and(|x| x == b"echo tool\n")
                && mode(&d.join("tool.sh")) == 0o755
        })
    });
    assert!(
        ok,
        "{:?}",
        all()
            .map(|d| std::fs::symlink_metadata(d.join("tool.sh"))
                .map(|m| m.mode() & 0o7777)
                .ok())
            .collect::<Vec<_>>()
    );
    wait_until(
        Duration::from_secs(30),
        "nothing pending, no split-brain",
        || (1..=3).all(|i| crate::support::heal::all_clean(c.node(i), "v")),
    );
    c.assert_no_panics();
}

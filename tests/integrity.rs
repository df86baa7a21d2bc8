//! Integrity through the operator's lifecycle: nothing resurrected when a
//! new mount attaches, nothing silently stale after a brick is rebuilt,
//! symlinks synced as links and never followed, overlapping paths refused,
//! and a mount state that tells the truth.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::manifest::wait_same;
use crate::support::mounts::{all_trees, mount_list, three_mounts, wait_content, wait_gone};
use crate::support::{wait_until, Cluster};

const T: Duration = Duration::from_secs(20);

/// Mounts `vol` from node `i` at a new directory `name` of the test.
fn mount_at(c: &Cluster, i: usize, vol: &str, name: &str) -> PathBuf {
    let d = c.path(name);
    let n = c.node(i);
    n.cli(&["mount", &format!("{}:/{vol}", n.ip), &d.to_string_lossy()])
        .ok();
    d
}

/// Asserts that none of `paths` exists in any of `trees` for `hold`.
#[track_caller]
fn stays_absent(trees: &[PathBuf], paths: &[&str], hold: Duration) {
    let deadline = std::time::Instant::now() + hold;
    loop {
        for t in trees {
            for p in paths {
                assert!(
                    t.join(p).symlink_metadata().is_err(),
                    "{} came back in {}",
                    p,
                    t.display()
                );
            }
        }
        if std::time::Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Defect 1: deleted directories never come back when a fresh mount of a
/// volume with history attaches.
#[test]
fn deleted_directories_stay_deleted_when_a_new_mount_attaches() {
    let (c, m) = three_mounts();
    let m1 = &m[0];
    std::fs::create_dir_all(m1.join("zd1/inner")).unwrap();
    std::fs::write(m1.join("zd1/inner/f"), "f1\n").unwrap();
    std::fs::create_dir_all(m1.join("zd2")).unwrap();
    std::fs::write(m1.join("zd2/f"), "f2\n").unwrap();
    let trees = all_trees(&c, "v", &m);
    wait_same(&trees, T);
    wait_content(&m[2], "zd1/inner/f", "f1\n", T);

    std::fs::remove_dir_all(m1.join("zd1")).unwrap();
    std::fs::rename(m1.join("zd2"), m1.join("zd2r")).unwrap();
    for t in &trees {
        wait_gone(t, "zd1", T);
        wait_gone(t, "zd2", T);
        wait_content(t, "zd2r/f", "f2\n", T);
    }

    // A fresh mount on each kind of node: one beside the writer, one on
    // another node.
    let fresh = [
        mount_at(&c, 1, "v", "fresh1"),
        mount_at(&c, 3, "v", "fresh3"),
    ];
    for f in &fresh {
        wait_content(f, "zd2r/f", "f2\n", T);
    }
    let mut everywhere = trees.clone();
    everywhere.extend(fresh.iter().cloned());
    stays_absent(
        &everywhere,
        &["zd1", "zd1/inner", "zd2"],
        Duration::from_secs(4),
    );
    wait_same(&everywhere, T);
    c.assert_no_panics();
}

/// Mounts `vol` read-only from node `i` at a new directory `name`.
fn mount_read_only(c: &Cluster, i: usize, vol: &str, name: &str) -> PathBuf {
    let d = c.path(name);
    let n = c.node(i);
    n.cli(&[
        "mount",
        &format!("{}:/{vol}", n.ip),
        &d.to_string_lossy(),
        "--read-only",
    ])
    .ok();
    d
}

/// Wipes brick `i` of `vol` (node stopped) the way a replaced disk looks,
/// keeping only its volume-id marker: the same brick, a new incarnation.
fn wipe_brick_keeping_marker(c: &Cluster, vol: &str, i: usize) {
    let b = c.brick(vol, i);
    let marker = b.join(".gsync/volume-id");
    let id = std::fs::read(&marker).ok();
    std::fs::remove_dir_all(&b).unwrap();
    std::fs::create_dir_all(b.join(".gsync")).unwrap();
    if let Some(id) = id {
        std::fs::write(&marker, id).unwrap();
    }
}

/// Defect 2: after its node's brick is rebuilt, a mount (read-write and
/// read-only) notices the new incarnation and resynchronises by comparing:
/// it receives what changed meanwhile and every later change, pushes the
/// edit made while its node was down, and re-pushes nothing stale.
#[test]
fn mounts_resynchronise_with_a_rebuilt_brick() {
    let (mut c, m) = three_mounts();
    let [m1, _m2, m3] = m.clone();
    let ro3 = mount_read_only(&c, 3, "v", "ro3");
    std::fs::create_dir_all(m1.join("d")).unwrap();
    std::fs::write(m1.join("d/keep.txt"), "keep\n").unwrap();
    // A long history: the mounts' cursors end far beyond what a rebuilt
    // brick's sequence reaches.
    for i in 0..40 {
        let v = format!("v{i}\n");
        std::fs::write(m1.join("hist.txt"), &v).unwrap();
        wait_content(&m3, "hist.txt", &v, T);
    }
    wait_content(&ro3, "hist.txt", "v39\n", T);

    c.node_mut(3).stop();
    wipe_brick_keeping_marker(&c, "v", 3);
    std::fs::write(m1.join("hist.txt"), "after the rebuild\n").unwrap();
    std::fs::write(m3.join("local.txt"), "made while node 3 was down\n").unwrap();
    wait_content(&c.brick("v", 1), "hist.txt", "after the rebuild\n", T);
    c.node_mut(3).start();
    c.wait_connected();
    c.node(1).cli(&["volume", "heal", "v", "full"]).ok();

    for d in [&m3, &ro3] {
        wait_content(d, "hist.txt", "after the rebuild\n", T);
        wait_content(d, "d/keep.txt", "keep\n", T);
    }
    wait_content(&m1, "local.txt", "made while node 3 was down\n", T);
    wait_content(&ro3, "local.txt", "made while node 3 was down\n", T);
    // Every later change keeps arriving.
    std::fs::write(m1.join("later.txt"), "later\n").unwrap();
    for d in [&m3, &ro3] {
        wait_content(d, "later.txt", "later\n", T);
    }
    let mut trees = all_trees(&c, "v", &m);
    trees.push(ro3.clone());
    wait_same(&trees, T);
    assert!(
        crate::support::replication::split_brain(c.node(1), "v")
            .values()
            .all(Vec::is_empty),
        "the resync created a split-brain"
    );
    wait_until(T, "node 3's mounts in sync", || {
        let l = mount_list(&c, 3);
        l.lines().skip(1).count() == 2 && l.lines().skip(1).all(|x| x.contains("in sync"))
    });
    c.assert_no_panics();
}

/// Defect 4: a symlink to a directory outside the mount, and a loop, are
/// synced as links: never followed, nothing stays pending, and the log
/// stays quiet.
#[test]
fn symlinks_to_directories_sync_as_links_and_are_never_followed() {
    let (c, m) = three_mounts();
    let [m1, m2, m3] = m.clone();
    let outside = c.path("outside");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    for i in 0..20 {
        std::fs::write(outside.join(format!("secret{i}")), "not for the volume\n").unwrap();
    }
    std::fs::write(outside.join("sub/deep"), "deep\n").unwrap();
    std::fs::write(m1.join("a.txt"), "a\n").unwrap();
    wait_content(&m3, "a.txt", "a\n", T);
    let log_before = c.node(1).log().len();

    std::os::unix::fs::symlink(&outside, m1.join("link")).unwrap();
    std::os::unix::fs::symlink(".", m1.join("loop")).unwrap();
    std::fs::create_dir_all(m1.join("d")).unwrap();
    std::os::unix::fs::symlink("..", m1.join("d/up")).unwrap();
    std::fs::write(m1.join("d/after.txt"), "after\n").unwrap();

    let target = outside.to_string_lossy().into_owned();
    for d in [&m2, &m3] {
        wait_content(d, "d/after.txt", "after\n", T);
        wait_until(T, "links arrive as links", || {
            std::fs::read_link(d.join("link")).is_ok_and(|t| t.to_string_lossy() == target)
                && std::fs::read_link(d.join("loop")).is_ok_and(|t| t.as_os_str() == ".")
                && std::fs::read_link(d.join("d/up")).is_ok_and(|t| t.as_os_str() == "..")
        });
    }
    let trees = all_trees(&c, "v", &m);
    wait_same(&trees, T);
    // Nothing from behind the links was pushed anywhere.
    for t in &trees {
        let mut stack = vec![t.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(
                    !name.starts_with("secret"),
                    "{} followed a link",
                    e.path().display()
                );
                if e.file_type().unwrap().is_dir() && name != ".gsync" {
                    stack.push(e.path());
                }
            }
        }
    }
    wait_until(T, "nothing pending on node 1", || {
        mount_list(&c, 1).contains("in sync")
    });
    // A few seconds later, still nothing pending, and no retry storm.
    std::thread::sleep(Duration::from_secs(3));
    let l = mount_list(&c, 1);
    assert!(l.contains("in sync") && !l.contains("pending"), "{l}");
    let log = c.node(1).log();
    let grown = log.len() - log_before;
    assert!(
        grown < 20_000,
        "log grew by {grown} bytes:\n{}",
        &log[log_before..]
    );
    c.assert_no_panics();
}

/// Defect 9: `gsync mount` tells the truth: a host that does not exist is
/// refused, a first attach that creates a split-brain says so, a deleted
/// folder is reported offline with why, and right after a restart the list
/// answers with the mounts (never "not handled").
#[test]
fn mount_state_tells_the_truth() {
    let (mut c, m) = three_mounts();
    let [m1, m2, m3] = m.clone();

    // A host that does not exist (nor is a member of the pool).
    let nowhere = c.path("nowhere");
    let r = c
        .node(1)
        .cli(&[
            "mount",
            "no-such-host.invalid:/v",
            &nowhere.to_string_lossy(),
        ])
        .fails();
    assert!(r.stderr.contains("no-such-host.invalid"), "{}", r.stderr);
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
    assert!(!mount_list(&c, 1).contains("nowhere"));

    // A first attach that creates a split-brain.
    std::fs::write(m1.join("x.txt"), "volume\n").unwrap();
    wait_content(&m3, "x.txt", "volume\n", T);
    let fresh = c.path("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(fresh.join("x.txt"), "different\n").unwrap();
    let r = c
        .node(2)
        .cli(&[
            "mount",
            &format!("{}:/v", c.node(2).ip),
            &fresh.to_string_lossy(),
        ])
        .ok();
    assert!(!r.stdout.contains("in sync"), "{}", r.stdout);
    assert!(r.stdout.contains("1 in split-brain"), "{}", r.stdout);
    let line = |c: &Cluster, i: usize, dir: &std::path::Path| -> String {
        mount_list(c, i)
            .lines()
            .find(|l| l.contains(&*dir.to_string_lossy()))
            .unwrap_or_default()
            .to_string()
    };
    let l = line(&c, 2, &fresh);
    assert!(
        l.contains("1 in split-brain") && !l.contains("in sync"),
        "{l}"
    );

    // A folder deleted from under its mount.
    std::fs::remove_dir_all(&m2).unwrap();
    wait_until(T, "the deleted folder reported", || {
        line(&c, 2, &m2).contains("offline (")
    });
    let l = line(&c, 2, &m2);
    assert!(
        l.contains("no longer exists") && !l.contains("in sync"),
        "{l}"
    );

    // Right after a restart, the list answers with every mount.
    c.node_mut(3).restart();
    let r = c.node(3).cli(&["mount"]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains(&*m3.to_string_lossy()), "{}", r.stdout);
    // (x.txt is in split-brain since the attach above: that is the truth.)
    let ok = crate::support::eventually(T, || {
        line(&c, 3, &m3).contains("1 in split-brain, following 127.0.0.3:")
    });
    assert!(ok, "after a restart: {}", mount_list(&c, 3));
    c.assert_no_panics();
}

/// Defect 5 (mount side): a mount overlapping another mount or a brick of
/// its node is refused with one line naming both paths, judged after
/// resolving symlinks and `..`; nothing is created or synced.
#[test]
fn overlapping_mounts_are_refused() {
    let (c, m) = three_mounts();
    let m1 = &m[0];
    let n = c.node(1);
    let src = format!("{}:/v", n.ip);
    let brick = c.brick("v", 1);
    let alias = c.path("alias");
    std::os::unix::fs::symlink(m1, &alias).unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (m1.join("inner"), "inside the mount"),
        (alias.join("via-link"), "inside the mount"),
        (c.path("elsewhere/../m1/deeper"), "inside the mount"),
        (c.dir.path().to_path_buf(), "contains the mount"),
        (brick.join("sub"), "inside the brick"),
        (c.path("bricks"), "contains the brick"),
    ];
    for (dir, why) in cases {
        let r = n.cli(&["mount", &src, &dir.to_string_lossy()]).fails();
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains(why), "{}: {}", dir.display(), r.stderr);
        // Both paths are named.
        let other = if why.ends_with("mount") {
            m1.to_string_lossy().into_owned()
        } else {
            brick.to_string_lossy().into_owned()
        };
        assert!(r.stderr.contains(&other), "{}", r.stderr);
    }
    assert!(!m1.join("inner").exists() && !brick.join("sub").exists());
    let l = mount_list(&c, 1);
    assert_eq!(l.lines().count(), 2, "{l}");
    // A mount beside them is fine.
    mount_at(&c, 1, "v", "beside");
    c.assert_no_panics();
}

/// Defect 7 (mount side): a mount attached before `auth.allow` excluded
/// its node stops pushing and receiving, and says why.
#[test]
fn auth_allow_refusal_shows_in_the_mount_state() {
    let (c, m) = three_mounts();
    let [m1, _m2, m3] = m.clone();
    std::fs::write(m1.join("a.txt"), "a\n").unwrap();
    wait_content(&m3, "a.txt", "a\n", T);
    let allow = format!("{},{}", c.node(1).ip, c.node(2).ip);
    c.node(1)
        .cli(&["volume", "set", "v", "auth.allow", &allow])
        .ok();
    let ok = crate::support::eventually(T, || {
        mount_list(&c, 3).contains("offline (") && mount_list(&c, 3).contains("auth.allow")
    });
    assert!(ok, "{}", mount_list(&c, 3));
    assert!(!mount_list(&c, 3).contains("in sync"));
    // Neither direction moves any more.
    std::fs::write(m3.join("from3.txt"), "refused\n").unwrap();
    std::fs::write(m1.join("b.txt"), "b\n").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(!m1.join("from3.txt").exists(), "a refused mount pushed");
    assert!(!m3.join("b.txt").exists(), "a refused mount received");
    let l = mount_list(&c, 3);
    assert!(l.contains("1 pending"), "{l}");
    // Allowed again: it resumes.
    c.node(1).cli(&["volume", "reset", "v", "auth.allow"]).ok();
    wait_content(&m1, "from3.txt", "refused\n", T);
    wait_content(&m3, "b.txt", "b\n", T);
    c.assert_no_panics();
}

/// A folder unmounted and mounted again resumes from what it had synced:
/// a file deleted and a file changed on the volume meanwhile are deleted
/// and updated in it, never pushed back (no resurrection, no split-brain),
/// and an edit made while it was unmounted goes out as an edit.
#[test]
fn a_remounted_folder_resumes_without_resurrecting() {
    let (c, m) = three_mounts();
    let [m1, _m2, m3] = m.clone();
    std::fs::write(m1.join("gone.txt"), "to be deleted\n").unwrap();
    std::fs::write(m1.join("changed.txt"), "old\n").unwrap();
    std::fs::write(m1.join("mine.txt"), "before\n").unwrap();
    std::fs::create_dir_all(m1.join("dir/sub")).unwrap();
    std::fs::write(m1.join("dir/sub/f"), "f\n").unwrap();
    wait_content(&m3, "dir/sub/f", "f\n", T);
    wait_content(&m3, "mine.txt", "before\n", T);
    wait_content(&m3, "gone.txt", "to be deleted\n", T);
    c.node(3).cli(&["umount", &m3.to_string_lossy()]).ok();
    std::fs::remove_file(m1.join("gone.txt")).unwrap();
    std::fs::remove_dir_all(m1.join("dir")).unwrap();
    std::fs::write(m1.join("changed.txt"), "new\n").unwrap();
    std::fs::write(m3.join("mine.txt"), "edited while unmounted\n").unwrap();
    wait_gone(&c.brick("v", 3), "gone.txt", T);
    wait_content(&c.brick("v", 3), "changed.txt", "new\n", T);

    c.mount("v", 3);
    wait_content(&m1, "mine.txt", "edited while unmounted\n", T);
    let trees = all_trees(&c, "v", &m);
    for t in &trees {
        wait_gone(t, "gone.txt", T);
        wait_gone(t, "dir", T);
        wait_content(t, "changed.txt", "new\n", T);
    }
    wait_same(&trees, T);
    assert_no_split_brain_after_remount(&c);
}

fn assert_no_split_brain_after_remount(c: &Cluster) {
    assert!(
        crate::support::replication::split_brain(c.node(1), "v")
            .values()
            .all(Vec::is_empty),
        "the remount created a split-brain"
    );
    c.assert_no_panics();
}

/// A folder unmounted in the middle of a burst and mounted again at once:
/// the old agent ends before the new one starts (never two agents on one
/// folder and journal), and the burst, finished by the new agent, reaches
/// every mount whole.
#[test]
fn a_folder_remounted_in_the_middle_of_a_burst_gets_one_agent() {
    if !gsync_brick::failpoint::ENABLED {
        eprintln!("SKIP: build with --features failpoints");
        return;
    }
    let (mut c, m) = three_mounts();
    let [m1, _m2, m3] = m.clone();
    // Node 3's agent takes 500 ms more per path it pushes: the burst keeps
    // it busy for seconds, so the umount comes in the middle of it.
    c.node_mut(3).restart_with_failpoint("agent-slow-push");
    for d in 0..4 {
        std::fs::create_dir_all(m3.join(format!("burst/d{d}"))).unwrap();
        for i in 0..250 {
            std::fs::write(
                m3.join(format!("burst/d{d}/f{i}.conf")),
                format!("file {d}/{i}\n"),
            )
            .unwrap();
        }
    }
    // The folders reach brick 3 first (parents first): the agent is then
    // busy with the files.
    wait_until(T, "the burst's folders on brick 3", || {
        c.brick("v", 3).join("burst/d3").is_dir()
    });
    let dir = m3.to_string_lossy().into_owned();
    c.node(3).cli(&["umount", &dir]).ok();
    // While unmounted, the folder changes too: it goes out with the rest.
    std::fs::write(m3.join("burst/late.txt"), "written while unmounted\n").unwrap();
    c.mount("v", 3);
    wait_content(&m1, "burst/late.txt", "written while unmounted\n", T);
    wait_content(&m1, "burst/d3/f249.conf", "file 3/249\n", T);
    let trees = all_trees(&c, "v", &m);
    wait_same(&trees, T);
    // In the daemon's log since the restart: started, stopped, started;
    // never a second start before the first agent stopped.
    let log = c.node(3).log();
    let events: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(dir.as_str()))
        .filter_map(|l| {
            if l.contains("mount agent started") {
                Some("started")
            } else if l.contains("mount agent stopped") {
                Some("stopped")
            } else {
                None
            }
        })
        .collect();
    // (The agent killed with its daemon logged only its start.)
    assert_eq!(
        events,
        ["started", "started", "stopped", "started"],
        "one agent at a time on the folder:\n{log}"
    );
    assert_no_split_brain_after_remount(&c);
}

/// Once m3 says it is in sync with brick 3 (cut off, so only that brick
/// holds m3's last change), wipes brick 3 under its running daemon; with
/// `unserved`, waits until node 3 stops serving it.
fn wipe_brick_3_once_m3_synced(c: &Cluster, unserved: bool) {
    wait_until(T, "m3 in sync with its brick", || {
        mount_list(c, 3).contains("in sync")
    });
    crate::support::empty_dir(&c.brick("v", 3));
    if unserved {
        wait_until(T, "brick 3 unserved", || {
            c.node(3)
                .cli(&["volume", "status", "v"])
                .stdout
                .contains("marker missing")
        });
    }
}

/// A write acknowledged by a brick that is wiped before it replicated is
/// not left in the writer's folder alone while the mount says "in sync":
/// the mount lists the brick it fails over to, finds the path missing
/// there and pushes it again.
#[test]
fn a_write_lost_with_a_wiped_brick_is_pushed_again() {
    let (c, m) = three_mounts();
    let [m1, _m2, m3] = m.clone();
    std::fs::write(m1.join("base.txt"), "base\n").unwrap();
    wait_content(&m3, "base.txt", "base\n", T);
    // Node 3 cut off: its brick acknowledges, and cannot replicate.
    crate::support::heal::isolate(&c, 3);
    std::fs::write(m3.join("lost.txt"), "only on brick 3\n").unwrap();
    let b3 = c.brick("v", 3);
    wait_content(&b3, "lost.txt", "only on brick 3\n", T);
    // The brick is wiped under the running daemon, then the network heals.
    wipe_brick_3_once_m3_synced(&c, false);
    c.heal_network();
    wait_content(&m1, "lost.txt", "only on brick 3\n", T);
    wait_content(&c.brick("v", 2), "lost.txt", "only on brick 3\n", T);
    c.assert_no_panics();
}

/// An overwrite acknowledged by a brick that is wiped before it
/// replicated: the other bricks hold the file in its older version only.
/// The mount does not take that for "in sync" with its newer version: it
/// pushes the newer version again, and every mount ends with it.
#[test]
fn an_overwrite_lost_with_a_wiped_brick_is_pushed_again() {
    let (c, m) = three_mounts();
    let [m1, _m2, m3] = m.clone();
    std::fs::write(m3.join("app.conf"), "version 1\n").unwrap();
    wait_content(&m1, "app.conf", "version 1\n", T);
    crate::support::heal::isolate(&c, 3);
    std::fs::write(m3.join("app.conf"), "version 2, only on brick 3\n").unwrap();
    let b3 = c.brick("v", 3);
    wait_content(&b3, "app.conf", "version 2, only on brick 3\n", T);
    wipe_brick_3_once_m3_synced(&c, false);
    c.heal_network();
    wait_content(
        &c.brick("v", 2),
        "app.conf",
        "version 2, only on brick 3\n",
        T,
    );
    wait_content(&m1, "app.conf", "version 2, only on brick 3\n", T);
    assert_eq!(
        crate::support::read(&m3.join("app.conf")),
        "version 2, only on brick 3\n"
    );
    c.assert_no_panics();
}

/// A deletion acknowledged by a brick wiped before it replicated: the
/// other bricks still hold the file. The deleting mount pushes its
/// deletion again; the file does not stay (or come back) anywhere.
#[test]
fn a_deletion_lost_with_a_wiped_brick_is_pushed_again() {
    let (c, m) = three_mounts();
    let [m1, m2, m3] = m.clone();
    std::fs::write(m3.join("old.conf"), "to be deleted\n").unwrap();
    wait_content(&m1, "old.conf", "to be deleted\n", T);
    wait_content(&m2, "old.conf", "to be deleted\n", T);
    crate::support::heal::isolate(&c, 3);
    std::fs::remove_file(m3.join("old.conf")).unwrap();
    let b3 = c.brick("v", 3);
    wait_gone(&b3, "old.conf", T);
    // Node 3 stops serving the wiped brick (its pending deletion goes with
    // it) before the network returns.
    wipe_brick_3_once_m3_synced(&c, true);
    c.heal_network();
    for d in [&m1, &m2, &c.brick("v", 1), &c.brick("v", 2)] {
        wait_gone(d, "old.conf", T);
    }
    stays_absent(
        &all_trees(&c, "v", &m),
        &["old.conf"],
        Duration::from_secs(3),
    );
    c.assert_no_panics();
}

/// The same loss while another brick cannot be asked whether it holds the
/// path: the mount does not give up on it (nor say "in sync"); once that
/// brick answers, the path is pushed again.
#[test]
fn a_lost_write_is_pushed_again_once_every_brick_can_tell() {
    let (c, m) = three_mounts();
    let [m1, _m2, m3] = m.clone();
    std::fs::write(m1.join("base.txt"), "base\n").unwrap();
    wait_content(&m3, "base.txt", "base\n", T);
    crate::support::heal::isolate(&c, 3);
    // Cut off for real before the write: a brick still connected sends
    // small versions with their content at once, and would deliver this
    // one before the wipe (no longer a lost write).
    crate::support::heal::wait_disconnected(&c, 3, 2);
    std::fs::write(m3.join("lost.txt"), "only on brick 3\n").unwrap();
    let b3 = c.brick("v", 3);
    wait_content(&b3, "lost.txt", "only on brick 3\n", T);
    wipe_brick_3_once_m3_synced(&c, false);
    // Node 3 reaches node 2 again (its mount fails over to brick 2), not
    // node 1: brick 1 cannot tell whether it holds lost.txt.
    c.node(2).unblock_all();
    c.node(3).unblock_all();
    c.partition(1, 3);
    wait_until(T, "m3 follows brick 2", || {
        mount_list(&c, 3).contains(&format!("following {}", c.node(2).ip))
    });
    std::thread::sleep(Duration::from_secs(3));
    let line = mount_list(&c, 3);
    assert!(
        !line.contains(" in sync"),
        "m3 says in sync while lost.txt is in its folder alone: {line}"
    );
    c.heal_network();
    wait_content(&c.brick("v", 2), "lost.txt", "only on brick 3\n", T);
    wait_content(&m1, "lost.txt", "only on brick 3\n", T);
    c.assert_no_panics();
}

/// The same lost deletion, made while another mount edited the file on
/// the other side of a partition: the bricks left hold the edit only. The
/// deleting mount must not keep saying "split-brain" about a version no
/// brick has; it offers its deletion again, the bricks settle it (the
/// edit wins over a concurrent deletion, nothing is lost), and every
/// mount ends with the edit, in sync.
#[test]
fn a_deletion_lost_with_a_wiped_brick_against_a_concurrent_edit_settles() {
    let (c, m) = three_mounts();
    let [m1, m2, m3] = m.clone();
    std::fs::write(m3.join("both.conf"), "first\n").unwrap();
    wait_content(&m1, "both.conf", "first\n", T);
    wait_content(&m2, "both.conf", "first\n", T);
    crate::support::heal::isolate(&c, 3);
    crate::support::heal::wait_disconnected(&c, 3, 2);
    std::fs::remove_file(m3.join("both.conf")).unwrap();
    std::fs::write(m1.join("both.conf"), "edited meanwhile\n").unwrap();
    let b3 = c.brick("v", 3);
    wait_gone(&b3, "both.conf", T);
    wait_content(&c.brick("v", 2), "both.conf", "edited meanwhile\n", T);
    wipe_brick_3_once_m3_synced(&c, true);
    c.heal_network();
    for d in [&m1, &m2, &m3, &c.brick("v", 1), &c.brick("v", 2)] {
        wait_content(d, "both.conf", "edited meanwhile\n", T);
    }
    let mut last = String::new();
    let settled = crate::support::eventually(T, || {
        last = (1..=3).map(|i| mount_list(&c, i)).collect();
        last.matches("in sync").count() == 3 && !last.contains("split-brain")
    });
    assert!(settled, "the mounts did not settle: {last}");
    c.assert_no_panics();
}

/// A directory deleted on the volume that a mount had to keep (it still
/// held an ignored editor file) is never pushed back as a new directory
/// once that file is gone: it is removed, and stays deleted everywhere.
#[test]
fn a_kept_deleted_directory_never_comes_back() {
    let (mut c, m) = three_mounts();
    let [m1, _m2, m3] = m.clone();
    std::fs::create_dir_all(m1.join("d/sub")).unwrap();
    std::fs::write(m1.join("d/sub/f"), "f\n").unwrap();
    wait_content(&m3, "d/sub/f", "f\n", T);
    std::fs::write(m3.join("d/sub/notes.swp"), "editor state\n").unwrap();
    std::fs::remove_dir_all(m1.join("d")).unwrap();
    for i in 1..=3 {
        wait_gone(&c.brick("v", i), "d", T);
    }
    wait_gone(&m3, "d/sub/f", T);
    assert!(
        m3.join("d/sub/notes.swp").exists(),
        "an ignored file is never deleted"
    );
    // The editor file goes; the next look at the folder (here, the scan at
    // a restart) finds the kept directories without it.
    std::fs::remove_file(m3.join("d/sub/notes.swp")).unwrap();
    c.node_mut(3).restart();
    wait_gone(&m3, "d", T);
    let trees = all_trees(&c, "v", &m);
    stays_absent(&trees, &["d", "d/sub"], Duration::from_secs(4));
    wait_same(&trees, T);
    c.assert_no_panics();
}

/// A node cut off from the others: its mount is in sync with the brick it
/// follows, and says that this is all (its changes are on one brick of
/// three); once the network is back it is plainly in sync again.
#[test]
fn a_mount_whose_brick_is_cut_off_is_not_plainly_in_sync() {
    let (c, m) = three_mounts();
    let [_, _, m3] = m.clone();
    c.partition(3, 1);
    c.partition(3, 2);
    wait_until(T, "node 3 sees its peers gone", || {
        c.node(3)
            .cli(&["peer", "status"])
            .stdout
            .matches("(Disconnected)")
            .count()
            == 2
    });
    std::fs::write(m3.join("alone.txt"), "only here\n").unwrap();
    wait_content(&c.brick("v", 3), "alone.txt", "only here\n", T);
    let want = "in sync with the brick followed only (1 changes not yet on 2 unreachable bricks)";
    wait_until(T, "the state says the changes are on one brick", || {
        mount_list(&c, 3).contains(want)
    });
    c.heal_network();
    for i in 1..=3 {
        wait_content(&c.brick("v", i), "alone.txt", "only here\n", T);
    }
    wait_until(T, "plainly in sync again", || {
        let l = mount_list(&c, 3);
        l.contains("in sync, following") && !l.contains("only")
    });
    c.assert_no_panics();
}

//! Integrity through the operator's lifecycle: nothing resurrected when a
//! new mount attaches, nothing silently stale after a brick is rebuilt,
//! symlinks synced as links and never followed, overlapping paths refused,
//! and a mount state that tells the truth.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::manifest::wait_same;
use crate::support::mounts::{all_trees, three_mounts, wait_content, wait_gone};
use crate::support::Cluster;

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

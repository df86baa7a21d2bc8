//! The self-heal story (issue 5): a node cut off while a file grows is
//! healed from the pending index without any command; concurrent edits on
//! both sides of a partition become a split-brain that is reported, shown
//! and resolved without losing either version; a heal after an outage
//! touches only the changed paths; a wiped brick is rebuilt by a full heal;
//! and quorum keeps a minority from creating split-brain at all.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::heal::{
    all_clean, brick_name, heals_done, info, isolate, parse, retained, wait_content,
    wait_disconnected, wait_same_tree,
};
use crate::support::{eventually, manifest, read, wait_until, Cluster};

const T: Duration = Duration::from_secs(30);

fn cluster3() -> Cluster {
    let c = Cluster::start(3);
    c.form_pool();
    c.create_volume("v");
    for i in 1..=3 {
        c.mount("v", i);
    }
    c
}

/// Node 2 is partitioned away while m1/dates.txt grows by a line every
/// 50 ms: `heal info` lists the file under the bricks holding the pending
/// change (1 and 3) and reports brick 2 as not connected, in GlusterFS's
/// shape; once the network heals, the heal finishes on its own and m2 has
/// every line.
#[test]
fn outage_is_healed_from_the_index_without_any_command() {
    let c = cluster3();
    let m1 = c.mount_dir(1);
    let m2 = c.mount_dir(2);
    let file = m1.join("dates.txt");
    std::fs::write(&file, "start\n").unwrap();
    wait_content(&m2.join("dates.txt"), "start\n", T, "first line reaches m2");

    let stop = Arc::new(AtomicBool::new(false));
    let lines = Arc::new(AtomicU64::new(0));
    let appender = {
        let (stop, lines, file) = (stop.clone(), lines.clone(), file.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&file)
                    .unwrap();
                writeln!(f, "line {i} {:?}", std::time::SystemTime::now()).unwrap();
                drop(f);
                i += 1;
                lines.store(i, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    isolate(&c, 2);
    wait_disconnected(&c, 1, 1);
    let n1 = c.node(1);
    let b = |i| brick_name(&c, "v", i);
    // Pending changes for brick 2 are listed under bricks 1 and 3.
    let mut last = String::new();
    let ok = eventually(T, || {
        let (out, blocks) = info(n1, "v");
        last = out;
        blocks.len() == 3
            && blocks[0].entries == ["/dates.txt"]
            && blocks[2].entries == ["/dates.txt"]
            && blocks[1].status == "Transport endpoint is not connected"
    });
    assert!(ok, "heal info during the partition:\n{last}");
    let blocks = parse(&last);
    assert_eq!(
        blocks.iter().map(|b| b.brick.clone()).collect::<Vec<_>>(),
        vec![b(1), b(2), b(3)]
    );
    assert_eq!(
        (blocks[0].status.as_str(), blocks[0].number.as_str()),
        ("Connected", "1"),
        "{last}"
    );
    assert_eq!(
        (blocks[2].status.as_str(), blocks[2].number.as_str()),
        ("Connected", "1"),
        "{last}"
    );
    assert_eq!(blocks[1].number, "-", "{last}");
    // The exact GlusterFS shape of a brick block.
    let want1 = format!(
        "Brick {}\n/dates.txt \nStatus: Connected\nNumber of entries: 1\n",
        b(1)
    );
    assert!(last.starts_with(&want1), "{last}");
    let want2 = format!(
        "Brick {}\nStatus: Transport endpoint is not connected\nNumber of entries: -\n",
        b(2)
    );
    assert!(last.contains(&want2), "{last}");
    let summary = n1
        .cli(&["volume", "heal", "v", "info", "summary"])
        .ok()
        .stdout;
    assert!(
        summary.contains(&format!(
            "Brick {}\nStatus: Connected\nTotal Number of entries: 1\nNumber of entries in heal pending: 1\n\
             Number of entries in split-brain: 0\nNumber of entries possibly healing: 0\n",
            b(1)
        )),
        "{summary}"
    );
    assert!(summary.contains("Total Number of entries: -"), "{summary}");

    // Heal the network while the appender still runs, then stop it.
    let before = lines.load(Ordering::Relaxed);
    c.heal_network();
    let t = Instant::now();
    wait_until(T, "appender runs on after the partition", || {
        lines.load(Ordering::Relaxed) >= before + 20
    });
    stop.store(true, Ordering::Relaxed);
    appender.join().unwrap();
    let total = lines.load(Ordering::Relaxed);

    wait_until(
        Duration::from_secs(60),
        "heal info clean on every brick",
        || all_clean(n1, "v"),
    );
    let want = read(&file);
    wait_content(&m2.join("dates.txt"), &want, T, "m2 catches up");
    println!(
        "HEAL-FIGURES: outage heal clean {:.2} s after the partition healed ({total} lines)",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(want.lines().count() as u64, total + 1);
    for (i, l) in want.lines().skip(1).enumerate() {
        assert!(l.starts_with(&format!("line {i} ")), "line {i} is {l:?}");
    }
    for i in 1..=3 {
        assert_eq!(read(&c.brick("v", i).join("dates.txt")), want, "brick {i}");
    }
    assert_eq!(read(&c.mount_dir(3).join("dates.txt")), want);
    c.assert_no_panics();
}

/// Appends `s` to `p`.
fn append(p: &std::path::Path, s: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(p)
        .unwrap();
    f.write_all(s.as_bytes()).unwrap();
}

/// Split-brain: all three nodes cut apart, the same files changed
/// differently via m1 and m2. After the network heals the files are listed
/// as split-brain on both bricks, each mount keeps its own version, `show`
/// lists both, and each resolution command (and the favorite-child-policy)
/// makes one version win everywhere while the loser is retained.
#[test]
fn split_brain_is_reported_shown_and_resolved_without_loss() {
    let c = cluster3();
    let (m1, m2, m3) = (c.mount_dir(1), c.mount_dir(2), c.mount_dir(3));
    let names = ["src.txt", "big.txt", "late.txt", "auto.txt"];
    for f in names {
        std::fs::write(m1.join(f), "base\n").unwrap();
    }
    for f in names {
        wait_content(&m2.join(f), "base\n", T, "base reaches m2");
        wait_content(&m3.join(f), "base\n", T, "base reaches m3");
    }
    // No node can relay between 1 and 2: everyone is cut off.
    for i in 1..=3 {
        isolate(&c, i);
    }
    for i in 1..=3 {
        wait_disconnected(&c, i, 2);
    }
    // src: node 1 vs node 2; big: node 2 writes more; late: node 1 writes
    // last; auto: node 2 writes last.
    append(&m1.join("src.txt"), "one from node 1\n");
    append(&m2.join("src.txt"), "two from node 2\n");
    append(&m1.join("big.txt"), "1\n");
    append(&m2.join("big.txt"), "a much longer line from node 2\n");
    append(&m2.join("late.txt"), "earlier, node 2\n");
    append(&m1.join("auto.txt"), "earlier, node 1\n");
    for f in ["src.txt", "big.txt", "late.txt", "auto.txt"] {
        let (p1, p2) = (m1.join(f), m2.join(f));
        let (w1, w2) = (read(&p1), read(&p2));
        if w1 != "base\n" {
            wait_content(&c.brick("v", 1).join(f), &w1, T, "m1 pushes to brick 1");
        }
        if w2 != "base\n" {
            wait_content(&c.brick("v", 2).join(f), &w2, T, "m2 pushes to brick 2");
        }
    }
    append(&m1.join("late.txt"), "later, node 1\n");
    append(&m2.join("auto.txt"), "later, node 2\n");
    let v1: Vec<String> = names.iter().map(|f| read(&m1.join(f))).collect();
    let v2: Vec<String> = names.iter().map(|f| read(&m2.join(f))).collect();
    for (k, f) in names.iter().enumerate() {
        wait_content(
            &c.brick("v", 1).join(f),
            &v1[k],
            T,
            "brick 1 has m1's version",
        );
        wait_content(
            &c.brick("v", 2).join(f),
            &v2[k],
            T,
            "brick 2 has m2's version",
        );
    }

    c.heal_network();
    c.wait_connected();
    let n1 = c.node(1);
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(45), || {
        let r = n1.cli(&["volume", "heal", "v", "info", "split-brain"]);
        last = r.stdout;
        let b = parse(&last);
        b.len() == 3
            && b[..2]
                .iter()
                .all(|b| b.status == "Connected" && b.number == "4" && b.entries.len() == 4)
    });
    assert!(ok, "split-brain listed on bricks 1 and 2:\n{last}");
    let b = parse(&last);
    assert_eq!(
        b[0].entries,
        ["/auto.txt", "/big.txt", "/late.txt", "/src.txt"],
        "{last}"
    );
    let (out, _) = info(n1, "v");
    assert!(out.contains("/src.txt - Is in split-brain"), "{out}");
    // Each mount keeps its own full version.
    for (k, f) in names.iter().enumerate() {
        assert_eq!(read(&m1.join(f)), v1[k], "m1 keeps its {f}");
        assert_eq!(read(&m2.join(f)), v2[k], "m2 keeps its {f}");
    }
    // `show` lists both versions with their hashes.
    let show = n1
        .cli(&["volume", "heal", "v", "split-brain", "show", "src.txt"])
        .ok()
        .stdout;
    for v in [&v1[0], &v2[0]] {
        let h = blake3::hash(v.as_bytes()).to_hex().to_string();
        assert!(show.contains(&h), "show lacks {h}: {show}");
    }
    assert!(
        show.contains(&format!("Brick {}", brick_name(&c, "v", 1))),
        "{show}"
    );

    let converge = |k: usize, want: &str, what: &str| {
        for i in 1..=3 {
            wait_content(&c.brick("v", i).join(names[k]), want, T, what);
            wait_content(&c.mount_dir(i).join(names[k]), want, T, what);
        }
    };
    let retained_on = |i: usize, content: &str| {
        retained(&c.brick("v", i))
            .iter()
            .any(|(_, d)| d == content.as_bytes())
    };

    // source-brick: node 1's version wins, node 2's is retained.
    let b1 = brick_name(&c, "v", 1);
    let r = n1
        .cli(&[
            "volume",
            "heal",
            "v",
            "split-brain",
            "source-brick",
            &b1,
            "src.txt",
        ])
        .ok();
    assert_eq!(r.stdout.trim(), "Healed /src.txt.", "{r:?}");
    converge(0, &v1[0], "source-brick winner everywhere");
    wait_until(T, "node 2's version retained on brick 2", || {
        retained_on(2, &v2[0])
    });
    let show = n1
        .cli(&["volume", "heal", "v", "split-brain", "show", "src.txt"])
        .ok()
        .stdout;
    let h2 = blake3::hash(v2[0].as_bytes()).to_hex().to_string();
    assert!(
        show.lines()
            .any(|l| l.contains("retained:") && l.contains(&h2[..16])),
        "{show}"
    );

    // bigger-file: node 2's longer version wins.
    assert!(v2[1].len() > v1[1].len());
    let r = n1
        .cli(&[
            "volume",
            "heal",
            "v",
            "split-brain",
            "bigger-file",
            "big.txt",
        ])
        .ok();
    assert_eq!(r.stdout.trim(), "Healed /big.txt.", "{r:?}");
    converge(1, &v2[1], "bigger-file winner everywhere");
    wait_until(T, "node 1's version retained on brick 1", || {
        retained_on(1, &v1[1])
    });

    // latest-mtime: node 1 wrote last.
    let r = n1
        .cli(&[
            "volume",
            "heal",
            "v",
            "split-brain",
            "latest-mtime",
            "late.txt",
        ])
        .ok();
    assert_eq!(r.stdout.trim(), "Healed /late.txt.", "{r:?}");
    converge(2, &v1[2], "latest-mtime winner everywhere");
    wait_until(T, "node 2's version retained on brick 2", || {
        retained_on(2, &v2[2])
    });

    // favorite-child-policy mtime: node 2 wrote last; resolved by itself.
    n1.cli(&[
        "volume",
        "set",
        "v",
        "cluster.favorite-child-policy",
        "mtime",
    ])
    .ok();
    converge(3, &v2[3], "favorite-child-policy winner everywhere");
    wait_until(T, "node 1's version retained on brick 1", || {
        retained_on(1, &v1[3])
    });
    let logged = eventually(T, || {
        c.nodes.iter().any(|n| {
            n.log()
                .contains("favorite-child-policy resolved split-brain")
                && n.log().contains("auto.txt")
        })
    });
    assert!(logged, "auto-resolution is logged");

    wait_until(T, "no split-brain left", || all_clean(n1, "v"));
    for i in 2..=3 {
        wait_same_tree(&c.mount_dir(1), &c.mount_dir(i), T, "mounts converge");
        wait_same_tree(&c.brick("v", 1), &c.brick("v", i), T, "bricks converge");
    }
    c.assert_no_panics();
}

/// Writes `n` small files under `dir` in 100 subdirectories.
fn many_files(dir: &std::path::Path, n: usize) {
    for i in 0..n {
        let d = dir.join(format!("d{:02}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&d).unwrap();
        }
        std::fs::write(d.join(format!("f{i:05}")), format!("file {i}\n")).unwrap();
    }
}

fn count_files(dir: &std::path::Path) -> usize {
    manifest::of(dir).values().filter(|i| i.kind == 'f').count()
}

/// A 3-node volume holding `GSYNC_HEAL_FILES` (else `default_files`) small
/// files, created through m1, converged and clean; prints the creation and
/// `heal info` figures. The index-heal test uses the 10,000 files
/// (about 90 s to create on a loaded 2-core machine); the full-heal test
/// rebuilds a 2,000-file brick.
fn populated(default_files: usize) -> (Cluster, usize) {
    let c = cluster3();
    let m1 = c.mount_dir(1);
    let n: usize = std::env::var("GSYNC_HEAL_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_files);
    let t = Instant::now();
    many_files(&m1, n);
    let mut last = Instant::now();
    let ok = eventually(Duration::from_secs(240), || {
        let counts: Vec<usize> = (1..=3).map(|i| count_files(&c.brick("v", i))).collect();
        if last.elapsed() > Duration::from_secs(10) {
            last = Instant::now();
            println!(
                "  {:.0} s: files per brick {counts:?}",
                t.elapsed().as_secs_f64()
            );
        }
        counts.iter().all(|x| *x == n)
    });
    assert!(ok, "{n} files on every brick");
    println!(
        "HEAL-FIGURES: {n} files created and replicated to 3 bricks in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    wait_until(Duration::from_secs(60), "heal info clean", || {
        all_clean(c.node(1), "v")
    });
    // heal info reads only the index, never the tree.
    let t = Instant::now();
    let runs = 5;
    for _ in 0..runs {
        c.node(1).cli(&["volume", "heal", "v", "info"]).ok();
    }
    let per = t.elapsed() / runs;
    println!(
        "HEAL-FIGURES: heal info on a {n}-file volume: {:.0} ms per run (CLI round trip, 3 bricks)",
        per.as_secs_f64() * 1000.0
    );
    assert!(per < Duration::from_secs(2), "heal info took {per:?}");
    (c, n)
}

/// 100 files changed while node 3 is down: the heal moves only those 100
/// (statistics: heals done ~100 per source brick, not the volume size) and
/// takes seconds.
#[test]
fn heal_touches_only_changed_paths() {
    let (mut c, n) = populated(10_000);
    let m1 = c.mount_dir(1);
    let base: Vec<u64> = heals_done(c.node(1), "v")
        .into_iter()
        .map(|x| x.unwrap_or(0))
        .collect();
    c.node_mut(3).stop();
    wait_disconnected(&c, 1, 1);
    for i in 0..100 {
        let p = m1.join(format!("d{:02}/f{:05}", (i * 97) % 100, i * 97));
        std::fs::write(&p, format!("changed during the outage {i}\n")).unwrap();
    }
    let changed = |p: &std::path::Path| {
        (0..100).all(|i| {
            read(&p.join(format!("d{:02}/f{:05}", (i * 97) % 100, i * 97))).starts_with("changed")
        })
    };
    wait_until(T, "changes on bricks 1 and 2", || {
        changed(&c.brick("v", 1)) && changed(&c.brick("v", 2))
    });
    wait_until(T, "100 entries pending", || {
        let (_, b) = info(c.node(1), "v");
        b.first().is_some_and(|b| b.number == "100")
    });
    c.node_mut(3).start();
    let t = Instant::now();
    wait_until(Duration::from_secs(60), "heal done", || {
        changed(&c.brick("v", 3)) && all_clean(c.node(1), "v")
    });
    let took = t.elapsed();
    let after: Vec<u64> = heals_done(c.node(1), "v")
        .into_iter()
        .map(|x| x.unwrap_or(0))
        .collect();
    let delta: Vec<u64> = after
        .iter()
        .zip(&base)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    println!(
        "HEAL-FIGURES: 100 changed of {n}: heal complete {:.2} s after node 3 restarted (incl. reconnect); heals_done per brick {delta:?}",
        took.as_secs_f64()
    );
    let total: u64 = delta.iter().sum();
    assert!(
        (100..=300).contains(&total),
        "heals done {delta:?}: the heal must touch only the 100 changed paths"
    );
    assert!(took < Duration::from_secs(20), "heal took {took:?}");
    wait_same_tree(&c.brick("v", 1), &c.brick("v", 3), T, "brick 3 healed");

    c.assert_no_panics();
}

/// Node 3's brick is emptied (files and database) while the node is down,
/// keeping only its volume-id marker, as `reset-brick ... commit force`
/// re-initialises a brick (without the marker it is not served at all: see
/// `brick_integrity`); `heal full` rebuilds it byte-identical to brick 1.
#[test]
fn full_heal_rebuilds_a_wiped_brick() {
    let (mut c, n) = populated(2_000);
    // Empty brick 3 (files and database), then `heal full`.
    c.node(3)
        .cli(&["umount", &c.mount_dir(3).to_string_lossy()])
        .ok();
    c.node_mut(3).stop();
    let b3 = c.brick("v", 3);
    let marker = std::fs::read(b3.join(".gsync/volume-id")).unwrap();
    crate::support::empty_dir(&b3);
    std::fs::create_dir_all(b3.join(".gsync")).unwrap();
    std::fs::write(b3.join(".gsync/volume-id"), marker).unwrap();
    c.node_mut(3).start();
    c.wait_connected();
    wait_until(T, "brick 3 online", || {
        c.node(1)
            .cli(&["volume", "status", "v"])
            .stdout
            .matches(" Y ")
            .count()
            >= 3
    });
    let t = Instant::now();
    let r = c.node(1).cli(&["volume", "heal", "v", "full"]).ok();
    assert!(
        r.stdout
            .contains("perform full self heal on volume v has been successful"),
        "{}",
        r.stdout
    );
    wait_same_tree(
        &c.brick("v", 1),
        &b3,
        Duration::from_secs(120),
        "full heal rebuilds brick 3",
    );
    wait_until(
        Duration::from_secs(60),
        "heal info clean after full heal",
        || all_clean(c.node(1), "v"),
    );
    println!(
        "HEAL-FIGURES: full heal rebuilt a wiped brick of {n} files in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let m = manifest::of(&b3);
    let extra: Vec<&String> = m
        .iter()
        .filter(|(k, i)| i.kind == 'f' && !(k.len() == 10 && k.contains("/f")))
        .map(|(k, _)| k)
        .take(10)
        .collect();
    assert_eq!(
        m.values().filter(|i| i.kind == 'f').count(),
        n,
        "unexpected files: {extra:?}"
    );
    c.assert_no_panics();
}

/// Quorum auto: node 1 alone cannot accept changes, so m1's edits stay
/// queued (and `gsync mount` says so) while m2's reach m3; after the network
/// heals there is no split-brain, m1's queued edits are applied, and an edit
/// that conflicts with the majority's is flagged as a conflict copy rather
/// than lost.
#[test]
fn quorum_keeps_the_minority_queued_and_prevents_split_brain() {
    let c = cluster3();
    let (m1, m2, m3) = (c.mount_dir(1), c.mount_dir(2), c.mount_dir(3));
    c.node(1)
        .cli(&["volume", "set", "v", "cluster.quorum-type", "auto"])
        .ok();
    std::fs::write(m1.join("shared.txt"), "base\n").unwrap();
    wait_content(&m3.join("shared.txt"), "base\n", T, "base reaches m3");
    wait_content(&m2.join("shared.txt"), "base\n", T, "base reaches m2");

    isolate(&c, 1);
    wait_disconnected(&c, 1, 2);
    std::fs::write(m1.join("only1.txt"), "queued on node 1\n").unwrap();
    std::fs::write(m1.join("shared.txt"), "base\nnode 1 edit\n").unwrap();
    std::fs::write(m2.join("only2.txt"), "from node 2\n").unwrap();
    std::fs::write(m2.join("shared.txt"), "base\nnode 2 edit\n").unwrap();
    wait_content(
        &m3.join("only2.txt"),
        "from node 2\n",
        T,
        "majority writes reach m3",
    );
    wait_content(
        &m3.join("shared.txt"),
        "base\nnode 2 edit\n",
        T,
        "majority edit reaches m3",
    );
    // Node 1's mount reports its edits as held.
    let mut st = String::new();
    let held = eventually(T, || {
        st = c.node(1).cli(&["mount"]).ok().stdout;
        st.contains("pending") && st.contains("held")
    });
    assert!(
        held,
        "gsync mount on node 1: {st}\nbrick1 only1 exists {}, shared {:?}\npeers {}\n{}",
        c.brick("v", 1).join("only1.txt").exists(),
        read(&c.brick("v", 1).join("shared.txt")),
        c.node(1).cli(&["peer", "status"]).stdout,
        c.node(1)
            .cli(&["--json", "volume", "heal", "v", "statistics"])
            .stdout
    );
    assert!(
        !c.brick("v", 1).join("only1.txt").exists(),
        "brick 1 must refuse the write"
    );
    assert_eq!(read(&c.brick("v", 1).join("shared.txt")), "base\n");

    c.heal_network();
    c.wait_connected();
    wait_content(
        &m2.join("only1.txt"),
        "queued on node 1\n",
        Duration::from_secs(45),
        "queued edit applied",
    );
    wait_content(
        &m3.join("only1.txt"),
        "queued on node 1\n",
        T,
        "queued edit applied",
    );
    // The bricks never diverged: no split-brain exists. The conflicting
    // queued edit is flagged as a conflict copy beside the file, synced
    // everywhere, and the majority's version holds the original name.
    let n1 = c.node(1);
    let copy_of = |dir: &std::path::Path| -> Option<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name().is_some_and(|n| {
                    n.to_string_lossy()
                        .starts_with("shared.txt.gsync-conflict-")
                })
            })
    };
    for i in 1..=3 {
        let m = c.mount_dir(i);
        wait_content(
            &m.join("shared.txt"),
            "base\nnode 2 edit\n",
            T,
            "majority version everywhere",
        );
        wait_until(T, "conflict copy everywhere", || {
            copy_of(&m).is_some_and(|p| read(&p) == "base\nnode 1 edit\n")
        });
    }
    println!(
        "HEAL-FIGURES: quorum conflict outcome: m1's stale edit kept as {:?}",
        copy_of(&m1).map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    );
    let sb = n1
        .cli(&["volume", "heal", "v", "info", "split-brain"])
        .ok()
        .stdout;
    assert_eq!(
        sb.matches("Number of entries in split-brain: 0").count(),
        3,
        "{sb}"
    );
    wait_until(T, "heal info clean", || all_clean(n1, "v"));
    for i in 2..=3 {
        wait_same_tree(&c.brick("v", 1), &c.brick("v", i), T, "bricks converge");
    }
    c.assert_no_panics();
}

//! Brick-side integrity (issue 9): a brick directory that lost its
//! volume-id marker (a wiped or unmounted disk) is never served, and says
//! why; a full heal is only done when every brick was compared; `auth.allow`
//! is enforced on every request of a mount; volumes have bounds; brick
//! paths never overlap.

use std::time::Duration;

use crate::support::heal::{all_clean, info, isolate, wait_same_tree};
use crate::support::{read, wait_until, Cluster};

const T: Duration = Duration::from_secs(30);

fn cluster3() -> Cluster {
    let c = Cluster::start(3);
    c.form_pool();
    c.create_volume("v");
    c
}

/// `volume status v` row of node `i`'s brick, and whether it is online.
fn status_row(c: &Cluster, from: usize, i: usize) -> (bool, Option<String>) {
    let r = c.node(from).cli(&["volume", "status", "v", "--json"]).ok();
    let j = r.json();
    let want = format!("{}:{}", c.node(i).ip, c.brick("v", i).display());
    let b = j[0]["bricks"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["brick"] == want.as_str()).cloned())
        .unwrap_or_else(|| panic!("no row for {want}: {}", r.stdout));
    (
        b["online"].as_bool().unwrap_or(false),
        b["reason"].as_str().map(String::from),
    )
}

/// Asserts that `heal info v` names brick `i` as unserved, with why.
#[track_caller]
fn assert_heal_info_names_unserved(c: &Cluster, i: usize) {
    let (out, blocks) = info(c.node(1), "v");
    let b = blocks
        .iter()
        .find(|b| b.brick.ends_with(&format!("/v{i}")))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(b.status.contains("marker missing"), "{out}");
}

fn volume_id(c: &Cluster) -> String {
    let j = c
        .node(1)
        .cli(&["volume", "info", "v", "--json"])
        .ok()
        .json();
    j[0]["id"].as_str().expect("volume id").to_string()
}

/// Node 3's brick is wiped (files and `.gsync/`, marker included) while
/// the node is down. On restart it is not served: `volume status` shows it
/// offline with the reason, `heal info` names it with that reason, nothing
/// is recreated in the directory, and node 3's mount follows another brick
/// both ways. Once the directory is re-initialised (the marker written
/// back, as `reset-brick … commit force` does), the running daemon serves
/// it again on its own and a full heal refills it.
#[test]
fn wiped_brick_is_not_served_until_reinitialised() {
    let mut c = cluster3();
    let m1 = c.mount("v", 1);
    let m3 = c.mount("v", 3);
    std::fs::write(m1.join("before.txt"), "before\n").unwrap();
    let b3 = c.brick("v", 3);
    wait_until(T, "before.txt on brick 3", || {
        read(&b3.join("before.txt")) == "before\n"
    });
    let vid = volume_id(&c);

    c.node_mut(3).stop();
    crate::support::empty_dir(&b3);
    c.node_mut(3).start();
    c.wait_connected();

    for from in [1, 3] {
        let (online, reason) = status_row(&c, from, 3);
        assert!(!online, "a wiped brick must not be online");
        let reason = reason.unwrap_or_default();
        assert!(
            reason.contains("marker missing") && reason.contains("reset-brick"),
            "reason: {reason}"
        );
    }
    let text = c.node(1).cli(&["volume", "status", "v"]).ok().stdout;
    assert!(text.contains("marker missing"), "{text}");
    assert_heal_info_names_unserved(&c, 3);
    assert!(
        !b3.join(".gsync").exists(),
        "nothing may be created in an unserved brick"
    );

    // Node 3's mount follows another brick, both ways.
    std::fs::write(m1.join("during.txt"), "during\n").unwrap();
    wait_until(T, "during.txt reaches m3", || {
        read(&m3.join("during.txt")) == "during\n"
    });
    std::fs::write(m3.join("from3.txt"), "from 3\n").unwrap();
    wait_until(T, "from3.txt reaches m1", || {
        read(&m1.join("from3.txt")) == "from 3\n"
    });
    assert!(!b3.join("during.txt").exists() && !b3.join("from3.txt").exists());

    // Re-initialised in place: served again without a restart.
    std::fs::create_dir_all(b3.join(".gsync")).unwrap();
    std::fs::write(b3.join(".gsync/volume-id"), &vid).unwrap();
    wait_until(T, "brick 3 online again", || status_row(&c, 1, 3).0);
    c.node(1).cli(&["volume", "heal", "v", "full"]).ok();
    wait_same_tree(
        &c.brick("v", 1),
        &b3,
        Duration::from_secs(60),
        "brick 3 refilled",
    );
    c.assert_no_panics();
}

/// A brick directory that is gone (an unmounted disk's mount point removed)
/// is not recreated, and one whose marker names another volume is not
/// served; both say why.
#[test]
fn missing_or_foreign_brick_dir_is_not_served() {
    let mut c = cluster3();
    let b2 = c.brick("v", 2);
    let b3 = c.brick("v", 3);
    c.node_mut(2).stop();
    c.node_mut(3).stop();
    std::fs::remove_dir_all(&b2).unwrap();
    std::fs::write(
        b3.join(".gsync/volume-id"),
        "00000000-0000-4000-8000-000000000000",
    )
    .unwrap();
    c.node_mut(2).start();
    c.node_mut(3).start();
    c.wait_connected();
    let (online, reason) = status_row(&c, 1, 2);
    assert!(!online);
    assert!(
        reason.unwrap_or_default().contains("directory missing"),
        "brick 2"
    );
    assert!(
        !b2.exists(),
        "a missing brick directory must not be created"
    );
    let (online, reason) = status_row(&c, 1, 3);
    assert!(!online);
    let reason = reason.unwrap_or_default();
    assert!(reason.contains("another volume"), "brick 3: {reason}");
    c.assert_no_panics();
}

/// Empties brick `i` (files and database) while its node is down, keeping
/// only the volume-id marker, as `reset-brick … commit force` leaves it;
/// restarts the node and waits until the brick is served again.
fn empty_brick_keeping_marker(c: &mut Cluster, i: usize) {
    let b = c.brick("v", i);
    c.node_mut(i).stop();
    let marker = std::fs::read(b.join(".gsync/volume-id")).unwrap();
    crate::support::empty_dir(&b);
    std::fs::create_dir_all(b.join(".gsync")).unwrap();
    std::fs::write(b.join(".gsync/volume-id"), marker).unwrap();
    c.node_mut(i).start();
    c.wait_connected();
    wait_until(T, "emptied brick served", || status_row(c, 1, i).0);
}

/// `heal full` launched while node 3 (whose brick is empty) cannot be
/// reached: the crawls toward it fail, and instead of a silent success
/// with 0 entries, `heal info` and `statistics` say the full heal is being
/// retried and why, with no entry count. Once the network is back, the
/// retry compares the trees and refills brick 3 without another command.
#[test]
fn full_heal_is_retried_until_every_brick_is_compared() {
    let mut c = cluster3();
    let m1 = c.mount("v", 1);
    for i in 0..200 {
        let d = m1.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), format!("file {i}\n")).unwrap();
    }
    wait_same_tree(&m1, &c.brick("v", 3), T, "200 files on brick 3");
    empty_brick_keeping_marker(&mut c, 3);
    isolate(&c, 3);
    c.node(1).cli(&["volume", "heal", "v", "full"]).ok();
    wait_until(
        Duration::from_secs(90),
        "full heal reported retrying",
        || info(c.node(1), "v").0.contains("Full heal: retrying"),
    );
    let (out, blocks) = info(c.node(1), "v");
    for b in blocks.iter().filter(|b| !b.brick.ends_with("/v3")) {
        assert_eq!(b.number, "-", "no entry count while unfinished:\n{out}");
    }
    assert!(!all_clean(c.node(1), "v"), "{out}");
    println!("heal info while node 3 is cut off:\n{out}");
    let st = c
        .node(1)
        .cli(&["volume", "heal", "v", "statistics"])
        .ok()
        .stdout;
    assert!(
        st.contains("Full heal: retrying toward") || st.contains("Full heal: running toward"),
        "{st}"
    );
    assert!(st.contains("failed: "), "the reason is shown: {st}");

    c.heal_network();
    wait_same_tree(
        &c.brick("v", 1),
        &c.brick("v", 3),
        Duration::from_secs(120),
        "brick 3 refilled by the retried crawl",
    );
    wait_until(Duration::from_secs(60), "heal info clean", || {
        all_clean(c.node(1), "v")
    });
    let st = c
        .node(1)
        .cli(&["volume", "heal", "v", "statistics"])
        .ok()
        .stdout;
    assert!(st.contains("Full heal: done toward"), "{st}");
    println!("statistics after the retried full heal:\n{st}");
    c.assert_no_panics();
}

/// A mount attached while `auth.allow` admitted its node stops pushing and
/// receiving once `auth.allow` excludes that node: its own node's brick
/// refuses it as well as the others (replication between bricks goes on).
/// Admitted again, it catches up both ways.
#[test]
fn auth_allow_is_enforced_on_every_mount_request() {
    let c = cluster3();
    let m1 = c.mount("v", 1);
    let m2 = c.mount("v", 2);
    std::fs::write(m1.join("a.txt"), "a\n").unwrap();
    wait_until(T, "a.txt reaches m2", || read(&m2.join("a.txt")) == "a\n");

    c.node(1)
        .cli(&["volume", "set", "v", "auth.allow", &c.node(1).ip])
        .ok();
    // The document reaches node 2 within a push; give it a moment.
    wait_until(T, "auth.allow on node 2", || {
        c.node(2)
            .cli(&["volume", "get", "v", "auth.allow", "--json"])
            .json()["auth.allow"]["value"]
            == c.node(1).ip.as_str()
    });
    std::fs::write(m1.join("b.txt"), "b\n").unwrap();
    std::fs::write(m2.join("c.txt"), "c\n").unwrap();
    wait_until(T, "b.txt replicated to brick 2", || {
        read(&c.brick("v", 2).join("b.txt")) == "b\n"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !m2.join("b.txt").exists(),
        "an excluded mount received b.txt"
    );
    for i in 1..=3 {
        assert!(
            !c.brick("v", i).join("c.txt").exists(),
            "an excluded mount pushed c.txt to brick {i}"
        );
    }
    // The refusal is what the user sees in `gsync mount`.
    let state = c.node(2).cli(&["mount"]).stdout;
    assert!(
        state.contains("not allowed to mount v (auth.allow)"),
        "the refusal reaches the mount's state: {state}"
    );

    c.node(1).cli(&["volume", "reset", "v", "auth.allow"]).ok();
    wait_until(T, "b.txt reaches m2 once allowed", || {
        read(&m2.join("b.txt")) == "b\n"
    });
    wait_until(T, "c.txt reaches m1 once allowed", || {
        read(&m1.join("c.txt")) == "c\n"
    });
    c.assert_no_panics();
}

/// `volume create NAME replica N` over `bricks` on node `from`.
fn create_args(name: &str, replica: usize, bricks: &[String]) -> Vec<String> {
    let mut a: Vec<String> = ["volume", "create", name, "replica"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(replica.to_string());
    a.extend(bricks.iter().cloned());
    a.push("force".into());
    a
}

fn cli_owned(n: &crate::support::Node, args: &[String]) -> crate::support::Run {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    n.cli(&a)
}

/// Plants, in node `i`'s stored pool document (node stopped), what an
/// older version could have stored: a started volume far over the limits
/// with its bricks on node `i`, and a volume this version cannot read.
fn plant_bad_volumes(c: &Cluster, i: usize) {
    let db = rusqlite::Connection::open(c.node(i).state.join("node.db")).unwrap();
    let doc: String = db
        .query_row("SELECT doc FROM pool WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let v = doc["volumes"][0].clone();
    let node = v["bricks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["host"] == c.node(i).ip.as_str())
        .unwrap()["node"]
        .clone();
    let mut huge = v.clone();
    huge["name"] = "huge".into();
    huge["id"] = "6f1e2d3c-0000-4000-8000-000000000001".into();
    huge["replica"] = 40.into();
    huge["bricks"] = (0..40u64)
        .map(|k| {
            serde_json::json!({
                "id": 1000 + 2 * k + 1,
                "node": node,
                "host": c.node(i).ip,
                "path": c.path(&format!("huge/b{k}")).to_string_lossy(),
            })
        })
        .collect();
    let vols = doc["volumes"].as_array_mut().unwrap();
    vols.push(huge);
    vols.push(serde_json::json!({"name": "garbled", "replica": "lots"}));
    db.execute(
        "UPDATE pool SET doc = ?1 WHERE id = 1",
        [serde_json::to_string(&doc).unwrap()],
    )
    .unwrap();
}

/// Defect 6: the replica count and the bricks per node are bounded when a
/// volume is defined (`volume create`, `add-brick`), with one line each,
/// before anything is resolved or created; and a stored volume over the
/// limits, or unreadable, is skipped with a log line when the daemon
/// starts, which then serves every other volume.
#[test]
fn volumes_are_bounded_and_a_bad_stored_volume_never_stops_a_daemon() {
    let mut c = cluster3();
    let pid = c.node(1).pid().unwrap();
    let rss = |pid: u32| crate::support::replication::proc_kib(pid, "VmRSS").unwrap_or(0);
    let before = rss(pid);

    let bricks: Vec<String> = (0..20_000)
        .map(|k| {
            format!(
                "{}:{}",
                c.node(1 + k % 3).ip,
                c.path(&format!("many/b{k}")).display()
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let r = cli_owned(c.node(1), &create_args("many", 20_000, &bricks)).fails();
    let took = started.elapsed();
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("replica count 20000 is above the limit of 32"),
        "{}",
        r.stderr
    );
    assert!(!c.path("many").exists(), "nothing may be created");
    let after = rss(pid);
    println!(
        "volume create many replica 20000: refused in {took:?}; daemon RSS {before} KiB before, {after} KiB after"
    );
    assert!(
        after < before + 256 * 1024,
        "the daemon grew from {before} to {after} KiB"
    );

    // Nine bricks of one volume on one node.
    let nine: Vec<String> = (0..9)
        .map(|k| {
            format!(
                "{}:{}",
                c.node(1).ip,
                c.path(&format!("nine/b{k}")).display()
            )
        })
        .collect();
    let r = cli_owned(c.node(1), &create_args("nine", 9, &nine)).fails();
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{} would hold 9 bricks of volume nine: at most 8 bricks of one volume per node",
            c.node(1).ip
        )),
        "{}",
        r.stderr
    );
    assert!(!c.path("nine").exists());

    // add-brick: over the replica limit, and over the per-node limit.
    let more: Vec<String> = (0..30)
        .map(|k| {
            format!(
                "{}:{}",
                c.node(2).ip,
                c.path(&format!("more/b{k}")).display()
            )
        })
        .collect();
    let mut a: Vec<String> = ["volume", "add-brick", "v", "replica", "33"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(more[..30].iter().cloned());
    let r = cli_owned(c.node(1), &a).fails();
    assert!(
        r.stderr
            .contains("replica count 33 is above the limit of 32"),
        "{}",
        r.stderr
    );
    let mut a: Vec<String> = ["volume", "add-brick", "v", "replica", "11", "force"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.splice(5..5, more[..8].iter().cloned());
    let r = cli_owned(c.node(1), &a).fails();
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{} would hold 9 bricks of volume v: at most 8 bricks of one volume per node",
            c.node(2).ip
        )),
        "{}",
        r.stderr
    );
    assert!(!c.path("more").exists());

    // A stored document with a volume over the limits and one that cannot
    // be read: the daemon starts, says so once, and serves volume v.
    c.node_mut(1).stop();
    plant_bad_volumes(&c, 1);
    c.node_mut(1).start();
    c.wait_connected();
    let log = c.node(1).log();
    assert!(log.contains("volume garbled is unreadable ("), "{log}");
    assert!(
        log.contains("volume huge has 40 bricks, above the limit of 32; it is not served"),
        "{log}"
    );
    assert!(!c.path("huge").exists(), "no brick of huge may be created");
    let r = c.node(1).cli(&["volume", "start", "huge", "force"]).fails();
    assert!(r.stderr.contains("above the limit of 32"), "{}", r.stderr);
    wait_until(T, "brick 1 of v online", || status_row(&c, 1, 1).0);
    let m1 = c.mount("v", 1);
    std::fs::write(m1.join("after.txt"), "after\n").unwrap();
    wait_until(T, "after.txt on brick 2", || {
        read(&c.brick("v", 2).join("after.txt")) == "after\n"
    });
    let pid = c.node(1).pid().unwrap();
    println!("daemon with a 40-brick stored volume: RSS {} KiB", rss(pid));
    c.assert_no_panics();
}

/// Defect 5 (brick side): a brick inside a brick, a brick inside a mount
/// or containing one, and two nested bricks of one command are refused
/// with one line naming both paths, by the node that owns them (the
/// command runs on another node), judged after resolving symlinks; nothing
/// is created.
#[test]
fn overlapping_bricks_are_refused() {
    let c = cluster3();
    let m1 = c.mount("v", 1);
    let b1 = c.brick("v", 1);
    let alias = c.path("alias");
    std::os::unix::fs::symlink(&b1, &alias).unwrap();
    let outer = c.path("outer");
    std::fs::create_dir_all(&outer).unwrap();
    let inner_mount = outer.join("m");
    c.mount_from(1, 1, "v", &inner_mount);
    let ip1 = c.node(1).ip.clone();
    let other = format!("{}:{}", c.node(2).ip, c.path("w2").display());
    let b1_name = format!("{ip1}:{}", b1.display());
    let cases: Vec<(Vec<String>, String, String)> = vec![
        (
            vec![format!("{ip1}:{}", b1.join("sub").display()), other.clone()],
            "is inside the brick".into(),
            b1_name.clone(),
        ),
        (
            vec![
                format!("{ip1}:{}", alias.join("sub").display()),
                other.clone(),
            ],
            "is inside the brick".into(),
            b1_name.clone(),
        ),
        (
            vec![
                format!("{ip1}:{}", c.path("bricks").display()),
                other.clone(),
            ],
            "contains the brick".into(),
            b1_name,
        ),
        (
            vec![format!("{ip1}:{}", m1.join("b").display()), other.clone()],
            "is inside the mount".into(),
            m1.to_string_lossy().into_owned(),
        ),
        (
            vec![format!("{ip1}:{}", outer.display()), other.clone()],
            "contains the mount".into(),
            inner_mount.to_string_lossy().into_owned(),
        ),
        (
            vec![
                format!("{ip1}:{}", c.path("pair").display()),
                format!("{ip1}:{}", c.path("pair/nested").display()),
            ],
            "is inside the brick".into(),
            format!("{ip1}:{}", c.path("pair").display()),
        ),
    ];
    for (bricks, why, named) in cases {
        // From node 2: node 1 judges its own paths.
        let r = cli_owned(c.node(2), &create_args("w", 2, &bricks)).fails();
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains(&why), "{bricks:?}: {}", r.stderr);
        assert!(r.stderr.contains(&named), "{bricks:?}: {}", r.stderr);
        let first = bricks[0].split_once(':').unwrap().1;
        assert!(r.stderr.contains(first), "{bricks:?}: {}", r.stderr);
    }
    for p in [b1.join("sub"), m1.join("b"), c.path("pair"), c.path("w2")] {
        assert!(!p.exists(), "{} was created", p.display());
    }
    assert!(!c.brick("v", 2).join("sub").exists() && !c.brick("v", 2).join("b").exists());
    let r = c.node(1).cli(&["volume", "info", "w"]);
    assert_ne!(r.code, 0, "volume w was defined");
    // Beside them is fine.
    let ok = vec![format!("{ip1}:{}", c.path("beside").display()), other];
    cli_owned(c.node(2), &create_args("w", 2, &ok)).ok();
    c.assert_no_panics();
}

/// The `gsync mount` line of `dir` on node `i`.
fn mount_line(c: &Cluster, i: usize, dir: &std::path::Path) -> String {
    c.node(i)
        .cli(&["mount"])
        .ok()
        .stdout
        .lines()
        .find(|l| l.contains(&*dir.to_string_lossy()))
        .unwrap_or_default()
        .to_string()
}

/// Defect 3: a brick wiped while its daemon runs stops being served
/// within a recheck; the mounts that followed it fail over and keep
/// receiving: node 3's own mount, and a mount on node 2 that followed
/// node 3's brick of a volume node 2 has no brick of (it is told "not
/// served here" and moves on). `heal info` names the brick and why, and
/// `volume reset-brick … commit force` rebuilds it in place.
#[test]
fn mounts_fail_over_from_a_brick_wiped_while_running() {
    let c = cluster3();
    // Volume w: bricks on nodes 1 and 3 only.
    let w1 = c.path("bricks/w1");
    let w3 = c.path("bricks/w3");
    let wb = [
        format!("{}:{}", c.node(1).ip, w1.display()),
        format!("{}:{}", c.node(3).ip, w3.display()),
    ];
    cli_owned(c.node(1), &create_args("w", 2, &wb)).ok();
    c.node(1).cli(&["volume", "start", "w"]).ok();
    let m1 = c.mount("v", 1);
    let m3 = c.mount("v", 3);
    let mw1 = c.path("mw1");
    c.mount_from(1, 1, "w", &mw1);
    // Node 2 mounts w from node 3: it follows brick w3 over the network.
    let mw2 = c.path("mw2");
    c.mount_from(2, 3, "w", &mw2);
    assert!(
        mount_line(&c, 2, &mw2).contains(&format!("following {}", wb[1])),
        "{}",
        mount_line(&c, 2, &mw2)
    );
    std::fs::write(m1.join("before.txt"), "before\n").unwrap();
    std::fs::write(mw1.join("before.txt"), "before w\n").unwrap();
    let b3 = c.brick("v", 3);
    wait_until(T, "before.txt on brick v3 and in m3", || {
        read(&b3.join("before.txt")) == "before\n" && read(&m3.join("before.txt")) == "before\n"
    });
    wait_until(T, "before.txt in mw2", || {
        read(&mw2.join("before.txt")) == "before w\n"
    });

    // Both bricks of node 3 are wiped under the running daemon.
    crate::support::empty_dir(&b3);
    crate::support::empty_dir(&w3);
    wait_until(T, "brick v3 reported unserved", || {
        status_row(&c, 1, 3)
            .1
            .is_some_and(|r| r.contains("marker missing"))
    });
    assert_heal_info_names_unserved(&c, 3);

    // Changes made on node 1 keep reaching node 3's mount and node 2's
    // mount of w, and their edits keep reaching node 1.
    for (from, to, name, text) in [
        (&m1, &m3, "during.txt", "during\n"),
        (&mw1, &mw2, "during.txt", "during w\n"),
        (&m3, &m1, "from3.txt", "from 3\n"),
        (&mw2, &mw1, "from2.txt", "from 2\n"),
    ] {
        std::fs::write(from.join(name), text).unwrap();
        crate::support::mounts::wait_content(to, name, text, T);
    }
    for (i, d) in [(3, &m3), (2, &mw2)] {
        wait_until(T, "the mount says in sync, following node 1", || {
            let l = mount_line(&c, i, d);
            l.contains("in sync") && l.contains(&format!("following {}:", c.node(1).ip))
        });
    }
    assert!(
        !b3.join(".gsync").exists() && !w3.join(".gsync").exists(),
        "nothing may be created in an unserved brick"
    );

    // reset-brick … commit force re-initialises and rebuilds it in place.
    let name = format!("{}:{}", c.node(3).ip, b3.display());
    let r = c.node(1).reset_brick("v", &name).ok();
    assert!(r.stdout.contains("successful"), "{}", r.stdout);
    wait_until(T, "brick v3 online again", || status_row(&c, 1, 3).0);
    wait_same_tree(
        &c.brick("v", 1),
        &b3,
        Duration::from_secs(60),
        "brick v3 rebuilt",
    );
    std::fs::write(m1.join("after.txt"), "after\n").unwrap();
    wait_until(T, "after.txt reaches brick v3 and m3", || {
        read(&b3.join("after.txt")) == "after\n" && read(&m3.join("after.txt")) == "after\n"
    });
    wait_until(T, "heal info clean", || all_clean(c.node(1), "v"));
    c.assert_no_panics();
}

/// A brick reset to be refilled adopts nothing it finds in its directory
/// when it opens a new database (a write still in flight from before the
/// reset, a stale copy): it is set aside under `.gsync/`, and a directory
/// the volume deleted does not come back on any brick or mount.
#[test]
fn a_reset_brick_adopts_no_stray_content() {
    let mut c = cluster3();
    let m1 = c.mount("v", 1);
    std::fs::create_dir_all(m1.join("gone/inner")).unwrap();
    std::fs::write(m1.join("gone/inner/f"), "f\n").unwrap();
    std::fs::write(m1.join("kept.txt"), "kept\n").unwrap();
    let b3 = c.brick("v", 3);
    wait_until(T, "gone/inner/f on brick 3", || {
        read(&b3.join("gone/inner/f")) == "f\n"
    });
    std::fs::remove_dir_all(m1.join("gone")).unwrap();
    for i in 1..=3 {
        crate::support::mounts::wait_gone(&c.brick("v", i), "gone", T);
    }
    crate::support::empty_dir(&b3);
    wait_until(T, "brick v3 reported unserved", || {
        status_row(&c, 1, 3)
            .1
            .is_some_and(|r| r.contains("marker missing"))
    });
    let name = format!("{}:{}", c.node(3).ip, b3.display());
    c.node(1).reset_brick("v", &name).ok();
    wait_until(T, "kept.txt refilled on brick 3", || {
        read(&b3.join("kept.txt")) == "kept\n"
    });
    // Its database is lost while a stale copy of the deleted directory
    // stands in its directory.
    c.node_mut(3).kill9();
    for f in ["meta.db", "meta.db-wal", "meta.db-shm"] {
        let _ = std::fs::remove_file(b3.join(".gsync").join(f));
    }
    std::fs::create_dir_all(b3.join("gone/inner")).unwrap();
    std::fs::write(b3.join("gone/inner/f"), "stale\n").unwrap();
    c.node_mut(3).start();
    // What the brick holds is unknown: not served, and the reason says so.
    wait_until(T, "brick v3 unserved: database lost", || {
        status_row(&c, 1, 3)
            .1
            .is_some_and(|r| r.contains("database lost"))
    });
    c.node(1).reset_brick("v", &name).ok();
    wait_until(T, "kept.txt refilled on brick 3 again", || {
        read(&b3.join("kept.txt")) == "kept\n"
    });
    std::thread::sleep(Duration::from_secs(3));
    for d in [m1.clone(), c.brick("v", 1), c.brick("v", 2), b3.clone()] {
        assert!(
            !d.join("gone").exists(),
            "{}: the deleted directory came back",
            d.display()
        );
    }
    c.assert_no_panics();
}

//! The foundation story: three daemons form a pool, track each other's
//! state, define volumes, refuse bad input with one clear line, and keep
//! strangers out.

use std::time::{Duration, Instant};

use crate::support::{wait_until, Cluster};

/// Probing 2 and 3 from 1 gives every node a view of the other two as
/// Connected, and `pool list` shows three nodes.
#[test]
fn pool_forms_and_tracks_reachability() {
    let mut c = Cluster::start(3);
    let n1 = c.node(1);
    assert!(n1
        .cli(&["peer", "status"])
        .ok()
        .stdout
        .starts_with("Number of Peers: 0"));
    c.form_pool();
    for i in 1..=3 {
        let s = c.node(i).cli(&["peer", "status"]).ok().stdout;
        assert!(s.starts_with("Number of Peers: 2"), "{s}");
        assert_eq!(
            s.matches("State: Peer in Cluster (Connected)").count(),
            2,
            "{s}"
        );
    }
    let pool = c.node(1).cli(&["pool", "list"]).ok().stdout;
    assert_eq!(pool.lines().count(), 4, "{pool}");
    assert!(pool.contains("localhost"));
    let json = c.node(2).cli(&["--json", "pool", "list"]).ok().json();
    assert_eq!(json.as_array().unwrap().len(), 3);

    // Probing again, or probing yourself, is not an error.
    let again = c
        .node(1)
        .cli(&["peer", "probe", &c.node(2).host()])
        .ok()
        .stdout;
    assert!(again.contains("already in peer list"), "{again}");

    // kill -9 node 3: within 10 s nodes 1 and 2 say Disconnected.
    c.node_mut(3).kill9();
    let t = Instant::now();
    for i in [1, 2] {
        wait_until(Duration::from_secs(10), "node 3 disconnected", || {
            c.node(i)
                .cli(&["peer", "status"])
                .stdout
                .contains("(Disconnected)")
        });
    }
    assert!(t.elapsed() < Duration::from_secs(10));

    // A volume created while node 3 is down (on nodes 1 and 2)...
    let b1 = format!("{}:{}", c.node(1).ip, c.brick("late", 1).display());
    let b2 = format!("{}:{}", c.node(2).ip, c.brick("late", 2).display());
    c.node(1)
        .cli(&[
            "volume", "create", "late", "replica", "2", &b1, &b2, "force",
        ])
        .ok();

    // ...is known to node 3 once it is back.
    c.node_mut(3).start();
    c.wait_connected();
    wait_until(
        Duration::from_secs(10),
        "node 3 learns the new volume",
        || {
            c.node(3)
                .cli(&["volume", "info", "late"])
                .stdout
                .contains("Volume Name: late")
        },
    );
    c.assert_no_panics();
}

/// Volume create/start/info/status/set/get/reset/stop/delete and every
/// refusal of SPEC §5, each a single line on stderr with a non-zero exit.
#[test]
fn volume_lifecycle_and_refusals() {
    let c = Cluster::start(3);
    c.form_pool();
    let n1 = c.node(1);
    let b = |i: usize| format!("{}:{}", c.node(i).ip, c.brick("conf", i).display());

    // Refusals.
    let r = n1
        .cli(&["volume", "create", "conf", "replica", "3", &b(1), &b(2)])
        .fails();
    assert!(
        r.stderr.starts_with("volume create: conf: failed:"),
        "{}",
        r.stderr
    );
    let r = n1
        .cli(&[
            "volume",
            "create",
            "conf",
            "replica",
            "3",
            "transport",
            "tcp",
            &b(1),
            &b(2),
            &b(3),
        ])
        .fails();
    assert!(r.stderr.contains("QUIC"), "{}", r.stderr);
    let r = n1
        .cli(&[
            "volume",
            "create",
            "conf",
            "replica",
            "3",
            &b(1),
            &b(1),
            &b(2),
            "force",
        ])
        .fails();
    assert!(r.stderr.contains("duplicate"), "{}", r.stderr);
    let stranger = "127.0.0.9:/tmp/x".to_string();
    let r = n1
        .cli(&[
            "volume",
            "create",
            "conf",
            "replica",
            "3",
            &b(1),
            &b(2),
            &stranger,
            "force",
        ])
        .fails();
    assert!(r.stderr.contains("Peer in Cluster"), "{}", r.stderr);
    std::fs::create_dir_all(c.brick("conf", 2)).unwrap();
    std::fs::write(c.brick("conf", 2).join("old.txt"), "data").unwrap();
    let r = n1
        .cli(&[
            "volume",
            "create",
            "conf",
            "replica",
            "3",
            &b(1),
            &b(2),
            &b(3),
        ])
        .fails();
    assert!(r.stderr.contains("force"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(c.brick("conf", 2).join("old.txt")).unwrap(),
        "data"
    );

    // Create with force, visible on every node.
    let out = n1
        .cli(&[
            "volume",
            "create",
            "conf",
            "replica",
            "3",
            &b(1),
            &b(2),
            &b(3),
            "force",
        ])
        .ok()
        .stdout;
    assert_eq!(
        out.trim(),
        "volume create: conf: success: please start the volume to access data"
    );
    for i in 1..=3 {
        wait_until(Duration::from_secs(5), "volume info everywhere", || {
            let s = c.node(i).cli(&["volume", "info", "conf"]).stdout;
            s.contains("Volume Name: conf")
                && s.contains("Number of Bricks: 1 x 3 = 3")
                && s.contains("Transport-type: quic")
        });
    }
    let r = n1
        .cli(&[
            "volume",
            "create",
            "conf",
            "replica",
            "3",
            &b(1),
            &b(2),
            &b(3),
            "force",
        ])
        .fails();
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);

    // Options.
    let r = n1
        .cli(&["volume", "set", "conf", "cluster.bogus", "1"])
        .fails();
    assert!(
        r.stderr.contains("cluster.quorum-type"),
        "valid keys listed: {}",
        r.stderr
    );
    let r = n1
        .cli(&[
            "volume",
            "set",
            "conf",
            "cluster.favorite-child-policy",
            "biggest",
        ])
        .fails();
    assert!(
        r.stderr.contains("none, size, mtime or majority"),
        "{}",
        r.stderr
    );
    n1.cli(&[
        "volume",
        "set",
        "conf",
        "cluster.favorite-child-policy",
        "mtime",
    ])
    .ok();
    let g = c
        .node(2)
        .cli(&["volume", "get", "conf", "cluster.favorite-child-policy"]);
    wait_until(Duration::from_secs(5), "option replicated", || {
        c.node(2)
            .cli(&["volume", "get", "conf", "cluster.favorite-child-policy"])
            .stdout
            .contains("mtime")
    });
    drop(g);
    let all = n1.cli(&["volume", "get", "conf", "all"]).ok().stdout;
    assert!(
        all.contains("cluster.quorum-type") && all.contains("(DEFAULT)"),
        "{all}"
    );
    n1.cli(&["volume", "reset", "conf", "cluster.favorite-child-policy"])
        .ok();
    assert!(n1
        .cli(&["volume", "get", "conf", "cluster.favorite-child-policy"])
        .ok()
        .stdout
        .contains("none (DEFAULT)"));

    // Start, status, stop, delete.
    let r = n1.cli(&["volume", "status", "conf"]).fails();
    assert!(r.stderr.contains("not started"), "{}", r.stderr);
    assert_eq!(
        n1.cli(&["volume", "start", "conf"]).ok().stdout.trim(),
        "volume start: conf: success"
    );
    // The file already in brick 2 (created with force) is adopted, not hidden.
    for i in [1, 3] {
        wait_until(Duration::from_secs(15), "pre-existing file adopted", || {
            std::fs::read_to_string(c.brick("conf", i).join("old.txt")).is_ok_and(|s| s == "data")
        });
    }
    n1.cli(&["volume", "start", "conf"]).fails();
    let st = n1.cli(&["volume", "status", "conf"]).ok().stdout;
    assert_eq!(st.matches("Self-heal Daemon on").count(), 3, "{st}");
    let js = n1.cli(&["--json", "volume", "status", "conf"]).ok().json();
    assert_eq!(js[0]["bricks"].as_array().unwrap().len(), 3);
    let r = n1.cli(&["volume", "delete", "conf"]).fails();
    assert!(r.stderr.contains("stopped"), "{}", r.stderr);
    let r = n1.cli(&["peer", "detach", &c.node(3).ip]).fails();
    assert!(r.stderr.contains("bricks"), "{}", r.stderr);
    n1.cli(&["volume", "stop", "conf"]).ok();
    n1.cli(&["volume", "delete", "conf"]).ok();
    assert!(n1
        .cli(&["volume", "list"])
        .ok()
        .stdout
        .contains("No volumes"));

    // Bad command lines are one line too, never a panic.
    for args in [
        vec!["volume", "nope"],
        vec!["volume", "create"],
        vec!["peer", "probe", "host:notaport"],
        vec!["volume", "heal", "conf", "sideways"],
    ] {
        let r = n1.cli(&args);
        assert_ne!(r.code, 0, "{args:?}");
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        assert_eq!(
            r.stderr.trim_end().lines().count(),
            1,
            "{args:?}: {}",
            r.stderr
        );
    }
    c.assert_no_panics();
}

/// Management commands answer within 2 s while a node is unreachable.
#[test]
fn status_answers_fast_with_a_node_unreachable() {
    let c = Cluster::start(3);
    c.form_pool();
    c.create_volume("v");
    // Node 3 vanishes from the network (not killed: its packets are dropped).
    c.node(1).block(c.node(3));
    c.node(2).block(c.node(3));
    c.node(3).block(c.node(1));
    c.node(3).block(c.node(2));
    for cmd in [
        vec!["volume", "status", "v"],
        vec!["peer", "status"],
        vec!["volume", "heal", "v", "info"],
    ] {
        let t = Instant::now();
        c.node(1).cli(&cmd).ok();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{cmd:?} took {:?}",
            t.elapsed()
        );
    }
    wait_until(Duration::from_secs(10), "node 3 reported offline", || {
        let s = c.node(1).cli(&["volume", "status", "v"]).stdout;
        s.lines()
            .any(|l| l.contains("b/v3") || (l.contains("v3") && l.contains(" N ")))
    });
    let t = Instant::now();
    let info = c.node(1).cli(&["volume", "heal", "v", "info"]).ok().stdout;
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        info.contains("Transport endpoint is not connected"),
        "{info}"
    );
    c.heal_network();
    c.wait_connected();
}

/// A fourth node with a fresh identity that was never probed cannot read
/// the pool's volumes or talk to a member; a node in a pool refuses probes
/// from outside; the join secret gates first contact.
#[test]
fn strangers_are_refused() {
    let c = Cluster::start_with(4, |i| {
        if i == 4 {
            vec!["--join-secret".into(), "s3cret".into()]
        } else {
            vec![]
        }
    });
    c.node(1).cli(&["peer", "probe", &c.node(2).host()]).ok();
    let b1 = format!("{}:{}", c.node(1).ip, c.brick("v", 1).display());
    let b2 = format!("{}:{}", c.node(2).ip, c.brick("v", 2).display());
    c.node(1)
        .cli(&["volume", "create", "v", "replica", "2", &b1, &b2, "force"])
        .ok();

    // Node 3 (fresh, no pool) asks node 1 for its volumes: refused, logged.
    let r = c
        .node(3)
        .cli(&["debug", "remote-config", &c.node(1).host()])
        .fails();
    assert!(r.stderr.contains("refused"), "{}", r.stderr);
    wait_until(Duration::from_secs(5), "member logs the refusal", || {
        c.node(1)
            .log()
            .contains("refused connection from a key that is not a pool member")
    });
    assert!(c
        .node(3)
        .cli(&["volume", "list"])
        .ok()
        .stdout
        .contains("No volumes"));

    // Node 3 probes node 2, which is already in a pool: refused.
    let r = c.node(3).cli(&["peer", "probe", &c.node(2).host()]).fails();
    assert!(
        r.stderr.contains("already part of another pool"),
        "{}",
        r.stderr
    );

    // Node 4 requires a join secret.
    let r = c.node(1).cli(&["peer", "probe", &c.node(4).host()]).fails();
    assert!(r.stderr.contains("secret"), "{}", r.stderr);
    c.node(1)
        .cli(&["peer", "probe", &c.node(4).host(), "--secret", "s3cret"])
        .ok();
    wait_until(Duration::from_secs(10), "node 4 joined", || {
        c.node(4)
            .cli(&["volume", "info", "v"])
            .stdout
            .contains("Volume Name: v")
    });
    c.assert_no_panics();
}

/// Garbage on the UDP port and malformed frames from an authenticated peer
/// do not crash the daemon.
#[test]
fn garbage_does_not_crash() {
    let c = Cluster::start(2);
    c.form_pool();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..2000u32 {
        let len = (i as usize * 37) % 1400 + 1;
        let data: Vec<u8> = (0..len)
            .map(|j| ((i as usize * 131 + j * 7) % 256) as u8)
            .collect();
        let _ = sock.send_to(&data, c.node(2).addr());
    }
    let sent = c.node(1).cli(&["debug", "garbage", &c.node(2).ip]).ok();
    let n: u32 = sent.stdout.trim().parse().unwrap_or(0);
    assert!(n >= 4, "garbage streams sent: {}", sent.stdout);
    // Still serving, still connected.
    c.node(2).cli(&["peer", "status"]).ok();
    c.wait_connected();
    wait_until(Duration::from_secs(5), "malformed request logged", || {
        c.node(2).log().contains("malformed request refused")
    });
    c.assert_no_panics();
}

/// The value of option `key` of volume `v` as node `i` shows it.
fn option_value(c: &Cluster, i: usize, key: &str) -> String {
    c.node(i)
        .cli(&["volume", "get", "v", key])
        .ok()
        .stdout
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Two `volume set`s made at once on both sides of a partition of a
/// three-node pool: the majority side's is committed, the minority side's
/// is refused with one clear line (never both "success"), and once the
/// network heals every member shows the committed value.
#[test]
fn concurrent_config_changes_in_a_partition_one_commits_the_other_is_refused() {
    let c = Cluster::start(3);
    c.form_pool();
    c.create_volume("v");
    let key = "features.trash-retention";
    c.partition(1, 2);
    c.partition(1, 3);
    let (minority, majority) = std::thread::scope(|s| {
        let a = s.spawn(|| c.node(1).cli(&["volume", "set", "v", key, "1d"]));
        let b = s.spawn(|| c.node(2).cli(&["volume", "set", "v", key, "2d"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let majority = majority.ok();
    assert!(
        majority.stdout.contains("volume set: success"),
        "{}",
        majority.stdout
    );
    let minority = minority.fails();
    assert_eq!(
        minority.stderr.trim_end(),
        "volume set: failed: no majority of the pool is reachable (1 of 3)",
        "{minority:?}"
    );
    // Reads stay local and keep working on the minority side.
    let before = option_value(&c, 1, key);
    assert!(before != "1d" && before != "2d", "{before}");
    assert_eq!(option_value(&c, 3, key), "2d");
    c.heal_network();
    wait_until(
        Duration::from_secs(30),
        "the committed value everywhere",
        || (1..=3).all(|i| option_value(&c, i, key) == "2d"),
    );
    for i in 1..=3 {
        let log = c.node(i).log();
        assert!(!log.contains("pool change lost"), "node {i}:\n{log}");
    }
    c.assert_no_panics();
}

/// A five-node pool with three nodes down refuses a configuration change
/// with one line naming how many members are reachable; reads and the
/// volume keep working.
#[test]
fn five_nodes_with_three_down_refuse_a_change() {
    let mut c = Cluster::start(5);
    c.form_pool();
    c.create_volume("v");
    for i in 3..=5 {
        c.node_mut(i).kill9();
    }
    let key = "features.trash-retention";
    let t = Instant::now();
    let r = c.node(1).cli(&["volume", "set", "v", key, "1d"]).fails();
    assert_eq!(
        r.stderr.trim_end(),
        "volume set: failed: no majority of the pool is reachable (2 of 5)"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // Local reads answer.
    c.node(2).cli(&["volume", "info", "v"]).ok();
    c.node(1).cli(&["pool", "list"]).ok();
    assert_ne!(option_value(&c, 2, key), "1d");
    // With a majority back, the change goes through.
    c.node_mut(3).start();
    wait_until(Duration::from_secs(30), "a change with 3 of 5 up", || {
        c.node(2).cli(&["volume", "set", "v", key, "1d"]).code == 0
    });
    assert_eq!(option_value(&c, 1, key), "1d");
    c.assert_no_panics();
}

/// The node leading the pool configuration is killed with kill -9: the
/// others elect a new leader and changes go through; the killed node
/// learns them when it is back.
#[test]
fn a_killed_leader_is_replaced_and_changes_go_through() {
    let mut c = Cluster::start(3);
    c.form_pool();
    c.create_volume("v");
    let leader = |c: &Cluster, on: usize| -> Option<usize> {
        let j = c.node(on).cli(&["--json", "pool", "list"]).ok().json();
        let host = j.as_array()?.iter().find(|p| p["leader"] == true)?["hostname"]
            .as_str()?
            .to_string();
        (1..=3).find(|i| c.node(*i).ip == host)
    };
    let mut first = None;
    wait_until(Duration::from_secs(20), "a leader known", || {
        first = leader(&c, 1);
        first.is_some()
    });
    let first = first.unwrap_or(1);
    c.node_mut(first).kill9();
    let other = if first == 1 { 2 } else { 1 };
    let key = "features.trash-retention";
    wait_until(Duration::from_secs(30), "a change after the kill", || {
        c.node(other).cli(&["volume", "set", "v", key, "3d"]).code == 0
    });
    let now = leader(&c, other);
    assert!(now.is_some() && now != Some(first), "{now:?}");
    c.node_mut(first).start();
    wait_until(
        Duration::from_secs(30),
        "the killed node catches up",
        || option_value(&c, first, key) == "3d",
    );
    c.assert_no_panics();
}

/// A new node is probed from a member that may not lead the pool, learns
/// the volumes and counts toward the majority; detached, it goes back to a
/// pool of one and no longer counts: with one of the three others down,
/// changes still go through.
#[test]
fn a_probed_node_joins_the_consensus_and_a_detached_one_leaves_it() {
    let mut c = Cluster::start(3);
    c.form_pool();
    c.create_volume("v");
    let n = c.add_node();
    let r = c.node(2).cli(&["peer", "probe", &c.node(n).host()]).ok();
    assert!(r.stdout.starts_with("peer probe: success"), "{}", r.stdout);
    c.wait_connected();
    wait_until(
        Duration::from_secs(20),
        "the new node sees the volume",
        || c.node(n).cli(&["volume", "info", "v"]).code == 0,
    );
    let key = "features.trash-retention";
    c.node(n).cli(&["volume", "set", "v", key, "4d"]).ok();
    for i in 1..=3 {
        wait_until(Duration::from_secs(20), "the change everywhere", || {
            option_value(&c, i, key) == "4d"
        });
    }
    c.node(3).cli(&["peer", "detach", &c.node(n).ip]).ok();
    wait_until(
        Duration::from_secs(20),
        "the detached node is alone",
        || {
            let j = c.node(n).cli(&["--json", "pool", "list"]).ok().json();
            j.as_array().map(Vec::len) == Some(1)
        },
    );
    // Three voters again: one down leaves a majority.
    c.node_mut(3).kill9();
    wait_until(Duration::from_secs(30), "a change with 2 of 3 up", || {
        c.node(1).cli(&["volume", "set", "v", key, "5d"]).code == 0
    });
    assert_eq!(option_value(&c, 2, key), "5d");
    c.assert_no_panics();
}

/// A two-node pool needs both nodes to change its configuration; with one
/// dead, `peer detach HOST force` on the survivor makes it a pool of one
/// that can change its configuration again.
#[test]
fn a_two_node_pool_needs_both_and_force_detach_is_the_way_out() {
    let mut c = Cluster::start(2);
    c.form_pool();
    let b1 = format!("{}:{}", c.node(1).ip, c.brick("v", 1).display());
    let b2 = format!("{}:{}", c.node(2).ip, c.brick("v", 2).display());
    c.node(1)
        .cli(&["volume", "create", "v", "replica", "2", &b1, &b2, "force"])
        .ok();
    c.node_mut(2).kill9();
    let key = "features.trash-retention";
    let r = c.node(1).cli(&["volume", "set", "v", key, "1d"]).fails();
    assert_eq!(
        r.stderr.trim_end(),
        "volume set: failed: no majority of the pool is reachable (1 of 2)"
    );
    let host2 = c.node(2).ip.clone();
    // Without force, a detach is a change like any other.
    c.node(1).cli(&["peer", "detach", &host2]).fails();
    c.node(1).cli(&["peer", "detach", &host2, "force"]).ok();
    c.node(1).cli(&["volume", "set", "v", key, "1d"]).ok();
    assert_eq!(option_value(&c, 1, key), "1d");
    let j = c.node(1).cli(&["--json", "pool", "list"]).ok().json();
    assert_eq!(j.as_array().map(Vec::len), Some(1), "{j}");
    c.assert_no_panics();
}

/// A node of another protocol version is refused on both sides of the
/// connection, with one line naming both versions, and never served.
#[test]
fn a_node_of_another_protocol_version_is_refused_both_ways() {
    let mut c = Cluster::start(2);
    c.form_pool();
    c.node_mut(2).stop();
    c.node_mut(2).env = vec![("GSYNC_TEST_PROTOCOL".into(), "99".into())];
    c.node_mut(2).start();
    // Node 1 dials node 2 and node 2 dials node 1: both are refused.
    wait_until(Duration::from_secs(30), "both sides refuse", || {
        c.node(1).log().contains("peer speaks protocol 99")
            && c.node(2).log().contains(&format!(
                "this node speaks protocol {} and the peer 99",
                gsync_brick::wire::proto::PROTOCOL_VERSION
            ))
    });
    std::thread::sleep(Duration::from_secs(2));
    let status = c.node(1).cli(&["peer", "status"]).ok().stdout;
    assert!(status.contains("(Disconnected)"), "{status}");
    c.assert_no_panics();
}

/// Probing an address where no daemon answers fails with GlusterFS's words
/// and a hint at the port, in one line.
#[test]
fn probing_where_no_daemon_answers_says_where_it_looked() {
    let c = Cluster::start(1);
    let port = crate::support::unique_port();
    let r = c
        .node(1)
        .cli(&["peer", "probe", &format!("127.0.0.9:{port}")])
        .fails();
    let err = r.stderr.trim_end();
    assert!(
        err.contains("Transport endpoint is not connected")
            && err.contains(&format!("127.0.0.9:{port}/udp"))
            && err.contains("HOST:PORT"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

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

/// Two `volume set`s made on both sides of a partition: one wins (the pool
/// document has one order), and the other is not dropped in silence: both
/// sides log it and `volume info` on every member shows it.
#[test]
fn concurrent_config_changes_in_a_partition_are_never_lost_silently() {
    let c = Cluster::start(3);
    c.form_pool();
    c.create_volume("v");
    c.partition(1, 2);
    c.partition(1, 3);
    let key = "features.trash-retention";
    c.node(1).cli(&["volume", "set", "v", key, "1d"]).ok();
    c.node(2).cli(&["volume", "set", "v", key, "2d"]).ok();
    c.heal_network();
    let value = |i: usize| {
        c.node(i)
            .cli(&["volume", "get", "v", key])
            .ok()
            .stdout
            .lines()
            .find(|l| l.starts_with(key))
            .map(|l| l.split_whitespace().last().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    wait_until(Duration::from_secs(30), "one value everywhere", || {
        let v1 = value(1);
        (v1 == "1d" || v1 == "2d") && value(2) == v1 && value(3) == v1
    });
    let kept = value(1);
    let lost = if kept == "1d" { "2d" } else { "1d" };
    let lost_on = if kept == "1d" { c.node(2) } else { c.node(1) };
    let line = format!("'volume set v {key} {lost}' made on {}", lost_on.ip);
    for i in 1..=3 {
        wait_until(
            Duration::from_secs(30),
            "the lost change in volume info",
            || {
                c.node(i)
                    .cli(&["volume", "info", "v"])
                    .ok()
                    .stdout
                    .lines()
                    .any(|l| l.starts_with("Overridden change: ") && l.contains(&line))
            },
        );
    }
    for i in 1..=3 {
        let log = c.node(i).log();
        let lost: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("pool change lost"))
            .collect();
        assert!(
            lost.iter().any(|l| l.contains(&line)),
            "node {i} does not log the lost change:\n{log}"
        );
        // No false alarm (forming the pool loses nothing).
        assert!(lost.iter().all(|l| l.contains(&line)), "node {i}: {lost:?}");
    }
    // And in the event stream of the side that lost it.
    let lost_n = if kept == "1d" { 2 } else { 1 };
    let events = c.node(lost_n).cli(&["events"]).ok().stdout;
    assert!(
        events
            .lines()
            .any(|l| l.contains("pool-change-lost") && l.contains(&line)),
        "{events}"
    );
    let j = c
        .node(3)
        .cli(&["--json", "volume", "info", "v"])
        .ok()
        .json();
    let text = j.to_string();
    assert!(text.contains(&line), "{text}");
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

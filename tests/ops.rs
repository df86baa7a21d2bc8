//! Operations as an operator meets them: the CLI in pipes and scripts, JSON
//! read by strict parsers, the daemon's logs, service files, metrics and
//! events, the demo.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{bin, wait_until, Cluster};

/// Runs the CLI without a daemon (no state dir needed).
fn gsync(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env("GSYNC_STATE_DIR", "/nonexistent-gsync-state")
        .output()
        .expect("run gsync")
}

/// A write end of a pipe whose read end is already closed.
fn closed_pipe() -> std::fs::File {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both are fresh descriptors owned by nobody else.
    let (r, w) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    drop(r);
    w
}

#[test]
fn a_closed_pipe_ends_the_cli_quietly() {
    let c = Cluster::start(2);
    c.form_pool();
    c.create_volume("v");
    let n = c.node(1);
    for args in [&["volume", "heal", "v", "info"][..], &["volume", "info"]] {
        let out = Command::new(bin())
            .args(args)
            .env("GSYNC_STATE_DIR", &n.state)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .expect("run gsync");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
    }
    // The same through a shell pipeline into head, as a user types it.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' volume heal v info | head -1",
            bin().display()
        ))
        .env("GSYNC_STATE_DIR", &n.state)
        .output()
        .expect("sh");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn usage_errors_show_the_whole_message_and_the_subcommands_usage() {
    let cases: &[(&[&str], &str)] = &[
        (&["volume", "create"], "Usage: gsync volume create"),
        (&["volume", "statu"], "Usage: gsync volume"),
        (&["peer", "probe"], "Usage: gsync peer probe"),
        (
            &["volume", "start", "v", "now"],
            "Usage: gsync volume start",
        ),
        (&["daemon", "--bogus"], "Usage: gsync daemon"),
    ];
    for (args, usage) in cases {
        let out = gsync(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(usage), "{args:?}: no {usage:?} in {stderr}");
        assert!(!stderr.contains("see gsync --help"), "{stderr}");
    }
    // Our own checks of a value are one line too.
    let out = gsync(&["daemon", "--log-rotate", "weekly"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--log-rotate weekly"), "{stderr}");
}

#[test]
fn version_names_the_commit() {
    let out = gsync(&["--version"]);
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let want = format!("gsync {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(v.starts_with(&want), "{v}");
    let commit = v[want.len()..].trim_end_matches(')');
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(h) if std::env::var_os("GSYNC_BUILD_COMMIT").is_none() => {
            assert_eq!(commit.len(), 12, "{v}");
            assert!(h.starts_with(commit), "built from {commit}, HEAD is {h}");
        }
        _ => println!("no git here: version says {v}"),
    }
}

/// Every number in `v` is exact in a double; every `id` is a string.
fn assert_json_safe(v: &serde_json::Value, at: &str) {
    match v {
        serde_json::Value::Number(n) => {
            let exact = n.as_u64().is_none_or(|x| x < 1 << 53)
                && n.as_i64().is_none_or(|x| x.unsigned_abs() < 1 << 53);
            assert!(exact, "{at}: {n} is not exact in a double");
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                assert_json_safe(x, &format!("{at}[{i}]"));
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                if k == "id" {
                    assert!(x.is_string(), "{at}.id is {x}");
                }
                assert_json_safe(x, &format!("{at}.{k}"));
            }
        }
        _ => {}
    }
}

#[test]
fn json_ids_round_trip_through_a_strict_parser() {
    let c = Cluster::start(2);
    c.form_pool();
    c.create_volume("v");
    let n = c.node(1);
    let mut seen = Vec::new();
    for args in [
        &["volume", "info", "--json"][..],
        &["volume", "status", "v", "--json"],
        &["volume", "heal", "v", "info", "--json"],
        &["pool", "list", "--json"],
        &["peer", "status", "--json"],
    ] {
        let r = n.cli(args).ok();
        let v = r.json();
        assert_json_safe(&v, &args.join(" "));
        // Reading the text again gives the same value (nothing rounded).
        let again: serde_json::Value = serde_json::from_str(&v.to_string()).expect("json");
        assert_eq!(again, v);
        seen.push(v);
    }
    // The brick ids agree across commands, and each is a 64-bit number.
    let ids = |rows: &serde_json::Value| -> Vec<String> {
        rows.as_array()
            .expect("rows")
            .iter()
            .map(|b| b["id"].as_str().expect("id string").to_string())
            .collect()
    };
    let info_ids = ids(&seen[0][0]["bricks"]);
    let status_ids = ids(&seen[1][0]["bricks"]);
    let heal_ids = ids(&seen[2]);
    assert_eq!(info_ids.len(), 2);
    assert_eq!(info_ids, status_ids);
    assert_eq!(info_ids, heal_ids);
    for id in &info_ids {
        id.parse::<u64>().expect("decimal id");
    }
}

/// Starts one daemon and returns its cluster.
fn one_node(extra: Vec<String>) -> Cluster {
    Cluster::start_with(1, move |_| extra.clone())
}

#[test]
fn log_files_carry_no_escape_codes_and_one_event_per_line() {
    let c = Cluster::start(2);
    c.form_pool();
    c.create_volume("v");
    let n = c.node(1);
    let d = c.path("ro");
    n.cli(&[
        "mount",
        &format!("{}:/v", n.ip),
        &d.to_string_lossy(),
        "--read-only",
    ])
    .ok();
    let name = "bad\nname\x1b[31m.txt";
    std::fs::write(d.join(name), "x").expect("write");
    wait_until(Duration::from_secs(20), "the revert is logged", || {
        n.log().contains("local change reverted")
    });
    let log = n.log();
    assert!(!log.contains('\x1b'), "escape code in the log:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("local change reverted"))
        .expect("line");
    assert!(line.contains(r"bad\nname\x1b[31m.txt"), "{line}");
    // stderr of a daemon that is not on a terminal has no colour either.
    let out = std::fs::read_to_string(c.path("daemon1.out")).expect("daemon out");
    assert!(!out.contains('\x1b'), "escape code on stderr:\n{out}");
    assert!(out.contains("gsync daemon ready"), "{out}");
}

fn sighup(pid: u32) {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGHUP);
    }
}

#[test]
fn sighup_reopens_the_log_and_size_rotation_keeps_n_files() {
    let c = one_node(vec![
        "--log-rotate".into(),
        "1k".into(),
        "--log-keep".into(),
        "2".into(),
    ]);
    let n = c.node(1);
    let pid = n.pid().expect("pid");
    let log = n.state.join("log/gsyncd.log");
    let moved = n.state.join("log/moved-away.log");
    std::fs::rename(&log, &moved).expect("rename");
    sighup(pid);
    wait_until(Duration::from_secs(10), "a new log file", || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("log file reopened"))
    });
    assert!(!std::fs::read_to_string(&moved)
        .expect("moved")
        .contains("reopened"));
    // Each SIGHUP logs a line: enough of them fill 1 KiB files.
    for _ in 0..40 {
        sighup(pid);
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = n.state.join("log");
    wait_until(Duration::from_secs(10), "two rotated files", || {
        dir.join("gsyncd.log.2").exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!dir.join("gsyncd.log.3").exists(), "more than 2 kept");
    for f in ["gsyncd.log", "gsyncd.log.1", "gsyncd.log.2"] {
        let len = std::fs::metadata(dir.join(f)).map_or(0, |m| m.len());
        assert!(len <= 1024, "{f} is {len} bytes");
    }
    assert!(n.cli(&["peer", "status"]).code == 0, "daemon still answers");
}

#[test]
fn a_refused_second_daemon_writes_nothing_in_the_live_log() {
    let c = one_node(Vec::new());
    let n = c.node(1);
    let before = n.log();
    let out = Command::new(bin())
        .args(["daemon", "--listen", "127.0.0.1:1"])
        .env("GSYNC_STATE_DIR", &n.state)
        .output()
        .expect("second daemon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("another daemon is already running"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&n.pid().expect("pid").to_string()),
        "{stderr}"
    );
    let after = n.log();
    assert!(after.starts_with(&before));
    assert!(!after.contains("already running"), "{after}");
    assert_eq!(after.matches("gsync daemon ready").count(), 1, "{after}");
    assert!(
        n.cli(&["peer", "status"]).code == 0,
        "the live daemon answers"
    );
}

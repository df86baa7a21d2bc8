//! Operations as an operator meets them: the CLI in pipes and scripts, JSON
//! read by strict parsers, the daemon's logs, service files, metrics and
//! events, the demo.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{bin, wait_until, Cluster};

/// A process killed when the test ends, even by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
        (&["events", "--since", "x"], "Usage: gsync events"),
        (&["completions", "tcsh"], "Usage: gsync completions"),
    ];
    for (args, usage) in cases {
        let out = gsync(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("gsync: "), "{args:?}: {stderr}");
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
    // Written whole, then moved in: the agent never sees a half-written file.
    let put = |to: &std::path::Path, text: &str| {
        let tmp = c.path("edit.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, to).expect("rename");
    };
    put(&d.join(name), "x");
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
    // The reverted file is kept aside in the mount's reserved directory,
    // never deleted outright, and the folder itself matches the volume.
    let kept = |name: &str| -> Vec<String> {
        std::fs::read_dir(d.join(".gsync/reverted"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join(name)).ok())
            .collect()
    };
    wait_until(Duration::from_secs(20), "the new file kept aside", || {
        kept(name) == ["x"] && !d.join(name).exists()
    });
    std::fs::write(c.mount("v", 1).join("shared.txt"), "volume\n").expect("write");
    crate::support::heal::wait_content(
        &d.join("shared.txt"),
        "volume\n",
        Duration::from_secs(20),
        "ro mount",
    );
    put(&d.join("shared.txt"), "my edit\n");
    crate::support::heal::wait_content(
        &d.join("shared.txt"),
        "volume\n",
        Duration::from_secs(20),
        "reverted",
    );
    wait_until(Duration::from_secs(20), "the edit kept aside", || {
        kept("shared.txt").contains(&"my edit\n".to_string())
    });
    assert!(!c.brick("v", 1).join(".gsync/reverted").exists());
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

#[test]
fn completions_for_three_shells_and_a_man_page() {
    for (shell, marker) in [
        ("bash", "complete -F _gsync"),
        ("zsh", "#compdef gsync"),
        ("fish", "complete -c gsync"),
    ] {
        let out = gsync(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: no {marker:?}");
        for word in ["volume", "replace-brick", "heal", "mount", "completions"] {
            assert!(text.contains(word), "{shell}: no {word}");
        }
    }
    // bash reads its script and registers the completion.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <('{}' completions bash) && complete -p gsync",
            bin().display()
        ))
        .output()
        .expect("bash");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gsync"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = gsync(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
    let man = gsync(&["man"]);
    assert!(man.status.success());
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.contains(".TH gsync 1"), "{page}");
    assert!(page.contains("completions"), "{page}");
}

/// The units of dist/, with ExecStart pointing at the binary under test.
fn units_for_verify(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    ["gsyncd.service", "gsync-mount@.service"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(src.join(name)).expect("unit");
            assert!(text.contains("ExecStart=/usr/bin/gsync "), "{name}");
            let p = dir.join(name);
            std::fs::write(
                &p,
                text.replace("/usr/bin/gsync", &bin().display().to_string()),
            )
            .expect("write unit");
            p
        })
        .collect()
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let units = units_for_verify(dir.path());
    let unit = std::fs::read_to_string(&units[0]).expect("unit");
    for want in ["Type=notify", "WatchdogSec=", "ExecReload=/bin/kill -HUP"] {
        assert!(unit.contains(want), "gsyncd.service lacks {want}");
    }
    // The Debian package ships files that exist.
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
    )
    .expect("Cargo.toml");
    let deb = manifest
        .split("[package.metadata.deb]")
        .nth(1)
        .expect("cargo deb metadata");
    let assets: Vec<&str> = deb
        .lines()
        .take_while(|l| !l.starts_with("[["))
        .filter_map(|l| l.trim().strip_prefix("[\""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert!(assets.contains(&"dist/gsyncd.service"), "{assets:?}");
    for a in assets.iter().filter(|a| !a.starts_with("target/")) {
        assert!(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(a)
                .exists(),
            "deb asset {a} is missing"
        );
    }
    let Ok(out) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .current_dir(dir.path())
        .output()
    else {
        println!("SKIPPED: systemd-analyze is not installed; the units were not verified");
        return;
    };
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_alive_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let port = crate::support::unique_port();
    // systemd names the pid the watchdog is for: the shell's pid, kept by exec.
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" daemon --listen "$1""#)
        .arg(bin())
        .arg(format!("127.0.0.1:{port}"))
        .env("GSYNC_STATE_DIR", dir.path().join("state"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        // As under systemd with stderr connected to the journal.
        .env("JOURNAL_STREAM", "8:12345")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.out")).expect("out"))
        .spawn()
        .expect("daemon");
    let mut child = KillOnDrop(child);
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    let out = || std::fs::read_to_string(dir.path().join("daemon.out")).unwrap_or_default();
    while !(got.contains("READY=1") && got.contains("WATCHDOG=1")) {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification within 20 s ({e}): {got}\n{}", out()));
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
        got.push('\n');
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGTERM);
    }
    // Bounded: the watchdog's keep-alives go on arriving while a daemon
    // that missed the signal keeps running.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !got.contains("STOPPING=1") {
        assert!(
            std::time::Instant::now() < deadline,
            "no STOPPING=1 within 20 s of SIGTERM: {got}\n{}",
            out()
        );
        let n = sock.recv(&mut buf).expect("STOPPING within 20 s");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let status = exit_within(&mut child.0, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(got.contains("STATUS=serving on 127.0.0.1:"), "{got}");
    // Journal lines carry their priority and no timestamp of their own.
    let journal = out();
    let ready = journal
        .lines()
        .find(|l| l.contains("gsync daemon ready"))
        .unwrap_or_else(|| panic!("{journal}"));
    assert!(
        ready.starts_with("<6>") && !ready.starts_with("<6>20"),
        "{ready}"
    );
}

/// The exit status of `child`, which must exit within `limit`.
#[track_caller]
fn exit_within(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pid {} still running {limit:?} after SIGTERM",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A stop requested at any moment of the daemon's start (systemd's, at
/// boot; an operator's `systemctl stop` right after `start`) is never
/// lost: the daemon stops, cleanly, within seconds. Here with a mount to
/// start, at staggered moments from the spawn to well after READY.
#[test]
fn a_stop_requested_while_the_daemon_starts_is_never_lost() {
    let mut c = Cluster::start(2);
    c.form_pool();
    c.create_volume("s");
    c.mount("s", 1);
    let state = c.node(1).state.clone();
    c.node_mut(1).stop();
    for i in 0..12u64 {
        let port = crate::support::unique_port();
        let child = Command::new(bin())
            .args(["daemon", "--listen", &format!("127.0.0.1:{port}")])
            .env("GSYNC_STATE_DIR", &state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("daemon");
        let mut child = KillOnDrop(child);
        std::thread::sleep(Duration::from_millis(i * 25));
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(child.0.id() as i32, libc::SIGTERM);
        }
        exit_within(&mut child.0, Duration::from_secs(15));
    }
}

/// `GET /metrics` on `port`: the Prometheus text.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of the first sample of `name` whose labels contain `label`.
fn metric(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let base = series.split('{').next().unwrap_or_default();
            base == name && series.contains(label)
        })
        .and_then(|(_, v)| v.parse().ok())
}

/// `gsync events --json` of node `n`: (kind, data) in order.
fn events(n: &crate::support::Node) -> Vec<(String, serde_json::Value)> {
    n.cli(&["events", "--json"])
        .ok()
        .json()
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_string(),
                e["data"].clone(),
            )
        })
        .collect()
}

fn has_event(n: &crate::support::Node, kind: &str) -> bool {
    events(n).iter().any(|(k, _)| k == kind)
}

#[test]
fn metrics_and_events_follow_a_partition_and_its_heal() {
    let mport = crate::support::unique_port();
    let c = Cluster::start_with(2, move |i| {
        if i == 1 {
            vec!["--metrics-listen".into(), mport.to_string()]
        } else {
            Vec::new()
        }
    });
    c.form_pool();
    c.create_volume("v");
    let m1 = c.mount("v", 1);
    let m2 = c.mount("v", 2);
    let (n1, n2) = (c.node(1), c.node(2));
    let b1 = format!("brick=\"{}:{}\"", n1.ip, c.brick("v", 1).display());
    // A bare port listens on 127.0.0.1 only.
    assert!(std::net::TcpStream::connect(("127.0.0.2", mport)).is_err());
    wait_until(Duration::from_secs(20), "first samples", || {
        let t = scrape(mport);
        t.contains("# TYPE gsync_brick_pending_entries gauge")
            && metric(&t, "gsync_peer_connected", "peer=\"127.0.0.2\"") == Some(1.0)
            && metric(&t, "gsync_brick_online", &b1) == Some(1.0)
            && metric(&t, "gsync_mount_in_sync", "dir=") == Some(1.0)
    });
    let before = metric(&scrape(mport), "gsync_brick_changes_applied_total", &b1).unwrap_or(0.0);
    std::fs::write(m1.join("first.txt"), "hello\n").expect("write");
    crate::support::heal::wait_content(
        &m2.join("first.txt"),
        "hello\n",
        Duration::from_secs(20),
        "m2",
    );
    wait_until(Duration::from_secs(20), "the counter moves", || {
        metric(&scrape(mport), "gsync_brick_changes_applied_total", &b1).unwrap_or(0.0) > before
    });
    assert!(metric(
        &scrape(mport),
        "gsync_peer_rtt_seconds",
        "peer=\"127.0.0.2\""
    )
    .is_some());
    // Follow the events as a script would.
    let follow = Command::new(bin())
        .args(["events", "--follow", "--json"])
        .env("GSYNC_STATE_DIR", &n1.state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("follow");
    let mut follow = KillOnDrop(follow);
    let stdout = follow.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let last_seq = n1
        .cli(&["events", "--json"])
        .json()
        .as_array()
        .map_or(0, |a| a.last().and_then(|e| e["seq"].as_u64()).unwrap_or(0));

    c.partition(1, 2);
    crate::support::heal::wait_disconnected(&c, 1, 1);
    for i in 0..5 {
        std::fs::write(m1.join(format!("during-{i}.txt")), format!("{i}\n")).expect("write");
    }
    wait_until(
        Duration::from_secs(30),
        "pending entries in the metrics",
        || metric(&scrape(mport), "gsync_brick_pending_entries", &b1).unwrap_or(0.0) >= 5.0,
    );
    wait_until(Duration::from_secs(30), "heal-started", || {
        has_event(n1, "heal-started")
    });
    assert!(
        metric(&scrape(mport), "gsync_peer_connected", "peer=\"127.0.0.2\"") == Some(0.0)
            || has_event(n1, "peer-down")
    );
    let heal_bytes = metric(&scrape(mport), "gsync_brick_heals_total", &b1).unwrap_or(0.0);
    c.heal_network();
    c.wait_connected();
    crate::support::heal::wait_content(
        &m2.join("during-4.txt"),
        "4\n",
        Duration::from_secs(30),
        "healed",
    );
    wait_until(Duration::from_secs(30), "heal-done", || {
        has_event(n1, "heal-done")
    });
    wait_until(Duration::from_secs(20), "heals counted", || {
        let t = scrape(mport);
        metric(&t, "gsync_brick_pending_entries", &b1) == Some(0.0)
            && metric(&t, "gsync_brick_heals_total", &b1).unwrap_or(0.0) > heal_bytes
    });
    let kinds: Vec<String> = events(n1).into_iter().map(|(k, _)| k).collect();
    let pos = |k: &str| kinds.iter().position(|x| x == k);
    for k in [
        "peer-joined",
        "volume-created",
        "volume-started",
        "peer-up",
        "peer-down",
        "heal-started",
        "heal-done",
    ] {
        assert!(pos(k).is_some(), "no {k} in {kinds:?}");
    }
    assert!(pos("heal-started") < pos("heal-done"), "{kinds:?}");
    assert!(
        kinds.iter().rposition(|k| k == "peer-up") > pos("peer-down"),
        "{kinds:?}"
    );
    // --since gives only what came after.
    let later = n1
        .cli(&["events", "--json", "--since", &last_seq.to_string()])
        .json();
    assert!(later
        .as_array()
        .expect("events")
        .iter()
        .all(|e| e["seq"].as_u64().unwrap_or(0) > last_seq));
    // The follower saw the partition as it happened, one JSON object a line.
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        seen.push(v["kind"].as_str().unwrap_or_default().to_string());
        if seen.iter().any(|k| k == "heal-done") {
            break;
        }
    }
    assert!(seen.iter().any(|k| k == "peer-down"), "{seen:?}");
    assert!(seen.iter().any(|k| k == "heal-done"), "{seen:?}");
    // Text form: one line an event with a local time.
    let text = n1.cli(&["events"]).ok().stdout;
    assert!(
        text.lines()
            .any(|l| l.contains("peer-down") && l.contains("127.0.0.2")),
        "{text}"
    );
    // Node 2 has its own log.
    assert!(has_event(n2, "peer-down"));
    drop(follow);
    c.assert_no_panics();
}

#[test]
fn status_detail_shows_the_disk_and_split_brain_show_a_diff() {
    let c = Cluster::start(2);
    c.form_pool();
    c.create_volume("v");
    let (n1, n2) = (c.node(1), c.node(2));
    let detail = n1.cli(&["volume", "status", "v", "detail"]).ok().stdout;
    for want in [
        "File System",
        "Device",
        "Mount Options",
        "Disk Space Free",
        "Total Disk Space",
        "Inode Count",
        "Free Inodes",
        "Changes Applied",
    ] {
        assert!(detail.contains(want), "no {want}:\n{detail}");
    }
    // Both bricks, the other node's one from that node.
    assert_eq!(detail.matches("Disk Space Free").count(), 2, "{detail}");
    let j = n1.cli(&["volume", "status", "v", "--json"]).ok().json();
    for b in 0..2 {
        let disk = &j[0]["bricks"][b]["disk"];
        assert!(disk["total_bytes"].as_u64().unwrap_or(0) > 0, "{j}");
        assert!(disk["free_bytes"].as_u64() <= disk["total_bytes"].as_u64());
        assert!(
            !disk["filesystem"].as_str().unwrap_or_default().is_empty(),
            "{j}"
        );
    }

    let m1 = c.mount("v", 1);
    let m2 = c.mount("v", 2);
    std::fs::write(m1.join("conf.txt"), "a\nb\nc\n").expect("write");
    crate::support::heal::wait_content(
        &m2.join("conf.txt"),
        "a\nb\nc\n",
        Duration::from_secs(20),
        "m2",
    );
    c.partition(1, 2);
    crate::support::heal::wait_disconnected(&c, 1, 1);
    crate::support::heal::wait_disconnected(&c, 2, 1);
    std::fs::write(m1.join("conf.txt"), "a\nb from node 1\nc\n").expect("write");
    std::fs::write(m2.join("conf.txt"), "a\nb from node 2\nc\n").expect("write");
    crate::support::heal::wait_content(
        &c.brick("v", 1).join("conf.txt"),
        "a\nb from node 1\nc\n",
        Duration::from_secs(20),
        "brick 1",
    );
    crate::support::heal::wait_content(
        &c.brick("v", 2).join("conf.txt"),
        "a\nb from node 2\nc\n",
        Duration::from_secs(20),
        "brick 2",
    );
    c.heal_network();
    c.wait_connected();
    wait_until(Duration::from_secs(45), "split-brain found", || {
        has_event(n1, "split-brain-found")
    });
    let show = n1
        .cli(&["volume", "heal", "v", "split-brain", "show", "conf.txt"])
        .ok()
        .stdout;
    // Writers by name, times readable, and the diff of the two texts.
    assert!(
        show.contains("writer=127.0.0.1") && show.contains("writer=127.0.0.2"),
        "{show}"
    );
    assert!(
        !show.contains(&n2_uuid(n2)),
        "a uuid instead of a name:\n{show}"
    );
    assert!(show.contains("mtime=20"), "{show}");
    assert!(show.contains("-b from node"), "{show}");
    assert!(show.contains("+b from node"), "{show}");
    assert!(show.contains("@@ -1,3 +1,3 @@"), "{show}");
    n1.cli(&[
        "volume",
        "heal",
        "v",
        "split-brain",
        "bigger-file",
        "conf.txt",
    ])
    .ok();
    wait_until(Duration::from_secs(30), "split-brain resolved", || {
        has_event(n1, "split-brain-resolved")
    });
    let ev = events(n1);
    let decision = ev
        .iter()
        .find(|(k, _)| k == "policy-decision")
        .expect("policy-decision");
    assert_eq!(decision.1["policy"], "bigger-file");
    assert_eq!(decision.1["by"], "operator");
    let found = ev
        .iter()
        .find(|(k, _)| k == "split-brain-found")
        .expect("found");
    assert_eq!(found.1["path"], "conf.txt");
}

fn n2_uuid(n: &crate::support::Node) -> String {
    let j = n.cli(&["pool", "list", "--json"]).ok().json();
    j.as_array()
        .and_then(|a| a.iter().find(|p| p["local"] == true))
        .and_then(|p| p["uuid"].as_str())
        .unwrap_or("none")
        .to_string()
}

/// Runs logged by an --on-change command writing `$GSYNC_CHANGED` then `---`.
fn hook_runs(log: &std::path::Path) -> Vec<Vec<String>> {
    crate::support::read(log)
        .split("---\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| b.lines().map(String::from).collect())
        .collect()
}

#[test]
fn on_change_runs_once_per_settled_batch_and_not_for_the_first_download() {
    let c = Cluster::start(2);
    c.form_pool();
    c.create_volume("v");
    let m1 = c.mount("v", 1);
    for i in 0..10 {
        std::fs::write(m1.join(format!("old-{i}.txt")), "old\n").expect("write");
    }
    let n2 = c.node(2);
    let mount = |dir: &std::path::Path, log: &std::path::Path, extra: &[&str]| {
        let cmd = format!(
            "printf '%s\\n---\\n' \"$GSYNC_CHANGED\" >> '{}'",
            log.display()
        );
        let mut args = vec![
            "mount".to_string(),
            "127.0.0.2:/v".to_string(),
            dir.to_string_lossy().into_owned(),
            "--on-change".to_string(),
            cmd,
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        n2.cli(&a).ok();
    };
    wait_until(Duration::from_secs(20), "old files on brick 2", || {
        (0..10).all(|i| c.brick("v", 2).join(format!("old-{i}.txt")).exists())
    });
    let (quiet, quiet_log) = (c.path("quiet"), c.path("quiet.log"));
    let (init, init_log) = (c.path("init"), c.path("init.log"));
    mount(&quiet, &quiet_log, &["--on-change-delay", "2s"]);
    mount(
        &init,
        &init_log,
        &["--on-change-initial", "--on-change-delay", "200ms"],
    );
    assert!(quiet.join("old-9.txt").exists() && init.join("old-9.txt").exists());
    // --on-change-initial: the first download ran the command, naming it.
    wait_until(Duration::from_secs(20), "the initial run", || {
        hook_runs(&init_log)
            .iter()
            .flatten()
            .any(|p| p == "old-9.txt")
    });
    // Without it, nothing ran for the first download.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        hook_runs(&quiet_log).is_empty(),
        "{:?}",
        hook_runs(&quiet_log)
    );
    // A burst of 30 files: every path named, in a handful of runs.
    for i in 0..30 {
        std::fs::write(m1.join(format!("new-{i}.txt")), format!("{i}\n")).expect("write");
    }
    wait_until(Duration::from_secs(30), "every new path named", || {
        let all: Vec<String> = hook_runs(&quiet_log).into_iter().flatten().collect();
        (0..30).all(|i| all.contains(&format!("new-{i}.txt")))
    });
    let runs = hook_runs(&quiet_log);
    println!("30 files written in a burst: {} on-change runs", runs.len());
    assert!(runs.len() <= 5, "one run per settled batch, got {runs:?}");
    assert!(
        runs.iter().flatten().all(|p| p.starts_with("new-")),
        "{runs:?}"
    );
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let hay = String::from_utf8_lossy(&[cmd, env].concat()).into_owned();
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')));
        if hay.contains(needle) && !zombie {
            out.push(pid);
        }
    }
    out
}

#[test]
fn demo_works_as_printed_refuses_busy_ports_and_stops_by_dir() {
    let port = crate::support::unique_port().to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (d1, d2) = (tmp.path().join("one"), tmp.path().join("two"));
    let out = gsync(&[
        "demo",
        "--detach",
        "--port",
        &port,
        "--dir",
        &d1.to_string_lossy(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guard = DemoGuard(d1.clone());
    // The first suggested command, exactly as printed.
    let first = text
        .lines()
        .skip_while(|l| !l.starts_with("Try:"))
        .nth(1)
        .expect("a suggestion")
        .trim()
        .to_string();
    assert!(first.starts_with("echo hi > "), "{text}");
    let run = Command::new("sh")
        .arg("-c")
        .arg(&first)
        .output()
        .expect("sh");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "hi\n",
        "{first}: {run:?}"
    );
    // A second demo on the same ports: one line, at once, nothing left.
    let started = std::time::Instant::now();
    let out = gsync(&["demo", "--port", &port, "--dir", &d2.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    println!("second demo refused in {:?}", started.elapsed());
    assert!(processes_with(&d2.to_string_lossy()).is_empty());
    // The stop line is printed, and stops exactly that demo.
    let stop_line = format!("demo --stop {}", d1.canonicalize().expect("dir").display());
    assert!(text.contains(&stop_line), "{text}");
    assert!(!text.contains("pkill"), "{text}");
    assert_eq!(processes_with(&d1.to_string_lossy()).len(), 3);
    let out = gsync(&["demo", "--stop", &d1.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(processes_with(&d1.to_string_lossy()).is_empty());
    std::mem::forget(guard);
    let again = gsync(&["demo", "--stop", &d1.to_string_lossy()]);
    assert!(!again.status.success());
}

/// Stops a detached demo if the test fails half-way.
struct DemoGuard(std::path::PathBuf);

impl Drop for DemoGuard {
    fn drop(&mut self) {
        let _ = gsync(&["demo", "--stop", &self.0.to_string_lossy()]);
    }
}

#[test]
fn first_sync_on_a_terminal_shows_bytes_totals_and_eta() {
    let c = Cluster::start(2);
    c.form_pool();
    c.create_volume("v");
    let m1 = c.mount("v", 1);
    // 48 MiB that does not compress or deduplicate.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for f in 0..3 {
        let data: Vec<u8> = (0..16 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(m1.join(format!("big-{f}.bin")), data).expect("write");
    }
    wait_until(Duration::from_secs(60), "data on brick 2", || {
        (0..3).all(|f| {
            std::fs::metadata(c.brick("v", 2).join(format!("big-{f}.bin")))
                .is_ok_and(|m| m.len() == 16 << 20)
        })
    });
    let dir = c.path("tty-mount");
    // `script` gives the CLI a terminal, as a person typing it has.
    let cmd = format!(
        "'{}' mount 127.0.0.2:/v '{}'",
        bin().display(),
        dir.display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("GSYNC_STATE_DIR", &c.node(2).state)
        .env("COLUMNS", "120")
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("in sync with 127.0.0.2:/v"), "{text}");
    assert!(text.contains("ETA"), "no ETA:\n{text}");
    assert!(text.contains("MiB"), "no byte counts:\n{text}");
    assert!(text.contains("48.00 MiB"), "no total:\n{text}");
}

#[test]
fn metrics_are_off_by_default_and_a_taken_metrics_port_stops_the_daemon_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin())
        .args([
            "daemon",
            "--listen",
            &format!("127.0.0.1:{}", crate::support::unique_port()),
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("GSYNC_STATE_DIR", dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("daemon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("gsync: --metrics-listen 127.0.0.1:"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Without the option nothing listens but QUIC and the control socket.
    let c = one_node(Vec::new());
    let pid = c.node(1).pid().expect("pid");
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default()
        + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter_map(|l| {
            l.strip_prefix("socket:[")
                .map(|s| s.trim_end_matches(']').to_string())
        })
        .collect();
    let listening = tcp
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some("0A"))
        .any(|l| {
            inodes
                .iter()
                .any(|i| l.split_whitespace().nth(9) == Some(i.as_str()))
        });
    assert!(
        !listening,
        "the daemon listens on TCP without --metrics-listen"
    );
}

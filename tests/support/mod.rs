//! Test harness: real `gsync daemon` processes on loopback, the real CLI,
//! fault injection, and waiting on conditions with deadlines.
//!
//! Every cluster gets its own port (so tests run in parallel) and temp
//! directories; dropping it kills its daemons, even when a test fails.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub mod heal;
pub mod manifest;
pub mod mounts;
pub mod replication;

/// The gsync binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gsync"))
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A port no other test of this run uses.
pub fn unique_port() -> u16 {
    // GSYNC_TEST_PORT_BASE pins the range, so two test runs on one machine
    // (two checkouts) never share ports.
    let base = std::env::var("GSYNC_TEST_PORT_BASE")
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
        .unwrap_or_else(|| 20000 + (std::process::id() % 200) as u16 * 100);
    base + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % 100
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Like [`wait_until`] but returns false instead of panicking.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Output of one CLI run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "command failed: stdout={} stderr={}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command failed with exactly one line on stderr.
    #[track_caller]
    pub fn fails(self) -> Self {
        assert_ne!(
            self.code, 0,
            "command succeeded unexpectedly: {}",
            self.stdout
        );
        let lines = self.stderr.trim_end().lines().count();
        assert!(lines >= 1, "no error message");
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.stderr);
        self
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("bad json {e}: {}", self.stdout))
    }
}

/// One node: a daemon process with its state directory.
pub struct Node {
    pub n: usize,
    pub ip: String,
    pub port: u16,
    pub state: PathBuf,
    pub root: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    /// Extra environment for the daemon (e.g. a failpoint), applied at start.
    pub env: Vec<(String, String)>,
}

impl Node {
    pub fn addr(&self) -> SocketAddr {
        format!("{}:{}", self.ip, self.port).parse().expect("addr")
    }

    /// `ip:port` as used by `peer probe`.
    pub fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// Starts the daemon and waits until its control socket answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.n);
        std::fs::create_dir_all(&self.state).expect("state dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("daemon{}.out", self.n)))
            .expect("log");
        let mut cmd = Command::new(bin());
        cmd.arg("daemon")
            .arg("--listen")
            .arg(self.addr().to_string())
            .args(&self.extra)
            .env("GSYNC_STATE_DIR", &self.state)
            .env("RUST_LOG", daemon_log_filter())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn daemon"));
        let state = self.state.clone();
        wait_until(Duration::from_secs(20), "daemon control socket", || {
            Command::new(bin())
                .args(["peer", "status"])
                .env("GSYNC_STATE_DIR", &state)
                .output()
                .is_ok_and(|o| o.status.success())
        });
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (asserts a clean stop within 5 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("node {} did not stop within 5 s of SIGTERM", self.n);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGSTOP / SIGCONT.
    pub fn pause(&self, on: bool) {
        if let Some(c) = &self.child {
            let sig = if on { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: plain kill(2) on our child.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }

    /// Restarts the daemon (kill -9) with test-build failpoint `name`
    /// armed (`GSYNC_FAILPOINT`).
    pub fn restart_with_failpoint(&mut self, name: &str) {
        self.env = vec![("GSYNC_FAILPOINT".into(), name.into())];
        self.restart();
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// True if the daemon process has exited (crashed or aborted).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(_))) => {
                self.child = None;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs the CLI against this node.
    pub fn cli(&self, args: &[&str]) -> Run {
        let o = Command::new(bin())
            .args(args)
            .env("GSYNC_STATE_DIR", &self.state)
            .env("GSYNC_MOUNT_WAIT_SECS", "60")
            .output()
            .expect("run gsync");
        Run::from(o)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("log/gsyncd.log")).unwrap_or_default()
    }

    /// `volume reset-brick VOL BRICK BRICK commit force` (BRICK is
    /// `HOST:/PATH`).
    pub fn reset_brick(&self, vol: &str, brick: &str) -> Run {
        self.cli(&[
            "volume",
            "reset-brick",
            vol,
            brick,
            brick,
            "commit",
            "force",
        ])
    }

    /// Drops traffic with `other` (both directions).
    pub fn block(&self, other: &Node) {
        self.cli(&["debug", "net", &other.ip, "block"]).ok();
    }

    /// Lifts every fault rule (a daemon that is down has none).
    pub fn unblock_all(&self) {
        let _ = self.cli(&["debug", "net-clear"]);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// N nodes on 127.0.0.1..N sharing one port.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `n` daemons (not yet in a pool).
    pub fn start(n: usize) -> Self {
        Self::start_with(n, |_| Vec::new())
    }

    /// Starts `n` daemons with extra daemon arguments per node number.
    pub fn start_with(n: usize, extra: impl Fn(usize) -> Vec<String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gsync-test-")
            .tempdir()
            .expect("tempdir");
        let port = unique_port();
        let mut nodes = Vec::new();
        for i in 1..=n {
            let mut node = Node {
                n: i,
                ip: format!("127.0.0.{i}"),
                port,
                state: dir.path().join(format!("n{i}")),
                root: dir.path().to_path_buf(),
                child: None,
                extra: extra(i),
                env: Vec::new(),
            };
            node.start();
            nodes.push(node);
        }
        Self { dir, nodes }
    }

    /// Node `i` (1-based).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i - 1]
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Probes every node from node 1 and waits until all are connected.
    pub fn form_pool(&self) {
        for n in &self.nodes[1..] {
            let r = self.node(1).cli(&["peer", "probe", &n.host()]).ok();
            assert!(r.stdout.starts_with("peer probe: success"), "{}", r.stdout);
        }
        self.wait_connected();
    }

    /// Waits until every node sees every other as connected.
    pub fn wait_connected(&self) {
        let want = self.nodes.len() - 1;
        for n in &self.nodes {
            wait_until(Duration::from_secs(20), "all peers connected", || {
                n.cli(&["peer", "status"])
                    .stdout
                    .matches("(Connected)")
                    .count()
                    == want
            });
        }
    }

    /// Brick path of node `i` for volume `vol`.
    pub fn brick(&self, vol: &str, i: usize) -> PathBuf {
        self.path(&format!("bricks/{vol}{i}"))
    }

    /// Creates and starts a replica-N volume over all nodes.
    pub fn create_volume(&self, vol: &str) {
        let mut args: Vec<String> = vec![
            "volume".into(),
            "create".into(),
            vol.into(),
            "replica".into(),
            self.nodes.len().to_string(),
        ];
        for n in &self.nodes {
            args.push(format!("{}:{}", n.ip, self.brick(vol, n.n).display()));
        }
        args.push("force".into());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.node(1).cli(&a).ok();
        self.node(1).cli(&["volume", "start", vol]).ok();
        for n in &self.nodes {
            wait_until(Duration::from_secs(20), "volume started everywhere", || {
                n.cli(&["volume", "status", vol])
                    .stdout
                    .matches(" Y ")
                    .count()
                    >= self.nodes.len()
            });
        }
    }

    /// Mount dir of node `i`.
    pub fn mount_dir(&self, i: usize) -> PathBuf {
        self.path(&format!("m{i}"))
    }

    /// Mounts `vol` on node `i` at `m{i}`.
    pub fn mount(&self, vol: &str, i: usize) -> PathBuf {
        let d = self.mount_dir(i);
        let n = self.node(i);
        n.cli(&["mount", &format!("{}:/{vol}", n.ip), &d.to_string_lossy()])
            .ok();
        d
    }

    /// Mounts `vol` on node `on` from the brick host of node `from`, at
    /// `dir`.
    pub fn mount_from(&self, on: usize, from: usize, vol: &str, dir: &Path) {
        let src = format!("{}:/{vol}", self.node(from).ip);
        self.node(on)
            .cli(&["mount", &src, &dir.to_string_lossy()])
            .ok();
    }

    /// Lifts every fault rule on every running node.
    pub fn heal_network(&self) {
        for n in self.nodes.iter().filter(|n| n.running()) {
            n.unblock_all();
        }
    }

    /// Cuts nodes `a` and `b` apart (both directions).
    pub fn partition(&self, a: usize, b: usize) {
        self.node(a).block(self.node(b));
        self.node(b).block(self.node(a));
    }

    /// Starts one more daemon (node N+1 on 127.0.0.N+1, same port) beside
    /// the running ones; it belongs to no pool until probed.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len() + 1;
        let port = self.nodes.first().map_or_else(unique_port, |n| n.port);
        let mut node = Node {
            n: i,
            ip: format!("127.0.0.{i}"),
            port,
            state: self.dir.path().join(format!("n{i}")),
            root: self.dir.path().to_path_buf(),
            child: None,
            extra: Vec::new(),
            env: Vec::new(),
        };
        node.start();
        self.nodes.push(node);
        i
    }

    /// Waits until each running node in `among` sees every other one of
    /// `among` as connected.
    pub fn wait_connected_among(&self, among: &[usize]) {
        for &i in among {
            let n = self.node(i);
            wait_until(Duration::from_secs(20), "peers connected", || {
                let out = n.cli(&["peer", "status"]).stdout;
                among.iter().filter(|&&j| j != i).all(|&j| {
                    let host = format!("Hostname: {}\n", self.node(j).ip);
                    out.split("\n\n")
                        .any(|b| b.contains(&host) && b.contains("(Connected)"))
                })
            });
        }
    }

    /// Kills node `i` for good: SIGKILL, then its state directory and the
    /// given brick directories are deleted.
    pub fn destroy_node(&mut self, i: usize, bricks: &[PathBuf]) {
        self.node_mut(i).kill9();
        let _ = std::fs::remove_dir_all(&self.node(i).state);
        for b in bricks {
            let _ = std::fs::remove_dir_all(b);
        }
    }

    /// Asserts no daemon log mentions a panic.
    pub fn assert_no_panics(&self) {
        for n in &self.nodes {
            let log = n.log();
            assert!(!log.contains("panic"), "node {} panicked:\n{log}", n.n);
        }
    }
}

/// With `GSYNC_TEST_KEEP=DIR`, a cluster dropped by a failing test leaves
/// a copy of its directory (daemon logs and state, bricks, mounts) in a new
/// directory under DIR, so the run can be read afterwards.
impl Drop for Cluster {
    fn drop(&mut self) {
        let Some(keep) = std::env::var_os("GSYNC_TEST_KEEP") else {
            return;
        };
        if !std::thread::panicking() {
            return;
        }
        for n in &mut self.nodes {
            n.kill9();
        }
        let name = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cluster".into());
        let to = PathBuf::from(keep).join(name);
        let copied = std::fs::create_dir_all(&to).is_ok()
            && Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", self.dir.path().display()))
                .arg(&to)
                .status()
                .is_ok_and(|s| s.success());
        if copied {
            eprintln!("cluster directory kept in {}", to.display());
        } else {
            eprintln!("could not keep the cluster directory in {}", to.display());
        }
    }
}

/// A small deterministic PRNG (xorshift64*), so a seed replays a run of
/// the randomized campaigns.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// The seed of a randomized run: `var` if set, else a random one.
pub fn seed_from(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::random::<u64>() | 1)
}

/// The length of a randomized run in seconds: `var` if set, else `default`.
pub fn secs_from(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Empties a directory in place (what a wiped or swapped disk under a
/// brick looks like: its `.gsync/` and volume-id marker go too). Links are
/// removed, never followed.
pub fn empty_dir(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let _ = if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}

/// Reads a file, or "" if missing.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The daemons' log filter: `GSYNC_TEST_LOG` (a `RUST_LOG` filter) when
/// set, to trace one failing run in detail; info otherwise.
fn daemon_log_filter() -> String {
    std::env::var("GSYNC_TEST_LOG")
        .unwrap_or_else(|_| "info,quinn=warn,quinn_proto=warn,rustls=warn".to_string())
}

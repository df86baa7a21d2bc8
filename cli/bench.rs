//! `gsync bench`: the benchmark as a product feature. It starts three
//! daemons on 127.0.0.1-3 in a temp dir (replica 3, a mount per node), runs
//! the workloads users care about, runs the same work through `rsync -a`,
//! `rsync -a --fsync` and a local `cp` on the same disk, then the same
//! small files into a fresh replica-3 and a replica-8 volume (does replica
//! N cost in proportion to N?), and prints one table (or `--json`) of
//! figures. It never passes or fails on speed:
//! `--quick` is a smoke run of every step at a small size.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::args::BenchArgs;
use crate::Outcome;

/// One line of the result table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub workload: String,
    /// gsync's figure.
    pub gsync: f64,
    /// Unit of every figure in the row.
    pub unit: &'static str,
    /// The same work through `rsync -a` to one destination, when measured.
    pub rsync: Option<f64>,
    /// The same through `rsync -a --fsync`.
    pub rsync_fsync: Option<f64>,
    /// The local-disk limit (a `cp` to as many copies, plus sync).
    pub local: Option<f64>,
    /// Anything else worth reading beside the figure.
    pub note: String,
}

/// Sizes of one run.
struct Plan {
    latency_writes: usize,
    small_files: usize,
    many_files: usize,
    heal_small: usize,
    heal_large: usize,
    big_mib: u64,
    idle_secs: u64,
    scale_files: usize,
}

impl Plan {
    fn of(a: &BenchArgs) -> Self {
        let mut p = if a.quick {
            Plan {
                latency_writes: 20,
                small_files: 500,
                many_files: 2_000,
                heal_small: 10,
                heal_large: 200,
                big_mib: 32,
                idle_secs: 3,
                scale_files: 100,
            }
        } else {
            Plan {
                latency_writes: 200,
                small_files: 10_000,
                many_files: 100_000,
                heal_small: 100,
                heal_large: 10_000,
                big_mib: 1024,
                idle_secs: 20,
                scale_files: 1_000,
            }
        };
        if let Some(n) = a.files {
            p.small_files = n;
        }
        if let Some(n) = a.many_files {
            p.many_files = n;
            p.heal_large = p.heal_large.min(n / 2).max(1);
            p.heal_small = p.heal_small.min(p.heal_large);
        }
        if let Some(m) = a.big_mib {
            p.big_mib = m.max(2);
        }
        if let Some(n) = a.scale_files {
            p.scale_files = n.max(1);
        }
        p
    }
}

pub async fn run(a: BenchArgs, json: bool) -> Result<Outcome> {
    tokio::task::spawn_blocking(move || bench(a, json)).await?
}

fn bench(a: BenchArgs, json: bool) -> Result<Outcome> {
    let plan = Plan::of(&a);
    let (base, remove_after) = match &a.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("gsync-bench-{}", std::process::id())),
            !a.keep,
        ),
    };
    if base.exists() && std::fs::read_dir(&base)?.next().is_some() {
        bail!(
            "{} is not empty; give an empty or new --dir",
            base.display()
        );
    }
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let say = |s: &str| {
        if !json {
            eprintln!("bench: {s}");
        }
    };
    let result = (|| -> Result<Vec<Row>> {
        let settle = a.settle.map(|d| format!("{}ms", d.as_millis()));
        let lab = Lab::start(&base, a.port, settle.clone(), a.set.clone())?;
        let options: Vec<String> = a.set.iter().map(|(k, v)| format!("{k}={v}")).collect();
        say(&format!(
            "3 daemons on 127.0.0.1-3:{} in {}{}{}",
            a.port,
            base.display(),
            settle
                .as_ref()
                .map(|s| format!("; the writer m1 with --settle {s}"))
                .unwrap_or_default(),
            if options.is_empty() {
                String::new()
            } else {
                format!("; volume options {}", options.join(" "))
            }
        ));
        let mut rows = Vec::new();
        let steps: [(&str, Step); 8] = [
            ("latency", latency),
            ("small files", small_files),
            ("many files and first attach", many_files),
            ("heal after an outage", heal),
            ("one big file and a change inside it", big_file),
            ("heal info", heal_info),
            ("memory and idle CPU", resources),
            ("replica 3 and replica 8", replica_scaling),
        ];
        for (name, step) in steps {
            say(name);
            match step(&lab, &plan, &mut rows) {
                Ok(()) => {}
                Err(e) => rows.push(Row {
                    workload: name.to_string(),
                    gsync: f64::NAN,
                    unit: "",
                    rsync: None,
                    rsync_fsync: None,
                    local: None,
                    note: format!("failed: {e:#}"),
                }),
            }
        }
        Ok(rows)
    })();
    if remove_after {
        let _ = std::fs::remove_dir_all(&base);
    }
    let rows = result?;
    if json {
        crate::print_json(&rows)?;
    } else {
        print_table(&rows, a.quick);
    }
    let failed = rows
        .iter()
        .filter(|r| r.note.starts_with("failed:"))
        .count();
    if failed > 0 {
        return Ok(Outcome::Failed(format!(
            "bench: {failed} step(s) could not run (see the table)"
        )));
    }
    Ok(Outcome::Done)
}

type Step = fn(&Lab, &Plan, &mut Vec<Row>) -> Result<()>;

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_nan() => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    }
}

fn ratio(g: f64, other: Option<f64>) -> String {
    match other {
        Some(o) if o > 0.0 && g.is_finite() => format!(" ({:.1}x)", g / o),
        _ => String::new(),
    }
}

fn print_table(rows: &[Row], quick: bool) {
    println!(
        "gsync bench{}: 3 nodes on loopback, replica 3, a mount per node ({} cores)",
        if quick { " --quick" } else { "" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<58} {:>9} {:>16} {:>16} {:>16}  {:<5} note",
        "workload", "gsync", "rsync -a", "rsync --fsync", "local cp", "unit"
    );
    for r in rows {
        println!(
            "{:<58} {:>9} {:>16} {:>16} {:>16}  {:<5} {}",
            r.workload,
            fmt(Some(r.gsync)),
            format!("{}{}", fmt(r.rsync), ratio(r.gsync, r.rsync)),
            format!("{}{}", fmt(r.rsync_fsync), ratio(r.gsync, r.rsync_fsync)),
            format!("{}{}", fmt(r.local), ratio(r.gsync, r.local)),
            r.unit,
            r.note
        );
    }
    println!("(ratios in parentheses: gsync / the other; every figure is one run)");
}

/// The three daemons, their volume `bench` and mounts m1..m3.
struct Lab {
    base: PathBuf,
    exe: PathBuf,
    children: Vec<Child>,
    /// `--settle` of the writer's mount m1.
    settle: Option<String>,
    /// Volume options set on the volume (`--set`).
    options: Vec<(String, String)>,
    /// Node `n` listens on 127.0.0.{ip0 + n}.
    ip0: u32,
    /// Number of nodes (and bricks: a replica-N volume).
    nodes: u32,
    /// The daemons' UDP port.
    port: u16,
}

impl Lab {
    /// The three-node lab of most steps: replica 3, a mount on each node.
    fn start(
        base: &Path,
        port: u16,
        settle: Option<String>,
        options: Vec<(String, String)>,
    ) -> Result<Lab> {
        Self::start_n(base, port, (settle, options), 3, 0, 3)
    }

    /// `nodes` daemons on 127.0.0.{ip0 + 1..}, one replica-`nodes` volume
    /// with a brick on each, and a mount on the first `mounts` nodes.
    fn start_n(
        base: &Path,
        port: u16,
        (settle, options): (Option<String>, Vec<(String, String)>),
        nodes: u32,
        ip0: u32,
        mounts: u32,
    ) -> Result<Lab> {
        let exe = std::env::current_exe().context("locating the gsync binary")?;
        std::fs::create_dir_all(base)?;
        let mut lab = Lab {
            base: base.to_path_buf(),
            exe,
            children: Vec::new(),
            settle,
            options,
            ip0,
            nodes,
            port,
        };
        for n in 1..=nodes {
            let state = lab.state(n);
            std::fs::create_dir_all(&state)?;
            let log = std::fs::File::create(base.join(format!("n{n}.out")))?;
            let child = Command::new(&lab.exe)
                .args(["daemon", "--listen", &format!("{}:{port}", lab.ip(n))])
                .env("GSYNC_STATE_DIR", &state)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting a daemon")?;
            lab.children.push(child);
        }
        for n in 1..=nodes {
            wait_for(Duration::from_secs(20), "the daemons", || {
                lab.gsync(n, &["peer", "status"]).is_ok()
            })?;
        }
        for (i, c) in lab.children.iter_mut().enumerate() {
            if let Ok(Some(st)) = c.try_wait() {
                bail!(
                    "daemon {} exited at start ({st}); is port {port} busy? see {}",
                    i + 1,
                    base.join(format!("n{}.out", i + 1)).display()
                );
            }
        }
        for n in 2..=nodes {
            lab.gsync(1, &["peer", "probe", &format!("{}:{port}", lab.ip(n))])?;
        }
        wait_for(Duration::from_secs(30), "the pool", || {
            lab.gsync(1, &["peer", "status"])
                .is_ok_and(|s| s.matches("(Connected)").count() == nodes as usize - 1)
        })?;
        let replica = nodes.to_string();
        let mut args: Vec<String> = ["volume", "create", "bench", "replica", &replica]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for n in 1..=nodes {
            args.push(format!("{}:{}", lab.ip(n), lab.brick_dir(n).display()));
        }
        args.push("force".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.gsync(1, &args)?;
        for (k, v) in &lab.options {
            lab.gsync(1, &["volume", "set", "bench", k, v])?;
        }
        lab.gsync(1, &["volume", "start", "bench"])?;
        for n in 1..=mounts {
            lab.mount(n, &lab.mount_dir(n))?;
        }
        Ok(lab)
    }

    fn ip(&self, n: u32) -> String {
        format!("127.0.0.{}", self.ip0 + n)
    }

    fn brick_dir(&self, n: u32) -> PathBuf {
        self.base.join(format!("b{n}"))
    }

    fn state(&self, n: u32) -> PathBuf {
        self.base.join(format!("n{n}"))
    }

    fn mount_dir(&self, n: u32) -> PathBuf {
        self.base.join(format!("m{n}"))
    }

    fn mount(&self, n: u32, dir: &Path) -> Result<String> {
        let source = format!("{}:/bench", self.ip(n));
        let dir_s = dir.to_string_lossy();
        let mut args = vec!["mount", &source, &dir_s];
        if let (Some(s), true) = (&self.settle, dir == self.mount_dir(1)) {
            args.extend(["--settle", s.as_str()]);
        }
        self.gsync(n, &args)
    }

    fn gsync(&self, n: u32, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.exe)
            .env("GSYNC_STATE_DIR", self.state(n))
            .env("GSYNC_MOUNT_WAIT_SECS", "3600")
            .args(args)
            .output()
            .context("running gsync")?;
        if !out.status.success() {
            bail!(
                "gsync {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Cuts node `n` off from the two others (both directions).
    fn isolate(&self, n: u32) -> Result<()> {
        for o in (1..=self.nodes).filter(|&o| o != n) {
            self.gsync(n, &["debug", "net", &self.ip(o), "block"])?;
            self.gsync(o, &["debug", "net", &self.ip(n), "block"])?;
        }
        Ok(())
    }

    fn reconnect(&self) -> Result<()> {
        for n in 1..=self.nodes {
            self.gsync(n, &["debug", "net-clear"])?;
        }
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Bytes the bricks received (gsync's own counters).
    fn received(&self) -> u64 {
        let Ok(out) = self.gsync(1, &["--json", "volume", "status", "bench"]) else {
            return 0;
        };
        let Ok(j) = serde_json::from_str::<serde_json::Value>(&out) else {
            return 0;
        };
        j[0]["bricks"].as_array().map_or(0, |bs| {
            bs.iter()
                .filter_map(|b| b["detail"]["counters"]["bytes_received"].as_u64())
                .sum()
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SAFETY: kill(2) on a child we spawned and still own.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for(limit: Duration, what: &str, f: impl FnMut() -> bool) -> Result<()> {
    wait_every(Duration::from_millis(20), limit, what, f)
}

/// [`wait_for`], looking every `step` (the latency step looks every
/// millisecond, so the figure is not rounded up to the next look).
fn wait_every(
    step: Duration,
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(step);
    }
    Err(anyhow!("timed out after {limit:?} waiting for {what}"))
}

/// Count of regular files and their total size under `dir`.
fn census(dir: &Path) -> (u64, u64) {
    let mut n = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                n += 1;
                bytes += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    (n, bytes)
}

/// Bytes sent over the loopback interface, from the kernel's counters.
fn loopback_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/dev").ok()?;
    let line = s.lines().find(|l| l.trim_start().starts_with("lo:"))?;
    let (_, rest) = line.split_once(':')?;
    rest.split_whitespace().nth(8)?.parse().ok()
}

/// Pseudo-random bytes (xorshift), so nothing compresses or dedups.
fn fill(f: &mut std::fs::File, bytes: u64, seed: u64) -> Result<()> {
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(())
}

fn hash_file(p: &Path) -> Option<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    let f = std::fs::File::open(p).ok()?;
    h.update_reader(f).ok()?;
    Some(h.finalize())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a shell command and returns its wall time in seconds.
fn timed(cmd: &str) -> Option<f64> {
    let t = Instant::now();
    let ok = Command::new("sh")
        .args(["-c", cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| secs(t))
}

fn q(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', "'\\''"))
}

/// rsync -a, rsync -a --fsync and cp -a + sync of `src` (a directory) to
/// fresh destinations under the lab's scratch folder.
fn compare_tree(lab: &Lab, src: &Path, tag: &str) -> (Option<f64>, Option<f64>, Option<f64>) {
    let scratch = lab.base.join("compare");
    let _ = std::fs::create_dir_all(&scratch);
    let dst = |k: &str| scratch.join(format!("{tag}-{k}"));
    let (mut r, mut rf) = (None, None);
    if tool("rsync") {
        r = timed(&format!("rsync -a {}/ {}/", q(src), q(&dst("rsync"))));
        rf = timed(&format!(
            "rsync -a --fsync {}/ {}/",
            q(src),
            q(&dst("rsync-fsync"))
        ));
    }
    let c = timed(&format!("cp -a {} {} && sync", q(src), q(&dst("cp"))));
    for k in ["rsync", "rsync-fsync", "cp"] {
        let _ = std::fs::remove_dir_all(dst(k));
    }
    (r, rf, c)
}

fn latency(lab: &Lab, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let (m1, m2) = (lab.mount_dir(1), lab.mount_dir(2));
    let mut lat = Vec::new();
    for i in 0..plan.latency_writes {
        let name = format!("lat{}.txt", i % 20);
        let body = format!("write {i}\n");
        let t = Instant::now();
        std::fs::write(m1.join(&name), &body)?;
        let step = Duration::from_millis(1);
        wait_every(
            step,
            Duration::from_secs(30),
            "a write on another mount",
            || std::fs::read_to_string(m2.join(&name)).is_ok_and(|s| s == body),
        )?;
        lat.push(secs(t) * 1000.0);
    }
    let max = lat.iter().copied().fold(0.0, f64::max);
    let n = lat.len();
    for (what, v) in [
        ("p50", pct(&mut lat, 0.5)),
        ("p99", pct(&mut lat, 0.99)),
        ("max", max),
    ] {
        rows.push(Row {
            workload: format!("write-to-visible latency {what} ({n} writes, m1 -> m2)"),
            gsync: v,
            unit: "ms",
            rsync: None,
            rsync_fsync: None,
            local: None,
            note: String::new(),
        });
    }
    Ok(())
}

/// Writes `n` files of 1-4 KiB under `dir`, 500 per folder.
fn write_files(dir: &Path, n: usize, tag: &str) -> Result<()> {
    for i in 0..n {
        let d = dir.join(format!("d{}", i / 500));
        if i % 500 == 0 {
            std::fs::create_dir_all(&d)?;
        }
        let len = 1024 + (i * 7919) % 3072;
        let mut body = format!("{tag} {i}\n").into_bytes();
        body.resize(len, b'x');
        std::fs::write(d.join(format!("f{i}.conf")), body)?;
    }
    Ok(())
}

fn until_everywhere(lab: &Lab, rel: &str, want: (u64, u64), limit: Duration) -> Result<()> {
    for n in 2..=3 {
        let d = lab.mount_dir(n).join(rel);
        wait_for(limit, &format!("{rel} on m{n}"), || census(&d) == want)?;
    }
    Ok(())
}

fn small_files(lab: &Lab, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let src = lab.mount_dir(1).join("small");
    let t = Instant::now();
    write_files(&src, plan.small_files, "small")?;
    let written = secs(t);
    let want = census(&src);
    until_everywhere(lab, "small", want, Duration::from_secs(3600))?;
    let all = secs(t);
    let (r, rf, c) = compare_tree(lab, &src, "small");
    rows.push(Row {
        workload: format!("{} files of 1-4 KiB, until on all mounts", plan.small_files),
        gsync: all,
        unit: "s",
        rsync: r,
        rsync_fsync: rf,
        local: c,
        note: format!(
            "written in {written:.1} s; {:.0} files/s{}",
            plan.small_files as f64 / all,
            lab.settle
                .as_ref()
                .map(|s| format!("; writer --settle {s}"))
                .unwrap_or_default()
        ),
    });
    Ok(())
}

fn many_files(lab: &Lab, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let src = lab.mount_dir(1).join("many");
    let t = Instant::now();
    write_files(&src, plan.many_files, "many")?;
    let want = census(&src);
    until_everywhere(lab, "many", want, Duration::from_secs(7200))?;
    let all = secs(t);
    let (r, rf, c) = compare_tree(lab, &src, "many");
    rows.push(Row {
        workload: format!("{} files, until on all mounts", plan.many_files),
        gsync: all,
        unit: "s",
        rsync: r,
        rsync_fsync: rf,
        local: c,
        note: format!("{:.0} files/s", plan.many_files as f64 / all),
    });
    let fresh = lab.base.join("m4");
    let total = census(&lab.mount_dir(1)).0;
    let t = Instant::now();
    lab.mount(2, &fresh)?;
    wait_for(Duration::from_secs(3600), "the new mount", || {
        census(&fresh).0 >= total
    })?;
    rows.push(Row {
        workload: format!("first attach of a new mount to {total} files"),
        gsync: secs(t),
        unit: "s",
        rsync: None,
        rsync_fsync: None,
        local: None,
        note: "until `gsync mount` returned and every file is there".into(),
    });
    Ok(())
}

fn heal(lab: &Lab, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let many = plan.many_files;
    for (round, changed) in [plan.heal_small, plan.heal_large].into_iter().enumerate() {
        lab.isolate(3)?;
        let m1 = lab.mount_dir(1).join("many");
        for i in 0..changed {
            let p = m1.join(format!("d{}/f{}.conf", i / 500, i));
            std::fs::write(&p, format!("changed in outage {round}: {i}\n"))?;
        }
        let last = format!("many/d{}/f{}.conf", (changed - 1) / 500, changed - 1);
        let marker = format!("changed in outage {round}: {}\n", changed - 1);
        wait_for(Duration::from_secs(600), "the changes on m2", || {
            std::fs::read_to_string(lab.mount_dir(2).join(&last)).is_ok_and(|s| s == marker)
        })?;
        let check = |n: u32| {
            (0..changed).all(|i| {
                let p = lab
                    .mount_dir(n)
                    .join(format!("many/d{}/f{}.conf", i / 500, i));
                std::fs::read_to_string(p)
                    .is_ok_and(|s| s == format!("changed in outage {round}: {i}\n"))
            })
        };
        let t = Instant::now();
        lab.reconnect()?;
        wait_for(Duration::from_secs(3600), "the heal", || check(3))?;
        rows.push(Row {
            workload: format!("heal of {changed} changed of {many}, until on node 3's mount"),
            gsync: secs(t),
            unit: "s",
            rsync: None,
            rsync_fsync: None,
            local: None,
            note: "from the network's return".into(),
        });
    }
    Ok(())
}

fn big_file(lab: &Lab, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let bytes = plan.big_mib << 20;
    let staged = lab.base.join("big-source.bin");
    {
        let mut f = std::fs::File::create(&staged)?;
        fill(&mut f, bytes, 7)?;
    }
    let want = hash_file(&staged).ok_or_else(|| anyhow!("cannot read {}", staged.display()))?;
    let (wire0, recv0) = (loopback_bytes(), lab.received());
    let t = Instant::now();
    let dst = lab.mount_dir(1).join("big.bin");
    let tmp = lab.mount_dir(1).join(".big.bin.part");
    std::fs::copy(&staged, &tmp)?;
    std::fs::rename(&tmp, &dst)?;
    for n in 2..=3 {
        let p = lab.mount_dir(n).join("big.bin");
        wait_for(Duration::from_secs(3600), "the big file", || {
            std::fs::metadata(&p).is_ok_and(|m| m.len() == bytes) && hash_file(&p) == Some(want)
        })?;
    }
    let g = secs(t);
    let wire = loopback_bytes()
        .zip(wire0)
        .map(|(a, b)| a.saturating_sub(b));
    let recv = lab.received().saturating_sub(recv0);
    // The local limit: the same bytes copied to six places on this disk
    // (three bricks, three mounts), plus sync.
    let scratch = lab.base.join("compare");
    std::fs::create_dir_all(&scratch)?;
    let cps: Vec<String> = (0..6)
        .map(|i| format!("cp {} {}", q(&staged), q(&scratch.join(format!("c{i}")))))
        .collect();
    let local = timed(&format!("{} && sync", cps.join(" && ")));
    for i in 0..6 {
        let _ = std::fs::remove_file(scratch.join(format!("c{i}")));
    }
    let r = tool("rsync")
        .then(|| {
            timed(&format!(
                "rsync -a {} {}",
                q(&staged),
                q(&scratch.join("r"))
            ))
        })
        .flatten();
    let _ = std::fs::remove_file(scratch.join("r"));
    rows.push(Row {
        workload: format!("one {} MiB file, until on all mounts", plan.big_mib),
        gsync: g,
        unit: "s",
        rsync: r,
        rsync_fsync: None,
        local,
        note: format!(
            "{:.0} MB/s; wire {} MiB (kernel, loopback), bricks received {} MiB",
            bytes as f64 / 1e6 / g,
            wire.map_or_else(|| "?".into(), |w| (w >> 20).to_string()),
            recv >> 20
        ),
    });

    // 1 MiB changed in the middle.
    let (wire0, recv0) = (loopback_bytes(), lab.received());
    let rsync_copy = scratch.join("r-delta");
    let have_rsync = tool("rsync");
    if have_rsync {
        std::fs::copy(&staged, &rsync_copy)?;
    }
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&staged)?;
        f.seek(SeekFrom::Start(bytes / 2))?;
        fill(&mut f, 1 << 20, 99)?;
    }
    let want = hash_file(&staged).ok_or_else(|| anyhow!("cannot read {}", staged.display()))?;
    let t = Instant::now();
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&dst)?;
        f.seek(SeekFrom::Start(bytes / 2))?;
        fill(&mut f, 1 << 20, 99)?;
    }
    // Meanwhile, small files written into m1 one after the other, each
    // timed until m2 shows it: does the big change hold them up?
    let spreading = std::sync::atomic::AtomicBool::new(true);
    let (waited, during) = std::thread::scope(|s| {
        let writer = s.spawn(|| writes_meanwhile(lab, &spreading));
        let waited = (2..=3).try_for_each(|n| {
            let p = lab.mount_dir(n).join("big.bin");
            wait_for(Duration::from_secs(3600), "the change", || {
                hash_file(&p) == Some(want)
            })
        });
        spreading.store(false, std::sync::atomic::Ordering::SeqCst);
        (waited, writer.join().unwrap_or_default())
    });
    waited?;
    let g = secs(t);
    let wire = loopback_bytes()
        .zip(wire0)
        .map(|(a, b)| a.saturating_sub(b));
    let recv = lab.received().saturating_sub(recv0);
    let mut rsync_note = String::new();
    let mut r = None;
    if have_rsync {
        let t = Instant::now();
        let out = Command::new("rsync")
            .args(["-a", "-I", "--no-whole-file", "--stats"])
            .arg(&staged)
            .arg(&rsync_copy)
            .output();
        if let Some(o) = out.ok().filter(|o| o.status.success()) {
            r = Some(secs(t));
            let s = String::from_utf8_lossy(&o.stdout);
            if let Some(l) = s.lines().find(|l| l.starts_with("Total bytes sent")) {
                rsync_note = format!("; rsync {}", l.trim());
            }
        }
        let _ = std::fs::remove_file(&rsync_copy);
    }
    rows.push(Row {
        workload: format!("1 MiB changed inside the {} MiB file, until visible", plan.big_mib),
        gsync: g,
        unit: "s",
        rsync: r,
        rsync_fsync: None,
        local: None,
        note: format!(
            "wire {} per replica (kernel, loopback, 2 replicas), bricks received {:.2} MiB{rsync_note}",
            wire.map_or_else(|| "?".into(), |w| format!("{:.2} MiB", w as f64 / 2.0 / 1048576.0)),
            recv as f64 / 1048576.0
        ),
    });
    let _ = std::fs::remove_file(&staged);
    let mut during = during;
    if !during.is_empty() {
        let n = during.len();
        let max = during.iter().copied().fold(0.0, f64::max);
        rows.push(Row {
            workload: format!("small writes meanwhile, slowest of {n} (m1 -> m2)"),
            gsync: max,
            unit: "ms",
            rsync: None,
            rsync_fsync: None,
            local: None,
            note: format!(
                "p50 {:.0} ms; the first written 100 ms after the change",
                pct(&mut during, 0.5)
            ),
        });
    }
    Ok(())
}

/// Writes small files into m1 one after the other while `spreading`, each
/// timed (ms) until m2 shows it; a file not shown within 60 s counts as
/// 60 s. The first is written 100 ms after the big change: a write within
/// the mount's settle window (20 ms) joins the big change's changeset and
/// goes live with it, by design.
fn writes_meanwhile(lab: &Lab, spreading: &std::sync::atomic::AtomicBool) -> Vec<f64> {
    let (m1, m2) = (lab.mount_dir(1), lab.mount_dir(2));
    let mut out = Vec::new();
    std::thread::sleep(Duration::from_millis(100));
    let mut k = 0u32;
    while spreading.load(std::sync::atomic::Ordering::SeqCst) {
        let name = format!("during-{k}.txt");
        k += 1;
        let body = format!("small write {k}\n");
        let t = Instant::now();
        if std::fs::write(m1.join(&name), &body).is_err() {
            break;
        }
        let _ = wait_every(
            Duration::from_millis(1),
            Duration::from_secs(60),
            "a small write on another mount",
            || std::fs::read_to_string(m2.join(&name)).is_ok_and(|s| s == body),
        );
        out.push(secs(t) * 1000.0);
        std::thread::sleep(Duration::from_millis(50));
    }
    out
}

fn heal_info(lab: &Lab, _plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let mut v = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        lab.gsync(1, &["volume", "heal", "bench", "info"])?;
        v.push(secs(t) * 1000.0);
    }
    rows.push(Row {
        workload: "`volume heal bench info`, nothing pending (median of 5)".into(),
        gsync: pct(&mut v, 0.5),
        unit: "ms",
        rsync: None,
        rsync_fsync: None,
        local: None,
        note: "end to end, CLI included".into(),
    });
    Ok(())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn resources(lab: &Lab, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let pids = lab.pids();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let before: Vec<Option<u64>> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    std::thread::sleep(Duration::from_secs(plan.idle_secs));
    for (i, &pid) in pids.iter().enumerate() {
        let idle = cpu_ticks(pid)
            .zip(before[i])
            .map(|(a, b)| (a.saturating_sub(b)) as f64 / hz / plan.idle_secs as f64 * 100.0);
        rows.push(Row {
            workload: format!("daemon {} peak RSS over the whole run", i + 1),
            gsync: peak_rss_mib(pid).unwrap_or(f64::NAN),
            unit: "MiB",
            rsync: None,
            rsync_fsync: None,
            local: None,
            note: String::new(),
        });
        rows.push(Row {
            workload: format!("daemon {} idle CPU ({} s, 3 mounts)", i + 1, plan.idle_secs),
            gsync: idle.unwrap_or(f64::NAN),
            unit: "%",
            rsync: None,
            rsync_fsync: None,
            local: None,
            note: "of one core".into(),
        });
    }
    Ok(())
}

/// What one replica-N run of the scaling step measured.
struct Scaled {
    secs: f64,
    cpu_secs: f64,
    wire_bytes: Option<u64>,
}

/// Writes `files` small files into the only mount (node 1) of a new
/// `nodes`-node lab with a replica-`nodes` volume, until they are in every
/// brick: time, the daemons' CPU, and loopback bytes meanwhile.
fn scaled_run(lab: &Lab, plan: &Plan, nodes: u32, ip0: u32) -> Result<Scaled> {
    let base = lab.base.join(format!("replica{nodes}"));
    let port = lab
        .port
        .checked_add(1)
        .ok_or_else(|| anyhow!("--port {} leaves no port for the replica labs", lab.port))?;
    let sub = Lab::start_n(&base, port, (None, lab.options.clone()), nodes, ip0, 1)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let pids = sub.pids();
    let cpu = || -> u64 { pids.iter().filter_map(|&p| cpu_ticks(p)).sum() };
    let (cpu0, wire0) = (cpu(), loopback_bytes());
    let src = sub.mount_dir(1).join("scale");
    let t = Instant::now();
    write_files(&src, plan.scale_files, "scale")?;
    let want = census(&src);
    for n in 1..=nodes {
        let d = sub.brick_dir(n).join("scale");
        wait_for(
            Duration::from_secs(1800),
            &format!("scale in brick {n}"),
            || census(&d) == want,
        )?;
    }
    let secs = secs(t);
    let cpu_secs = cpu().saturating_sub(cpu0) as f64 / hz;
    let wire_bytes = loopback_bytes()
        .zip(wire0)
        .map(|(a, b)| a.saturating_sub(b));
    drop(sub);
    let _ = std::fs::remove_dir_all(&base);
    Ok(Scaled {
        secs,
        cpu_secs,
        wire_bytes,
    })
}

/// Replica N should cost in proportion to N: the same small files into a
/// replica-3 and a replica-8 volume (one mount each, fresh labs beside the
/// main one), until in every brick.
fn replica_scaling(lab: &Lab, plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let three = scaled_run(lab, plan, 3, 20)?;
    let eight = scaled_run(lab, plan, 8, 30)?;
    let n = plan.scale_files;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    rows.push(Row {
        workload: format!("{n} files into replica 8, until in all 8 bricks"),
        gsync: eight.secs,
        unit: "s",
        rsync: None,
        rsync_fsync: None,
        local: None,
        note: format!(
            "replica 3: {:.1} s; x{:.2} (linear: within x2)",
            three.secs,
            ratio(eight.secs, three.secs)
        ),
    });
    rows.push(Row {
        workload: format!("{n} files into replica 8, daemons' CPU"),
        gsync: eight.cpu_secs,
        unit: "s",
        rsync: None,
        rsync_fsync: None,
        local: None,
        note: format!(
            "replica 3: {:.1} s; x{:.2} (linear: x2.67)",
            three.cpu_secs,
            ratio(eight.cpu_secs, three.cpu_secs)
        ),
    });
    if let (Some(w8), Some(w3)) = (eight.wire_bytes, three.wire_bytes) {
        rows.push(Row {
            workload: format!("{n} files into replica 8, loopback bytes"),
            gsync: w8 as f64 / 1e6,
            unit: "MB",
            rsync: None,
            rsync_fsync: None,
            local: None,
            note: format!(
                "replica 3: {:.1} MB; x{:.2} (linear: x2.67)",
                w3 as f64 / 1e6,
                ratio(w8 as f64, w3 as f64)
            ),
        });
    }
    Ok(())
}

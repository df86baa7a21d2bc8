//! `gsync demo`: the quick start of the README on one machine. Starts three
//! daemons on 127.0.0.1-3, forms the pool, creates and starts a replica-3
//! volume, mounts a folder per node, and tells the user what to try.
//!
//! A demo that cannot start (its ports are taken, a daemon dies) says so in
//! one line and leaves no daemon behind; a detached demo is stopped with
//! `gsync demo --stop DIR`, which signals exactly the daemons of DIR (their
//! pids are in each state directory's lock file).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::args::DemoArgs;
use crate::Outcome;

fn gsync(state: &Path, args: &[&str]) -> Result<String> {
    let exe = std::env::current_exe().context("locating the gsync binary")?;
    let out = Command::new(exe)
        .env("GSYNC_STATE_DIR", state)
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

fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(anyhow!("timed out waiting for {what}"))
}

pub async fn run(a: DemoArgs) -> Result<Outcome> {
    tokio::task::spawn_blocking(move || match a.stop.clone() {
        Some(dir) => stop(&dir),
        None => demo(a),
    })
    .await?
}

/// The demo's daemons: SIGTERM to each on drop unless released.
struct Daemons(Vec<Child>);

impl Daemons {
    /// Fails at once if a daemon already exited (naming its last words).
    fn check(&mut self, base: &Path) -> Result<()> {
        for (i, c) in self.0.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait() {
                let out = std::fs::read_to_string(base.join(format!("n{}.out", i + 1)))
                    .unwrap_or_default();
                let last = out
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim_start_matches("gsync: ");
                bail!("daemon {} exited ({status}): {last}", i + 1);
            }
        }
        Ok(())
    }

    fn release(mut self) {
        for c in std::mem::take(&mut self.0) {
            std::mem::forget(c);
        }
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.0 {
            terminate(c.id());
            let _ = c.wait();
        }
    }
}

fn terminate(pid: u32) {
    // SAFETY: kill(2) with SIGTERM on a pid of a daemon this demo started.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
}

/// Refuses at once when one of the demo's addresses is taken.
fn ports_free(port: u16) -> Result<()> {
    for n in 1..=3 {
        let addr = format!("127.0.0.{n}:{port}");
        if let Err(e) = std::net::UdpSocket::bind(&addr) {
            bail!(
                "cannot use {addr}: {e} (another demo? stop it with 'gsync demo --stop DIR', or pick --port)"
            );
        }
    }
    Ok(())
}

fn demo(a: DemoArgs) -> Result<Outcome> {
    let port = a.port;
    ports_free(port).map_err(|e| anyhow!("demo: {e}"))?;
    let base: PathBuf = match a.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("gsync-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let base = base.canonicalize()?;
    let exe = std::env::current_exe()?;
    let mut children = Daemons(Vec::new());
    for n in 1..=3 {
        let state = base.join(format!("n{n}"));
        std::fs::create_dir_all(&state)?;
        let log = std::fs::File::create(base.join(format!("n{n}.out")))?;
        let child = Command::new(&exe)
            .args(["daemon", "--listen", &format!("127.0.0.{n}:{port}")])
            .env("GSYNC_STATE_DIR", &state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a daemon")?;
        children.0.push(child);
    }
    setup(&base, port, &mut children).map_err(|e| anyhow!("demo: {e:#}"))?;
    let d = base.display();
    let exe = exe.display();
    println!("gsync demo is running in {d}");
    println!();
    println!("  three daemons: 127.0.0.1-3:{port} (state in {d}/n1..n3, logs in {d}/nN/log/)");
    println!("  volume 'conf', replica 3, bricks {d}/b1..b3");
    println!("  mounts: {d}/m1 (node 1), {d}/m2 (node 2), {d}/m3 (node 3)");
    println!();
    println!("Try:");
    println!("  echo hi > {d}/m1/a.txt; sleep 1; cat {d}/m2/a.txt");
    println!("  export GSYNC_STATE_DIR={d}/n1");
    println!("  {exe} peer status");
    println!("  {exe} volume status conf");
    println!("  {exe} volume heal conf info");
    println!("  {exe} mount");
    println!("  {exe} events");
    if a.detach {
        children.release();
        println!();
        println!("Stop it with: {exe} demo --stop {d}");
        return Ok(Outcome::Done);
    }
    println!();
    println!("Press Ctrl-C to stop the demo.");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    drop(children);
    println!("demo stopped; files left in {d}");
    Ok(Outcome::Done)
}

/// Stops the daemons of a detached demo in `dir`.
fn stop(dir: &Path) -> Result<Outcome> {
    let mut pids = Vec::new();
    for n in 1..=3 {
        let lock = dir.join(format!("n{n}/gsyncd.lock"));
        let Some(pid) = std::fs::read_to_string(&lock)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            continue;
        };
        // Only a live gsync daemon of this state dir (a stale pid may have
        // been reused by anything).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.windows(6).any(|w| w == b"daemon") && locked(&dir.join(format!("n{n}"))) {
            terminate(pid);
            pids.push(pid);
        }
    }
    if pids.is_empty() {
        return Ok(Outcome::Failed(format!(
            "demo --stop: no running demo daemon in {}",
            dir.display()
        )));
    }
    wait_for("the demo daemons to stop", || {
        pids.iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists() || zombie(*p))
    })?;
    println!(
        "demo in {} stopped ({} daemons); files left in place",
        dir.display(),
        pids.len()
    );
    Ok(Outcome::Done)
}

/// True if a daemon runs on `state` (its lock file is held: locking it
/// ourselves fails).
fn locked(state: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(state.join("gsyncd.lock")) else {
        return false;
    };
    // SAFETY: flock(2) on a descriptor we own; released when `f` closes.
    let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    !free
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
        .unwrap_or(false)
}

/// Forms the pool, creates and starts the volume, mounts m1-m3.
fn setup(base: &Path, port: u16, children: &mut Daemons) -> Result<()> {
    let st = |n: u32| base.join(format!("n{n}"));
    for n in 1..=3 {
        let mut dead = None;
        wait_for("the daemons", || {
            if let Err(e) = children.check(base) {
                dead = Some(e);
                return true;
            }
            gsync(&st(n), &["peer", "status"]).is_ok()
        })?;
        if let Some(e) = dead {
            return Err(e);
        }
    }
    gsync(&st(1), &["peer", "probe", &format!("127.0.0.2:{port}")])?;
    gsync(&st(1), &["peer", "probe", &format!("127.0.0.3:{port}")])?;
    wait_for("the pool", || {
        gsync(&st(1), &["peer", "status"]).is_ok_and(|s| s.matches("(Connected)").count() == 2)
    })?;
    let b = |n: u32| format!("127.0.0.{n}:{}", base.join(format!("b{n}")).display());
    gsync(
        &st(1),
        &[
            "volume",
            "create",
            "conf",
            "replica",
            "3",
            &b(1),
            &b(2),
            &b(3),
            "force",
        ],
    )?;
    gsync(&st(1), &["volume", "start", "conf"])?;
    for n in 1..=3 {
        let m = base.join(format!("m{n}"));
        gsync(
            &st(n),
            &["mount", &format!("127.0.0.{n}:/conf"), &m.to_string_lossy()],
        )?;
    }
    std::fs::write(base.join("m1/hello.txt"), "hello from m1\n")?;
    let _ = wait_for("the first file to replicate", || {
        base.join("m3/hello.txt").exists()
    });
    Ok(())
}

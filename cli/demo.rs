//! `gsync demo`: the quick start of the README on one machine. Starts three
//! daemons on 127.0.0.1-3, forms the pool, creates and starts a replica-3
//! volume, mounts a folder per node, and tells the user what to try.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::args::DemoArgs;
use crate::Outcome;

const PORT: u16 = 24017;

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
    tokio::task::spawn_blocking(move || demo(a)).await?
}

fn demo(a: DemoArgs) -> Result<Outcome> {
    let base: PathBuf = match a.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("gsync-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let exe = std::env::current_exe()?;
    let mut children: Vec<Child> = Vec::new();
    for n in 1..=3 {
        let state = base.join(format!("n{n}"));
        std::fs::create_dir_all(&state)?;
        let log = std::fs::File::create(base.join(format!("n{n}.out")))?;
        let child = Command::new(&exe)
            .args(["daemon", "--listen", &format!("127.0.0.{n}:{PORT}")])
            .env("GSYNC_STATE_DIR", &state)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a daemon")?;
        children.push(child);
    }
    let st = |n: u32| base.join(format!("n{n}"));
    for n in 1..=3 {
        wait_for("the daemons", || gsync(&st(n), &["peer", "status"]).is_ok())?;
    }
    gsync(&st(1), &["peer", "probe", "127.0.0.2"])?;
    gsync(&st(1), &["peer", "probe", "127.0.0.3"])?;
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
    let d = base.display();
    println!("gsync demo is running in {d}");
    println!();
    println!("  three daemons: 127.0.0.1-3:{PORT} (state in {d}/n1..n3, logs in {d}/nN/log/)");
    println!("  volume 'conf', replica 3, bricks {d}/b1..b3");
    println!("  mounts: {d}/m1 (node 1), {d}/m2 (node 2), {d}/m3 (node 3)");
    println!();
    println!("Try:");
    println!("  echo hi > {d}/m1/a.txt; cat {d}/m2/a.txt");
    println!("  export GSYNC_STATE_DIR={d}/n1");
    println!("  {} peer status", exe.display());
    println!("  {} volume status conf", exe.display());
    println!("  {} volume heal conf info", exe.display());
    println!("  {} mount", exe.display());
    if a.detach {
        for c in children {
            std::mem::forget(c);
        }
        println!();
        println!("Stop it with: pkill -f 'gsync daemon --listen 127.0.0'");
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
    for mut c in children {
        // SAFETY: kill(2) with a pid we spawned and SIGTERM.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let _ = c.wait();
    }
    println!("demo stopped; files left in {d}");
    Ok(Outcome::Done)
}

//! `gsync mount`, `gsync umount`: the agent runs in the daemon; the CLI
//! registers it, shows progress until the folder is in sync, and returns.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use gsync_brick::control::{CtlRequest, MountInfo};

use crate::args::MountArgs;
use crate::{ctl, print_json, Outcome};

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| p.to_path_buf(), |c| c.join(p))
    }
}

async fn list(state: &Path) -> Result<Result<Vec<MountInfo>, ctl::Refused>> {
    ctl::call::<Vec<MountInfo>>(state, &CtlRequest::MountList).await
}

pub async fn mount(a: MountArgs, state: &Path, json: bool) -> Result<Outcome> {
    let (source, dir) = match (a.source, a.dir) {
        (None, None) => {
            let mounts = match list(state).await? {
                Ok(m) => m,
                Err(e) => return Ok(Outcome::Failed(format!("mount: failed: {e}"))),
            };
            if json {
                print_json(&mounts)?;
            } else if mounts.is_empty() {
                println!("No mounts");
            } else {
                let w = mounts
                    .iter()
                    .map(|m| m.dir.len())
                    .max()
                    .unwrap_or(10)
                    .max(10);
                println!("{:<w$}  {:<24}  State", "Directory", "Source");
                for m in mounts {
                    println!("{:<w$}  {:<24}  {}", m.dir, m.source, m.state);
                }
            }
            return Ok(Outcome::Done);
        }
        (Some(s), Some(d)) => (s, absolute(&d)),
        _ => {
            return Ok(Outcome::Failed(
                "mount: failed: usage: gsync mount HOST:/VOL DIR [options]".into(),
            ))
        }
    };
    let req = CtlRequest::Mount {
        source: source.clone(),
        dir: dir.to_string_lossy().into_owned(),
        prefer: a.prefer,
        read_only: a.read_only || a.atomic,
        on_change: a.on_change,
        on_change_delay_ms: Some(a.on_change_delay.as_millis() as u64),
        on_change_initial: a.on_change_initial,
        settle_ms: a.settle.map(|d| d.as_millis() as u64),
        validate: a.validate,
        validate_timeout_ms: Some(a.validate_timeout.as_millis() as u64),
        atomic: a.atomic,
    };
    let dir = match ctl::call::<String>(state, &req).await? {
        Ok(d) => d,
        Err(e) => {
            return Ok(Outcome::Failed(format!(
                "mount: {}: failed: {e}",
                dir.display()
            )))
        }
    };
    let info = wait_in_sync(state, &dir, json).await?;
    if json {
        print_json(&info)?;
    } else if let Some(i) = &info {
        if i.in_sync && i.state.starts_with("in sync") {
            println!("mount: {dir}: in sync with {source}");
        } else if rejected_after_first_sync(i) {
            println!(
                "mount: {dir}: attached to {source}; the validator rejected what it brought, the folder keeps what it had: {}",
                i.state
            );
        } else if i.in_sync {
            // Attached, but not clean: say what is not (split-brain...).
            println!("mount: {dir}: attached to {source}: {}", i.state);
        } else {
            println!(
                "mount: {dir}: {} (the agent keeps syncing in the background)",
                i.state
            );
        }
    }
    if a.foreground {
        crate::service::ready(&format!("{dir}: attached to {source}"));
        wait_signal().await;
        crate::service::stopping();
        let _ = ctl::call_raw(state, &CtlRequest::Umount { dir: dir.clone() }).await?;
    }
    Ok(Outcome::Done)
}

/// The mount's first sync is complete and the validator rejected changes
/// it brought (they are not live).
fn rejected_after_first_sync(m: &MountInfo) -> bool {
    m.rejected.is_some()
        && m.online
        && !m.state.starts_with("syncing")
        && !m.state.starts_with("resynchronising")
}

/// How long `gsync mount` waits on a mount that is offline before
/// returning with its state.
const OFFLINE_WAIT: Duration = Duration::from_secs(10);

/// Polls until the mount is in sync (or a timeout), with a progress bar on
/// a terminal.
async fn wait_in_sync(state: &Path, dir: &str, json: bool) -> Result<Option<MountInfo>> {
    let limit = std::env::var("GSYNC_MOUNT_WAIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600u64);
    let deadline = Instant::now() + Duration::from_secs(limit);
    let mut bar = (!json && std::io::stderr().is_terminal()).then(|| FirstSyncBar::new(dir));
    let mut last = None;
    let mut offline_since: Option<Instant> = None;
    loop {
        let m = list(state)
            .await?
            .ok()
            .and_then(|l| l.into_iter().find(|m| m.dir == dir));
        if let (Some(b), Some(m)) = (&mut bar, &m) {
            b.update(state, m).await;
        }
        // A first sync the validator rejected is as done as it gets until
        // the volume changes.
        let done = m
            .as_ref()
            .is_some_and(|m| m.in_sync || rejected_after_first_sync(m));
        // Offline with a reason (no brick reachable, refused): say so soon
        // rather than wait; the agent keeps trying in the background.
        if m.as_ref().is_some_and(|m| !m.online) {
            offline_since.get_or_insert_with(Instant::now);
        } else {
            offline_since = None;
        }
        let given_up = offline_since.is_some_and(|t| t.elapsed() > OFFLINE_WAIT);
        last = m.or(last);
        if done || given_up || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(b) = bar {
        b.finish();
    }
    Ok(last)
}

/// The progress of a first sync: bytes in the folder against the bytes of
/// the brick it follows (when that brick's directory is on this machine,
/// which it is for a mount of the local node), entries applied against the
/// brick's entries, and indicatif's rate and ETA.
struct FirstSyncBar {
    bar: indicatif::ProgressBar,
    dir: PathBuf,
    /// When sizes were last measured, and how long that took (a large tree
    /// is measured less often).
    measured: Option<(Instant, Duration)>,
    by_bytes: bool,
}

impl FirstSyncBar {
    fn new(dir: &str) -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(Self::style(
            "{spinner} {msg}\n[{bar:40}] {pos}/{len} entries, ETA {eta}",
        ));
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            dir: PathBuf::from(dir),
            measured: None,
            by_bytes: false,
        }
    }

    fn style(t: &str) -> indicatif::ProgressStyle {
        indicatif::ProgressStyle::with_template(t)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ")
    }

    async fn update(&mut self, state: &Path, m: &MountInfo) {
        let due = self
            .measured
            .is_none_or(|(at, took)| at.elapsed() >= (took * 5).max(Duration::from_secs(1)));
        if !due {
            self.bar.set_message(format!("{}: {}", m.dir, m.state));
            if !self.by_bytes {
                self.bar.set_position(m.applied);
            }
            return;
        }
        let started = Instant::now();
        let brick = m
            .brick
            .as_deref()
            .and_then(|b| b.split_once(':'))
            .map(|(_, p)| PathBuf::from(p))
            .filter(|p| p.is_dir());
        let dir = self.dir.clone();
        let sizes = tokio::task::spawn_blocking(move || {
            let total = brick.as_deref().map(tree_bytes);
            (tree_bytes(&dir), total)
        })
        .await
        .unwrap_or((0, None));
        let entries = brick_entries(state, m).await;
        match sizes {
            (done, Some(total)) if total > 0 => {
                if !self.by_bytes {
                    self.by_bytes = true;
                    self.bar.set_style(Self::style(
                        "{spinner} {msg}\n[{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec}, ETA {eta}",
                    ));
                }
                self.bar.set_length(total.max(done));
                self.bar.set_position(done);
                let of = entries.map_or_else(String::new, |e| format!(" of {e}"));
                self.bar.set_message(format!(
                    "{}: {} ({} entries applied{of})",
                    m.dir, m.state, m.applied
                ));
            }
            _ => {
                self.bar.set_length(entries.unwrap_or(0).max(m.applied));
                self.bar.set_position(m.applied);
                self.bar.set_message(format!("{}: {}", m.dir, m.state));
            }
        }
        // Until the agent has picked its brick, measure again at the next
        // poll rather than show entries for a whole second.
        if m.brick.is_some() {
            self.measured = Some((Instant::now(), started.elapsed()));
        }
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// Entries of the brick a mount follows, from `volume status`.
async fn brick_entries(state: &Path, m: &MountInfo) -> Option<u64> {
    let vol = m.source.rsplit_once(":/")?.1.to_string();
    let reports = ctl::call::<Vec<gsync_brick::control::VolumeStatusReport>>(
        state,
        &CtlRequest::VolumeStatus { name: Some(vol) },
    )
    .await
    .ok()?
    .ok()?;
    let brick = m.brick.as_deref()?;
    reports
        .iter()
        .flat_map(|r| r.bricks.iter())
        .find(|b| b.brick == brick)
        .and_then(|b| b.detail.as_ref())
        .map(|d| d.entries)
}

/// Bytes of the regular files below `root`, the brick's own `.gsync`
/// directory left out.
fn tree_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_name() == ".gsync" {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

async fn wait_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    if let Ok(mut t) = signal(SignalKind::terminate()) {
        tokio::select! {
            _ = t.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
}

pub async fn umount(dir: &Path, state: &Path, json: bool) -> Result<Outcome> {
    let d = absolute(dir);
    match ctl::call_raw(
        state,
        &CtlRequest::Umount {
            dir: d.to_string_lossy().into_owned(),
        },
    )
    .await?
    {
        Ok(_) => {
            if json {
                print_json(&serde_json::json!({"unmounted": d}))?;
            }
            Ok(Outcome::Done)
        }
        Err(e) => Ok(Outcome::Failed(format!(
            "umount: {}: failed: {e}",
            d.display()
        ))),
    }
}

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
        read_only: a.read_only,
        on_change: a.on_change,
        on_change_delay_ms: Some(a.on_change_delay.as_millis() as u64),
        on_change_initial: a.on_change_initial,
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
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    let mut last = None;
    let mut offline_since: Option<Instant> = None;
    loop {
        let m = list(state)
            .await?
            .ok()
            .and_then(|l| l.into_iter().find(|m| m.dir == dir));
        if let (Some(b), Some(m)) = (&bar, &m) {
            b.set_message(format!(
                "{}: {} entries applied, {}",
                dir, m.applied, m.state
            ));
        }
        let done = m.as_ref().is_some_and(|m| m.in_sync);
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
        b.finish_and_clear();
    }
    Ok(last)
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

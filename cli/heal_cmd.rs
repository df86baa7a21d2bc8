//! `gsync volume heal VOL …`: trigger heals, the GlusterFS-shaped heal
//! reports, and split-brain resolution.

use std::path::Path;

use anyhow::Result;
use gsync_brick::control::{CtlRequest, HealBrickReport};
use gsync_brick::crawl::FULL_HEAL_ATTEMPTS;
use gsync_brick::heal_types::{BrickHealInfo, FullHealPhase, SplitBrainVersions};

use crate::{ctl, print_json, Outcome};

const USAGE: &str = "usage: volume heal VOL [full | info [summary|split-brain] | statistics | split-brain (bigger-file FILE | latest-mtime FILE | source-brick HOST:/PATH [FILE] | show FILE)]";

pub async fn run(name: &str, words: &[String], state: &Path, json: bool) -> Result<Outcome> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        [] | ["full"] => {
            let full = !w.is_empty();
            match ctl::call_raw(state, &CtlRequest::Heal { name: name.into(), full }).await? {
                Ok(_) if json => print_json(&serde_json::json!({"launched": true, "full": full}))?,
                Ok(_) => {
                    let kind = if full { "full" } else { "index" };
                    println!("Launching heal operation to perform {kind} self heal on volume {name} has been successful ");
                    println!("Use heal info commands to check status.");
                }
                Err(e) => return Ok(Outcome::Failed(format!("Launching heal operation to perform self heal on volume {name} has been unsuccessful: {e}"))),
            }
            Ok(Outcome::Done)
        }
        ["info"]
        | ["info", "summary"]
        | ["info", "split-brain"]
        | ["statistics"]
        | ["statistics", "heal-count"] => {
            let reports = match ctl::call::<Vec<HealBrickReport>>(
                state,
                &CtlRequest::HealInfo { name: name.into() },
            )
            .await?
            {
                Ok(r) => r,
                Err(e) => return Ok(Outcome::Failed(format!("volume heal: {name}: failed: {e}"))),
            };
            if json {
                print_json(&reports)?;
                return Ok(Outcome::Done);
            }
            match w.as_slice() {
                ["info"] => print_info(&reports),
                ["info", "summary"] => print_summary(&reports),
                ["info", "split-brain"] => print_split_brain(&reports),
                _ => print_statistics(&reports),
            }
            Ok(Outcome::Done)
        }
        ["split-brain", "show", file] => {
            let req = CtlRequest::SplitBrainShow {
                name: name.into(),
                path: strip(file),
            };
            match ctl::call::<Vec<(String, SplitBrainVersions)>>(state, &req).await? {
                Ok(v) if json => print_json(&v)?,
                Ok(v) => print_show(file, &v),
                Err(e) => {
                    return Ok(Outcome::Failed(format!(
                        "Healing {file} failed: {e}.\nVolume heal failed."
                    )))
                }
            }
            Ok(Outcome::Done)
        }
        ["split-brain", policy @ ("bigger-file" | "latest-mtime"), file] => {
            resolve(state, name, policy, Some(file), None, json).await
        }
        ["split-brain", "source-brick", brick] => {
            resolve(state, name, "source-brick", None, Some(brick), json).await
        }
        ["split-brain", "source-brick", brick, file] => {
            resolve(state, name, "source-brick", Some(file), Some(brick), json).await
        }
        _ => Ok(Outcome::Failed(format!(
            "volume heal: {name}: failed: {USAGE}"
        ))),
    }
}

fn strip(file: &str) -> String {
    file.trim_start_matches('/').to_string()
}

async fn resolve(
    state: &Path,
    name: &str,
    policy: &str,
    file: Option<&str>,
    brick: Option<&str>,
    json: bool,
) -> Result<Outcome> {
    let req = CtlRequest::SplitBrainResolve {
        name: name.into(),
        policy: policy.into(),
        path: file.map(strip),
        brick: brick.map(String::from),
    };
    match ctl::call::<Vec<String>>(state, &req).await? {
        Ok(healed) if json => print_json(&healed)?,
        Ok(healed) => {
            for p in healed {
                println!("Healed /{p}.");
            }
        }
        Err(e) => {
            let what = file.map_or_else(|| "split-brain files".to_string(), String::from);
            return Ok(Outcome::Failed(format!(
                "Healing {what} failed: {e}.\nVolume heal failed."
            )));
        }
    }
    Ok(Outcome::Done)
}

fn print_info(reports: &[HealBrickReport]) {
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("Brick {}", r.brick);
        match &r.info {
            Some(info) => {
                for e in &info.entries {
                    if e.split_brain {
                        println!("/{} - Is in split-brain", e.path);
                    } else {
                        println!("/{} ", e.path);
                    }
                }
                for line in full_heal_lines(info, reports, false) {
                    println!("{line}");
                }
                println!("Status: {}", r.status);
                println!("Number of entries: {}", count(info, info.total));
                // After GlusterFS's lines, and only while a heal moves, so
                // scripts reading the block keep working.
                if let Some(line) = progress_line(info).filter(|_| info.eta_secs.is_some()) {
                    println!("{line}");
                }
            }
            None => {
                println!("Status: {}", r.status);
                println!("Number of entries: -");
            }
        }
    }
}

/// How far the current heal (a new brick's fill, or a replay after an
/// outage) has come: entries and bytes left, the rates, the ETA.
fn progress_line(info: &BrickHealInfo) -> Option<String> {
    if info.pending == 0 {
        return None;
    }
    let left = format!(
        "{} entries and {} left",
        info.pending,
        bytesize::ByteSize(info.pending_bytes).display().si()
    );
    let Some(eta) = info.eta_secs else {
        return Some(format!("Heal progress: {left}, waiting for the peer brick"));
    };
    let mut rates = Vec::new();
    if let Some(r) = info.heal_rate {
        rates.push(format!("{r:.1} entries/s"));
    }
    if let Some(b) = info.heal_byte_rate {
        rates.push(format!("{}/s", bytesize::ByteSize(b as u64).display().si()));
    }
    Some(format!(
        "Heal progress: {} healed, {left} at {}, ETA {}",
        info.heals_done,
        rates.join(", "),
        humantime::format_duration(std::time::Duration::from_secs(eta.ceil() as u64))
    ))
}

/// An entry count, or `-` while a full heal from the brick has not
/// compared every peer brick (the count is then not the whole truth).
fn count(info: &BrickHealInfo, n: u64) -> String {
    if info.full_heal_unfinished() {
        "-".to_string()
    } else {
        n.to_string()
    }
}

/// One line per full heal from this brick: unfinished ones always, and
/// finished ones too when `all`.
fn full_heal_lines(info: &BrickHealInfo, reports: &[HealBrickReport], all: bool) -> Vec<String> {
    let name = |peer: u64| {
        reports
            .iter()
            .find(|r| r.id == peer)
            .map_or_else(|| format!("brick {peer:016x}"), |r| r.brick.clone())
    };
    info.full_heal
        .iter()
        .filter(|f| all || f.phase != FullHealPhase::Done)
        .map(|f| {
            let to = name(f.peer);
            let why = f.last_error.as_deref().unwrap_or("unknown error");
            match f.phase {
                FullHealPhase::Running => match &f.last_error {
                    Some(e) => format!(
                        "Full heal: running toward {to} (attempt {} of {FULL_HEAL_ATTEMPTS}, {} directories compared; the previous attempt failed: {e})",
                        f.attempts.max(1),
                        f.dirs_compared
                    ),
                    None => format!(
                        "Full heal: running toward {to} (attempt {} of {FULL_HEAL_ATTEMPTS}, {} directories compared)",
                        f.attempts.max(1),
                        f.dirs_compared
                    ),
                },
                FullHealPhase::Retrying => format!(
                    "Full heal: retrying toward {to} (attempt {} of {FULL_HEAL_ATTEMPTS} failed: {why})",
                    f.attempts
                ),
                FullHealPhase::Failed => format!(
                    "Full heal: failed toward {to} after {} attempts: {why}; run 'volume heal VOL full' again",
                    f.attempts
                ),
                FullHealPhase::Done => format!(
                    "Full heal: done toward {to} in {:.1} s ({} directories compared, {} paths marked for heal)",
                    f.elapsed_secs, f.dirs_compared, f.paths_marked
                ),
            }
        })
        .collect()
}

fn print_summary(reports: &[HealBrickReport]) {
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("Brick {}", r.brick);
        println!("Status: {}", r.status);
        match &r.info {
            Some(info) => {
                let sb = info.split_brain;
                let pending = info.total.saturating_sub(sb);
                for line in full_heal_lines(info, reports, false) {
                    println!("{line}");
                }
                println!("Total Number of entries: {}", count(info, info.total));
                println!(
                    "Number of entries in heal pending: {}",
                    count(info, pending)
                );
                println!("Number of entries in split-brain: {sb}");
                println!("Number of entries possibly healing: {}", info.healing);
            }
            None => {
                println!("Total Number of entries: -");
                println!("Number of entries in heal pending: -");
                println!("Number of entries in split-brain: -");
                println!("Number of entries possibly healing: -");
            }
        }
    }
}

fn print_split_brain(reports: &[HealBrickReport]) {
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("Brick {}", r.brick);
        match &r.info {
            Some(info) => {
                for e in info.entries.iter().filter(|e| e.split_brain) {
                    println!("/{}", e.path);
                }
                println!("Status: {}", r.status);
                println!("Number of entries in split-brain: {}", info.split_brain);
            }
            None => {
                println!("Status: {}", r.status);
                println!("Number of entries in split-brain: -");
            }
        }
    }
}

fn print_statistics(reports: &[HealBrickReport]) {
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("Brick {}", r.brick);
        println!("Status: {}", r.status);
        match &r.info {
            Some(info) => {
                println!("Number of heals done: {}", info.heals_done);
                println!("Bytes moved by heals: {}", info.heal_bytes);
                println!("Number of entries pending: {}", info.pending);
                println!("Number of entries in split-brain: {}", info.split_brain);
                println!("Number of entries healing now: {}", info.healing);
                if let Some(rate) = info.heal_rate {
                    println!("Heal rate: {rate:.1} entries/s");
                }
                if let Some(line) = progress_line(info) {
                    println!("{line}");
                }
                for (peer, n) in &info.pending_by_peer {
                    println!("Pending for brick {peer:016x}: {n}");
                }
                for line in full_heal_lines(info, reports, true) {
                    println!("{line}");
                }
            }
            None => println!("Number of heals done: -"),
        }
    }
}

fn print_show(file: &str, v: &[(String, SplitBrainVersions)]) {
    println!("Split-brain versions of /{}", strip(file));
    for (brick, s) in v {
        println!();
        println!("Brick {brick}");
        for (i, e) in s.versions.iter().enumerate() {
            let role = if i == 0 { "current" } else { "sibling" };
            println!(
                "  {role}: kind={} size={} mode={:o} mtime={} blake3={} writer={} version={}",
                e.kind.as_str(),
                e.size,
                e.mode,
                fmt_time(e.mtime_ns),
                e.hash_hex(),
                e.origin,
                e.vv
            );
        }
        for (e, f) in &s.retained {
            println!(
                "  retained: size={} mtime={} blake3={} writer={} file={f}",
                e.size,
                fmt_time(e.mtime_ns),
                e.hash_hex(),
                e.origin
            );
        }
    }
}

fn fmt_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    format!("{secs}.{nanos:09}")
}

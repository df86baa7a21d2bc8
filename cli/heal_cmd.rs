//! `gsync volume heal VOL …`: trigger heals, the GlusterFS-shaped heal
//! reports, and split-brain resolution.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use gsync_brick::control::{
    CtlRequest, HealBrickReport, MountInfo, MountRejection, NodeInfo, PeerInfo,
};
use gsync_brick::crawl::FULL_HEAL_ATTEMPTS;
use gsync_brick::heal_types::{BrickHealInfo, FullHealPhase, SplitBrainVersions};

use crate::{ctl, print_json, timefmt, Outcome};

const USAGE: &str = "usage: volume heal VOL [full | info [summary|split-brain] | statistics | history | split-brain (bigger-file FILE | latest-mtime FILE | source-brick HOST:/PATH [FILE] | show FILE)]";

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
            let mut reports = match ctl::call::<Vec<HealBrickReport>>(
                state,
                &CtlRequest::HealInfo { name: name.into() },
            )
            .await?
            {
                Ok(r) => r,
                Err(e) => return Ok(Outcome::Failed(format!("volume heal: {name}: failed: {e}"))),
            };
            add_rejected(state, name, &mut reports).await;
            if json {
                print_json(&reports)?;
                return Ok(Outcome::Done);
            }
            match w.as_slice() {
                ["info"] => {
                    print_info(&reports);
                    print_rejected(&reports);
                }
                ["info", "summary"] => print_summary(&reports),
                ["info", "split-brain"] => print_split_brain(&reports),
                _ => print_statistics(&reports),
            }
            Ok(Outcome::Done)
        }
        ["history"] => crate::history_cmd::run(name, state, json).await,
        ["split-brain", "show", file] => {
            let req = CtlRequest::SplitBrainShow {
                name: name.into(),
                path: strip(file),
            };
            match ctl::call::<Vec<(String, SplitBrainVersions)>>(state, &req).await? {
                Ok(v) if json => print_json(&v)?,
                Ok(v) => {
                    let names = node_names(state).await;
                    let mounts = local_mounts(state, name).await;
                    print_show(file, &v, &names, &mounts);
                }
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

/// Node names by uuid, to print writers as names.
async fn node_names(state: &Path) -> HashMap<String, String> {
    match ctl::call::<Vec<PeerInfo>>(state, &CtlRequest::PeerStatus).await {
        Ok(Ok(peers)) => peers.into_iter().map(|p| (p.uuid, p.hostname)).collect(),
        _ => HashMap::new(),
    }
}

/// Local folders mounted from volume `vol` (where a version may be read).
/// Adds to the reports the changes that the validators of this node's
/// mounts of `vol` rejected (they are on the bricks, not live in those
/// folders), each to the report of the brick its mount follows (the first
/// brick's while it follows none).
async fn add_rejected(state: &Path, vol: &str, reports: &mut [HealBrickReport]) {
    let Ok(Ok(mounts)) = ctl::call::<Vec<MountInfo>>(state, &CtlRequest::MountList).await else {
        return;
    };
    let mut node = None;
    for m in mounts
        .into_iter()
        .filter(|m| m.source.rsplit_once(":/").is_some_and(|(_, v)| v == vol))
    {
        let Some(why) = m.rejected else { continue };
        if node.is_none() {
            node = Some(
                match ctl::call::<NodeInfo>(state, &CtlRequest::Ping).await {
                    Ok(Ok(i)) => i.hostname,
                    _ => "this node".to_string(),
                },
            );
        }
        let at = reports
            .iter()
            .position(|r| m.brick.as_deref() == Some(r.brick.as_str()))
            .unwrap_or(0);
        if let Some(r) = reports.get_mut(at) {
            r.rejected.push(MountRejection {
                node: node.clone().unwrap_or_default(),
                dir: m.dir,
                why,
                paths: m.rejected_paths,
            });
        }
    }
}

/// After the bricks: the rejected changes of this node's mounts.
fn print_rejected(reports: &[HealBrickReport]) {
    for m in reports.iter().flat_map(|r| &r.rejected) {
        println!();
        println!(
            "Rejected by the validator of {} (this node): {}",
            m.dir, m.why
        );
        for p in &m.paths {
            println!("/{p}");
        }
        println!("Number of entries rejected: {}", m.paths.len());
    }
}

async fn local_mounts(state: &Path, vol: &str) -> Vec<PathBuf> {
    match ctl::call::<Vec<MountInfo>>(state, &CtlRequest::MountList).await {
        Ok(Ok(m)) => m
            .into_iter()
            .filter(|m| m.source.rsplit_once(":/").is_some_and(|(_, v)| v == vol))
            .map(|m| PathBuf::from(m.dir))
            .collect(),
        _ => Vec::new(),
    }
}

/// Largest file read to show a diff.
const DIFF_MAX: u64 = 1 << 20;

/// The content of each version that this node can read, by blake3: the
/// brick directories and mounts on this machine, and retained files, each
/// checked against the version's hash (so a file changed since is never
/// shown as the version).
fn readable_versions(
    rel: &str,
    v: &[(String, SplitBrainVersions)],
    mounts: &[PathBuf],
) -> HashMap<String, String> {
    let mut candidates: Vec<PathBuf> = mounts.iter().map(|m| m.join(rel)).collect();
    for (brick, s) in v {
        let Some((_, root)) = brick.split_once(':') else {
            continue;
        };
        let root = Path::new(root);
        candidates.push(root.join(rel));
        for (_, f) in &s.retained {
            candidates.push(gsync_brick::store::files::retained_dir(root).join(f));
        }
    }
    let mut out = HashMap::new();
    for p in candidates {
        let small = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file() && m.len() <= DIFF_MAX);
        if !small {
            continue;
        }
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        let hash = blake3::hash(&bytes).to_hex().to_string();
        if let Ok(text) = String::from_utf8(bytes) {
            if !text.contains('\0') {
                out.entry(hash).or_insert(text);
            }
        }
    }
    out
}

fn print_show(
    file: &str,
    v: &[(String, SplitBrainVersions)],
    names: &HashMap<String, String>,
    mounts: &[PathBuf],
) {
    let rel = strip(file);
    let writer = |u: &uuid::Uuid| {
        let u = u.to_string();
        names.get(&u).cloned().unwrap_or(u)
    };
    println!("Split-brain versions of /{rel}");
    // Distinct versions in order of appearance, for the diff.
    let mut order: Vec<(String, String)> = Vec::new();
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
                timefmt::local_ns(e.mtime_ns),
                e.hash_hex(),
                writer(&e.origin),
                e.vv
            );
            if e.kind.as_str() == "file" && !order.iter().any(|(h, _)| *h == e.hash_hex()) {
                order.push((
                    e.hash_hex(),
                    format!("{brick} ({role}, by {})", writer(&e.origin)),
                ));
            }
        }
        for (e, f) in &s.retained {
            println!(
                "  retained: size={} mtime={} blake3={} writer={} file={f}",
                e.size,
                timefmt::local_ns(e.mtime_ns),
                e.hash_hex(),
                writer(&e.origin)
            );
        }
    }
    if order.len() < 2 {
        return;
    }
    let texts = readable_versions(&rel, v, mounts);
    let (base_hash, base_label) = &order[0];
    for (hash, label) in &order[1..] {
        println!();
        match (texts.get(base_hash), texts.get(hash)) {
            (Some(a), Some(b)) => {
                let diff = similar::TextDiff::from_lines(a.as_str(), b.as_str());
                print!(
                    "{}",
                    diff.unified_diff()
                        .context_radius(3)
                        .header(&format!("/{rel} {base_label}"), &format!("/{rel} {label}"))
                );
            }
            _ => println!(
                "No diff of {base_label} and {label}: a version is binary, larger than 1 MiB or not on this machine."
            ),
        }
    }
}

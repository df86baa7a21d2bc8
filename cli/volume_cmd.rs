//! `gsync volume …`: definitions, status and options.

use std::path::Path;

use anyhow::Result;
use gsync_brick::control::{CtlRequest, VolumeStatusReport};
use gsync_brick::options::{self, OPTIONS};
use gsync_brick::pool::Volume;

use crate::args::VolumeCmd;
use crate::{ctl, print_json, Outcome};

/// Parses `[replica N] [transport T] BRICK... [force]`.
fn parse_create(name: &str, rest: &[String]) -> Result<(u32, Vec<String>, bool), String> {
    let mut replica = 0u32;
    let mut bricks = Vec::new();
    let mut force = false;
    let mut i = 0;
    while i < rest.len() {
        match rest[i].as_str() {
            "replica" => {
                let n = rest.get(i + 1).and_then(|n| n.parse::<u32>().ok());
                match n {
                    Some(n) => replica = n,
                    None => return Err(format!("volume create: {name}: failed: replica needs a number")),
                }
                i += 2;
            }
            "transport" => {
                match rest.get(i + 1).map(String::as_str) {
                    Some("quic") => {}
                    Some(t) => {
                        return Err(format!(
                            "volume create: {name}: failed: transport {t} is not supported: gsync uses QUIC (transport quic)"
                        ))
                    }
                    None => return Err(format!("volume create: {name}: failed: transport needs a value (quic)")),
                }
                i += 2;
            }
            "force" if i == rest.len() - 1 => {
                force = true;
                i += 1;
            }
            b if b.contains(":/") => {
                bricks.push(b.to_string());
                i += 1;
            }
            other => {
                return Err(format!(
                    "volume create: {name}: failed: unexpected word {other:?}; expected [replica N] [transport quic] HOST:/PATH... [force]"
                ))
            }
        }
    }
    if bricks.is_empty() {
        return Err(format!(
            "volume create: {name}: failed: no bricks given (HOST:/PATH...)"
        ));
    }
    Ok((replica, bricks, force))
}

async fn simple(
    state: &Path,
    req: CtlRequest,
    json: bool,
    ok_line: String,
    fail_prefix: String,
) -> Result<Outcome> {
    match ctl::call_raw(state, &req).await? {
        Ok(_) => {
            if json {
                print_json(&serde_json::json!({"success": true}))?;
            } else {
                println!("{ok_line}");
            }
            Ok(Outcome::Done)
        }
        Err(e) => Ok(Outcome::Failed(format!("{fail_prefix}: failed: {e}"))),
    }
}

async fn volumes(state: &Path, name: Option<String>) -> Result<Result<Vec<Volume>, ctl::Refused>> {
    ctl::call::<Vec<Volume>>(state, &CtlRequest::VolumeInfo { name }).await
}

pub async fn run(cmd: VolumeCmd, state: &Path, json: bool) -> Result<Outcome> {
    match cmd {
        VolumeCmd::Create { name, rest } => {
            let (replica, bricks, force) = match parse_create(&name, &rest) {
                Ok(x) => x,
                Err(line) => return Ok(Outcome::Failed(line)),
            };
            let req = CtlRequest::VolumeCreate {
                name: name.clone(),
                replica,
                bricks,
                force,
            };
            simple(
                state,
                req,
                json,
                format!("volume create: {name}: success: please start the volume to access data"),
                format!("volume create: {name}"),
            )
            .await
        }
        VolumeCmd::Start { name, force } => {
            let req = CtlRequest::VolumeStart {
                name: name.clone(),
                force: force.is_some(),
            };
            simple(
                state,
                req,
                json,
                format!("volume start: {name}: success"),
                format!("volume start: {name}"),
            )
            .await
        }
        VolumeCmd::Stop { name, .. } => {
            let req = CtlRequest::VolumeStop { name: name.clone() };
            simple(
                state,
                req,
                json,
                format!("volume stop: {name}: success"),
                format!("volume stop: {name}"),
            )
            .await
        }
        VolumeCmd::Delete { name } => {
            let req = CtlRequest::VolumeDelete { name: name.clone() };
            simple(
                state,
                req,
                json,
                format!("volume delete: {name}: success"),
                format!("volume delete: {name}"),
            )
            .await
        }
        VolumeCmd::Info { name } => {
            let vols = match volumes(state, name).await? {
                Ok(v) => v,
                Err(e) => return Ok(Outcome::Failed(format!("volume info: failed: {e}"))),
            };
            if json {
                print_json(&vols)?;
            } else if vols.is_empty() {
                println!("No volumes present");
            } else {
                for v in &vols {
                    print_info(v);
                }
            }
            Ok(Outcome::Done)
        }
        VolumeCmd::List => {
            let vols = match volumes(state, None).await? {
                Ok(v) => v,
                Err(e) => return Ok(Outcome::Failed(format!("volume list: failed: {e}"))),
            };
            if json {
                print_json(&vols.iter().map(|v| &v.name).collect::<Vec<_>>())?;
            } else if vols.is_empty() {
                println!("No volumes present in cluster");
            } else {
                for v in vols {
                    println!("{}", v.name);
                }
            }
            Ok(Outcome::Done)
        }
        VolumeCmd::Status { words } => {
            let (name, detail) = match words.as_slice() {
                [] => (None, false),
                [d] if d == "detail" => (None, true),
                [n] => (Some(n.clone()), false),
                [n, d] if d == "detail" => (Some(n.clone()), true),
                _ => {
                    return Ok(Outcome::Failed(
                        "volume status: failed: usage: volume status [VOL] [detail]".into(),
                    ))
                }
            };
            let reports = match ctl::call::<Vec<VolumeStatusReport>>(
                state,
                &CtlRequest::VolumeStatus { name },
            )
            .await?
            {
                Ok(r) => r,
                Err(e) => return Ok(Outcome::Failed(format!("volume status: failed: {e}"))),
            };
            if json {
                print_json(&reports)?;
            } else if reports.is_empty() {
                println!("No volumes present");
            } else {
                for r in &reports {
                    if detail {
                        print_status_detail(r);
                    } else {
                        print_status(r);
                    }
                }
            }
            Ok(Outcome::Done)
        }
        VolumeCmd::Set { name, key, value } => {
            let req = CtlRequest::VolumeSet { name, key, value };
            simple(
                state,
                req,
                json,
                "volume set: success".into(),
                "volume set".into(),
            )
            .await
        }
        VolumeCmd::Reset { name, key } => {
            let req = CtlRequest::VolumeReset { name, key };
            simple(
                state,
                req,
                json,
                "volume reset: success: reset volume successful".into(),
                "volume reset".into(),
            )
            .await
        }
        VolumeCmd::Get { name, key } => {
            let vols = match volumes(state, Some(name.clone())).await? {
                Ok(v) => v,
                Err(e) => return Ok(Outcome::Failed(format!("volume get: failed: {e}"))),
            };
            let Some(v) = vols.into_iter().next() else {
                return Ok(Outcome::Failed(format!(
                    "volume get: failed: Volume {name} does not exist"
                )));
            };
            let keys: Vec<&str> = if key == "all" {
                OPTIONS.iter().map(|o| o.key).collect()
            } else if options::spec(&key).is_some() {
                vec![key.as_str()]
            } else {
                return Ok(Outcome::Failed(format!(
                    "volume get: failed: {}",
                    options::OptionError::UnknownKey { key: key.clone() }
                )));
            };
            let rows: Vec<(String, String, bool)> = keys
                .iter()
                .map(|k| {
                    let set = v.options.get(*k);
                    (k.to_string(), v.option(k).to_string(), set.is_none())
                })
                .collect();
            if json {
                let m: serde_json::Map<String, serde_json::Value> = rows
                    .iter()
                    .map(|(k, val, d)| (k.clone(), serde_json::json!({"value": val, "default": d})))
                    .collect();
                print_json(&m)?;
            } else {
                println!("{:<40} {:<40}", "Option", "Value");
                println!("{:<40} {:<40}", "------", "-----");
                for (k, val, d) in rows {
                    let shown = if d { format!("{val} (DEFAULT)") } else { val };
                    println!("{k:<40} {shown:<40}");
                }
            }
            Ok(Outcome::Done)
        }
        VolumeCmd::Heal { name, words } => crate::heal_cmd::run(&name, &words, state, json).await,
        VolumeCmd::Trash { name, words } => crate::trash_cmd::run(&name, &words, state, json).await,
        VolumeCmd::ReplaceBrick { name, words } => {
            let (req, line, prefix) = match parse_replace(&name, &words) {
                Ok(r) => (
                    r,
                    "volume replace-brick: success: replace-brick commit force operation successful",
                    "volume replace-brick",
                ),
                Err(e) => return Ok(Outcome::Failed(format!("volume replace-brick: failed: {e}"))),
            };
            changed(state, req, json, line, prefix).await
        }
        VolumeCmd::ResetBrick { name, words } => {
            let req = match parse_reset(&name, &words) {
                Ok(r) => r,
                Err(e) => return Ok(Outcome::Failed(format!("volume reset-brick: failed: {e}"))),
            };
            let line = match &req {
                CtlRequest::VolumeResetBrick { commit: true, .. } => {
                    "volume reset-brick: success: reset-brick commit force operation successful"
                }
                _ => "volume reset-brick: success: reset-brick start operation successful",
            };
            changed(state, req, json, line, "volume reset-brick").await
        }
        VolumeCmd::AddBrick { name, words } => {
            let req = match parse_add(&name, &words) {
                Ok(r) => r,
                Err(e) => return Ok(Outcome::Failed(format!("volume add-brick: failed: {e}"))),
            };
            changed(
                state,
                req,
                json,
                "volume add-brick: success",
                "volume add-brick",
            )
            .await
        }
        VolumeCmd::RemoveBrick { name, words } => {
            let prefix = "volume remove-brick commit force";
            let req = match parse_remove(&name, &words) {
                Ok(r) => r,
                Err(e) => return Ok(Outcome::Failed(format!("{prefix}: failed: {e}"))),
            };
            changed(state, req, json, &format!("{prefix}: success"), prefix).await
        }
    }
}

/// Runs a brick lifecycle request; `--json` prints `success` and what the
/// volume looks like now (`volume`, `replica`, `bricks`).
async fn changed(
    state: &Path,
    req: CtlRequest,
    json: bool,
    ok_line: &str,
    fail_prefix: &str,
) -> Result<Outcome> {
    match ctl::call_raw(state, &req).await? {
        Ok(data) => {
            if json {
                let mut out = serde_json::json!({"success": true});
                if let (Some(o), serde_json::Value::Object(d)) = (out.as_object_mut(), data) {
                    o.extend(d);
                }
                print_json(&out)?;
            } else {
                println!("{ok_line}");
            }
            Ok(Outcome::Done)
        }
        Err(e) => Ok(Outcome::Failed(format!("{fail_prefix}: failed: {e}"))),
    }
}

fn is_brick(w: &str) -> bool {
    w.contains(":/")
}

/// `OLD NEW commit force`.
fn parse_replace(name: &str, w: &[String]) -> Result<CtlRequest, String> {
    match w {
        [old, new, c, f] if is_brick(old) && is_brick(new) && c == "commit" && f == "force" => {
            Ok(CtlRequest::VolumeReplaceBrick {
                name: name.to_string(),
                old: old.clone(),
                new: new.clone(),
            })
        }
        [_, _, c] if c == "commit" => {
            Err("only 'commit force' is supported: replace-brick VOL OLD NEW commit force".into())
        }
        _ => {
            Err("usage: volume replace-brick VOL OLD-HOST:/PATH NEW-HOST:/PATH commit force".into())
        }
    }
}

/// `BRICK start` or `BRICK BRICK commit force`.
fn parse_reset(name: &str, w: &[String]) -> Result<CtlRequest, String> {
    match w {
        [b, s] if is_brick(b) && s == "start" => Ok(CtlRequest::VolumeResetBrick {
            name: name.to_string(),
            brick: b.clone(),
            commit: false,
        }),
        [a, b, c, f] if is_brick(a) && c == "commit" && f == "force" => {
            if a != b {
                return Err(format!(
                    "source brick {a} and destination brick {b} must be the same; use replace-brick to move a brick"
                ));
            }
            Ok(CtlRequest::VolumeResetBrick {
                name: name.to_string(),
                brick: a.clone(),
                commit: true,
            })
        }
        [_, _, c] if c == "commit" => {
            Err("only 'commit force' is supported: reset-brick VOL BRICK BRICK commit force".into())
        }
        _ => Err(
            "usage: volume reset-brick VOL HOST:/PATH start | volume reset-brick VOL HOST:/PATH HOST:/PATH commit force"
                .into(),
        ),
    }
}

/// `replica N BRICK... [force]` (`force_required`: the trailing `force`
/// must be there).
fn parse_count_bricks(
    w: &[String],
    force_required: bool,
    usage: &str,
) -> Result<(u32, Vec<String>, bool), String> {
    let (replica, rest) = match w {
        [r, n, rest @ ..] if r == "replica" => match n.parse::<u32>() {
            Ok(n) => (n, rest),
            Err(_) => return Err(format!("replica needs a number; {usage}")),
        },
        _ => return Err(usage.to_string()),
    };
    let (bricks, force) = match rest {
        [b @ .., f] if f == "force" => (b, true),
        b => (b, false),
    };
    if force_required && !force {
        return Err(format!(
            "'force' is required: the removed bricks keep their data on disk but leave the volume; {usage}"
        ));
    }
    if bricks.is_empty() {
        return Err(format!("no bricks given; {usage}"));
    }
    if let Some(bad) = bricks.iter().find(|b| !is_brick(b)) {
        return Err(format!("unexpected word {bad:?}; {usage}"));
    }
    Ok((replica, bricks.to_vec(), force))
}

fn parse_add(name: &str, w: &[String]) -> Result<CtlRequest, String> {
    let (replica, bricks, force) = parse_count_bricks(
        w,
        false,
        "usage: volume add-brick VOL replica N HOST:/PATH... [force]",
    )?;
    Ok(CtlRequest::VolumeAddBrick {
        name: name.to_string(),
        replica,
        bricks,
        force,
    })
}

fn parse_remove(name: &str, w: &[String]) -> Result<CtlRequest, String> {
    let (replica, bricks, _) = parse_count_bricks(
        w,
        true,
        "usage: volume remove-brick VOL replica N HOST:/PATH... force",
    )?;
    Ok(CtlRequest::VolumeRemoveBrick {
        name: name.to_string(),
        replica,
        bricks,
    })
}

fn print_info(v: &Volume) {
    println!(" ");
    println!("Volume Name: {}", v.name);
    println!("Type: Replicate");
    println!("Volume ID: {}", v.id);
    println!("Status: {}", v.state.as_str());
    println!("Number of Bricks: 1 x {} = {}", v.replica, v.bricks.len());
    println!("Transport-type: quic");
    println!("Bricks:");
    for (i, b) in v.bricks.iter().enumerate() {
        println!("Brick{}: {}", i + 1, b.name());
    }
    println!("Options Reconfigured:");
    for (k, val) in &v.options {
        println!("{k}: {val}");
    }
    for o in &v.overridden {
        println!("Overridden change: {o}");
    }
}

fn print_status(r: &VolumeStatusReport) {
    let width = r
        .bricks
        .iter()
        .map(|b| b.brick.len() + 6)
        .chain(r.self_heal.iter().map(|s| s.host.len() + 23))
        .max()
        .unwrap_or(40)
        .max(40);
    println!("Status of volume: {}", r.volume);
    println!(
        "{:<width$}  {:<9} {:<10} {:<7} Pid",
        "Gsync process", "QUIC Port", "", "Online"
    );
    println!("{}", "-".repeat(width + 36));
    for b in &r.bricks {
        let port = b.port.map_or_else(|| "N/A".to_string(), |p| p.to_string());
        let pid = b.pid.map_or_else(|| "N/A".to_string(), |p| p.to_string());
        let online = if b.online { "Y" } else { "N" };
        println!(
            "{:<width$}  {port:<9} {:<10} {online:<7} {pid}",
            format!("Brick {}", b.brick),
            ""
        );
    }
    for s in &r.self_heal {
        let pid = s.pid.map_or_else(|| "N/A".to_string(), |p| p.to_string());
        let online = if s.online { "Y" } else { "N" };
        println!(
            "{:<width$}  {:<9} {:<10} {online:<7} {pid}",
            format!("Self-heal Daemon on {}", s.host),
            "N/A",
            ""
        );
    }
    for b in &r.bricks {
        if let Some(reason) = &b.reason {
            println!("Brick {} is offline: {reason}", b.brick);
        }
    }
    println!(" ");
    println!("Task Status of Volume {}", r.volume);
    println!("{}", "-".repeat(width + 36));
    println!("There are no active volume tasks");
    println!(" ");
}

fn print_status_detail(r: &VolumeStatusReport) {
    println!("Status of volume: {}", r.volume);
    for b in &r.bricks {
        println!("{}", "-".repeat(78));
        let na = || "N/A".to_string();
        println!("{:<21}: Brick {}", "Brick", b.brick);
        println!(
            "{:<21}: {}",
            "QUIC Port",
            b.port.map_or_else(na, |p| p.to_string())
        );
        println!("{:<21}: {}", "Online", if b.online { "Y" } else { "N" });
        if let Some(reason) = &b.reason {
            println!("{:<21}: {reason}", "Offline Reason");
        }
        println!(
            "{:<21}: {}",
            "Pid",
            b.pid.map_or_else(na, |p| p.to_string())
        );
        match &b.disk {
            Some(d) => {
                println!("{:<21}: {}", "File System", d.filesystem);
                println!("{:<21}: {}", "Device", d.device);
                println!("{:<21}: {}", "Mount Options", d.mount_options);
                println!("{:<21}: {}", "Block Size", d.block_size);
                println!("{:<21}: {}", "Disk Space Free", human_bytes(d.free_bytes));
                println!("{:<21}: {}", "Total Disk Space", human_bytes(d.total_bytes));
                println!("{:<21}: {}", "Inode Count", d.inodes_total);
                println!("{:<21}: {}", "Free Inodes", d.inodes_free);
            }
            None => println!("{:<21}: N/A (the brick's node did not answer)", "Disk"),
        }
        if let Some(d) = b.detail.as_ref().filter(|_| b.online) {
            println!("{:<21}: {}", "Entries", d.entries);
            println!("{:<21}: {}", "Change Sequence", d.seq);
            println!("{:<21}: {}", "Changes Applied", d.counters.changes_applied);
            println!("{:<21}: {}", "Bytes Received", d.counters.bytes_received);
            println!("{:<21}: {}", "Bytes Sent", d.counters.bytes_sent);
            println!("{:<21}: {}", "Chunks Reused", d.counters.chunks_reused);
            println!("{:<21}: {}", "Chunks Fetched", d.counters.chunks_fetched);
            println!("{:<21}: {}", "Heals Done", d.counters.heals);
            println!("{:<21}: {}", "Heal Bytes", d.counters.heal_bytes);
        }
    }
    println!(" ");
}

/// Bytes as GlusterFS prints disk space: 236.6GB.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["Bytes", "KB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}Bytes")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn create_syntax() {
        let (r, b, f) = parse_create("v", &w("replica 3 h1:/a h2:/b h3:/c force")).unwrap();
        assert_eq!((r, b.len(), f), (3, 3, true));
        assert!(parse_create("v", &w("replica 3 transport tcp h1:/a"))
            .unwrap_err()
            .contains("QUIC"));
        assert!(parse_create("v", &w("replica x h1:/a")).is_err());
        assert!(parse_create("v", &w("replica 2")).is_err());
        assert!(parse_create("v", &w("replica 2 transport quic h:/a h:/b")).is_ok());
    }

    #[test]
    fn lifecycle_syntax() {
        assert!(parse_replace("v", &w("h3:/b h4:/b commit force")).is_ok());
        assert!(parse_replace("v", &w("h3:/b h4:/b commit")).is_err());
        assert!(parse_replace("v", &w("h3:/b h4:/b start")).is_err());
        assert!(matches!(
            parse_reset("v", &w("h:/b start")),
            Ok(CtlRequest::VolumeResetBrick { commit: false, .. })
        ));
        assert!(matches!(
            parse_reset("v", &w("h:/b h:/b commit force")),
            Ok(CtlRequest::VolumeResetBrick { commit: true, .. })
        ));
        assert!(parse_reset("v", &w("h:/b h:/c commit force")).is_err());
        assert!(parse_reset("v", &w("h:/b")).is_err());
        assert!(matches!(
            parse_add("v", &w("replica 4 h:/d")),
            Ok(CtlRequest::VolumeAddBrick {
                replica: 4,
                force: false,
                ..
            })
        ));
        assert!(matches!(
            parse_add("v", &w("replica 4 h:/d force")),
            Ok(CtlRequest::VolumeAddBrick { force: true, .. })
        ));
        assert!(parse_add("v", &w("replica x h:/d")).is_err());
        assert!(parse_add("v", &w("h:/d")).is_err());
        assert!(parse_add("v", &w("replica 4")).is_err());
        assert!(parse_remove("v", &w("replica 3 h:/d force")).is_ok());
        assert!(parse_remove("v", &w("replica 3 h:/d"))
            .unwrap_err()
            .contains("force"));
        assert!(parse_remove("v", &w("replica 3 nonsense force")).is_err());
    }
}

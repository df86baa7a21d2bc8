//! `gsync volume trash VOL list|restore`: the versions bricks kept when a
//! file was deleted or overwritten, and bringing one back.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use gsync_brick::control::CtlRequest;
use gsync_brick::pool::Volume;
use gsync_brick::store::restore::Restored;
use gsync_brick::store::trash::{self, TrashItem};

use crate::{ctl, print_json, Outcome};

const USAGE: &str = "usage: volume trash VOL (list [PATH] | restore PATH [VERSION])";

pub async fn run(name: &str, words: &[String], state: &Path, json: bool) -> Result<Outcome> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["list"] | ["list", _] => {
            let req = CtlRequest::TrashList {
                name: name.into(),
                path: w.get(1).map(|p| p.trim_start_matches('/').to_string()),
            };
            let items = match ctl::call::<Vec<TrashItem>>(state, &req).await? {
                Ok(i) => i,
                Err(e) => {
                    return Ok(Outcome::Failed(format!(
                        "volume trash: {name}: failed: {e}"
                    )))
                }
            };
            if json {
                print_json(&items)?;
            } else {
                // Bricks by name (HOST:/PATH), as everywhere else.
                let req = CtlRequest::VolumeInfo {
                    name: Some(name.into()),
                };
                let names: HashMap<u64, String> =
                    match ctl::call::<Vec<Volume>>(state, &req).await? {
                        Ok(v) => v
                            .iter()
                            .flat_map(|v| v.bricks.iter().map(|b| (b.id, b.name())))
                            .collect(),
                        Err(_) => HashMap::new(),
                    };
                print_list(&items, &names);
            }
            Ok(Outcome::Done)
        }
        ["restore", path] | ["restore", path, _] => {
            let req = CtlRequest::TrashRestore {
                name: name.into(),
                path: path.trim_start_matches('/').to_string(),
                version: w.get(2).map(|v| v.to_string()),
            };
            let done = match ctl::call::<Vec<Restored>>(state, &req).await? {
                Ok(d) => d,
                Err(e) => {
                    return Ok(Outcome::Failed(format!(
                        "volume trash: {name}: failed: {e}"
                    )))
                }
            };
            if json {
                print_json(&done)?;
            } else {
                for r in &done {
                    println!("restored {} (version {}) as {}", r.path, r.version, r.vv);
                }
                println!("volume trash: success: {} file(s) restored", done.len());
            }
            Ok(Outcome::Done)
        }
        _ => Ok(Outcome::Failed(USAGE.into())),
    }
}

fn print_list(items: &[TrashItem], names: &HashMap<u64, String>) {
    if items.is_empty() {
        println!("Trash is empty");
        return;
    }
    println!(
        "{:<40} {:<12} {:>10} {:<20} {:<12} {:<16} BRICK",
        "PATH", "VERSION", "SIZE", "WHEN", "REASON", "BY"
    );
    for i in items {
        println!(
            "{:<40} {:<12} {:>10} {:<20} {:<12} {:<16} {}",
            i.path,
            i.version,
            i.size,
            trash::format_when(i.at),
            i.reason,
            i.by,
            names
                .get(&i.brick)
                .cloned()
                .unwrap_or_else(|| format!("{:016x}", i.brick))
        );
    }
}

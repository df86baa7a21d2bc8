//! `gsync accept-deletes DIR` and `gsync revert-deletes DIR`: the two ways
//! out of a hold by the mass-delete guard (`cluster.mass-delete-guard`).
//! The agent of the mount does the work; the CLI asks it and reports.

use std::path::Path;

use anyhow::Result;
use gsync_brick::control::CtlRequest;
use gsync_client::DeletesOutcome;

use crate::{ctl, print_json, Outcome};

/// Which way out.
#[derive(Debug, Clone, Copy)]
pub enum Way {
    /// Push the held deletions.
    Accept,
    /// Put the held files back from the volume.
    Revert,
}

pub async fn run(way: Way, dir: &Path, state: &Path, json: bool) -> Result<Outcome> {
    let (name, make): (&str, fn(String) -> CtlRequest) = match way {
        Way::Accept => ("accept-deletes", |dir| CtlRequest::AcceptDeletes { dir }),
        Way::Revert => ("revert-deletes", |dir| CtlRequest::RevertDeletes { dir }),
    };
    let abs = match std::path::absolute(dir) {
        Ok(d) => d,
        Err(e) => return Ok(Outcome::Failed(format!("{name}: {}: {e}", dir.display()))),
    };
    let req = make(abs.to_string_lossy().into_owned());
    let out = match ctl::call::<DeletesOutcome>(state, &req).await? {
        Ok(o) => o,
        Err(e) => return Ok(Outcome::Failed(format!("{name}: failed: {e}"))),
    };
    if json {
        print_json(&out)?;
    } else {
        match way {
            Way::Accept => println!(
                "{name}: {}: {} held deletions are being pushed",
                out.dir, out.deletions
            ),
            Way::Revert => println!(
                "{name}: {}: {} files put back from the volume",
                out.dir, out.deletions
            ),
        }
    }
    if !out.failed.is_empty() {
        let first = out.failed.first().cloned().unwrap_or_default();
        return Ok(Outcome::Failed(format!(
            "{name}: {}: {} paths could not be put back and stay held (first: {first})",
            out.dir,
            out.failed.len()
        )));
    }
    Ok(Outcome::Done)
}

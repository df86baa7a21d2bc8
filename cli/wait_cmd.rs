//! `gsync wait DIR [--replicas K] [--timeout DURATION]`: repeats the
//! daemon's exact check (see the client crate's `wait` module) until every
//! change made in DIR is stored on K bricks, or the timeout passes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use gsync_brick::control::CtlRequest;
use gsync_client::wait::WaitReport;

use crate::args::WaitArgs;
use crate::{ctl, print_json, Outcome};

/// Pause between two checks.
const POLL: Duration = Duration::from_millis(200);

pub async fn run(a: WaitArgs, state: &Path, json: bool) -> Result<Outcome> {
    let Some(secs) = gsync_brick::options::parse_duration_secs(&a.timeout) else {
        return Ok(Outcome::Failed(format!(
            "gsync wait: --timeout {}: expected a duration such as 30s, 5m or 1h30m",
            a.timeout
        )));
    };
    let dir = match std::path::absolute(&a.dir) {
        Ok(d) => d,
        Err(e) => {
            return Ok(Outcome::Failed(format!(
                "gsync wait: {}: {e}",
                a.dir.display()
            )))
        }
    };
    let req = CtlRequest::WaitCheck {
        dir: dir.to_string_lossy().into_owned(),
        replicas: a.replicas,
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = match ctl::call::<WaitReport>(state, &req).await? {
            Ok(r) => r,
            Err(e) => return Ok(Outcome::Failed(format!("gsync wait: {e}"))),
        };
        if r.done {
            if json {
                print_json(&r)?;
            }
            return Ok(Outcome::Done);
        }
        // Held deletions go out only when an operator says so: fail now
        // and say why, instead of waiting out the timeout.
        if r.held > 0 {
            if json {
                print_json(&r)?;
            }
            return Ok(Outcome::Failed(format!("gsync wait: {}", r.missing)));
        }
        if Instant::now() >= deadline {
            if json {
                print_json(&r)?;
            }
            return Ok(Outcome::Failed(format!(
                "gsync wait: timed out after {}: {} of {} required bricks hold every change; {}",
                a.timeout, r.bricks_ok, r.replicas, r.missing
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

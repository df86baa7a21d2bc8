//! `gsync events [--since SEQ] [--follow]`: the node's event log (peer
//! up/down, volume changes, heals, split-brains, policy decisions) as text
//! lines or JSON, optionally followed as it grows.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use gsync_brick::control::CtlRequest;
use gsync_brick::events::Event;

use crate::args::EventsArgs;
use crate::{ctl, timefmt, Outcome};

/// How often `--follow` asks for new events.
const POLL: Duration = Duration::from_millis(300);

pub async fn run(a: EventsArgs, state: &Path, json: bool) -> Result<Outcome> {
    let mut since = a.since;
    loop {
        let events = match ctl::call::<Vec<Event>>(state, &CtlRequest::Events { since }).await? {
            Ok(e) => e,
            Err(e) => return Ok(Outcome::Failed(format!("events: failed: {e}"))),
        };
        if let Some(last) = events.last() {
            since = Some(last.seq);
        }
        if json && !a.follow {
            crate::print_json(&events)?;
        } else {
            for e in &events {
                if json {
                    // One object a line while following (JSON Lines).
                    let mut v = serde_json::to_value(e)?;
                    crate::json_ids::stringify_ids(&mut v);
                    println!("{v}");
                } else {
                    println!(
                        "{:>6}  {}  {:<22} {}",
                        e.seq,
                        timefmt::local_ms(e.at_ms),
                        e.kind,
                        e.message
                    );
                }
            }
        }
        if !a.follow {
            return Ok(Outcome::Done);
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(Outcome::Done),
        }
    }
}

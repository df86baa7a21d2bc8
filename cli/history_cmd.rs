//! `gsync volume heal VOL history`: each period when bricks of the volume
//! could not reach each other, what each side changed, and what became of
//! those changes (healed, still healing, resolved, still in split-brain).

use std::path::Path;

use anyhow::Result;
use gsync_brick::control::CtlRequest;
use gsync_brick::store::trash::format_when;
use gsync_heal::history::History;

use crate::{ctl, print_json, Outcome};

/// Paths listed per line of a period before "and N more".
const SHOWN: usize = 50;

pub async fn run(name: &str, state: &Path, json: bool) -> Result<Outcome> {
    let h =
        match ctl::call::<History>(state, &CtlRequest::HealHistory { name: name.into() }).await? {
            Ok(h) => h,
            Err(e) => return Ok(Outcome::Failed(format!("volume heal: {name}: failed: {e}"))),
        };
    if json {
        print_json(&h)?;
    } else {
        print!("{}", text(&h));
    }
    Ok(Outcome::Done)
}

fn list(paths: &[String], more: u64) -> String {
    let mut s: Vec<String> = paths.iter().take(SHOWN).map(|p| format!("/{p}")).collect();
    let rest = (paths.len().saturating_sub(SHOWN)) as u64 + more;
    if rest > 0 {
        s.push(format!("and {rest} more"));
    }
    if s.is_empty() {
        "-".into()
    } else {
        s.join(", ")
    }
}

fn text(h: &History) -> String {
    let mut out = String::new();
    if h.periods.is_empty() {
        out.push_str(&format!("No outage recorded for volume {}\n", h.volume));
    }
    for (i, p) in h.periods.iter().enumerate() {
        let end = match p.end {
            Some(e) => format!("{} ({} s)", format_when(e), e.saturating_sub(p.start)),
            None => "ongoing".into(),
        };
        out.push_str(&format!(
            "Outage {}: {} - {end}\n",
            i + 1,
            format_when(p.start)
        ));
        for s in &p.sides {
            let n = s.changed.len() as u64 + s.more;
            out.push_str(&format!(
                "  Side {}: {n} changed: {}\n",
                s.bricks.join(", "),
                list(&s.changed, s.more)
            ));
        }
        out.push_str(&format!("  Healed: {}\n", list(&p.healed, 0)));
        if !p.healing.is_empty() {
            out.push_str(&format!("  Still healing: {}\n", list(&p.healing, 0)));
        }
        for r in &p.resolved {
            out.push_str(&format!(
                "  Resolved /{} by {} at {}: kept {}, in the trash: {}\n",
                r.path,
                r.how,
                format_when(r.at),
                r.winner,
                if r.losers.is_empty() {
                    "-".to_string()
                } else {
                    r.losers.join(", ")
                }
            ));
        }
        out.push_str(&format!(
            "  Still in split-brain: {}\n",
            list(&p.split_brain, 0)
        ));
        out.push('\n');
    }
    for b in &h.unreachable {
        out.push_str(&format!(
            "Brick {b}: not reachable, its records are missing\n"
        ));
    }
    out
}

//! The node's event log: what happened, in order, for `gsync events`.
//!
//! Operators and scripts want a stream of facts (a peer went down, a heal
//! started and finished, a split-brain appeared and was resolved, a policy
//! decided something) without scraping logs, as GlusterFS's events API and
//! Syncthing's `/rest/events` give. Each event has a sequence number that
//! only grows (also across restarts), so a reader asks for what came after
//! the last one it saw.
//!
//! The log is bounded: the newest [`KEEP`] events are kept in memory and in
//! `<state>/events.jsonl` (one JSON object a line, appended; rewritten to
//! the newest [`KEEP`] when it grows past twice that).
//!
//! Anything in the daemon records an event with [`EventLog::emit`]; the
//! kinds in use are listed in docs/OPERATIONS.md.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Events kept (in memory and on disk).
pub const KEEP: usize = 10_000;

/// File name in the state directory.
pub const FILE_NAME: &str = "events.jsonl";

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number: 1, 2, 3... for the life of the state directory.
    pub seq: u64,
    /// When, in milliseconds since the epoch.
    pub at_ms: u64,
    /// What kind: `peer-down`, `heal-done`... (see docs/OPERATIONS.md).
    pub kind: String,
    /// One line for a person.
    pub message: String,
    /// Details for scripts (an object; keys depend on the kind).
    #[serde(default)]
    pub data: serde_json::Value,
}

struct Inner {
    recent: VecDeque<Event>,
    next: u64,
    file: Option<File>,
    lines_in_file: usize,
}

/// The bounded, persisted event log of a node.
pub struct EventLog {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.path)
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl EventLog {
    /// Opens the log of `state_dir`, continuing its sequence. An unreadable
    /// line (a torn last write after a crash) is skipped.
    pub fn open(state_dir: &Path) -> Self {
        let path = state_dir.join(FILE_NAME);
        let mut recent = VecDeque::new();
        let mut lines = 0;
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                lines += 1;
                if let Ok(e) = serde_json::from_str::<Event>(&line) {
                    recent.push_back(e);
                    if recent.len() > KEEP {
                        recent.pop_front();
                    }
                }
            }
        }
        let next = recent.back().map_or(1, |e| e.seq + 1);
        let file = OpenOptions::new().create(true).append(true).open(&path);
        if let Err(e) = &file {
            tracing::warn!(
                "event log {}: {e}; events are kept in memory only",
                path.display()
            );
        }
        Self {
            path: Some(path),
            inner: Mutex::new(Inner {
                recent,
                next,
                file: file.ok(),
                lines_in_file: lines,
            }),
        }
    }

    /// A log that is not persisted (tests).
    pub fn in_memory() -> Self {
        Self {
            path: None,
            inner: Mutex::new(Inner {
                recent: VecDeque::new(),
                next: 1,
                file: None,
                lines_in_file: 0,
            }),
        }
    }

    /// Records an event of `kind` with a human `message` and `data` for
    /// scripts (an object, or null). Returns its sequence number.
    pub fn emit(&self, kind: &str, message: impl Into<String>, data: serde_json::Value) -> u64 {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let e = Event {
            seq: g.next,
            at_ms: now_ms(),
            kind: kind.to_string(),
            message: message.into(),
            data,
        };
        g.next += 1;
        tracing::info!(seq = e.seq, kind = %e.kind, "event: {}", e.message);
        if let Ok(line) = serde_json::to_string(&e) {
            if let Some(f) = g.file.as_mut() {
                if let Err(err) = writeln!(f, "{line}") {
                    tracing::warn!("event log: {err}");
                }
            }
            g.lines_in_file += 1;
        }
        g.recent.push_back(e);
        if g.recent.len() > KEEP {
            g.recent.pop_front();
        }
        if g.lines_in_file > 2 * KEEP {
            self.compact(&mut g);
        }
        g.next - 1
    }

    /// Rewrites the file with the events kept in memory (temp + rename).
    fn compact(&self, g: &mut Inner) {
        let Some(path) = &self.path else { return };
        let tmp = path.with_extension("jsonl.tmp");
        let written = (|| -> std::io::Result<File> {
            let mut f = File::create(&tmp)?;
            for e in &g.recent {
                writeln!(f, "{}", serde_json::to_string(e).unwrap_or_default())?;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            OpenOptions::new().append(true).open(path)
        })();
        match written {
            Ok(f) => {
                g.file = Some(f);
                g.lines_in_file = g.recent.len();
            }
            Err(e) => tracing::warn!("event log compaction: {e}"),
        }
    }

    /// The events with a sequence number above `since` (all when `None`),
    /// oldest first, at most `limit`.
    pub fn since(&self, since: Option<u64>, limit: usize) -> Vec<Event> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.recent
            .iter()
            .filter(|e| since.is_none_or(|s| e.seq > s))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The sequence number of the newest event (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next
            .saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sequence_survives_a_restart_and_since_filters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path());
        assert_eq!(log.emit("peer-down", "a", json!({"peer": "x"})), 1);
        assert_eq!(log.emit("peer-up", "b", serde_json::Value::Null), 2);
        drop(log);
        // A torn last line is skipped.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .expect("open");
        f.write_all(b"{\"seq\":3,\"at").expect("write");
        drop(f);
        let log = EventLog::open(dir.path());
        assert_eq!(log.last_seq(), 2);
        assert_eq!(log.emit("heal-done", "c", json!({})), 3);
        let kinds = |s: Option<u64>| -> Vec<String> {
            log.since(s, 100).into_iter().map(|e| e.kind).collect()
        };
        assert_eq!(kinds(None), ["peer-down", "peer-up", "heal-done"]);
        assert_eq!(kinds(Some(1)), ["peer-up", "heal-done"]);
        assert!(kinds(Some(3)).is_empty());
        assert_eq!(log.since(None, 1).len(), 1);
    }

    #[test]
    fn the_log_is_bounded_on_disk_and_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path());
        let n = 2 * KEEP + 10;
        for i in 0..n {
            log.emit("x", format!("{i}"), serde_json::Value::Null);
        }
        let kept = log.since(None, usize::MAX);
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept.last().map(|e| e.seq), Some(n as u64));
        let lines = std::fs::read_to_string(dir.path().join(FILE_NAME))
            .expect("file")
            .lines()
            .count();
        assert!(lines <= 2 * KEEP, "{lines} lines on disk");
        drop(log);
        assert_eq!(EventLog::open(dir.path()).last_seq(), n as u64);
    }
}

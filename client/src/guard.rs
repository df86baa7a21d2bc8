//! The mass-delete guard (`cluster.mass-delete-guard`): replication copies
//! a mistaken `rm -rf`, or a disk that failed to mount under the folder,
//! as faithfully as an edit. Before an agent pushes deletions it asks
//! [`decide`] whether they look like such a mistake; if so it holds them
//! (kept in its journal, so a restart does not release them) until
//! `gsync accept-deletes DIR` sends them or `gsync revert-deletes DIR`
//! brings the files back from the volume. Other edits keep flowing.
//!
//! The decision is pure (counts and the state of the mount root in, a
//! verdict out), so every rule has a row in the table test below.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Below this many files in a mount the guard never holds anything.
pub const MIN_FILES: u64 = 20;

/// Deletions pushed within this window count together: a share removed in
/// several bursts is judged as a whole.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The state of the mount's root directory compared with what the agent
/// knew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// There, on the device it was on, with something in it.
    Normal,
    /// Gone.
    Vanished,
    /// There, but with nothing in it.
    Empty,
    /// On another device (`st_dev`) than when the agent last synced it:
    /// typically a disk that is no longer mounted there.
    OtherDevice,
}

/// What the agent knows when it is about to push deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input {
    /// `cluster.mass-delete-guard`: the share in percent, `None` for off.
    pub share: Option<u8>,
    /// Files the mount held before the deletions of the window.
    pub held_before: u64,
    /// Deletions pushed within the window.
    pub recent: u64,
    /// Deletions about to be pushed.
    pub pending: u64,
    /// The mount root.
    pub root: Root,
}

/// The guard's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Push the deletions.
    Push,
    /// Hold them, for this reason (logged and kept).
    Hold(String),
}

/// Whether deletions about to be pushed must be held.
pub fn decide(i: &Input) -> Verdict {
    let Some(share) = i.share else {
        return Verdict::Push;
    };
    if i.pending == 0 || i.held_before < MIN_FILES {
        return Verdict::Push;
    }
    match i.root {
        Root::Vanished => return Verdict::Hold("the mount folder vanished".into()),
        Root::Empty => return Verdict::Hold("the mount folder is empty".into()),
        Root::OtherDevice => {
            return Verdict::Hold(
                "the mount folder is on another device than before (a disk not mounted?)".into(),
            )
        }
        Root::Normal => {}
    }
    let gone = i.recent + i.pending;
    if gone * 100 > u64::from(share) * i.held_before {
        return Verdict::Hold(format!(
            "{gone} of {} files deleted within {} s, more than {share}% (cluster.mass-delete-guard)",
            i.held_before,
            WINDOW.as_secs()
        ));
    }
    Verdict::Push
}

/// Deletions pushed recently, for the window of [`decide`].
#[derive(Debug, Default)]
pub struct Recent {
    pushed: VecDeque<(Instant, u64)>,
}

impl Recent {
    /// Deletions pushed within [`WINDOW`] of `now`.
    pub fn count(&mut self, now: Instant) -> u64 {
        while self
            .pushed
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
        {
            self.pushed.pop_front();
        }
        self.pushed.iter().map(|(_, n)| n).sum()
    }

    /// Notes `n` deletions pushed at `now`.
    pub fn add(&mut self, now: Instant, n: u64) {
        if n > 0 {
            self.pushed.push_back((now, n));
        }
    }

    /// Forgets the window (after the user accepted deletions).
    pub fn clear(&mut self) {
        self.pushed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(held_before: u64, recent: u64, pending: u64) -> Input {
        Input {
            share: Some(50),
            held_before,
            recent,
            pending,
            root: Root::Normal,
        }
    }

    #[test]
    fn decisions() {
        let hold = |s: &str| Some(s.to_string());
        let table: Vec<(Input, Option<String>)> = vec![
            // rm -rf of 300 of 301 files.
            (
                input(301, 0, 300),
                hold("300 of 301 files deleted within 10 s, more than 50% (cluster.mass-delete-guard)"),
            ),
            // Half exactly is not more than half.
            (input(100, 0, 50), None),
            (
                input(100, 0, 51),
                hold("51 of 100 files deleted within 10 s, more than 50% (cluster.mass-delete-guard)"),
            ),
            // Bursts within the window add up.
            (
                input(100, 40, 20),
                hold("60 of 100 files deleted within 10 s, more than 50% (cluster.mass-delete-guard)"),
            ),
            (input(100, 40, 10), None),
            // Never for fewer than 20 files.
            (input(19, 0, 19), None),
            (
                input(20, 0, 20),
                hold("20 of 20 files deleted within 10 s, more than 50% (cluster.mass-delete-guard)"),
            ),
            // Nothing to delete, nothing to hold.
            (input(1000, 900, 0), None),
            // Off disables every rule.
            (
                Input {
                    share: None,
                    ..input(301, 0, 300)
                },
                None,
            ),
            (
                Input {
                    share: None,
                    root: Root::Empty,
                    ..input(301, 0, 300)
                },
                None,
            ),
            // Another share.
            (
                Input {
                    share: Some(10),
                    ..input(100, 0, 11)
                },
                hold("11 of 100 files deleted within 10 s, more than 10% (cluster.mass-delete-guard)"),
            ),
            (
                Input {
                    share: Some(100),
                    ..input(100, 0, 100)
                },
                None,
            ),
            // The root itself: held whatever the share.
            (
                Input {
                    share: Some(100),
                    root: Root::Empty,
                    ..input(100, 0, 100)
                },
                hold("the mount folder is empty"),
            ),
            (
                Input {
                    root: Root::Vanished,
                    ..input(100, 0, 1)
                },
                hold("the mount folder vanished"),
            ),
            (
                Input {
                    root: Root::OtherDevice,
                    ..input(100, 0, 3)
                },
                hold("the mount folder is on another device than before (a disk not mounted?)"),
            ),
            // ...but still never under 20 files.
            (
                Input {
                    root: Root::Empty,
                    ..input(5, 0, 5)
                },
                None,
            ),
        ];
        for (i, want) in table {
            let got = match decide(&i) {
                Verdict::Push => None,
                Verdict::Hold(why) => Some(why),
            };
            assert_eq!(got, want, "{i:?}");
        }
    }

    #[test]
    fn window_forgets_old_bursts() {
        let mut r = Recent::default();
        let t0 = Instant::now();
        r.add(t0, 30);
        r.add(t0 + Duration::from_secs(5), 10);
        r.add(t0, 0);
        assert_eq!(r.count(t0 + Duration::from_secs(6)), 40);
        assert_eq!(r.count(t0 + Duration::from_secs(11)), 10);
        assert_eq!(r.count(t0 + Duration::from_secs(16)), 0);
        r.add(t0 + Duration::from_secs(16), 4);
        r.clear();
        assert_eq!(r.count(t0 + Duration::from_secs(16)), 0);
    }
}

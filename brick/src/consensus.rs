//! The pool document as a replicated state machine: what a committed
//! configuration change does, decided the same way on every member.
//!
//! Membership and volume configuration are changed only through the
//! consensus log (`node::raft`): a change is committed by a majority of the
//! pool or refused, never merged or dropped later. Each change is made
//! against the document its proposer read ("this change, based on version
//! N"); if another change was committed first, it is refused as stale
//! instead of overwriting it.
//!
//! Everything here is pure: commands in, outcomes out.

use serde::{Deserialize, Serialize};

use crate::pool::PoolConfig;

/// A command in the consensus log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The first document of a log: the document the leader held when the
    /// log started (a new pool of one, or a pool upgraded from a version
    /// without consensus). Ignored once a document was seeded.
    Seed(Box<PoolConfig>),
    /// Replace the document by `doc`, made from the document of version
    /// `base`. Refused as stale if the document is no longer `base`.
    Change {
        /// Version of the document the change was made from.
        base: u64,
        /// The new document.
        doc: Box<PoolConfig>,
    },
}

/// What applying a command did (returned to the proposer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The document is now the command's.
    Applied,
    /// Another change was committed first: the document is at `now`.
    Stale {
        /// Current document version.
        now: u64,
    },
    /// A seed after the first: nothing changed.
    Ignored,
}

/// The state machine: the committed pool document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// False until the log's first `Seed` is applied. Until then `doc` is
    /// the document this node held before it joined the log (shown, never
    /// built on by a committed change).
    pub seeded: bool,
    /// The document.
    pub doc: PoolConfig,
}

impl Machine {
    /// Applies one committed command.
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        match cmd {
            Command::Seed(doc) => {
                if self.seeded {
                    return Outcome::Ignored;
                }
                self.seeded = true;
                self.doc = (**doc).clone();
                Outcome::Applied
            }
            Command::Change { base, doc } => {
                if !self.seeded || self.doc.version != *base || doc.version <= *base {
                    return Outcome::Stale {
                        now: self.doc.version,
                    };
                }
                self.doc = (**doc).clone();
                Outcome::Applied
            }
        }
    }
}

/// How many of `voters` make a majority.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The line a change fails with when no majority can be reached.
pub fn no_majority(reachable: usize, voters: usize) -> String {
    format!("no majority of the pool is reachable ({reachable} of {voters})")
}

/// The line a change fails with when another change was committed first.
pub fn stale(base: u64, now: u64) -> String {
    format!(
        "the pool configuration changed meanwhile (version {base} became {now}); nothing was changed: run the command again"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::member;

    fn doc(version: u64) -> PoolConfig {
        let mut d = PoolConfig::solo(member(1));
        d.version = version;
        d
    }

    fn change(base: u64) -> Command {
        Command::Change {
            base,
            doc: Box::new(doc(base + 1)),
        }
    }

    #[test]
    fn commands_apply_in_order_and_stale_ones_are_refused() {
        let mut m = Machine {
            seeded: false,
            doc: doc(7),
        };
        // Nothing builds on a document that was not seeded by the log.
        assert_eq!(m.apply(&change(7)), Outcome::Stale { now: 7 });
        assert_eq!(m.apply(&Command::Seed(Box::new(doc(3)))), Outcome::Applied);
        assert_eq!(m.doc.version, 3);
        // Only the first seed counts.
        assert_eq!(m.apply(&Command::Seed(Box::new(doc(9)))), Outcome::Ignored);
        assert_eq!(m.doc.version, 3);
        // Two changes made from the same document: the first wins, the
        // second is refused, never merged.
        assert_eq!(m.apply(&change(3)), Outcome::Applied);
        assert_eq!(m.apply(&change(3)), Outcome::Stale { now: 4 });
        assert_eq!(m.doc.version, 4);
        // A change that does not move the version forward is refused.
        let same = Command::Change {
            base: 4,
            doc: Box::new(doc(4)),
        };
        assert_eq!(m.apply(&same), Outcome::Stale { now: 4 });
    }

    #[test]
    fn majorities_and_lines() {
        for (voters, need) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)] {
            assert_eq!(majority(voters), need, "{voters}");
        }
        assert_eq!(
            no_majority(2, 5),
            "no majority of the pool is reachable (2 of 5)"
        );
        assert!(stale(4, 5).contains("version 4 became 5"));
    }
}

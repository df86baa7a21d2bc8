//! gsync-heal: the self-heal service of a node.
//!
//! Layout:
//! - `report`: gathers heal data from every brick of a volume for
//!   `heal info`, `info summary`, `info split-brain` and `statistics`,
//!   reporting unreachable bricks instead of waiting for them.
//! - `splitbrain`: choosing a winner among competing versions (pure), and
//!   the manual resolution commands.
//! - `history`: the outage history of a volume, gathered from every brick
//!   and merged into periods with sides (the merge is pure).
//! - `service`: the control requests, and the background loop that keeps
//!   each brick's quorum state current and applies the
//!   `cluster.favorite-child-policy` and `cluster.conflict-retention`.
//!
//! The replay of pending entries itself (index heal) lives with the brick
//! (`gsync_brick::replicate`), because it is the same loop that carries live
//! changes.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod history;
mod report;
mod service;
pub mod splitbrain;

pub use service::HealService;

//! Multi-node integration tests: real `gsync daemon` processes on loopback,
//! driven through the real CLI.

mod support;

/// Pool membership, trust and volume definitions.
mod pool;

/// Brick replication: version vectors, chunks, durability, hostile peers.
mod replication;

/// Mounts: the sync agent as users meet it.
mod mounts;

/// Self-heal, split-brain reports and resolution, quorum.
mod heal;

/// Randomized fault campaign with invariant checks.
mod campaign;

/// Reliability: late addresses, SIGTERM, full disks.
mod reliability;

/// Crash points along the write path (needs `--features failpoints`).
mod crash;

/// Brick integrity: unserved wiped bricks, full-heal completion, auth.allow, limits, overlaps.
mod brick_integrity;

/// Brick lifecycle: replace, reset, add and remove bricks; detach and re-probe.
mod lifecycle;

/// Integrity through the lifecycle: attach, rebuild, symlinks, overlaps.
mod integrity;

/// Never losing a file to a mistake: trash and restore, wait, history, guard.
mod safety;

/// Changesets: all-or-nothing sets, validation before apply, one hook per set.
mod changesets;

/// Operations: pipes, usage errors, JSON ids, logs, service files, metrics, events, demo.
mod ops;

/// Model-based lifecycle campaign: file operations against a reference
/// model while mounts attach and remount, bricks are wiped and reset,
/// nodes are killed and partitioned.
mod lifecycle_campaign;

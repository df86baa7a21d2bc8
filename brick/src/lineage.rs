//! No pool change vanishes silently.
//!
//! The pool document is ordered by `(version, node)`: when two members
//! change it concurrently (on both sides of a partition), one of the two
//! documents wins and the other change is gone. Until the pool runs on
//! consensus, each document carries its lineage, the last few changes it
//! descends from with a line saying what each did. A member that adopts a
//! document whose lineage lacks one of its own changes (or that refuses an
//! older document carrying a change this one lacks) knows exactly which
//! change was lost: it is logged on the spot and recorded in the affected
//! volume's `overridden` list, which `volume info` shows on every member.
//!
//! Everything here is pure: documents in, descriptions out.

use crate::pool::{PoolConfig, Stamp, Volume, VolumeState};

/// Changes kept in a document's lineage.
pub const LINEAGE: usize = 64;
/// Overridden changes kept per volume (newest last).
pub const KEEP_OVERRIDDEN: usize = 10;

/// Appends the stamp of the change from `previous` to `new` to `new`'s
/// lineage. A change that only records overridden changes is not stamped:
/// losing it loses nothing the operator did.
pub fn stamp(previous: &PoolConfig, new: &mut PoolConfig) {
    let (what, volume) = describe(previous, new);
    let stamped = new
        .history
        .last()
        .is_some_and(|s| (s.version, s.by) == (new.version, new.changed_by));
    if what.is_empty() || stamped {
        return;
    }
    new.history.push(Stamp {
        version: new.version,
        by: new.changed_by,
        what,
        volume,
    });
    let extra = new.history.len().saturating_sub(LINEAGE);
    new.history.drain(..extra);
}

/// The changes in `loser`'s lineage that `winner` does not descend from.
/// Changes older than `winner`'s whole lineage are not judged (they may have
/// aged out of it).
pub fn lost<'a>(loser: &'a PoolConfig, winner: &PoolConfig) -> Vec<&'a Stamp> {
    let Some(oldest) = winner.history.first().map(|s| s.version) else {
        return Vec::new();
    };
    loser
        .history
        .iter()
        .filter(|s| s.version >= oldest)
        // The winner itself is that change (same document, maybe stamped
        // by another member).
        .filter(|s| (s.version, s.by) != (winner.version, winner.changed_by))
        .filter(|s| {
            !winner
                .history
                .iter()
                .any(|w| w.version == s.version && w.by == s.by)
        })
        .collect()
}

/// The line recorded for a lost change.
pub fn note(lost: &Stamp, by_host: &str, winner: &PoolConfig, winner_host: &str) -> String {
    let instead = winner
        .history
        .iter()
        .rev()
        .find(|s| s.version == lost.version)
        .or_else(|| winner.history.last())
        .map_or(String::new(), |s| format!(" ({})", s.what));
    format!(
        "'{}' made on {by_host} (pool version {}) was overridden by a concurrent change made on {winner_host}{instead}",
        lost.what, lost.version
    )
}

/// Records `line` in the overridden list of `volume` (no duplicates,
/// bounded). Returns whether the document changed.
pub fn record(doc: &mut PoolConfig, volume: &str, line: &str) -> bool {
    let Some(v) = doc.volume_mut(volume) else {
        return false;
    };
    if v.overridden.iter().any(|o| o == line) {
        return false;
    }
    v.overridden.push(line.to_string());
    let extra = v.overridden.len().saturating_sub(KEEP_OVERRIDDEN);
    v.overridden.drain(..extra);
    true
}

/// What changed from `old` to `new`, as CLI-shaped phrases joined by `; `,
/// and the first volume concerned. Empty when only bookkeeping changed.
pub fn describe(old: &PoolConfig, new: &PoolConfig) -> (String, Option<String>) {
    let mut parts = Vec::new();
    let mut volume = None;
    for m in &new.members {
        if old.member(m.uuid).is_none() {
            parts.push(format!("peer probe {}", m.hostname));
        }
    }
    for m in &old.members {
        if new.member(m.uuid).is_none() {
            parts.push(format!("peer detach {}", m.hostname));
        }
    }
    for v in &new.volumes {
        let before = old.volume(&v.name);
        let n = parts.len();
        match before {
            None => parts.push(format!("volume create {}", v.name)),
            Some(b) => describe_volume(b, v, &mut parts),
        }
        if parts.len() > n && volume.is_none() {
            volume = Some(v.name.clone());
        }
    }
    for v in &old.volumes {
        if new.volume(&v.name).is_none() {
            parts.push(format!("volume delete {}", v.name));
        }
    }
    (parts.join("; "), volume)
}

fn describe_volume(old: &Volume, new: &Volume, parts: &mut Vec<String>) {
    let name = &new.name;
    if old.state != new.state {
        let verb = match new.state {
            VolumeState::Started => "start",
            VolumeState::Stopped => "stop",
            VolumeState::Created => "create",
        };
        parts.push(format!("volume {verb} {name}"));
    }
    for (k, val) in &new.options {
        if old.options.get(k) != Some(val) {
            parts.push(format!("volume set {name} {k} {val}"));
        }
    }
    for k in old.options.keys() {
        if !new.options.contains_key(k) {
            parts.push(format!("volume reset {name} {k}"));
        }
    }
    // Bricks of `a` that `b` does not have at the same place.
    let moved = |a: &Volume, b: &Volume| -> Vec<String> {
        a.bricks
            .iter()
            .filter(|x| {
                b.brick(x.id)
                    .is_none_or(|y| y.path != x.path || y.node != x.node)
            })
            .map(|x| x.name())
            .collect()
    };
    let (added, removed) = (moved(new, old), moved(old, new));
    if !added.is_empty() || !removed.is_empty() {
        let mut s = format!("volume {name} bricks:");
        for a in &added {
            s.push_str(&format!(" +{a}"));
        }
        for r in &removed {
            s.push_str(&format!(" -{r}"));
        }
        parts.push(s);
    }
    for b in &new.bricks {
        if let Some(o) = old.brick(b.id) {
            if o.path == b.path
                && o.node == b.node
                && (o.out_of_service != b.out_of_service || o.incarnation != b.incarnation)
            {
                let step = if b.out_of_service { "start" } else { "commit" };
                parts.push(format!("volume reset-brick {name} {} {step}", b.name()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::member;
    use crate::pool::BrickDef;
    use uuid::Uuid;

    fn pool() -> PoolConfig {
        let mut p = PoolConfig::solo(member(1));
        p.members.push(member(2));
        p.volumes.push(Volume {
            name: "v".into(),
            id: Uuid::from_bytes([9; 16]),
            replica: 2,
            bricks: (1..=2)
                .map(|i| BrickDef {
                    id: i,
                    node: member(i as u8).uuid,
                    host: format!("127.0.0.{i}"),
                    path: "/b".into(),
                    incarnation: 0,
                    out_of_service: false,
                })
                .collect(),
            state: VolumeState::Started,
            options: Default::default(),
            overridden: Vec::new(),
        });
        p
    }

    /// `f` applied to a copy of `p`, committed by member `by`.
    fn change(p: &PoolConfig, by: u8, f: impl FnOnce(&mut PoolConfig)) -> PoolConfig {
        let mut n = p.next(member(by).uuid);
        f(&mut n);
        stamp(p, &mut n);
        n
    }

    #[test]
    fn describes_changes_as_commands() {
        let p = pool();
        let table: Vec<(Box<dyn Fn(&mut PoolConfig)>, &str)> = vec![
            (
                Box::new(|p| {
                    p.volume_mut("v").map(|v| {
                        v.options
                            .insert("cluster.heal-rate-limit".into(), "1MB".into())
                    });
                }),
                "volume set v cluster.heal-rate-limit 1MB",
            ),
            (
                Box::new(|p| {
                    p.volume_mut("v").map(|v| v.state = VolumeState::Stopped);
                }),
                "volume stop v",
            ),
            (
                Box::new(|p| p.members.retain(|m| m.uuid != member(2).uuid)),
                "peer detach 127.0.0.2",
            ),
            (
                Box::new(|p| p.members.push(member(3))),
                "peer probe 127.0.0.3",
            ),
            (Box::new(|p| p.volumes.clear()), "volume delete v"),
            (
                Box::new(|p| {
                    p.volume_mut("v").map(|v| v.bricks[1].path = "/c".into());
                }),
                "volume v bricks: +127.0.0.2:/c -127.0.0.2:/b",
            ),
            (
                Box::new(|p| {
                    p.volume_mut("v").map(|v| v.bricks[0].out_of_service = true);
                }),
                "volume reset-brick v 127.0.0.1:/b start",
            ),
            (
                Box::new(|p| {
                    p.volume_mut("v").map(|v| v.overridden.push("x".into()));
                }),
                "",
            ),
        ];
        for (f, want) in table {
            let mut n = p.clone();
            f(&mut n);
            assert_eq!(describe(&p, &n).0, want);
        }
    }

    #[test]
    fn concurrent_changes_name_the_loser_on_both_sides() {
        let base = change(&pool(), 1, |p| {
            p.volume_mut("v")
                .map(|v| v.options.insert("a".into(), "0".into()));
        });
        let left = change(&base, 1, |p| {
            p.volume_mut("v")
                .map(|v| v.options.insert("a".into(), "1".into()));
        });
        let right = change(&base, 2, |p| {
            p.volume_mut("v")
                .map(|v| v.options.insert("a".into(), "2".into()));
        });
        assert!(right.is_newer_than(&left));
        let l = lost(&left, &right);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].what, "volume set v a 1");
        assert_eq!(l[0].volume.as_deref(), Some("v"));
        assert!(lost(&right, &left)
            .iter()
            .any(|s| s.what == "volume set v a 2"));
        // A descendant loses nothing.
        let later = change(&right, 1, |p| {
            p.volume_mut("v")
                .map(|v| v.options.insert("b".into(), "1".into()));
        });
        assert!(lost(&right, &later).is_empty());
        assert!(lost(&base, &later).is_empty());
        let line = note(l[0], "127.0.0.1", &right, "127.0.0.2");
        assert_eq!(
            line,
            "'volume set v a 1' made on 127.0.0.1 (pool version 3) was overridden by a concurrent change made on 127.0.0.2 (volume set v a 2)"
        );
        let mut doc = later.clone();
        assert!(record(&mut doc, "v", &line));
        assert!(!record(&mut doc, "v", &line), "recorded once");
        assert!(!record(&mut doc, "gone", &line));
    }

    #[test]
    fn lineage_is_bounded_and_old_entries_are_not_judged() {
        let mut p = pool();
        for i in 0..(LINEAGE + 10) {
            p = change(&p, 1, |p| {
                p.volume_mut("v")
                    .map(|v| v.options.insert("k".into(), i.to_string()));
            });
        }
        assert_eq!(p.history.len(), LINEAGE);
        let mut old = pool();
        old.history.push(Stamp {
            version: 1,
            by: member(2).uuid,
            what: "ancient".into(),
            volume: None,
        });
        assert!(lost(&old, &p).is_empty());
    }
}

//! `gsync volume heal VOL history`: what happened during each period when
//! bricks of a volume could not reach each other. Every brick records its
//! own view (`gsync_brick::outage`: when it lost and found each peer, the
//! paths it changed meanwhile, the resolutions made on it); this module
//! gathers those views from every reachable node and merges them ([`merge`],
//! pure) into periods: overlapping views are one period, the bricks that
//! could still reach each other form a side, and each changed path is
//! classified by its state now (healed, still healing, resolved by a
//! policy, or still in split-brain).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gsync_brick::host::Ask;
use gsync_brick::node::Node;
use gsync_brick::pool::Volume;
use gsync_brick::status::{BrickHistory, Resolution};
use gsync_brick::wire::proto;
use serde::{Deserialize, Serialize};

/// Views of one outage recorded by different bricks start and end within
/// this many seconds of each other (each brick notices on its own).
const SLACK: u64 = 5;

/// The history of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Volume name.
    pub volume: String,
    /// Periods, oldest first.
    pub periods: Vec<Period>,
    /// Bricks whose records could not be read (their node unreachable).
    pub unreachable: Vec<String>,
}

/// One period when bricks could not reach each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// Start (seconds since the epoch).
    pub start: u64,
    /// End, or `None` while it lasts.
    pub end: Option<u64>,
    /// The groups of bricks that could reach each other, with what each
    /// changed.
    pub sides: Vec<Side>,
    /// Changed paths now the same on every brick.
    pub healed: Vec<String>,
    /// Changed paths some brick has still to send.
    pub healing: Vec<String>,
    /// Changed paths a policy (or an operator) resolved.
    pub resolved: Vec<Resolution>,
    /// Changed paths still in split-brain.
    pub split_brain: Vec<String>,
}

/// The bricks on one side of a period and the paths they changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    /// `HOST:/PATH` of each brick.
    pub bricks: Vec<String>,
    /// Paths changed on this side during the period.
    pub changed: Vec<String>,
    /// Changed paths not listed (the record's cap).
    pub more: u64,
}

/// Merges the records of every brick (`bricks`: replica id and
/// `HOST:/PATH` of each brick, in volume order, which is the order sides
/// and their bricks are listed in) into periods; `now` ends the periods
/// still open for the overlap test.
pub fn merge(records: &[BrickHistory], bricks: &[(u64, String)], now: u64) -> Vec<Period> {
    let rank = |id: &u64| {
        bricks
            .iter()
            .position(|(b, _)| b == id)
            .unwrap_or(usize::MAX)
    };
    let name = |id: u64| {
        bricks
            .iter()
            .find(|(b, _)| *b == id)
            .map_or_else(|| id.to_string(), |(_, n)| n.clone())
    };
    let mut views: Vec<&gsync_brick::status::OutageRecord> =
        records.iter().flat_map(|h| h.outages.iter()).collect();
    views.sort_by_key(|o| (o.start, o.brick, o.peer));
    let mut resolutions: Vec<&Resolution> =
        records.iter().flat_map(|h| h.resolutions.iter()).collect();
    resolutions.sort_by_key(|r| r.at);
    // Overlapping views are one period.
    let mut groups: Vec<Vec<&gsync_brick::status::OutageRecord>> = Vec::new();
    let mut group_end = 0;
    for o in views {
        let end = o.end.unwrap_or(now);
        match groups.last_mut() {
            Some(g) if o.start <= group_end + SLACK => {
                g.push(o);
                group_end = group_end.max(end);
            }
            _ => {
                groups.push(vec![o]);
                group_end = end;
            }
        }
    }
    let mut out = Vec::new();
    for g in groups {
        let start = g.iter().map(|o| o.start).min().unwrap_or(0);
        let end = if g.iter().any(|o| o.end.is_none()) {
            None
        } else {
            g.iter().filter_map(|o| o.end).max()
        };
        // Sides: bricks joined unless one of them could not reach the other.
        let bricks: BTreeSet<u64> = g.iter().flat_map(|o| [o.brick, o.peer]).collect();
        let cut: BTreeSet<(u64, u64)> = g
            .iter()
            .map(|o| (o.brick.min(o.peer), o.brick.max(o.peer)))
            .collect();
        let mut side_of: BTreeMap<u64, u64> = bricks.iter().map(|b| (*b, *b)).collect();
        let list: Vec<u64> = bricks.iter().copied().collect();
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if !cut.contains(&(*a, *b)) {
                    let (sa, sb) = (side_of[a], side_of[b]);
                    let (keep, drop) = (sa.min(sb), sa.max(sb));
                    for s in side_of.values_mut() {
                        if *s == drop {
                            *s = keep;
                        }
                    }
                }
            }
        }
        let mut sides: BTreeMap<u64, (Vec<u64>, BTreeSet<String>, u64)> = BTreeMap::new();
        for (b, s) in &side_of {
            sides.entry(*s).or_default().0.push(*b);
        }
        let mut split = BTreeSet::new();
        let mut pending = BTreeSet::new();
        let mut changed = BTreeSet::new();
        for o in &g {
            let side = sides.entry(side_of[&o.brick]).or_default();
            side.2 = side.2.max(o.more);
            for p in &o.paths {
                side.1.insert(p.path.clone());
                changed.insert(p.path.clone());
                if p.split_brain {
                    split.insert(p.path.clone());
                }
                if p.pending {
                    pending.insert(p.path.clone());
                }
            }
        }
        let mut resolved: BTreeMap<&str, Resolution> = BTreeMap::new();
        for r in &resolutions {
            if r.at >= start && changed.contains(&r.path) {
                resolved.insert(&r.path, (*r).clone());
            }
        }
        let mut healed = Vec::new();
        let mut healing = Vec::new();
        for p in &changed {
            if split.contains(p) || resolved.contains_key(p.as_str()) {
                continue;
            }
            if pending.contains(p) {
                healing.push(p.clone());
            } else {
                healed.push(p.clone());
            }
        }
        let mut sides: Vec<(Vec<u64>, BTreeSet<String>, u64)> = sides.into_values().collect();
        for s in &mut sides {
            s.0.sort_by_key(|b| rank(b));
        }
        sides.sort_by_key(|s| s.0.first().map_or(usize::MAX, &rank));
        out.push(Period {
            start,
            end,
            sides: sides
                .into_iter()
                .map(|(b, c, more)| Side {
                    bricks: b.into_iter().map(name).collect(),
                    changed: c.into_iter().collect(),
                    more,
                })
                .collect(),
            healed,
            healing,
            resolved: resolved.into_values().collect(),
            split_brain: split.into_iter().collect(),
        });
    }
    out
}

/// Gathers the records of every brick of `v` (local ones read directly,
/// the others asked over the network; an unreachable node is named, not
/// awaited beyond the call's timeout) and merges them.
pub async fn gather(node: &Arc<Node>, v: &Volume) -> History {
    let mut nodes: Vec<uuid::Uuid> = v.bricks.iter().map(|b| b.node).collect();
    nodes.sort();
    nodes.dedup();
    let mut set = tokio::task::JoinSet::new();
    for u in nodes {
        let n = node.clone();
        let vol = v.clone();
        set.spawn(async move {
            let req = proto::History {
                volume: vol.name.clone(),
            };
            (u, n.ask(u, req).await.ok())
        });
    }
    let mut records = Vec::new();
    let mut answered = BTreeSet::new();
    while let Some(r) = set.join_next().await {
        if let Ok((u, Some(h))) = r {
            answered.insert(u);
            records.extend(h);
        }
    }
    let names: Vec<(u64, String)> = v.bricks.iter().map(|b| (b.id, b.name())).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    History {
        volume: v.name.clone(),
        periods: merge(&records, &names, now),
        unreachable: v
            .bricks
            .iter()
            .filter(|b| !answered.contains(&b.node))
            .map(|b| b.name())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gsync_brick::status::{OutageRecord, PathState};

    fn ps(path: &str, split_brain: bool, pending: bool) -> PathState {
        PathState {
            path: path.into(),
            split_brain,
            pending,
        }
    }

    fn rec(
        brick: u64,
        peer: u64,
        start: u64,
        end: Option<u64>,
        paths: Vec<PathState>,
    ) -> OutageRecord {
        // Brick numbers as in `names`.
        let id = |i: u64| [0, 30, 10, 20][i as usize];
        OutageRecord {
            brick: id(brick),
            peer: id(peer),
            start,
            end,
            paths,
            more: 0,
        }
    }

    /// Replica ids are not in volume order.
    fn names() -> Vec<(u64, String)> {
        [(30, 1), (10, 2), (20, 3)]
            .into_iter()
            .map(|(id, i)| (id, format!("h{i}:/b{i}")))
            .collect()
    }

    fn side(bricks: &[&str], changed: &[&str]) -> Side {
        Side {
            bricks: bricks.iter().map(|s| s.to_string()).collect(),
            changed: changed.iter().map(|s| s.to_string()).collect(),
            more: 0,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn periods() {
        let res = Resolution {
            path: "r.conf".into(),
            at: 130,
            how: "size".into(),
            winner: "aaaaaaaaaaaa".into(),
            losers: vec!["bbbbbbbbbbbb".into()],
        };
        // Brick 3 cut off from 1 and 2 between 100 and 120 (each brick
        // noticed at a slightly different time); later 1 and 2 lose each
        // other, and that one still lasts.
        let b1 = BrickHistory {
            brick: 1,
            outages: vec![
                rec(
                    1,
                    3,
                    101,
                    Some(120),
                    vec![
                        ps("a.conf", false, false),
                        ps("both.conf", true, false),
                        ps("r.conf", false, false),
                    ],
                ),
                rec(1, 2, 500, None, vec![ps("late", false, true)]),
            ],
            resolutions: vec![res.clone()],
        };
        let b2 = BrickHistory {
            brick: 2,
            outages: vec![rec(
                2,
                3,
                100,
                Some(121),
                vec![ps("a.conf", false, false), ps("b.conf", false, true)],
            )],
            resolutions: vec![],
        };
        let side3 = || {
            vec![
                ps("c.conf", false, false),
                ps("both.conf", true, false),
                ps("r.conf", false, false),
            ]
        };
        let b3 = BrickHistory {
            brick: 3,
            outages: vec![
                rec(3, 1, 102, Some(119), side3()),
                rec(3, 2, 102, Some(119), side3()),
            ],
            resolutions: vec![],
        };
        let got = merge(&[b1.clone(), b2.clone(), b3.clone()], &names(), 1000);
        let want = vec![
            Period {
                start: 100,
                end: Some(121),
                sides: vec![
                    side(
                        &["h1:/b1", "h2:/b2"],
                        &["a.conf", "b.conf", "both.conf", "r.conf"],
                    ),
                    side(&["h3:/b3"], &["both.conf", "c.conf", "r.conf"]),
                ],
                healed: strings(&["a.conf", "c.conf"]),
                healing: strings(&["b.conf"]),
                resolved: vec![res.clone()],
                split_brain: strings(&["both.conf"]),
            },
            Period {
                start: 500,
                end: None,
                sides: vec![side(&["h1:/b1"], &["late"]), side(&["h2:/b2"], &[])],
                healed: vec![],
                healing: strings(&["late"]),
                resolved: vec![],
                split_brain: vec![],
            },
        ];
        assert_eq!(got, want);

        // Only one side answered: its view alone still names both sides.
        let got = merge(&[b3], &names(), 1000);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].sides,
            vec![
                side(&["h1:/b1", "h2:/b2"], &[]),
                side(&["h3:/b3"], &["both.conf", "c.conf", "r.conf"])
            ]
        );
        // A resolution before the period is not part of it.
        let early = BrickHistory {
            resolutions: vec![Resolution { at: 50, ..res }],
            ..b1
        };
        let got = merge(&[early, b2], &names(), 1000);
        assert!(got[0].resolved.is_empty());
        assert!(got[0].healed.contains(&"r.conf".to_string()));
        // Nothing recorded, nothing to show.
        assert!(merge(&[], &names(), 1000).is_empty());
    }
}

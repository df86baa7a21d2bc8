//! Bounds on the shape of volumes, and where they are enforced.
//!
//! Every brick a node serves costs a SQLite database, file handles and one
//! replicator task per peer brick, so a volume of 20,000 bricks asks a node
//! for 400 million tasks: it is refused when it is defined (`volume
//! create`, `add-brick`), with one line, before any host is resolved or
//! directory created. A document stored by an older version, or received
//! from one, may still hold such a volume: a node then leaves it unserved
//! and says why, instead of stopping or exhausting its memory at start.
//!
//! 32 replicas is plenty for the 2–20 servers gsync is for; a node may hold
//! at most 8 bricks of one volume and 64 bricks in all.

use std::collections::HashMap;

use uuid::Uuid;

use crate::pool::{BrickDef, PoolConfig, Volume};

/// Most bricks (replicas) a volume may have.
pub const MAX_REPLICA: usize = 32;
/// Most bricks of one volume on one node.
pub const MAX_VOLUME_BRICKS_PER_NODE: usize = 8;
/// Most bricks on one node, all volumes together.
pub const MAX_BRICKS_PER_NODE: usize = 64;

/// Refuses a replica count (or brick count) above [`MAX_REPLICA`].
pub fn check_replica(n: usize) -> Result<(), String> {
    if n > MAX_REPLICA {
        return Err(format!(
            "replica count {n} is above the limit of {MAX_REPLICA}"
        ));
    }
    Ok(())
}

/// Checks that adding `new` bricks (node, host as written) to volume
/// `volume`, which already has `existing`, keeps every node within the
/// per-volume and total limits of `cfg` (whose volumes may include
/// `volume` itself, with `existing`).
pub fn check_placement(
    cfg: &PoolConfig,
    volume: &str,
    existing: &[BrickDef],
    new: &[(Uuid, &str)],
) -> Result<(), String> {
    let mut in_volume: HashMap<Uuid, usize> = HashMap::new();
    for b in existing {
        *in_volume.entry(b.node).or_default() += 1;
    }
    let mut added: HashMap<Uuid, usize> = HashMap::new();
    for (node, _) in new {
        *in_volume.entry(*node).or_default() += 1;
        *added.entry(*node).or_default() += 1;
    }
    for (node, host) in new {
        let n = in_volume.get(node).copied().unwrap_or(0);
        if n > MAX_VOLUME_BRICKS_PER_NODE {
            return Err(format!(
                "{host} would hold {n} bricks of volume {volume}: at most {MAX_VOLUME_BRICKS_PER_NODE} bricks of one volume per node"
            ));
        }
        let held = cfg
            .volumes
            .iter()
            .flat_map(|v| v.bricks.iter())
            .filter(|b| b.node == *node)
            .count();
        let total = held + added.get(node).copied().unwrap_or(0);
        if total > MAX_BRICKS_PER_NODE {
            return Err(format!(
                "{host} would hold {total} bricks in all: at most {MAX_BRICKS_PER_NODE} bricks per node"
            ));
        }
    }
    Ok(())
}

/// Why a stored volume may not be served, if it is over the limits.
pub fn volume_problem(v: &Volume) -> Option<String> {
    let n = v.bricks.len().max(v.replica as usize);
    if n > MAX_REPLICA {
        return Some(format!(
            "volume {} has {n} bricks, above the limit of {MAX_REPLICA}; it is not served",
            v.name
        ));
    }
    let mut per_node: HashMap<Uuid, usize> = HashMap::new();
    for b in &v.bricks {
        *per_node.entry(b.node).or_default() += 1;
    }
    let (node, most) = per_node.into_iter().max_by_key(|(_, n)| *n)?;
    if most > MAX_VOLUME_BRICKS_PER_NODE {
        let host = v
            .bricks
            .iter()
            .find(|b| b.node == node)
            .map_or_else(|| node.to_string(), |b| b.host.clone());
        return Some(format!(
            "volume {} has {most} bricks on {host}, above the limit of {MAX_VOLUME_BRICKS_PER_NODE}; it is not served",
            v.name
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{Member, VolumeState};

    fn node(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn brick(n: u8, i: usize) -> BrickDef {
        BrickDef {
            id: i as u64 + 1,
            node: node(n),
            host: format!("h{n}"),
            path: format!("/b{i}"),
            incarnation: 0,
            out_of_service: false,
        }
    }

    fn volume(name: &str, bricks: Vec<BrickDef>) -> Volume {
        Volume {
            name: name.into(),
            id: Uuid::new_v4(),
            replica: bricks.len() as u32,
            bricks,
            state: VolumeState::Started,
            options: Default::default(),
            overridden: Vec::new(),
        }
    }

    fn pool(volumes: Vec<Volume>) -> PoolConfig {
        let mut cfg = PoolConfig::solo(Member {
            uuid: node(1),
            hostname: "h1".into(),
            port: 1,
            fingerprint: "fp".into(),
        });
        cfg.volumes = volumes;
        cfg
    }

    #[test]
    fn replica_bound() {
        assert!(check_replica(2).is_ok());
        assert!(check_replica(32).is_ok());
        let e = check_replica(20_000).unwrap_err();
        assert_eq!(e, "replica count 20000 is above the limit of 32");
    }

    #[test]
    fn placement_bounds() {
        // 8 volumes of 8 bricks on h1: 64 in all.
        let full: Vec<Volume> = (0..8)
            .map(|v| {
                volume(
                    &format!("v{v}"),
                    (0..8).map(|i| brick(1, v * 8 + i)).collect(),
                )
            })
            .collect();
        let seven: Vec<BrickDef> = (0..7).map(|i| brick(1, i)).collect();
        type Case<'a> = (
            PoolConfig,
            Vec<BrickDef>,
            Vec<(Uuid, &'a str)>,
            Option<&'a str>,
        );
        let table: Vec<Case> =
            vec![
            (pool(vec![]), vec![], vec![(node(1), "h1"), (node(2), "h2")], None),
            (pool(vec![]), vec![], vec![(node(1), "h1"); 8], None),
            (
                pool(vec![]),
                vec![],
                vec![(node(1), "h1"); 9],
                Some("h1 would hold 9 bricks of volume x: at most 8 bricks of one volume per node"),
            ),
            // add-brick: 7 held + 2 added.
            (
                pool(vec![volume("x", seven.clone())]),
                seven.clone(),
                vec![(node(2), "h2"), (node(1), "h1"), (node(1), "h1")],
                Some("h1 would hold 9 bricks of volume x: at most 8 bricks of one volume per node"),
            ),
            (
                pool(vec![volume("x", seven.clone())]),
                seven,
                vec![(node(1), "h1")],
                None,
            ),
            (
                pool(full.clone()),
                vec![],
                vec![(node(2), "h2"), (node(1), "h1")],
                Some("h1 would hold 65 bricks in all: at most 64 bricks per node"),
            ),
            (pool(full), vec![], vec![(node(2), "h2"), (node(3), "h3")], None),
        ];
        for (i, (cfg, existing, new, want)) in table.into_iter().enumerate() {
            let got = check_placement(&cfg, "x", &existing, &new);
            assert_eq!(got.err().as_deref(), want, "case {i}");
        }
    }

    #[test]
    fn stored_volume_problems() {
        let ok = volume("ok", vec![brick(1, 0), brick(2, 1)]);
        assert_eq!(volume_problem(&ok), None);
        let wide = volume(
            "many",
            (0..20_000).map(|i| brick((i % 3) as u8, i)).collect(),
        );
        assert_eq!(
            volume_problem(&wide).as_deref(),
            Some("volume many has 20000 bricks, above the limit of 32; it is not served")
        );
        let mut lying = ok.clone();
        lying.replica = 20_000;
        assert!(volume_problem(&lying).is_some());
        let stacked = volume("stacked", (0..9).map(|i| brick(4, i)).collect());
        assert_eq!(
            volume_problem(&stacked).as_deref(),
            Some("volume stacked has 9 bricks on h4, above the limit of 8; it is not served")
        );
    }
}

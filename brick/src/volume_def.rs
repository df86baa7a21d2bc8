//! PURE: what a `volume create` (or `add-brick`) command may define. The
//! daemon first resolves each named host to a pool member (a lookup that
//! may touch DNS and the connection table), then asks these functions
//! whether the volume and its bricks are valid against the pool document
//! it will change. Nothing here does I/O, so every refusal has a table
//! test, and the one-line messages match GlusterFS's where it has one.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::pool::{BrickDef, PoolConfig};

/// The rule a volume name must follow, as the CLI prints it.
pub const NAME_RULE: &str = "volume names use letters, digits, '-' and '_' (at most 64)";

/// True for a name of letters, digits, '-' and '_' (not starting with
/// '-'), at most 64 bytes.
pub fn valid_volume_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-')
}

/// An absolute directory path without empty or `.` components.
pub fn normalise_dir(p: &str) -> String {
    let s: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", s.join("/"))
}

/// Replica id of brick `i` of a volume: derived from the volume id so it is
/// unique across volumes, never zero.
pub fn brick_id(vol: Uuid, i: usize) -> u64 {
    let h = blake3::hash(&[vol.as_bytes().as_slice(), &(i as u64).to_le_bytes()].concat());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b) | 1
}

/// Splits a `HOST:/PATH` argument into its host and normalised path.
pub fn split_brick(b: &str) -> Result<(&str, String), String> {
    let Some((host, path)) = b.rsplit_once(':') else {
        return Err(format!("brick {b} is not in HOST:/PATH form"));
    };
    if host.is_empty() {
        return Err(format!("brick {b} is not in HOST:/PATH form"));
    }
    if !path.starts_with('/') || path.contains('\0') || path.split('/').any(|c| c == "..") {
        return Err(format!("brick {b}: the path must be absolute without '..'"));
    }
    Ok((host, normalise_dir(path)))
}

/// Refuses a brick nested in (or holding) another brick of the same node
/// named earlier in `bricks` (node, host as written, path).
pub fn nested_in_command(bricks: &[(Uuid, &str, &str)]) -> Result<(), String> {
    for (i, (node, host, path)) in bricks.iter().enumerate() {
        let earlier: Vec<(String, PathBuf)> = bricks[..i]
            .iter()
            .filter(|(n, _, _)| n == node)
            .map(|(_, h, p)| (format!("{h}:{p}"), Path::new(p).to_path_buf()))
            .collect();
        let p = Path::new(path);
        if let Some(why) = crate::overlap::overlap(p, p, &[], &earlier) {
            return Err(format!("{host}:{why}"));
        }
    }
    Ok(())
}

/// The replica count of a new volume `name` with `bricks` bricks (`0`
/// means one copy per brick), or why `cfg` refuses it.
pub fn create_replica(
    cfg: &PoolConfig,
    name: &str,
    replica: u32,
    bricks: usize,
) -> Result<u32, String> {
    if !valid_volume_name(name) {
        return Err(NAME_RULE.into());
    }
    if cfg.volume(name).is_some() {
        return Err(format!("Volume {name} already exists"));
    }
    let replica = if replica == 0 {
        u32::try_from(bricks).unwrap_or(u32::MAX)
    } else {
        replica
    };
    // Bounded before anything is resolved or created: a command naming
    // 20,000 bricks is refused at once.
    crate::limits::check_replica(bricks.max(replica as usize))?;
    if replica < 2 {
        return Err("replica count must be at least 2".into());
    }
    if bricks != replica as usize {
        return Err(format!(
            "number of bricks ({bricks}) must equal the replica count ({replica})"
        ));
    }
    Ok(replica)
}

/// A brick named on the command line, with what its host resolved to.
#[derive(Debug, Clone)]
pub struct Named<'a> {
    /// Host as written.
    pub host: &'a str,
    /// Normalised directory.
    pub path: String,
    /// The pool member the host names, if any.
    pub member: Option<Uuid>,
    /// Whether that member is connected now.
    pub connected: bool,
}

/// The bricks of new volume `name` (id `vol`), or the first reason `cfg`
/// refuses them: a host that is not a connected member, a brick named
/// twice, a directory another volume uses, bricks nested in each other, or
/// more bricks on one node than the placement limit allows.
pub fn create_bricks(
    cfg: &PoolConfig,
    name: &str,
    vol: Uuid,
    named: &[Named<'_>],
) -> Result<Vec<BrickDef>, String> {
    let mut defs: Vec<BrickDef> = Vec::new();
    for (i, n) in named.iter().enumerate() {
        let (host, path) = (n.host, &n.path);
        let Some(uuid) = n.member else {
            return Err(format!("Host {host} is not in 'Peer in Cluster' state"));
        };
        if !n.connected {
            return Err(format!(
                "Host {host} is not in 'Peer in Cluster' state (disconnected)"
            ));
        }
        if defs.iter().any(|d| d.node == uuid && d.path == *path) {
            return Err(format!("Found duplicate exports {host}:{path}"));
        }
        let used = cfg.volumes.iter().find(|v| {
            v.bricks
                .iter()
                .any(|bd| bd.node == uuid && bd.path == *path)
        });
        if let Some(v) = used {
            return Err(format!(
                "{host}:{path} is already part of volume {}",
                v.name
            ));
        }
        defs.push(BrickDef {
            id: brick_id(vol, i),
            node: uuid,
            host: host.to_string(),
            path: path.clone(),
            incarnation: 0,
            out_of_service: false,
        });
    }
    let nested: Vec<(Uuid, &str, &str)> = defs
        .iter()
        .map(|d| (d.node, d.host.as_str(), d.path.as_str()))
        .collect();
    nested_in_command(&nested)?;
    let placed: Vec<(Uuid, &str)> = defs.iter().map(|d| (d.node, d.host.as_str())).collect();
    crate::limits::check_placement(cfg, name, &[], &placed)?;
    Ok(defs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{Volume, VolumeState};

    fn pool_with(vol: Option<(&str, Uuid, &str)>) -> PoolConfig {
        let mut cfg = PoolConfig {
            format: crate::pool::POOL_FORMAT,
            version: 1,
            changed_by: Uuid::from_u128(1),
            members: Vec::new(),
            volumes: Vec::new(),
        };
        if let Some((name, node, path)) = vol {
            let id = Uuid::from_u128(99);
            cfg.volumes.push(Volume {
                name: name.into(),
                id,
                replica: 2,
                bricks: vec![BrickDef {
                    id: brick_id(id, 0),
                    node,
                    host: "h1".into(),
                    path: path.into(),
                    incarnation: 0,
                    out_of_service: false,
                }],
                state: VolumeState::Created,
                options: Default::default(),
                overridden: Vec::new(),
            });
        }
        cfg
    }

    #[test]
    fn volume_names() {
        let table: &[(&str, bool)] = &[
            ("conf", true),
            ("a-b_C9", true),
            ("", false),
            ("-x", false),
            ("a b", false),
            ("a/b", false),
            ("é", false),
            (&"x".repeat(64), true),
            (&"x".repeat(65), false),
        ];
        for (name, ok) in table {
            assert_eq!(valid_volume_name(name), *ok, "{name:?}");
        }
    }

    #[test]
    fn brick_arguments() {
        type Case<'a> = (&'a str, Result<(&'a str, &'a str), &'a str>);
        let table: &[Case<'_>] = &[
            ("h1:/data/b", Ok(("h1", "/data/b"))),
            ("h1:/data//b/./", Ok(("h1", "/data/b"))),
            ("[::1]:/b", Ok(("[::1]", "/b"))),
            (
                "h1:data/b",
                Err("brick h1:data/b: the path must be absolute without '..'"),
            ),
            (
                "h1:/a/../b",
                Err("brick h1:/a/../b: the path must be absolute without '..'"),
            ),
            ("/data/b", Err("brick /data/b is not in HOST:/PATH form")),
            (":/data/b", Err("brick :/data/b is not in HOST:/PATH form")),
        ];
        for (arg, want) in table {
            let got = split_brick(arg);
            match want {
                Ok((h, p)) => assert_eq!(got, Ok((*h, p.to_string())), "{arg}"),
                Err(e) => assert_eq!(got, Err(e.to_string()), "{arg}"),
            }
        }
    }

    #[test]
    fn replica_counts() {
        let cfg = pool_with(Some(("conf", Uuid::from_u128(1), "/b")));
        let table: &[(&str, u32, usize, Result<u32, &str>)] = &[
            ("new", 3, 3, Ok(3)),
            ("new", 0, 4, Ok(4)),
            ("new", 0, 1, Err("replica count must be at least 2")),
            ("new", 1, 1, Err("replica count must be at least 2")),
            (
                "new",
                3,
                2,
                Err("number of bricks (2) must equal the replica count (3)"),
            ),
            ("conf", 2, 2, Err("Volume conf already exists")),
            ("bad name", 2, 2, Err(NAME_RULE)),
        ];
        for (name, replica, bricks, want) in table {
            let got = create_replica(&cfg, name, *replica, *bricks);
            assert_eq!(got, want.map_err(String::from), "{name} {replica} {bricks}");
        }
        assert!(create_replica(&cfg, "new", 0, 20_000)
            .unwrap_err()
            .contains("above the limit"));
    }

    #[test]
    fn brick_definitions() {
        let (n1, n2) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let cfg = pool_with(Some(("other", n1, "/used")));
        let named = |host: &'static str, path: &str, member: Option<Uuid>, connected: bool| Named {
            host,
            path: path.into(),
            member,
            connected,
        };
        let table: Vec<(Vec<Named<'_>>, Result<usize, &str>)> = vec![
            (
                vec![
                    named("h1", "/b", Some(n1), true),
                    named("h2", "/b", Some(n2), true),
                ],
                Ok(2),
            ),
            (
                vec![
                    named("h1", "/b", Some(n1), true),
                    named("h9", "/b", None, false),
                ],
                Err("Host h9 is not in 'Peer in Cluster' state"),
            ),
            (
                vec![
                    named("h1", "/b", Some(n1), true),
                    named("h2", "/b", Some(n2), false),
                ],
                Err("Host h2 is not in 'Peer in Cluster' state (disconnected)"),
            ),
            (
                vec![
                    named("h1", "/b", Some(n1), true),
                    named("h1", "/b", Some(n1), true),
                ],
                Err("Found duplicate exports h1:/b"),
            ),
            (
                vec![
                    named("h1", "/used", Some(n1), true),
                    named("h2", "/b", Some(n2), true),
                ],
                Err("h1:/used is already part of volume other"),
            ),
            // Another node's directory of the same name is no conflict.
            (
                vec![
                    named("h2", "/used", Some(n2), true),
                    named("h1", "/b", Some(n1), true),
                ],
                Ok(2),
            ),
        ];
        for (i, (bricks, want)) in table.iter().enumerate() {
            let got = create_bricks(&cfg, "new", Uuid::from_u128(7), bricks);
            match want {
                Ok(n) => {
                    let defs = got.unwrap_or_else(|e| panic!("case {i}: {e}"));
                    assert_eq!(defs.len(), *n, "case {i}");
                    let ids: std::collections::BTreeSet<u64> = defs.iter().map(|d| d.id).collect();
                    assert_eq!(ids.len(), *n, "case {i}: brick ids are unique");
                    assert!(defs.iter().all(|d| d.id != 0));
                }
                Err(e) => assert_eq!(got.map(|d| d.len()), Err(e.to_string()), "case {i}"),
            }
        }
        // Nested in each other on one node.
        let got = create_bricks(
            &cfg,
            "new",
            Uuid::from_u128(7),
            &[
                named("h1", "/b", Some(n1), true),
                named("h1", "/b/c", Some(n1), true),
            ],
        );
        assert!(got.is_err(), "nested bricks are refused: {got:?}");
    }
}

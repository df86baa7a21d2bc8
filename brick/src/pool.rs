//! Pool membership and volume configuration: one versioned document that
//! every member holds, the state machine of the pool's consensus
//! (`consensus`, `node::raft`).
//!
//! Every change (probe, detach, volume create/start/stop/delete/set) produces
//! a new document with `version + 1`, stamped with the node that made it,
//! and is committed by a majority of the pool or refused. A node that was
//! down catches up from the consensus log when it is back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A member of the trusted pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's permanent id.
    pub uuid: Uuid,
    /// The name the pool knows it by (as given to `peer probe`, or its
    /// listen address for the node that created the pool).
    pub hostname: String,
    /// Its QUIC port.
    pub port: u16,
    /// blake3 hash of its certificate (hex): the pinned key.
    pub fingerprint: String,
}

/// State of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeState {
    /// Defined, never started.
    Created,
    /// Bricks are served.
    Started,
    /// Bricks are not served.
    Stopped,
}

impl VolumeState {
    /// As `volume info` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "Created",
            Self::Started => "Started",
            Self::Stopped => "Stopped",
        }
    }
}

/// One brick of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrickDef {
    /// Replica id of this brick in version vectors (unique in the volume).
    pub id: u64,
    /// The node that holds it.
    pub node: Uuid,
    /// Host as written in `volume create`.
    pub host: String,
    /// Absolute directory on that node.
    pub path: String,
    /// Bumped each time the brick is replaced or re-initialised: every
    /// other brick then compares its whole tree with this one (a full
    /// crawl) so the new or empty brick is filled.
    #[serde(default)]
    pub incarnation: u64,
    /// Taken out of service by `reset-brick ... start`: not served until
    /// `reset-brick ... commit force`.
    #[serde(default)]
    pub out_of_service: bool,
}

impl BrickDef {
    /// `host:/path`, as GlusterFS names bricks.
    pub fn name(&self) -> String {
        format!("{}:{}", self.host, self.path)
    }
}

/// A replicated volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Name.
    pub name: String,
    /// Permanent id.
    pub id: Uuid,
    /// Replica count.
    pub replica: u32,
    /// The bricks, in `volume create` order.
    pub bricks: Vec<BrickDef>,
    /// Created, started or stopped.
    pub state: VolumeState,
    /// Reconfigured options (see `options`).
    pub options: BTreeMap<String, String>,
    /// Configuration changes that were lost to a concurrent change made
    /// elsewhere, recorded by versions before the pool configuration ran on
    /// consensus (kept and shown by `volume info`; nothing is added to it
    /// since: a change is now committed or refused).
    #[serde(default)]
    pub overridden: Vec<String>,
}

impl Volume {
    /// Whether the bricks marked reachable in `up` (in brick order) make a
    /// quorum of this volume; `None` when no quorum is configured.
    /// `auto`: more than half, or exactly half including the first brick;
    /// `fixed`: at least `cluster.quorum-count`.
    pub fn quorum(&self, up: &[bool]) -> Option<bool> {
        let n = self.bricks.len();
        let reach = up.iter().filter(|x| **x).count();
        match self.option("cluster.quorum-type") {
            "auto" => Some(reach * 2 > n || (reach * 2 == n && up.first() == Some(&true))),
            "fixed" => match self.option("cluster.quorum-count").parse::<usize>() {
                Ok(0) | Err(_) => None,
                Ok(c) => Some(reach >= c),
            },
            _ => None,
        }
    }

    /// True if quorum is enforced on this volume (`cluster.quorum-type`
    /// auto, or fixed with a count).
    pub fn quorum_enforced(&self) -> bool {
        self.quorum(&[]).is_some()
    }

    /// The brick with replica id `id`.
    pub fn brick(&self, id: u64) -> Option<&BrickDef> {
        self.bricks.iter().find(|b| b.id == id)
    }

    /// Effective value of an option.
    pub fn option(&self, key: &str) -> &str {
        crate::options::effective(&self.options, key)
    }

    /// Whether `auth.allow` lets the pool member known as `host` mount
    /// this volume (`*`, or its name in the list, case-insensitive).
    pub fn mount_allowed(&self, host: &str) -> bool {
        let allow = self.option("auth.allow");
        allow == "*" || allow.split(',').any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// The replicated pool document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// Format marker for the stored form.
    pub format: u32,
    /// Increases with every change.
    pub version: u64,
    /// Node that made the latest change (orders equal versions).
    pub changed_by: Uuid,
    /// Every member, this node included.
    pub members: Vec<Member>,
    /// Every volume.
    pub volumes: Vec<Volume>,
}

/// Current stored format of [`PoolConfig`].
pub const POOL_FORMAT: u32 = 1;

impl PoolConfig {
    /// A pool of one: the node itself.
    pub fn solo(me: Member) -> Self {
        Self {
            format: POOL_FORMAT,
            version: 1,
            changed_by: me.uuid,
            members: vec![me],
            volumes: Vec::new(),
        }
    }

    /// True if `self` should replace `other`.
    pub fn is_newer_than(&self, other: &Self) -> bool {
        (self.version, self.changed_by) > (other.version, other.changed_by)
    }

    /// The member with this id.
    pub fn member(&self, uuid: Uuid) -> Option<&Member> {
        self.members.iter().find(|m| m.uuid == uuid)
    }

    /// The member pinned to this certificate fingerprint.
    pub fn member_by_fingerprint(&self, fp: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.fingerprint == fp)
    }

    /// The member known by `host` (its hostname, case-insensitive).
    pub fn member_by_host(&self, host: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.hostname.eq_ignore_ascii_case(host))
    }

    /// The volume named `name`.
    pub fn volume(&self, name: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.name == name)
    }

    /// Mutable access to the volume named `name`.
    pub fn volume_mut(&mut self, name: &str) -> Option<&mut Volume> {
        self.volumes.iter_mut().find(|v| v.name == name)
    }

    /// Returns the next version of this document, stamped by `by`.
    pub fn next(&self, by: Uuid) -> Self {
        let mut n = self.clone();
        n.version += 1;
        n.changed_by = by;
        n
    }

    /// Reads a stored document (JSON). A volume this version cannot read
    /// is left out with a line saying so, so one bad volume never stops a
    /// node from starting; the members and the other volumes must read.
    pub fn from_stored(doc: &str) -> Result<(Self, Vec<String>), serde_json::Error> {
        let mut raw: serde_json::Value = serde_json::from_str(doc)?;
        let volumes = match raw.as_object_mut() {
            Some(o) => o.insert("volumes".into(), serde_json::Value::Array(Vec::new())),
            None => None,
        };
        let mut cfg: Self = serde_json::from_value(raw)?;
        let mut skipped = Vec::new();
        let volumes = match volumes {
            Some(serde_json::Value::Array(a)) => a,
            Some(other) => {
                skipped.push(format!(
                    "the volume list is unreadable ({other:.40}); skipped"
                ));
                Vec::new()
            }
            None => Vec::new(),
        };
        for (i, v) in volumes.into_iter().enumerate() {
            let name = v
                .get("name")
                .and_then(|n| n.as_str())
                .map_or_else(|| format!("#{}", i + 1), |n| n.chars().take(64).collect());
            match serde_json::from_value::<Volume>(v) {
                Ok(v) => cfg.volumes.push(v),
                Err(e) => skipped.push(format!("volume {name} is unreadable ({e}); skipped")),
            }
        }
        Ok((cfg, skipped))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn member(n: u8) -> Member {
        Member {
            uuid: Uuid::from_bytes([n; 16]),
            hostname: format!("127.0.0.{n}"),
            port: 24017,
            fingerprint: format!("fp{n}"),
        }
    }

    #[test]
    fn quorum_of_reachable_bricks() {
        let volume = |n: u64, opts: &[(&str, &str)]| Volume {
            name: "v".into(),
            id: Uuid::from_bytes([9; 16]),
            replica: n as u32,
            bricks: (1..=n)
                .map(|i| BrickDef {
                    id: i,
                    node: Uuid::from_bytes([i as u8; 16]),
                    host: format!("h{i}"),
                    path: "/b".into(),
                    incarnation: 0,
                    out_of_service: false,
                })
                .collect(),
            state: VolumeState::Started,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            overridden: Vec::new(),
        };
        let (t, f) = (true, false);
        let auto = [("cluster.quorum-type", "auto")];
        let fixed2 = [
            ("cluster.quorum-type", "fixed"),
            ("cluster.quorum-count", "2"),
        ];
        let fixed0 = [
            ("cluster.quorum-type", "fixed"),
            ("cluster.quorum-count", "0"),
        ];
        let none = [("cluster.quorum-type", "none")];
        type Options<'a> = &'a [(&'a str, &'a str)];
        let table: &[(u64, Options, &[bool], Option<bool>)] = &[
            (3, &auto, &[t, t, f], Some(true)),
            (3, &auto, &[f, f, t], Some(false)),
            (3, &auto, &[t, f, f], Some(false)),
            // Exactly half: only with the first brick.
            (2, &auto, &[t, f], Some(true)),
            (2, &auto, &[f, t], Some(false)),
            (4, &auto, &[t, f, f, t], Some(true)),
            (4, &auto, &[f, t, t, f], Some(false)),
            (3, &fixed2, &[f, t, t], Some(true)),
            (3, &fixed2, &[f, f, t], Some(false)),
            // A count of 0 (or unreadable) means no quorum enforced.
            (3, &fixed0, &[f, f, f], None),
            (3, &none, &[f, f, f], None),
        ];
        for (n, opts, up, want) in table {
            assert_eq!(
                volume(*n, opts).quorum(up),
                *want,
                "{n} bricks {opts:?} up {up:?}"
            );
        }
    }

    #[test]
    fn unreadable_stored_volumes_are_skipped() {
        let mut cfg = PoolConfig::solo(member(1));
        cfg.volumes.push(Volume {
            name: "good".into(),
            id: Uuid::from_bytes([9; 16]),
            replica: 2,
            bricks: Vec::new(),
            state: VolumeState::Started,
            options: BTreeMap::new(),
            overridden: Vec::new(),
        });
        let mut doc = serde_json::to_value(&cfg).unwrap();
        let vols = doc["volumes"].as_array_mut().unwrap();
        vols.insert(0, serde_json::json!({"name": "broken", "replica": "lots"}));
        vols.push(serde_json::json!(17));
        let (read, skipped) = PoolConfig::from_stored(&doc.to_string()).unwrap();
        assert_eq!(read, cfg);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(
            skipped[0].starts_with("volume broken is unreadable ("),
            "{skipped:?}"
        );
        assert!(
            skipped[1].starts_with("volume #3 is unreadable ("),
            "{skipped:?}"
        );
        // The members must read.
        assert!(PoolConfig::from_stored("{\"format\": 1}").is_err());
        assert!(PoolConfig::from_stored("not json").is_err());
    }

    #[test]
    fn newer_orders_by_version_then_node() {
        let a = PoolConfig::solo(member(1));
        let b = a.next(member(2).uuid);
        assert!(b.is_newer_than(&a));
        let c = a.next(member(3).uuid);
        assert!(c.is_newer_than(&b) && !b.is_newer_than(&c));
        assert!(!a.is_newer_than(&a));
    }
}

//! Choosing the version that wins a split-brain: a pure function of the
//! competing versions and the policy.

use gsync_brick::store::types::{Entry, Kind};

/// A resolution rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The biggest file.
    Size,
    /// The latest modification time.
    Mtime,
    /// The version most bricks hold as their current one.
    Majority,
}

impl Policy {
    /// Parses a policy name (`bigger-file`/`size`, `latest-mtime`/`mtime`,
    /// `majority`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bigger-file" | "size" => Some(Self::Size),
            "latest-mtime" | "mtime" => Some(Self::Mtime),
            "majority" => Some(Self::Majority),
            _ => None,
        }
    }

    /// The option value naming the policy (`cluster.favorite-child-policy`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Mtime => "mtime",
            Self::Majority => "majority",
        }
    }
}

/// Picks the winner among `versions` (each with the number of bricks that
/// hold it as current). Ties are broken deterministically (size, then
/// mtime, then content hash), so every node picks the same one; unlike
/// GlusterFS, equal mtimes never make `latest-mtime` refuse. `None` when
/// `Majority` finds no strict majority.
pub fn pick(versions: &[(Entry, usize)], policy: Policy) -> Option<&Entry> {
    let key = |e: &Entry| (e.kind != Kind::Tombstone, e.size, e.mtime_ns, e.hash);
    match policy {
        Policy::Size => versions.iter().map(|v| &v.0).max_by_key(|e| key(e)),
        Policy::Mtime => versions
            .iter()
            .map(|v| &v.0)
            .max_by_key(|e| (e.mtime_ns, e.size, e.hash)),
        Policy::Majority => {
            let total: usize = versions.iter().map(|v| v.1).sum();
            versions.iter().find(|v| v.1 * 2 > total).map(|v| &v.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gsync_brick::wire::vv::VersionVector;
    use gsync_brick::RelPath;

    fn e(size: u64, mtime: i64, h: u8) -> Entry {
        let mut x = Entry::tombstone(RelPath::new("f").unwrap(), uuid::Uuid::nil());
        x.kind = Kind::File;
        x.size = size;
        x.mtime_ns = mtime;
        x.hash = [h; 32];
        x.vv = VersionVector::new().bumped(u64::from(h));
        x
    }

    #[test]
    fn policies() {
        let v = vec![(e(10, 5, 1), 1), (e(20, 3, 2), 2)];
        assert_eq!(pick(&v, Policy::Size).unwrap().size, 20);
        assert_eq!(pick(&v, Policy::Mtime).unwrap().size, 10);
        assert_eq!(pick(&v, Policy::Majority).unwrap().size, 20);
        let tie = vec![(e(10, 5, 1), 1), (e(10, 5, 2), 1)];
        assert_eq!(pick(&tie, Policy::Mtime).unwrap().hash, [2; 32]);
        assert!(pick(&tie, Policy::Majority).is_none());
    }
}

//! What a brick does with an incoming version of a path: a pure function of
//! the versions it holds and the one offered.
//!
//! A brick holds, per path, an antichain of versions: the *current* one (in
//! the brick directory) and any concurrent *siblings* (split-brain). An
//! incoming version:
//! - that is older than or equal to a held version is ignored;
//! - removes every held version it dominates;
//! - merges with a concurrent held version when they do not really differ:
//!   identical content and metadata; a content change on one side and a
//!   metadata change on the other (ordered by the per-aspect vectors
//!   `data_vv` and `meta_vv`); a delete against a modification (the
//!   modification wins, nothing is lost). The merged version's vector is
//!   the merge of both, so every brick computes the same result;
//! - otherwise stays beside them: a split-brain.

use super::types::{Entry, Kind};
use crate::vv::Relation;

/// Where a version's content lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// The brick directory (the current version).
    Current,
    /// A stored sibling (index into the siblings given).
    Sibling(usize),
    /// The offer being processed.
    Incoming,
}

/// The brick's new state for the path.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The version for the brick directory, and where its content is.
    pub current: (Entry, Src),
    /// Versions kept beside it (split-brain when non-empty).
    pub siblings: Vec<(Entry, Src)>,
    /// True if the result holds something the sender does not have (a
    /// merge, or a version it did not send), so it must be sent back out.
    pub diverged: bool,
}

/// Decides what to do with `incoming`; `None` means ignore it.
pub fn reconcile(current: Option<&Entry>, siblings: &[Entry], incoming: &Entry) -> Option<Plan> {
    let mut held: Vec<(Entry, Src)> = current
        .map(|c| (c.clone(), Src::Current))
        .into_iter()
        .chain(
            siblings
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), Src::Sibling(i))),
        )
        .collect();
    if held.iter().any(|(e, _)| {
        matches!(
            e.vv.compare(&incoming.vv),
            Relation::Dominates | Relation::Equal
        )
    }) {
        return None;
    }
    held.retain(|(e, _)| e.vv.compare(&incoming.vv) != Relation::DominatedBy);
    let mut inc = (incoming.clone(), Src::Incoming);
    let mut merged_any = false;
    let mut i = 0;
    while i < held.len() {
        if let Some(m) = merge_pair(&held[i], &inc) {
            inc = m;
            merged_any = true;
            held.remove(i);
            held.retain(|(e, _)| e.vv.compare(&inc.0.vv) != Relation::DominatedBy);
            i = 0;
        } else {
            i += 1;
        }
    }
    held.push(inc);
    // The version already in the brick directory stays there if it survived
    // (each mount keeps the version it had); otherwise the newest arrival.
    let pos = held
        .iter()
        .position(|(_, s)| *s == Src::Current)
        .unwrap_or(held.len() - 1);
    let current = held.remove(pos);
    let diverged = merged_any || !held.is_empty();
    Some(Plan {
        current,
        siblings: held,
        diverged,
    })
}

fn dominates_or_equal(a: &crate::vv::VersionVector, b: &crate::vv::VersionVector) -> bool {
    matches!(a.compare(b), Relation::Dominates | Relation::Equal)
}

/// Merges two concurrent versions that do not really conflict.
fn merge_pair(a: &(Entry, Src), b: &(Entry, Src)) -> Option<(Entry, Src)> {
    let (ea, eb) = (&a.0, &b.0);
    let vv = ea.vv.merge(&eb.vv);
    let with_vv = |x: &(Entry, Src)| {
        let mut e = x.0.clone();
        e.vv = vv.clone();
        e.data_vv = ea.data_vv.merge(&eb.data_vv);
        e.meta_vv = ea.meta_vv.merge(&eb.meta_vv);
        (e, x.1)
    };
    // Prefer keeping the content already on disk when both are equal.
    let (first, second) = if b.1 == Src::Current { (b, a) } else { (a, b) };
    if ea.same_state(eb) {
        return Some(with_vv(first));
    }
    match (ea.kind, eb.kind) {
        (Kind::Tombstone, Kind::Tombstone) => return Some(with_vv(first)),
        (Kind::Tombstone, _) => return Some(with_vv(b)),
        (_, Kind::Tombstone) => return Some(with_vv(a)),
        (x, y) if x != y => return None,
        _ => {}
    }
    // Same kind, different content and/or metadata: merge per aspect.
    let content = if ea.same_content(eb) {
        first
    } else if dominates_or_equal(&ea.data_vv, &eb.data_vv) {
        a
    } else if dominates_or_equal(&eb.data_vv, &ea.data_vv) {
        b
    } else if ea.kind == Kind::Dir {
        first
    } else {
        return None;
    };
    let meta = if ea.same_meta(eb) {
        content
    } else if dominates_or_equal(&ea.meta_vv, &eb.meta_vv) {
        a
    } else if dominates_or_equal(&eb.meta_vv, &ea.meta_vv) {
        b
    } else {
        return None;
    };
    let _ = second;
    let mut e = content.0.clone();
    e.mode = meta.0.mode;
    e.owner = meta.0.owner;
    e.vv = vv;
    e.data_vv = content.0.data_vv.clone();
    e.meta_vv = meta.0.meta_vv.clone();
    Some((e, content.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vv::VersionVector;
    use crate::RelPath;
    use uuid::Uuid;

    fn vv(e: &[(u64, u64)]) -> VersionVector {
        VersionVector::from_entries(e.iter().copied())
    }

    fn file(
        content: u8,
        mode: u32,
        v: &[(u64, u64)],
        data: &[(u64, u64)],
        meta: &[(u64, u64)],
    ) -> Entry {
        Entry {
            path: RelPath::new("f").unwrap(),
            kind: Kind::File,
            size: 1,
            mode,
            mtime_ns: 0,
            owner: None,
            hash: [content; 32],
            target: None,
            vv: vv(v),
            data_vv: vv(data),
            meta_vv: vv(meta),
            origin: Uuid::nil(),
        }
    }

    #[test]
    fn newer_replaces_older_is_ignored() {
        let old = file(1, 0o644, &[(1, 1)], &[(1, 1)], &[(1, 1)]);
        let new = file(2, 0o644, &[(1, 2)], &[(1, 2)], &[(1, 1)]);
        let p = reconcile(Some(&old), &[], &new).unwrap();
        assert_eq!(p.current.1, Src::Incoming);
        assert!(p.siblings.is_empty() && !p.diverged);
        assert!(reconcile(Some(&new), &[], &old).is_none());
        assert!(reconcile(Some(&new), &[], &new).is_none());
    }

    #[test]
    fn concurrent_different_content_is_split_brain() {
        let a = file(1, 0o644, &[(1, 1)], &[(1, 1)], &[]);
        let b = file(2, 0o644, &[(2, 1)], &[(2, 1)], &[]);
        let p = reconcile(Some(&a), &[], &b).unwrap();
        assert_eq!(p.current.1, Src::Current);
        assert_eq!(p.siblings.len(), 1);
        assert_eq!(p.siblings[0].1, Src::Incoming);
    }

    #[test]
    fn concurrent_identical_merges_silently() {
        let a = file(1, 0o644, &[(1, 1)], &[(1, 1)], &[]);
        let b = file(1, 0o644, &[(2, 1)], &[(2, 1)], &[]);
        let p = reconcile(Some(&a), &[], &b).unwrap();
        assert!(p.siblings.is_empty());
        assert_eq!(p.current.0.vv, vv(&[(1, 1), (2, 1)]));
        assert_eq!(p.current.1, Src::Current);
    }

    #[test]
    fn content_change_and_mode_change_merge() {
        // Base {0:1}: content 0, mode 644. Side 1 writes content, side 2 chmods.
        let a = file(1, 0o644, &[(0, 1), (1, 1)], &[(0, 1), (1, 1)], &[(0, 1)]);
        let b = file(0, 0o755, &[(0, 1), (2, 1)], &[(0, 1)], &[(0, 1), (2, 1)]);
        for (x, y) in [(&a, &b), (&b, &a)] {
            let p = reconcile(Some(x), &[], y).unwrap();
            assert!(p.siblings.is_empty());
            assert_eq!(p.current.0.hash, [1; 32]);
            assert_eq!(p.current.0.mode, 0o755);
            assert!(p.diverged);
        }
    }

    #[test]
    fn delete_versus_modify_keeps_the_modification() {
        let modified = file(2, 0o644, &[(0, 1), (1, 1)], &[(0, 1), (1, 1)], &[(0, 1)]);
        let mut del = Entry::tombstone(RelPath::new("f").unwrap(), Uuid::nil());
        del.vv = vv(&[(0, 1), (2, 1)]);
        let p = reconcile(Some(&modified), &[], &del).unwrap();
        assert_eq!(p.current.0.kind, Kind::File);
        assert!(p.siblings.is_empty());
        let p = reconcile(Some(&del), &[], &modified).unwrap();
        assert_eq!(p.current.0.kind, Kind::File);
        assert_eq!(p.current.1, Src::Incoming);
    }

    #[test]
    fn file_versus_directory_is_split_brain() {
        let f = file(1, 0o644, &[(1, 1)], &[(1, 1)], &[]);
        let mut d = file(0, 0o755, &[(2, 1)], &[(2, 1)], &[]);
        d.kind = Kind::Dir;
        let p = reconcile(Some(&f), &[], &d).unwrap();
        assert_eq!(p.siblings.len(), 1);
    }

    #[test]
    fn resolution_dominates_all_siblings() {
        let a = file(1, 0o644, &[(1, 1)], &[(1, 1)], &[]);
        let b = file(2, 0o644, &[(2, 1)], &[(2, 1)], &[]);
        let mut win = b.clone();
        win.vv = vv(&[(1, 1), (2, 1), (3, 1)]);
        let p = reconcile(Some(&a), &[b], &win).unwrap();
        assert!(p.siblings.is_empty());
        assert_eq!(p.current.1, Src::Incoming);
    }
}

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
use crate::wire::vv::Relation;

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

/// The vectors of a writer's new version `entry`, written on `w.base`,
/// given what the brick holds for the path (`current`, `siblings`): the
/// base with the writer's counter above any value seen for it (so the
/// version is never equal to an older one); a changed aspect (content,
/// metadata) takes the new vector, an unchanged one keeps its base's. When
/// the brick holds the base itself, what changed is judged against it;
/// otherwise the writer's word (`content_changed`, `meta_changed`) is taken.
pub fn assign_vectors(
    entry: &mut Entry,
    w: crate::wire::proto::WriteInfo,
    current: Option<&Entry>,
    siblings: &[Entry],
) {
    let seen = current
        .into_iter()
        .chain(siblings.iter())
        .map(|e| e.vv.get(w.writer))
        .max()
        .unwrap_or(0)
        .max(w.base.get(w.writer));
    let mut vv = w.base.clone();
    vv.set(w.writer, seen + 1);
    let base_entry = current.filter(|c| c.vv == w.base);
    let (content_changed, meta_changed) = match base_entry {
        Some(b) => (!b.same_content(entry), !b.same_meta(entry)),
        None => (w.content_changed, w.meta_changed),
    };
    entry.data_vv = if content_changed {
        vv.clone()
    } else {
        base_entry.map_or(w.base_data, |b| b.data_vv.clone())
    };
    entry.meta_vv = if meta_changed {
        vv.clone()
    } else {
        base_entry.map_or(w.base_meta, |b| b.meta_vv.clone())
    };
    entry.vv = vv;
}

/// The version an operator's split-brain choice makes current: the held
/// version with vector `chosen` (the current one, or a sibling), given a
/// vector that dominates every version held (their merge, with brick `me`'s
/// counter bumped), so every other version is superseded and goes to the
/// trash. `None` when there is no split-brain (no siblings) or no held
/// version has that vector.
pub fn choose_winner(
    current: Option<&Entry>,
    siblings: &[Entry],
    chosen: &crate::wire::vv::VersionVector,
    me: u64,
) -> Option<(Entry, Src)> {
    if siblings.is_empty() {
        return None;
    }
    let (win, src) = match current.filter(|c| c.vv == *chosen) {
        Some(c) => (c, Src::Current),
        None => {
            let i = siblings.iter().position(|s| s.vv == *chosen)?;
            (&siblings[i], Src::Sibling(i))
        }
    };
    let all = current
        .into_iter()
        .chain(siblings)
        .fold(crate::wire::vv::VersionVector::new(), |acc, e| {
            acc.merge(&e.vv)
        })
        .bumped(me);
    let mut win = win.clone();
    win.vv = all.clone();
    win.data_vv = all.clone();
    win.meta_vv = all;
    Some((win, src))
}

fn dominates_or_equal(
    a: &crate::wire::vv::VersionVector,
    b: &crate::wire::vv::VersionVector,
) -> bool {
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
    use crate::wire::vv::VersionVector;
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
    fn an_operators_choice_supersedes_every_held_version() {
        let cur = file(1, 0o644, &[(1, 2)], &[(1, 2)], &[(1, 1)]);
        let s1 = file(2, 0o600, &[(2, 1)], &[(2, 1)], &[(2, 1)]);
        let s2 = file(3, 0o644, &[(3, 4)], &[(3, 4)], &[(3, 4)]);
        let sibs = [s1.clone(), s2.clone()];
        // (current, siblings, chosen vector, expected (content, source))
        type Case<'a> = (
            Option<&'a Entry>,
            &'a [Entry],
            VersionVector,
            Option<(u8, Src)>,
        );
        let table: Vec<Case<'_>> = vec![
            (Some(&cur), &sibs, cur.vv.clone(), Some((1, Src::Current))),
            (Some(&cur), &sibs, s1.vv.clone(), Some((2, Src::Sibling(0)))),
            (Some(&cur), &sibs, s2.vv.clone(), Some((3, Src::Sibling(1)))),
            (None, &sibs, s2.vv.clone(), Some((3, Src::Sibling(1)))),
            // A vector nobody holds (stale command): nothing is chosen.
            (Some(&cur), &sibs, vv(&[(9, 9)]), None),
            // No split-brain: nothing to choose between.
            (Some(&cur), &[], cur.vv.clone(), None),
        ];
        for (i, (current, siblings, chosen, want)) in table.into_iter().enumerate() {
            let got = choose_winner(current, siblings, &chosen, 7);
            assert_eq!(
                got.as_ref().map(|(e, src)| (e.hash[0], *src)),
                want,
                "case {i}"
            );
            let Some((win, _)) = got else { continue };
            // The winner keeps its own state and dominates all it replaces.
            let src = current.into_iter().chain(siblings).find(|e| e.vv == chosen);
            assert!(src.is_some_and(|s| s.same_state(&win)), "case {i}");
            for held in current.into_iter().chain(siblings) {
                assert_eq!(win.vv.compare(&held.vv), Relation::Dominates, "case {i}");
            }
            assert_eq!(win.vv.get(7), 1, "case {i}: the choosing brick's counter");
            assert!(win.data_vv == win.vv && win.meta_vv == win.vv, "case {i}");
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

    fn write(writer: u64, base: &Entry, changed: (bool, bool)) -> crate::wire::proto::WriteInfo {
        crate::wire::proto::WriteInfo {
            writer,
            base: base.vv.clone(),
            base_data: base.data_vv.clone(),
            base_meta: base.meta_vv.clone(),
            content_changed: changed.0,
            meta_changed: changed.1,
        }
    }

    #[test]
    fn writer_vectors_table() {
        let base = file(1, 0o644, &[(1, 2)], &[(1, 2)], &[(1, 1)]);
        let other = file(1, 0o644, &[(7, 5), (1, 2)], &[(1, 2)], &[(1, 1)]);
        // (new content, new mode, brick holds the base as current, writer's
        //  word, siblings) -> (vv, data_vv, meta_vv)
        type Case<'a> = (
            u8,
            u32,
            bool,
            (bool, bool),
            &'a [Entry],
            &'a [(u64, u64)],
            &'a [(u64, u64)],
            &'a [(u64, u64)],
        );
        let table: &[Case] = &[
            // Content written on the current version: data takes the new vector.
            (
                2,
                0o644,
                true,
                (false, false),
                &[],
                &[(1, 2), (7, 1)],
                &[(1, 2), (7, 1)],
                &[(1, 1)],
            ),
            // A chmod: meta takes it, data keeps the base's.
            (
                1,
                0o600,
                true,
                (false, false),
                &[],
                &[(1, 2), (7, 1)],
                &[(1, 2)],
                &[(1, 2), (7, 1)],
            ),
            // Both.
            (
                2,
                0o600,
                true,
                (false, false),
                &[],
                &[(1, 2), (7, 1)],
                &[(1, 2), (7, 1)],
                &[(1, 2), (7, 1)],
            ),
            // Base unknown here: the writer's word is taken.
            (
                2,
                0o644,
                false,
                (true, false),
                &[],
                &[(1, 2), (7, 1)],
                &[(1, 2), (7, 1)],
                &[(1, 1)],
            ),
            (
                1,
                0o644,
                false,
                (false, true),
                &[],
                &[(1, 2), (7, 1)],
                &[(1, 2)],
                &[(1, 2), (7, 1)],
            ),
            // The writer's counter goes above any the brick has seen for it,
            // so its new version never equals an older one.
            (
                2,
                0o644,
                true,
                (false, false),
                std::slice::from_ref(&other),
                &[(1, 2), (7, 6)],
                &[(1, 2), (7, 6)],
                &[(1, 1)],
            ),
        ];
        for (n, (content, mode, held, word, sibs, want_vv, want_data, want_meta)) in
            table.iter().enumerate()
        {
            let mut e = file(*content, *mode, &[], &[], &[]);
            let current = held.then_some(&base);
            assign_vectors(&mut e, write(7, &base, *word), current, sibs);
            assert_eq!(
                (e.vv, e.data_vv, e.meta_vv),
                (vv(want_vv), vv(want_data), vv(want_meta)),
                "case {n}"
            );
        }
    }

    /// A history of one path: writers 1..=3 each write on some earlier
    /// version (new content, a chmod, a delete, or the same state again),
    /// with vectors assigned as a brick assigns them. A writer writes in
    /// sequence: its base is never older than its own last version (a
    /// mount bases each change on what it last synced, its own last write
    /// included).
    fn history(steps: &[(u64, usize, u8, u8)]) -> Vec<Entry> {
        let mut h = vec![file(0, 0o644, &[(9, 1)], &[(9, 1)], &[(9, 1)])];
        let mut last: std::collections::HashMap<u64, VersionVector> = Default::default();
        for &(writer, base, action, value) in steps {
            let bases: Vec<&Entry> = h
                .iter()
                .filter(|e| {
                    last.get(&writer).is_none_or(|l| {
                        matches!(e.vv.compare(l), Relation::Dominates | Relation::Equal)
                    })
                })
                .collect();
            let base = bases[base % bases.len()].clone();
            let mut e = if base.kind == Kind::Tombstone {
                file(0, 0o644, &[], &[], &[])
            } else {
                base.clone()
            };
            match action % 4 {
                0 => e.hash = [value % 3 + 1; 32],
                1 => e.mode = 0o600 + u32::from(value % 2),
                2 => e = Entry::tombstone(RelPath::new("f").unwrap(), Uuid::nil()),
                _ => {}
            }
            let changed = (!base.same_content(&e), !base.same_meta(&e));
            assign_vectors(&mut e, write(writer, &base, changed), None, &h);
            last.insert(writer, e.vv.clone());
            h.push(e);
        }
        h
    }

    /// What a brick holding `held` holds after receiving `versions` in
    /// this order.
    fn deliver<'a>(held: &[Entry], versions: impl IntoIterator<Item = &'a Entry>) -> Vec<Entry> {
        let mut cur: Option<Entry> = held.first().cloned();
        let mut sibs: Vec<Entry> = held.iter().skip(1).cloned().collect();
        for v in versions {
            if let Some(p) = reconcile(cur.as_ref(), &sibs, v) {
                cur = Some(p.current.0);
                sibs = p.siblings.into_iter().map(|(e, _)| e).collect();
            }
        }
        cur.into_iter().chain(sibs).collect()
    }

    /// Bricks exchange what they hold until none changes (as the
    /// replicators do: every brick sends its versions to every other, and
    /// a result that diverged from what was sent is sent back out); the
    /// versions each then holds, in a stable order.
    fn exchange(mut bricks: Vec<Vec<Entry>>) -> Vec<Vec<Entry>> {
        for _ in 0..16 {
            let before = bricks.clone();
            for to in 0..bricks.len() {
                for from in 0..bricks.len() {
                    if from != to {
                        let sent = bricks[from].clone();
                        bricks[to] = deliver(&bricks[to], sent.iter());
                    }
                }
            }
            if bricks == before {
                break;
            }
        }
        let key = |e: &Entry| (e.vv.order_key().0, e.vv.to_bytes());
        for b in &mut bricks {
            b.sort_by_key(key);
        }
        bricks
    }

    /// Delivers the history to three bricks in three orders, lets them
    /// exchange, and checks they hold the same versions.
    fn check_orders(h: &[Entry], keys: &[u32]) -> Result<(), String> {
        let mut order: Vec<usize> = (0..h.len()).collect();
        order.sort_by_key(|i| keys[*i % keys.len()].wrapping_mul(*i as u32 + 7));
        let bricks = exchange(vec![
            deliver(&[], h.iter()),
            deliver(&[], order.iter().map(|i| &h[*i])),
            deliver(&[], h.iter().rev()),
        ]);
        // The versions as the user sees them, under their vectors. (The
        // aspect vectors of a merged version may differ between bricks:
        // they depend on which versions were merged into it before newer
        // ones arrived; they only steer how a later concurrent edit merges.)
        let seen = |b: &Vec<Entry>| -> Vec<(VersionVector, Kind, [u8; 32], u32, u64)> {
            b.iter()
                .map(|e| {
                    (
                        e.vv.clone(),
                        e.kind,
                        e.hash,
                        if e.kind == Kind::Tombstone { 0 } else { e.mode },
                        e.size,
                    )
                })
                .collect()
        };
        if bricks.iter().all(|b| seen(b) == seen(&bricks[0])) {
            Ok(())
        } else {
            Err(format!("history {h:?}\nends as {bricks:?}"))
        }
    }

    proptest::proptest! {
        /// Reconciliation does not depend on arrival order, for new
        /// contents and rewrites of the same state by three writers:
        /// bricks that receive the same versions in different orders, then
        /// exchange what they hold, show the same versions (the same
        /// split-brain, or the same single version, under the same vector).
        #[test]
        fn arrival_order_does_not_matter_for_writes(
            steps in proptest::collection::vec((1u64..=3, 0usize..64, 0u8..2, 0u8..8), 1..9),
            keys in proptest::collection::vec(0u32..1000, 9),
        ) {
            let steps: Vec<_> = steps.into_iter().map(|(w, b, a, v)| (w, b, a * 3, v)).collect();
            let r = check_orders(&history(&steps), &keys);
            proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }

        /// The same for mode changes and rewrites of the same state.
        ///
        /// Not covered, because it does not hold yet: histories mixing a
        /// delete, or a mode change, with concurrent writes of another kind.
        /// Merging two versions into one vector loses which writes each
        /// held, so a later version can be dropped as "seen" on one brick
        /// and merged on another (e.g. two mounts write the same content,
        /// each deletes its copy: depending on the order a brick keeps the
        /// file or the delete). Per-write causal context (dotted version
        /// vectors) is what makes these independent of order.
        #[test]
        fn arrival_order_does_not_matter_for_mode_changes(
            steps in proptest::collection::vec((1u64..=3, 0usize..64, 0u8..2, 0u8..8), 1..9),
            keys in proptest::collection::vec(0u32..1000, 9),
        ) {
            let steps: Vec<_> = steps.into_iter().map(|(w, b, a, v)| (w, b, 1 + a * 2, v)).collect();
            let r = check_orders(&history(&steps), &keys);
            proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
    }
}

//! What a brick does with an incoming version of a path: a pure function of
//! the versions it holds and the one offered.
//!
//! A brick keeps, per path, the *members*: the real versions it has
//! received that no other received version supersedes (an antichain under
//! the version vectors' order). Each member is a version some writer made;
//! a brick never invents one by merging. Because the members are the
//! maximal elements of the set of versions received, they do not depend on
//! the order in which versions arrived: bricks that received the same
//! versions hold the same members.
//!
//! What the brick *shows* (the current version in the brick directory, and
//! any split-brain siblings) is a deterministic function of the members
//! ([`show`]): members that do not really differ merge into one shown
//! version whose vector is the merge of theirs:
//! - identical content and metadata;
//! - a content change on one side and a metadata change on the other
//!   (ordered by the per-aspect vectors `data_vv` and `meta_vv`);
//! - a delete against a modification: the modification wins (nothing is
//!   lost): a change of content the delete did not see, or a change of
//!   metadata (a chmod) of exactly the content it deleted. A version whose
//!   content the delete saw, and that changed nothing else it did not
//!   see, is deleted with it.
//!
//! Members that really differ are shown side by side: a split-brain. A
//! writer's next version is based on a shown version, so its vector
//! dominates every member merged into it and replaces them all.
//!
//! A member's content is kept while it is shown; a member whose content is
//! superseded by another member's (its content vector is dominated) never
//! shows that content again, so it is kept as metadata alone.

use super::types::{Entry, Kind};
use crate::wire::vv::{Relation, VersionVector};

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
    /// The members behind the shown versions, when some shown version is
    /// a merge of several (empty: the shown versions are the members).
    pub members: Vec<Entry>,
    /// True if the brick holds something the sender does not have (a
    /// member it did not send), so it must be sent back out.
    pub diverged: bool,
}

/// Why an incoming version cannot be taken now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// It would show a member's content this brick does not have (it was
    /// superseded here): the sender offers its shown versions first, after
    /// which this one no longer needs it.
    ContentMissing,
}

/// The members of a path as stored: `members` when given, else the shown
/// versions themselves.
pub fn held<'a>(
    current: Option<&'a Entry>,
    siblings: &'a [Entry],
    members: &'a [Entry],
) -> Vec<&'a Entry> {
    if members.is_empty() {
        current.into_iter().chain(siblings).collect()
    } else {
        members.iter().collect()
    }
}

/// Decides what to do with `incoming`, given the shown versions (`current`,
/// `siblings`) and the stored `members` (empty when they are the shown
/// ones). `Ok(None)` means ignore it: a held member supersedes or equals it.
pub fn reconcile(
    current: Option<&Entry>,
    siblings: &[Entry],
    members: &[Entry],
    incoming: &Entry,
) -> Result<Option<Plan>, Refused> {
    let held = held(current, siblings, members);
    if held.iter().any(|e| dominates_or_equal(&e.vv, &incoming.vv)) {
        return Ok(None);
    }
    let mut next: Vec<Entry> = held
        .into_iter()
        .filter(|e| e.vv.compare(&incoming.vv) != Relation::DominatedBy)
        .cloned()
        .collect();
    next.push(incoming.clone());
    let shown = show(&next);
    // Where each shown version's content is: a file's bytes must be here
    // (the brick directory, a kept sibling, or the offer); a directory,
    // link or deletion carries its state in the entry.
    let src_of = |e: &Entry| -> Option<Src> {
        if e.kind != Kind::File {
            return Some(if current.is_some_and(|c| c.same_content(e)) {
                Src::Current
            } else {
                Src::Incoming
            });
        }
        if current.is_some_and(|c| c.same_content(e)) {
            Some(Src::Current)
        } else if incoming.same_content(e) {
            Some(Src::Incoming)
        } else {
            siblings
                .iter()
                .position(|s| s.same_content(e))
                .map(Src::Sibling)
        }
    };
    let mut placed = Vec::with_capacity(shown.len());
    for e in shown {
        let src = src_of(&e).ok_or(Refused::ContentMissing)?;
        placed.push((e, src));
    }
    // The version already in the brick directory stays there if it is
    // still shown, with its state (each mount keeps the version it had);
    // otherwise the one showing the incoming version's content, else the
    // first.
    let pos = current
        .and_then(|c| placed.iter().position(|(e, _)| e.same_state(c)))
        .or_else(|| placed.iter().position(|(_, s)| *s == Src::Incoming))
        .unwrap_or(0);
    let cur = placed.remove(pos);
    // The shown versions are the members themselves unless some vector is
    // a merge.
    let merged = placed.len() + 1 != next.len()
        || std::iter::once(&cur)
            .chain(&placed)
            .any(|(e, _)| !next.iter().any(|m| m == e));
    let diverged = next.len() > 1;
    Ok(Some(Plan {
        current: cur,
        siblings: placed,
        members: if merged { next } else { Vec::new() },
        diverged,
    }))
}

/// What a set of members shows, a function of the set alone (see the
/// module's doc):
/// - a member whose content a deletion saw is deleted with it, unless it
///   changed the metadata of exactly the content the deletion deleted
///   (the modification wins); with none left, one deletion is shown;
/// - of the survivors, the contents that no other survivor's supersedes
///   (content vectors) are shown, one version each (a split-brain when
///   there are several; directories are one content), and likewise for
///   metadata: one maximal metadata is applied to every shown version,
///   several of them with one content are a split-brain of metadata;
/// - a shown version's content vector covers the deletions it survived
///   and the content vectors of every member it covers, so a version
///   written on it keeps superseded what they superseded;
/// - each shown version's vector is the merge of every member's except
///   those showing another version's content or metadata, so a version
///   written on it supersedes everything it showed.
pub fn show(members: &[Entry]) -> Vec<Entry> {
    let mut sorted: Vec<&Entry> = members.iter().collect();
    sorted.sort_by(|a, b| {
        a.vv.order_key()
            .cmp(&b.vv.order_key())
            .then_with(|| a.hash.cmp(&b.hash))
    });
    let dels: Vec<&Entry> = sorted
        .iter()
        .copied()
        .filter(|e| e.kind == Kind::Tombstone)
        .collect();
    let alive: Vec<&Entry> = sorted
        .iter()
        .copied()
        .filter(|e| e.kind != Kind::Tombstone && !dels.iter().any(|t| deletes(t, e)))
        .collect();
    if !alive.is_empty() {
        return show_alive(&sorted, &alive, &dels);
    }
    // One deletion of everything (or nothing held): its content vector
    // covers every content deleted and everything the deletions saw.
    let Some(first_del) = dels.first() else {
        return Vec::new();
    };
    let mut t = (*first_del).clone();
    t.vv = union(&sorted, |e| &e.vv);
    t.data_vv = union(&sorted, |e| &e.data_vv).merge(&union(&dels, |e| &e.vv));
    t.meta_vv = union(&sorted, |e| &e.meta_vv);
    vec![t]
}

/// The merge of one vector (`f`) of each version in `set`.
fn union<'a, 'b: 'a>(
    set: impl IntoIterator<Item = &'a &'b Entry>,
    f: fn(&Entry) -> &VersionVector,
) -> VersionVector {
    set.into_iter()
        .fold(VersionVector::new(), |acc, e| acc.merge(f(e)))
}

/// Whether deletion `t` deletes the concurrent version `e`: it saw `e`'s
/// content, unless that content is exactly the one `t` deleted and `e`
/// changed metadata `t` did not see (a chmod concurrent with the delete:
/// the modification wins, as any change the delete did not see does).
fn deletes(t: &Entry, e: &Entry) -> bool {
    let saw_content = dominates_or_equal(&t.vv, &e.data_vv);
    let chmod_of_deleted = t.data_vv == e.data_vv && !dominates_or_equal(&t.vv, &e.meta_vv);
    saw_content && !chmod_of_deleted
}

/// `set` in groups of equal `same`, in order.
fn groups<'a>(set: Vec<&'a Entry>, same: &dyn Fn(&Entry, &Entry) -> bool) -> Vec<Vec<&'a Entry>> {
    let mut out: Vec<Vec<&Entry>> = Vec::new();
    for e in set {
        match out.iter_mut().find(|g| same(g[0], e)) {
            Some(g) => g.push(e),
            None => out.push(vec![e]),
        }
    }
    out
}

/// The members of every group but the `i`th.
fn others<'a>(all: &[Vec<&'a Entry>], i: usize) -> Vec<&'a Entry> {
    all.iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .flat_map(|(_, g)| g.iter().copied())
        .collect()
}

/// [`show`] once deletions are settled: `alive` are the survivors of the
/// deletions `dels`. A shown version's content supersedes every content
/// those deletions saw: a version written on it must not bring back what
/// they deleted.
fn show_alive(sorted: &[&Entry], alive: &[&Entry], dels: &[&Entry]) -> Vec<Entry> {
    let maximal = |f: fn(&Entry) -> &VersionVector| -> Vec<&Entry> {
        alive
            .iter()
            .copied()
            .filter(|x| {
                !alive
                    .iter()
                    .any(|y| f(y).compare(f(x)) == Relation::Dominates)
            })
            .collect()
    };
    let contents = groups(maximal(|e| &e.data_vv), &|a, b| {
        a.same_content(b) || (a.kind == Kind::Dir && b.kind == Kind::Dir)
    });
    let metas = groups(maximal(|e| &e.meta_vv), &|a, b| a.same_meta(b));
    // (content group, metadata group, members left out of the vector)
    let mut shown: Vec<(&Vec<&Entry>, &Vec<&Entry>, Vec<&Entry>)> = Vec::new();
    if contents.len() == 1 && metas.len() > 1 {
        for (i, m) in metas.iter().enumerate() {
            let out = others(&metas, i)
                .into_iter()
                .filter(|e| !contents[0].iter().any(|c| std::ptr::eq(*c, *e)))
                .collect();
            shown.push((&contents[0], m, out));
        }
    } else {
        for (i, c) in contents.iter().enumerate() {
            let m = if metas.len() == 1 { &metas[0] } else { c };
            shown.push((c, m, others(&contents, i)));
        }
    }
    shown
        .into_iter()
        .map(|(c, m, out)| {
            let mut e = c[0].clone();
            if e.kind != Kind::Dir || m[0].kind == Kind::Dir {
                e.mode = m[0].mode;
                e.owner = m[0].owner;
            }
            // Every member this version covers (all but those showing
            // another version's content or metadata): its vectors cover
            // theirs, aspect by aspect, so a version written on it
            // supersedes what they held as well as they themselves.
            // (Its own content group is always among them.)
            let covered: Vec<&Entry> = sorted
                .iter()
                .copied()
                .filter(|x| !out.iter().any(|o| std::ptr::eq(*o, *x)))
                .collect();
            e.data_vv = union(&covered, |e| &e.data_vv).merge(&union(dels, |e| &e.vv));
            e.meta_vv = union(m, |e| &e.meta_vv);
            e.vv = union(&covered, |e| &e.vv);
            e
        })
        .collect()
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
    w: super::types::WriteInfo,
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
    entry.data_vv = if entry.kind == Kind::Tombstone {
        // A deletion's content vector names the content it deleted (see
        // `show`: a change of that content's metadata alone, concurrent
        // with the deletion, outlives it).
        base_entry.map_or(w.base_data, |b| b.data_vv.clone())
    } else if content_changed {
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
    chosen: &VersionVector,
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
        .fold(VersionVector::new(), |acc, e| acc.merge(&e.vv))
        .bumped(me);
    let mut win = win.clone();
    win.vv = all.clone();
    win.data_vv = all.clone();
    win.meta_vv = all;
    Some((win, src))
}

fn dominates_or_equal(a: &VersionVector, b: &VersionVector) -> bool {
    matches!(a.compare(b), Relation::Dominates | Relation::Equal)
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

    /// [`reconcile`] for a brick whose shown versions are its members.
    fn rec(current: Option<&Entry>, siblings: &[Entry], incoming: &Entry) -> Option<Plan> {
        reconcile(current, siblings, &[], incoming).expect("content at hand")
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
        let p = rec(Some(&old), &[], &new).unwrap();
        assert_eq!(p.current.1, Src::Incoming);
        assert!(p.siblings.is_empty() && !p.diverged);
        assert!(rec(Some(&new), &[], &old).is_none());
        assert!(rec(Some(&new), &[], &new).is_none());
    }

    #[test]
    fn concurrent_different_content_is_split_brain() {
        let a = file(1, 0o644, &[(1, 1)], &[(1, 1)], &[]);
        let b = file(2, 0o644, &[(2, 1)], &[(2, 1)], &[]);
        let p = rec(Some(&a), &[], &b).unwrap();
        assert_eq!(p.current.1, Src::Current);
        assert_eq!(p.siblings.len(), 1);
        assert_eq!(p.siblings[0].1, Src::Incoming);
    }

    #[test]
    fn concurrent_identical_merges_silently() {
        let a = file(1, 0o644, &[(1, 1)], &[(1, 1)], &[]);
        let b = file(1, 0o644, &[(2, 1)], &[(2, 1)], &[]);
        let p = rec(Some(&a), &[], &b).unwrap();
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
            let p = rec(Some(x), &[], y).unwrap();
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
        let p = rec(Some(&modified), &[], &del).unwrap();
        assert_eq!(p.current.0.kind, Kind::File);
        assert!(p.siblings.is_empty());
        let p = rec(Some(&del), &[], &modified).unwrap();
        assert_eq!(p.current.0.kind, Kind::File);
        assert_eq!(p.current.1, Src::Incoming);
    }

    #[test]
    fn delete_versus_chmod_table() {
        // Base {0:1}: content 0 (data {0:1}), mode 644.
        let chmod = file(0, 0o755, &[(0, 1), (1, 1)], &[(0, 1)], &[(0, 1), (1, 1)]);
        let del = |v: &[(u64, u64)], data: &[(u64, u64)]| {
            let mut t = Entry::tombstone(RelPath::new("f").unwrap(), Uuid::nil());
            t.vv = vv(v);
            t.data_vv = vv(data);
            t.meta_vv = vv(v);
            t
        };
        // (deletion, what the path shows after both, either order)
        let table = [
            // Deleted the very content the other side chmodded: the chmod
            // wins, the file stays with its new mode.
            (del(&[(0, 1), (2, 1)], &[(0, 1)]), Kind::File),
            // Deleted after an edit the chmod never saw (the chmod's content
            // was already replaced): the delete wins.
            (del(&[(0, 1), (2, 2)], &[(0, 1), (2, 1)]), Kind::Tombstone),
            // The delete saw the chmod itself: it wins (it dominates).
            (del(&[(0, 1), (1, 1), (2, 1)], &[(0, 1)]), Kind::Tombstone),
        ];
        for (n, (t, want)) in table.into_iter().enumerate() {
            for (x, y) in [(&chmod, &t), (&t, &chmod)] {
                let p = rec(Some(x), &[], y);
                let shown = p.map_or_else(|| x.clone(), |p| p.current.0);
                assert_eq!(shown.kind, want, "case {n}");
                if want == Kind::File {
                    assert_eq!(shown.mode, 0o755, "case {n}");
                }
            }
        }
    }

    #[test]
    fn file_versus_directory_is_split_brain() {
        let f = file(1, 0o644, &[(1, 1)], &[(1, 1)], &[]);
        let mut d = file(0, 0o755, &[(2, 1)], &[(2, 1)], &[]);
        d.kind = Kind::Dir;
        let p = rec(Some(&f), &[], &d).unwrap();
        assert_eq!(p.siblings.len(), 1);
    }

    #[test]
    fn resolution_dominates_all_siblings() {
        let a = file(1, 0o644, &[(1, 1)], &[(1, 1)], &[]);
        let b = file(2, 0o644, &[(2, 1)], &[(2, 1)], &[]);
        let mut win = b.clone();
        win.vv = vv(&[(1, 1), (2, 1), (3, 1)]);
        let p = rec(Some(&a), &[b], &win).unwrap();
        assert!(p.siblings.is_empty());
        assert_eq!(p.current.1, Src::Incoming);
    }

    fn write(writer: u64, base: &Entry, changed: (bool, bool)) -> crate::store::types::WriteInfo {
        crate::store::types::WriteInfo {
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

    /// One brick of the model: what it shows (current first) and its
    /// members (empty: the shown versions).
    #[derive(Clone, Debug, Default, PartialEq)]
    struct Model {
        current: Option<Entry>,
        siblings: Vec<Entry>,
        members: Vec<Entry>,
    }

    impl Model {
        fn members(&self) -> Vec<Entry> {
            held(self.current.as_ref(), &self.siblings, &self.members)
                .into_iter()
                .cloned()
                .collect()
        }

        /// Whether this brick has `e`'s content (it keeps what it shows).
        fn has_content(&self, e: &Entry) -> bool {
            e.kind != Kind::File
                || self
                    .current
                    .iter()
                    .chain(&self.siblings)
                    .any(|s| s.same_content(e))
        }

        /// Receives `v`, its content at hand or not (a sender that does
        /// not have it cannot send it: the offer fails and is retried).
        fn receive(&mut self, v: &Entry, with_content: bool) -> Result<(), String> {
            let plan = reconcile(self.current.as_ref(), &self.siblings, &self.members, v)
                .map_err(|e| format!("{e:?}"))?;
            let Some(p) = plan else { return Ok(()) };
            let needs = |(e, s): &(Entry, Src)| e.kind == Kind::File && *s == Src::Incoming;
            if !with_content && (needs(&p.current) || p.siblings.iter().any(needs)) {
                return Err("the sender lacks the content".into());
            }
            self.current = Some(p.current.0);
            self.siblings = p.siblings.into_iter().map(|(e, _)| e).collect();
            self.members = p.members;
            Ok(())
        }

        /// What this brick offers a peer, in order: members whose content
        /// it shows first; each with whether it can send the content.
        fn offers(&self) -> Vec<(Entry, bool)> {
            let mut m: Vec<(Entry, bool)> = self
                .members()
                .into_iter()
                .map(|e| {
                    let c = self.has_content(&e);
                    (e, c)
                })
                .collect();
            m.sort_by_key(|(_, c)| !*c);
            m
        }

        /// The shown versions and the members, in a stable order (mtime
        /// and origin are informational).
        #[allow(clippy::type_complexity)]
        fn seen(&self) -> (Vec<(Vec<u8>, &'static str, [u8; 32], u32)>, Vec<Vec<u8>>) {
            let mut shown: Vec<_> = self
                .current
                .iter()
                .chain(&self.siblings)
                .map(|e| {
                    let mode = if e.kind == Kind::Tombstone { 0 } else { e.mode };
                    (e.vv.to_bytes(), e.kind.as_str(), e.hash, mode)
                })
                .collect();
            shown.sort();
            let mut members: Vec<_> = self.members().iter().map(|e| e.vv.to_bytes()).collect();
            members.sort();
            (shown, members)
        }
    }

    /// A history of one path: each step, a writer's mount writes on the
    /// current version its brick shows, that brick having received some of
    /// the versions so far (always the writer's own last one: a mount bases
    /// each change on what it last synced). The change is new content, a
    /// chmod, a delete, or the same state again; vectors are assigned as a
    /// brick assigns them.
    fn history(steps: &[(u64, u32, u8, u8)]) -> Vec<Entry> {
        let mut h = vec![file(0, 0o644, &[(9, 1)], &[(9, 1)], &[(9, 1)])];
        let mut last: std::collections::HashMap<u64, usize> = Default::default();
        for &(writer, subset, action, value) in steps {
            let mut brick = Model::default();
            for (i, e) in h.iter().enumerate() {
                if subset >> (i % 32) & 1 == 1 || last.get(&writer) == Some(&i) {
                    brick
                        .receive(e, true)
                        .expect("a writer's brick has every content");
                }
            }
            // The version the writer's mount last synced: one its brick
            // shows that holds the writer's own last version.
            let mine = last.get(&writer).map(|i| &h[*i].vv);
            let base = brick
                .current
                .iter()
                .chain(&brick.siblings)
                .find(|e| mine.is_none_or(|m| dominates_or_equal(&e.vv, m)))
                .cloned();
            let fresh = base.as_ref().is_none_or(|b| b.kind == Kind::Tombstone);
            let base = base.unwrap_or_else(|| file(0, 0o644, &[], &[], &[]));
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
            let changed = if fresh {
                (true, true)
            } else {
                (!base.same_content(&e), !base.same_meta(&e))
            };
            assign_vectors(
                &mut e,
                write(writer, &base, changed),
                brick.current.as_ref(),
                &brick.siblings,
            );
            last.insert(writer, h.len());
            h.push(e);
        }
        h
    }

    /// Bricks exchange what they hold until none changes (as the
    /// replicators do: each offers its members to every other); then a
    /// last round must change nothing and fail nowhere.
    fn exchange(bricks: &mut [Model]) -> Result<(), String> {
        for round in 0..=24 {
            let before = bricks.to_vec();
            let mut failed = Vec::new();
            for to in 0..bricks.len() {
                for from in 0..bricks.len() {
                    if from == to {
                        continue;
                    }
                    for (e, with_content) in bricks[from].offers() {
                        if let Err(x) = bricks[to].receive(&e, with_content) {
                            failed.push(format!("{from}->{to} {:?}: {x}", e.vv));
                        }
                    }
                }
            }
            if *bricks == *before && failed.is_empty() {
                return Ok(());
            }
            if round == 24 {
                return Err(format!("no rest: {failed:?}"));
            }
        }
        Ok(())
    }

    /// Delivers the history to three bricks in three orders (each version
    /// from its writer, content at hand), lets them exchange, and checks
    /// they show the same versions over the same members.
    fn check_orders(h: &[Entry], keys: &[u32]) -> Result<(), String> {
        let mut order: Vec<usize> = (0..h.len()).collect();
        order.sort_by_key(|i| keys[*i % keys.len()].wrapping_mul(*i as u32 + 7));
        let orders: [Vec<usize>; 3] = [(0..h.len()).collect(), order, (0..h.len()).rev().collect()];
        let mut bricks = vec![Model::default(); 3];
        for (b, o) in bricks.iter_mut().zip(&orders) {
            for i in o {
                let before = b.clone();
                b.receive(&h[*i], true).map_err(|e| {
                    format!(
                        "history {}\nversion {i}: {e}\nheld {}\nshowing {}",
                        brief(h),
                        brief(&before.members()),
                        brief(
                            &before
                                .current
                                .iter()
                                .chain(&before.siblings)
                                .cloned()
                                .collect::<Vec<_>>()
                        )
                    )
                })?;
            }
        }
        exchange(&mut bricks).map_err(|e| format!("history {}\n{e}", brief(h)))?;
        if bricks.iter().all(|b| b.seen() == bricks[0].seen()) {
            Ok(())
        } else {
            Err(format!(
                "history {}\nends as {}",
                brief(h),
                bricks
                    .iter()
                    .map(|b| format!(
                        "\nshows {}\nover {}",
                        brief(
                            &b.current
                                .iter()
                                .chain(&b.siblings)
                                .cloned()
                                .collect::<Vec<_>>()
                        ),
                        brief(&b.members())
                    ))
                    .collect::<String>()
            ))
        }
    }

    /// One line per version, for failure messages.
    fn brief(h: &[Entry]) -> String {
        h.iter()
            .enumerate()
            .map(|(i, e)| {
                format!(
                    "\n  {i}: {} c{} m{:o} vv{:?} d{:?} m{:?}",
                    e.kind.as_str(),
                    e.hash[0],
                    e.mode,
                    e.vv,
                    e.data_vv,
                    e.meta_vv
                )
            })
            .collect()
    }

    /// Steps: (writer, versions its brick has, action, value).
    type Steps = Vec<(u64, u32, u8, u8)>;

    fn steps(actions: &'static [u8]) -> impl proptest::strategy::Strategy<Value = Steps> {
        use proptest::prelude::*;
        proptest::collection::vec(
            (
                1u64..=3,
                any::<u32>(),
                proptest::sample::select(actions),
                0u8..8,
            ),
            1..12,
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(10000))]

        /// Reconciliation does not depend on arrival order: bricks that
        /// receive the same versions in different orders, then exchange
        /// what they hold, show the same versions (the same split-brain,
        /// or the same single version, under the same vector). For every
        /// mix of new contents, chmods, deletes and rewrites of the same
        /// state by three writers.
        #[test]
        fn arrival_order_does_not_matter(
            s in steps(&[0, 1, 2, 3]),
            keys in proptest::collection::vec(0u32..1000, 9),
        ) {
            let r = check_orders(&history(&s), &keys);
            proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }

        /// The same, for contents and deletes alone (the mix most
        /// scenarios of concurrent edits and removals reach).
        #[test]
        fn arrival_order_does_not_matter_for_writes_and_deletes(
            s in steps(&[0, 2]),
            keys in proptest::collection::vec(0u32..1000, 9),
        ) {
            let r = check_orders(&history(&s), &keys);
            proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
    }

    /// Three writers, a split-brain of contents and a chmod written on one
    /// side of it: the chmod's version covers a content that was already
    /// superseded on the writer's brick, and must keep it superseded (its
    /// content is no longer kept anywhere). Found by the property test with
    /// histories of 12 writes.
    #[test]
    fn a_version_written_on_one_side_of_a_split_keeps_superseded_contents_superseded() {
        let steps = [
            (2, 742110632, 0, 0),
            (1, 60146486, 0, 0),
            (3, 1574402252, 0, 0),
            (1, 0, 0, 0),
            (1, 0, 0, 0),
            (1, 0, 0, 0),
            (2, 43467400, 0, 1),
            (1, 667142912, 0, 3),
            (2, 0, 0, 2),
            (3, 715567232, 1, 0),
            (3, 3589759491, 1, 0),
            (1, 2659465344, 0, 0),
        ];
        check_orders(&history(&steps), &[0; 9]).unwrap();
    }

    /// The smallest history the merged vectors of earlier versions got
    /// wrong: two mounts write the same content to a new file at once, and
    /// each then deletes its copy. Whatever the order, the file is gone.
    #[test]
    fn two_writers_writing_the_same_then_deleting_it_delete_it() {
        let steps = [
            (1, 0b1, 0, 1),
            (2, 0b1, 0, 1),
            (1, 0b10, 2, 0),
            (2, 0b100, 2, 0),
        ];
        let h = history(&steps);
        check_orders(&h, &[3, 1, 4, 1, 5, 9, 2, 6, 5]).unwrap();
        let mut b = Model::default();
        for e in h.iter().rev() {
            b.receive(e, true).unwrap();
        }
        assert_eq!(b.current.map(|c| c.kind), Some(Kind::Tombstone));
    }
}

//! Receiving changesets all or nothing.
//!
//! A writing mount tags the changes that settled together with one
//! changeset id and the number of versions in it (`proto::Changeset`).
//! Replication delivers those versions to the brick a receiving mount
//! follows one by one, in any order, so the mount's [`Gate`] holds what
//! the feed brings until its changeset is complete, then releases the
//! whole set to be staged and made live in one burst. Sets leave the gate
//! in the order they arrived: a complete set behind an incomplete one
//! waits for it, and an incomplete set is released anyway (with a warning)
//! once it has waited [`MAX_WAIT`], so a member that never comes (its
//! writer crashed mid-push, or it was superseded before this mount saw
//! it) delays later changes by at most that bound. A path changed again
//! while held keeps only its newest version (conflicts stay per file).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use gsync_brick::store::types::Entry;
use gsync_brick::wire::proto::Changeset;
use gsync_brick::RelPath;

/// Longest an incomplete changeset holds back itself and the changes
/// behind it.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// A set of versions to make live together.
#[derive(Debug)]
pub struct Group {
    /// The changeset id (`None`: a change made on its own).
    pub id: Option<u64>,
    /// Versions the writer put in the set.
    pub members: u32,
    /// Members that arrived (a member superseded while held counts).
    seen: BTreeSet<RelPath>,
    /// The versions to apply, by path, with their feed sequence.
    pub entries: BTreeMap<RelPath, (u64, Entry)>,
    /// When the first member arrived.
    since: Instant,
}

impl Group {
    /// Every member arrived.
    pub fn complete(&self) -> bool {
        self.seen.len() as u64 >= u64::from(self.members)
    }

    /// Members that arrived, of how many.
    pub fn arrived(&self) -> (usize, u32) {
        (self.seen.len(), self.members)
    }
}

/// The holding area of one mount (see the module comment).
#[derive(Debug)]
pub struct Gate {
    groups: VecDeque<Group>,
    wait: Duration,
    /// Changesets of this mount's own pushes of which only some members
    /// went out (a push refused): id -> members sent.
    short: std::collections::HashMap<u64, u32>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new(MAX_WAIT)
    }
}

impl Gate {
    /// A gate whose incomplete sets wait at most `wait`.
    pub fn new(wait: Duration) -> Self {
        Self {
            groups: VecDeque::new(),
            wait,
            short: std::collections::HashMap::new(),
        }
    }

    /// This mount pushed changeset `id` but only `sent` of its members
    /// were accepted: its own copy of the set is complete with those.
    pub fn sent_short(&mut self, id: u64, sent: u32) {
        if self.short.len() > 1000 {
            self.short.clear();
        }
        self.short.insert(id, sent);
        for g in self.groups.iter_mut().filter(|g| g.id == Some(id)) {
            g.members = sent;
        }
    }

    /// Takes in a version from the feed, with its changeset if any.
    pub fn admit(&mut self, seq: u64, e: Entry, tag: Option<Changeset>, now: Instant) {
        // A newer version of a held path replaces it (wherever it is held).
        for g in &mut self.groups {
            g.entries.remove(&e.path);
        }
        let path = e.path.clone();
        let g = match tag {
            Some(t) if t.members > 1 => match self.groups.iter().position(|g| g.id == Some(t.id)) {
                Some(i) => &mut self.groups[i],
                None => {
                    let members = self.short.get(&t.id).copied().unwrap_or(t.members);
                    self.groups.push_back(Group {
                        id: Some(t.id),
                        members,
                        seen: BTreeSet::new(),
                        entries: BTreeMap::new(),
                        since: now,
                    });
                    let last = self.groups.len() - 1;
                    &mut self.groups[last]
                }
            },
            _ => {
                self.groups.push_back(Group {
                    id: None,
                    members: 1,
                    seen: BTreeSet::new(),
                    entries: BTreeMap::new(),
                    since: now,
                });
                let last = self.groups.len() - 1;
                &mut self.groups[last]
            }
        };
        g.seen.insert(path.clone());
        g.entries.insert(path, (seq, e));
    }

    /// The sets ready to go live, in order: complete ones, and incomplete
    /// ones that waited their bound, with the complete ones right behind.
    /// Sets emptied by newer versions are dropped.
    pub fn ready(&mut self, now: Instant) -> Vec<Group> {
        let mut out = Vec::new();
        while let Some(g) = self.groups.front() {
            // A set whose held versions were all replaced by newer ones has
            // nothing left to wait for.
            let go = g.complete()
                || g.entries.is_empty()
                || now.saturating_duration_since(g.since) >= self.wait;
            if !go {
                break;
            }
            if let Some(g) = self.groups.pop_front() {
                if !g.entries.is_empty() {
                    out.push(g);
                }
            }
        }
        out
    }

    /// When the first held set runs out of patience.
    pub fn deadline(&self) -> Option<Instant> {
        self.groups.front().map(|g| g.since + self.wait)
    }

    /// The lowest feed sequence held (the cursor must stay below it, so a
    /// restart fetches it again).
    pub fn min_seq(&self) -> Option<u64> {
        self.groups
            .iter()
            .flat_map(|g| g.entries.values().map(|(s, _)| *s))
            .min()
    }

    /// Sets held, and of those how many still miss members.
    pub fn held(&self) -> (usize, usize) {
        (
            self.groups.len(),
            self.groups.iter().filter(|g| !g.complete()).count(),
        )
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gsync_brick::wire::vv::VersionVector;

    fn e(p: &str, v: u64) -> Entry {
        let mut e = Entry::tombstone(RelPath::new(p).unwrap(), uuid::Uuid::nil());
        e.vv = VersionVector::from_entries([(1, v)]);
        e
    }

    fn cs(id: u64, members: u32) -> Option<Changeset> {
        Some(Changeset { id, members })
    }

    fn paths(g: &Group) -> Vec<&str> {
        g.entries.keys().map(RelPath::as_str).collect()
    }

    #[test]
    fn a_set_goes_live_once_complete() {
        let t0 = Instant::now();
        let mut g = Gate::default();
        g.admit(1, e("a", 1), cs(7, 3), t0);
        g.admit(2, e("b", 1), cs(7, 3), t0);
        assert!(g.ready(t0).is_empty());
        assert_eq!(g.min_seq(), Some(1));
        // The same member delivered twice is one member.
        g.admit(3, e("b", 1), cs(7, 3), t0);
        assert!(g.ready(t0).is_empty());
        g.admit(4, e("c", 1), cs(7, 3), t0);
        let r = g.ready(t0);
        assert_eq!(r.len(), 1);
        assert_eq!(paths(&r[0]), ["a", "b", "c"]);
        assert!(g.is_empty());
    }

    #[test]
    fn sets_leave_in_order_and_a_lost_member_waits_its_bound_only() {
        let t0 = Instant::now();
        let mut g = Gate::new(Duration::from_secs(10));
        g.admit(1, e("a", 1), cs(7, 2), t0);
        g.admit(2, e("x", 1), None, t0);
        g.admit(3, e("c", 1), cs(8, 2), t0);
        g.admit(4, e("d", 1), cs(8, 2), t0);
        // Complete sets wait behind the incomplete one...
        assert!(g.ready(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(g.held(), (3, 1));
        // ...for the bound, then all go, in order.
        let r = g.ready(t0 + Duration::from_secs(10));
        assert_eq!(r.len(), 3);
        assert!(!r[0].complete() && r[0].arrived() == (1, 2));
        assert_eq!(paths(&r[1]), ["x"]);
        assert_eq!(paths(&r[2]), ["c", "d"]);
    }

    #[test]
    fn a_set_this_mount_sent_short_is_complete_with_what_went_out() {
        let t0 = Instant::now();
        let mut g = Gate::default();
        g.admit(1, e("a", 1), cs(7, 3), t0);
        g.sent_short(7, 2);
        g.admit(2, e("b", 1), cs(7, 3), t0);
        assert_eq!(g.ready(t0).len(), 1);
        g.sent_short(9, 1);
        g.admit(3, e("c", 1), cs(9, 2), t0);
        assert_eq!(g.ready(t0).len(), 1);
    }

    #[test]
    fn a_newer_version_replaces_the_held_one() {
        let t0 = Instant::now();
        let mut g = Gate::default();
        // Set 7 = {a, b}; b was changed again before this mount saw set 7.
        g.admit(1, e("a", 1), cs(7, 2), t0);
        g.admit(2, e("a", 2), cs(8, 2), t0);
        assert!(g.ready(t0).is_empty());
        g.admit(3, e("b", 2), cs(8, 2), t0);
        // Set 7 holds nothing any more: it does not wait for its bound.
        let r = g.ready(t0);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].id, Some(8));
        assert_eq!(paths(&r[0]), ["a", "b"]);
        assert_eq!(r[0].entries[&RelPath::new("a").unwrap()].1.vv, e("a", 2).vv);
    }
}

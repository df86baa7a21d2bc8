//! Version vectors: the order of versions of one path.
//!
//! A vector maps a replica id (a brick, or a mount's sync agent) to a counter.
//! The writer that creates a version bumps its own entry. Two versions are
//! ordered when one vector is at least the other everywhere; otherwise they
//! are concurrent, and only concurrent versions with different content can be
//! a split-brain. Entries are kept sorted by id, which makes comparison a
//! merge walk and gives the encoding one canonical form.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How two version vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Same version.
    Equal,
    /// `self` is newer than `other`.
    Dominates,
    /// `self` is older than `other`.
    DominatedBy,
    /// Neither saw the other: a conflict if their contents differ.
    Concurrent,
}

/// A version vector: sorted `(replica id, counter)` pairs, no zero counters.
///
/// Decoding validates that form (a vector from a peer or a row is checked,
/// never trusted): ids strictly increasing, no zero counter, at most
/// [`MAX_ENTRIES`] entries. Comparison relies on it.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<(u64, u64)>")]
pub struct VersionVector(Vec<(u64, u64)>);

/// Most entries a vector may hold (one per writer that touched a path: a
/// handful in practice; far above any real volume's writers).
pub const MAX_ENTRIES: usize = 4096;

/// Why a decoded vector was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadVector {
    /// Ids not strictly increasing (unsorted or repeated).
    #[error("version vector ids not strictly increasing")]
    Unsorted,
    /// A zero counter (absent writers are left out).
    #[error("version vector with a zero counter")]
    ZeroCounter,
    /// Over [`MAX_ENTRIES`] entries.
    #[error("version vector with {0} entries (at most {MAX_ENTRIES})")]
    TooLong(usize),
}

impl TryFrom<Vec<(u64, u64)>> for VersionVector {
    type Error = BadVector;

    fn try_from(v: Vec<(u64, u64)>) -> Result<Self, BadVector> {
        if v.len() > MAX_ENTRIES {
            return Err(BadVector::TooLong(v.len()));
        }
        if v.iter().any(|e| e.1 == 0) {
            return Err(BadVector::ZeroCounter);
        }
        if v.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(BadVector::Unsorted);
        }
        Ok(Self(v))
    }
}

impl VersionVector {
    /// The empty vector (a path never written).
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// True for the empty vector.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The counter of `id` (0 when absent).
    pub fn get(&self, id: u64) -> u64 {
        self.0
            .binary_search_by_key(&id, |e| e.0)
            .map_or(0, |i| self.0[i].1)
    }

    /// Sets the counter of `id`.
    pub fn set(&mut self, id: u64, counter: u64) {
        match self.0.binary_search_by_key(&id, |e| e.0) {
            Ok(i) if counter == 0 => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].1 = counter,
            Err(_) if counter == 0 => {}
            Err(i) => self.0.insert(i, (id, counter)),
        }
    }

    /// Returns a copy with `id`'s counter incremented.
    pub fn bumped(&self, id: u64) -> Self {
        let mut v = self.clone();
        v.set(id, self.get(id) + 1);
        v
    }

    /// The entries, sorted by id.
    pub fn entries(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// Builds a vector from arbitrary entries (sorted, zeros dropped, the
    /// largest counter kept for a repeated id).
    pub fn from_entries(entries: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut v = Self::new();
        for (id, c) in entries {
            if c > v.get(id) {
                v.set(id, c);
            }
        }
        v
    }

    /// Compares `self` with `other`.
    pub fn compare(&self, other: &Self) -> Relation {
        let (mut greater, mut less) = (false, false);
        let (a, b) = (&self.0, &other.0);
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let ord = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.0.cmp(&y.0),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match ord {
                Ordering::Less => {
                    greater = true;
                    i += 1;
                }
                Ordering::Greater => {
                    less = true;
                    j += 1;
                }
                Ordering::Equal => {
                    match a[i].1.cmp(&b[j].1) {
                        Ordering::Greater => greater = true,
                        Ordering::Less => less = true,
                        Ordering::Equal => {}
                    }
                    i += 1;
                    j += 1;
                }
            }
            if greater && less {
                return Relation::Concurrent;
            }
        }
        match (greater, less) {
            (false, false) => Relation::Equal,
            (true, false) => Relation::Dominates,
            (false, true) => Relation::DominatedBy,
            (true, true) => Relation::Concurrent,
        }
    }

    /// The least vector that dominates or equals both.
    pub fn merge(&self, other: &Self) -> Self {
        Self::from_entries(self.0.iter().chain(other.0.iter()).copied())
    }

    /// A deterministic total order used only to list versions stably (never
    /// to pick a winner): by sum of counters, then lexicographically.
    pub fn order_key(&self) -> (u64, &[(u64, u64)]) {
        (self.0.iter().map(|e| e.1).sum(), &self.0)
    }

    /// Compact binary form: for each entry, id and counter as LEB128.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 4);
        for &(id, c) in &self.0 {
            put_varint(&mut out, id);
            put_varint(&mut out, c);
        }
        out
    }

    /// Parses [`Self::to_bytes`]; `None` on malformed input.
    pub fn from_bytes(mut bytes: &[u8]) -> Option<Self> {
        let mut v = Vec::new();
        while !bytes.is_empty() {
            let id = get_varint(&mut bytes)?;
            let c = get_varint(&mut bytes)?;
            v.push((id, c));
        }
        Self::try_from(v).ok()
    }
}

fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    loop {
        let b = (x & 0x7f) as u8;
        x >>= 7;
        if x == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn get_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut x = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        x |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(x);
        }
    }
    None
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (n, (id, c)) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{:04x}:{c}", id & 0xffff)?;
        }
        f.write_str("}")
    }
}

impl fmt::Display for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_refuses_vectors_out_of_form() {
        let enc = |v: Vec<(u64, u64)>| crate::wire::codec::encode(&v).unwrap();
        let dec = |b: Vec<u8>| crate::wire::codec::decode::<VersionVector>(&b);
        let table: Vec<(Vec<(u64, u64)>, bool)> = vec![
            (vec![], true),
            (vec![(1, 1), (7, 3)], true),
            (vec![(7, 3), (1, 1)], false),
            (vec![(1, 1), (1, 2)], false),
            (vec![(1, 0)], false),
            ((1..=MAX_ENTRIES as u64).map(|i| (i, 1)).collect(), true),
            (
                (1..=MAX_ENTRIES as u64 + 1).map(|i| (i, 1)).collect(),
                false,
            ),
        ];
        for (entries, ok) in table {
            let n = entries.len();
            let got = dec(enc(entries.clone()));
            assert_eq!(got.is_ok(), ok, "{n} entries: {:?}", &entries[..n.min(3)]);
            if ok {
                // Same bytes as the vector itself encodes to.
                let v = got.unwrap();
                assert_eq!(crate::wire::codec::encode(&v).unwrap(), enc(entries));
            }
        }
        // The compact form is checked the same way.
        let bad = [1u8, 1, 1, 2]; // id 1 twice
        assert!(VersionVector::from_bytes(&bad).is_none());
        assert!(VersionVector::from_bytes(&[3, 0]).is_none());
    }
    use proptest::prelude::*;

    fn vv(e: &[(u64, u64)]) -> VersionVector {
        VersionVector::from_entries(e.iter().copied())
    }

    #[test]
    fn table() {
        let cases = [
            (vec![], vec![], Relation::Equal),
            (vec![(1, 1)], vec![], Relation::Dominates),
            (vec![], vec![(1, 1)], Relation::DominatedBy),
            (vec![(1, 2)], vec![(1, 1)], Relation::Dominates),
            (vec![(1, 1)], vec![(2, 1)], Relation::Concurrent),
            (vec![(1, 1), (2, 1)], vec![(2, 1)], Relation::Dominates),
            (
                vec![(1, 2), (2, 1)],
                vec![(1, 1), (2, 2)],
                Relation::Concurrent,
            ),
            (
                vec![(1, 1), (3, 1)],
                vec![(1, 1), (2, 1), (3, 1)],
                Relation::DominatedBy,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(vv(&a).compare(&vv(&b)), want, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn bump_and_set_zero() {
        let mut v = VersionVector::new().bumped(5).bumped(5).bumped(2);
        assert_eq!(v.entries(), &[(2, 1), (5, 2)]);
        v.set(2, 0);
        assert_eq!(v.entries(), &[(5, 2)]);
    }

    #[test]
    fn malformed_bytes() {
        assert!(VersionVector::from_bytes(&[0x80]).is_none());
        assert!(VersionVector::from_bytes(&[1, 0]).is_none()); // zero counter
        assert!(VersionVector::from_bytes(&[2, 1, 1, 1]).is_none()); // unsorted
        assert!(VersionVector::from_bytes(&[0xff; 12]).is_none());
    }

    fn arb() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u64..6, 0u64..4), 0..6).prop_map(VersionVector::from_entries)
    }

    proptest! {
        #[test]
        fn compare_is_antisymmetric(a in arb(), b in arb()) {
            let want = match a.compare(&b) {
                Relation::Equal => Relation::Equal,
                Relation::Dominates => Relation::DominatedBy,
                Relation::DominatedBy => Relation::Dominates,
                Relation::Concurrent => Relation::Concurrent,
            };
            prop_assert_eq!(b.compare(&a), want);
            prop_assert_eq!(a.compare(&b) == Relation::Equal, a == b);
        }

        #[test]
        fn merge_laws(a in arb(), b in arb(), c in arb()) {
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(a.merge(&a), a.clone());
            let m = a.merge(&b);
            prop_assert!(matches!(m.compare(&a), Relation::Dominates | Relation::Equal));
            prop_assert!(matches!(m.compare(&b), Relation::Dominates | Relation::Equal));
        }

        #[test]
        fn bump_dominates(a in arb(), id in 0u64..8) {
            prop_assert_eq!(a.bumped(id).compare(&a), Relation::Dominates);
        }

        #[test]
        fn bytes_round_trip(a in arb()) {
            prop_assert_eq!(VersionVector::from_bytes(&a.to_bytes()), Some(a));
        }

        #[test]
        fn from_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = VersionVector::from_bytes(&b);
        }
    }
}

//! PURE: what the mount agent does with one path, decided from what it
//! knows: the journal's record of the version last synced, the folder's
//! state, and (for a remote change) the version the brick announces.
//! `sync` gathers those facts (stat, journal, a read of the content),
//! asks here, and executes the answer; nothing here does I/O, so every
//! decision has a table test.
//!
//! Two rules run through all of it: a local edit not pushed yet is never
//! overwritten by a remote version (it is pushed with its base, and the
//! bricks decide: newer, or a split-brain), and a path whose local state is
//! what the journal synced is only ever changed from the volume.

use gsync_brick::store::chunking;
use gsync_brick::store::types::{Entry, Kind};
use gsync_brick::wire::vv::Relation;

use crate::journal::Record;
use crate::local::{Found, LocalStat};

/// What a local path's state asks for, before its content is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Local {
    /// Nothing to push: unchanged since synced, ignored, or gone and
    /// never synced (or synced as deleted).
    Nothing,
    /// A fifo, socket or device: never synced (warned about once).
    Special,
    /// Gone from the folder: its deletion is pushed (for a directory, its
    /// recorded children's first).
    Delete {
        /// The synced version was a directory.
        dir: bool,
    },
    /// A directory the volume deleted that the folder kept for files in it:
    /// settled against what is below it; if the folder put real content
    /// there, it is a local change after all (see [`changed`]).
    SettleKept,
    /// Changed locally: see [`changed`].
    Changed,
}

/// What a local path's state asks for: `found` in the folder, `j` in the
/// journal, `ignored` by the ignore rules (for the kind found).
pub(crate) fn local(found: &Found, j: Option<&Record>, ignored: bool, read_only: bool) -> Local {
    let st = match found {
        Found::Special => return Local::Special,
        Found::Missing => {
            return match j.filter(|j| j.entry.kind != Kind::Tombstone) {
                None => Local::Nothing,
                Some(_) if read_only => Local::Changed,
                Some(j) => Local::Delete {
                    dir: j.entry.kind == Kind::Dir,
                },
            }
        }
        Found::Some(st) => st,
    };
    if ignored {
        return Local::Nothing;
    }
    match j {
        Some(j) if j.stat == *st => Local::Nothing,
        Some(j) if kept_after_deletion(j, st) => Local::SettleKept,
        _ => Local::Changed,
    }
}

/// What a local change asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Changed {
    /// Read and hash it, then see [`described`].
    Describe,
    /// A read-only mount: the local change is undone (the local version
    /// kept aside).
    Revert,
    /// A read-only mount's directory whose mtime moved because its
    /// children changed: not an edit; only its stat is remembered.
    RecordStat,
}

/// What a local change (`st` now, `None` if gone) asks for.
pub(crate) fn changed(st: Option<&LocalStat>, j: Option<&Record>, read_only: bool) -> Changed {
    if !read_only {
        return Changed::Describe;
    }
    let dir_mtime_only = match (st, j) {
        (Some(st), Some(j)) => {
            j.entry.kind == Kind::Dir && st.kind == Kind::Dir && j.stat.mode == st.mode
        }
        _ => false,
    };
    if dir_mtime_only {
        Changed::RecordStat
    } else {
        Changed::Revert
    }
}

/// What a local version, once read and hashed, asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Described {
    /// Only its mtime (or inode) moved: the same state as synced; only the
    /// new stat is remembered.
    RecordStat,
    /// A new version: pushed with the synced one as its base.
    Push,
}

/// What local version `entry` asks for against the journal's record.
pub(crate) fn described(entry: &Entry, j: Option<&Record>) -> Described {
    match j {
        Some(j) if j.entry.kind != Kind::Tombstone && j.entry.same_state(entry) => {
            Described::RecordStat
        }
        _ => Described::Push,
    }
}

/// True if `rec` (a deletion synced from the volume) and the folder's stat
/// `st` say a directory was kept after the volume deleted it: the folder
/// still had files in it.
pub(crate) fn kept_after_deletion(rec: &Record, st: &LocalStat) -> bool {
    rec.entry.kind == Kind::Tombstone
        && rec.stat.kind == Kind::Dir
        && st.kind == Kind::Dir
        && rec.stat.ino == st.ino
}

/// How a version the brick announces compares with the one synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Versus {
    /// Older than the synced version: nothing to do.
    Older,
    /// The synced version itself, announced again: this mount's own push
    /// coming back, or the brick now holding a concurrent sibling beside
    /// it (or no longer): the split-brain flag is looked at again.
    Same,
    /// Concurrent with the synced version. The same state: the vectors
    /// merge silently. A different one: a split-brain, and this mount
    /// keeps its own version (the bricks hold both).
    Concurrent {
        /// Both versions hold the same state.
        same_state: bool,
    },
    /// Newer (or the path was never synced): see [`versus_folder`].
    Newer,
}

/// How the announced version `e` compares with the journal's record `j`.
pub(crate) fn versus_synced(e: &Entry, j: Option<&Record>) -> Versus {
    let Some(j) = j else {
        return Versus::Newer;
    };
    match e.vv.compare(&j.entry.vv) {
        Relation::DominatedBy => Versus::Older,
        Relation::Equal => Versus::Same,
        Relation::Concurrent => Versus::Concurrent {
            same_state: j.entry.same_state(e),
        },
        Relation::Dominates => Versus::Newer,
    }
}

/// What a newer remote version asks of the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Remote {
    /// Placed in the folder. `known_chunks`: a file smaller than the
    /// smallest chunk is one chunk, its whole content, so its chunk list
    /// is known without asking the brick.
    Place {
        /// The chunk list follows from the entry alone.
        known_chunks: bool,
    },
    /// The folder has a local edit not pushed yet: it is never
    /// overwritten; it is pushed with its base version, and the bricks
    /// decide.
    LocalEdit,
    /// The path exists here and on the volume with no journal record (a
    /// first attach, or created on both sides): compared by content;
    /// identical merges, else `--prefer` decides, else a split-brain.
    FirstContact,
}

/// What newer remote version `e` asks of the folder, where the path is
/// `found` and the journal holds `j`.
pub(crate) fn versus_folder(e: &Entry, j: Option<&Record>, found: &Found) -> Remote {
    let modified = match (j, found) {
        (Some(j), Found::Some(st)) => {
            j.stat != *st && !(j.stat.kind == Kind::Dir && st.kind == Kind::Dir)
        }
        (Some(j), Found::Missing) => j.entry.kind != Kind::Tombstone,
        (None, Found::Some(st)) => !(st.kind == Kind::Dir && e.kind == Kind::Dir),
        (_, Found::Special) => true,
        (None, Found::Missing) => false,
    };
    match (modified, j, found) {
        (true, None, Found::Some(_)) => Remote::FirstContact,
        (true, _, _) => Remote::LocalEdit,
        (false, _, _) => Remote::Place {
            known_chunks: e.kind == Kind::File
                && e.size > 0
                && e.size < u64::from(chunking::MIN_CHUNK),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gsync_brick::wire::vv::VersionVector;
    use gsync_brick::RelPath;

    fn st(kind: Kind, ino: u64, mtime: i64, mode: u32) -> LocalStat {
        LocalStat {
            kind,
            size: 3,
            mode,
            mtime_ns: mtime,
            ino,
            owner: (0, 0),
            target: None,
        }
    }

    fn entry(kind: Kind, hash: u8, vv: &[(u64, u64)]) -> Entry {
        let mut e = Entry::tombstone(RelPath::new("p").unwrap(), uuid::Uuid::nil());
        e.kind = kind;
        e.size = if kind == Kind::File { 3 } else { 0 };
        e.mode = 0o644;
        e.hash = [hash; 32];
        e.vv = VersionVector::from_entries(vv.iter().copied());
        e
    }

    fn rec(e: Entry, stat: LocalStat) -> Record {
        Record {
            entry: e,
            chunks: Vec::new(),
            stat,
            conflict: false,
        }
    }

    #[test]
    fn local_states() {
        let file_st = st(Kind::File, 1, 10, 0o644);
        let touched = st(Kind::File, 1, 20, 0o644);
        let dir_st = st(Kind::Dir, 5, 10, 0o755);
        let synced = rec(entry(Kind::File, 1, &[(1, 1)]), file_st.clone());
        let synced_dir = rec(entry(Kind::Dir, 0, &[(1, 1)]), dir_st.clone());
        let deleted = rec(entry(Kind::Tombstone, 0, &[(1, 2)]), LocalStat::missing());
        let kept = rec(entry(Kind::Tombstone, 0, &[(1, 2)]), dir_st.clone());
        let some = |s: &LocalStat| Found::Some(s.clone());
        // (found, journal, ignored, read-only, expected)
        let table: Vec<(Found, Option<&Record>, bool, bool, Local)> = vec![
            (Found::Special, Some(&synced), false, false, Local::Special),
            (Found::Missing, None, false, false, Local::Nothing),
            (Found::Missing, Some(&deleted), false, false, Local::Nothing),
            (
                Found::Missing,
                Some(&synced),
                false,
                false,
                Local::Delete { dir: false },
            ),
            (
                Found::Missing,
                Some(&synced_dir),
                false,
                false,
                Local::Delete { dir: true },
            ),
            (Found::Missing, Some(&synced), false, true, Local::Changed),
            (some(&file_st), Some(&synced), false, false, Local::Nothing),
            (some(&touched), Some(&synced), false, false, Local::Changed),
            (some(&touched), Some(&synced), true, false, Local::Nothing),
            (some(&file_st), None, false, false, Local::Changed),
            (some(&file_st), Some(&deleted), false, false, Local::Changed),
            (some(&dir_st), Some(&kept), false, false, Local::Nothing),
            (
                some(&st(Kind::Dir, 5, 99, 0o755)),
                Some(&kept),
                false,
                false,
                Local::SettleKept,
            ),
            // Another directory made in its place (a new inode) is new.
            (
                some(&st(Kind::Dir, 6, 99, 0o755)),
                Some(&kept),
                false,
                false,
                Local::Changed,
            ),
        ];
        for (i, (found, j, ignored, ro, want)) in table.into_iter().enumerate() {
            assert_eq!(local(&found, j, ignored, ro), want, "case {i}");
        }
    }

    #[test]
    fn local_changes() {
        let dir_st = st(Kind::Dir, 5, 10, 0o755);
        let synced_dir = rec(entry(Kind::Dir, 0, &[(1, 1)]), dir_st.clone());
        let synced = rec(
            entry(Kind::File, 1, &[(1, 1)]),
            st(Kind::File, 1, 10, 0o644),
        );
        let table: Vec<(Option<LocalStat>, Option<&Record>, bool, Changed)> = vec![
            (
                Some(st(Kind::File, 1, 20, 0o644)),
                Some(&synced),
                false,
                Changed::Describe,
            ),
            (None, Some(&synced), false, Changed::Describe),
            (
                Some(st(Kind::File, 1, 20, 0o644)),
                Some(&synced),
                true,
                Changed::Revert,
            ),
            (None, Some(&synced), true, Changed::Revert),
            (
                Some(st(Kind::Dir, 5, 20, 0o755)),
                Some(&synced_dir),
                true,
                Changed::RecordStat,
            ),
            // A chmod of a directory on a read-only mount is an edit.
            (
                Some(st(Kind::Dir, 5, 20, 0o700)),
                Some(&synced_dir),
                true,
                Changed::Revert,
            ),
            (Some(dir_st), None, true, Changed::Revert),
        ];
        for (i, (now, j, ro, want)) in table.into_iter().enumerate() {
            assert_eq!(changed(now.as_ref(), j, ro), want, "case {i}");
        }
    }

    #[test]
    fn described_versions() {
        let s = st(Kind::File, 1, 10, 0o644);
        let synced = rec(entry(Kind::File, 1, &[(1, 1)]), s.clone());
        let deleted = rec(entry(Kind::Tombstone, 0, &[(1, 2)]), LocalStat::missing());
        let table: Vec<(Entry, Option<&Record>, Described)> = vec![
            (
                entry(Kind::File, 1, &[]),
                Some(&synced),
                Described::RecordStat,
            ),
            (entry(Kind::File, 2, &[]), Some(&synced), Described::Push),
            (entry(Kind::File, 1, &[]), None, Described::Push),
            (
                entry(Kind::Tombstone, 0, &[]),
                Some(&deleted),
                Described::Push,
            ),
            (entry(Kind::Dir, 0, &[]), Some(&synced), Described::Push),
        ];
        for (i, (e, j, want)) in table.into_iter().enumerate() {
            assert_eq!(described(&e, j), want, "case {i}");
        }
    }

    #[test]
    fn announced_versions_against_the_synced_one() {
        let s = st(Kind::File, 1, 10, 0o644);
        let synced = rec(entry(Kind::File, 1, &[(1, 2)]), s);
        let table: Vec<(Entry, Option<&Record>, Versus)> = vec![
            (
                entry(Kind::File, 9, &[(1, 1)]),
                Some(&synced),
                Versus::Older,
            ),
            (entry(Kind::File, 1, &[(1, 2)]), Some(&synced), Versus::Same),
            (
                entry(Kind::File, 9, &[(1, 3)]),
                Some(&synced),
                Versus::Newer,
            ),
            (entry(Kind::File, 9, &[(1, 1)]), None, Versus::Newer),
            (
                entry(Kind::File, 1, &[(2, 1)]),
                Some(&synced),
                Versus::Concurrent { same_state: true },
            ),
            (
                entry(Kind::File, 9, &[(2, 1)]),
                Some(&synced),
                Versus::Concurrent { same_state: false },
            ),
        ];
        for (i, (e, j, want)) in table.into_iter().enumerate() {
            assert_eq!(versus_synced(&e, j), want, "case {i}");
        }
    }

    #[test]
    fn newer_versions_against_the_folder() {
        let s = st(Kind::File, 1, 10, 0o644);
        let dir_st = st(Kind::Dir, 5, 10, 0o755);
        let synced = rec(entry(Kind::File, 1, &[(1, 1)]), s.clone());
        let synced_dir = rec(entry(Kind::Dir, 0, &[(1, 1)]), dir_st.clone());
        let deleted = rec(entry(Kind::Tombstone, 0, &[(1, 2)]), LocalStat::missing());
        let small = entry(Kind::File, 2, &[(1, 3)]);
        let mut big = small.clone();
        big.size = u64::from(chunking::MIN_CHUNK);
        let mut empty = small.clone();
        empty.size = 0;
        let dir = entry(Kind::Dir, 0, &[(1, 3)]);
        let place = Remote::Place {
            known_chunks: false,
        };
        let some = |s: &LocalStat| Found::Some(s.clone());
        let table: Vec<(&Entry, Option<&Record>, Found, Remote)> = vec![
            (
                &small,
                Some(&synced),
                some(&s),
                Remote::Place { known_chunks: true },
            ),
            (&big, Some(&synced), some(&s), place),
            (&empty, Some(&synced), some(&s), place),
            (
                &dir,
                Some(&synced_dir),
                some(&st(Kind::Dir, 5, 99, 0o700)),
                place,
            ),
            (
                &small,
                Some(&deleted),
                Found::Missing,
                Remote::Place { known_chunks: true },
            ),
            (
                &small,
                None,
                Found::Missing,
                Remote::Place { known_chunks: true },
            ),
            (&dir, None, some(&dir_st), place),
            // Never overwrite a local edit or deletion not pushed yet.
            (
                &small,
                Some(&synced),
                some(&st(Kind::File, 1, 20, 0o644)),
                Remote::LocalEdit,
            ),
            (&small, Some(&synced), Found::Missing, Remote::LocalEdit),
            (&small, Some(&synced), Found::Special, Remote::LocalEdit),
            (&small, None, Found::Special, Remote::LocalEdit),
            (&small, None, some(&s), Remote::FirstContact),
            (&small, None, some(&dir_st), Remote::FirstContact),
        ];
        for (i, (e, j, found, want)) in table.into_iter().enumerate() {
            assert_eq!(versus_folder(e, j, &found), want, "case {i}");
        }
    }
}

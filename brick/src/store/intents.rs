//! Placements in flight, and putting a brick back after a crash among them.
//!
//! A brick places a version in its directory (rename over, mkdir, symlink,
//! remove) before the group commit records it in the database, so many
//! placements share one fsync. A kill -9 in between leaves the directory
//! holding what the database does not describe: a file nobody sent again
//! (its sender deleted it meanwhile) stays in the brick directory, or an
//! unrecorded overwrite sits under the recorded version's name and every
//! read of it fails its hash check.
//!
//! So each placement first appends its path to `.gsync/placing` (a plain
//! append, no fsync: what a killed process wrote is in the page cache),
//! and the file is emptied whenever no placement is in flight. Opening a
//! brick puts every path still listed back to what the database records:
//! content it does not describe is set aside under `.gsync/stray-*`
//! (never served, never deleted), and a recorded file whose content was
//! replaced gets it back from the trash or the split-brain store, which
//! keep the replaced content before the rename.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;

use super::types::{Entry, Kind};
use super::{chunking, files, hex, Brick, StoreError};
use crate::wire::path::RESERVED;
use crate::RelPath;

const FILE: &str = "placing";

/// The in-flight list of one brick.
#[derive(Debug)]
pub struct Intents {
    path: PathBuf,
    /// The open list and how many placements are in flight.
    state: Mutex<Option<(std::fs::File, usize)>>,
}

/// One placement in flight; its end may empty the list.
pub struct Placement<'a>(&'a Intents);

impl Drop for Placement<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((f, n)) = st.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                let _ = f.set_len(0);
            }
        }
    }
}

impl Intents {
    /// The list of the brick at `root` (opened on first use).
    pub fn new(root: &Path) -> Self {
        Self {
            path: root.join(RESERVED).join(FILE),
            state: Mutex::new(None),
        }
    }

    /// Notes that `path` is about to be placed; held until its commit is
    /// durable (or failed).
    pub fn begin(&self, path: &RelPath) -> Result<Placement<'_>, StoreError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| StoreError::io("open", self.path.display(), e))?;
            *st = Some((f, 0));
        }
        if let Some((f, n)) = st.as_mut() {
            f.write_all(format!("{}\n", path.as_str()).as_bytes())
                .map_err(|e| StoreError::io("write", self.path.display(), e))?;
            *n += 1;
        }
        Ok(Placement(self))
    }
}

/// What to do with one listed path, given what the database records and
/// what the directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// They agree.
    Keep,
    /// Set what is there aside; the database records nothing live here.
    SetAside,
    /// Set what is there aside (if anything) and put the recorded file's
    /// content back.
    Restore,
    /// Set what is there aside (if anything) and make the recorded
    /// directory.
    MakeDir,
    /// Set what is there aside (if anything) and make the recorded link.
    MakeLink,
}

/// What the directory holds at a listed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnDisk {
    /// Nothing.
    Nothing,
    /// A directory; whether the database records something live below it.
    Dir { live_below: bool },
    /// A file with this content hash (`None`: unreadable).
    File(Option<[u8; 32]>),
    /// A symlink to this target.
    Link(String),
}

/// The decision for one listed path (pure; see the table test).
pub fn decide(recorded: Option<&Entry>, disk: &OnDisk) -> Fix {
    let live = recorded.filter(|e| e.kind != Kind::Tombstone);
    match (live, disk) {
        (None, OnDisk::Nothing) => Fix::Keep,
        // A directory holding recorded paths stays (it is their parent).
        (None, OnDisk::Dir { live_below: true }) => Fix::Keep,
        (None, _) => Fix::SetAside,
        (Some(e), d) => match (e.kind, d) {
            (Kind::File, OnDisk::File(Some(h))) if *h == e.hash => Fix::Keep,
            (Kind::File, _) => Fix::Restore,
            (Kind::Dir, OnDisk::Dir { .. }) => Fix::Keep,
            (Kind::Dir, _) => Fix::MakeDir,
            (Kind::Symlink, OnDisk::Link(t)) if e.target.as_deref() == Some(t.as_str()) => {
                Fix::Keep
            }
            (Kind::Symlink, _) => Fix::MakeLink,
            (Kind::Tombstone, _) => Fix::Keep,
        },
    }
}

/// Puts every path listed as in flight back to what the database records
/// (see the module comment), then empties the list. Returns how many
/// paths needed it.
pub fn recover(root: &Path, conn: &Connection) -> Result<usize, StoreError> {
    let list = root.join(RESERVED).join(FILE);
    let text = match std::fs::read_to_string(&list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io("read", list.display(), e)),
    };
    let paths: BTreeSet<RelPath> = text.lines().filter_map(|l| RelPath::new(l).ok()).collect();
    let mut aside: Option<PathBuf> = None;
    let mut fixed = 0;
    // Deepest first: a directory is judged after what it held.
    let mut order: Vec<&RelPath> = paths.iter().collect();
    order.sort_by_key(|p| std::cmp::Reverse(p.depth()));
    for p in order {
        // Below a missing parent or a symlink: nothing of it on disk.
        let Ok(real) = files::resolve(root, p, false) else {
            continue;
        };
        let recorded = Brick::load(conn, p)?.map(|(e, _)| e);
        let disk = on_disk(conn, &real, p)?;
        let fix = decide(recorded.as_ref(), &disk);
        if fix == Fix::Keep {
            continue;
        }
        fixed += 1;
        if disk != OnDisk::Nothing {
            let dir = aside.get_or_insert_with(|| stray_dir(root));
            let dest = p.under(dir);
            if let Some(d) = dest.parent() {
                std::fs::create_dir_all(d).map_err(|e| StoreError::io("create", d.display(), e))?;
            }
            std::fs::rename(&real, &dest).map_err(|e| StoreError::io("set aside", p, e))?;
        }
        let Some(e) = recorded.filter(|e| e.kind != Kind::Tombstone) else {
            tracing::warn!(brick = %root.display(), path = %p, "content placed but never recorded before a crash set aside under .gsync/");
            remove_unrecorded_parents(root, conn, p)?;
            continue;
        };
        match fix {
            Fix::Restore => restore_file(root, &e, &real)?,
            Fix::MakeDir => files::place_dir(&real, e.mode, e.mtime_ns)
                .map_err(|x| StoreError::io("mkdir", p, x))?,
            Fix::MakeLink => files::place_symlink(
                &files::tmp_dir(root),
                e.target.as_deref().unwrap_or(""),
                &real,
                e.mtime_ns,
            )
            .map_err(|x| StoreError::io("symlink", p, x))?,
            Fix::Keep | Fix::SetAside => {}
        }
        tracing::warn!(brick = %root.display(), path = %p, "a change placed but never recorded before a crash was undone: the recorded version is back");
    }
    files::sync_parent(&list);
    std::fs::write(&list, b"").map_err(|e| StoreError::io("write", list.display(), e))?;
    Ok(fixed)
}

/// Removes the empty parents of `p` the database records nothing live
/// for (made by the placement set aside), nearest first.
fn remove_unrecorded_parents(
    root: &Path,
    conn: &Connection,
    p: &RelPath,
) -> Result<(), StoreError> {
    let mut cur = p.parent();
    while let Some(d) = cur {
        let live = Brick::load(conn, &d)?.is_some_and(|(e, _)| e.kind != Kind::Tombstone);
        if live || std::fs::remove_dir(d.under(root)).is_err() {
            break;
        }
        cur = d.parent();
    }
    Ok(())
}

fn stray_dir(root: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    root.join(RESERVED).join(format!("stray-{stamp}"))
}

fn on_disk(conn: &Connection, real: &Path, p: &RelPath) -> Result<OnDisk, StoreError> {
    let Ok(m) = std::fs::symlink_metadata(real) else {
        return Ok(OnDisk::Nothing);
    };
    let ft = m.file_type();
    Ok(if ft.is_dir() {
        OnDisk::Dir {
            live_below: super::apply::live_below(conn, p, None)?,
        }
    } else if ft.is_symlink() {
        OnDisk::Link(
            std::fs::read_link(real)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    } else {
        OnDisk::File(chunking::chunk_file(real).ok().map(|c| c.hash))
    })
}

/// Puts the recorded content of `e` back at `real` from the trash or the
/// split-brain store (both keep a replaced content before the rename).
fn restore_file(root: &Path, e: &Entry, real: &Path) -> Result<(), StoreError> {
    let name = hex(&e.hash);
    let from = [
        super::trash::dir(root).join(&name),
        files::siblings_dir(root).join(&name),
    ]
    .into_iter()
    .find(|f| f.is_file());
    let Some(from) = from else {
        tracing::error!(path = %e.path, "the recorded content was replaced before a crash and is not kept anywhere on this brick; the other bricks hold it (volume heal VOL full brings it back)");
        return Ok(());
    };
    let (t, _) = files::TempFile::create(&files::tmp_dir(root))
        .map_err(|x| StoreError::io("temp", &e.path, x))?;
    std::fs::copy(&from, t.path()).map_err(|x| StoreError::io("copy", &e.path, x))?;
    files::set_meta(t.path(), e.mode, e.mtime_ns, e.owner)
        .map_err(|x| StoreError::io("chmod", &e.path, x))?;
    t.persist(real)
        .map_err(|x| StoreError::io("rename into", &e.path, x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, hash: u8, target: Option<&str>) -> Entry {
        let mut e = Entry::tombstone(RelPath::new("p").unwrap(), uuid::Uuid::nil());
        e.kind = kind;
        e.hash = [hash; 32];
        e.target = target.map(str::to_string);
        e
    }

    #[test]
    fn each_listed_path_goes_back_to_what_is_recorded() {
        let file = entry(Kind::File, 1, None);
        let dir = entry(Kind::Dir, 0, None);
        let link = entry(Kind::Symlink, 0, Some("t"));
        let gone = entry(Kind::Tombstone, 0, None);
        let table: &[(Option<&Entry>, OnDisk, Fix)] = &[
            // Never recorded: whatever was placed goes aside...
            (None, OnDisk::File(Some([9; 32])), Fix::SetAside),
            (None, OnDisk::Link("x".into()), Fix::SetAside),
            (None, OnDisk::Dir { live_below: false }, Fix::SetAside),
            // ...except a directory that is the parent of recorded paths.
            (None, OnDisk::Dir { live_below: true }, Fix::Keep),
            (None, OnDisk::Nothing, Fix::Keep),
            (Some(&gone), OnDisk::File(Some([1; 32])), Fix::SetAside),
            (Some(&gone), OnDisk::Nothing, Fix::Keep),
            // Recorded and there: kept.
            (Some(&file), OnDisk::File(Some([1; 32])), Fix::Keep),
            (Some(&dir), OnDisk::Dir { live_below: false }, Fix::Keep),
            (Some(&link), OnDisk::Link("t".into()), Fix::Keep),
            // An unrecorded overwrite or removal: the recorded one back.
            (Some(&file), OnDisk::File(Some([2; 32])), Fix::Restore),
            (Some(&file), OnDisk::File(None), Fix::Restore),
            (Some(&file), OnDisk::Nothing, Fix::Restore),
            (Some(&file), OnDisk::Dir { live_below: false }, Fix::Restore),
            (Some(&dir), OnDisk::Nothing, Fix::MakeDir),
            (Some(&dir), OnDisk::File(Some([1; 32])), Fix::MakeDir),
            (Some(&link), OnDisk::Link("u".into()), Fix::MakeLink),
            (Some(&link), OnDisk::Nothing, Fix::MakeLink),
        ];
        for (rec, disk, want) in table {
            assert_eq!(decide(*rec, disk), *want, "{rec:?} {disk:?}");
        }
    }
}

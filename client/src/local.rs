//! The local folder: what a path is now, which names are ignored, and the
//! walk that finds every path (start-up scan, moved-in directories).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use gsync_brick::store::files::{self, TEMP_PREFIX};
use gsync_brick::store::types::Kind;
use gsync_brick::RelPath;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::{Deserialize, Serialize};

/// Editor temp files ignored by default.
pub const DEFAULT_IGNORES: &[&str] = &["*.swp", "*.swx", "*~", ".#*", "4913", "/.gsyncignore.swp"];

/// The stat of a local path, enough to notice any change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalStat {
    /// Kind.
    pub kind: Kind,
    /// Size.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time (ns).
    pub mtime_ns: i64,
    /// Inode (a rename-over changes it).
    pub ino: u64,
    /// Owner.
    pub owner: (u32, u32),
    /// Symlink target.
    pub target: Option<String>,
}

impl LocalStat {
    /// The stat recorded for a path that does not exist (deleted).
    pub fn missing() -> Self {
        Self {
            kind: Kind::Tombstone,
            size: 0,
            mode: 0,
            mtime_ns: 0,
            ino: 0,
            owner: (0, 0),
            target: None,
        }
    }
}

/// What is at a local path.
#[derive(Debug)]
pub enum Found {
    /// Nothing.
    Missing,
    /// A fifo, socket or device: never synced.
    Special,
    /// A file, directory or symlink.
    Some(LocalStat),
}

/// Stats `full` without following a final symlink.
pub fn stat(full: &Path) -> io::Result<Found> {
    let m = match fs::symlink_metadata(full) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e),
    };
    let ft = m.file_type();
    let (kind, target) = if ft.is_file() {
        (Kind::File, None)
    } else if ft.is_dir() {
        (Kind::Dir, None)
    } else if ft.is_symlink() {
        let t = fs::read_link(full)?;
        (Kind::Symlink, Some(t.to_string_lossy().into_owned()))
    } else {
        return Ok(Found::Special);
    };
    Ok(Found::Some(LocalStat {
        kind,
        size: if kind == Kind::Dir { 0 } else { m.len() },
        mode: m.permissions().mode() & 0o7777,
        mtime_ns: files::mtime_ns(&m),
        ino: m.ino(),
        owner: (m.uid(), m.gid()),
        target,
    }))
}

/// Stats `rel` inside the folder `root` without following any symlink:
/// a path below a symlink (or below something that is not a directory) is
/// not in the folder, so it is missing.
pub fn stat_in(root: &Path, rel: &RelPath) -> io::Result<Found> {
    match files::resolve(root, rel, false) {
        Ok(full) => stat(&full),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ) =>
        {
            Ok(Found::Missing)
        }
        Err(e) => Err(e),
    }
}

/// The ignore rules of a mount: the defaults, gsync's own temp names and
/// `.gsyncignore` at the top of the folder.
#[derive(Debug)]
pub struct Ignore {
    rules: Gitignore,
}

impl Ignore {
    /// Loads the rules for `root`.
    pub fn load(root: &Path) -> Self {
        let mut b = GitignoreBuilder::new(root);
        for p in DEFAULT_IGNORES {
            let _ = b.add_line(None, p);
        }
        let _ = b.add_line(None, &format!("{TEMP_PREFIX}*"));
        let file = root.join(".gsyncignore");
        if file.exists() {
            if let Some(e) = b.add(&file) {
                tracing::warn!(file = %file.display(), "ignore file: {e}");
            }
        }
        let rules = b.build().unwrap_or_else(|_| Gitignore::empty());
        Self { rules }
    }

    /// True if `rel` (or a parent) is ignored.
    pub fn ignored(&self, rel: &RelPath, is_dir: bool) -> bool {
        if rel.file_name().starts_with(TEMP_PREFIX) {
            return true;
        }
        self.rules
            .matched_path_or_any_parents(rel.as_str(), is_dir)
            .is_ignore()
    }
}

/// Removes gsync temp files left in the folder by a crash (an interrupted
/// apply). They are never user data: the rename into place is what
/// publishes a file. Returns how many were removed.
pub fn remove_temp_files(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
                && fs::remove_file(e.path()).is_ok()
            {
                n += 1;
            }
        }
    }
    n
}

/// Every path below `dir` (inside `root`), parents before children, not
/// descending into ignored directories nor following symlinks.
pub fn walk(root: &Path, dir: &Path, ignore: &Ignore) -> Vec<RelPath> {
    let mut out = Vec::new();
    // Never through a symlink: `dir` itself must be a real directory of the
    // folder (it may have been replaced by a link since it was seen).
    if dir != root {
        let inside = RelPath::from_local(root, dir)
            .ok()
            .and_then(|rel| files::resolve(root, &rel, false).ok())
            .is_some_and(|full| fs::symlink_metadata(full).is_ok_and(|m| m.is_dir()));
        if !inside {
            return out;
        }
    }
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        let mut names: Vec<_> = rd.filter_map(Result::ok).collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let full = e.path();
            let Ok(rel) = RelPath::from_local(root, &full) else {
                continue;
            };
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if ignore.ignored(&rel, is_dir) {
                continue;
            }
            out.push(rel);
            if is_dir {
                stack.push(full);
            }
        }
    }
    out.sort_by(|a, b| a.depth().cmp(&b.depth()).then_with(|| a.cmp(b)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_defaults_and_file() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(".gsyncignore"), "*.log\nbuild/\n").unwrap();
        let ig = Ignore::load(d.path());
        let p = |s: &str| RelPath::new(s).unwrap();
        assert!(ig.ignored(&p("a.swp"), false));
        assert!(ig.ignored(&p("x/.#a"), false));
        assert!(ig.ignored(&p("x/4913"), false));
        assert!(ig.ignored(&p("x/a.log"), false));
        assert!(ig.ignored(&p("build/out.o"), false));
        assert!(ig.ignored(&p(&format!("d/{TEMP_PREFIX}0123")), false));
        assert!(!ig.ignored(&p("a.conf"), false));
    }

    #[test]
    fn walk_and_stat_never_follow_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "x").unwrap();
        fs::create_dir(d.path().join("m")).unwrap();
        let root = d.path().join("m");
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        std::os::unix::fs::symlink(".", root.join("loop")).unwrap();
        let ig = Ignore::load(&root);
        let got: Vec<String> = walk(&root, &root, &ig)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(got, vec!["link", "loop"]);
        assert!(walk(&root, &root.join("link"), &ig).is_empty());
        assert!(walk(&root, &root.join("loop"), &ig).is_empty());
        let p = |s: &str| RelPath::new(s).unwrap();
        assert!(matches!(
            stat_in(&root, &p("link/secret")),
            Ok(Found::Missing)
        ));
        assert!(matches!(
            stat_in(&root, &p("loop/loop")),
            Ok(Found::Missing)
        ));
        assert!(
            matches!(stat_in(&root, &p("link")), Ok(Found::Some(st)) if st.kind == Kind::Symlink)
        );
    }

    #[test]
    fn walk_orders_parents_first() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a/b")).unwrap();
        fs::write(d.path().join("a/b/c"), "x").unwrap();
        fs::write(d.path().join("z"), "x").unwrap();
        let ig = Ignore::load(d.path());
        let got: Vec<String> = walk(d.path(), d.path(), &ig)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(got, vec!["a", "z", "a/b", "a/b/c"]);
    }
}

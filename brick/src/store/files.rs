//! Disk side of a brick: resolving paths without following symlinks out of
//! the brick, and placing content atomically.
//!
//! Content is always written to a temp file under `.gsync/tmp/`, fsynced,
//! given its mode and mtime, then renamed over the real path, and the
//! parent directory is fsynced: a crash at any point leaves either the old
//! or the new file at the real path, never a torn one. A temp file is
//! removed by its guard if anything fails before the rename.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::wire::path::RESERVED;
use crate::RelPath;

/// Prefix of gsync's temp files and links (in `.gsync/tmp/` of a brick, or
/// beside the target in a mount). Sync agents ignore such names.
pub const TEMP_PREFIX: &str = ".gsync-tmp-";

/// The brick's reserved directories.
pub fn tmp_dir(root: &Path) -> PathBuf {
    root.join(RESERVED).join("tmp")
}

/// Directory of split-brain sibling contents.
pub fn siblings_dir(root: &Path) -> PathBuf {
    root.join(RESERVED).join("siblings")
}

/// Directory of retained losing versions.
pub fn retained_dir(root: &Path) -> PathBuf {
    root.join(RESERVED).join("retained")
}

/// Checks that every parent of `rel` inside `root` is a real directory (not
/// a symlink), optionally creating missing ones. Returns the full path.
pub fn resolve(root: &Path, rel: &RelPath, create_parents: bool) -> io::Result<PathBuf> {
    resolve_in(root, rel, create_parents, true)
}

/// [`resolve`] for an update that runs beside others (see
/// `apply::commit`): a file where a parent directory must be is never
/// replaced, the answer is an error of kind `AlreadyExists` instead.
pub fn resolve_shared(root: &Path, rel: &RelPath, create_parents: bool) -> io::Result<PathBuf> {
    resolve_in(root, rel, create_parents, false)
}

fn resolve_in(
    root: &Path,
    rel: &RelPath,
    create_parents: bool,
    replace_files: bool,
) -> io::Result<PathBuf> {
    let mut cur = root.to_path_buf();
    let comps: Vec<&str> = rel.as_str().split('/').collect();
    for c in &comps[..comps.len() - 1] {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{} escapes the brick through a symlink", rel),
                ))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) if create_parents && !replace_files => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file stands where a parent directory is needed",
                ))
            }
            Ok(_) if create_parents => {
                // A file where a directory must be: the directory wins (a
                // newer version of the child exists); the file's own record
                // is superseded by the child's parent.
                fs::remove_file(&cur)?;
                fs::create_dir(&cur)?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "parent is not a directory",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create_parents => {
                mkdir_racy(&cur)?;
            }
            Err(e) => return Err(e),
        }
    }
    cur.push(comps[comps.len() - 1]);
    Ok(cur)
}

/// A temp file that is deleted unless it was renamed into place.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Creates a new empty temp file under `dir`.
    pub fn create(dir: &Path) -> io::Result<(Self, File)> {
        fs::create_dir_all(dir)?;
        for _ in 0..16 {
            let path = dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
            match OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => return Ok((Self { path, armed: true }, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("cannot create a temp file"))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames it to `dest` (same filesystem), consuming the guard, and
    /// fsyncs the directory of `dest`.
    pub fn persist(self, dest: &Path) -> io::Result<()> {
        self.persist_unsynced(dest)?;
        sync_parent(dest);
        Ok(())
    }

    /// Renames it to `dest` without fsyncing the directory: the caller
    /// does, before anything relies on the rename having happened.
    pub fn persist_unsynced(mut self, dest: &Path) -> io::Result<()> {
        fs::rename(&self.path, dest)?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// fsyncs the directory holding `path` so a rename survives a crash.
pub fn sync_parent(path: &Path) {
    if let Some(p) = path.parent() {
        if let Ok(d) = File::open(p) {
            let _ = d.sync_all();
        }
    }
}

/// Sets mode, mtime and (when running as root) owner of a path without
/// following a final symlink for the times.
pub fn set_meta(
    path: &Path,
    mode: u32,
    mtime_ns: i64,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let m = fs::symlink_metadata(path)?;
    if !m.file_type().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if let Some((uid, gid)) = owner {
        if is_root() {
            let _ = std::os::unix::fs::lchown(path, Some(uid), Some(gid));
        }
    }
    set_mtime(path, mtime_ns)
}

/// Sets the modification time (nanoseconds since the epoch) of `path`,
/// not following a final symlink.
pub fn set_mtime(path: &Path, mtime_ns: i64) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let ts = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000) as libc::time_t,
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as libc::c_long,
        },
    ];
    // SAFETY: `c` is a valid NUL-terminated path and `ts` has two entries.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True when the process runs as root (ownership is then synced).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Modification time of metadata in nanoseconds.
pub fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// Removes whatever is at `path` (file, symlink or directory tree).
pub fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates a symlink atomically at `dest` (temp link + rename).
pub fn place_symlink(tmp: &Path, target: &str, dest: &Path, mtime_ns: i64) -> io::Result<()> {
    fs::create_dir_all(tmp)?;
    let t = tmp.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
    std::os::unix::fs::symlink(target, &t)?;
    let _ = set_mtime(&t, mtime_ns);
    if let Ok(m) = fs::symlink_metadata(dest) {
        if m.is_dir() {
            fs::remove_dir_all(dest)?;
        }
    }
    if let Err(e) = fs::rename(&t, dest) {
        let _ = fs::remove_file(&t);
        return Err(e);
    }
    sync_parent(dest);
    Ok(())
}

/// Creates a directory that a concurrent update may be creating too.
fn mkdir_racy(p: &Path) -> io::Result<()> {
    match fs::create_dir(p) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => Ok(()),
        other => other,
    }
}

/// Ensures a directory exists at `dest` with `mode`.
pub fn place_dir(dest: &Path, mode: u32, mtime_ns: i64) -> io::Result<()> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            fs::remove_file(dest)?;
            fs::create_dir(dest)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir_racy(dest)?,
        Err(e) => return Err(e),
    }
    set_meta(dest, mode, mtime_ns, None)?;
    sync_parent(dest);
    Ok(())
}

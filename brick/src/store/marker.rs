//! A brick directory's identity: the volume-id marker (`.gsync/volume-id`)
//! written by `volume create`, the check that a directory may be served
//! (a wiped disk, or one that failed to mount, looks exactly like an empty
//! brick and must not be announced as a healthy replica), and the
//! preparation of a directory for `volume create`.

use std::path::Path;

use uuid::Uuid;

/// Why a brick directory cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirProblem {
    /// The directory does not exist (an unmounted disk's mount point gone).
    #[error("brick directory missing")]
    Missing,
    /// The path exists but is not a directory.
    #[error("brick path is not a directory")]
    NotDir,
    /// The directory exists without `.gsync/volume-id` (wiped or unmounted).
    #[error("brick-id marker missing")]
    MarkerMissing,
    /// The marker could not be read.
    #[error("brick-id marker unreadable: {0}")]
    MarkerUnreadable(String),
    /// The marker names another volume.
    #[error("brick-id marker names another volume ({0})")]
    Foreign(String),
    /// A brick filled from its peers (reset) lost its database while its
    /// directory still holds files: what they are is unknown.
    #[error("brick database lost while the brick directory holds files")]
    DatabaseLost,
}

/// The volume-id marker of a brick directory.
pub fn marker_path(root: &Path) -> std::path::PathBuf {
    root.join(crate::wire::path::RESERVED).join("volume-id")
}

/// Checks that `root` is a brick directory of volume `volume`: it exists
/// and its marker names that volume. Touches nothing.
pub fn check_brick_dir(root: &Path, volume: Uuid) -> Result<(), DirProblem> {
    match std::fs::metadata(root) {
        Ok(m) if !m.is_dir() => return Err(DirProblem::NotDir),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DirProblem::Missing),
        Err(e) => return Err(DirProblem::MarkerUnreadable(e.to_string())),
    }
    match std::fs::read_to_string(marker_path(root)) {
        Ok(id) if id.trim() == volume.to_string() => {
            let meta = root.join(crate::wire::path::RESERVED);
            let opened = std::fs::read_to_string(meta.join(crate::lifecycle::REFILL_ONLY))
                .is_ok_and(|s| s.trim() == crate::lifecycle::REFILL_OPENED);
            if opened && !meta.join("meta.db").exists() && super::import::has_content(root) {
                return Err(DirProblem::DatabaseLost);
            }
            Ok(())
        }
        Ok(id) => Err(DirProblem::Foreign(id.trim().chars().take(64).collect())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DirProblem::MarkerMissing),
        Err(e) => Err(DirProblem::MarkerUnreadable(e.to_string())),
    }
}

/// Checks a brick directory for `volume create`, creating it if missing.
/// Errors use `{brick}` where the caller puts the brick's name.
pub fn prepare_brick_dir(path: &Path, force: bool, volume: Uuid) -> Result<(), String> {
    if !path.is_absolute() {
        return Err("brick path {brick} must be absolute".into());
    }
    let marker = marker_path(path);
    if let Ok(id) = std::fs::read_to_string(&marker) {
        if id.trim() != volume.to_string() {
            return Err("{brick} is already part of a volume".into());
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => return Err("{brick} exists and is not a directory".into()),
        Ok(_) if !force => {
            let non_empty = std::fs::read_dir(path)
                .map_err(|e| format!("{{brick}}: {e}"))?
                .filter_map(Result::ok)
                .any(|e| e.file_name() != crate::wire::path::RESERVED);
            if non_empty {
                return Err("The brick {brick} is not empty. Use 'force' at the end of the command if you want to use it anyway".into());
            }
        }
        _ => {}
    }
    if !force && on_root_fs(path) {
        return Err("The brick {brick} is being created in the root partition. It is recommended that you don't use the system's root partition for storage backend. Or use 'force' at the end of the command if you want to override this behavior.".into());
    }
    std::fs::create_dir_all(path.join(crate::wire::path::RESERVED))
        .map_err(|e| format!("{{brick}}: {e}"))?;
    std::fs::write(&marker, volume.to_string()).map_err(|e| format!("{{brick}}: {e}"))?;
    Ok(())
}

fn on_root_fs(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::metadata("/") else {
        return false;
    };
    let mut p = path;
    loop {
        if let Ok(m) = std::fs::metadata(p) {
            return m.dev() == root.dev();
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brick_dir_checks() {
        let t = tempfile::tempdir().unwrap();
        let vol = Uuid::new_v4();
        let root = t.path().join("b");
        assert_eq!(check_brick_dir(&root, vol), Err(DirProblem::Missing));
        std::fs::write(&root, "x").unwrap();
        assert_eq!(check_brick_dir(&root, vol), Err(DirProblem::NotDir));
        std::fs::remove_file(&root).unwrap();
        std::fs::create_dir_all(root.join(".gsync")).unwrap();
        assert_eq!(check_brick_dir(&root, vol), Err(DirProblem::MarkerMissing));
        std::fs::write(marker_path(&root), Uuid::nil().to_string()).unwrap();
        assert!(matches!(
            check_brick_dir(&root, vol),
            Err(DirProblem::Foreign(_))
        ));
        std::fs::write(marker_path(&root), format!("{vol}\n")).unwrap();
        assert_eq!(check_brick_dir(&root, vol), Ok(()));
        // The check creates nothing.
        let gone = t.path().join("gone");
        let _ = check_brick_dir(&gone, vol);
        assert!(!gone.exists());
    }
}

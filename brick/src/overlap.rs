//! Paths that must never overlap on a node: a mount inside another mount
//! (the sync would recurse into itself), a mount inside a brick or a brick
//! inside a mount (gsync's own `.gsync/` would be synced into the volume,
//! and each copy would feed the other), a brick inside a brick. Judged on
//! the real path (symlinks and `..` resolved), by the node that owns the
//! paths: `gsync mount` for mounts, the brick's node for bricks.

use std::path::{Path, PathBuf};

/// `p` with symlinks and `..` resolved; for a path that does not exist
/// yet, its deepest existing ancestor is resolved and the rest appended.
pub fn real_path(p: &Path) -> PathBuf {
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(mut out) = cur.canonicalize() {
            for c in rest.iter().rev() {
                if c == ".." {
                    out.pop();
                } else if c != "." {
                    out.push(c);
                }
            }
            return out;
        }
        match cur.components().next_back() {
            Some(c) => rest.push(c.as_os_str().to_os_string()),
            None => return p.to_path_buf(),
        }
        if !cur.pop() {
            return p.to_path_buf();
        }
    }
}

/// Why a mount or brick at `real` (the resolved form of `dir`) would
/// overlap one of this node's mounts or bricks, if it would: inside a
/// mount (the sync would recurse) or containing one, inside a brick
/// (gsync's own files would sync into the volume) or containing one. The
/// line names both paths (`dir (real)` when they differ).
pub fn overlap(
    dir: &Path,
    real: &Path,
    mounts: &[PathBuf],
    bricks: &[(String, PathBuf)],
) -> Option<String> {
    let shown = if dir == real {
        real.display().to_string()
    } else {
        format!("{} ({})", dir.display(), real.display())
    };
    for m in mounts {
        if real.starts_with(m) {
            return Some(format!("{} is inside the mount {}", shown, m.display()));
        }
        if m.starts_with(real) {
            return Some(format!("{} contains the mount {}", shown, m.display()));
        }
    }
    for (name, b) in bricks {
        if real.starts_with(b) {
            return Some(format!("{} is inside the brick {name}", shown));
        }
        if b.starts_with(real) {
            return Some(format!("{} contains the brick {name}", shown));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps() {
        let mounts = vec![PathBuf::from("/srv/m1")];
        let bricks = vec![("h:/data/b1".to_string(), PathBuf::from("/data/b1"))];
        let table: &[(&str, Option<&str>)] = &[
            ("/srv/m2", None),
            ("/srv/m1x", None),
            (
                "/srv/m1/sub",
                Some("/srv/m1/sub is inside the mount /srv/m1"),
            ),
            ("/srv", Some("/srv contains the mount /srv/m1")),
            (
                "/data/b1/x",
                Some("/data/b1/x is inside the brick h:/data/b1"),
            ),
            ("/data", Some("/data contains the brick h:/data/b1")),
            ("/data/b10", None),
        ];
        for (dir, want) in table {
            let p = Path::new(dir);
            assert_eq!(overlap(p, p, &mounts, &bricks).as_deref(), *want, "{dir}");
        }
        // Reached through a link: both forms are named.
        assert_eq!(
            overlap(
                Path::new("/alias/x"),
                Path::new("/data/b1/x"),
                &mounts,
                &bricks
            )
            .as_deref(),
            Some("/alias/x (/data/b1/x) is inside the brick h:/data/b1")
        );
    }

    #[test]
    fn real_paths_resolve_links_and_dots() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("a")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        assert_eq!(real_path(&root.join("link/new/x")), root.join("a/new/x"));
        assert_eq!(real_path(&root.join("a/new/../y")), root.join("a/y"));
        assert_eq!(real_path(&root.join("link/..")), root.clone());
    }
}

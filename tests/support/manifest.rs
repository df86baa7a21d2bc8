//! Tree manifests: path, type, mode, size and blake3 of every entry, for
//! comparing bricks and mounts.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// One entry of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub kind: char,
    pub mode: u32,
    pub size: u64,
    pub hash: String,
}

/// Manifest of a tree (skipping `.gsync/` and gsync temp files).
pub fn of(root: &Path) -> BTreeMap<String, Item> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Item>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel == ".gsync" || e.file_name().to_string_lossy().starts_with(".gsync-tmp-") {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let ft = m.file_type();
        let (kind, size, hash) = if ft.is_symlink() {
            let t = std::fs::read_link(&p)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            ('l', t.len() as u64, t)
        } else if ft.is_dir() {
            ('d', 0, String::new())
        } else {
            let data = std::fs::read(&p).unwrap_or_default();
            ('f', m.len(), blake3::hash(&data).to_hex().to_string())
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            m.permissions().mode() & 0o7777
        };
        out.insert(
            rel,
            Item {
                kind,
                mode,
                size,
                hash,
            },
        );
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

/// Describes the first difference between two manifests.
pub fn diff(a: &BTreeMap<String, Item>, b: &BTreeMap<String, Item>) -> Option<String> {
    for (k, v) in a {
        match b.get(k) {
            None => return Some(format!("{k} only on the left")),
            Some(w) if w != v => return Some(format!("{k}: {v:?} vs {w:?}")),
            _ => {}
        }
    }
    b.keys()
        .find(|k| !a.contains_key(*k))
        .map(|k| format!("{k} only on the right"))
}

/// Waits until every tree in `dirs` has the same manifest; returns it.
#[track_caller]
pub fn wait_same<P: AsRef<Path>>(
    dirs: &[P],
    timeout: std::time::Duration,
) -> BTreeMap<String, Item> {
    let mut last = String::new();
    let ok = super::eventually(timeout, || {
        let first = of(dirs[0].as_ref());
        for d in &dirs[1..] {
            if let Some(d2) = diff(&first, &of(d.as_ref())) {
                last = format!(
                    "{} vs {}: {d2}",
                    dirs[0].as_ref().display(),
                    d.as_ref().display()
                );
                return false;
            }
        }
        true
    });
    assert!(ok, "trees still differ after {timeout:?}: {last}");
    of(dirs[0].as_ref())
}

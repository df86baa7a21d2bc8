//! `gsync mount --atomic`: a folder that changes in one `rename()`.
//!
//! For read-mostly consumers, as a Kubernetes ConfigMap volume does: the
//! mount folder DIR is a symlink to a generation directory beside it, in
//! `.NAME.gsync/` (NAME is DIR's file name). The agent syncs a working
//! tree there (`work/`) like a read-only mount; each time a changeset went
//! live in it, a new generation `gen-N` is made of hard links to the
//! working tree's files (a file changes by rename, never in place, so the
//! links keep their content), and DIR is swapped to it by renaming a new
//! symlink over it. A reader that resolves DIR once per pass (`cd DIR`,
//! or opening the directory) sees one generation, never a mix. Old
//! generations are removed once no process has its working directory in
//! them, or [`GRACE`] after they were replaced.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a replaced generation is kept while a process still has its
/// working directory in it.
pub const GRACE: Duration = Duration::from_secs(600);

const GEN_PREFIX: &str = "gen-";

/// The directory beside DIR that holds the working tree and generations.
pub fn base(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "mount".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!(".{name}.gsync"))
}

/// The working tree the agent syncs.
pub fn work(dir: &Path) -> PathBuf {
    base(dir).join("work")
}

/// Sets DIR up as an atomic mount: a new or empty DIR (or one already set
/// up) becomes a symlink to a first, empty generation. Anything else is
/// refused with why.
pub fn prepare(dir: &Path) -> Result<(), String> {
    let b = base(dir);
    let err = |e: io::Error| format!("{}: {e}", dir.display());
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            let t = fs::read_link(dir).map_err(err)?;
            if dir.with_file_name(&t).starts_with(&b) && work(dir).is_dir() {
                return Ok(());
            }
            return Err(format!(
                "{} is a symlink that gsync did not make; an atomic mount needs a new or empty folder",
                dir.display()
            ));
        }
        Ok(m) if m.is_dir() => {
            if fs::read_dir(dir).map_err(err)?.next().is_some() {
                return Err(format!(
                    "{} is not empty; an atomic mount needs a new or empty folder",
                    dir.display()
                ));
            }
            fs::remove_dir(dir).map_err(err)?;
        }
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    fs::create_dir_all(work(dir)).map_err(err)?;
    publish(dir).map(|_| ()).map_err(err)
}

/// The generation numbers present, ascending.
fn generations(b: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = fs::read_dir(b)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix(GEN_PREFIX)?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Makes a new generation of the working tree and swaps DIR to it with
/// one rename; returns its number. Old generations are pruned.
pub fn publish(dir: &Path) -> io::Result<u64> {
    let b = base(dir);
    let n = generations(&b).last().map_or(1, |l| l + 1);
    let name = format!("{GEN_PREFIX}{n:06}");
    let g = b.join(&name);
    if fs::symlink_metadata(&g).is_ok() {
        gsync_brick::store::files::remove_any(&g)?;
    }
    fs::create_dir_all(&g)?;
    crate::validate::mirror(&work(dir), &g, true)?;
    gsync_brick::store::files::sync_parent(&g.join("x"));
    // Generations older than the live one go before the new one shows, so
    // DIR never points at a generation with more than one other beside it.
    prune(dir, n);
    let rel = Path::new(b.file_name().unwrap_or_default()).join(&name);
    let tmp = b.join(format!("link-{n}"));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&rel, &tmp)?;
    fs::rename(&tmp, dir)?;
    gsync_brick::store::files::sync_parent(dir);
    Ok(n)
}

/// Removes generations older than the one before `current` (the live one
/// while `current` is being made), unless a process has its working
/// directory in one replaced less than [`GRACE`] ago.
fn prune(dir: &Path, current: u64) {
    let b = base(dir);
    let gens = generations(&b);
    let cwds = working_dirs();
    for (i, n) in gens.iter().enumerate() {
        if *n + 1 >= current {
            continue;
        }
        let g = b.join(format!("{GEN_PREFIX}{n:06}"));
        // Replaced when the next generation was made.
        let replaced = gens
            .get(i + 1)
            .and_then(|next| fs::metadata(b.join(format!("{GEN_PREFIX}{next:06}"))).ok())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .unwrap_or(GRACE);
        let used = cwds.iter().any(|c| c.starts_with(&g));
        if !used || replaced >= GRACE {
            let _ = gsync_brick::store::files::remove_any(&g);
        }
    }
}

/// The working directories of the processes this one can see.
fn working_dirs() -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|e| fs::read_link(e.path().join("cwd")).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_swap_and_prune() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("conf");
        prepare(&dir).unwrap();
        assert!(fs::symlink_metadata(&dir).unwrap().file_type().is_symlink());
        fs::write(work(&dir).join("a"), "1").unwrap();
        assert_eq!(publish(&dir).unwrap(), 2);
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "1");
        // A new version in the working tree (by rename) does not touch the
        // live generation until the next one.
        let t = work(&dir).join("t");
        fs::write(&t, "2").unwrap();
        fs::rename(&t, work(&dir).join("a")).unwrap();
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "1");
        publish(&dir).unwrap();
        publish(&dir).unwrap();
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "2");
        assert_eq!(generations(&base(&dir)), vec![3, 4]);
        // Set up already: fine; a non-empty folder or a foreign link: no.
        prepare(&dir).unwrap();
        let other = d.path().join("full");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("x"), "").unwrap();
        assert!(prepare(&other).unwrap_err().contains("not empty"));
        let link = d.path().join("link");
        std::os::unix::fs::symlink("/tmp", &link).unwrap();
        assert!(prepare(&link).unwrap_err().contains("did not make"));
    }
}

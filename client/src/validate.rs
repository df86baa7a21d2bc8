//! `--validate CMD`: a veto before an incoming changeset goes live.
//!
//! The changeset's files are fetched first (staged); then the folder as it
//! would be is laid out under `DIR/.gsync/staged/NAME/` (never synced):
//! hard links to the unchanged files of the live folder, copies of the
//! changed ones, deletions left out. `sh -c CMD` runs there with
//! `GSYNC_STAGED` pointing at it and the changed paths in `GSYNC_CHANGED`.
//! Exit 0 lets the changeset go live and the staged tree is removed; a
//! non-zero exit or a timeout rejects it, and the staged tree stays for
//! inspection (the newest [`KEEP_REJECTED`] are kept). The staged tree is
//! to be read: unchanged files are links to the live ones.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gsync_brick::store::files::{self, TEMP_PREFIX};
use gsync_brick::wire::path::RESERVED;
use gsync_brick::RelPath;

/// Where staged trees are laid out, below the mount folder.
pub const STAGED_DIR: &str = ".gsync/staged";

/// Rejected staged trees kept per mount.
pub const KEEP_REJECTED: usize = 5;

/// Default longest run of a validator.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a changeset does to one path of the staged tree.
pub enum Change<'a> {
    /// New content (a staged file).
    File(&'a Path),
    /// A directory.
    Dir,
    /// A symlink to this target.
    Symlink(&'a str),
    /// Deleted.
    Gone,
}

/// Lays out the staged tree `name` of the folder `root` with `changes`
/// applied; returns its path.
pub fn lay_out(root: &Path, name: &str, changes: &[(RelPath, Change<'_>)]) -> io::Result<PathBuf> {
    let dest = root.join(STAGED_DIR).join(name);
    if fs::symlink_metadata(&dest).is_ok() {
        files::remove_any(&dest)?;
    }
    fs::create_dir_all(&dest)?;
    mirror(root, &dest, true)?;
    for (rel, c) in changes {
        let at = rel.under(&dest);
        match c {
            Change::Gone => {
                if fs::symlink_metadata(&at).is_ok() {
                    files::remove_any(&at)?;
                }
            }
            Change::Dir => {
                if fs::symlink_metadata(&at).is_ok_and(|m| !m.is_dir()) {
                    files::remove_any(&at)?;
                }
                fs::create_dir_all(&at)?;
            }
            Change::File(src) => {
                replace_parent_and_old(&at)?;
                fs::copy(src, &at)?;
            }
            Change::Symlink(target) => {
                replace_parent_and_old(&at)?;
                std::os::unix::fs::symlink(target, &at)?;
            }
        }
    }
    Ok(dest)
}

/// Makes room for a new file at `at`: its parents as directories, nothing
/// at `at` itself.
fn replace_parent_and_old(at: &Path) -> io::Result<()> {
    if let Some(p) = at.parent() {
        fs::create_dir_all(p)?;
    }
    if fs::symlink_metadata(at).is_ok() {
        files::remove_any(at)?;
    }
    Ok(())
}

/// Links every file below `from` into `to` (directories made, symlinks
/// copied, never followed), leaving out the mount's reserved directory
/// and temp files.
pub(crate) fn mirror(from: &Path, to: &Path, top: bool) -> io::Result<()> {
    for e in fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        let n = name.to_string_lossy();
        if (top && n == RESERVED) || n.starts_with(TEMP_PREFIX) {
            continue;
        }
        let ft = e.file_type()?;
        let dst = to.join(&name);
        if ft.is_dir() {
            fs::create_dir_all(&dst)?;
            mirror(&e.path(), &dst, false)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path())?, &dst)?;
        } else if ft.is_file() && fs::hard_link(e.path(), &dst).is_err() {
            fs::copy(e.path(), &dst)?;
        }
    }
    Ok(())
}

/// Removes the staged tree `name` (the changeset went live).
pub fn discard(root: &Path, name: &str) {
    let _ = files::remove_any(&root.join(STAGED_DIR).join(name));
}

/// Keeps only the newest [`KEEP_REJECTED`] staged trees.
pub fn prune(root: &Path) {
    let Ok(rd) = fs::read_dir(root.join(STAGED_DIR)) else {
        return;
    };
    let mut all: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    all.sort();
    let extra = all.len().saturating_sub(KEEP_REJECTED);
    for (_, p) in all.into_iter().take(extra) {
        let _ = files::remove_any(&p);
    }
}

/// Runs the validator in `staged`; `Err` says why it rejected (`validator
/// exit 1: <first line of its stderr>`, or a timeout).
pub async fn run(
    cmd: &str,
    mount: &Path,
    staged: &Path,
    changed: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .current_dir(staged)
        .env("GSYNC_STAGED", staged)
        .env("GSYNC_CHANGED", changed.join("\n"))
        .env("GSYNC_CHANGED_COUNT", changed.len().to_string())
        .env("GSYNC_MOUNT", mount)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = c
        .spawn()
        .map_err(|e| format!("validator failed to start: {e}"))?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) on the validator's own process group.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            Err(format!("validator timed out after {}", humanize(timeout)))
        }
        Ok(Err(e)) => Err(format!("validator failed: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let first = String::from_utf8_lossy(&out.stderr)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>();
            let how = match out.status.code() {
                Some(c) => format!("validator exit {c}"),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    format!(
                        "validator killed by signal {}",
                        out.status.signal().unwrap_or(0)
                    )
                }
            };
            Err(if first.is_empty() {
                how
            } else {
                format!("{how}: {first}")
            })
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verdicts() {
        let d = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(10);
        assert_eq!(run("true", d.path(), d.path(), &[], t).await, Ok(()));
        assert_eq!(
            run(
                "echo bad marker >&2; echo more >&2; exit 3",
                d.path(),
                d.path(),
                &[],
                t
            )
            .await,
            Err("validator exit 3: bad marker".into())
        );
        assert_eq!(
            run(
                "sleep 30",
                d.path(),
                d.path(),
                &[],
                Duration::from_millis(200)
            )
            .await,
            Err("validator timed out after 200ms".into())
        );
        let changed = ["a".to_string(), "b/c".to_string()];
        assert_eq!(
            run(
                "test \"$GSYNC_CHANGED\" = \"$(printf 'a\\nb/c')\" && test \"$PWD\" = \"$GSYNC_STAGED\"",
                d.path(),
                d.path(),
                &changed,
                t
            )
            .await,
            Ok(())
        );
    }

    #[test]
    fn staged_tree() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("keep"), "k").unwrap();
        fs::write(root.join("sub/old"), "o").unwrap();
        fs::write(root.join("gone"), "g").unwrap();
        fs::create_dir_all(root.join(".gsync/reverted")).unwrap();
        let newf = root.join(format!("{TEMP_PREFIX}1"));
        fs::write(&newf, "new").unwrap();
        let rel = |s: &str| RelPath::new(s).unwrap();
        let s = lay_out(
            root,
            "x",
            &[
                (rel("sub/old"), Change::File(&newf)),
                (rel("gone"), Change::Gone),
                (rel("n/l"), Change::Symlink("../keep")),
            ],
        )
        .unwrap();
        assert_eq!(fs::read_to_string(s.join("keep")).unwrap(), "k");
        assert_eq!(fs::read_to_string(s.join("sub/old")).unwrap(), "new");
        assert_eq!(fs::read_to_string(root.join("sub/old")).unwrap(), "o");
        assert!(!s.join("gone").exists() && root.join("gone").exists());
        assert_eq!(fs::read_link(s.join("n/l")).unwrap(), Path::new("../keep"));
        assert!(!s.join(".gsync").exists());
        assert!(!s.join(format!("{TEMP_PREFIX}1")).exists());
        discard(root, "x");
        assert!(!s.exists());
    }
}

//! `gsync wait DIR`: whether every change made in a mounted folder is
//! stored on K bricks, so a script can `edit && gsync wait DIR && reload`.
//!
//! One check is exact and stateless; the CLI repeats it until it passes
//! or its timeout. A change is covered in two steps:
//! - pushed: every local path's stat matches the agent's journal (the
//!   journal records a local change only once its brick accepted it), and
//!   every path the journal knows as present still exists locally
//!   (otherwise a deletion is not pushed yet);
//! - stored: for every path of the journal, the brick's version vector
//!   dominates or equals the journal's (asked with `Request::Versions`).
//!
//! A later edit of the same path only makes the check stricter: a brick
//! version that covers it covers the earlier one too.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gsync_brick::host::Ask;
use gsync_brick::node::Node;
use gsync_brick::store::types::Kind;
use gsync_brick::wire::proto::{self, MAX_VERSION_PATHS};
use gsync_brick::wire::vv::{Relation, VersionVector};
use gsync_brick::RelPath;
use serde::{Deserialize, Serialize};

use crate::journal::Journal;
use crate::local::{self, Found, Ignore};
use crate::spec::MountSpec;

/// Paths named in a report line, at most.
const SAMPLE: usize = 3;

/// Result of one check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WaitReport {
    /// Every change is stored on enough bricks.
    pub done: bool,
    /// Bricks that hold every change.
    pub bricks_ok: u32,
    /// Bricks required.
    pub replicas: u32,
    /// What is missing, one line (empty when done).
    pub missing: String,
    /// Deletions held by the mass-delete guard: they wait for an operator,
    /// so waiting for them is pointless.
    #[serde(default)]
    pub held: u64,
}

/// One check for the mount `spec` (journal at `jpath`), limited to the
/// paths at or below `prefix` ("" for the whole mount).
pub async fn check(
    node: &Arc<Node>,
    spec: &MountSpec,
    jpath: &Path,
    prefix: &str,
    replicas: Option<u32>,
) -> Result<WaitReport, String> {
    let cfg = node.config();
    let v = cfg
        .volume(&spec.volume)
        .cloned()
        .ok_or_else(|| format!("Volume {} does not exist", spec.volume))?;
    let total = v.bricks.len() as u32;
    let want = replicas.unwrap_or(total);
    if want == 0 || want > total {
        return Err(format!(
            "--replicas {want}: volume {} has {total} bricks",
            v.name
        ));
    }
    let root = spec.dir.clone();
    let jp = jpath.to_path_buf();
    let pre = prefix.to_string();
    let (unpushed, targets, held) =
        tokio::task::spawn_blocking(move || local_state(&root, &jp, &pre))
            .await
            .map_err(|e| e.to_string())??;
    let mut bricks_ok = 0;
    let mut lines: Vec<String> = Vec::new();
    if held > 0 {
        lines.push(format!(
            "{held} deletion(s) are held by the mass-delete guard (gsync accept-deletes or revert-deletes {})",
            spec.dir.display()
        ));
    }
    if !unpushed.is_empty() {
        lines.push(format!(
            "the mount has not pushed {} change(s) yet ({})",
            unpushed.len(),
            sample(&unpushed)
        ));
    }
    for b in &v.bricks {
        match lacking(node, v.id, b.id, b.node, &targets).await {
            Ok(l) if l.is_empty() => bricks_ok += 1,
            Ok(l) => lines.push(format!(
                "brick {} lacks {} change(s) ({})",
                b.name(),
                l.len(),
                sample(&l)
            )),
            Err(e) => lines.push(format!("brick {} unreachable ({e})", b.name())),
        }
    }
    let done = unpushed.is_empty() && bricks_ok >= want;
    Ok(WaitReport {
        done,
        bricks_ok,
        replicas: want,
        held: held as u64,
        missing: if done {
            String::new()
        } else {
            lines.join("; ")
        },
    })
}

fn sample(paths: &[String]) -> String {
    let mut s = paths
        .iter()
        .take(SAMPLE)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > SAMPLE {
        s.push_str(", ...");
    }
    s
}

type Targets = Vec<(RelPath, VersionVector)>;

/// The local paths not pushed yet, the journal versions to find on the
/// bricks, and the number of deletions the mass-delete guard holds.
fn local_state(
    root: &Path,
    jpath: &Path,
    prefix: &str,
) -> Result<(Vec<String>, Targets, usize), String> {
    let journal = Journal::open(jpath).map_err(|e| e.to_string())?;
    let ignore = Ignore::load(root);
    let dir: PathBuf = if prefix.is_empty() {
        root.to_path_buf()
    } else {
        root.join(prefix)
    };
    let mut unpushed = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut here = local::walk(root, &dir, &ignore);
    if let Ok(p) = RelPath::new(prefix) {
        here.insert(0, p);
    }
    for rel in here {
        let Ok(Found::Some(st)) = local::stat_in(root, &rel) else {
            continue;
        };
        seen.insert(rel.as_str().to_string());
        let rec = journal.get(rel.as_str()).map_err(|e| e.to_string())?;
        let pushed = match rec {
            // A directory's mtime moves with its children: only its kind
            // and mode are its own changes.
            Some(r) if st.kind == Kind::Dir && r.entry.kind == Kind::Dir => r.stat.mode == st.mode,
            Some(r) => r.stat == st,
            None => false,
        };
        if !pushed {
            unpushed.push(rel.as_str().to_string());
        }
    }
    let mut targets = Vec::new();
    for p in journal.paths_under(prefix).map_err(|e| e.to_string())? {
        let Some(r) = journal.get(&p).map_err(|e| e.to_string())? else {
            continue;
        };
        if r.entry.kind != Kind::Tombstone && !seen.contains(&p) {
            let ignored = ignore.ignored(&r.entry.path, r.entry.kind == Kind::Dir);
            if !ignored && matches!(local::stat_in(root, &r.entry.path), Ok(Found::Missing)) {
                unpushed.push(p.clone());
            }
        }
        if r.entry.vv != VersionVector::new() {
            targets.push((r.entry.path, r.entry.vv));
        }
    }
    unpushed.sort();
    let held = journal.held().map_err(|e| e.to_string())?.len();
    Ok((unpushed, targets, held))
}

/// The paths whose journal version brick `brick` does not hold (its
/// version neither equal nor newer).
async fn lacking(
    node: &Arc<Node>,
    volume: uuid::Uuid,
    brick: u64,
    brick_node: uuid::Uuid,
    targets: &Targets,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in targets.chunks(MAX_VERSION_PATHS) {
        let paths: Vec<RelPath> = part.iter().map(|t| t.0.clone()).collect();
        let got = if brick_node == node.me.uuid {
            let b = node
                .bricks
                .get(brick)
                .ok_or_else(|| "not served".to_string())?;
            b.with_db(move |_, c| -> Result<Vec<_>, String> {
                paths
                    .iter()
                    .map(|p| {
                        gsync_brick::store::Brick::load(c, p)
                            .map(|x| x.map(|(e, _)| e.vv))
                            .map_err(|e| e.to_string())
                    })
                    .collect()
            })
            .await?
        } else {
            let req = proto::Versions {
                volume,
                brick,
                paths,
            };
            match node.ask(brick_node, req).await {
                Ok(v) if v.len() == part.len() => v,
                Ok(_) => return Err("unexpected answer".into()),
                Err(e) => return Err(e.to_string()),
            }
        };
        for ((p, want), have) in part.iter().zip(got) {
            let covered = have
                .is_some_and(|h| matches!(h.compare(want), Relation::Equal | Relation::Dominates));
            if !covered {
                out.push(p.to_string());
            }
        }
    }
    Ok(out)
}

impl crate::AgentHost {
    /// One `gsync wait` check for `dir` (a mount or a directory in one).
    pub(crate) async fn wait_check(
        &self,
        dir: &str,
        replicas: Option<u32>,
    ) -> gsync_brick::control::CtlReply {
        use gsync_brick::control::CtlReply;
        let Ok(dir) = Path::new(dir).canonicalize() else {
            return CtlReply::fail(format!("{dir}: no such directory"));
        };
        let spec = {
            let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running
                .values()
                .find(|r| dir.starts_with(&r.spec.dir))
                .map(|r| r.spec.clone())
        };
        let Some(spec) = spec else {
            return CtlReply::fail(format!("{} is not in a mounted folder", dir.display()));
        };
        let prefix = dir
            .strip_prefix(&spec.dir)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let jpath = crate::journal_path(&self.node.state_dir, &spec.dir);
        match check(&self.node, &spec, &jpath, &prefix, replicas).await {
            Ok(r) => CtlReply::ok(r),
            Err(e) => CtlReply::fail(e),
        }
    }
}

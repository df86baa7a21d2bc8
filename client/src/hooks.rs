//! `--on-change` hooks: the command runs once per settled batch of applied
//! remote changes, not once per feed batch.
//!
//! A burst of changes (a deploy writing 500 files) arrives in many feed
//! batches; running a reload command for each would restart a service
//! dozens of times. Like lsyncd's `delay`, the paths applied are gathered
//! until no new change came for the mount's delay (default
//! [`DEFAULT_DELAY`]), or for at most [`MAX_WAIT_FACTOR`] times that delay
//! under a continuous stream, and the command runs once with all of them.
//! Runs of one mount never overlap: what arrives during a run forms the
//! next batch. The first download of a mount runs no command unless the
//! mount asked for it (`--on-change-initial`).
//!
//! A changeset (files a writer changed together, see `changeset`) went
//! live in one burst already: it runs the command once, at once, with
//! exactly its paths ([`changeset_live`]), never merged with other changes.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gsync_brick::node::Node;
use gsync_brick::wire::path::RelPath;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

use crate::spec::MountSpec;

/// Settle time when the mount names none.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(300);

/// Under a continuous stream of changes, a batch is cut after this many
/// delays (so a command still runs while a long copy goes on).
pub const MAX_WAIT_FACTOR: u32 = 20;

/// A batcher with no change for this long ends (a new one starts on the
/// next change).
const IDLE_END: Duration = Duration::from_secs(600);

/// One batcher per mount instance (keyed by the agent's writer id, which
/// is new for every `gsync mount`).
fn batchers() -> &'static Mutex<HashMap<u64, UnboundedSender<Msg>>> {
    static B: OnceLock<Mutex<HashMap<u64, UnboundedSender<Msg>>>> = OnceLock::new();
    B.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Paths handed to a batcher.
#[derive(Debug)]
pub struct Msg {
    /// The paths.
    pub paths: Vec<String>,
    /// A whole changeset: run for it alone, at once.
    pub set: bool,
}

/// The settle delay of a mount.
pub fn delay_of(spec: &MountSpec) -> Duration {
    spec.on_change_delay_ms
        .map_or(DEFAULT_DELAY, Duration::from_millis)
}

/// Paths were applied to the mount; `initial` while its first download is
/// not complete.
pub fn changed(node: &Arc<Node>, spec: &MountSpec, dir: PathBuf, paths: &[RelPath], initial: bool) {
    if initial && !spec.on_change_initial {
        return;
    }
    hand(node, spec, dir, paths, false);
}

/// A changeset went live in the mount with these paths.
pub fn changeset_live(node: &Arc<Node>, spec: &MountSpec, dir: PathBuf, paths: &[RelPath]) {
    hand(node, spec, dir, paths, true);
}

fn hand(node: &Arc<Node>, spec: &MountSpec, dir: PathBuf, paths: &[RelPath], set: bool) {
    let Some(cmd) = spec.on_change.clone() else {
        return;
    };
    if paths.is_empty() {
        return;
    }
    let msg = || Msg {
        paths: paths.iter().map(|p| p.as_str().to_string()).collect(),
        set,
    };
    let mut map = batchers().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = map.get(&spec.writer) {
        if tx.send(msg()).is_ok() {
            return;
        }
    }
    let (tx, rx) = unbounded_channel();
    let _ = tx.send(msg());
    map.insert(spec.writer, tx);
    let delay = delay_of(spec);
    let writer = spec.writer;
    let token = node.token.clone();
    node.spawn(async move {
        let run = |paths: Vec<String>| run_command(cmd.clone(), dir.clone(), paths);
        batch_loop(rx, delay, token, run).await;
        batchers()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&writer);
    });
}

/// Gathers paths into settled batches and runs `run` once per batch, one
/// run at a time (a changeset is a batch of its own, run at once); returns
/// when idle for long, cancelled, or the sender is gone.
pub async fn batch_loop<F, Fut>(
    mut rx: UnboundedReceiver<Msg>,
    delay: Duration,
    token: CancellationToken,
    mut run: F,
) where
    F: FnMut(Vec<String>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let first = tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(IDLE_END) => {
                // Ending while a change is queued would lose it.
                rx.close();
                match rx.try_recv() {
                    Ok(p) => p,
                    Err(_) => return,
                }
            }
            p = rx.recv() => match p {
                Some(p) => p,
                None => return,
            },
        };
        if first.set {
            run(first.paths).await;
            continue;
        }
        let mut batch = Batch::default();
        batch.add(first.paths);
        let mut then = None;
        let cut = tokio::time::Instant::now() + delay * MAX_WAIT_FACTOR;
        loop {
            let settle = tokio::time::sleep(delay);
            tokio::select! {
                _ = token.cancelled() => return,
                _ = settle => break,
                _ = tokio::time::sleep_until(cut) => break,
                p = rx.recv() => match p {
                    // A changeset runs on its own, after what came before.
                    Some(p) if p.set => {
                        then = Some(p.paths);
                        break;
                    }
                    Some(p) => batch.add(p.paths),
                    None => break,
                },
            }
        }
        run(batch.paths).await;
        if let Some(paths) = then {
            run(paths).await;
        }
    }
}

/// Paths of one batch, each once, in the order first applied.
#[derive(Default)]
struct Batch {
    paths: Vec<String>,
    seen: HashSet<String>,
}

impl Batch {
    fn add(&mut self, paths: Vec<String>) {
        for p in paths {
            if self.seen.insert(p.clone()) {
                self.paths.push(p);
            }
        }
    }
}

/// Runs `sh -c cmd` in the mount with the batch in `GSYNC_CHANGED` (one
/// path a line) and waits for it.
async fn run_command(cmd: String, dir: PathBuf, paths: Vec<String>) {
    let r = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .current_dir(&dir)
        .env("GSYNC_CHANGED", paths.join("\n"))
        .env("GSYNC_CHANGED_COUNT", paths.len().to_string())
        .env("GSYNC_MOUNT", &dir)
        .kill_on_drop(true)
        .status()
        .await;
    match r {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!(%cmd, "on-change command exited with {s}"),
        Err(e) => tracing::warn!(%cmd, "on-change command failed to start: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `(at_ms, paths)` into a batcher on tokio's paused clock and
    /// returns the batches it ran, with the time each run started.
    async fn batches(delay_ms: u64, feed: &[(u64, &[&str])]) -> Vec<(u64, Vec<String>)> {
        let (tx, rx) = unbounded_channel();
        let start = tokio::time::Instant::now();
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = out.clone();
        let token = CancellationToken::new();
        let t2 = token.clone();
        let task = tokio::spawn(async move {
            batch_loop(rx, Duration::from_millis(delay_ms), t2, move |p| {
                let at = start.elapsed().as_millis() as u64;
                o.lock().unwrap().push((at, p));
                // A run takes 50 ms.
                tokio::time::sleep(Duration::from_millis(50))
            })
            .await;
        });
        for (at, paths) in feed {
            tokio::time::sleep_until(start + Duration::from_millis(*at)).await;
            tx.send(Msg {
                paths: paths.iter().map(|s| s.to_string()).collect(),
                set: false,
            })
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(delay_ms * 50)).await;
        token.cancel();
        task.await.unwrap();
        let v = out.lock().unwrap().clone();
        v
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn one_run_per_settled_batch() {
        // A burst within the delay is one run, after the delay settles.
        let b = batches(300, &[(0, &["a"]), (100, &["b", "a"]), (250, &["c"])]).await;
        assert_eq!(b, [(550, s(&["a", "b", "c"]))]);
        // Two bursts apart from each other are two runs.
        let b = batches(300, &[(0, &["a"]), (1000, &["b"])]).await;
        assert_eq!(b, [(300, s(&["a"])), (1300, s(&["b"]))]);
        // A steady stream is cut after MAX_WAIT_FACTOR delays.
        let feed: Vec<(u64, &[&str])> = (0..100).map(|i| (i * 50, &["x"][..])).collect();
        let b = batches(100, &feed).await;
        assert_eq!(b[0].0, 100 * u64::from(MAX_WAIT_FACTOR));
        assert!(b.len() >= 2, "{b:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn changes_during_a_run_form_the_next_batch() {
        // The run of [a] starts at 100 and lasts 50 ms; b arrives at 120
        // and settles 100 ms after the run ends.
        let b = batches(100, &[(0, &["a"]), (120, &["b"])]).await;
        assert_eq!(b, [(100, s(&["a"])), (250, s(&["b"]))]);
    }
}

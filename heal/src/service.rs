//! The heal service of a node: heal control requests, manual split-brain
//! resolution, and a background loop for quorum state, automatic
//! resolution (`cluster.favorite-child-policy`) and expiry of retained
//! versions (`cluster.conflict-retention`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gsync_brick::control::{CtlReply, CtlRequest};
use gsync_brick::host::Ask;
use gsync_brick::node::Node;
use gsync_brick::pool::{Volume, VolumeState};
use gsync_brick::store::types::Entry;
use gsync_brick::store::Brick;
use gsync_brick::wire::proto::{self, HealOp};
use gsync_brick::RelPath;
use serde::Serialize;

use crate::report;
use crate::splitbrain::{pick, Policy};

/// How often expired trash versions are swept.
const TRASH_SWEEP: Duration = Duration::from_secs(2);

/// The heal service.
#[derive(Debug)]
pub struct HealService {
    node: Arc<Node>,
}

fn ok<T: Serialize>(data: T) -> CtlReply {
    CtlReply::ok(data)
}

fn fail(reason: impl Into<String>) -> CtlReply {
    CtlReply::fail(reason)
}

impl HealService {
    /// Starts the background loop.
    pub fn start(node: Arc<Node>) -> Arc<Self> {
        let s = Arc::new(Self { node: node.clone() });
        let s2 = s.clone();
        node.spawn_supervised("heal loop", &node.token, move |_| {
            let s = s2.clone();
            async move { s.background().await }
        });
        s
    }

    fn volume(&self, name: &str) -> Result<Volume, CtlReply> {
        match self.node.config().volume(name) {
            Some(v) if v.state == VolumeState::Started => Ok(v.clone()),
            Some(_) => Err(fail(format!("Volume {name} is not started."))),
            None => Err(fail(format!("Volume {name} does not exist"))),
        }
    }

    /// Handles the heal control requests; `None` for others.
    pub async fn handle(&self, req: &CtlRequest) -> Option<CtlReply> {
        Some(match req {
            CtlRequest::HealInfo { name } => match self.volume(name) {
                Ok(v) => ok(report::heal_info(&self.node, &v).await),
                Err(r) => r,
            },
            CtlRequest::Heal { name, full } => match self.volume(name) {
                Ok(v) => {
                    let op = if *full { HealOp::Full } else { HealOp::Index };
                    self.broadcast(&v, op).await
                }
                Err(r) => r,
            },
            CtlRequest::SplitBrainShow { name, path } => {
                let v = match self.volume(name) {
                    Ok(v) => v,
                    Err(r) => return Some(r),
                };
                let Ok(p) = RelPath::new(path) else {
                    return Some(fail(format!("invalid path {path}")));
                };
                let vs = report::versions(&self.node, &v, &p).await;
                if vs
                    .iter()
                    .all(|(_, s)| s.versions.len() < 2 && s.retained.is_empty())
                {
                    fail("File not in split-brain")
                } else {
                    ok(vs)
                }
            }
            CtlRequest::SplitBrainResolve {
                name,
                policy,
                path,
                brick,
            } => {
                let v = match self.volume(name) {
                    Ok(v) => v,
                    Err(r) => return Some(r),
                };
                self.resolve_cmd(&v, policy, path.as_deref(), brick.as_deref())
                    .await
            }
            CtlRequest::HealHistory { name } => match self.volume(name) {
                Ok(v) => ok(crate::history::gather(&self.node, &v).await),
                Err(r) => r,
            },
            CtlRequest::TrashList { name, path } => match self.volume(name) {
                Ok(v) => self.trash_list(&v, path.as_deref()).await,
                Err(r) => r,
            },
            CtlRequest::TrashRestore {
                name,
                path,
                version,
            } => match self.volume(name) {
                Ok(v) => self.trash_restore(&v, path, version.as_deref()).await,
                Err(r) => r,
            },
            _ => return None,
        })
    }

    /// The local bricks of `v`, or the refusal when this node serves none.
    fn local_bricks(&self, v: &Volume) -> Result<Vec<Arc<Brick>>, CtlReply> {
        let local = self.node.bricks.of_volume(v.id);
        if local.is_empty() {
            return Err(fail(format!(
                "this node serves no brick of {}; run the command on a node that does",
                v.name
            )));
        }
        Ok(local)
    }

    async fn trash_list(&self, v: &Volume, path: Option<&str>) -> CtlReply {
        let local = match self.local_bricks(v) {
            Ok(l) => l,
            Err(r) => return r,
        };
        let prefix = match path.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
            Some(p) => match RelPath::new(p) {
                Ok(r) => Some(r.as_str().to_string()),
                Err(e) => return fail(format!("invalid path {p}: {e}")),
            },
            None => None,
        };
        let mut items = Vec::new();
        for b in local {
            let p = prefix.clone();
            match b
                .with_db(move |br, c| gsync_brick::store::trash::list(br, c, p.as_deref()))
                .await
            {
                Ok(mut l) => items.append(&mut l),
                Err(e) => return fail(e.to_string()),
            }
        }
        for i in &mut items {
            if let Ok(u) = i.by.parse() {
                i.by = self.node.peer_name(u);
            }
        }
        ok(items)
    }

    async fn trash_restore(&self, v: &Volume, path: &str, version: Option<&str>) -> CtlReply {
        let local = match self.local_bricks(v) {
            Ok(l) => l,
            Err(r) => return r,
        };
        let rel = match RelPath::new(path.trim_matches('/')) {
            Ok(r) => r,
            Err(e) => return fail(format!("invalid path {path}: {e}")),
        };
        match gsync_brick::store::restore::restore(&local[0], &rel, version).await {
            Ok(r) => ok(r),
            Err(e) => fail(e),
        }
    }

    async fn broadcast(&self, v: &Volume, op: HealOp) -> CtlReply {
        let mut nodes: Vec<_> = v.bricks.iter().map(|b| b.node).collect();
        nodes.sort();
        nodes.dedup();
        let mut unreachable = Vec::new();
        for u in nodes {
            let req = proto::Heal {
                volume: v.name.clone(),
                op: op.clone(),
            };
            let res = self.node.ask(u, req).await;
            if res.is_err() {
                unreachable.push(self.node.peer_name(u));
            }
        }
        if unreachable.len() == v.bricks.len() {
            return fail("no brick of the volume is reachable");
        }
        ok(serde_json::json!({"unreachable": unreachable}))
    }

    async fn resolve_cmd(
        &self,
        v: &Volume,
        policy: &str,
        path: Option<&str>,
        brick: Option<&str>,
    ) -> CtlReply {
        let source = match brick {
            Some(b) => match v.bricks.iter().find(|x| x.name() == b) {
                Some(x) => Some(x.id),
                None => return fail(format!("{b} is not a brick of volume {}", v.name)),
            },
            None => None,
        };
        let paths: Vec<String> = match path {
            Some(p) => vec![p.to_string()],
            None => {
                // Every split-brain path of the source brick.
                let reports = report::heal_info(&self.node, v).await;
                let Some(r) = reports.iter().find(|r| Some(r.id) == source) else {
                    return fail("source brick not found");
                };
                let Some(info) = &r.info else {
                    return fail(format!("brick {} is not reachable", r.brick));
                };
                info.entries
                    .iter()
                    .filter(|e| e.split_brain)
                    .map(|e| e.path.to_string())
                    .collect()
            }
        };
        let mut healed = Vec::new();
        for p in paths {
            let Ok(rel) = RelPath::new(&p) else {
                return fail(format!("invalid path {p}"));
            };
            let how = match (policy, source) {
                ("source-brick", Some(b)) => Choice::Brick(b),
                (other, _) => match Policy::parse(other) {
                    Some(pol) => Choice::Policy(pol),
                    None => return fail(format!("unknown policy {other}")),
                },
            };
            match self.resolve(v, &rel, how).await {
                Ok(_) => healed.push(p),
                Err(e) if path.is_some() => return fail(e),
                Err(e) => tracing::warn!(path = %p, "not resolved: {e}"),
            }
        }
        ok(healed)
    }

    /// Resolves one split-brain path; returns the winning version.
    async fn resolve(&self, v: &Volume, path: &RelPath, how: Choice) -> Result<Entry, String> {
        let all = report::versions(&self.node, v, path).await;
        if all.iter().all(|(_, s)| s.versions.len() < 2) {
            return Err("File not in split-brain".into());
        }
        // Distinct versions, with how many bricks hold each as current.
        let mut distinct: Vec<(Entry, usize)> = Vec::new();
        for (_, s) in &all {
            for (i, e) in s.versions.iter().enumerate() {
                match distinct.iter_mut().find(|d| d.0.vv == e.vv) {
                    Some(d) => d.1 += usize::from(i == 0),
                    None => distinct.push((e.clone(), usize::from(i == 0))),
                }
            }
        }
        let winner = match how {
            Choice::Brick(b) => all
                .iter()
                .find(|(_, s)| s.brick == b)
                .and_then(|(_, s)| s.versions.first().cloned())
                .ok_or("the source brick is not reachable")?,
            Choice::Policy(p) => pick(&distinct, p)
                .cloned()
                .ok_or("no version holds a majority")?,
        };
        // Ask a brick that holds the winner to make it dominate.
        let holder = all
            .iter()
            .find(|(_, s)| s.versions.iter().any(|e| e.vv == winner.vv))
            .and_then(|(_, s)| v.brick(s.brick))
            .ok_or("no reachable brick holds the chosen version")?;
        let op = HealOp::ChooseBy {
            path: path.clone(),
            vv: winner.vv.clone(),
            how: match how {
                Choice::Brick(_) => "source-brick".to_string(),
                Choice::Policy(p) => p.name().to_string(),
            },
        };
        // A choice waits for the path's lock (up to 20 s) on the brick.
        let req = proto::Heal {
            volume: v.name.clone(),
            op,
        };
        self.node
            .ask_timeout(holder.node, req, Duration::from_secs(25))
            .await
            .map_err(|e| e.to_string())?;
        Ok(winner)
    }

    /// Refreshes each local brick's quorum state for reports and logs
    /// (heal info, "quorum is not met"). Enforcement does not wait for it:
    /// a brick judges quorum afresh on every change it is offered.
    fn refresh_quorum(&self) {
        let cfg = self.node.config();
        for v in cfg
            .volumes
            .iter()
            .filter(|v| v.state == VolumeState::Started)
        {
            let q = quorum(&self.node, v);
            for b in &self.node.bricks.of_volume(v.id) {
                let mut cur = b.quorum.lock().unwrap_or_else(|e| e.into_inner());
                if *cur != q {
                    if q == Some(false) {
                        tracing::warn!(volume = %v.name, "quorum is not met: this brick refuses changes");
                    } else if *cur == Some(false) {
                        tracing::info!(volume = %v.name, "quorum is met again");
                    }
                    *cur = q;
                }
            }
        }
    }

    async fn background(self: Arc<Self>) {
        let mut last_expiry = Instant::now() - Duration::from_secs(3600);
        let mut last_sweep = Instant::now();
        let mut changes = self.node.subscribe_changes();
        loop {
            // Quorum (judged on how recently each brick's node was heard
            // from) and favorite-child-policy need a close look; otherwise
            // the next trash sweep, or a change of the document or the
            // connections, is soon enough.
            let wait = if self.needs_close_watch() {
                Duration::from_millis(500)
            } else {
                TRASH_SWEEP.saturating_sub(last_sweep.elapsed()) + Duration::from_millis(10)
            };
            tokio::select! {
                _ = self.node.token.cancelled() => return,
                _ = changes.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            self.refresh_quorum();
            let cfg = self.node.config();
            let expire = last_expiry.elapsed() > Duration::from_secs(60);
            if expire {
                last_expiry = Instant::now();
            }
            let sweep = last_sweep.elapsed() > TRASH_SWEEP;
            if sweep {
                last_sweep = Instant::now();
            }
            for v in cfg
                .volumes
                .iter()
                .filter(|v| v.state == VolumeState::Started)
            {
                let local = self.node.bricks.of_volume(v.id);
                if local.is_empty() {
                    continue;
                }
                if let Some(p) = Policy::parse(v.option("cluster.favorite-child-policy")) {
                    if self.is_resolver(v) {
                        self.auto_resolve(v, &local[0], p).await;
                    }
                }
                let trash_on = v.option("features.trash") != "off";
                let trash_age =
                    gsync_brick::options::parse_duration_secs(v.option("features.trash-retention"))
                        .unwrap_or(7 * 86400);
                let loser_age = gsync_brick::options::parse_duration_secs(
                    v.option("cluster.conflict-retention"),
                )
                .unwrap_or(7 * 86400);
                for b in &local {
                    gsync_brick::store::trash::configure(b, trash_on, trash_age);
                }
                if sweep {
                    for b in &local {
                        if let Err(e) =
                            gsync_brick::store::trash::sweep(b, trash_age, loser_age).await
                        {
                            tracing::warn!(brick = %b.root.display(), "trash sweep: {e}");
                        }
                    }
                }
                if expire {
                    let age = gsync_brick::options::parse_duration_secs(
                        v.option("cluster.conflict-retention"),
                    )
                    .unwrap_or(7 * 86400);
                    for b in &local {
                        let _ = b.with_db(move |br, c| br.expire_retained(c, age)).await;
                    }
                }
            }
        }
    }

    /// True if a started volume with a brick here has quorum enforcement
    /// or a favorite-child-policy set.
    fn needs_close_watch(&self) -> bool {
        self.node.config().volumes.iter().any(|v| {
            v.state == VolumeState::Started
                && (v.quorum_enforced()
                    || Policy::parse(v.option("cluster.favorite-child-policy")).is_some())
                && !self.node.bricks.of_volume(v.id).is_empty()
        })
    }

    /// Only the node of the first reachable brick resolves automatically,
    /// so two nodes never race to pick different winners.
    fn is_resolver(&self, v: &Volume) -> bool {
        v.bricks
            .iter()
            .find(|b| self.node.is_connected(b.node))
            .is_some_and(|b| b.node == self.node.me.uuid)
    }

    async fn auto_resolve(&self, v: &Volume, brick: &Arc<Brick>, p: Policy) {
        let paths = brick
            .with_db(|_, c| Brick::split_brain_paths(c))
            .await
            .unwrap_or_default();
        for path in paths {
            let Ok(rel) = RelPath::new(&path) else {
                continue;
            };
            match self.resolve(v, &rel, Choice::Policy(p)).await {
                Ok(w) => {
                    tracing::warn!(
                        volume = %v.name, path = %path, policy = ?p, size = w.size, mtime_ns = w.mtime_ns,
                        writer = %w.origin, "favorite-child-policy resolved split-brain: version {} selected as authentic", w.vv
                    );
                    self.node.events.emit(
                        "policy-decision",
                        format!("volume {}: favorite-child-policy {p:?} resolved the split-brain of /{path}", v.name),
                        serde_json::json!({"volume": v.name, "path": path, "policy": format!("{p:?}"), "by": "favorite-child-policy", "writer": w.origin.to_string(), "size": w.size}),
                    );
                }
                Err(e) => {
                    tracing::debug!(path = %path, "favorite-child-policy did not resolve: {e}")
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Choice {
    Brick(u64),
    Policy(Policy),
}

/// Whether the local bricks of `v` reach quorum (`None`: not configured).
pub fn quorum(node: &Node, v: &Volume) -> Option<bool> {
    node.quorum(v)
}

//! Gathering heal data from every brick of a volume. Local bricks are read
//! directly; remote ones are asked with a bounded timeout, and a brick that
//! cannot be reached is reported as such.

use std::sync::Arc;

use gsync_brick::control::HealBrickReport;
use gsync_brick::heal_types::SplitBrainVersions;
use gsync_brick::host::Ask;
use gsync_brick::node::Node;
use gsync_brick::pool::Volume;
use gsync_brick::wire::proto;
use gsync_brick::RelPath;
use uuid::Uuid;

const NOT_CONNECTED: &str = "Transport endpoint is not connected";

/// Heal reports of every brick of `v`, in volume order.
pub async fn heal_info(node: &Arc<Node>, v: &Volume) -> Vec<HealBrickReport> {
    let mut nodes: Vec<Uuid> = v.bricks.iter().map(|b| b.node).collect();
    nodes.sort();
    nodes.dedup();
    let mut set = tokio::task::JoinSet::new();
    for u in nodes {
        let n = node.clone();
        let name = v.name.clone();
        set.spawn(async move {
            let answer = n.ask(u, proto::HealInfo { volume: name }).await;
            (u, answer.map_err(|e| e.to_string()))
        });
    }
    let mut answers = std::collections::HashMap::new();
    while let Some(r) = set.join_next().await {
        if let Ok((u, a)) = r {
            answers.insert(u, a);
        }
    }
    v.bricks
        .iter()
        .map(|b| {
            let (status, info) = match answers.get(&b.node) {
                Some(Ok(list)) => match list.iter().find(|i| i.brick == b.id) {
                    Some(i) => match &i.not_served {
                        Some(reason) => (format!("Not served: {reason}"), None),
                        None => ("Connected".to_string(), Some(i.clone())),
                    },
                    None => ("Brick is not online".to_string(), None),
                },
                Some(Err(e)) if !node.is_connected(b.node) => {
                    let _ = e;
                    (NOT_CONNECTED.to_string(), None)
                }
                Some(Err(e)) => (e.clone(), None),
                None => (NOT_CONNECTED.to_string(), None),
            };
            HealBrickReport {
                brick: b.name(),
                id: b.id,
                status,
                info,
                rejected: Vec::new(),
            }
        })
        .collect()
}

/// The competing versions of `path` on every reachable brick: `(brick
/// name, versions)`.
pub async fn versions(
    node: &Arc<Node>,
    v: &Volume,
    path: &RelPath,
) -> Vec<(String, SplitBrainVersions)> {
    let mut nodes: Vec<Uuid> = v.bricks.iter().map(|b| b.node).collect();
    nodes.sort();
    nodes.dedup();
    let mut out = Vec::new();
    for u in nodes {
        let list = {
            let req = proto::SplitBrain {
                volume: v.name.clone(),
                path: path.clone(),
            };
            node.ask(u, req).await.unwrap_or_default()
        };
        for s in list {
            if let Some(b) = v.brick(s.brick) {
                out.push((b.name(), s));
            }
        }
    }
    out.sort_by_key(|(_, s)| v.bricks.iter().position(|b| b.id == s.brick));
    out
}

//! Heal data and heal commands of the bricks served here: the heal report
//! of each local brick (pending entries, rates, ETA, full-heal jobs) and
//! `volume heal` operations (index heal, full heal, split-brain choices)
//! run on them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::heal_types::BrickHealInfo;
use crate::host::Host;
use crate::pool::Volume;
use crate::store::types::Entry;
use crate::store::{Brick, StoreError};
use crate::wire::proto::HealOp;

/// Heal reports of this node's bricks of `v`: served ones from their
/// index, unserved ones with the reason.
pub async fn heal_info_local(host: &dyn Host, v: &Volume) -> Vec<BrickHealInfo> {
    let mut out = Vec::new();
    for b in v.bricks.iter().filter(|b| b.node == host.me()) {
        if let Some(brick) = host.local_brick(b.id).filter(|x| x.volume == v.id) {
            out.push(heal_info(&brick).await);
        } else if let Some(reason) = host.unserved_reason(b.id) {
            out.push(BrickHealInfo {
                brick: b.id,
                not_served: Some(reason),
                ..Default::default()
            });
        }
    }
    out
}

/// The heal report of one local brick.
pub async fn heal_info(brick: &Arc<Brick>) -> BrickHealInfo {
    let mut info = brick
        .with_db(|_, c| Brick::heal_info(c, super::HEAL_LIST_LIMIT))
        .await
        .unwrap_or_default();
    info.brick = brick.id;
    let c = brick.counters();
    info.heals_done = c.heals;
    info.heal_bytes = c.heal_bytes;
    info.healing = brick.counters.healing.load(Ordering::Relaxed);
    let mark = *brick.heal_started.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = mark {
        let secs = m.at.elapsed().as_secs_f64();
        let done = c.heals.saturating_sub(m.heals);
        let streamed = brick
            .counters
            .heal_streamed
            .load(Ordering::Relaxed)
            .saturating_sub(m.streamed);
        // Bytes already sent of entries not yet confirmed are not left.
        let in_flight = streamed.saturating_sub(c.heal_bytes.saturating_sub(m.heal_bytes));
        info.pending_bytes = info.pending_bytes.saturating_sub(in_flight);
        if secs > 0.5 {
            let rate = done as f64 / secs;
            let byte_rate = streamed as f64 / secs;
            info.heal_rate = (done > 0).then_some(rate);
            info.heal_byte_rate = (streamed > 0).then_some(byte_rate);
            // Whichever bounds the heal: entries or bytes.
            let by_entries = (done > 0).then(|| info.pending as f64 / rate);
            let by_bytes = (streamed > 0).then(|| info.pending_bytes as f64 / byte_rate);
            info.eta_secs = match (by_entries, by_bytes) {
                _ if info.pending == 0 => None,
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
    info.last_error = brick
        .last_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    info.quorum_met = *brick.quorum.lock().unwrap_or_else(|e| e.into_inner());
    info.full_heal = brick
        .full_heal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(crate::heal_types::FullHealTrack::report)
        .collect();
    info
}

/// Runs a heal command on this node's bricks of `volume`.
pub async fn heal_op(host: &Arc<dyn Host>, volume: &str, op: HealOp) -> Result<(), String> {
    let Some(v) = host.config().volume(volume).cloned() else {
        return Err(format!("Volume {volume} does not exist"));
    };
    for b in host.local_bricks(v.id) {
        match &op {
            HealOp::Index => b.publish_seq(b.seq()),
            HealOp::Full => {
                for peer in b.peers() {
                    crate::crawl::start_full(host, &b, peer);
                }
            }
            HealOp::Choose { .. } | HealOp::ChooseBy { .. } => {
                let (path, vv, how) = match &op {
                    HealOp::ChooseBy { path, vv, how } => (path, vv, Some(how.clone())),
                    HealOp::Choose { path, vv } => (path, vv, None),
                    _ => continue,
                };
                let Some(_guard) = b.lock_path(path, Duration::from_secs(20)).await else {
                    return Err(format!("{path} is being updated; retry"));
                };
                let p = path.clone();
                // The versions before the choice: all but the winner go to
                // the trash.
                let before: Vec<Entry> = b
                    .with_db(move |_, c| -> Result<Vec<Entry>, StoreError> {
                        Ok(Brick::load(c, &p)?
                            .into_iter()
                            .chain(Brick::siblings(c, &p)?)
                            .map(|(e, _)| e)
                            .collect())
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                let done = crate::store::choose(&b, path, vv)
                    .await
                    .map_err(|e| e.to_string())?;
                if let (Some(how), Some(_)) = (how, &done) {
                    let name = crate::store::outages::version_name;
                    let winner = before.iter().find(|e| e.vv == *vv);
                    let r = crate::status::Resolution {
                        path: path.as_str().to_string(),
                        at: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                        how,
                        winner: winner.map_or_else(String::new, name),
                        losers: before.iter().filter(|e| e.vv != *vv).map(name).collect(),
                    };
                    let p = path.clone();
                    if let Err(e) = b
                        .with_db(move |_, c| crate::store::outages::record_resolution(c, &r))
                        .await
                    {
                        tracing::warn!(path = %p, "outage history: {e}");
                    }
                }
                if done.is_some() {
                    tracing::info!(%path, brick = %b.root.display(), "split-brain resolved; losing versions retained");
                    b.publish_seq(b.seq());
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

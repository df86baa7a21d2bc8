//! A brick's outage history in its `meta.db` (`gsync volume heal VOL
//! history`): the periods it could not reach each peer brick, the paths it
//! changed meanwhile, and the split-brain resolutions made on it. The
//! recorder that opens and closes periods is `crate::outage`; the heal
//! service gathers the records of every brick and merges them into
//! periods with sides (`gsync_heal::history`).
//!
//! Where the paths come from: every change a brick commits while a peer is
//! away leaves a pending row for that peer, so the rows after the sequence
//! at which the peer went away are exactly this side's changes; [`collect`]
//! copies them into the open period.
//!
//! Bounded: the last [`MAX_PERIODS`] periods per brick, [`MAX_PATHS`]
//! paths per period (with a count of the rest) and the last
//! [`MAX_RESOLUTIONS`] resolutions.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{Brick, StoreError};
use crate::status::{BrickHistory, OutageRecord, PathState, Resolution};

/// Periods kept per brick.
pub const MAX_PERIODS: i64 = 100;
/// Paths kept per period (the rest are counted).
pub const MAX_PATHS: i64 = 500;
/// Resolutions kept per brick.
pub const MAX_RESOLUTIONS: i64 = 1000;
/// Path bytes one brick's answer carries at most: older periods beyond it
/// are left out of the answer (they stay recorded), so the answer always
/// fits a frame whatever the paths are like.
pub const ANSWER_BUDGET: usize = 1 << 20;
/// Creates the tables (at brick open).
pub fn ensure_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS outages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            peer INTEGER NOT NULL,
            start INTEGER NOT NULL,
            end_at INTEGER,
            seq0 INTEGER NOT NULL,
            more INTEGER NOT NULL DEFAULT 0,
            seen INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE IF NOT EXISTS outage_paths (
            outage INTEGER NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (outage, path)
        );
        CREATE TABLE IF NOT EXISTS resolutions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            path TEXT NOT NULL,
            at INTEGER NOT NULL,
            how TEXT NOT NULL,
            winner TEXT NOT NULL,
            losers TEXT NOT NULL
        );",
    )
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Opens a period toward `peer` that started at `start`; changes after
/// `seq0` belong to it. Old periods beyond [`MAX_PERIODS`] are dropped.
pub fn open(conn: &mut Connection, peer: u64, start: u64, seq0: u64) -> Result<i64, StoreError> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO outages (peer, start, seq0) VALUES (?1, ?2, ?3)",
        params![peer as i64, start as i64, seq0 as i64],
    )?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "DELETE FROM outage_paths WHERE outage <= ?1 - ?2",
        params![id, MAX_PERIODS],
    )?;
    tx.execute(
        "DELETE FROM outages WHERE id <= ?1 - ?2",
        params![id, MAX_PERIODS],
    )?;
    tx.commit()?;
    Ok(id)
}

/// Closes the open period toward `peer`.
pub fn close(conn: &Connection, peer: u64, end: u64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE outages SET end_at = ?2 WHERE peer = ?1 AND end_at IS NULL",
        params![peer as i64, end as i64],
    )?;
    Ok(())
}

/// Copies the pending rows for `peer` written during its latest period
/// (open, or closed within the last minute) into that period's paths,
/// leaving out versions written on the other side: on the node of any
/// brick this one lost too (`nodes`: brick id to node), whose changes are
/// relayed here once the links are back. Called by the recorder while the
/// peer is away and by the replicator right before it replays the rows.
pub fn collect(conn: &Connection, peer: u64, nodes: &HashMap<u64, Uuid>) -> Result<(), StoreError> {
    let row: Option<(i64, i64)> = conn
        .query_row(
            "SELECT id, MAX(seq0, seen) FROM outages WHERE peer = ?1 AND (end_at IS NULL OR end_at >= ?2)
             ORDER BY id DESC LIMIT 1",
            params![peer as i64, now_secs() as i64 - 60],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((id, after)) = row else {
        return Ok(());
    };
    // Rows are looked at once: `seen` is the highest sequence examined (a
    // path changed again gets a new sequence and is looked at again).
    let fresh: Vec<(String, i64)> = {
        let mut st = conn.prepare_cached(
            "SELECT path, seq FROM pending WHERE peer = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let rows = st.query_map(params![peer as i64, after], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let Some(seen) = fresh.last().map(|f| f.1) else {
        return Ok(());
    };
    let other: Vec<Uuid> = {
        let mut st = conn.prepare_cached(
            "SELECT DISTINCT peer FROM outages WHERE end_at IS NULL OR end_at >= ?1",
        )?;
        let rows = st.query_map(params![now_secs() as i64 - 60], |r| r.get::<_, i64>(0))?;
        let peers: Vec<i64> = rows.collect::<Result<_, _>>()?;
        peers
            .into_iter()
            .filter_map(|p| nodes.get(&(p as u64)).copied())
            .collect()
    };
    let mut have: i64 = conn.query_row(
        "SELECT COUNT(*) FROM outage_paths WHERE outage = ?1",
        params![id],
        |r| r.get(0),
    )?;
    let mut rest = 0i64;
    for (path, _) in fresh {
        let Ok(rel) = crate::RelPath::new(&path) else {
            continue;
        };
        let ours = Brick::load(conn, &rel)?.is_some_and(|(e, _)| !other.contains(&e.origin));
        if !ours {
            continue;
        }
        if have < MAX_PATHS {
            have += conn.execute(
                "INSERT OR IGNORE INTO outage_paths (outage, path) VALUES (?1, ?2)",
                params![id, path],
            )? as i64;
        } else {
            rest += 1;
        }
    }
    conn.execute(
        "UPDATE outages SET more = more + ?2, seen = ?3 WHERE id = ?1",
        params![id, rest, seen],
    )?;
    Ok(())
}

/// Records a split-brain resolution made on this brick.
pub fn record_resolution(conn: &Connection, r: &Resolution) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO resolutions (path, at, how, winner, losers) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![r.path, r.at as i64, r.how, r.winner, r.losers.join(",")],
    )?;
    conn.execute(
        "DELETE FROM resolutions WHERE id <= (SELECT MAX(id) FROM resolutions) - ?1",
        params![MAX_RESOLUTIONS],
    )?;
    Ok(())
}

/// The name `volume trash` gives a version: its content hash prefix, or
/// its kind when it has no content.
pub fn version_name(e: &crate::store::types::Entry) -> String {
    use crate::store::types::Kind;
    match e.kind {
        Kind::File | Kind::Symlink => crate::store::hex(&e.hash)[..12].to_string(),
        Kind::Dir => "directory".into(),
        Kind::Tombstone => "deleted".into(),
    }
}

/// Everything `brick` recorded, with each path's state now.
pub fn history(conn: &Connection, brick: u64) -> Result<BrickHistory, StoreError> {
    let mut outages = Vec::new();
    {
        let mut st = conn.prepare_cached(
            "SELECT id, peer, start, end_at, more FROM outages ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map(params![MAX_PERIODS], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let rows: Vec<_> = rows.collect::<Result<_, _>>()?;
        let mut paths = conn.prepare_cached(
            "SELECT path,
                EXISTS (SELECT 1 FROM siblings s WHERE s.path = o.path),
                EXISTS (SELECT 1 FROM pending p WHERE p.peer = ?2 AND p.path = o.path)
             FROM outage_paths o WHERE outage = ?1 ORDER BY path",
        )?;
        // Newest first, until the budget is spent.
        let mut spent = 0;
        for (id, peer, start, end, more) in rows {
            let ps = paths.query_map(params![id, peer], |r| {
                Ok(PathState {
                    path: r.get(0)?,
                    split_brain: r.get(1)?,
                    pending: r.get(2)?,
                })
            })?;
            let ps: Vec<PathState> = ps.collect::<Result<_, _>>()?;
            spent += ps.iter().map(|p| p.path.len() + 8).sum::<usize>();
            if spent > ANSWER_BUDGET && !outages.is_empty() {
                break;
            }
            outages.push(OutageRecord {
                brick,
                peer: peer as u64,
                start: start as u64,
                end: end.map(|e| e as u64),
                paths: ps,
                more: more as u64,
            });
        }
        outages.reverse();
    }
    let mut st = conn.prepare_cached(
        "SELECT path, at, how, winner, losers FROM resolutions ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = st.query_map(params![MAX_RESOLUTIONS], |r| {
        let losers: String = r.get(4)?;
        Ok(Resolution {
            path: r.get(0)?,
            at: r.get::<_, i64>(1)? as u64,
            how: r.get(2)?,
            winner: r.get(3)?,
            losers: losers
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        })
    })?;
    let mut resolutions: Vec<Resolution> = rows.collect::<Result<_, _>>()?;
    resolutions.reverse();
    Ok(BrickHistory {
        brick,
        outages,
        resolutions,
    })
}

pub fn open_peers(conn: &Connection) -> Result<Vec<u64>, StoreError> {
    let mut st = conn.prepare_cached("SELECT DISTINCT peer FROM outages WHERE end_at IS NULL")?;
    let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
    Ok(rows
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|p| p as u64)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Uuid = Uuid::from_u128(1);
    const THERE: Uuid = Uuid::from_u128(3);
    const ALSO_THERE: Uuid = Uuid::from_u128(4);

    fn nodes() -> HashMap<u64, Uuid> {
        HashMap::from([
            (1, HERE),
            (2, Uuid::from_u128(2)),
            (3, THERE),
            (4, ALSO_THERE),
        ])
    }

    fn db() -> (tempfile::TempDir, Connection) {
        let d = tempfile::tempdir().unwrap();
        let c = crate::store::schema::open(&d.path().join("meta.db")).unwrap();
        ensure_schema(&c).unwrap();
        (d, c)
    }

    /// A change of `path` at `seq`, written on `origin`, pending for `peer`.
    fn change(c: &Connection, peer: u64, path: &str, seq: u64, origin: Uuid) {
        let e = crate::store::types::Entry::tombstone(crate::RelPath::new(path).unwrap(), origin);
        c.execute(
            "INSERT OR REPLACE INTO entries (path, entry, chunks, seq) VALUES (?1, ?2, ?3, ?4)",
            params![
                path,
                crate::wire::codec::encode(&e).unwrap(),
                crate::store::chunking::encode_list(&[]),
                seq as i64
            ],
        )
        .unwrap();
        c.execute(
            "INSERT OR REPLACE INTO pending (peer, path, seq) VALUES (?1, ?2, ?3)",
            params![peer as i64, path, seq as i64],
        )
        .unwrap();
    }

    #[test]
    fn a_period_keeps_the_paths_this_side_changed_after_it_began() {
        let (_d, mut c) = db();
        change(&c, 3, "before", 5, HERE);
        open(&mut c, 3, 100, 5).unwrap();
        change(&c, 3, "a", 6, HERE);
        change(&c, 2, "other-peer", 7, HERE);
        collect(&c, 3, &nodes()).unwrap();
        change(&c, 3, "b", 8, HERE);
        c.execute(
            "INSERT INTO siblings (path, vv, entry, chunks) VALUES ('b', x'00', x'00', x'00')",
            [],
        )
        .unwrap();
        // The other side's changes, relayed here once the links are back:
        // from the peer, and from another brick this one lost too.
        change(&c, 3, "theirs", 9, THERE);
        open(&mut c, 4, 101, 5).unwrap();
        change(&c, 3, "also-theirs", 10, ALSO_THERE);
        // The replicator's last copy, then it confirms the rows.
        collect(&c, 3, &nodes()).unwrap();
        c.execute("DELETE FROM pending WHERE peer = 3 AND path = 'a'", [])
            .unwrap();
        close(&c, 3, 120).unwrap();
        let h = history(&c, 1).unwrap();
        assert_eq!(h.outages.len(), 2);
        let o = &h.outages[0];
        assert_eq!((o.peer, o.start, o.end, o.more), (3, 100, Some(120), 0));
        let got: Vec<(&str, bool, bool)> = o
            .paths
            .iter()
            .map(|p| (p.path.as_str(), p.split_brain, p.pending))
            .collect();
        assert_eq!(got, vec![("a", false, false), ("b", true, true)]);
        // Only the period toward brick 4 is still open.
        assert_eq!(open_peers(&c).unwrap(), vec![4]);
    }

    #[test]
    fn bounded() {
        let (_d, mut c) = db();
        for k in 0..(MAX_PERIODS + 5) {
            open(&mut c, 2, k as u64, 0).unwrap();
            close(&c, 2, k as u64 + 1).unwrap();
        }
        let h = history(&c, 1).unwrap();
        assert_eq!(h.outages.len() as i64, MAX_PERIODS);
        assert_eq!(h.outages[0].start, 5);
        open(&mut c, 2, 1000, 0).unwrap();
        for k in 0..(MAX_PATHS + 7) {
            change(&c, 2, &format!("p{k}"), k as u64 + 1, HERE);
        }
        collect(&c, 2, &nodes()).unwrap();
        collect(&c, 2, &nodes()).unwrap();
        let h = history(&c, 1).unwrap();
        let last = h.outages.last().unwrap();
        assert_eq!(last.paths.len() as i64, MAX_PATHS);
        assert_eq!(last.more, 7);
        assert_eq!(last.end, None);
        assert_eq!(open_peers(&c).unwrap(), vec![2]);
        for k in 0..(MAX_RESOLUTIONS + 3) {
            record_resolution(
                &c,
                &Resolution {
                    path: format!("r{k}"),
                    at: k as u64,
                    how: "size".into(),
                    winner: "aaaaaaaaaaaa".into(),
                    losers: vec!["bbbbbbbbbbbb".into()],
                },
            )
            .unwrap();
        }
        // Periods with long paths: the answer keeps to its budget, newest
        // first, and the records stay.
        let deep = vec!["d".repeat(250); 15].join("/");
        for period in 0..3u64 {
            open(&mut c, 2, 2000 + period, 5000 * (period + 1)).unwrap();
            for k in 0..300 {
                change(
                    &c,
                    2,
                    &format!("{deep}/{k}"),
                    5000 * (period + 1) + k + 1,
                    HERE,
                );
            }
            collect(&c, 2, &nodes()).unwrap();
            close(&c, 2, 2000 + period).unwrap();
        }
        let h = history(&c, 1).unwrap();
        let last = h.outages.last().unwrap();
        assert_eq!((last.start, last.paths.len()), (2002, 300));
        assert!(
            h.outages.iter().all(|o| o.start >= 2002),
            "{}",
            h.outages.len()
        );
        let kept: i64 = c
            .query_row("SELECT COUNT(*) FROM outages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, MAX_PERIODS);
        assert_eq!(h.resolutions.len() as i64, MAX_RESOLUTIONS);
        assert_eq!(h.resolutions[0].path, "r3");
        assert_eq!(h.resolutions[0].losers, vec!["bbbbbbbbbbbb".to_string()]);
    }
}

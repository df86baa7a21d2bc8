//! Changeset membership of stored versions.
//!
//! A mount pushes the changes that settled together as one changeset
//! (`proto::Changeset`: an id and the number of versions in it) so that
//! other mounts can apply them all or none. The tag belongs to one version
//! of a path, not to the path: it is kept in its own table,
//! `changesets(path, vv, id, members)`, beside `entries` (whose encoded
//! rows keep their shape), written in the transaction that commits the
//! version, and it counts only while `vv` is still the path's current
//! version. A later untagged version of the path removes it.

use rusqlite::{params, Connection, OptionalExtension};

use super::types::Changeset;
use super::types::Entry;
use super::StoreError;
use crate::wire::vv::VersionVector;

/// Migration creating the table (see `schema`).
pub(super) const MIGRATION: &str = "
    CREATE TABLE changesets (
        path TEXT PRIMARY KEY,
        vv BLOB NOT NULL,
        id INTEGER NOT NULL,
        members INTEGER NOT NULL
    );
";

/// Records (or clears) the changeset of the version `vv` of `path`, inside
/// the commit's transaction.
pub(super) fn record(
    tx: &Connection,
    path: &str,
    vv: &VersionVector,
    tag: Option<Changeset>,
) -> Result<(), StoreError> {
    match tag {
        Some(t) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO changesets (path, vv, id, members) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![path, vv.to_bytes(), t.id as i64, t.members])?;
        }
        None => {
            tx.prepare_cached("DELETE FROM changesets WHERE path = ?1")?
                .execute(params![path])?;
        }
    }
    Ok(())
}

/// The changeset of `e`, if `e` is the version it was recorded for.
pub fn of(conn: &Connection, e: &Entry) -> Result<Option<Changeset>, StoreError> {
    let row = conn
        .prepare_cached("SELECT vv, id, members FROM changesets WHERE path = ?1")?
        .query_row(params![e.path.as_str()], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()?;
    Ok(row.and_then(|(vv, id, members)| {
        (vv == e.vv.to_bytes() && members > 0).then_some(Changeset {
            id: id as u64,
            members: u32::try_from(members).unwrap_or(u32::MAX),
        })
    }))
}

/// The tags of a feed answer: (index into `entries`, tag).
pub fn tags(
    conn: &Connection,
    entries: &[(u64, Entry)],
) -> Result<Vec<(u32, Changeset)>, StoreError> {
    let mut out = Vec::new();
    for (i, (_, e)) in entries.iter().enumerate() {
        if let Some(t) = of(conn, e)? {
            out.push((i as u32, t));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RelPath;

    #[test]
    fn a_tag_counts_for_its_version_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = super::super::schema::open(&dir.path().join("m.db")).unwrap();
        let mut e = Entry::tombstone(RelPath::new("a").unwrap(), uuid::Uuid::nil());
        e.vv = VersionVector::from_entries([(1, 1)]);
        let tag = Changeset { id: 7, members: 2 };
        let tx = conn.transaction().unwrap();
        record(&tx, "a", &e.vv, Some(tag)).unwrap();
        tx.commit().unwrap();
        assert_eq!(of(&conn, &e).unwrap(), Some(tag));
        let mut newer = e.clone();
        newer.vv = VersionVector::from_entries([(1, 2)]);
        assert_eq!(of(&conn, &newer).unwrap(), None);
        let tx = conn.transaction().unwrap();
        record(&tx, "a", &newer.vv, None).unwrap();
        tx.commit().unwrap();
        assert_eq!(of(&conn, &e).unwrap(), None);
        assert_eq!(tags(&conn, &[(1, e)]).unwrap(), vec![]);
    }
}

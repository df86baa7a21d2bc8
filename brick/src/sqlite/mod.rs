//! What gsync's SQLite databases (a brick's `meta.db`, a mount's journal,
//! a node's `node.db`) share: the owner thread that holds each connection
//! ([`owner`]), and the one migration helper, [`migrate`]: each schema is a
//! list of numbered steps, applied in order from the database's
//! `PRAGMA user_version`, each in a transaction of its own with the version
//! it reaches, so a crash between two steps resumes at the next one.

pub mod owner;

pub use owner::{Owner, OwnerError};

use rusqlite::Connection;

/// Applies the steps of `migrations` that `conn` has not seen yet.
/// A database whose schema is newer than `migrations` (written by a newer
/// gsync) is refused, never used as if it were the schema known here.
pub fn migrate(conn: &mut Connection, migrations: &[&str]) -> rusqlite::Result<()> {
    let have: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if have > migrations.len() {
        return Err(refused(format!(
            "database schema {have} is newer than this gsync knows ({}); written by a newer version?",
            migrations.len()
        )));
    }
    for (i, sql) in migrations.iter().enumerate().skip(have) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// An error that refuses to open a database, with why.
pub fn refused(why: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
        Some(why),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_run_once_in_order() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.db");
        let steps = ["CREATE TABLE a (x INTEGER);", "INSERT INTO a VALUES (1);"];
        {
            let mut c = Connection::open(&p).unwrap();
            migrate(&mut c, &steps[..1]).unwrap();
            migrate(&mut c, &steps).unwrap();
        }
        let mut c = Connection::open(&p).unwrap();
        migrate(&mut c, &steps).unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM a", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2);
        // A newer schema is refused, and left as it is.
        let err = migrate(&mut c, &steps[..1]).unwrap_err().to_string();
        assert!(
            err.contains("schema 2 is newer than this gsync knows (1)"),
            "{err}"
        );
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2);
    }
}

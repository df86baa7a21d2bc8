//! The one migration helper of gsync's SQLite databases (a brick's
//! `meta.db`, a mount's journal): each schema is a list of numbered steps,
//! applied in order from the database's `PRAGMA user_version`, each in a
//! transaction of its own with the version it reaches, so a crash between
//! two steps resumes at the next one.

use rusqlite::Connection;

/// Applies the steps of `migrations` that `conn` has not seen yet.
pub fn migrate(conn: &mut Connection, migrations: &[&str]) -> rusqlite::Result<()> {
    let have: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in migrations.iter().enumerate().skip(have) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
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
    }
}

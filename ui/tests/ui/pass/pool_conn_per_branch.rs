// Each `parallel!` branch takes its own pooled connection and gives it back when it ends.
use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use blocking_first::pool::Pool;
use r2d2_sqlite::SqliteConnectionManager;

static DB: Limit = Limit::new("db", 4);

fn count(db: &Pool<SqliteConnectionManager>, table: &str) -> Result<i64, r2d2::Error> {
    let conn = db.get()?;
    Ok(conn
        .query_row(&format!("select count(*) from {table}"), [], |row| row.get(0))
        .unwrap())
}

#[blocking_first(limit = DB)]
async fn counts(db: Pool<SqliteConnectionManager>) -> Result<(i64, i64, i64), r2d2::Error> {
    let (a, b, c) = parallel! {
        count(&db, "a"),
        // a `?` in a branch leaves that branch
        Ok::<i64, r2d2::Error>(db.get()?.query_row("select count(*) from b", [], |row| row.get(0)).unwrap()),
        {
            let conn = db.get()?;
            Ok::<i64, r2d2::Error>(conn.query_row("select count(*) from c", [], |row| row.get(0)).unwrap())
        },
    };
    Ok((a?, b?, c?))
}

fn main() {
    let _ = counts;
}

// The last `parallel!` branch runs on the caller's thread, so it compiles to use the caller's
// pooled connection (the docs advise against it: a branch that finds no free slot runs inline
// under the caller's slot and needs a second connection for it).
use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use blocking_first::pool::Pool;
use r2d2_sqlite::SqliteConnectionManager;

static DB: Limit = Limit::new("db", 4);

#[blocking_first(limit = DB)]
async fn counts(db: Pool<SqliteConnectionManager>) -> (i64, i64) {
    let conn = db.get().unwrap();
    parallel! {
        db.get().unwrap().query_row("select count(*) from b", [], |row| row.get(0)).unwrap(),
        conn.query_row("select count(*) from a", [], |row| row.get(0)).unwrap(),
    }
}

fn main() {
    let _ = counts;
}

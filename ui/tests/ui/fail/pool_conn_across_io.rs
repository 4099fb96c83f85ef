// A pooled connection kept across `io!`: the body gave its slot back there, so the connection
// would be outside the cap. A compile error at the `let` and at the `io!`.
use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use blocking_first::pool::Pool;
use r2d2_sqlite::SqliteConnectionManager;

static DB: Limit = Limit::new("db", 4);

#[blocking_first(limit = DB)]
async fn slow_view(db: Pool<SqliteConnectionManager>) -> Result<String, r2d2::Error> {
    let conn = db.get()?;
    let a: i64 = conn.query_row("select 1", [], |row| row.get(0)).unwrap();
    io! { tokio::time::sleep(std::time::Duration::from_millis(300)).await };
    conn.execute("insert into t values (?1)", [a]).unwrap();
    Ok("done".into())
}

fn main() {}

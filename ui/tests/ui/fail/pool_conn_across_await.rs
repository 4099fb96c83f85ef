// A pooled connection kept across a plain `.await` in blocking code: the same mistake as across
// `io!`, and the same compile error.
use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use blocking_first::pool::Pool;
use r2d2_sqlite::SqliteConnectionManager;

static DB: Limit = Limit::new("db", 4);

async fn upload() -> Vec<u8> {
    tokio::task::yield_now().await;
    vec![1, 2, 3]
}

#[blocking_first(limit = DB)]
async fn store(db: Pool<SqliteConnectionManager>) -> Result<usize, r2d2::Error> {
    let conn = db.get()?;
    let content = upload().await;
    Ok(conn.execute("insert into t values (?1)", [content]).unwrap())
}

fn main() {}

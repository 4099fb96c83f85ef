// Pooled connections taken, used and given back in blocking code, with a fresh one after each
// `io!` and `.await`: this compiles (a `Conn` is not `Send`, but it never crosses an await).
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
async fn slow_view(db: Pool<SqliteConnectionManager>) -> Result<String, r2d2::Error> {
    // One statement: the connection goes back at its end.
    let a: i64 = db.get()?.query_row("select 1", [], |row| row.get(0)).unwrap();
    // A block: the connection goes back at its end.
    let b: i64 = {
        let conn = db.get()?;
        conn.execute("insert into t values (?1)", [a]).unwrap();
        conn.query_row("select 2", [], |row| row.get(0)).unwrap()
    };
    io! { tokio::time::sleep(std::time::Duration::from_millis(300)).await };
    {
        let conn = db.get()?;
        conn.execute("insert into t values (?1)", [a + b]).unwrap();
    }
    let content = upload().await;
    let mut conn = db.get()?;
    let tx = conn.transaction().unwrap();
    tx.execute("insert into t values (?1)", [content]).unwrap();
    tx.commit().unwrap();
    Ok("done".into())
}

fn main() {
    let _ = slow_view;
}

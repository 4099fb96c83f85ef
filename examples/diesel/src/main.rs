//! Run with
//!
//! ```not_rust
//! cargo run -p blocking-first-example-diesel
//! ```
//!
//! `PORT` (3000) and `DATABASE_URL` (a SQLite file in the temp dir) override the defaults.

use blocking_first_example_diesel::{BoxError, app, start_upstream};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3000), |port| port.parse())?;
    let database_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        let file = std::env::temp_dir().join("blocking-first-diesel.sqlite");
        file.to_string_lossy().into_owned()
    });
    let app = app(&database_url, start_upstream().await?).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "database: {database_url}\nlistening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}

//! Regions in the forms README and the guide recommend. `tests/rustfmt.rs` compiles and runs
//! this file, and checks that rustfmt formats it; `cargo fmt --all --check` keeps it formatted.

use blocking_first::blocking_first;

pub async fn fetch(id: u32) -> Result<u32, std::io::Error> {
    tokio::task::yield_now().await;
    Ok(id * 10)
}

#[blocking_first]
pub async fn page(a: u32, b: u32) -> Result<(u32, u32, u32), std::io::Error> {
    let x = io!(fetch(a).await?);
    let y = io!({
        let y = fetch(b).await?;
        y + 1
    });
    let (left, right) = parallel!(x + 1, y + 1);
    io!(tokio::task::yield_now().await);
    Ok((x, left, right))
}

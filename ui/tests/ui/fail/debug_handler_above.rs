// `#[axum::debug_handler]` above `#[blocking_first]` copies the body into a check function of its
// own, where no region is rewritten: put `#[blocking_first]` first.
use blocking_first::{blocking_first, io};

#[axum::debug_handler]
#[blocking_first]
async fn handler() -> String {
    io! { tokio::task::yield_now().await };
    String::new()
}

fn main() {}

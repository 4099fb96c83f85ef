//! Generated code stays quiet under strict lints: this file is compiled by
//! `cargo clippy --all-targets -- -D warnings` with `clippy::pedantic` on, so a lint that fires on
//! expanded code fails CI. Each handler uses the constructs in a different shape.
#![warn(clippy::pedantic)]

use std::sync::Arc;
use std::time::Duration;

use blocking_first::blocking_first;
use blocking_first::limit::Limit;

static CAP: Limit = Limit::new("lints", 2);

#[blocking_first(limit = CAP)]
async fn everything(items: Arc<Vec<u64>>) -> Result<u64, String> {
    let first = *items.first().ok_or("empty")?;
    let waited = io! {
        tokio::time::sleep(Duration::from_millis(1)).await;
        first + 1
    };
    let (sum, max) = parallel! {
        items.iter().sum::<u64>(),
        items.iter().max().copied(),
    };
    for item in items.iter() {
        io! {
            if *item > 100 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    if sum == 0 {
        return Err("zero".into());
    }
    Ok(waited + sum + max.unwrap_or(0))
}

#[blocking_first]
async fn unit_body() {
    io! { tokio::task::yield_now().await };
}

#[blocking_first]
async fn todo_body() -> u32 {
    todo!()
}

#[blocking_first]
async fn tail_region() -> impl std::fmt::Display {
    io! {
        tokio::task::yield_now().await;
        "done"
    }
}

#[tokio::test]
async fn the_fixtures_run() {
    assert_eq!(everything(Arc::new(vec![1, 2, 3])).await, Ok(2 + 6 + 3));
    unit_body().await;
    assert_eq!(tail_region().await.to_string(), "done");
    assert!(tokio::spawn(todo_body()).await.unwrap_err().is_panic());
}

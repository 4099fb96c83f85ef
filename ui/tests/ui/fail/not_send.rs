use std::rc::Rc;

use blocking_first::blocking_first;

#[blocking_first]
async fn handler() -> usize {
    let shared = Rc::new(5);
    io! { tokio::task::yield_now().await };
    *shared
}

fn main() {}

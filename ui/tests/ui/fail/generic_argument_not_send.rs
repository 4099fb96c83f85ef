use std::rc::Rc;

use blocking_first::blocking_first;

/// The attribute adds `T: Send + 'static`: the body moves between threads.
#[blocking_first]
async fn describe<T: std::fmt::Debug>(value: T) -> String {
    format!("{value:?}")
}

async fn caller() {
    describe(Rc::new(5)).await;
}

fn main() {}

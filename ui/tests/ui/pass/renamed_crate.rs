// `crate = path` for a renamed dependency, and generated code that only uses absolute paths:
// local modules named like the paths it uses change nothing.
use blocking_first as bf;

mod core {}
mod std {}
mod tokio {}

#[bf::blocking_first(crate = bf)]
async fn renamed(x: u32) -> u32 {
    let y = io! { x + 1 };
    let (a, b) = parallel! { y, y };
    a + b
}

#[bf::blocking_first(crate = "::blocking_first")]
async fn as_string() -> u32 {
    1
}

fn main() {
    let _ = renamed(1);
    let _ = as_string();
}

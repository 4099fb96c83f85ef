use blocking_first::blocking_first;

#[blocking_first(limit = "db")]
async fn handler() {}

fn main() {}

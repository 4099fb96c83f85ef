use blocking_first::blocking_first;

#[blocking_first(threads = 4)]
async fn handler() {}

fn main() {}

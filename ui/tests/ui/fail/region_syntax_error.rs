use blocking_first::blocking_first;

#[blocking_first]
async fn handler() -> u32 {
    io! { let = 1; }
}

fn main() {}

use blocking_first::blocking_first;

#[blocking_first]
fn handler() -> u32 {
    1
}

fn main() {}

use blocking_first::blocking_first;

#[blocking_first]
async fn handler() -> (u32, u32) {
    let run = || parallel! { 1, 2 };
    run()
}

fn main() {}

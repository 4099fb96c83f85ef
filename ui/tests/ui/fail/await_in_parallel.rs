use blocking_first::blocking_first;

async fn fetch() -> u32 {
    1
}

#[blocking_first]
async fn handler() -> (u32, u32) {
    parallel! {
        fetch().await,
        2,
    }
}

fn main() {}

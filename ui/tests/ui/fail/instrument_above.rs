use blocking_first::blocking_first;

#[tracing::instrument]
#[blocking_first]
async fn handler(id: u32) -> u32 {
    io! { id }
}

fn main() {}

use blocking_first::blocking_first;

#[blocking_first]
async fn handler() -> u32 {
    async fn helper() -> u32 {
        io! { 1 }
    }
    helper().await
}

fn main() {}

use blocking_first::blocking_first;

#[blocking_first]
async fn handler() -> (u32, u32) {
    io! {
        parallel! { 1, 2 }
    }
}

fn main() {}

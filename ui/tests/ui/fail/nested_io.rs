use blocking_first::blocking_first;

#[blocking_first]
async fn handler() -> u32 {
    io! {
        let x = io! { 1 };
        x + 1
    }
}

fn main() {}

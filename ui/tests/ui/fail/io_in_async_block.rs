use blocking_first::blocking_first;

#[blocking_first]
async fn handler() -> u32 {
    let task = async {
        io! { 1 }
    };
    tokio::spawn(task).await.unwrap()
}

fn main() {}

use blocking_first::blocking_first;

#[blocking_first]
async fn handler(ids: Vec<u32>) -> Vec<u32> {
    ids.into_iter()
        .map(|id| io! { id + 1 })
        .collect()
}

fn main() {}

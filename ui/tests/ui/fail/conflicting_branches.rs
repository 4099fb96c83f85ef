use blocking_first::blocking_first;

#[blocking_first]
async fn handler() -> (usize, usize) {
    let mut log = Vec::new();
    parallel! {
        { log.push(1); log.len() },
        { log.push(2); log.len() },
    }
}

fn main() {}

use blocking_first::blocking_first;

#[blocking_first]
async fn handler() {
    let () = parallel! {};
}

fn main() {}

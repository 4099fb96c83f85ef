use blocking_first::blocking_first;

#[blocking_first]
async fn handler() {
    assert_eq!(io! { 1 }, 1);
}

fn main() {}

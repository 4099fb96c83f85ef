async fn not_annotated() -> u32 {
    blocking_first::io! { 1 }
}

fn main() {}

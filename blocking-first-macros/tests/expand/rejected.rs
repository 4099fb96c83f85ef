// A rejected signature: the error, then the function with its regions as plain blocks, so the
// rest of the crate (and the IDE) still sees it.
#[blocking_first]
async fn borrowed(name: &str) -> usize {
    let n = io! { name.len() };
    n
}

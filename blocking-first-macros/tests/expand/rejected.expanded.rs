::core::compile_error! {
    "#[blocking_first] arguments must be owned (`'static`): the body moves between the runtime and blocking threads, so it cannot hold a borrow of the caller's data; take an owned value (`String`, `Vec<T>`) or an `Arc`"
}
async fn borrowed(name: &str) -> usize {
    let n = { name.len() };
    n
}

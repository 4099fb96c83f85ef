// Owned arguments whose types mention references only inside function types: a `fn` pointer,
// boxed and shared closures, a higher-ranked closure, an `impl Fn` argument, a `&'static` closure.
// None of them borrows the caller's data, so each body runs, moving between threads.
use std::sync::Arc;

use blocking_first::blocking_first;

#[blocking_first]
async fn pointer(name: String, len: fn(&str) -> usize) -> usize {
    io! { tokio::task::yield_now().await };
    len(&name)
}

#[blocking_first]
async fn boxed(name: String, len: Box<dyn Fn(&str) -> usize + Send + Sync>) -> usize {
    io! { tokio::task::yield_now().await };
    len(&name)
}

#[blocking_first]
async fn shared(name: String, first: Arc<dyn Fn(&str) -> &str + Send + Sync>) -> String {
    first(&name).to_owned()
}

#[blocking_first]
async fn higher_ranked(
    name: String,
    first: Box<dyn for<'a> Fn(&'a str) -> &'a str + Send>,
    pick: for<'a> fn(&'a [String]) -> Option<&'a String>,
) -> String {
    let names = vec![first(&name).to_owned()];
    pick(&names).cloned().unwrap_or_default()
}

#[blocking_first]
async fn generic(name: String, len: impl Fn(&str) -> usize) -> usize {
    len(&name)
}

#[blocking_first]
async fn static_closure(name: String, len: &'static (dyn Fn(&str) -> usize + Sync)) -> usize {
    len(&name)
}

fn first_char(s: &str) -> &str {
    &s[..1]
}

#[tokio::main]
async fn main() {
    assert_eq!(pointer("abc".into(), str::len).await, 3);
    assert_eq!(boxed("abcd".into(), Box::new(|s| s.len())).await, 4);
    assert_eq!(shared("xyz".into(), Arc::new(first_char)).await, "x");
    assert_eq!(higher_ranked("kit".into(), Box::new(first_char), <[String]>::first).await, "k");
    assert_eq!(generic("ab".into(), |s: &str| s.len()).await, 2);
    static LEN: fn(&str) -> usize = str::len;
    assert_eq!(static_closure("a".into(), &LEN).await, 1);
}

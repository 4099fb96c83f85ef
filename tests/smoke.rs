use blocking_first::blocking_first;
use tokio::runtime::Handle;

#[blocking_first]
async fn f(x: u32) -> u32 {
    Handle::current().block_on(async {});
    let y = io! {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        x + 1
    };
    Handle::current().block_on(async {});
    let (a, b) = parallel! { y * 2, y * 3 };
    a + b
}

#[tokio::test]
async fn smoke() {
    assert_eq!(f(1).await, 10);
}

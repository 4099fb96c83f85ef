#[blocking_first]
async fn report(id: u32) -> String {
    let rows = load(id);
    let sent = io! { notify(&rows).await };
    render(rows, sent)
}

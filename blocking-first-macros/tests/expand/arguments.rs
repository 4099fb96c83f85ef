static DB: Limit = Limit::new("db", 4);

#[blocking_first(limit = DB, crate = bf)]
async fn report(id: u32) -> impl IntoResponse {
    let rows = load(id);
    io! {
        notify(&rows).await;
        render(rows)
    }
}

struct Service;

impl Service {
    #[blocking_first]
    async fn refresh(self: Arc<Self>) {
        self.reload();
    }
}

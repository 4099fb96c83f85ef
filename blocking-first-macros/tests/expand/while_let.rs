#[blocking_first]
async fn drain(jobs: Arc<Mutex<Vec<Job>>>, mut stop: watch::Receiver<()>) -> usize {
    let mut sent = 0;
    // The guard of `lock()` lives through the body, as without the attribute; after a
    // `continue` hidden in `select!`, the condition still runs as blocking code.
    while let Some(job) = jobs.lock().await.pop() {
        io! {
            tokio::select! {
                ok = job.send() => if !ok { continue },
                _ = stop.changed() => break,
            }
        }
        sent += 1;
    }
    sent
}

#[blocking_first]
async fn poll_jobs(queue: Queue) -> usize {
    let mut done = 0;
    'jobs: while let Some(job) = queue.next_blocking() {
        io! {
            if !job.remote_ok().await {
                continue 'jobs;
            }
            if job.is_last() {
                break;
            }
        }
        job.finish();
        done += 1;
    }
    done
}

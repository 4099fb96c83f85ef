//! A running axum server that can be stopped gracefully.

use std::io;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server started by [`spawn`]. Dropping it starts a graceful shutdown too.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

/// Serves `router` on `listener` in a task of its own.
pub fn spawn(listener: TcpListener, router: Router) -> io::Result<Running> {
    let addr = listener.local_addr()?;
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                // Either a message or the sender dropped: both mean stop.
                let _ = signal.await;
            })
            .await
    });
    Ok(Running {
        addr,
        shutdown,
        task,
    })
}

impl Running {
    /// Stops accepting connections, lets the requests in flight finish, then returns.
    pub async fn stop(self) -> io::Result<()> {
        // An error means the server task is gone already; the join below tells why.
        let _ = self.shutdown.send(());
        self.task.await.map_err(io::Error::other)?
    }
}

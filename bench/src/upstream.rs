//! The other service the handler calls: a local axum server that answers after a fixed latency,
//! and the two clients that call it (async reqwest, and a blocking one on `std::net`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::runtime::Runtime;

/// The listen backlog of every server here, so that a burst of connections waits in the kernel
/// queue instead of being dropped (the std default, 128, is below the highest concurrency).
pub const BACKLOG: u32 = 1024;

/// Binds 127.0.0.1 on a free port with [`BACKLOG`]. Must run inside a tokio runtime context.
pub fn listen() -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(BACKLOG)
}

/// The upstream server, on its own runtime for the whole run.
pub struct Upstream {
    pub addr: SocketAddr,
    _runtime: Runtime,
}

impl Upstream {
    pub fn start(latency: Duration) -> std::io::Result<Upstream> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("upstream")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(async { listen() })?;
        let addr = listener.local_addr()?;
        let app = Router::new().route(
            "/",
            get(move || async move {
                tokio::time::sleep(latency).await;
                "1"
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Ok(Upstream {
            addr,
            _runtime: runtime,
        })
    }
}

/// The async client of the handlers on tokio (connections kept alive and reused).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("reqwest client"),
            url: format!("http://{addr}/"),
        }
    }

    pub async fn call(&self) -> Result<i64, String> {
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("upstream: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("upstream: {}", response.status()));
        }
        let text = response
            .text()
            .await
            .map_err(|e| format!("upstream: {e}"))?;
        text.trim()
            .parse()
            .map_err(|_| format!("upstream: bad body {text:?}"))
    }
}

/// The blocking client of the thread-per-request server: one HTTP/1.1 request per connection,
/// as a synchronous client without a session does.
pub fn call_blocking(addr: SocketAddr) -> Result<i64, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("upstream: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("upstream: {e}"))?;
    let mut response = Vec::with_capacity(256);
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("upstream: {e}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("upstream: truncated response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "upstream: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    body.trim()
        .parse()
        .map_err(|_| format!("upstream: bad body {body:?}"))
}

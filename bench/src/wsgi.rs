//! Variant (f): the classic synchronous server. A fixed pool of threads, each accepting a
//! connection, reading one HTTP/1.1 request, running the handler as plain blocking code and
//! answering with `Connection: close` (a synchronous worker cannot keep an idle connection open
//! without starving the others).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::variants::{self, App};

pub struct ThreadPerRequest {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl ThreadPerRequest {
    /// Serves `app` on `listener` with `threads` threads.
    pub fn start(
        app: Arc<App>,
        listener: TcpListener,
        threads: usize,
    ) -> std::io::Result<ThreadPerRequest> {
        listener.set_nonblocking(false)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|index| {
                let listener = listener.try_clone()?;
                let app = app.clone();
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("sync-worker-{index}"))
                    .spawn(move || worker(&app, &listener, &stop))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(ThreadPerRequest {
            addr,
            stop,
            threads,
        })
    }

    /// Stops every thread: each blocked `accept` gets one wake-up connection.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for _ in &self.threads {
            let _ = TcpStream::connect(self.addr);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn worker(app: &App, listener: &TcpListener, stop: &AtomicBool) {
    loop {
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        if stop.load(Ordering::Acquire) {
            return;
        }
        let _busy = app.blocking.enter();
        // A client that went away is its own problem: nothing to report to it.
        let _ = serve(app, stream);
    }
}

fn serve(app: &App, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut header = String::new();
    loop {
        header.clear();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let id = request_line
        .split_whitespace()
        .nth(1)
        .and_then(|target| target.split_once("id="))
        .and_then(|(_, id)| id.split('&').next()?.parse::<i64>().ok());
    let (status, body) = match id {
        Some(id) => match variants::thread_per_request(app, id) {
            Ok(body) => ("200 OK", body),
            Err(reason) => ("500 Internal Server Error", reason),
        },
        None => ("400 Bad Request", "expected GET /?id=N".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    (&stream).write_all(response.as_bytes())?;
    (&stream).flush()
}

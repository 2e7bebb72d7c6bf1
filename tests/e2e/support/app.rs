//! The recordings' workload: a small HTTP/1.1 application that answers every request with the line
//! `app HOST:PORT saw METHOD PATH from IP:PORT`.
//!
//! The recordings ran a Python `http.server` app (`reference/envoy/scripts/e2e.sh`). This is a replica of
//! its responses, byte for byte: the same status line, the same `Server` and `Date` headers first, then
//! `content-type`, `content-length` and `x-app-port`, and the same body. The byte counters in the recorded
//! stat deltas (`upstream_cx_rx_bytes_total: 210`) therefore apply to it unchanged. Unlike Python's
//! single-threaded server it serves connections concurrently; the recordings never depended on that.

use std::net::{SocketAddr, TcpListener};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// What the recorded app sent as its `Server` header (Python 3.11.7's `BaseHTTPRequestHandler`).
const SERVER: &str = "BaseHTTP/0.6 Python/3.11.7";

/// A running replica, serving until dropped.
#[derive(Debug)]
pub(crate) struct App {
    task: JoinHandle<()>,
}

impl App {
    /// Serve `listener` (bound inside a namespace) on `runtime`; `host` is the host part the app names in
    /// its answers (the Python app printed the address it was told to bind, e.g. `0.0.0.0`).
    pub(crate) fn serve(runtime: &tokio::runtime::Handle, listener: TcpListener, host: &str) -> App {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let name = format!("{host}:{port}");
        let task = runtime.spawn(async move {
            listener.set_nonblocking(true).expect("nonblocking listener");
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let _ = connection(stream, peer, &name, port).await;
                });
            }
        });
        App { task }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: requests answered in order until the client closes or asks to close.
async fn connection(mut stream: TcpStream, peer: SocketAddr, name: &str, port: u16) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        // Read a whole head.
        let head_len = loop {
            if let Some(end) = find_head_end(&buf) {
                break end;
            }
            if buf.len() > 64 * 1024 {
                return Ok(());
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&buf[..head_len]), Ok(httparse::Status::Complete(_))) {
            return Ok(());
        }
        let method = req.method.unwrap_or("GET").to_string();
        let path = req.path.unwrap_or("/").to_string();
        let http10 = req.version == Some(0);
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
        };
        let content_length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let close = http10 || header("connection").is_some_and(|v| v == "close");
        buf.drain(..head_len);
        // Python read exactly content-length bytes of body (and ignored chunked bodies).
        while buf.len() < content_length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..content_length);

        let body = format!("app {name} saw {method} {path} from {}:{}\n", peer.ip(), peer.port());
        let date = meshcap::proxy::http1::HttpDate::now();
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nServer: {SERVER}\r\nDate: {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-app-port: {port}\r\n\r\n",
            String::from_utf8_lossy(date.as_bytes()),
            body.len()
        )
        .into_bytes();
        if method != "HEAD" {
            response.extend_from_slice(body.as_bytes());
        }
        stream.write_all(&response).await?;
        if close {
            return Ok(());
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

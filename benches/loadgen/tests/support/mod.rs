//! An in-process HTTP/1.1 server on loopback whose behaviour is chosen per request, by the order in which
//! requests arrive (0-based, across all connections). It runs on its own thread and runtime so its work
//! never shares the load generator's thread.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

/// What the server does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `200` with a 2-byte `content-length` body, keep-alive.
    Ok,
    /// `200` with a chunked body in three chunks.
    Chunked,
    /// `200`, `connection: close`, body delimited by closing the connection.
    CloseDelimited,
    /// The given status with a small body, keep-alive.
    Status(u16),
    /// Wait this long, then `Ok`.
    Stall(Duration),
    /// Never answer; keep the connection open until the client closes it.
    Hang,
    /// Close the connection without answering.
    Close,
    /// Announce 10 body bytes, send 2, close.
    Truncated,
    /// Answer with bytes that are not HTTP.
    Garbage,
    /// Stop listening (new connections are refused) and close this connection without answering.
    Shutdown,
}

/// The running server; stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Start a server on 127.0.0.1 (an ephemeral port) that handles request `n` with `behaviour(n)`.
    pub fn start(behaviour: impl Fn(u64) -> Action + Send + Sync + 'static) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let received = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let counter = Arc::clone(&received);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(serve(listener, counter, Arc::new(behaviour), stopped));
        });
        Self {
            addr,
            received,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Requests received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Behaviour = Arc<dyn Fn(u64) -> Action + Send + Sync>;

async fn serve(
    listener: std::net::TcpListener,
    counter: Arc<AtomicU64>,
    behaviour: Behaviour,
    stop: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    // `shutdown.0` asks the accept loop to stop listening, `shutdown.1` says it has.
    let shutdown = Arc::new((Notify::new(), Notify::new()));
    let mut stop = stop;
    let accept = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (counter, behaviour, shutdown) = (Arc::clone(&counter), Arc::clone(&behaviour), Arc::clone(&shutdown));
            tokio::spawn(connection(stream, counter, behaviour, shutdown));
        }
    };
    let stopped = tokio::select! {
        () = accept => true,
        () = shutdown.0.notified() => false,
        _ = &mut stop => true,
    };
    if !stopped {
        // Refuse new connections; keep serving the open ones until told to stop.
        drop(listener);
        shutdown.1.notify_one();
        let _ = stop.await;
    }
}

async fn connection(
    mut stream: TcpStream,
    counter: Arc<AtomicU64>,
    behaviour: Behaviour,
    shutdown: Arc<(Notify, Notify)>,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request head (the load generator sends no bodies in these tests).
        let end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..end);
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let reply: &[u8] = match behaviour(n) {
            Action::Ok => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            Action::Chunked => {
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\no\r\n1;x=y\r\nk\r\n0\r\n\r\n"
            }
            Action::CloseDelimited => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nok")
                    .await;
                return;
            }
            Action::Status(status) => {
                let head = format!("HTTP/1.1 {status} Whatever\r\ncontent-length: 3\r\n\r\nbad");
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Action::Stall(delay) => {
                tokio::time::sleep(delay).await;
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            }
            Action::Hang => {
                // Wait for the client to give up and close.
                while matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {}
                return;
            }
            Action::Close => return,
            Action::Shutdown => {
                // Close this connection only once the listener is gone, so a reconnect cannot slip in.
                shutdown.0.notify_one();
                shutdown.1.notified().await;
                return;
            }
            Action::Truncated => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok")
                    .await;
                return;
            }
            Action::Garbage => {
                let _ = stream.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await;
                return;
            }
        };
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

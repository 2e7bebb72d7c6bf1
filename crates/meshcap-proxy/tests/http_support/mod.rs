//! Test support for the HTTP path: a recording backend, raw clients, and a harness that runs the
//! same raw exchange against our HCM or a real Envoy.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use meshcap_proxy::http1::{ChunkedDecoder, DecodeStep, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One complete request as the backend saw it, normalised: request line, header lines (a generated
/// `x-request-id` replaced by `<uuid>`), decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub line: String,
    pub headers: Vec<String>,
    pub body: Vec<u8>,
}

/// A backend that records every complete request and answers by path: `/r/<name>` gets the canned
/// response `<name>` from [`canned`], anything else `200 ok`.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<Mutex<usize>>,
}

pub fn canned(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "cl_te" => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "cl_dup" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok!",
        "cl_dup_same" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok",
        "cl_bad" => b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",
        "te_gzip" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nok",
        "chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;x=y\r\nok\r\n0\r\nx-trailer: 1\r\n\r\n",
        "chunk_bad" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
        "close_delimited" => b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\nclose-delimited body",
        "no_content_with_length" => b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
        "not_modified" => b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\netag: x\r\n\r\n",
        "early_hints" => b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        "continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        "bare_lf" => b"HTTP/1.1 200 OK\ncontent-length: 2\nx-a: b\n\nok",
        "fold" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: b\r\n c\r\n\r\nok",
        "custom_reason" => b"HTTP/1.1 200 Fine Thanks\r\ncontent-length: 2\r\n\r\nok",
        "teapot" => b"HTTP/1.1 418 I'm a teapot\r\ncontent-length: 2\r\n\r\nok",
        "http10" => b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        "conn_close_resp" => b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        "hop_resp" => b"HTTP/1.1 200 OK\r\nconnection: x-h, keep-alive\r\nkeep-alive: timeout=5\r\nx-h: 1\r\nproxy-connection: x\r\ncontent-length: 2\r\nServer: app\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\nX-Case: A\r\nx-dup: 1\r\nx-dup: 2\r\n\r\nok",
        "nul_resp" => b"HTTP/1.1 200 OK\r\nx-a: a\x00b\r\ncontent-length: 2\r\n\r\nok",
        "partial_close" => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok",
        "garbage" => b"FOO BAR\r\n\r\n",
        "upgrade" => b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nWSDATA",
        "close" | "rst" => b"",
        _ => return None,
    })
}

impl Backend {
    pub async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let backend = Backend {
            addr,
            seen: Arc::default(),
            connections: Arc::default(),
        };
        let b = backend.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                *b.connections.lock().unwrap() += 1;
                let b = b.clone();
                tokio::spawn(async move { b.conn(s).await });
            }
        });
        backend
    }

    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    async fn conn(&self, mut s: TcpStream) {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            let (seen, path, consumed) = loop {
                if let Some(r) = parse_canonical(&buf) {
                    break r;
                }
                match s.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            };
            let _ = buf.split_to(consumed);
            self.seen.lock().unwrap().push(seen);
            let name = path.strip_prefix("/r/").unwrap_or("");
            match name {
                "close" => return,
                "rst" => {
                    // Abortive close: RST instead of FIN.
                    let std = s.into_std().expect("into_std");
                    let _ = socket2::SockRef::from(&std).set_linger(Some(Duration::ZERO));
                    drop(std);
                    return;
                }
                _ => {}
            }
            let huge;
            let resp = if name == "huge_head" {
                huge = format!(
                    "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
                    "x".repeat(70000)
                );
                huge.as_bytes()
            } else {
                canned(name).unwrap_or(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            };
            if s.write_all(resp).await.is_err() {
                return;
            }
            if matches!(
                name,
                "close_delimited" | "partial_close" | "chunk_bad" | "conn_close_resp"
            ) {
                return;
            }
            if name == "upgrade" {
                // Echo whatever the client sends after the switch.
                let mut b = [0u8; 1024];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 || s.write_all(&b[..n]).await.is_err() {
                        return;
                    }
                }
                return;
            }
        }
    }
}

/// Parse one complete canonical request (what a proxy forwards): `Some((seen, path, consumed))`.
fn parse_canonical(buf: &[u8]) -> Option<(Seen, String, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut cl = 0usize;
    let mut chunked = false;
    for l in lines {
        let (n, v) = l.split_once(':').unwrap_or((l, ""));
        let v = v.trim();
        if n.eq_ignore_ascii_case("content-length") {
            cl = v.parse().unwrap_or(0);
        }
        if n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
        if n == "x-request-id" && v.len() == 36 && v.chars().filter(|&c| c == '-').count() == 4 {
            headers.push("x-request-id: <uuid>".to_string());
        } else {
            headers.push(l.to_string());
        }
    }
    let (body, consumed) = if chunked {
        let mut dec = ChunkedDecoder::new(&Limits::default());
        let mut rest = BytesMut::from(&buf[end..]);
        let total = rest.len();
        let mut body = Vec::new();
        loop {
            match dec.decode(&mut rest).ok()? {
                DecodeStep::Data(d) => body.extend_from_slice(&d),
                DecodeStep::Done => break,
                _ => return None,
            }
        }
        (body, end + total - rest.len())
    } else {
        if buf.len() < end + cl {
            return None;
        }
        (buf[end..end + cl].to_vec(), end + cl)
    };
    Some((Seen { line, headers, body }, path, consumed))
}

/// One response: status, header lines (date and service-time values blanked), body.
pub type Response = (u16, Vec<String>, Vec<u8>);

/// What a client saw for one raw exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Responses in order: status, header lines (date and service-time values blanked), body.
    pub responses: Vec<Response>,
    /// Bytes after the last complete response (an interrupted body, an upgraded stream).
    pub trailing: Vec<u8>,
    /// The proxy closed the connection.
    pub closed: bool,
}

impl Answer {
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.0).collect()
    }
}

/// Send `raw` on a fresh connection to `addr`, then read until `expect` complete responses arrived
/// and (when the last says `connection: close`, or it is incomplete) the connection closed, or
/// `patience` passed without a byte.
pub async fn exchange(addr: SocketAddr, raw: &[u8], expect: usize, patience: Duration) -> Answer {
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    let _ = s.write_all(raw).await;
    let mut buf = BytesMut::new();
    let mut answer = Answer {
        responses: Vec::new(),
        trailing: Vec::new(),
        closed: false,
    };
    let mut to_head = raw.starts_with(b"HEAD ");
    loop {
        // Parse what we have.
        while let Some((resp, used)) = parse_response(&buf, to_head) {
            let _ = buf.split_to(used);
            answer.responses.push(resp);
            to_head = false;
        }
        let last_closes = answer
            .responses
            .last()
            .is_some_and(|r| r.1.iter().any(|h| h == "connection: close"));
        let upgraded = answer.responses.last().is_some_and(|r| r.0 == 101);
        if answer.responses.len() >= expect && !last_closes && buf.is_empty() && !upgraded {
            break;
        }
        match tokio::time::timeout(patience, s.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                answer.closed = true;
                break;
            }
            Ok(Ok(_)) => {}
            Err(_) => break,
        }
    }
    while let Some((resp, used)) = parse_response(&buf, false) {
        let _ = buf.split_to(used);
        answer.responses.push(resp);
    }
    answer.trailing = buf.to_vec();
    answer
}

fn parse_response(buf: &[u8], to_head: bool) -> Option<(Response, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    let mut cl = None;
    let mut chunked = false;
    for l in lines {
        let (n, v) = l.split_once(": ").unwrap_or((l, ""));
        match n {
            "date" | "x-envoy-upstream-service-time" => headers.push(format!("{n}: *")),
            _ => headers.push(l.to_string()),
        }
        if n == "content-length" {
            cl = v.parse::<usize>().ok();
        }
        if n == "transfer-encoding" && v == "chunked" {
            chunked = true;
        }
    }
    if to_head || status == 101 || status == 204 || status == 304 || (100..200).contains(&status) {
        return Some(((status, headers, Vec::new()), end));
    }
    if chunked {
        let mut dec = ChunkedDecoder::new(&Limits::default());
        let mut rest = BytesMut::from(&buf[end..]);
        let total = rest.len();
        let mut body = Vec::new();
        loop {
            match dec.decode(&mut rest).ok()? {
                DecodeStep::Data(d) => body.extend_from_slice(&d),
                DecodeStep::Done => break,
                _ => return None,
            }
        }
        return Some(((status, headers, body), end + total - rest.len()));
    }
    let cl = cl.unwrap_or(0);
    if buf.len() < end + cl {
        return None;
    }
    Some(((status, headers, buf[end..end + cl].to_vec()), end + cl))
}

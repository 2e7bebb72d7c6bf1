//! Sans-IO HTTP/1.1 response framing: where one response ends, its status and whether the connection
//! can carry another request. Bodies are skipped, never stored.

/// The largest response head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
const MAX_CHUNK_LINE_BYTES: usize = 4096;

/// A complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Response {
    status: u16,
    keep_alive: bool,
    body_bytes: u64,
}

impl Response {
    /// The status code (the final one: `1xx` interim responses are skipped).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the connection can carry the next request.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// The body's length (decoded, for chunked bodies).
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }
}

/// A response this parser cannot frame; the connection cannot be reused after one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// The status line or a header line is malformed.
    #[error("invalid response head: {reason}")]
    InvalidHead {
        /// What httparse reported.
        reason: String,
    },
    /// The head is longer than [`MAX_HEAD_BYTES`] or has too many headers.
    #[error("response head longer than {MAX_HEAD_BYTES} bytes or with more than {MAX_HEADERS} headers")]
    HeadTooLarge,
    /// `101 Switching Protocols`: not an HTTP/1.1 response any more.
    #[error("unexpected 101 switching protocols")]
    SwitchingProtocols,
    /// A `content-length` that is not a number, or two that disagree.
    #[error("invalid content-length `{value}`")]
    InvalidContentLength {
        /// The offending value(s), comma-joined.
        value: String,
    },
    /// A chunk-size line that is not hexadecimal, too long or overflows.
    #[error("invalid chunk size line `{line}`")]
    InvalidChunkSize {
        /// The line (lossily decoded, at most 64 bytes).
        line: String,
    },
    /// Chunk data not followed by CRLF.
    #[error("chunk data not followed by crlf")]
    MissingChunkCrlf,
    /// The connection ended before the response did.
    #[error("connection closed {at}")]
    UnexpectedEof {
        /// Where: `before the response`, `in the response head`, `in the body`.
        at: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilEof,
    Done,
}

/// Finds the end of one response in a byte stream.
///
/// Feed it the unconsumed bytes with [`parse`](Self::parse); it reports how many it consumed and, once
/// the response is complete, the [`Response`]. At end of stream call [`finish`](Self::finish) (a body
/// delimited by the connection's close ends there). Framing: interim `1xx` responses are skipped;
/// no body after `HEAD`, `204` and `304`; `transfer-encoding` ending in `chunked`; `content-length`
/// (repeated values must agree); otherwise the body runs to the end of the connection.
///
/// ```
/// use meshcap_loadgen::ResponseParser;
///
/// let wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
/// let mut parser = ResponseParser::new();
/// let (used, done) = parser.parse(&wire[..20])?;
/// assert_eq!((used, done), (0, None)); // the head is not complete yet
/// let (used, done) = parser.parse(wire)?;
/// assert_eq!(used, wire.len());
/// let response = done.unwrap();
/// assert_eq!((response.status(), response.keep_alive(), response.body_bytes()), (200, true, 2));
/// # Ok::<(), meshcap_loadgen::ResponseError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ResponseParser {
    head_request: bool,
    state: State,
    status: u16,
    keep_alive: bool,
    body_bytes: u64,
    seen_bytes: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseParser {
    /// A parser for the response to a request with a body-bearing method (anything but `HEAD`).
    pub fn new() -> Self {
        Self {
            head_request: false,
            state: State::Head,
            status: 0,
            keep_alive: true,
            body_bytes: 0,
            seen_bytes: false,
        }
    }

    /// A parser for the response to a `HEAD` request (never a body).
    pub fn for_head_request() -> Self {
        Self {
            head_request: true,
            ..Self::new()
        }
    }

    /// Start over for the next response on the same connection.
    pub fn reset(&mut self) {
        *self = Self {
            head_request: self.head_request,
            ..Self::new()
        };
    }

    /// Whether any byte of this response has been consumed or offered.
    pub fn has_started(&self) -> bool {
        self.seen_bytes
    }

    /// Consume as much of `buf` as belongs to this response.
    ///
    /// Returns the bytes consumed (drop them from the front of your buffer) and the response once it is
    /// complete. An incomplete head is never consumed: keep it and call again with more bytes appended.
    /// Calling again after completion consumes nothing and returns the same response.
    ///
    /// # Errors
    /// [`ResponseError`] for a head or body that cannot be framed.
    pub fn parse(&mut self, buf: &[u8]) -> Result<(usize, Option<Response>), ResponseError> {
        self.seen_bytes |= !buf.is_empty();
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Done => return Ok((pos, Some(self.response()))),
                State::Head => match self.parse_head(rest)? {
                    Some(used) => pos += used,
                    None => return Ok((pos, None)),
                },
                State::Length(remaining) => {
                    let take = remaining.min(rest.len() as u64);
                    pos += take as usize;
                    self.body_bytes += take;
                    if take < remaining {
                        self.state = State::Length(remaining - take);
                        return Ok((pos, None));
                    }
                    self.state = State::Done;
                }
                State::ChunkSize => {
                    match find_crlf(rest, MAX_CHUNK_LINE_BYTES).map_err(|()| ResponseError::InvalidChunkSize {
                        line: lossy_prefix(rest),
                    })? {
                        None => return Ok((pos, None)),
                        Some(end) => {
                            let size = chunk_size(&rest[..end])?;
                            pos += end + 2;
                            self.state = if size == 0 {
                                State::Trailers
                            } else {
                                State::ChunkData(size)
                            };
                        }
                    }
                }
                State::ChunkData(remaining) => {
                    let take = remaining.min(rest.len() as u64);
                    pos += take as usize;
                    self.body_bytes += take;
                    if take < remaining {
                        self.state = State::ChunkData(remaining - take);
                        return Ok((pos, None));
                    }
                    self.state = State::ChunkDataEnd;
                }
                State::ChunkDataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = State::ChunkSize;
                    }
                    [] | [b'\r'] => return Ok((pos, None)),
                    _ => return Err(ResponseError::MissingChunkCrlf),
                },
                State::Trailers => match find_crlf(rest, MAX_HEAD_BYTES).map_err(|()| ResponseError::HeadTooLarge)? {
                    None => return Ok((pos, None)),
                    Some(end) => {
                        pos += end + 2;
                        if end == 0 {
                            self.state = State::Done;
                        }
                    }
                },
                State::UntilEof => {
                    pos += rest.len();
                    self.body_bytes += rest.len() as u64;
                    return Ok((pos, None));
                }
            }
        }
    }

    /// The connection reached end of stream.
    ///
    /// # Errors
    /// [`ResponseError::UnexpectedEof`] unless the response is complete or its body runs to the end of
    /// the connection.
    pub fn finish(&mut self) -> Result<Response, ResponseError> {
        match self.state {
            State::Done => Ok(self.response()),
            State::UntilEof => {
                self.state = State::Done;
                Ok(self.response())
            }
            State::Head if !self.seen_bytes => Err(ResponseError::UnexpectedEof {
                at: "before the response",
            }),
            State::Head => Err(ResponseError::UnexpectedEof {
                at: "in the response head",
            }),
            _ => Err(ResponseError::UnexpectedEof { at: "in the body" }),
        }
    }

    fn response(&self) -> Response {
        Response {
            status: self.status,
            keep_alive: self.keep_alive,
            body_bytes: self.body_bytes,
        }
    }

    /// Parse one head at the start of `buf`; `Some(consumed)` once it is complete.
    fn parse_head(&mut self, buf: &[u8]) -> Result<Option<usize>, ResponseError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        let used = match head.parse(buf) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Err(ResponseError::HeadTooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::HeadTooLarge),
            Err(e) => return Err(ResponseError::InvalidHead { reason: e.to_string() }),
        };
        if used > MAX_HEAD_BYTES {
            return Err(ResponseError::HeadTooLarge);
        }
        // httparse only completes a head with a version and a code.
        let (version, status) = (head.version.unwrap_or(1), head.code.unwrap_or(0));
        if status == 101 {
            return Err(ResponseError::SwitchingProtocols);
        }
        if (100..200).contains(&status) {
            return Ok(Some(used)); // interim response: the final one follows
        }
        let mut close = false;
        let mut keep_alive_token = false;
        let mut chunked = None;
        let mut length: Option<u64> = None;
        let mut lengths = Vec::new();
        for h in head.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',').map(trim) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = h.value.split(|&b| b == b',').map(trim).rfind(|t| !t.is_empty());
                chunked = Some(last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")));
            } else if h.name.eq_ignore_ascii_case("content-length") {
                for value in h.value.split(|&b| b == b',').map(trim) {
                    lengths.push(String::from_utf8_lossy(value).into_owned());
                    let parsed = std::str::from_utf8(value)
                        .ok()
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<u64>().ok());
                    match (parsed, length) {
                        (Some(n), None) => length = Some(n),
                        (Some(n), Some(prev)) if n == prev => {}
                        _ => length = Some(u64::MAX),
                    }
                }
            }
        }
        if length == Some(u64::MAX) && chunked.is_none() {
            return Err(ResponseError::InvalidContentLength {
                value: lengths.join(","),
            });
        }
        self.status = status;
        self.keep_alive = if version == 0 {
            keep_alive_token && !close
        } else {
            !close
        };
        self.state = if self.head_request || status == 204 || status == 304 {
            State::Done
        } else {
            match (chunked, length) {
                (Some(true), _) => State::ChunkSize,
                (Some(false), _) | (None, None) => {
                    self.keep_alive = false;
                    State::UntilEof
                }
                (None, Some(0)) => State::Done,
                (None, Some(n)) => State::Length(n),
            }
        };
        Ok(Some(used))
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// The position of the first CRLF in `buf`; `Err` when the line is longer than `limit` bytes.
fn find_crlf(buf: &[u8], limit: usize) -> Result<Option<usize>, ()> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end <= limit => Ok(Some(end)),
        None if buf.len() <= limit + 1 => Ok(None),
        _ => Err(()),
    }
}

fn lossy_prefix(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned()
}

/// The size of a chunk from its size line (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<u64, ResponseError> {
    let digits = trim(line.split(|&b| b == b';').next().unwrap_or_default());
    let invalid = || ResponseError::InvalidChunkSize {
        line: lossy_prefix(line),
    };
    if digits.is_empty() {
        return Err(invalid());
    }
    digits.iter().try_fold(0u64, |size, &b| {
        let digit = (b as char).to_digit(16).ok_or_else(invalid)?;
        size.checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or_else(invalid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(parser: &mut ResponseParser, wire: &[u8]) -> Result<(usize, Option<Response>), ResponseError> {
        parser.parse(wire)
    }

    fn one(wire: &[u8]) -> Response {
        let mut p = ResponseParser::new();
        let (used, done) = parse_all(&mut p, wire).unwrap();
        assert_eq!(used, wire.len(), "{}", String::from_utf8_lossy(wire));
        done.unwrap_or_else(|| panic!("incomplete: {}", String::from_utf8_lossy(wire)))
    }

    fn err(wire: &[u8]) -> String {
        let mut p = ResponseParser::new();
        match p.parse(wire) {
            Err(e) => e.to_string(),
            Ok(r) => panic!("accepted {}: {r:?}", String::from_utf8_lossy(wire)),
        }
    }

    #[test]
    fn content_length_bodies() {
        let r = one(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!((r.status(), r.keep_alive(), r.body_bytes()), (200, true, 2));
        let r = one(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 3, 3\r\nconnection: close\r\n\r\nbad");
        assert_eq!((r.status(), r.keep_alive(), r.body_bytes()), (503, false, 3));
        let r = one(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(r.body_bytes(), 0);
    }

    #[test]
    fn bytes_after_the_response_are_left_alone() {
        let mut p = ResponseParser::new();
        let (used, done) = p
            .parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1")
            .unwrap();
        assert_eq!((used, done.map(|r| r.status())), (40, Some(200)));
        assert_eq!(p.parse(b"HTTP/1.1").unwrap(), (0, done));
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                     5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        let r = one(wire);
        assert_eq!((r.status(), r.keep_alive(), r.body_bytes()), (200, true, 15));
    }

    #[test]
    fn chunked_wins_over_content_length() {
        let r = one(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n");
        assert_eq!(r.body_bytes(), 0);
    }

    #[test]
    fn bodiless_statuses_and_head() {
        assert_eq!(
            one(b"HTTP/1.1 204 No Content\r\ncontent-length: 10\r\n\r\n").body_bytes(),
            0
        );
        assert_eq!(one(b"HTTP/1.1 304 Not Modified\r\n\r\n").status(), 304);
        let mut p = ResponseParser::for_head_request();
        let (_, r) = p.parse(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n").unwrap();
        assert_eq!(r.map(|r| (r.status(), r.body_bytes())), Some((200, 0)));
        p.reset();
        assert!(!p.has_started());
        let (_, r) = p
            .parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .unwrap();
        assert!(r.is_some(), "reset keeps the HEAD mode");
    }

    #[test]
    fn interim_responses_are_skipped() {
        let r = one(b"HTTP/1.1 100 Continue\r\n\r\n\
                      HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
                      HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(r.status(), 201);
        assert_eq!(
            err(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n"),
            "unexpected 101 switching protocols"
        );
    }

    #[test]
    fn close_delimited_bodies_end_at_eof() {
        let mut p = ResponseParser::new();
        let (used, done) = p.parse(b"HTTP/1.1 200 OK\r\n\r\nsome").unwrap();
        assert_eq!((used, done), (23, None));
        assert_eq!(p.parse(b" more").unwrap(), (5, None));
        let r = p.finish().unwrap();
        assert_eq!((r.status(), r.keep_alive(), r.body_bytes()), (200, false, 9));
        // An unknown transfer coding is close-delimited too.
        let mut p = ResponseParser::new();
        p.parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nzz")
            .unwrap();
        assert_eq!(p.finish().unwrap().body_bytes(), 2);
    }

    #[test]
    fn http10_keep_alive_needs_the_token() {
        let r = one(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert!(!r.keep_alive());
        let r = one(b"HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n");
        assert!(r.keep_alive());
    }

    #[test]
    fn eof_errors_say_where() {
        let mut p = ResponseParser::new();
        assert_eq!(
            p.finish().unwrap_err().to_string(),
            "connection closed before the response"
        );
        p.parse(b"HTTP/1.1 200").unwrap();
        assert_eq!(
            p.finish().unwrap_err().to_string(),
            "connection closed in the response head"
        );
        let mut p = ResponseParser::new();
        p.parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab").unwrap();
        assert_eq!(p.finish().unwrap_err().to_string(), "connection closed in the body");
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert_eq!(
            err(b"HTTP/1.1 2x0 OK\r\n\r\n"),
            "invalid response head: invalid response status"
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n"),
            "invalid content-length `1,2`"
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\n"),
            "invalid content-length `+1`"
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n"),
            "invalid content-length `99999999999999999999`"
        );
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        for (body, message) in [
            (&b"zz\r\n"[..], "invalid chunk size line `zz`"),
            (b"\r\n", "invalid chunk size line ``"),
            (b"10000000000000000\r\n", "invalid chunk size line `10000000000000000`"),
            (b"2\r\nokxx", "chunk data not followed by crlf"),
        ] {
            assert_eq!(err(&[&chunked[..], body].concat()), message);
        }
        let long_line = [&chunked[..], &[b'1'; MAX_CHUNK_LINE_BYTES + 2]].concat();
        assert!(err(&long_line).starts_with("invalid chunk size line `1111"));
        let huge = [&b"HTTP/1.1 200 OK\r\nx-a: "[..], &[b'a'; MAX_HEAD_BYTES]].concat();
        assert!(err(&huge).starts_with("response head longer than"));
        let trailer = [&chunked[..], b"0\r\nx-a: ", &[b'a'; MAX_HEAD_BYTES + 1]].concat();
        assert!(err(&trailer).starts_with("response head longer than"));
        let many: Vec<u8> = [
            &b"HTTP/1.1 200 OK\r\n"[..],
            &b"a: b\r\n".repeat(MAX_HEADERS + 1),
            b"\r\n",
        ]
        .concat();
        assert!(err(&many).starts_with("response head longer than"));
    }
}

//! Chunked transfer coding (RFC 9112 §7.1): a streaming decoder and the encoder.

use bytes::{Buf, Bytes, BytesMut};

use super::ChunkedError;
use super::Limits;

/// The last chunk with an empty trailer section: what ends every chunked body we emit.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Append one chunk carrying `data` to `out` (lower-case hex size, CRLF, data, CRLF). Empty `data`
/// writes nothing: an empty chunk would be the last chunk.
///
/// ```
/// let mut out = Vec::new();
/// meshcap_proxy::http1::encode_chunk(b"hello world", &mut out);
/// out.extend_from_slice(meshcap_proxy::http1::LAST_CHUNK);
/// assert_eq!(out, b"b\r\nhello world\r\n0\r\n\r\n");
/// ```
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    push_hex(data.len() as u64, out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn push_hex(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// One step of [`ChunkedDecoder::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeStep {
    /// Body bytes, split off the front of the buffer without copying.
    Data(Bytes),
    /// The buffer is exhausted mid-body: read more and call again.
    NeedMore,
    /// The last chunk and the trailer section were consumed; the rest of the buffer is the next
    /// message. Trailers are validated and dropped (Envoy does not forward request trailers to an
    /// HTTP/1 upstream, and drops response trailers for an HTTP/1 client).
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SizeStart,
    Size,
    SizeWs,
    Ext,
    SizeLf { ext: bool },
    Data,
    DataEnd,
    DataLf,
    TrailerStart,
    TrailerName { empty: bool },
    TrailerValue,
    TrailerLineLf,
    TrailerEndLf,
    Done,
}

/// A streaming, sans-IO decoder of a chunked body.
///
/// Feed it the connection's read buffer; it consumes framing bytes and splits body bytes off as
/// [`DecodeStep::Data`] (zero-copy). It never buffers: a body of any size streams through a buffer
/// of any size. The checks (RFC 9112 §7.1 and the behaviour observed on Envoy 1.40):
///
/// * a chunk size is at least one hex digit, any number of leading zeros, and must fit in 64 bits;
///   `0x5`, `-5`, ` 5` and an empty size line are errors;
/// * after the size: optional SP/HTAB, then `;extension` or CRLF — a bare LF ends nothing;
/// * extensions may hold any byte but CR and LF, are capped per body, and are dropped;
/// * chunk data must be followed by CRLF (a bare LF is accepted, as Envoy accepts it);
/// * trailer fields are checked like header fields and capped, then dropped.
///
/// ```
/// use bytes::BytesMut;
/// use meshcap_proxy::http1::{ChunkedDecoder, DecodeStep, Limits};
///
/// let mut dec = ChunkedDecoder::new(&Limits::default());
/// let mut buf = BytesMut::from(&b"5;ext=1\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\nNEXT"[..]);
/// assert_eq!(dec.decode(&mut buf)?, DecodeStep::Data("hello".into()));
/// assert_eq!(dec.decode(&mut buf)?, DecodeStep::Done);
/// assert_eq!(&buf[..], b"NEXT");
/// # Ok::<(), meshcap_proxy::http1::ChunkedError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    remaining: u64,
    ext_bytes: usize,
    trailer_bytes: usize,
    max_ext: usize,
    max_trailer: usize,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body, with the extension and trailer caps of `limits`.
    pub fn new(limits: &Limits) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::SizeStart,
            size: 0,
            remaining: 0,
            ext_bytes: 0,
            trailer_bytes: 0,
            max_ext: limits.max_chunk_extension_bytes,
            max_trailer: limits.max_trailer_bytes,
        }
    }

    /// Whether the whole body (last chunk and trailers) has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes still expected in the current chunk (0 between chunks).
    pub fn remaining_in_chunk(&self) -> u64 {
        self.remaining
    }

    /// Consume framing from the front of `buf` and return the next body bytes, or tell the caller to
    /// read more, or report the end of the body.
    ///
    /// # Errors
    /// A [`ChunkedError`] for a malformed body; the decoder must not be used afterwards.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<DecodeStep, ChunkedError> {
        let mut i = 0;
        let result = self.scan(buf, &mut i);
        buf.advance(i);
        match result? {
            Some(n) => Ok(DecodeStep::Data(buf.split_to(n).freeze())),
            None if self.state == State::Done => Ok(DecodeStep::Done),
            None => Ok(DecodeStep::NeedMore),
        }
    }

    /// Walk framing bytes from `buf[*i..]`; returns `Some(n)` when `n` data bytes start at `*i`.
    fn scan(&mut self, buf: &[u8], i: &mut usize) -> Result<Option<usize>, ChunkedError> {
        while *i < buf.len() {
            let b = buf[*i];
            match self.state {
                State::Done => return Ok(None),
                State::Data => {
                    let n = (buf.len() - *i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataEnd;
                    }
                    return Ok(Some(n));
                }
                State::SizeStart => {
                    let d = hex(b).ok_or(ChunkedError::InvalidSize { byte: b })?;
                    self.size = u64::from(d);
                    self.state = State::Size;
                }
                State::Size => match b {
                    b'\r' => self.state = State::SizeLf { ext: false },
                    b' ' | b'\t' => self.state = State::SizeWs,
                    b';' => self.state = State::Ext,
                    _ => {
                        let d = hex(b).ok_or(ChunkedError::InvalidSize { byte: b })?;
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(d)))
                            .ok_or(ChunkedError::SizeOverflow)?;
                    }
                },
                State::SizeWs => match b {
                    b'\r' => self.state = State::SizeLf { ext: false },
                    b' ' | b'\t' => {}
                    b';' => self.state = State::Ext,
                    _ => return Err(ChunkedError::InvalidSize { byte: b }),
                },
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf { ext: true },
                    b'\n' => return Err(ChunkedError::InvalidExtension),
                    _ => {
                        self.ext_bytes += 1;
                        if self.ext_bytes > self.max_ext {
                            return Err(ChunkedError::ExtensionsTooLarge { limit: self.max_ext });
                        }
                    }
                },
                State::SizeLf { ext } => {
                    if b != b'\n' {
                        return Err(if ext {
                            ChunkedError::InvalidExtension
                        } else {
                            ChunkedError::InvalidSize { byte: b }
                        });
                    }
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.remaining = self.size;
                        self.state = State::Data;
                    }
                }
                State::DataEnd => match b {
                    b'\r' => self.state = State::DataLf,
                    b'\n' => self.state = State::SizeStart,
                    _ => return Err(ChunkedError::MissingCrlf { byte: b }),
                },
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::MissingCrlf { byte: b });
                    }
                    self.state = State::SizeStart;
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::TrailerEndLf,
                    b'\n' => {
                        self.state = State::Done;
                        *i += 1;
                        return Ok(None);
                    }
                    _ if is_token(b) => {
                        self.count_trailer()?;
                        self.state = State::TrailerName { empty: false };
                    }
                    _ => return Err(ChunkedError::InvalidTrailer),
                },
                State::TrailerName { empty } => {
                    self.count_trailer()?;
                    match b {
                        b':' if !empty => self.state = State::TrailerValue,
                        _ if is_token(b) => {}
                        _ => return Err(ChunkedError::InvalidTrailer),
                    }
                }
                State::TrailerValue => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => self.state = State::TrailerLineLf,
                        b'\n' => self.state = State::TrailerStart,
                        b'\t' => {}
                        0x00..=0x1f | 0x7f => return Err(ChunkedError::InvalidTrailer),
                        _ => {}
                    }
                }
                State::TrailerLineLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::InvalidTrailer);
                    }
                    self.state = State::TrailerStart;
                }
                State::TrailerEndLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::InvalidTrailer);
                    }
                    self.state = State::Done;
                    *i += 1;
                    return Ok(None);
                }
            }
            *i += 1;
        }
        if self.state == State::Data && self.remaining == 0 {
            self.state = State::DataEnd;
        }
        Ok(None)
    }

    fn count_trailer(&mut self) -> Result<(), ChunkedError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.max_trailer {
            return Err(ChunkedError::TrailersTooLarge {
                limit: self.max_trailer,
            });
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 9110 §5.6.2 tchar.
pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split: usize) -> Result<(Vec<u8>, Vec<u8>), ChunkedError> {
        let mut dec = ChunkedDecoder::new(&Limits::default());
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                DecodeStep::Data(d) => body.extend_from_slice(&d),
                DecodeStep::Done => {
                    let mut rest = buf.to_vec();
                    rest.extend_from_slice(&input[fed..]);
                    return Ok((body, rest));
                }
                DecodeStep::NeedMore => {
                    if fed >= input.len() {
                        return Err(ChunkedError::InvalidSize { byte: 0 });
                    }
                    let end = (fed + split).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn decodes_in_any_split() {
        let wire = b"5;a=b\r\nhello\r\n00000000000000006 \t;x\r\n world\n0\r\nt: v\r\n\r\nNEXT";
        for split in 1..wire.len() {
            let (body, rest) = decode_all(wire, split).unwrap();
            assert_eq!(body, b"hello world", "split {split}");
            assert_eq!(rest, b"NEXT", "split {split}");
        }
    }

    #[test]
    fn rejects_what_envoy_rejects() {
        let cases: &[&[u8]] = &[
            b"\r\nhello\r\n0\r\n\r\n",                    // empty size line
            b"10000000000000005\r\nhello\r\n0\r\n\r\n",   // overflow
            b"0x5\r\nhello\r\n0\r\n\r\n",                 // hex prefix
            b"-5\r\nhello\r\n0\r\n\r\n",                  // sign
            b" 5\r\nhello\r\n0\r\n\r\n",                  // leading space
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",              // LF in extension
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",              // bare CR in extension
            b"5\nhello\r\n0\r\n\r\n",                     // size line ends in bare LF
            b"5\r\nhelloXX0\r\n\r\n",                     // no CRLF after data
            b"5\r\nhello\r0\r\n\r\n",                     // CR without LF after data
            b"5\r\nhello\r\n0\r\nx-t: a\x00\r\n\r\n",     // NUL in trailer
            b"5\r\nhello\r\n0\r\nGET / HTTP/1.1\r\n\r\n", // trailer without colon
            b"5\r\nhello\r\n0\n\n",                       // last-chunk line ends in bare LF
        ];
        for c in cases {
            assert!(decode_all(c, 3).is_err(), "accepted {:?}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn caps_extensions_and_trailers() {
        let limits = Limits {
            max_chunk_extension_bytes: 4,
            max_trailer_bytes: 8,
            ..Limits::default()
        };
        let mut dec = ChunkedDecoder::new(&limits);
        let mut buf = BytesMut::from(&b"1;abcde\r\n"[..]);
        assert_eq!(dec.decode(&mut buf), Err(ChunkedError::ExtensionsTooLarge { limit: 4 }));
        let mut dec = ChunkedDecoder::new(&limits);
        let mut buf = BytesMut::from(&b"0\r\nx-long: 123456\r\n\r\n"[..]);
        assert_eq!(dec.decode(&mut buf), Err(ChunkedError::TrailersTooLarge { limit: 8 }));
    }

    #[test]
    fn encodes_lower_hex() {
        let mut out = Vec::new();
        encode_chunk(&[b'x'; 26], &mut out);
        assert!(out.starts_with(b"1a\r\n"));
        out.clear();
        encode_chunk(b"", &mut out);
        assert!(out.is_empty());
    }
}

//! Request headers as the fault filter reads them: the [`RequestHeaders`] trait, its implementations, the
//! header names the filter understands, and Envoy's integer parsing of header values.

use std::borrow::Cow;

/// `x-envoy-fault-abort-request`: HTTP status to abort with (honoured only in `[200, 600)`).
pub const ABORT_REQUEST: &str = "x-envoy-fault-abort-request";
/// `x-envoy-fault-abort-grpc-request`: gRPC status to abort with (the HTTP status becomes 200).
pub const ABORT_GRPC_REQUEST: &str = "x-envoy-fault-abort-grpc-request";
/// `x-envoy-fault-abort-request-percentage`: abort percentage numerator, capped by the configured one.
pub const ABORT_REQUEST_PERCENTAGE: &str = "x-envoy-fault-abort-request-percentage";
/// `x-envoy-fault-delay-request`: delay in milliseconds.
pub const DELAY_REQUEST: &str = "x-envoy-fault-delay-request";
/// `x-envoy-fault-delay-request-percentage`: delay percentage numerator, capped by the configured one.
pub const DELAY_REQUEST_PERCENTAGE: &str = "x-envoy-fault-delay-request-percentage";
/// `x-envoy-fault-throughput-response`: response rate limit in KiB/s (0 means no limit).
pub const THROUGHPUT_RESPONSE: &str = "x-envoy-fault-throughput-response";
/// `x-envoy-fault-throughput-response-percentage`: rate-limit percentage numerator, capped by the configured one.
pub const THROUGHPUT_RESPONSE_PERCENTAGE: &str = "x-envoy-fault-throughput-response-percentage";
/// `x-envoy-downstream-service-cluster`: selects per-cluster runtime keys and statistics.
pub const DOWNSTREAM_SERVICE_CLUSTER: &str = "x-envoy-downstream-service-cluster";
/// `x-envoy-downstream-service-node`: matched against `downstream_nodes`.
pub const DOWNSTREAM_SERVICE_NODE: &str = "x-envoy-downstream-service-node";
/// `content-type`: decides whether an abort is answered the gRPC way.
pub const CONTENT_TYPE: &str = "content-type";

/// Read access to a request's headers.
///
/// `name` is always lowercase ASCII; implementations compare names ASCII case-insensitively and yield the
/// values of every field with that name, in the order they arrived. Values are raw bytes as the codec
/// delivered them (Envoy's codecs trim surrounding whitespace; so does `httparse`).
///
/// Implemented for slices, arrays and vectors of `(name, value)` pairs, for `[httparse::Header]` (feature
/// `httparse`) and for `http::HeaderMap` (feature `http`). Pseudo-headers such as `:path` exist only if
/// the implementation yields them; header matchers on them see "absent" otherwise.
///
/// ```
/// use meshcap_fault::RequestHeaders;
///
/// let headers = [("Host", "example"), ("x-envoy-fault-abort-request", "503")];
/// assert_eq!(headers.first("x-envoy-fault-abort-request"), Some(&b"503"[..]));
/// assert_eq!(headers.values("host").count(), 1);
/// ```
pub trait RequestHeaders {
    /// Iterator over the values of one header.
    type Values<'a, 'n>: Iterator<Item = &'a [u8]>
    where
        Self: 'a;

    /// Every value of header `name` (lowercase), in arrival order.
    fn values<'a, 'n>(&'a self, name: &'n str) -> Self::Values<'a, 'n>;

    /// The first value of header `name` (lowercase), if any.
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.values(name).next()
    }
}

/// Values of one header in a slice of `(name, value)` pairs (see [`RequestHeaders`]).
#[derive(Debug, Clone)]
pub struct PairValues<'a, 'n, K, V> {
    iter: std::slice::Iter<'a, (K, V)>,
    name: &'n str,
}

impl<'a, K: AsRef<[u8]>, V: AsRef<[u8]>> Iterator for PairValues<'a, '_, K, V> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let name = self.name.as_bytes();
        self.iter
            .by_ref()
            .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> RequestHeaders for [(K, V)] {
    type Values<'a, 'n>
        = PairValues<'a, 'n, K, V>
    where
        Self: 'a;

    fn values<'a, 'n>(&'a self, name: &'n str) -> PairValues<'a, 'n, K, V> {
        PairValues {
            iter: self.iter(),
            name,
        }
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>, const N: usize> RequestHeaders for [(K, V); N] {
    type Values<'a, 'n>
        = PairValues<'a, 'n, K, V>
    where
        Self: 'a;

    fn values<'a, 'n>(&'a self, name: &'n str) -> PairValues<'a, 'n, K, V> {
        self.as_slice().values(name)
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> RequestHeaders for Vec<(K, V)> {
    type Values<'a, 'n>
        = PairValues<'a, 'n, K, V>
    where
        Self: 'a;

    fn values<'a, 'n>(&'a self, name: &'n str) -> PairValues<'a, 'n, K, V> {
        self.as_slice().values(name)
    }
}

/// Values of one header in a slice of `httparse` headers (see [`RequestHeaders`]).
#[cfg(feature = "httparse")]
#[derive(Debug, Clone)]
pub struct HttparseValues<'a, 'n, 'h> {
    iter: std::slice::Iter<'a, httparse::Header<'h>>,
    name: &'n str,
}

#[cfg(feature = "httparse")]
impl<'a> Iterator for HttparseValues<'a, '_, '_> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let name = self.name;
        self.iter
            .by_ref()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

#[cfg(feature = "httparse")]
impl<'h> RequestHeaders for [httparse::Header<'h>] {
    type Values<'a, 'n>
        = HttparseValues<'a, 'n, 'h>
    where
        Self: 'a;

    fn values<'a, 'n>(&'a self, name: &'n str) -> HttparseValues<'a, 'n, 'h> {
        HttparseValues {
            iter: self.iter(),
            name,
        }
    }
}

#[cfg(feature = "http")]
impl RequestHeaders for http::HeaderMap {
    type Values<'a, 'n>
        = std::iter::Map<http::header::ValueIter<'a, http::HeaderValue>, fn(&'a http::HeaderValue) -> &'a [u8]>
    where
        Self: 'a;

    fn values<'a, 'n>(&'a self, name: &'n str) -> Self::Values<'a, 'n> {
        // A name that is not a valid header name yields no values.
        self.get_all(name).iter().map(http::HeaderValue::as_bytes)
    }
}

/// The value of a header Envoy keeps "inline" (content-type, the downstream service cluster and node):
/// repeated fields are folded into one value joined with `,`, empty repeats are dropped.
pub(crate) fn inline_value<'a, H: RequestHeaders + ?Sized>(headers: &'a H, name: &str) -> Option<Cow<'a, [u8]>> {
    let mut values = headers.values(name);
    let first = values.next()?;
    let mut joined: Option<Vec<u8>> = None;
    for more in values {
        if more.is_empty() {
            continue;
        }
        let buf = joined.get_or_insert_with(|| first.to_vec());
        if !buf.is_empty() {
            buf.push(b',');
        }
        buf.extend_from_slice(more);
    }
    Some(joined.map_or(Cow::Borrowed(first), Cow::Owned))
}

/// All values of a header joined with `,` (Envoy's `getAllOfHeaderAsString`, used by header matchers).
pub(crate) fn all_values<'a, H: RequestHeaders + ?Sized>(headers: &'a H, name: &str) -> Option<Cow<'a, [u8]>> {
    let mut values = headers.values(name);
    let first = values.next()?;
    let mut joined: Option<Vec<u8>> = None;
    for more in values {
        let buf = joined.get_or_insert_with(|| first.to_vec());
        buf.push(b',');
        buf.extend_from_slice(more);
    }
    Some(joined.map_or(Cow::Borrowed(first), Cow::Owned))
}

/// ASCII whitespace as `absl::ascii_isspace` defines it.
fn is_absl_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Sign and digits of an integer the way `absl::SimpleAtoi` reads base-10 text: surrounding whitespace
/// ignored, one optional `+` or `-`, then at least one ASCII digit and nothing else.
fn split_sign(text: &[u8]) -> Option<(bool, &[u8])> {
    let start = text.iter().position(|&b| !is_absl_space(b))?;
    let end = text.iter().rposition(|&b| !is_absl_space(b))? + 1;
    let text = &text[start..end];
    let (negative, digits) = match text.first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((negative, digits))
}

fn digits_to_u64(digits: &[u8]) -> Option<u64> {
    digits
        .iter()
        .try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// `absl::SimpleAtoi` into a `uint64_t`: no sign other than `+`, no overflow.
pub(crate) fn parse_u64(text: &[u8]) -> Option<u64> {
    match split_sign(text)? {
        (true, _) => None,
        (false, digits) => digits_to_u64(digits),
    }
}

/// `absl::SimpleAtoi` into a `uint32_t`.
pub(crate) fn parse_u32(text: &[u8]) -> Option<u32> {
    parse_u64(text).and_then(|v| u32::try_from(v).ok())
}

/// `absl::SimpleAtoi` into an `int64_t`.
pub(crate) fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = split_sign(text)?;
    let magnitude = digits_to_u64(digits)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_atoi_semantics() {
        assert_eq!(parse_u64(b"418"), Some(418));
        assert_eq!(parse_u64(b"+418"), Some(418));
        assert_eq!(parse_u64(b"0418"), Some(418));
        assert_eq!(parse_u64(b" \t418\r\n"), Some(418));
        assert_eq!(parse_u64(b"4 18"), None);
        assert_eq!(parse_u64(b"-418"), None);
        assert_eq!(parse_u64(b"-0"), None);
        assert_eq!(parse_u64(b"0x1A2"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"+"), None);
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_i64(b"-5"), Some(-5));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"-9223372036854775809"), None);
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
    }

    #[test]
    fn inline_and_all_values_join_like_envoy() {
        let h = [("X-A", "a"), ("x-a", ""), ("x-b", "1"), ("x-a", "b")];
        assert_eq!(inline_value(&h[..], "x-a").as_deref(), Some(&b"a,b"[..]));
        assert_eq!(all_values(&h[..], "x-a").as_deref(), Some(&b"a,,b"[..]));
        assert_eq!(inline_value(&h[..], "x-b").as_deref(), Some(&b"1"[..]));
        assert!(matches!(inline_value(&h[..], "x-b"), Some(Cow::Borrowed(_))));
        assert_eq!(inline_value(&h[..], "x-c"), None);
        let empty_first = [("x-a", ""), ("x-a", "b")];
        assert_eq!(inline_value(&empty_first[..], "x-a").as_deref(), Some(&b"b"[..]));
    }
}

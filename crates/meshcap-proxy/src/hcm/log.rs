//! The per-request access-log record handed to a sink; rendering belongs to the caller.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Envoy's response flags (`%RESPONSE_FLAGS%`) the HTTP path can set, as a small bit set.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u16);

impl ResponseFlags {
    /// `UF`: the upstream connection failed.
    pub const UPSTREAM_CONNECTION_FAILURE: ResponseFlags = ResponseFlags(1 << 0);
    /// `UC`: the upstream connection ended before the response.
    pub const UPSTREAM_CONNECTION_TERMINATION: ResponseFlags = ResponseFlags(1 << 1);
    /// `UPE`: the upstream sent an invalid response.
    pub const UPSTREAM_PROTOCOL_ERROR: ResponseFlags = ResponseFlags(1 << 2);
    /// `NR`: no route.
    pub const NO_ROUTE_FOUND: ResponseFlags = ResponseFlags(1 << 3);
    /// `DI`: the fault filter delayed the request.
    pub const DELAY_INJECTED: ResponseFlags = ResponseFlags(1 << 4);
    /// `FI`: the fault filter aborted the request.
    pub const FAULT_INJECTED: ResponseFlags = ResponseFlags(1 << 5);
    /// `DC`: the client went away before the response ended.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: ResponseFlags = ResponseFlags(1 << 6);
    /// `DPE`: the client sent an invalid request.
    pub const DOWNSTREAM_PROTOCOL_ERROR: ResponseFlags = ResponseFlags(1 << 7);
    /// `SI`: the stream idle timeout fired.
    pub const STREAM_IDLE_TIMEOUT: ResponseFlags = ResponseFlags(1 << 8);
    /// `UT`: the upstream request timed out (connect timeout).
    pub const UPSTREAM_REQUEST_TIMEOUT: ResponseFlags = ResponseFlags(1 << 9);

    /// `(flag, Envoy short name)` in Envoy's printing order.
    const NAMES: [(ResponseFlags, &'static str); 10] = [
        (Self::UPSTREAM_REQUEST_TIMEOUT, "UT"),
        (Self::UPSTREAM_CONNECTION_FAILURE, "UF"),
        (Self::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (Self::NO_ROUTE_FOUND, "NR"),
        (Self::DELAY_INJECTED, "DI"),
        (Self::FAULT_INJECTED, "FI"),
        (Self::STREAM_IDLE_TIMEOUT, "SI"),
        (Self::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (Self::UPSTREAM_PROTOCOL_ERROR, "UPE"),
        (Self::DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
    ];

    /// No flag.
    pub const fn empty() -> ResponseFlags {
        ResponseFlags(0)
    }
    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Set the flags of `other`.
    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }
    /// The Envoy short names of the set flags, in Envoy's order (`["DI", "FI"]`).
    pub fn short_names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n)
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = ResponseFlags;
    fn bitor(self, rhs: ResponseFlags) -> ResponseFlags {
        ResponseFlags(self.0 | rhs.0)
    }
}

/// Envoy's `%RESPONSE_FLAGS%` text: short names joined with `,`, or `-`.
///
/// ```
/// use meshcap_proxy::hcm::ResponseFlags;
/// assert_eq!(ResponseFlags::empty().to_string(), "-");
/// let f = ResponseFlags::FAULT_INJECTED | ResponseFlags::DELAY_INJECTED;
/// assert_eq!(f.to_string(), "DI,FI");
/// ```
impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, n) in self.short_names().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(n)?;
        }
        Ok(())
    }
}

impl fmt::Debug for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseFlags({self})")
    }
}

/// One finished request, borrowed from the connection's buffers (nothing is allocated to log it).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RequestLog<'a> {
    /// When the request head was complete.
    pub start_time: SystemTime,
    /// Method, when the head parsed.
    pub method: Option<&'a str>,
    /// Path as received (Envoy's `%REQ(:PATH)%`), when the head parsed.
    pub path: Option<&'a [u8]>,
    /// Authority (Host), when known.
    pub authority: Option<&'a [u8]>,
    /// `x-request-id` sent upstream, when known.
    pub request_id: Option<&'a [u8]>,
    /// `user-agent`, when sent.
    pub user_agent: Option<&'a [u8]>,
    /// Protocol (`HTTP/1.1`).
    pub protocol: &'static str,
    /// Status sent to the client (0 when none was sent).
    pub status: u16,
    /// Response flags.
    pub flags: ResponseFlags,
    /// Envoy's response code details (`via_upstream`, `fault_filter_abort`, …).
    pub details: &'a str,
    /// Request body bytes received.
    pub bytes_received: u64,
    /// Response body bytes sent.
    pub bytes_sent: u64,
    /// From the head being complete to the last response byte.
    pub duration: Duration,
    /// The upstream host, when a connection was attempted.
    pub upstream_host: Option<SocketAddr>,
    /// The route's cluster, when a route matched.
    pub cluster: Option<&'a str>,
    /// The client's address.
    pub downstream_remote: SocketAddr,
    /// The address the client connected to.
    pub downstream_local: SocketAddr,
}

/// Receives one [`RequestLog`] per request. Called on the connection's task: keep it cheap (copy
/// what you need into a queue, as the runtime's access logger does).
pub trait AccessLogSink: Send + Sync {
    /// Record one request.
    fn log(&self, entry: &RequestLog<'_>);
}

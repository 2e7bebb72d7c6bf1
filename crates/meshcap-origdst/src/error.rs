//! Error types: [`LookupError`] for the per-connection lookup, [`SocketError`] for setting sockets up
//! (listeners, upstream layers, capability probes).

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// The kernel call a [`LookupError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Call {
    /// `getsockopt(SOL_IP, SO_ORIGINAL_DST)`: the IPv4 conntrack original destination.
    OriginalDstV4,
    /// `getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)`: the IPv6 conntrack original destination.
    OriginalDstV6,
    /// `getsockname`: the accepted socket's local address.
    LocalAddr,
    /// `getpeername`: the accepted socket's peer address.
    PeerAddr,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::OriginalDstV4 => "getsockopt(SOL_IP, SO_ORIGINAL_DST)",
            Call::OriginalDstV6 => "getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)",
            Call::LocalAddr => "getsockname",
            Call::PeerAddr => "getpeername",
        })
    }
}

/// The addresses of the socket a lookup failed on, as far as they could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SocketAddrs {
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
}

impl SocketAddrs {
    pub(crate) const fn new(local: Option<SocketAddr>, peer: Option<SocketAddr>) -> Self {
        SocketAddrs { local, peer }
    }

    /// The socket's local address (canonical), if it could be read.
    pub const fn local(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The socket's peer address (canonical), if known.
    pub const fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }
}

impl fmt::Display for SocketAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn side(f: &mut fmt::Formatter<'_>, name: &str, addr: Option<SocketAddr>) -> fmt::Result {
            match addr {
                Some(a) => write!(f, "{name} {a}"),
                None => write!(f, "{name} unknown"),
            }
        }
        side(f, "local", self.local)?;
        f.write_str(", ")?;
        side(f, "peer", self.peer)
    }
}

/// Why the original destination of an accepted connection could not be read.
///
/// "Not redirected" is not an error: it is [`Lookup::NotRedirected`](crate::Lookup::NotRedirected).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The kernel cannot answer for this socket: `ENOPROTOOPT` or `EOPNOTSUPP` (the conntrack module for
    /// that family is not loaded, the socket is not TCP, or a sandboxed network stack such as gVisor), or
    /// the platform is not Linux (`source` is `None` then).
    #[error("{call} is unsupported for the socket ({addrs})")]
    #[non_exhaustive]
    Unsupported {
        /// The call that was refused.
        call: Call,
        /// The socket's addresses.
        addrs: SocketAddrs,
        /// The kernel's error, absent on platforms without the call.
        #[source]
        source: Option<io::Error>,
    },
    /// The call failed with any other error.
    #[error("{call} failed for the socket ({addrs})")]
    #[non_exhaustive]
    Io {
        /// The call that failed.
        call: Call,
        /// The socket's addresses.
        addrs: SocketAddrs,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The kernel answered with something that is not an address of the expected family and size.
    #[error("{call} returned an address of family {family} and length {len}, not {expected}, for the socket ({addrs})")]
    #[non_exhaustive]
    Malformed {
        /// The call that answered.
        call: Call,
        /// The socket's addresses.
        addrs: SocketAddrs,
        /// The address family the kernel wrote.
        family: u16,
        /// The address length the kernel wrote.
        len: u32,
        /// What was expected (`"an IPv4 address"`, …).
        expected: &'static str,
    },
}

impl LookupError {
    /// The kernel call this error is about.
    pub fn call(&self) -> Call {
        match self {
            LookupError::Unsupported { call, .. }
            | LookupError::Io { call, .. }
            | LookupError::Malformed { call, .. } => *call,
        }
    }

    /// The addresses of the socket the lookup was for.
    pub fn addrs(&self) -> SocketAddrs {
        match self {
            LookupError::Unsupported { addrs, .. }
            | LookupError::Io { addrs, .. }
            | LookupError::Malformed { addrs, .. } => *addrs,
        }
    }

    /// The OS error number, when the kernel returned one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            LookupError::Unsupported { source, .. } => source.as_ref().and_then(io::Error::raw_os_error),
            LookupError::Io { source, .. } => source.raw_os_error(),
            LookupError::Malformed { .. } => None,
        }
    }

    /// Whether this is [`LookupError::Unsupported`].
    pub fn is_unsupported(&self) -> bool {
        matches!(self, LookupError::Unsupported { .. })
    }

    /// Map the error of `call` to a variant. `ENOENT` is not handled here: it is "not redirected".
    pub(crate) fn from_io(call: Call, addrs: SocketAddrs, source: io::Error) -> LookupError {
        if crate::sys::is_unsupported_errno(source.raw_os_error()) {
            LookupError::Unsupported {
                call,
                addrs,
                source: Some(source),
            }
        } else {
            LookupError::Io { call, addrs, source }
        }
    }
}

/// A socket option this crate sets, as named in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SockOpt {
    /// `IP_TRANSPARENT` (IPv4 sockets).
    IpTransparent,
    /// `IPV6_TRANSPARENT` (IPv6 sockets).
    Ipv6Transparent,
    /// `IP_FREEBIND` (IPv4 sockets).
    IpFreebind,
    /// `IPV6_FREEBIND` (IPv6 sockets).
    Ipv6Freebind,
    /// `SO_MARK` with this value.
    Mark(u32),
    /// `SO_REUSEADDR`.
    ReuseAddr,
    /// `SO_REUSEPORT`.
    ReusePort,
    /// `IPV6_V6ONLY` with this value.
    OnlyV6(bool),
    /// `O_NONBLOCK`.
    Nonblocking,
}

impl SockOpt {
    /// Whether setting the option needs `CAP_NET_ADMIN` on Linux.
    pub const fn needs_cap_net_admin(self) -> bool {
        matches!(
            self,
            SockOpt::IpTransparent | SockOpt::Ipv6Transparent | SockOpt::Mark(_)
        )
    }
}

impl fmt::Display for SockOpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SockOpt::IpTransparent => f.write_str("IP_TRANSPARENT"),
            SockOpt::Ipv6Transparent => f.write_str("IPV6_TRANSPARENT"),
            SockOpt::IpFreebind => f.write_str("IP_FREEBIND"),
            SockOpt::Ipv6Freebind => f.write_str("IPV6_FREEBIND"),
            SockOpt::Mark(mark) => write!(f, "SO_MARK={mark:#x}"),
            SockOpt::ReuseAddr => f.write_str("SO_REUSEADDR"),
            SockOpt::ReusePort => f.write_str("SO_REUSEPORT"),
            SockOpt::OnlyV6(on) => write!(f, "IPV6_V6ONLY={}", u8::from(*on)),
            SockOpt::Nonblocking => f.write_str("O_NONBLOCK"),
        }
    }
}

/// Why a socket could not be set up: a listener, an upstream socket, or a capability probe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// `socket(2)` failed.
    #[error("cannot create a TCP socket for {addr}")]
    #[non_exhaustive]
    Create {
        /// The address the socket was for (its family picks the domain).
        addr: SocketAddr,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// `setsockopt(2)` failed.
    #[error("cannot set {option} on {}{}", on_what(.addr), cap_hint(*.option, .source))]
    #[non_exhaustive]
    SetOption {
        /// The option.
        option: SockOpt,
        /// The address the socket is bound to or for; `None` for an unbound socket (a probe's scratch socket).
        addr: Option<SocketAddr>,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// `bind(2)` failed.
    #[error("cannot bind to {addr}{}", bind_hint(.addr, .source))]
    #[non_exhaustive]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// `listen(2)` failed.
    #[error("cannot listen on {addr} with backlog {backlog}")]
    #[non_exhaustive]
    Listen {
        /// The bound address.
        addr: SocketAddr,
        /// The requested backlog.
        backlog: u32,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// `getsockname(2)` failed on a freshly set-up socket, or returned a non-IP address.
    #[error("cannot read the local address of the socket for {addr}")]
    #[non_exhaustive]
    LocalAddr {
        /// The address the socket was for.
        addr: SocketAddr,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// `connect(2)` failed.
    #[error("cannot connect to {addr}")]
    #[non_exhaustive]
    Connect {
        /// The destination.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The operation does not exist on this platform (everything but Linux, for the transparent-proxy
    /// options).
    #[error("{option} is not supported on this platform")]
    #[non_exhaustive]
    Unsupported {
        /// The option.
        option: SockOpt,
    },
}

impl SocketError {
    /// The OS error number, when the kernel returned one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            SocketError::Create { source, .. }
            | SocketError::SetOption { source, .. }
            | SocketError::Bind { source, .. }
            | SocketError::Listen { source, .. }
            | SocketError::LocalAddr { source, .. }
            | SocketError::Connect { source, .. } => source.raw_os_error(),
            SocketError::Unsupported { .. } => None,
        }
    }

    /// Whether the kernel refused for lack of privilege (`EPERM`/`EACCES`): the process needs
    /// `CAP_NET_ADMIN` (or, for binding low ports, `CAP_NET_BIND_SERVICE`).
    pub fn is_permission_denied(&self) -> bool {
        crate::sys::is_permission_errno(self.errno())
    }
}

fn on_what(addr: &Option<SocketAddr>) -> String {
    match addr {
        Some(addr) => format!("the socket for {addr}"),
        None => "an unbound socket".to_owned(),
    }
}

fn cap_hint(option: SockOpt, source: &io::Error) -> &'static str {
    if option.needs_cap_net_admin() && crate::sys::is_permission_errno(source.raw_os_error()) {
        ": the process lacks CAP_NET_ADMIN"
    } else if option.needs_cap_net_admin() {
        " (it needs CAP_NET_ADMIN and kernel support)"
    } else {
        ""
    }
}

fn bind_hint(addr: &SocketAddr, source: &io::Error) -> &'static str {
    if source.raw_os_error() == crate::sys::EADDRNOTAVAIL && *addr == crate::upstream::inbound_source_v6() {
        " (::6 is not assigned: add it to lo with `ip -6 addr add ::6/128 dev lo`, as Kuma does, or set IP_FREEBIND)"
    } else if source.raw_os_error() == crate::sys::EADDRNOTAVAIL {
        " (the address is not local: set IP_FREEBIND or IP_TRANSPARENT to bind it anyway)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> SocketAddrs {
        SocketAddrs::new(
            Some("127.0.0.1:15001".parse().unwrap()),
            Some("127.0.0.1:40000".parse().unwrap()),
        )
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn errno_mapping() {
        let unsupported = LookupError::from_io(
            Call::OriginalDstV4,
            addrs(),
            io::Error::from_raw_os_error(libc::ENOPROTOOPT),
        );
        assert!(unsupported.is_unsupported());
        assert_eq!(unsupported.errno(), Some(libc::ENOPROTOOPT));
        let unsupported = LookupError::from_io(
            Call::OriginalDstV6,
            addrs(),
            io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        );
        assert!(unsupported.is_unsupported());
        let other = LookupError::from_io(Call::OriginalDstV4, addrs(), io::Error::from_raw_os_error(libc::EBADF));
        assert!(matches!(other, LookupError::Io { .. }));
        assert_eq!(other.errno(), Some(libc::EBADF));
        assert_eq!(other.call(), Call::OriginalDstV4);
        assert_eq!(other.addrs(), addrs());
    }

    #[test]
    fn lookup_error_messages_name_the_call_and_socket() {
        let err = LookupError::Io {
            call: Call::OriginalDstV6,
            addrs: addrs(),
            source: io::Error::from_raw_os_error(9),
        };
        assert_eq!(
            err.to_string(),
            "getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST) failed for the socket (local 127.0.0.1:15001, peer 127.0.0.1:40000)"
        );
        let err = LookupError::Unsupported {
            call: Call::OriginalDstV4,
            addrs: SocketAddrs::new(None, Some("10.0.0.1:1".parse().unwrap())),
            source: None,
        };
        assert_eq!(
            err.to_string(),
            "getsockopt(SOL_IP, SO_ORIGINAL_DST) is unsupported for the socket (local unknown, peer 10.0.0.1:1)"
        );
        assert_eq!(err.errno(), None);
        let err = LookupError::Malformed {
            call: Call::LocalAddr,
            addrs: SocketAddrs::default(),
            family: 1,
            len: 110,
            expected: "an IP address",
        };
        assert_eq!(
            err.to_string(),
            "getsockname returned an address of family 1 and length 110, not an IP address, for the socket (local unknown, peer unknown)"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn socket_error_messages_name_cap_net_admin() {
        let err = SocketError::SetOption {
            option: SockOpt::IpTransparent,
            addr: None,
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(
            err.to_string(),
            "cannot set IP_TRANSPARENT on an unbound socket: the process lacks CAP_NET_ADMIN"
        );
        assert!(err.is_permission_denied());
        let err = SocketError::SetOption {
            option: SockOpt::Mark(0x539),
            addr: Some("10.0.0.1:80".parse().unwrap()),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert_eq!(
            err.to_string(),
            "cannot set SO_MARK=0x539 on the socket for 10.0.0.1:80 (it needs CAP_NET_ADMIN and kernel support)"
        );
        let err = SocketError::SetOption {
            option: SockOpt::ReusePort,
            addr: Some("0.0.0.0:15001".parse().unwrap()),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert_eq!(
            err.to_string(),
            "cannot set SO_REUSEPORT on the socket for 0.0.0.0:15001"
        );
        let err = SocketError::Bind {
            addr: "[::6]:0".parse().unwrap(),
            source: io::Error::from_raw_os_error(libc::EADDRNOTAVAIL),
        };
        assert!(
            err.to_string()
                .starts_with("cannot bind to [::6]:0 (::6 is not assigned"),
            "{err}"
        );
    }
}

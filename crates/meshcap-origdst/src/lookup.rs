//! The lookup itself: [`Accepted`] (a borrowed accepted socket and its peer), the outcome [`Lookup`], and the
//! two kernel strategies [`redirect`] (conntrack, for REDIRECT/DNAT capture) and [`tproxy`] (the socket's own
//! local address, for TPROXY capture), also available as the [`Kernel`] source.

use crate::addr::{ClientAddr, OriginalDst, canonical};
use crate::error::{Call, LookupError, SocketAddrs};
use socket2::{SockAddr, SockRef};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// An accepted connection as the lookup sees it: the socket, borrowed, and the peer address `accept`
/// returned.
///
/// Borrowing (rather than taking the stream) means the lookup can never lose the socket on an error path,
/// and works the same for `std::net::TcpStream`, `tokio::net::TcpStream` or a `socket2::Socket`: anything
/// a [`SockRef`] can be made from.
#[derive(Debug)]
pub struct Accepted<'a> {
    sock: SockRef<'a>,
    peer: ClientAddr,
}

impl<'a> Accepted<'a> {
    /// An accepted socket and the peer address `accept` returned with it (canonicalised here: an IPv4
    /// client of a dual-stack listener counts as IPv4).
    #[inline]
    pub fn new<S>(sock: &'a S, peer: impl Into<ClientAddr>) -> Self
    where
        SockRef<'a>: From<&'a S>,
    {
        Accepted {
            sock: SockRef::from(sock),
            peer: peer.into(),
        }
    }

    /// Like [`Accepted::new`], from a [`SockRef`] the caller already holds.
    #[inline]
    pub fn from_sock_ref(sock: SockRef<'a>, peer: impl Into<ClientAddr>) -> Self {
        Accepted {
            sock,
            peer: peer.into(),
        }
    }

    /// An accepted socket whose peer address is asked of the kernel (`getpeername`), for callers that did
    /// not keep it from `accept`.
    ///
    /// # Errors
    ///
    /// [`LookupError`] for [`Call::PeerAddr`] when `getpeername` fails (for example `ENOTCONN` once the
    /// client has reset the connection).
    pub fn query<S>(sock: &'a S) -> Result<Self, LookupError>
    where
        SockRef<'a>: From<&'a S>,
    {
        let sock = SockRef::from(sock);
        let peer = match sock.peer_addr() {
            Ok(sa) => decode_ip(Call::PeerAddr, &sa, || SocketAddrs::new(local_of(&sock), None))?,
            Err(e) => {
                return Err(LookupError::from_io(
                    Call::PeerAddr,
                    SocketAddrs::new(local_of(&sock), None),
                    e,
                ));
            }
        };
        Ok(Accepted {
            sock,
            peer: peer.into(),
        })
    }

    /// The peer (client) address, canonical.
    #[inline]
    pub fn peer(&self) -> ClientAddr {
        self.peer
    }

    /// The borrowed socket.
    #[inline]
    pub fn socket(&self) -> &SockRef<'a> {
        &self.sock
    }

    /// The socket's local address (`getsockname`), canonical.
    ///
    /// # Errors
    ///
    /// [`LookupError`] for [`Call::LocalAddr`] when `getsockname` fails or returns a non-IP address.
    pub fn local_addr(&self) -> Result<SocketAddr, LookupError> {
        match self.sock.local_addr() {
            Ok(sa) => decode_ip(Call::LocalAddr, &sa, || self.addrs_without_local()),
            Err(e) => Err(LookupError::from_io(Call::LocalAddr, self.addrs_without_local(), e)),
        }
    }

    /// Both addresses for an error message, reading the local one best-effort.
    pub(crate) fn addrs(&self) -> SocketAddrs {
        SocketAddrs::new(local_of(&self.sock), Some(self.peer.as_socket_addr()))
    }

    fn addrs_without_local(&self) -> SocketAddrs {
        SocketAddrs::new(None, Some(self.peer.as_socket_addr()))
    }
}

fn local_of(sock: &SockRef<'_>) -> Option<SocketAddr> {
    sock.local_addr().ok().and_then(|sa| sa.as_socket()).map(canonical)
}

/// The outcome of a successful lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// The connection was captured: this is where it was going.
    Redirected(OriginalDst),
    /// The connection reached the listener without being redirected. What to do with it is the caller's
    /// choice: refuse it, or treat the listener's own address as the destination ([`Lookup::or_local`]),
    /// which is what Envoy does for a `use_original_dst` listener.
    NotRedirected {
        /// The accepted socket's local address, canonical.
        local: SocketAddr,
        /// Why the connection counts as not redirected.
        reason: NotRedirected,
    },
}

impl Lookup {
    /// The original destination, if the connection was redirected.
    #[inline]
    pub const fn redirected(&self) -> Option<OriginalDst> {
        match self {
            Lookup::Redirected(dst) => Some(*dst),
            Lookup::NotRedirected { .. } => None,
        }
    }

    /// Whether the connection was redirected.
    #[inline]
    pub const fn is_redirected(&self) -> bool {
        matches!(self, Lookup::Redirected(_))
    }

    /// The original destination, or the socket's local address when the connection was not redirected
    /// (the explicit form of the "fall back to `local_addr`" that ztunnel does implicitly).
    #[inline]
    pub const fn or_local(&self) -> OriginalDst {
        match self {
            Lookup::Redirected(dst) => *dst,
            Lookup::NotRedirected { local, .. } => OriginalDst::new(*local),
        }
    }
}

impl fmt::Display for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lookup::Redirected(dst) => write!(f, "redirected from {dst}"),
            Lookup::NotRedirected { local, reason } => write!(f, "not redirected ({reason}), local {local}"),
        }
    }
}

/// Why a connection counts as not redirected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotRedirected {
    /// No original destination is recorded: conntrack has no entry for the connection (`ENOENT`: no NAT
    /// rule or conntrack hook ever saw it, e.g. a namespace without rules), or a test source has no mapping
    /// for it.
    NoEntry,
    /// The connection was addressed to the listener itself: conntrack tracked it without rewriting it, so the
    /// original destination equals the socket's local address.
    ToListener,
}

impl fmt::Display for NotRedirected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotRedirected::NoEntry => "no original destination recorded",
            NotRedirected::ToListener => "addressed to the listener itself",
        })
    }
}

/// How the connections reaching a listener were captured, which decides where their original destination
/// is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Mode {
    /// `iptables -t nat … -j REDIRECT` or `DNAT`: the kernel rewrote the destination and conntrack
    /// remembers the original. See [`redirect`].
    #[default]
    Redirect,
    /// `iptables -t mangle … -j TPROXY` with a transparent listener: nothing was rewritten, the socket's
    /// local address is the original destination. See [`tproxy`].
    Tproxy,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Redirect => "redirect",
            Mode::Tproxy => "tproxy",
        })
    }
}

/// A string that is not a [`Mode`] or a [`Transparent`](crate::Transparent) value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{input}`: expected {expected}")]
pub struct ParseSettingError {
    what: &'static str,
    input: String,
    expected: &'static str,
}

impl ParseSettingError {
    pub(crate) fn new(what: &'static str, input: &str, expected: &'static str) -> Self {
        ParseSettingError {
            what,
            input: input.to_owned(),
            expected,
        }
    }
}

impl FromStr for Mode {
    type Err = ParseSettingError;

    fn from_str(s: &str) -> Result<Self, ParseSettingError> {
        match s {
            "redirect" => Ok(Mode::Redirect),
            "tproxy" => Ok(Mode::Tproxy),
            _ => Err(ParseSettingError::new("capture mode", s, "`redirect` or `tproxy`")),
        }
    }
}

/// The original destination of a connection captured by REDIRECT or DNAT, read from conntrack.
///
/// * The option is chosen from the family of the *canonical peer* address: an IPv4 client of a dual-stack
///   `[::]` listener arrives as `::ffff:a.b.c.d`, its conntrack entry is IPv4, so it is read with
///   `SO_ORIGINAL_DST` (`SOL_IP`); an IPv6 client with `IP6T_SO_ORIGINAL_DST` (`SOL_IPV6`). Choosing by the
///   socket's domain instead is the bug linkerd shipped and fixed twice.
/// * `ENOENT` (no conntrack entry) is [`Lookup::NotRedirected`] with [`NotRedirected::NoEntry`]; a tracked
///   connection whose original destination is the socket's own local address is [`NotRedirected::ToListener`].
/// * Two syscalls on the success path (`getsockopt`, `getsockname`), no allocation.
///
/// Do not use this for TPROXY listeners: conntrack may hold a pre-DNAT address there, or none (see
/// [`tproxy`]).
///
/// # Errors
///
/// [`LookupError::Unsupported`] for `ENOPROTOOPT`/`EOPNOTSUPP` and on platforms other than Linux,
/// [`LookupError::Malformed`] if the kernel's answer is not an address of the expected family and size,
/// [`LookupError::Io`] otherwise; each names the call and the socket's addresses.
pub fn redirect(conn: &Accepted<'_>) -> Result<Lookup, LookupError> {
    let call = if conn.peer.as_socket_addr().is_ipv4() {
        Call::OriginalDstV4
    } else {
        Call::OriginalDstV6
    };
    match original_dst(&conn.sock, call) {
        Ok(sa) => {
            let dst = decode_ip(call, &sa, || conn.addrs())?;
            let local = conn.local_addr()?;
            if dst.ip() == local.ip() && dst.port() == local.port() {
                Ok(Lookup::NotRedirected {
                    local,
                    reason: NotRedirected::ToListener,
                })
            } else {
                Ok(Lookup::Redirected(OriginalDst::new(dst)))
            }
        }
        Err(e) if crate::sys::ENOENT.is_some() && e.raw_os_error() == crate::sys::ENOENT => Ok(Lookup::NotRedirected {
            local: conn.local_addr()?,
            reason: NotRedirected::NoEntry,
        }),
        Err(e) => Err(LookupError::from_io(call, conn.addrs(), e)),
    }
}

/// The original destination of a connection captured by TPROXY: the accepted socket's local address
/// (`getsockname`), canonical. One syscall, no allocation.
///
/// Conntrack is deliberately not consulted: it can hold a pre-DNAT address or a zone other than the default
/// (envoy #16130, #22601). Every connection reaching a TPROXY listener reports its local address, so a
/// connection made directly to the listener's port reports that port: reject it with a
/// [`LoopGuard`](crate::LoopGuard).
///
/// # Errors
///
/// [`LookupError`] for [`Call::LocalAddr`].
pub fn tproxy(conn: &Accepted<'_>) -> Result<Lookup, LookupError> {
    conn.local_addr()
        .map(|local| Lookup::Redirected(OriginalDst::new(local)))
}

/// The kernel as an [`OrigDstSource`](crate::OrigDstSource): [`redirect`] or [`tproxy`] depending on the
/// [`Mode`]. Zero-sized apart from the mode; `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Kernel {
    mode: Mode,
}

impl Kernel {
    /// The kernel lookup for `mode`.
    #[inline]
    pub const fn new(mode: Mode) -> Self {
        Kernel { mode }
    }

    /// The capture mode.
    #[inline]
    pub const fn mode(&self) -> Mode {
        self.mode
    }
}

impl crate::OrigDstSource for Kernel {
    #[inline]
    fn original_dst(&self, conn: &Accepted<'_>) -> Result<Lookup, LookupError> {
        match self.mode {
            Mode::Redirect => redirect(conn),
            Mode::Tproxy => tproxy(conn),
        }
    }
}

#[cfg(target_os = "linux")]
fn original_dst(sock: &SockRef<'_>, call: Call) -> std::io::Result<SockAddr> {
    match call {
        Call::OriginalDstV4 => sock.original_dst_v4(),
        _ => sock.original_dst_v6(),
    }
}

#[cfg(not(target_os = "linux"))]
fn original_dst(_: &SockRef<'_>, _: Call) -> std::io::Result<SockAddr> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// The canonical IP socket address in `sa`, checking family and size.
#[allow(clippy::unnecessary_cast)] // `sa_family_t` and `socklen_t` differ between platforms.
fn decode_ip(call: Call, sa: &SockAddr, addrs: impl FnOnce() -> SocketAddrs) -> Result<SocketAddr, LookupError> {
    let shape = check_shape(call, sa.is_ipv4(), sa.is_ipv6(), sa.len() as usize);
    if let (Ok(()), Some(addr)) = (shape, sa.as_socket()) {
        return Ok(canonical(addr));
    }
    Err(LookupError::Malformed {
        call,
        addrs: addrs(),
        family: sa.family() as u16,
        len: sa.len() as u32,
        expected: shape.err().unwrap_or("an IP address"),
    })
}

/// Whether an address of this family and length is what `call` must return; `Err(what was expected)`.
fn check_shape(call: Call, is_v4: bool, is_v6: bool, len: usize) -> Result<(), &'static str> {
    let v4 = is_v4 && len >= SOCKADDR_IN_LEN;
    let v6 = is_v6 && len >= SOCKADDR_IN6_LEN;
    match call {
        Call::OriginalDstV4 if v4 => Ok(()),
        Call::OriginalDstV4 => Err("an IPv4 address"),
        Call::OriginalDstV6 if v6 => Ok(()),
        Call::OriginalDstV6 => Err("an IPv6 address"),
        _ if v4 || v6 => Ok(()),
        _ => Err("an IP address"),
    }
}

#[cfg(unix)]
const SOCKADDR_IN_LEN: usize = std::mem::size_of::<libc::sockaddr_in>();
#[cfg(unix)]
const SOCKADDR_IN6_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
#[cfg(not(unix))]
const SOCKADDR_IN_LEN: usize = 16;
#[cfg(not(unix))]
const SOCKADDR_IN6_LEN: usize = 28;

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lookup_accessors() {
        let r = Lookup::Redirected(OriginalDst::new(sa("10.96.0.10:80")));
        assert_eq!(r.redirected(), Some(OriginalDst::new(sa("10.96.0.10:80"))));
        assert!(r.is_redirected());
        assert_eq!(r.or_local().to_string(), "10.96.0.10:80");
        assert_eq!(r.to_string(), "redirected from 10.96.0.10:80");
        let n = Lookup::NotRedirected {
            local: sa("127.0.0.1:15001"),
            reason: NotRedirected::NoEntry,
        };
        assert_eq!(n.redirected(), None);
        assert_eq!(n.or_local().to_string(), "127.0.0.1:15001");
        assert_eq!(
            n.to_string(),
            "not redirected (no original destination recorded), local 127.0.0.1:15001"
        );
    }

    #[test]
    fn mode_parses_and_prints() {
        for m in [Mode::Redirect, Mode::Tproxy] {
            assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
        }
        let err = "nat".parse::<Mode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid capture mode `nat`: expected `redirect` or `tproxy`"
        );
        assert_eq!(Mode::default(), Mode::Redirect);
    }

    #[test]
    fn decode_checks_family_and_length() {
        let v4 = SockAddr::from(sa("10.0.0.1:80"));
        let v6 = SockAddr::from(sa("[fd00::6]:80"));
        let mapped = SockAddr::from(sa("[::ffff:10.0.0.1]:80"));
        let none = SocketAddrs::default;
        assert_eq!(decode_ip(Call::OriginalDstV4, &v4, none).unwrap(), sa("10.0.0.1:80"));
        assert_eq!(decode_ip(Call::OriginalDstV6, &v6, none).unwrap(), sa("[fd00::6]:80"));
        assert_eq!(decode_ip(Call::LocalAddr, &mapped, none).unwrap(), sa("10.0.0.1:80"));
        let err = decode_ip(Call::OriginalDstV4, &v6, none).unwrap_err();
        assert!(
            matches!(
                err,
                LookupError::Malformed {
                    expected: "an IPv4 address",
                    ..
                }
            ),
            "{err}"
        );
        let err = decode_ip(Call::OriginalDstV6, &v4, none).unwrap_err();
        assert!(
            matches!(
                err,
                LookupError::Malformed {
                    expected: "an IPv6 address",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn decode_rejects_foreign_addresses() {
        let unix = SockAddr::unix("/tmp/x").unwrap();
        let err = decode_ip(Call::LocalAddr, &unix, SocketAddrs::default).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("getsockname returned an address of family 1 and length"),
            "{err}"
        );
    }

    #[test]
    fn shape_check_needs_family_and_full_length() {
        assert_eq!(check_shape(Call::OriginalDstV4, true, false, 16), Ok(()));
        assert_eq!(check_shape(Call::OriginalDstV4, true, false, 8), Err("an IPv4 address"));
        assert_eq!(
            check_shape(Call::OriginalDstV4, false, true, 28),
            Err("an IPv4 address")
        );
        assert_eq!(check_shape(Call::OriginalDstV6, false, true, 28), Ok(()));
        assert_eq!(
            check_shape(Call::OriginalDstV6, false, true, 24),
            Err("an IPv6 address")
        );
        assert_eq!(
            check_shape(Call::OriginalDstV6, true, false, 16),
            Err("an IPv6 address")
        );
        assert_eq!(check_shape(Call::LocalAddr, true, false, 16), Ok(()));
        assert_eq!(check_shape(Call::PeerAddr, false, true, 28), Ok(()));
        assert_eq!(check_shape(Call::PeerAddr, false, false, 110), Err("an IP address"));
    }
}

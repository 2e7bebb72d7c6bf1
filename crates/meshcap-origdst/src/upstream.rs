//! Upstream socket layers: each one small function usable alone on any socket ([`bind_source`],
//! [`set_mark`], [`set_freebind`], [`set_transparent`]), plus [`Upstream`], a tiny builder that applies them in
//! the right order to a fresh socket, and (feature `tokio`) `connect`.

use crate::addr::OriginalDst;
use crate::error::{SockOpt, SocketError};
use crate::listen::{Applied, Transparent, apply_transparent};
use crate::opts;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Kuma's source address for the hop from the sidecar to the application (IPv4): `127.0.0.6`. The capture
/// rules let traffic from it on `lo` through, so the hop is not captured again.
pub const INBOUND_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// Kuma's source address for the hop from the sidecar to the application (IPv6): `::6`. Unlike
/// `127.0.0.6`, which every Linux `lo` already answers for (`127.0.0.0/8`), `::6` must be assigned
/// (`ip -6 addr add ::6/128 dev lo`, which Kuma does) unless the socket has `IPV6_FREEBIND`.
pub const INBOUND_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// The inbound-hop source for a destination of `dst`'s family, port 0: `127.0.0.6:0` or `[::6]:0`.
///
/// ```
/// use meshcap_origdst::upstream::inbound_source;
///
/// assert_eq!(inbound_source("10.244.0.6:5000".parse()?).to_string(), "127.0.0.6:0");
/// assert_eq!(inbound_source("[fd00::6]:5000".parse()?).to_string(), "[::6]:0");
/// # Ok::<(), meshcap_origdst::ParseAddrError>(())
/// ```
pub const fn inbound_source(dst: OriginalDst) -> SocketAddr {
    match dst.ip() {
        IpAddr::V4(_) => inbound_source_v4(),
        IpAddr::V6(_) => inbound_source_v6(),
    }
}

pub(crate) const fn inbound_source_v4() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(INBOUND_SOURCE_V4, 0))
}

pub(crate) const fn inbound_source_v6() -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(INBOUND_SOURCE_V6, 0, 0, 0))
}

/// A fresh TCP socket of `dst`'s family (close-on-exec, blocking), for the layers below.
///
/// # Errors
///
/// [`SocketError::Create`].
pub fn tcp_socket(dst: OriginalDst) -> Result<Socket, SocketError> {
    let addr = dst.as_socket_addr();
    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|source| SocketError::Create { addr, source })
}

/// Bind `sock` to `source` (e.g. [`inbound_source`], or a client address to spoof after
/// [`set_transparent`]).
///
/// # Errors
///
/// [`SocketError::Bind`]; for `[::6]:0` not assigned to `lo` the message says how to fix it.
pub fn bind_source<'a>(sock: impl Into<SockRef<'a>>, source: SocketAddr) -> Result<(), SocketError> {
    sock.into().bind(&source.into()).map_err(|err| SocketError::Bind {
        addr: source,
        source: err,
    })
}

/// Set `SO_MARK` to `mark`, so the capture rules (which skip marked packets) and policy routing recognise
/// the proxy's own traffic. Needs `CAP_NET_ADMIN`.
///
/// # Errors
///
/// [`SocketError::SetOption`] (naming `CAP_NET_ADMIN` on `EPERM`); [`SocketError::Unsupported`] on
/// platforms other than Linux.
pub fn set_mark<'a>(sock: impl Into<SockRef<'a>>, mark: u32) -> Result<(), SocketError> {
    let option = SockOpt::Mark(mark);
    if !opts::SUPPORTED {
        return Err(SocketError::Unsupported { option });
    }
    let sock = sock.into();
    opts::set_mark(&sock, mark).map_err(|source| SocketError::SetOption {
        option,
        addr: local(&sock),
        source,
    })
}

/// Set `IP_FREEBIND` (IPv4 socket) or `IPV6_FREEBIND` (IPv6 socket): the socket may bind an address that is
/// not (yet) assigned locally, such as `::6` before anything added it to `lo`. Needs no privilege.
///
/// # Errors
///
/// [`SocketError::SetOption`]; [`SocketError::Unsupported`] on platforms other than Linux.
pub fn set_freebind<'a>(sock: impl Into<SockRef<'a>>) -> Result<(), SocketError> {
    let sock = sock.into();
    let v6 = is_v6(&sock);
    let option = opts::freebind_opt(v6);
    if !opts::SUPPORTED {
        return Err(SocketError::Unsupported { option });
    }
    opts::set_freebind(&sock, v6).map_err(|source| SocketError::SetOption {
        option,
        addr: local(&sock),
        source,
    })
}

/// Apply a [`Transparent`] setting (`IP_TRANSPARENT` / `IPV6_TRANSPARENT` by the socket's family): a
/// transparent upstream socket can bind a non-local source, such as the original client's address
/// (original-source spoofing; the replies must be routed back to this host with a mark and a policy
/// route). Returns whether the option is now set.
///
/// # Errors
///
/// With [`Transparent::Required`]: [`SocketError::SetOption`] (naming `CAP_NET_ADMIN` on `EPERM`), or
/// [`SocketError::Unsupported`] on platforms other than Linux. Never with the other settings.
pub fn set_transparent<'a>(sock: impl Into<SockRef<'a>>, setting: Transparent) -> Result<bool, SocketError> {
    let sock = sock.into();
    let v6 = is_v6(&sock);
    apply_transparent(&sock, v6, local(&sock), setting).map(|applied| matches!(applied, Applied::Set))
}

/// Whether `sock` is an IPv6 socket: `getsockname` reports the family even before `bind` (portable, unlike
/// `SO_DOMAIN`).
fn is_v6(sock: &SockRef<'_>) -> bool {
    sock.local_addr().is_ok_and(|addr| addr.is_ipv6())
}

/// The socket's local address, if it is bound.
fn local(sock: &SockRef<'_>) -> Option<SocketAddr> {
    let addr = sock.local_addr().ok().and_then(|sa| sa.as_socket())?;
    (addr.port() != 0 || !addr.ip().is_unspecified()).then_some(addr)
}

/// Where an [`Upstream`] socket's source address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Source {
    /// Let the kernel choose (no `bind`).
    #[default]
    Auto,
    /// Kuma's inbound hop: [`inbound_source`] for the destination's family (`127.0.0.6:0` / `[::6]:0`).
    InboundHop,
    /// This address (port 0 for an ephemeral port). A non-local one needs [`Upstream::transparent`] or
    /// [`Upstream::freebind`].
    Addr(SocketAddr),
}

/// A tiny builder for the proxy's upstream sockets, applying the layers in order: mark, transparent,
/// freebind, source bind.
///
/// ```
/// use meshcap_origdst::upstream::{Source, Upstream};
///
/// // The inbound passthrough hop, as Envoy's upstream_bind_config does it for Kuma.
/// let dst = "127.0.0.1:5000".parse()?;
/// let sock = Upstream::new().source(Source::InboundHop).socket(dst)?;
/// assert_eq!(sock.local_addr()?.as_socket().unwrap().ip().to_string(), "127.0.0.6");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Upstream {
    mark: Option<u32>,
    transparent: Transparent,
    freebind: bool,
    source: Source,
}

impl Upstream {
    /// No layers: a plain socket.
    pub const fn new() -> Self {
        Upstream {
            mark: None,
            transparent: Transparent::Off,
            freebind: false,
            source: Source::Auto,
        }
    }

    /// Set `SO_MARK` (see [`set_mark`]).
    #[must_use]
    pub const fn mark(mut self, mark: u32) -> Self {
        self.mark = Some(mark);
        self
    }

    /// Apply a [`Transparent`] setting (see [`set_transparent`]).
    #[must_use]
    pub const fn transparent(mut self, setting: Transparent) -> Self {
        self.transparent = setting;
        self
    }

    /// Set `IP_FREEBIND` / `IPV6_FREEBIND` (see [`set_freebind`]).
    #[must_use]
    pub const fn freebind(mut self, on: bool) -> Self {
        self.freebind = on;
        self
    }

    /// Choose the source address.
    #[must_use]
    pub const fn source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// A new socket for `dst` with the layers applied, not yet connected.
    ///
    /// # Errors
    ///
    /// The [`SocketError`] of the first layer that failed.
    pub fn socket(&self, dst: OriginalDst) -> Result<Socket, SocketError> {
        let sock = tcp_socket(dst)?;
        if let Some(mark) = self.mark {
            set_mark(&sock, mark)?;
        }
        set_transparent(&sock, self.transparent)?;
        if self.freebind {
            set_freebind(&sock)?;
        }
        match self.source {
            Source::Auto => {}
            Source::InboundHop => bind_source(&sock, inbound_source(dst))?,
            Source::Addr(addr) => bind_source(&sock, addr)?,
        }
        Ok(sock)
    }

    /// A new socket for `dst` with the layers applied, connected, as a tokio stream.
    ///
    /// # Errors
    ///
    /// The [`SocketError`] of the first layer that failed, or [`SocketError::Connect`].
    #[cfg(feature = "tokio")]
    pub async fn connect(&self, dst: OriginalDst) -> Result<tokio::net::TcpStream, SocketError> {
        connect(self.socket(dst)?, dst).await
    }
}

/// Connect a configured socket to `dst` without blocking the runtime: the socket is made non-blocking and
/// handed to tokio.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use meshcap_origdst::upstream::{connect, tcp_socket};
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let dst = listener.local_addr()?.into();
/// let stream = connect(tcp_socket(dst)?, dst).await?;
/// assert_eq!(stream.peer_addr()?, dst.as_socket_addr());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`SocketError::SetOption`] for `O_NONBLOCK`, [`SocketError::Connect`] when the connection fails.
#[cfg(feature = "tokio")]
pub async fn connect(sock: Socket, dst: OriginalDst) -> Result<tokio::net::TcpStream, SocketError> {
    let addr = dst.as_socket_addr();
    sock.set_nonblocking(true).map_err(|source| SocketError::SetOption {
        option: SockOpt::Nonblocking,
        addr: Some(addr),
        source,
    })?;
    let sock = tokio::net::TcpSocket::from_std_stream(sock.into());
    sock.connect(addr)
        .await
        .map_err(|source| SocketError::Connect { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn inbound_sources() {
        assert_eq!(
            inbound_source("10.0.0.1:1".parse().unwrap()),
            "127.0.0.6:0".parse().unwrap()
        );
        assert_eq!(
            inbound_source("[::ffff:10.0.0.1]:1".parse().unwrap()),
            "127.0.0.6:0".parse().unwrap()
        );
        assert_eq!(
            inbound_source("[fd00::1]:1".parse().unwrap()),
            "[::6]:0".parse().unwrap()
        );
    }

    #[test]
    fn inbound_hop_connects_from_127_0_0_6() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dst: OriginalDst = listener.local_addr().unwrap().into();
        let sock = Upstream::new().source(Source::InboundHop).socket(dst).unwrap();
        sock.connect(&dst.as_socket_addr().into()).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(INBOUND_SOURCE_V4));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn freebind_binds_an_address_no_interface_has() {
        // 192.0.2.1 (TEST-NET-1) is nowhere on this host.
        let nowhere: SocketAddr = "192.0.2.1:0".parse().unwrap();
        let plain = tcp_socket(nowhere.into()).unwrap();
        let err = bind_source(&plain, nowhere).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EADDRNOTAVAIL), "{err}");
        assert!(err.to_string().contains("set IP_FREEBIND"), "{err}");
        let sock = Upstream::new()
            .freebind(true)
            .source(Source::Addr(nowhere))
            .socket(nowhere.into())
            .unwrap();
        assert!(sock.freebind_v4().unwrap());
        assert_eq!(sock.local_addr().unwrap().as_socket().unwrap().ip(), nowhere.ip());
    }

    #[test]
    fn off_and_best_effort_transparent_never_fail() {
        let sock = tcp_socket("127.0.0.1:1".parse().unwrap()).unwrap();
        assert!(!set_transparent(&sock, Transparent::Off).unwrap());
        let _ = set_transparent(&sock, Transparent::BestEffort).unwrap();
    }
}

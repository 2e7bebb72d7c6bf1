//! Listeners for captured traffic: [`ListenerBuilder`] (transparent for TPROXY, `SO_REUSEPORT`, backlog,
//! dual-stack control) and the [`Transparent`] tri-state.

use crate::addr::ListenAddr;
use crate::error::{SockOpt, SocketError};
use crate::lookup::ParseSettingError;
use crate::opts;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;

/// Whether a socket gets `IP_TRANSPARENT` / `IPV6_TRANSPARENT` (which needs `CAP_NET_ADMIN`).
///
/// A TPROXY listener must be transparent, or the kernel will not hand it connections addressed elsewhere;
/// an upstream socket must be transparent to bind a non-local source (original-source spoofing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum Transparent {
    /// Set it; failing to is an error.
    Required,
    /// Never try.
    #[default]
    Off,
    /// Try; on failure carry on without it and report why ([`Listener::transparent_error`]).
    BestEffort,
}

impl fmt::Display for Transparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transparent::Required => "required",
            Transparent::Off => "off",
            Transparent::BestEffort => "best-effort",
        })
    }
}

impl FromStr for Transparent {
    type Err = ParseSettingError;

    fn from_str(s: &str) -> Result<Self, ParseSettingError> {
        match s {
            "required" => Ok(Transparent::Required),
            "off" => Ok(Transparent::Off),
            "best-effort" => Ok(Transparent::BestEffort),
            _ => Err(ParseSettingError::new(
                "transparent setting",
                s,
                "`required`, `off` or `best-effort`",
            )),
        }
    }
}

/// What applying a [`Transparent`] setting did.
#[derive(Debug)]
pub(crate) enum Applied {
    Set,
    NotAsked,
    Failed(io::Error),
}

/// Apply `setting` to `sock`, an IPv6 socket if `v6`, for `addr` (named in errors).
pub(crate) fn apply_transparent(
    sock: &SockRef<'_>,
    v6: bool,
    addr: Option<SocketAddr>,
    setting: Transparent,
) -> Result<Applied, SocketError> {
    let option = opts::transparent_opt(v6);
    if setting == Transparent::Off {
        return Ok(Applied::NotAsked);
    }
    if !opts::SUPPORTED && setting == Transparent::Required {
        return Err(SocketError::Unsupported { option });
    }
    match opts::set_transparent(sock, v6) {
        Ok(()) => Ok(Applied::Set),
        Err(source) if setting == Transparent::Required => Err(SocketError::SetOption { option, addr, source }),
        Err(source) => Ok(Applied::Failed(source)),
    }
}

/// The default listen backlog (the kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Builds a TCP listener for captured connections.
///
/// `SO_REUSEADDR` is always set (as `std` does). Everything else is opt-in:
/// [`transparent`](ListenerBuilder::transparent) for TPROXY, [`reuse_port`](ListenerBuilder::reuse_port)
/// to bind one listener per worker on the same address, [`only_v6`](ListenerBuilder::only_v6) to decide
/// whether `[::]` also accepts IPv4 (the kernel default, `net.ipv6.bindv6only=0`, is yes).
///
/// ```
/// use meshcap_origdst::{ListenerBuilder, Transparent};
///
/// let listener = ListenerBuilder::new("127.0.0.1:0".parse::<std::net::SocketAddr>()?)
///     .transparent(Transparent::BestEffort) // TPROXY when privileged, plain otherwise
///     .reuse_port(true)
///     .backlog(128)
///     .bind()?;
/// println!("listening on {} (transparent: {})", listener.local_addr(), listener.is_transparent());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerBuilder {
    addr: ListenAddr,
    transparent: Transparent,
    reuse_port: bool,
    backlog: u32,
    only_v6: Option<bool>,
}

impl ListenerBuilder {
    /// A listener on `addr`, not transparent, without `SO_REUSEPORT`, backlog [`DEFAULT_BACKLOG`].
    pub fn new(addr: impl Into<ListenAddr>) -> Self {
        ListenerBuilder {
            addr: addr.into(),
            transparent: Transparent::Off,
            reuse_port: false,
            backlog: DEFAULT_BACKLOG,
            only_v6: None,
        }
    }

    /// Set `IP_TRANSPARENT` / `IPV6_TRANSPARENT` (by the address family) before binding: needed for TPROXY.
    #[must_use]
    pub fn transparent(mut self, setting: Transparent) -> Self {
        self.transparent = setting;
        self
    }

    /// Set `SO_REUSEPORT`, so several listeners (one per worker) can bind the same address and the kernel
    /// spreads connections between them.
    #[must_use]
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// The `listen(2)` backlog.
    #[must_use]
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Set `IPV6_V6ONLY` on an IPv6 listener (ignored for IPv4): `false` makes `[::]` accept IPv4 clients
    /// too whatever `net.ipv6.bindv6only` says; `true` keeps it IPv6-only. Unset, the sysctl decides.
    #[must_use]
    pub fn only_v6(mut self, only_v6: bool) -> Self {
        self.only_v6 = Some(only_v6);
        self
    }

    /// The address to bind.
    pub fn addr(&self) -> ListenAddr {
        self.addr
    }

    /// Create, configure, bind and listen.
    ///
    /// # Errors
    ///
    /// [`SocketError`] naming the step and address; with [`Transparent::Required`] a refusal names
    /// `CAP_NET_ADMIN`. On platforms other than Linux, [`Transparent::Required`] is
    /// [`SocketError::Unsupported`].
    pub fn bind(&self) -> Result<Listener, SocketError> {
        let addr = self.addr.as_socket_addr();
        let set = |option: SockOpt, res: io::Result<()>| {
            res.map_err(|source| SocketError::SetOption {
                option,
                addr: Some(addr),
                source,
            })
        };
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|source| SocketError::Create { addr, source })?;
        set(SockOpt::ReuseAddr, sock.set_reuse_address(true))?;
        if let (Some(only_v6), true) = (self.only_v6, addr.is_ipv6()) {
            set(SockOpt::OnlyV6(only_v6), sock.set_only_v6(only_v6))?;
        }
        if self.reuse_port {
            set(SockOpt::ReusePort, opts::set_reuse_port(&SockRef::from(&sock)))?;
        }
        let (transparent, transparent_error) =
            match apply_transparent(&SockRef::from(&sock), addr.is_ipv6(), Some(addr), self.transparent)? {
                Applied::Set => (true, None),
                Applied::NotAsked => (false, None),
                Applied::Failed(e) => (false, Some(e)),
            };
        sock.bind(&addr.into())
            .map_err(|source| SocketError::Bind { addr, source })?;
        let backlog = i32::try_from(self.backlog).unwrap_or(i32::MAX);
        sock.listen(backlog).map_err(|source| SocketError::Listen {
            addr,
            backlog: self.backlog,
            source,
        })?;
        let local = sock
            .local_addr()
            .and_then(|sa| {
                sa.as_socket()
                    .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))
            })
            .map_err(|source| SocketError::LocalAddr { addr, source })?;
        Ok(Listener {
            inner: sock.into(),
            local: ListenAddr::new(local),
            transparent,
            transparent_error,
        })
    }
}

/// A bound, listening socket from [`ListenerBuilder::bind`], with what was set on it.
#[derive(Debug)]
pub struct Listener {
    inner: std::net::TcpListener,
    local: ListenAddr,
    transparent: bool,
    transparent_error: Option<io::Error>,
}

impl Listener {
    /// The bound address (with the port the kernel picked, if port 0 was asked).
    pub fn local_addr(&self) -> ListenAddr {
        self.local
    }

    /// Whether `IP_TRANSPARENT` / `IPV6_TRANSPARENT` is set.
    pub fn is_transparent(&self) -> bool {
        self.transparent
    }

    /// Why [`Transparent::BestEffort`] did not make the listener transparent, for the caller to log.
    pub fn transparent_error(&self) -> Option<&io::Error> {
        self.transparent_error.as_ref()
    }

    /// The listener, borrowed.
    pub fn as_std(&self) -> &std::net::TcpListener {
        &self.inner
    }

    /// The `std` listener (blocking).
    pub fn into_std(self) -> std::net::TcpListener {
        self.inner
    }

    /// The listener as a `tokio` listener (made non-blocking and registered with the current runtime).
    ///
    /// # Errors
    ///
    /// [`SocketError::SetOption`] for `O_NONBLOCK`; outside a tokio runtime, the registration error.
    #[cfg(feature = "tokio")]
    pub fn into_tokio(self) -> Result<tokio::net::TcpListener, SocketError> {
        let addr = self.local.as_socket_addr();
        let set_err = |source| SocketError::SetOption {
            option: SockOpt::Nonblocking,
            addr: Some(addr),
            source,
        };
        self.inner.set_nonblocking(true).map_err(set_err)?;
        tokio::net::TcpListener::from_std(self.inner).map_err(set_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    #[test]
    fn transparent_parses_and_prints() {
        for t in [Transparent::Required, Transparent::Off, Transparent::BestEffort] {
            assert_eq!(t.to_string().parse::<Transparent>().unwrap(), t);
        }
        assert_eq!(
            "yes".parse::<Transparent>().unwrap_err().to_string(),
            "invalid transparent setting `yes`: expected `required`, `off` or `best-effort`"
        );
    }

    #[test]
    fn plain_listener_binds_and_accepts() {
        let listener = ListenerBuilder::new("127.0.0.1:0".parse::<SocketAddr>().unwrap())
            .backlog(16)
            .bind()
            .unwrap();
        assert!(!listener.is_transparent());
        assert!(listener.transparent_error().is_none());
        let addr = listener.local_addr();
        assert_ne!(addr.port(), 0);
        let _client = TcpStream::connect(addr.as_socket_addr()).unwrap();
        let (_, peer) = listener.as_std().accept().unwrap();
        assert!(peer.ip().is_loopback());
    }

    #[test]
    fn reuse_port_lets_two_listeners_share_an_address() {
        let first = ListenerBuilder::new("127.0.0.1:0".parse::<SocketAddr>().unwrap())
            .reuse_port(true)
            .bind()
            .unwrap();
        let second = ListenerBuilder::new(first.local_addr())
            .reuse_port(true)
            .bind()
            .unwrap();
        assert_eq!(first.local_addr(), second.local_addr());
        // Without SO_REUSEPORT on the newcomer the address is taken.
        let err = ListenerBuilder::new(first.local_addr()).bind().unwrap_err();
        assert!(matches!(err, SocketError::Bind { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot bind to {}", first.local_addr())),
            "{err}"
        );
    }

    #[test]
    fn best_effort_transparent_never_fails_the_bind() {
        let listener = ListenerBuilder::new("127.0.0.1:0".parse::<SocketAddr>().unwrap())
            .transparent(Transparent::BestEffort)
            .bind()
            .unwrap();
        // Privileged: transparent. Unprivileged: not, and the reason is kept.
        assert_eq!(listener.is_transparent(), listener.transparent_error().is_none());
    }
}

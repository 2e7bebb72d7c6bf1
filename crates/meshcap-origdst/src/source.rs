//! The seam: [`OrigDstSource`], "the original destination of this accepted connection", with the kernel
//! ([`Kernel`](crate::Kernel)) as one implementation and [`Fixed`], [`Mapped`] and [`from_fn`] for tests that
//! run without root or iptables.

use crate::addr::{ClientAddr, OriginalDst};
use crate::error::LookupError;
use crate::lookup::{Accepted, Lookup, NotRedirected};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Where the original destination of an accepted connection comes from.
///
/// A proxy holds one source (often as `Arc<dyn OrigDstSource>`) and calls it once per accepted connection,
/// on the hot path: implementations must be cheap and should not allocate. [`Kernel`](crate::Kernel) asks the
/// kernel; [`Fixed`], [`Mapped`] and [`from_fn`] stand in for it in tests.
///
/// ```
/// use meshcap_origdst::{Accepted, Kernel, Mapped, Mode, OrigDstSource};
/// use std::sync::Arc;
///
/// fn pick(test: bool) -> Arc<dyn OrigDstSource> {
///     if test {
///         Arc::new(Mapped::new().with_listen_port(15001, "10.96.0.10:80".parse().unwrap()))
///     } else {
///         Arc::new(Kernel::new(Mode::Redirect))
///     }
/// }
/// # let _ = pick(true);
/// ```
pub trait OrigDstSource: Send + Sync {
    /// The original destination of `conn`, or why there is none.
    ///
    /// # Errors
    ///
    /// [`LookupError`] when the source cannot tell (a kernel call failed).
    fn original_dst(&self, conn: &Accepted<'_>) -> Result<Lookup, LookupError>;
}

impl<T: OrigDstSource + ?Sized> OrigDstSource for &T {
    #[inline]
    fn original_dst(&self, conn: &Accepted<'_>) -> Result<Lookup, LookupError> {
        (**self).original_dst(conn)
    }
}

impl<T: OrigDstSource + ?Sized> OrigDstSource for Box<T> {
    #[inline]
    fn original_dst(&self, conn: &Accepted<'_>) -> Result<Lookup, LookupError> {
        (**self).original_dst(conn)
    }
}

impl<T: OrigDstSource + ?Sized> OrigDstSource for Arc<T> {
    #[inline]
    fn original_dst(&self, conn: &Accepted<'_>) -> Result<Lookup, LookupError> {
        (**self).original_dst(conn)
    }
}

/// A source that answers every connection with the same destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fixed(OriginalDst);

impl Fixed {
    /// Always answer `dst`.
    #[inline]
    pub const fn new(dst: OriginalDst) -> Self {
        Fixed(dst)
    }

    /// The destination.
    #[inline]
    pub const fn dst(&self) -> OriginalDst {
        self.0
    }
}

impl OrigDstSource for Fixed {
    #[inline]
    fn original_dst(&self, _: &Accepted<'_>) -> Result<Lookup, LookupError> {
        Ok(Lookup::Redirected(self.0))
    }
}

/// A source that answers from a table: first by the exact client address, then by the local port the
/// connection arrived on (one entry per proxy listener, e.g. 15001 → where "outbound" traffic was going).
/// A connection matching neither is [`Lookup::NotRedirected`] with [`NotRedirected::NoEntry`], as the kernel
/// reports a connection conntrack never saw.
///
/// Lookups take no locks and do not allocate. To change the table while a proxy runs, rebuild it and swap
/// an `Arc`, or wrap your own state with [`from_fn`].
///
/// ```
/// use meshcap_origdst::{Accepted, Lookup, Mapped, OrigDstSource};
/// use std::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let port = listener.local_addr()?.port();
/// let source = Mapped::new().with_listen_port(port, "10.96.0.10:80".parse()?);
///
/// let _client = TcpStream::connect(("127.0.0.1", port))?;
/// let (stream, peer) = listener.accept()?;
/// let lookup = source.original_dst(&Accepted::new(&stream, peer))?;
/// assert_eq!(lookup, Lookup::Redirected("10.96.0.10:80".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapped {
    by_client: BTreeMap<ClientAddr, OriginalDst>,
    by_port: BTreeMap<u16, OriginalDst>,
}

impl Mapped {
    /// An empty table: every connection is not redirected.
    pub fn new() -> Self {
        Mapped::default()
    }

    /// Add: connections from `client` were going to `dst`.
    pub fn with_client(mut self, client: ClientAddr, dst: OriginalDst) -> Self {
        self.insert_client(client, dst);
        self
    }

    /// Add: connections arriving on local port `port` were going to `dst`.
    pub fn with_listen_port(mut self, port: u16, dst: OriginalDst) -> Self {
        self.insert_listen_port(port, dst);
        self
    }

    /// Add or replace the entry for `client`; returns the previous destination.
    pub fn insert_client(&mut self, client: ClientAddr, dst: OriginalDst) -> Option<OriginalDst> {
        self.by_client.insert(client, dst)
    }

    /// Add or replace the entry for local port `port`; returns the previous destination.
    pub fn insert_listen_port(&mut self, port: u16, dst: OriginalDst) -> Option<OriginalDst> {
        self.by_port.insert(port, dst)
    }
}

impl OrigDstSource for Mapped {
    fn original_dst(&self, conn: &Accepted<'_>) -> Result<Lookup, LookupError> {
        if let Some(dst) = self.by_client.get(&conn.peer()) {
            return Ok(Lookup::Redirected(*dst));
        }
        let local = conn.local_addr()?;
        Ok(match self.by_port.get(&local.port()) {
            Some(dst) => Lookup::Redirected(*dst),
            None => Lookup::NotRedirected {
                local,
                reason: NotRedirected::NoEntry,
            },
        })
    }
}

/// A source from a closure, for tests that need state or want to inject errors.
///
/// ```
/// use meshcap_origdst::{Lookup, OrigDstSource, from_fn};
///
/// let source = from_fn(|conn| Ok(Lookup::Redirected(conn.peer().as_socket_addr().into())));
/// # fn is_source(_: &impl OrigDstSource) {}
/// # is_source(&source);
/// ```
pub fn from_fn<F>(f: F) -> FromFn<F>
where
    F: Fn(&Accepted<'_>) -> Result<Lookup, LookupError> + Send + Sync,
{
    FromFn(f)
}

/// The source made by [`from_fn`].
#[derive(Clone, Copy)]
pub struct FromFn<F>(F);

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FromFn(..)")
    }
}

impl<F> OrigDstSource for FromFn<F>
where
    F: Fn(&Accepted<'_>) -> Result<Lookup, LookupError> + Send + Sync,
{
    #[inline]
    fn original_dst(&self, conn: &Accepted<'_>) -> Result<Lookup, LookupError> {
        (self.0)(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Call, SocketAddrs};
    use crate::{Kernel, Mode};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    fn dst(s: &str) -> OriginalDst {
        s.parse().unwrap()
    }

    /// A connected loopback pair: (accepted stream, its peer address, the listener's port).
    fn pair() -> (TcpStream, SocketAddr, TcpStream, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (stream, peer) = listener.accept().unwrap();
        (stream, peer, client, port)
    }

    #[test]
    fn sources_are_send_sync_and_object_safe() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Kernel>();
        assert_send_sync::<Fixed>();
        assert_send_sync::<Mapped>();
        assert_send_sync::<Arc<dyn OrigDstSource>>();
        assert_send_sync::<Box<dyn OrigDstSource>>();
        assert_send_sync::<LookupError>();
        let _: Vec<Box<dyn OrigDstSource>> = vec![
            Box::new(Kernel::new(Mode::Tproxy)),
            Box::new(Fixed::new(dst("10.0.0.1:80"))),
            Box::new(Mapped::new()),
            Box::new(from_fn(|_| Ok(Lookup::Redirected("10.0.0.1:80".parse().unwrap())))),
        ];
    }

    #[test]
    fn fixed_answers_everything() {
        let (stream, peer, _client, _) = pair();
        let source = Fixed::new(dst("10.96.0.10:80"));
        assert_eq!(
            source.original_dst(&Accepted::new(&stream, peer)).unwrap(),
            Lookup::Redirected(dst("10.96.0.10:80"))
        );
        assert_eq!(source.dst(), dst("10.96.0.10:80"));
    }

    #[test]
    fn mapped_prefers_client_then_port_then_not_redirected() {
        let (stream, peer, _client, port) = pair();
        let conn = Accepted::new(&stream, peer);

        let by_port = Mapped::new().with_listen_port(port, dst("10.96.0.10:80"));
        assert_eq!(
            by_port.original_dst(&conn).unwrap(),
            Lookup::Redirected(dst("10.96.0.10:80"))
        );

        let by_client = by_port.clone().with_client(peer.into(), dst("10.96.0.11:443"));
        assert_eq!(
            by_client.original_dst(&conn).unwrap(),
            Lookup::Redirected(dst("10.96.0.11:443"))
        );

        let other_port = Mapped::new().with_listen_port(port.wrapping_add(1), dst("10.96.0.10:80"));
        assert_eq!(
            other_port.original_dst(&conn).unwrap(),
            Lookup::NotRedirected {
                local: SocketAddr::from(([127, 0, 0, 1], port)),
                reason: NotRedirected::NoEntry,
            }
        );
    }

    #[test]
    fn mapped_matches_a_mapped_client_of_a_dual_stack_listener() {
        let Ok(listener) = TcpListener::bind("[::]:0") else {
            eprintln!("no IPv6 on this host; dual-stack seam test skipped");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (stream, peer) = listener.accept().unwrap();
        assert!(peer.is_ipv6(), "a dual-stack listener reports {peer}");
        let canonical_peer: ClientAddr = crate::canonical(peer).into();
        let source = Mapped::new().with_client(canonical_peer, dst("10.96.0.12:8080"));
        assert_eq!(
            source.original_dst(&Accepted::new(&stream, peer)).unwrap(),
            Lookup::Redirected(dst("10.96.0.12:8080"))
        );
    }

    #[test]
    fn insert_returns_previous() {
        let mut m = Mapped::new();
        assert_eq!(m.insert_listen_port(15001, dst("10.0.0.1:80")), None);
        assert_eq!(
            m.insert_listen_port(15001, dst("10.0.0.2:80")),
            Some(dst("10.0.0.1:80"))
        );
        let client: ClientAddr = "10.0.0.5:4000".parse().unwrap();
        assert_eq!(m.insert_client(client, dst("10.0.0.3:80")), None);
    }

    #[test]
    fn from_fn_and_wrappers_delegate() {
        let (stream, peer, _client, _) = pair();
        let conn = Accepted::new(&stream, peer);
        let failing = from_fn(|conn| {
            Err(LookupError::Io {
                call: Call::OriginalDstV4,
                addrs: SocketAddrs::new(None, Some(conn.peer().as_socket_addr())),
                source: std::io::Error::other("injected"),
            })
        });
        let err = failing.original_dst(&conn).unwrap_err();
        assert_eq!(err.addrs().peer(), Some(peer));
        assert_eq!(format!("{failing:?}"), "FromFn(..)");

        let shared: Arc<dyn OrigDstSource> = Arc::new(Fixed::new(dst("10.0.0.9:9")));
        assert_eq!(
            shared.original_dst(&conn).unwrap().redirected(),
            Some(dst("10.0.0.9:9"))
        );
        fn through(source: impl OrigDstSource, conn: &Accepted<'_>) -> Option<OriginalDst> {
            source.original_dst(conn).unwrap().redirected()
        }
        assert_eq!(through(&shared, &conn), Some(dst("10.0.0.9:9")));
        assert_eq!(
            through(Box::new(Fixed::new(dst("10.0.0.8:8"))), &conn),
            Some(dst("10.0.0.8:8"))
        );
    }
}

//! The loop guard: is an original destination the proxy itself?
//!
//! The capture rules should never send the proxy's own connections back to it (owner match, `SO_MARK`,
//! port exclusions), but a connection made *directly* to a proxy port still has that port as its
//! original destination, and a naive proxy then connects to itself until it runs out of file descriptors.
//! [`LoopGuard`] is the check in the proxy that catches it whatever the rules say (ztunnel's `SelfCall`,
//! linkerd's `Loop`).

use crate::addr::{ListenAddr, OriginalDst, canonical_ip};
use std::net::IpAddr;

/// A destination that is one of the proxy's own listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("destination {dst} is the proxy's own listener {listener}")]
pub struct Loop {
    dst: OriginalDst,
    listener: ListenAddr,
}

impl Loop {
    /// The refused destination.
    pub fn dst(&self) -> OriginalDst {
        self.dst
    }

    /// The listener it would reach.
    pub fn listener(&self) -> ListenAddr {
        self.listener
    }
}

/// Tells whether an original destination is the proxy itself, from the proxy's own listen addresses.
///
/// A listener bound to a specific IP is reached by exactly that IP and port. A listener on a wildcard
/// (`0.0.0.0`, or `[::]`, which on Linux also takes IPv4 unless `IPV6_V6ONLY`) is reached on its port by
/// any *local* address: loopback, unspecified, and the addresses given with
/// [`with_local_addrs`](LoopGuard::with_local_addrs). The guard never enumerates interfaces by itself; pass
/// [`local_addrs()`](crate::local_addrs) (or your own list) to include the pod's addresses, or use
/// [`any_address`](LoopGuard::any_address) to refuse every destination on a proxy port whatever its IP.
///
/// Checking is allocation-free; build the guard once and share it.
///
/// ```
/// use meshcap_origdst::LoopGuard;
///
/// let guard = LoopGuard::new(["0.0.0.0:15001".parse::<std::net::SocketAddr>()?, "[::]:15006".parse()?])
///     .with_local_addrs(["10.244.0.6".parse()?]);
/// assert!(guard.check("10.96.0.10:80".parse()?).is_ok());
/// let err = guard.check("10.244.0.6:15006".parse()?).unwrap_err();
/// assert_eq!(err.to_string(), "destination 10.244.0.6:15006 is the proxy's own listener [::]:15006");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopGuard {
    listeners: Vec<ListenAddr>,
    local: Vec<IpAddr>,
    any_address: bool,
}

impl LoopGuard {
    /// A guard for these listen addresses. Listeners on port 0 are ignored (nothing connects to port 0).
    pub fn new<I>(listeners: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<ListenAddr>,
    {
        let mut listeners: Vec<ListenAddr> = listeners
            .into_iter()
            .map(Into::into)
            .filter(|l| l.port() != 0)
            .collect();
        listeners.sort_unstable();
        listeners.dedup();
        LoopGuard {
            listeners,
            local: Vec::new(),
            any_address: false,
        }
    }

    /// Also count these addresses as local (for wildcard listeners), typically the pod's own IPs from
    /// [`local_addrs()`](crate::local_addrs). IPv4-mapped addresses count as their IPv4 address.
    #[must_use]
    pub fn with_local_addrs<I: IntoIterator<Item = IpAddr>>(mut self, addrs: I) -> Self {
        self.local.extend(addrs.into_iter().map(canonical_ip));
        self.local.sort_unstable();
        self.local.dedup();
        self
    }

    /// Refuse every destination on a proxy port, whatever its IP (ztunnel's `illegal_ports`). Right for an
    /// inbound listener, where every captured destination is local anyway; too strict for outbound, where a
    /// remote service may legitimately use the same port number.
    #[must_use]
    pub fn any_address(mut self, on: bool) -> Self {
        self.any_address = on;
        self
    }

    /// The listen addresses guarded (sorted, without port 0).
    pub fn listeners(&self) -> &[ListenAddr] {
        &self.listeners
    }

    /// `Err(Loop)` if `dst` would reach one of the proxy's listeners.
    ///
    /// # Errors
    ///
    /// [`Loop`] naming the destination and the listener it reaches.
    pub fn check(&self, dst: OriginalDst) -> Result<(), Loop> {
        match self.listeners.iter().find(|l| self.reaches(dst, **l)) {
            Some(listener) => Err(Loop {
                dst,
                listener: *listener,
            }),
            None => Ok(()),
        }
    }

    fn reaches(&self, dst: OriginalDst, listener: ListenAddr) -> bool {
        if dst.port() != listener.port() {
            return false;
        }
        if self.any_address {
            return true;
        }
        let ip = dst.ip();
        let listen_ip = canonical_ip(listener.ip());
        if listen_ip.is_unspecified() {
            // `0.0.0.0` takes IPv4 only; `[::]` takes both families.
            let family_ok = ip.is_ipv4() || listen_ip.is_ipv6();
            family_ok && self.is_local(ip)
        } else {
            // Connecting to the unspecified address reaches the loopback address of that family.
            ip == listen_ip || (ip.is_unspecified() && listen_ip.is_loopback() && ip.is_ipv4() == listen_ip.is_ipv4())
        }
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || ip.is_unspecified() || self.local.binary_search(&ip).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn guard() -> LoopGuard {
        LoopGuard::new([
            sa("0.0.0.0:15001"),
            sa("[::]:15006"),
            sa("127.0.0.1:9901"),
            sa("[fd00::6]:15053"),
        ])
        .with_local_addrs(["10.244.0.6".parse().unwrap(), "fd00::6".parse().unwrap()])
    }

    #[test]
    fn table() {
        let g = guard();
        let cases: &[(&str, Option<&str>)] = &[
            // Outbound wildcard (IPv4 only).
            ("127.0.0.1:15001", Some("0.0.0.0:15001")),
            ("127.0.0.53:15001", Some("0.0.0.0:15001")),
            ("10.244.0.6:15001", Some("0.0.0.0:15001")),
            ("0.0.0.0:15001", Some("0.0.0.0:15001")),
            ("[::ffff:10.244.0.6]:15001", Some("0.0.0.0:15001")),
            ("[::1]:15001", None),
            ("10.96.0.10:15001", None),
            ("10.244.0.6:15002", None),
            // Inbound dual-stack wildcard.
            ("10.244.0.6:15006", Some("[::]:15006")),
            ("[fd00::6]:15006", Some("[::]:15006")),
            ("[::1]:15006", Some("[::]:15006")),
            ("[::]:15006", Some("[::]:15006")),
            ("10.244.0.5:15006", None),
            ("[fd00::5]:15006", None),
            // Specific addresses.
            ("127.0.0.1:9901", Some("127.0.0.1:9901")),
            ("0.0.0.0:9901", Some("127.0.0.1:9901")),
            ("127.0.0.2:9901", None),
            ("[::1]:9901", None),
            ("[fd00::6]:15053", Some("[fd00::6]:15053")),
            ("10.244.0.6:15053", None),
            // Ordinary destinations.
            ("10.96.0.10:80", None),
            ("10.244.0.6:5000", None),
        ];
        for (dst, want) in cases {
            let got = g.check(dst.parse().unwrap()).err().map(|l| l.listener().to_string());
            assert_eq!(got.as_deref(), *want, "{dst}");
        }
    }

    #[test]
    fn without_local_addrs_only_loopback_counts_for_wildcards() {
        let g = LoopGuard::new([sa("0.0.0.0:15001")]);
        assert!(g.check("127.0.0.1:15001".parse().unwrap()).is_err());
        assert!(g.check("10.244.0.6:15001".parse().unwrap()).is_ok());
    }

    #[test]
    fn any_address_refuses_the_port_everywhere() {
        let g = LoopGuard::new([sa("0.0.0.0:15006")]).any_address(true);
        let err = g.check("10.99.0.1:15006".parse().unwrap()).unwrap_err();
        assert_eq!(err.dst().to_string(), "10.99.0.1:15006");
        assert_eq!(err.listener().to_string(), "0.0.0.0:15006");
        assert!(g.check("10.99.0.1:15007".parse().unwrap()).is_ok());
    }

    #[test]
    fn mapped_listen_addresses_count_as_ipv4() {
        let g = LoopGuard::new([sa("[::ffff:127.0.0.1]:15001")]);
        assert!(g.check("127.0.0.1:15001".parse().unwrap()).is_err());
        let g = LoopGuard::new([sa("[::ffff:0.0.0.0]:15001")]);
        assert!(g.check("127.0.0.1:15001".parse().unwrap()).is_err());
    }

    #[test]
    fn port_zero_and_duplicates_are_dropped() {
        let g = LoopGuard::new([sa("0.0.0.0:0"), sa("0.0.0.0:15001"), sa("0.0.0.0:15001")]);
        assert_eq!(g.listeners(), &[ListenAddr::new(sa("0.0.0.0:15001"))]);
        assert!(g.check("127.0.0.1:0".parse().unwrap()).is_ok());
        assert!(LoopGuard::default().check("127.0.0.1:15001".parse().unwrap()).is_ok());
    }

    #[test]
    fn loop_message() {
        let err = guard().check("127.0.0.1:15001".parse().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "destination 127.0.0.1:15001 is the proxy's own listener 0.0.0.0:15001"
        );
    }
}

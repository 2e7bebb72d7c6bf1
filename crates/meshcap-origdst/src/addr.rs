//! Role newtypes for the addresses of a captured connection, and [`canonical`].
//!
//! A bare `SocketAddr` says nothing about whose address it is; these types do. [`OriginalDst`] and
//! [`ClientAddr`] are always *canonical*: an IPv4-mapped IPv6 address (`[::ffff:10.0.0.1]:80`, what a
//! dual-stack `[::]` socket reports for an IPv4 peer) is stored as the IPv4 address it stands for, so equal
//! destinations compare equal whatever socket family saw them. [`ListenAddr`] is kept exactly as given:
//! binding `[::ffff:0.0.0.0]` and `0.0.0.0` are different requests to the kernel.

use std::fmt;
use std::net::{AddrParseError, IpAddr, SocketAddr, SocketAddrV4};
use std::str::FromStr;

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) replaced by the IPv4 address it stands for.
///
/// Every other address is returned unchanged, including its IPv6 flow info and scope id, and including
/// the deprecated IPv4-compatible form (`::a.b.c.d`): `[::6]:0`, Kuma's inbound source, stays IPv6.
///
/// ```
/// use meshcap_origdst::canonical;
/// use std::net::SocketAddr;
///
/// let mapped: SocketAddr = "[::ffff:10.244.0.6]:5000".parse()?;
/// assert_eq!(canonical(mapped).to_string(), "10.244.0.6:5000");
/// let v6: SocketAddr = "[::6]:0".parse()?;
/// assert_eq!(canonical(v6), v6);
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[inline]
pub const fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The IP part of [`canonical`].
#[inline]
pub(crate) const fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

/// A string that is not an `IP:PORT` socket address, for one of the role types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {role} `{input}`: expected IP:PORT, e.g. 10.244.0.6:5000 or [fd00::6]:5000")]
pub struct ParseAddrError {
    role: &'static str,
    input: String,
    #[source]
    source: AddrParseError,
}

impl ParseAddrError {
    /// The text that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }
}

macro_rules! role_addr {
    (
        $(#[$meta:meta])*
        $name:ident, $role:literal, $normalise:path
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(
            feature = "serde",
            derive(serde::Serialize, serde::Deserialize),
            serde(from = "SocketAddr", into = "SocketAddr")
        )]
        pub struct $name(SocketAddr);

        impl $name {
            #[doc = concat!("Wrap `addr` as ", $role, ".")]
            #[inline]
            pub const fn new(addr: SocketAddr) -> Self {
                Self($normalise(addr))
            }

            /// The address as a plain `SocketAddr`.
            #[inline]
            pub const fn as_socket_addr(&self) -> SocketAddr {
                self.0
            }

            /// The IP address.
            #[inline]
            pub const fn ip(&self) -> IpAddr {
                self.0.ip()
            }

            /// The port.
            #[inline]
            pub const fn port(&self) -> u16 {
                self.0.port()
            }
        }

        impl From<SocketAddr> for $name {
            #[inline]
            fn from(addr: SocketAddr) -> Self {
                Self::new(addr)
            }
        }

        impl From<$name> for SocketAddr {
            #[inline]
            fn from(addr: $name) -> SocketAddr {
                addr.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseAddrError;

            fn from_str(s: &str) -> Result<Self, ParseAddrError> {
                s.parse::<SocketAddr>().map(Self::new).map_err(|source| ParseAddrError {
                    role: $role,
                    input: s.to_owned(),
                    source,
                })
            }
        }
    };
}

const fn as_given(addr: SocketAddr) -> SocketAddr {
    addr
}

role_addr! {
    /// Where a captured connection was going before the kernel redirected it to the proxy: the address the
    /// proxy should connect to (or route by). Always canonical (see [`canonical`]).
    ///
    /// ```
    /// use meshcap_origdst::OriginalDst;
    ///
    /// let dst: OriginalDst = "[::ffff:10.96.0.10]:80".parse()?;
    /// assert_eq!(dst.to_string(), "10.96.0.10:80");
    /// assert_eq!(dst.port(), 80);
    /// # Ok::<(), meshcap_origdst::ParseAddrError>(())
    /// ```
    OriginalDst, "original destination", canonical
}

role_addr! {
    /// The remote end of an accepted connection (the application or the peer that connected). Always
    /// canonical (see [`canonical`]): an IPv4 client of a dual-stack listener is an IPv4 `ClientAddr`.
    ClientAddr, "client address", canonical
}

role_addr! {
    /// An address a proxy listener is bound to (`0.0.0.0:15001`, `[::]:15006`, `127.0.0.1:15001`). Kept
    /// exactly as given: an unspecified IP means "every local address" on that port.
    ListenAddr, "listen address", as_given
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_addresses_are_unwrapped() {
        assert_eq!(canonical(sa("[::ffff:127.0.0.1]:15001")), sa("127.0.0.1:15001"));
        assert_eq!(canonical(sa("[::ffff:10.244.0.6]:5000")), sa("10.244.0.6:5000"));
        assert_eq!(canonical(sa("[::ffff:0.0.0.0]:0")), sa("0.0.0.0:0"));
    }

    #[test]
    fn non_mapped_addresses_are_untouched() {
        for s in [
            "10.0.0.1:80",
            "[::1]:80",
            "[fd00::6]:5000",
            "[::]:15006",
            "[::6]:0",
            "[::10.0.0.1]:80",
        ] {
            assert_eq!(canonical(sa(s)), sa(s), "{s}");
        }
        // IPv4-compatible is not IPv4-mapped: Kuma's `::6` must stay IPv6.
        assert!(canonical(sa("[::6]:0")).is_ipv6());
    }

    #[test]
    fn ipv6_scope_and_flow_survive() {
        let v6 = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 80, 7, 3));
        assert_eq!(canonical(v6), v6);
        let SocketAddr::V6(out) = OriginalDst::new(v6).as_socket_addr() else {
            panic!("family changed")
        };
        assert_eq!((out.flowinfo(), out.scope_id()), (7, 3));
    }

    #[test]
    fn canonical_ip_matches_canonical() {
        let mapped: IpAddr = Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped().into();
        assert_eq!(canonical_ip(mapped), IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(
            canonical_ip(Ipv6Addr::LOCALHOST.into()),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
    }

    #[test]
    fn roles_canonicalise_except_listen() {
        let mapped = sa("[::ffff:10.0.0.1]:80");
        assert_eq!(OriginalDst::from(mapped).as_socket_addr(), sa("10.0.0.1:80"));
        assert_eq!(ClientAddr::from(mapped).as_socket_addr(), sa("10.0.0.1:80"));
        assert_eq!(ListenAddr::from(mapped).as_socket_addr(), mapped);
        assert_eq!(OriginalDst::from(mapped), OriginalDst::from(sa("10.0.0.1:80")));
    }

    #[test]
    fn parse_errors_name_role_and_input() {
        let err = "10.0.0.1".parse::<OriginalDst>().unwrap_err();
        assert_eq!(err.input(), "10.0.0.1");
        assert_eq!(
            err.to_string(),
            "invalid original destination `10.0.0.1`: expected IP:PORT, e.g. 10.244.0.6:5000 or [fd00::6]:5000"
        );
        assert!(std::error::Error::source(&err).is_some());
        let err = "[::]".parse::<ListenAddr>().unwrap_err();
        assert!(err.to_string().starts_with("invalid listen address `[::]`"), "{err}");
        let err = "x".parse::<ClientAddr>().unwrap_err();
        assert!(err.to_string().starts_with("invalid client address `x`"), "{err}");
    }

    #[test]
    fn display_is_the_socket_addr() {
        assert_eq!(OriginalDst::from(sa("[fd00::6]:5000")).to_string(), "[fd00::6]:5000");
        assert_eq!(ListenAddr::from(sa("0.0.0.0:15001")).to_string(), "0.0.0.0:15001");
        assert_eq!(
            format!("{:?}", ClientAddr::from(sa("10.0.0.5:4000"))),
            "ClientAddr(10.0.0.5:4000)"
        );
    }

    fn any_socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(ip).to_ipv6_mapped(), port))),
        ]
    }

    proptest! {
        #[test]
        fn canonical_is_idempotent_and_keeps_port(addr in any_socket_addr()) {
            let once = canonical(addr);
            prop_assert_eq!(canonical(once), once);
            prop_assert_eq!(once.port(), addr.port());
            if let SocketAddr::V6(v6) = once {
                prop_assert!(v6.ip().to_ipv4_mapped().is_none());
            }
        }

        #[test]
        fn display_parse_round_trip(addr in any_socket_addr()) {
            let dst = OriginalDst::from(addr);
            prop_assert_eq!(dst.to_string().parse::<OriginalDst>().unwrap(), dst);
            let client = ClientAddr::from(addr);
            prop_assert_eq!(client.to_string().parse::<ClientAddr>().unwrap(), client);
            let listen = ListenAddr::from(addr);
            prop_assert_eq!(listen.to_string().parse::<ListenAddr>().unwrap(), listen);
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_is_the_string_form_and_canonicalises() {
        let dst: OriginalDst = serde_json::from_str("\"[::ffff:10.96.0.10]:80\"").unwrap();
        assert_eq!(serde_json::to_string(&dst).unwrap(), "\"10.96.0.10:80\"");
        let listen: ListenAddr = serde_json::from_str("\"[::]:15006\"").unwrap();
        assert_eq!(serde_json::to_string(&listen).unwrap(), "\"[::]:15006\"");
        assert!(serde_json::from_str::<ClientAddr>("\"nope\"").is_err());
    }
}

//! [`local_addrs`]: the IP addresses assigned in the calling thread's network namespace, from an
//! `RTM_GETADDR` dump over a netlink route socket (socket2, no `unsafe`, no external tools). Only ever run
//! when the caller asks; the [`LoopGuard`](crate::LoopGuard) takes the result as a value.

// The wire-format code compiles (and is unit-tested) everywhere, but only Linux calls it.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::io;
use std::net::IpAddr;

/// Why [`local_addrs`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalAddrsError {
    /// A call on the netlink route socket failed.
    #[error("cannot {step} the netlink route socket")]
    #[non_exhaustive]
    Io {
        /// What was being done (`"open"`, `"send a request on"`, `"receive from"`).
        step: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The kernel answered the dump request with an error.
    #[error("the kernel refused the RTM_GETADDR dump")]
    #[non_exhaustive]
    Kernel {
        /// The error the kernel reported.
        #[source]
        source: io::Error,
    },
    /// The kernel's answer did not parse.
    #[error("malformed netlink answer at byte {offset}: {what}")]
    #[non_exhaustive]
    Malformed {
        /// Offset in the datagram.
        offset: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// There is no netlink on this platform.
    #[error("listing local addresses is not supported on this platform")]
    Unsupported,
}

/// The IP addresses assigned to interfaces in the calling thread's network namespace (sorted, without
/// duplicates), for [`LoopGuard::with_local_addrs`](crate::LoopGuard::with_local_addrs).
///
/// A snapshot: call it again (and rebuild the guard) if addresses change.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let addrs = meshcap_origdst::local_addrs()?;
/// assert!(addrs.iter().any(|ip| ip.is_loopback()) || addrs.is_empty());
/// # }
/// # Ok::<(), meshcap_origdst::LocalAddrsError>(())
/// ```
///
/// # Errors
///
/// [`LocalAddrsError`]; [`LocalAddrsError::Unsupported`] on platforms other than Linux.
pub fn local_addrs() -> Result<Vec<IpAddr>, LocalAddrsError> {
    imp::local_addrs()
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    pub(super) fn local_addrs() -> Result<Vec<IpAddr>, LocalAddrsError> {
        Err(LocalAddrsError::Unsupported)
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use socket2::{Domain, Protocol, Socket, Type};
    use std::io::Read;
    use std::time::Duration;

    const SEQ: u32 = 0x6d63_6f64; // "mcod"

    pub(super) fn local_addrs() -> Result<Vec<IpAddr>, LocalAddrsError> {
        let io_err = |step| move |source| LocalAddrsError::Io { step, source };
        let sock = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(libc::NETLINK_ROUTE)),
        )
        .map_err(io_err("open"))?;
        // The kernel always answers a dump; the timeout only bounds a pathological wait.
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io_err("configure"))?;
        // Unconnected, unaddressed: the datagram goes to the kernel (port id 0).
        sock.send(&super::dump_request(SEQ))
            .map_err(io_err("send a request on"))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        loop {
            let n = (&sock).read(&mut buf).map_err(io_err("receive from"))?;
            if n == 0 {
                return Err(LocalAddrsError::Malformed {
                    offset: 0,
                    what: "empty datagram before NLMSG_DONE",
                });
            }
            if super::parse_dump(&buf[..n], SEQ, &mut out)? {
                break;
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

// The wire format (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h), native byte order.
const NLMSG_HDRLEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const RTA_HDRLEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// `nlmsghdr` + `ifaddrmsg` asking for every address of every family.
fn dump_request(seq: u32) -> [u8; NLMSG_HDRLEN + IFADDRMSG_LEN] {
    let mut req = [0u8; NLMSG_HDRLEN + IFADDRMSG_LEN];
    req[0..4].copy_from_slice(&((NLMSG_HDRLEN + IFADDRMSG_LEN) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETADDR.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    // Port id 0 and an all-zero ifaddrmsg (AF_UNSPEC: every family).
    req
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    buf.get(at..at + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    buf.get(at..at + 4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parse one datagram of the dump answer into `out`; `Ok(true)` once `NLMSG_DONE` is seen. Messages of
/// another sequence number are skipped.
pub(crate) fn parse_dump(buf: &[u8], seq: u32, out: &mut Vec<IpAddr>) -> Result<bool, LocalAddrsError> {
    let malformed = |offset, what| LocalAddrsError::Malformed { offset, what };
    let mut off = 0;
    while off < buf.len() {
        let (Some(len), Some(kind), Some(msg_seq)) = (u32_at(buf, off), u16_at(buf, off + 4), u32_at(buf, off + 8))
        else {
            return Err(malformed(off, "truncated message header"));
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > buf.len() - off {
            return Err(malformed(off, "message length out of bounds"));
        }
        let body = &buf[off + NLMSG_HDRLEN..off + len];
        if msg_seq == seq {
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = u32_at(body, 0).ok_or_else(|| malformed(off, "truncated error message"))? as i32;
                    if errno != 0 {
                        return Err(LocalAddrsError::Kernel {
                            source: io::Error::from_raw_os_error(errno.checked_neg().unwrap_or(i32::MAX)),
                        });
                    }
                }
                RTM_NEWADDR => {
                    if let Some(ip) = parse_ifaddr(body).map_err(|what| malformed(off, what))? {
                        out.push(ip);
                    }
                }
                _ => {}
            }
        }
        off = off.saturating_add(align4(len));
    }
    Ok(false)
}

/// The address in one `RTM_NEWADDR` body: `IFA_LOCAL` if present (the local end of a point-to-point
/// link), else `IFA_ADDRESS`. `None` for families other than IPv4 and IPv6.
fn parse_ifaddr(body: &[u8]) -> Result<Option<IpAddr>, &'static str> {
    let family = *body.first().ok_or("truncated ifaddrmsg")?;
    if body.len() < IFADDRMSG_LEN {
        return Err("truncated ifaddrmsg");
    }
    let width = match family {
        AF_INET => 4,
        AF_INET6 => 16,
        _ => return Ok(None),
    };
    let (mut address, mut local) = (None, None);
    let mut off = IFADDRMSG_LEN;
    while off + RTA_HDRLEN <= body.len() {
        let (Some(rta_len), Some(rta_type)) = (u16_at(body, off), u16_at(body, off + 2)) else {
            return Err("truncated attribute header");
        };
        let rta_len = usize::from(rta_len);
        if rta_len < RTA_HDRLEN || rta_len > body.len() - off {
            return Err("attribute length out of bounds");
        }
        let payload = &body[off + RTA_HDRLEN..off + rta_len];
        if rta_type == IFA_ADDRESS || rta_type == IFA_LOCAL {
            let ip = match (family, payload) {
                (AF_INET, &[a, b, c, d]) => IpAddr::from([a, b, c, d]),
                (AF_INET6, p) if p.len() == 16 => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(p);
                    IpAddr::from(octets)
                }
                _ => {
                    return Err(if width == 4 {
                        "IPv4 address attribute is not 4 bytes"
                    } else {
                        "IPv6 address attribute is not 16 bytes"
                    });
                }
            };
            if rta_type == IFA_LOCAL {
                local = Some(ip);
            } else {
                address = Some(ip);
            }
        }
        off += align4(rta_len);
    }
    Ok(local.or(address))
}

/// Entry points for `cargo fuzz` (compiled only with `--cfg fuzzing`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzz_logic {
    /// Feed one datagram to the dump parser; it must never panic.
    pub fn netlink_dump(data: &[u8]) {
        let mut out = Vec::new();
        let _ = super::parse_dump(data, 0, &mut out);
        let _ = super::parse_dump(data, super::u32_at(data, 8).unwrap_or(0), &mut out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((RTA_HDRLEN + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(payload);
        a.resize(align4(a.len()), 0);
        a
    }

    fn message(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize(align4(m.len()), 0);
        m
    }

    fn newaddr(ip: IpAddr, peer: Option<IpAddr>) -> Vec<u8> {
        let (family, octets) = match ip {
            IpAddr::V4(v4) => (AF_INET, v4.octets().to_vec()),
            IpAddr::V6(v6) => (AF_INET6, v6.octets().to_vec()),
        };
        let mut body = vec![family, 24, 0, 0, 1, 0, 0, 0];
        match peer {
            // Point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours.
            Some(IpAddr::V4(p)) => body.extend(attr(IFA_ADDRESS, &p.octets())),
            Some(IpAddr::V6(p)) => body.extend(attr(IFA_ADDRESS, &p.octets())),
            None => body.extend(attr(IFA_ADDRESS, &octets)),
        }
        if peer.is_some() {
            body.extend(attr(IFA_LOCAL, &octets));
        }
        body.extend(attr(3, b"eth0\0")); // IFA_LABEL, ignored
        body
    }

    #[test]
    fn request_shape() {
        let req = dump_request(7);
        assert_eq!(u32_at(&req, 0), Some(24));
        assert_eq!(u16_at(&req, 4), Some(RTM_GETADDR));
        assert_eq!(u16_at(&req, 6), Some(0x301));
        assert_eq!(u32_at(&req, 8), Some(7));
    }

    #[test]
    fn parses_a_dump() {
        let mut dgram = message(RTM_NEWADDR, 9, &newaddr("10.244.0.6".parse().unwrap(), None));
        dgram.extend(message(RTM_NEWADDR, 9, &newaddr("fd00::6".parse().unwrap(), None)));
        dgram.extend(message(
            RTM_NEWADDR,
            9,
            &newaddr("10.0.0.1".parse().unwrap(), Some("10.0.0.2".parse().unwrap())),
        ));
        dgram.extend(message(RTM_NEWADDR, 1, &newaddr("192.0.2.1".parse().unwrap(), None))); // other seq
        dgram.extend(message(RTM_NEWADDR, 9, &[17, 0, 0, 0, 0, 0, 0, 0])); // AF_PACKET: skipped
        let mut out = Vec::new();
        assert!(!parse_dump(&dgram, 9, &mut out).unwrap());
        assert!(parse_dump(&message(NLMSG_DONE, 9, &[0; 4]), 9, &mut out).unwrap());
        let want: Vec<IpAddr> = ["10.244.0.6", "fd00::6", "10.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(out, want);
    }

    #[test]
    fn kernel_errors_and_acks() {
        let mut out = Vec::new();
        let eperm = -1i32; // -EPERM, as the kernel writes it
        let err = parse_dump(&message(NLMSG_ERROR, 3, &eperm.to_ne_bytes()), 3, &mut out).unwrap_err();
        match err {
            LocalAddrsError::Kernel { source } => assert_eq!(source.raw_os_error(), Some(1)),
            other => panic!("{other}"),
        }
        assert!(!parse_dump(&message(NLMSG_ERROR, 3, &0i32.to_ne_bytes()), 3, &mut out).unwrap());
        let err = parse_dump(&message(NLMSG_ERROR, 3, &[]), 3, &mut out).unwrap_err();
        assert!(err.to_string().ends_with("truncated error message"), "{err}");
    }

    /// A bare message header claiming `len` bytes.
    fn header(len: u32) -> Vec<u8> {
        let mut h = message(RTM_NEWADDR, 9, &[]);
        h[0..4].copy_from_slice(&len.to_ne_bytes());
        h
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        let cases: &[(Vec<u8>, &str)] = &[
            (vec![1, 2, 3], "truncated message header"),
            (header(4), "message length out of bounds"),
            (header(200), "message length out of bounds"),
            (
                [message(NLMSG_DONE, 1, &[]), vec![0; 5]].concat(),
                "truncated message header",
            ),
        ];
        for (bytes, what) in cases {
            let err = parse_dump(bytes, 9, &mut out).unwrap_err();
            assert!(err.to_string().ends_with(what), "{err} vs {what}");
        }
        let short_ip = message(
            RTM_NEWADDR,
            9,
            &[&[AF_INET, 0, 0, 0, 0, 0, 0, 0][..], &attr(IFA_ADDRESS, &[1, 2])].concat(),
        );
        let err = parse_dump(&short_ip, 9, &mut out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed netlink answer at byte 0: IPv4 address attribute is not 4 bytes"
        );
        let bad_attr = message(RTM_NEWADDR, 9, &[AF_INET6, 0, 0, 0, 0, 0, 0, 0, 99, 0, 1, 0]);
        let err = parse_dump(&bad_attr, 9, &mut out).unwrap_err();
        assert!(err.to_string().ends_with("attribute length out of bounds"), "{err}");
        assert!(out.is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_host_has_loopback() {
        let addrs = local_addrs().unwrap();
        assert!(addrs.contains(&"127.0.0.1".parse().unwrap()), "{addrs:?}");
        assert!(addrs.windows(2).all(|w| w[0] < w[1]), "sorted and unique: {addrs:?}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), seq in any::<u32>()) {
            let mut out = Vec::new();
            let _ = parse_dump(&bytes, seq, &mut out);
        }

        #[test]
        fn encoded_addresses_round_trip(ips in proptest::collection::vec(
            prop_oneof![any::<[u8; 4]>().prop_map(IpAddr::from), any::<[u8; 16]>().prop_map(IpAddr::from)], 0..8)
        ) {
            let dgram: Vec<u8> = ips.iter().flat_map(|ip| message(RTM_NEWADDR, 5, &newaddr(*ip, None))).collect();
            let mut out = Vec::new();
            prop_assert!(!parse_dump(&dgram, 5, &mut out).unwrap());
            prop_assert_eq!(out, ips);
        }
    }
}

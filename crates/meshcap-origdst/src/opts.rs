//! The Linux-only socket options, each one socket2 call, with the non-Linux stubs in one place.

use crate::error::SockOpt;
use socket2::SockRef;
use std::io;

/// `IP_TRANSPARENT` for an IPv4 socket, `IPV6_TRANSPARENT` for an IPv6 one.
pub(crate) const fn transparent_opt(v6: bool) -> SockOpt {
    if v6 {
        SockOpt::Ipv6Transparent
    } else {
        SockOpt::IpTransparent
    }
}

/// `IP_FREEBIND` for an IPv4 socket, `IPV6_FREEBIND` for an IPv6 one.
pub(crate) const fn freebind_opt(v6: bool) -> SockOpt {
    if v6 { SockOpt::Ipv6Freebind } else { SockOpt::IpFreebind }
}

#[cfg(target_os = "linux")]
pub(crate) fn set_transparent(sock: &SockRef<'_>, v6: bool) -> io::Result<()> {
    if v6 {
        sock.set_ip_transparent_v6(true)
    } else {
        sock.set_ip_transparent_v4(true)
    }
}

#[cfg(target_os = "linux")]
pub(crate) fn set_freebind(sock: &SockRef<'_>, v6: bool) -> io::Result<()> {
    if v6 {
        sock.set_freebind_v6(true)
    } else {
        sock.set_freebind_v4(true)
    }
}

#[cfg(target_os = "linux")]
pub(crate) fn set_mark(sock: &SockRef<'_>, mark: u32) -> io::Result<()> {
    sock.set_mark(mark)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn set_transparent(_: &SockRef<'_>, _: bool) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn set_freebind(_: &SockRef<'_>, _: bool) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn set_mark(_: &SockRef<'_>, _: u32) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Whether this platform has the transparent-proxy options at all.
pub(crate) const SUPPORTED: bool = cfg!(target_os = "linux");

/// `SO_REUSEPORT`, where the platform has it.
#[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
pub(crate) fn set_reuse_port(sock: &SockRef<'_>) -> io::Result<()> {
    sock.set_reuse_port(true)
}

#[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin")))))]
pub(crate) fn set_reuse_port(_: &SockRef<'_>) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

//! Fail-fast capability probes for start-up: try the privileged option on a scratch socket, so a missing
//! `CAP_NET_ADMIN` is one clear error before the first connection instead of a failure per connection.

use crate::error::{SockOpt, SocketError};
use crate::opts;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Check that this process can make sockets transparent (`IP_TRANSPARENT`, and `IPV6_TRANSPARENT` when the
/// host has IPv6), as a TPROXY listener or a source-spoofing upstream socket needs.
///
/// ```
/// match meshcap_origdst::probe_transparent() {
///     Ok(()) => println!("TPROXY capture possible"),
///     Err(e) => println!("falling back to REDIRECT capture: {e}"),
/// }
/// ```
///
/// # Errors
///
/// [`SocketError::SetOption`] on an unbound socket; its message names `CAP_NET_ADMIN` when the kernel said
/// `EPERM`. [`SocketError::Unsupported`] on platforms other than Linux.
pub fn probe_transparent() -> Result<(), SocketError> {
    probe(opts::set_transparent, opts::transparent_opt)
}

/// Check that this process can set `SO_MARK` to `mark` (what the capture rules use to skip the proxy's own
/// traffic).
///
/// # Errors
///
/// As [`probe_transparent`].
pub fn probe_mark(mark: u32) -> Result<(), SocketError> {
    probe(|sock, _| opts::set_mark(sock, mark), |_| SockOpt::Mark(mark))
}

fn probe(
    set: impl Fn(&SockRef<'_>, bool) -> std::io::Result<()>,
    option: impl Fn(bool) -> SockOpt,
) -> Result<(), SocketError> {
    if !opts::SUPPORTED {
        return Err(SocketError::Unsupported { option: option(false) });
    }
    for (domain, v6) in [(Domain::IPV4, false), (Domain::IPV6, true)] {
        let sock = match Socket::new(domain, Type::STREAM, Some(Protocol::TCP)) {
            Ok(sock) => sock,
            // A host without IPv6 has nothing to probe there.
            Err(_) if v6 => continue,
            Err(source) => {
                return Err(SocketError::Create {
                    addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                    source,
                });
            }
        };
        set(&SockRef::from(&sock), v6).map_err(|source| SocketError::SetOption {
            option: option(v6),
            addr: None,
            source,
        })?;
    }
    Ok(())
}

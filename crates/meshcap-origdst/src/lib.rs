//! # meshcap-origdst
//!
//! The original destination of a TCP connection captured by a transparent proxy, and the socket plumbing
//! around it: transparent listeners, a loop guard, upstream socket layers and capability probes.
//!
//! After iptables sends an application's connection to the sidecar (Kuma: outbound to 15001, inbound to
//! 15006), the sidecar knows where the connection was going only by asking the kernel. Where to ask depends
//! on how it was captured:
//!
//! | capture | where the destination is | here |
//! | --- | --- | --- |
//! | `nat` `REDIRECT` / `DNAT` | conntrack: `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST` (IPv6) | [`redirect`], [`Mode::Redirect`] |
//! | `mangle` `TPROXY` | the accepted socket's local address; the listener must be transparent | [`tproxy`], [`Mode::Tproxy`], [`ListenerBuilder`] |
//!
//! The classic bugs are handled once, here:
//!
//! * **Dual stack.** An IPv4 client of a `[::]` listener appears as `::ffff:a.b.c.d`; its conntrack entry is
//!   IPv4. The option is chosen from the *canonical* peer address ([`canonical`]), never from the socket's
//!   domain or the raw local address.
//! * **Not redirected is not an error.** No conntrack entry (`ENOENT`), or a connection addressed to the
//!   listener itself, is [`Lookup::NotRedirected`]; the caller decides whether to refuse it or use
//!   [`Lookup::or_local`]. Real failures are [`LookupError`]s carrying the call, the errno and both socket
//!   addresses; `ENOPROTOOPT` is [`LookupError::Unsupported`].
//! * **TPROXY never trusts conntrack** (it may hold a pre-DNAT address): [`tproxy`] uses `getsockname`.
//! * **Loops.** A connection made directly to a proxy port has that port as its destination: [`LoopGuard`]
//!   refuses it.
//! * **No panics** on anything the kernel returns: family and length are checked.
//!
//! ## Example
//!
//! A connection nobody redirected (a plain loopback connect) is reported as such, with the listener's own
//! address as the explicit fallback:
//!
//! ```
//! use meshcap_origdst::{Accepted, Lookup, LoopGuard, redirect};
//! use std::net::{TcpListener, TcpStream};
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! let _client = TcpStream::connect(addr)?;
//! let (stream, peer) = listener.accept()?;
//!
//! match redirect(&Accepted::new(&stream, peer)) {
//!     Ok(Lookup::Redirected(dst)) => unreachable!("nothing redirects this connection, yet it came from {dst}"),
//!     Ok(lookup @ Lookup::NotRedirected { local, reason }) => {
//!         println!("{reason}");
//!         assert_eq!(local, addr);
//!         // Treating it as addressed to the listener itself is a loop, and the guard says so.
//!         let guard = LoopGuard::new([addr]);
//!         assert!(guard.check(lookup.or_local()).is_err());
//!     }
//!     // A kernel without conntrack support for IPv4 answers ENOPROTOOPT.
//!     Err(e) if e.is_unsupported() => println!("{e}"),
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! In a proxy, hold an [`OrigDstSource`] (the seam: [`Kernel`] in production, [`Mapped`], [`Fixed`] or
//! [`from_fn`] in tests without root) and call it once per accepted connection; it works the same for
//! `std::net::TcpStream` and `tokio::net::TcpStream`, borrowed:
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn serve(listener: tokio::net::TcpListener) -> Result<(), Box<dyn std::error::Error>> {
//! use meshcap_origdst::{Accepted, Kernel, LoopGuard, Mode, OrigDstSource, upstream::{Source, Upstream}};
//!
//! let source = Kernel::new(Mode::Redirect);
//! let guard = LoopGuard::new([listener.local_addr()?]).with_local_addrs(meshcap_origdst::local_addrs()?);
//! let upstream = Upstream::new().mark(0x539);
//! loop {
//!     let (stream, peer) = listener.accept().await?;
//!     let dst = source.original_dst(&Accepted::new(&stream, peer))?.or_local();
//!     if let Err(e) = guard.check(dst) {
//!         eprintln!("refused: {e}");
//!         continue;
//!     }
//!     let upstream = upstream.connect(dst).await?;
//!     // … copy bytes both ways …
//! #   drop((stream, upstream));
//! }
//! # }
//! ```
//!
//! ## Upstream layers and probes
//!
//! [`upstream`] holds one function per socket layer — [`bind_source`](upstream::bind_source) (Kuma's inbound
//! hop from `127.0.0.6` / `::6`), [`set_mark`](upstream::set_mark), [`set_freebind`](upstream::set_freebind),
//! [`set_transparent`](upstream::set_transparent) — each usable alone, plus the [`Upstream`](upstream::Upstream)
//! builder. [`probe_transparent`] and [`probe_mark`] let a binary fail at start-up with an error naming
//! `CAP_NET_ADMIN` instead of failing per connection. [`local_addrs`] lists the namespace's addresses for
//! the loop guard, only when called.
//!
//! ## Features
//!
//! * `tokio`: `upstream::Upstream::connect`, `upstream::connect` and `Listener::into_tokio`. Lookups need
//!   no feature: tokio streams are borrowed like std ones.
//! * `serde`: `Serialize`/`Deserialize` for [`OriginalDst`], [`ClientAddr`], [`ListenAddr`] (as
//!   `"IP:PORT"` strings, canonicalised on the way in), [`Mode`] and [`Transparent`].
//!
//! ## Platforms
//!
//! Linux is the platform. Elsewhere the crate compiles; the conntrack lookup and the transparent, freebind
//! and mark options return `Unsupported` errors, and [`tproxy`] (plain `getsockname`) still works.
//! No `unsafe`: every call goes through socket2 (which has all of them); `libc` supplies constants only.
//!
//! ## Layout
//!
//! * `addr.rs`: the role newtypes [`OriginalDst`], [`ClientAddr`], [`ListenAddr`] and [`canonical`].
//! * `lookup.rs`: [`Accepted`], the outcome [`Lookup`], [`redirect`], [`tproxy`], [`Kernel`], [`Mode`].
//! * `source.rs`: the seam [`OrigDstSource`] and its test implementations.
//! * `guard.rs`: [`LoopGuard`] and [`Loop`].
//! * `listen.rs`: [`ListenerBuilder`], [`Listener`], [`Transparent`].
//! * `upstream.rs`: the upstream socket layers.
//! * `probe.rs`: [`probe_transparent`], [`probe_mark`].
//! * `netlink.rs`: [`local_addrs`] (an `RTM_GETADDR` dump).
//! * `error.rs`: [`LookupError`], [`SocketError`]; `opts.rs` and `sys.rs`: the Linux-only calls and
//!   errno numbers, with their non-Linux stand-ins.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod addr;
mod error;
mod guard;
mod listen;
mod lookup;
mod netlink;
mod opts;
mod probe;
mod source;
mod sys;
pub mod upstream;

pub use addr::{ClientAddr, ListenAddr, OriginalDst, ParseAddrError, canonical};
pub use error::{Call, LookupError, SockOpt, SocketAddrs, SocketError};
pub use guard::{Loop, LoopGuard};
pub use listen::{DEFAULT_BACKLOG, Listener, ListenerBuilder, Transparent};
pub use lookup::{Accepted, Kernel, Lookup, Mode, NotRedirected, ParseSettingError, redirect, tproxy};
#[cfg(fuzzing)]
pub use netlink::fuzz_logic;
pub use netlink::{LocalAddrsError, local_addrs};
pub use probe::{probe_mark, probe_transparent};
pub use source::{Fixed, FromFn, Mapped, OrigDstSource, from_fn};

/// The socket2 version this crate's API uses ([`Accepted::from_sock_ref`], the upstream layers).
pub use socket2;

//! The `tokio` feature on loopback (no privileges): a builder listener as a tokio listener, the upstream
//! builder connecting through tokio, and lookups borrowing tokio streams.

use meshcap_origdst::upstream::{INBOUND_SOURCE_V4, Source, Upstream};
use meshcap_origdst::{Accepted, Kernel, ListenerBuilder, Lookup, Mode, OrigDstSource, SocketError};
use std::net::{IpAddr, SocketAddr};

#[tokio::test(flavor = "current_thread")]
async fn listener_upstream_and_lookup_through_tokio() {
    let listener = ListenerBuilder::new("127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .bind()
        .unwrap()
        .into_tokio()
        .unwrap();
    let dst = listener.local_addr().unwrap().into();
    let upstream = Upstream::new().source(Source::InboundHop).connect(dst).await.unwrap();
    assert_eq!(upstream.local_addr().unwrap().ip(), IpAddr::V4(INBOUND_SOURCE_V4));
    let (stream, peer) = listener.accept().await.unwrap();
    assert_eq!(peer, upstream.local_addr().unwrap());
    let lookup = Kernel::new(Mode::Tproxy)
        .original_dst(&Accepted::new(&stream, peer))
        .unwrap();
    assert_eq!(lookup, Lookup::Redirected(dst));
}

#[tokio::test(flavor = "current_thread")]
async fn connect_errors_name_the_destination() {
    // Bind then drop: nothing listens on that port any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = Upstream::new().connect(addr.into()).await.unwrap_err();
    assert!(matches!(err, SocketError::Connect { .. }), "{err}");
    assert_eq!(err.to_string(), format!("cannot connect to {addr}"));
    assert_eq!(err.errno(), Some(libc::ECONNREFUSED));
}

//! The per-connection cost of the original-destination lookup on real sockets.
//!
//! As root (with iptables), in a throwaway namespace with a real `nat OUTPUT REDIRECT` rule, so the
//! `redirected` case is a genuine conntrack answer. Otherwise on plain loopback, where only the
//! not-redirected (`ENOENT`) path exists. The first line of output says which; group names carry it too.
//!
//! `cargo bench -p meshcap-origdst --bench lookup`

use criterion::Criterion;
use meshcap_origdst::{
    Accepted, Kernel, ListenerBuilder, Lookup, LoopGuard, Mapped, Mode, OrigDstSource, OriginalDst, local_addrs,
};
use meshcap_testns::{NetNs, euid, have_program};
use std::hint::black_box;
use std::net::{SocketAddr, TcpListener, TcpStream};

/// One accepted connection and the client end that keeps it open.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    _client: TcpStream,
}

fn accept(listener: &TcpListener, dst: SocketAddr) -> Conn {
    let client = TcpStream::connect(dst).expect("connect");
    let (stream, peer) = listener.accept().expect("accept");
    Conn {
        stream,
        peer,
        _client: client,
    }
}

fn bench(c: &mut Criterion, setup: &str, redirected: Option<Conn>, plain: Conn) {
    let mut group = c.benchmark_group(format!("origdst[{setup}]"));
    if let Some(conn) = &redirected {
        let accepted = Accepted::new(&conn.stream, conn.peer);
        let lookup = Kernel::new(Mode::Redirect).original_dst(&accepted).expect("lookup");
        assert!(
            lookup.is_redirected(),
            "the bench connection must be redirected: {lookup}"
        );
        group.bench_function("redirect: redirected (getsockopt + getsockname)", |b| {
            b.iter(|| meshcap_origdst::redirect(black_box(&accepted)))
        });
    }
    let accepted = Accepted::new(&plain.stream, plain.peer);
    let lookup = meshcap_origdst::redirect(&accepted);
    assert!(
        matches!(lookup, Ok(Lookup::NotRedirected { .. })) || matches!(&lookup, Err(e) if e.is_unsupported()),
        "unexpected {lookup:?}"
    );
    group.bench_function("redirect: not redirected (ENOENT + getsockname)", |b| {
        b.iter(|| meshcap_origdst::redirect(black_box(&accepted)))
    });
    group.bench_function("tproxy (getsockname)", |b| {
        b.iter(|| meshcap_origdst::tproxy(black_box(&accepted)))
    });
    let port = plain.stream.local_addr().expect("local").port();
    let mapped = Mapped::new().with_listen_port(port, "10.96.0.10:80".parse().expect("addr"));
    group.bench_function("Mapped by port (test seam)", |b| {
        b.iter(|| mapped.original_dst(black_box(&accepted)))
    });
    group.bench_function("Accepted::query (getpeername)", |b| {
        b.iter(|| Accepted::query(black_box(&plain.stream)).map(|a| a.peer()))
    });
    let guard = LoopGuard::new([
        "0.0.0.0:15001".parse::<SocketAddr>().expect("addr"),
        "[::]:15006".parse().expect("addr"),
    ])
    .with_local_addrs(local_addrs().unwrap_or_default());
    let dst: OriginalDst = "10.96.0.10:80".parse().expect("addr");
    group.bench_function("LoopGuard::check", |b| b.iter(|| guard.check(black_box(dst))));
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let privileged = euid() == 0 && have_program("ip") && have_program("iptables");
    if privileged {
        let ns = NetNs::new("odbench").expect("namespace");
        ns.sh("ip route add local 10.96.0.0/16 dev lo && iptables -t nat -A OUTPUT -p tcp -d 10.96.0.10 --dport 80 -j REDIRECT --to-ports 15001")
            .expect("rules");
        println!(
            "meshcap-origdst lookup bench: namespace {} with a real nat OUTPUT REDIRECT rule (root)",
            ns.name()
        );
        // Sockets keep the namespace they were made in: build them inside, measure from here.
        let (redirected, plain) = ns
            .enter(|| {
                let outbound = ListenerBuilder::new("0.0.0.0:15001".parse::<SocketAddr>().expect("addr"))
                    .bind()
                    .expect("bind")
                    .into_std();
                let redirected = accept(&outbound, "10.96.0.10:80".parse().expect("addr"));
                let plain = accept(&outbound, "127.0.0.1:15001".parse().expect("addr"));
                (redirected, plain)
            })
            .expect("enter namespace");
        bench(&mut c, "netns+REDIRECT", Some(redirected), plain);
    } else {
        println!(
            "meshcap-origdst lookup bench: plain loopback (not root: no REDIRECT rule, only the not-redirected path)"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let plain = accept(&listener, addr);
        bench(&mut c, "loopback", None, plain);
    }
    c.final_summary();
}

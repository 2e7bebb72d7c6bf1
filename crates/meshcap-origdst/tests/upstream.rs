//! The upstream socket layers doing their job against real rules: `SO_MARK` skipping capture, Kuma's inbound
//! hop from 127.0.0.6 / ::6 skipping capture, original-source spoofing with a transparent socket, and the
//! capability probes with and without `CAP_NET_ADMIN`. Needs root (skips loudly otherwise).

use meshcap_origdst::upstream::{self, Source, Upstream};
use meshcap_origdst::{OriginalDst, SockOpt, SocketError, Transparent, probe_mark, probe_transparent};
use meshcap_testns::{NetNs, PodPair, have_program, privileged};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn dst(s: &str) -> OriginalDst {
    s.parse().unwrap()
}

fn sh(ns: &NetNs, script: &str) {
    if let Err(e) = ns.sh(script) {
        panic!("in {}: {e}", ns.name());
    }
}

fn inside<R: Send + 'static>(ns: &NetNs, f: impl FnOnce() -> io::Result<R> + Send + 'static) -> R {
    match ns.enter(f) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("in {}: {e}", ns.name()),
        Err(e) => panic!("cannot enter {}: {e}", ns.name()),
    }
}

/// A non-blocking listener bound inside `ns`: once a connect has returned, the connection sits in exactly
/// one accept queue, so "which listener got it" needs no waiting.
fn listener(ns: &NetNs, addr: &str) -> TcpListener {
    let addr = sa(addr);
    inside(ns, move || {
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
}

/// The peer of the one connection waiting on `l`, or `None` if nothing is queued.
fn queued(l: &TcpListener) -> Option<SocketAddr> {
    match l.accept() {
        Ok((_, peer)) => Some(peer),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("accept: {e}"),
    }
}

/// A socket made inside `ns` with the given layers, not connected.
fn socket_in(ns: &NetNs, layers: Upstream, to: &str) -> Result<socket2::Socket, SocketError> {
    let to = dst(to);
    inside(ns, move || Ok(layers.socket(to)))
}

/// Connect from inside `ns` through the given layers; a layer error is returned, a connect error fails
/// the test (every connect here is expected to succeed once the layers are set).
fn connect_with(ns: &NetNs, layers: Upstream, to: &str) -> Result<TcpStream, SocketError> {
    let sock = socket_in(ns, layers, to)?;
    let addr = dst(to).as_socket_addr();
    sock.connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    Ok(TcpStream::from(sock))
}

#[test]
fn so_mark_skips_the_capture_rule() {
    if !privileged("so_mark_skips_the_capture_rule") {
        return;
    }
    let ns = NetNs::new("od").unwrap();
    sh(
        &ns,
        "iptables -t nat -A OUTPUT -p tcp -m mark --mark 0x539/0xfff -j RETURN && \
         iptables -t nat -A OUTPUT -p tcp --dport 8080 -j REDIRECT --to-ports 15001",
    );
    let app = listener(&ns, "127.0.0.1:8080");
    let proxy = listener(&ns, "0.0.0.0:15001");

    // Unmarked: captured.
    let plain = connect_with(&ns, Upstream::new(), "127.0.0.1:8080").unwrap();
    assert_eq!(queued(&proxy), Some(plain.local_addr().unwrap()));
    assert_eq!(queued(&app), None);

    // Marked as the proxy's own: straight through.
    let marked = connect_with(&ns, Upstream::new().mark(0x539), "127.0.0.1:8080").unwrap();
    assert_eq!(socket2::SockRef::from(&marked).mark().unwrap(), 0x539);
    assert_eq!(queued(&app), Some(marked.local_addr().unwrap()));
    assert_eq!(queued(&proxy), None);

    // The layer alone, on a socket made elsewhere.
    let sock = upstream::tcp_socket(dst("127.0.0.1:8080")).unwrap();
    upstream::set_mark(&sock, 0x1539).unwrap();
    assert_eq!(sock.mark().unwrap(), 0x1539);
}

#[test]
fn kuma_inbound_hop_skips_capture_from_127_0_0_6_and_6() {
    if !privileged("kuma_inbound_hop_skips_capture_from_127_0_0_6_and_6") {
        return;
    }
    let pair = PodPair::new("od").unwrap();
    let pod = &pair.pod;
    // Kuma's OUTPUT exemptions for the hop, then capture of everything else.
    sh(
        pod,
        "iptables -t nat -A OUTPUT -s 127.0.0.6/32 -o lo -j RETURN && \
         iptables -t nat -A OUTPUT -p tcp -j REDIRECT --to-ports 15001 && \
         ip6tables -t nat -A OUTPUT -s ::6/128 -o lo -j RETURN && \
         ip6tables -t nat -A OUTPUT -p tcp -j REDIRECT --to-ports 15001",
    );
    let app = listener(pod, "[::]:5000");
    let proxy = listener(pod, "[::]:15001");
    let hop = Upstream::new().source(Source::InboundHop);

    // IPv4: 127.0.0.6 is always on lo.
    let s = connect_with(pod, hop, "10.244.0.6:5000").unwrap();
    assert_eq!(s.local_addr().unwrap().ip().to_string(), "127.0.0.6");
    let peer = queued(&app).map(meshcap_origdst::canonical).unwrap();
    assert_eq!(peer, s.local_addr().unwrap());
    assert_eq!(queued(&proxy), None);
    // Without the hop source the same connect is captured.
    let _captured = connect_with(pod, Upstream::new(), "10.244.0.6:5000").unwrap();
    assert!(queued(&proxy).is_some());
    assert_eq!(queued(&app), None);

    // IPv6: ::6 is not on lo until someone adds it; the error says so.
    let err = connect_with(pod, hop, "[fd00::6]:5000").unwrap_err();
    assert!(matches!(err, SocketError::Bind { .. }), "{err}");
    assert!(err.to_string().contains("ip -6 addr add ::6/128 dev lo"), "{err}");
    // IPV6_FREEBIND lets the bind through (replies to an unassigned ::6 would still go nowhere).
    let sock = socket_in(pod, hop.freebind(true), "[fd00::6]:5000").unwrap();
    assert!(sock.freebind_v6().unwrap());
    assert_eq!(sock.local_addr().unwrap().as_socket().unwrap().ip().to_string(), "::6");
    sh(pod, "ip -6 addr add ::6/128 dev lo");
    let s = connect_with(pod, hop, "[fd00::6]:5000").unwrap();
    assert_eq!(s.local_addr().unwrap().ip().to_string(), "::6");
    assert_eq!(queued(&app), Some(s.local_addr().unwrap()));
    assert_eq!(queued(&proxy), None);
}

#[test]
fn transparent_upstream_spoofs_the_client_address() {
    if !privileged("transparent_upstream_spoofs_the_client_address") {
        return;
    }
    let pair = PodPair::new("od").unwrap();
    // Replies to the spoofed address come back to the pod and are delivered to the transparent socket.
    sh(&pair.peer, "ip route add 10.244.0.99/32 via 10.244.0.6 dev eth0");
    sh(
        &pair.pod,
        "iptables -t mangle -A PREROUTING -p tcp -m socket --transparent -j MARK --set-mark 0x1/0x1 && \
         ip rule add fwmark 0x1/0x1 lookup 100 && \
         ip route add local 0.0.0.0/0 dev lo table 100",
    );
    let server = listener(&pair.peer, "10.244.0.5:7000");
    let spoofed = sa("10.244.0.99:0");

    // Not transparent: the kernel refuses the foreign source.
    let err = connect_with(
        &pair.pod,
        Upstream::new().source(Source::Addr(spoofed)),
        "10.244.0.5:7000",
    )
    .unwrap_err();
    assert!(matches!(err, SocketError::Bind { .. }), "{err}");

    let layers = Upstream::new()
        .transparent(Transparent::Required)
        .source(Source::Addr(spoofed));
    let s = connect_with(&pair.pod, layers, "10.244.0.5:7000").unwrap();
    assert!(socket2::SockRef::from(&s).ip_transparent_v4().unwrap());
    let local = s.local_addr().unwrap();
    assert_eq!(local.ip().to_string(), "10.244.0.99");
    assert_eq!(queued(&server), Some(local));
}

/// Run this test binary's `child_probes_without_cap_net_admin` test with `CAP_NET_ADMIN` and `CAP_NET_RAW`
/// removed from the bounding set (root loses them at exec).
#[test]
fn probes_pass_as_root_and_name_cap_net_admin_without_it() {
    if !privileged("probes_pass_as_root_and_name_cap_net_admin_without_it") {
        return;
    }
    probe_transparent().unwrap();
    probe_mark(0x539).unwrap();
    assert!(
        have_program("setpriv"),
        "setpriv (util-linux) is needed to drop capabilities"
    );
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-net_admin,-net_raw", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_probes_without_cap_net_admin",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MESHCAP_OD_PROBE_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "the child test did not run:\n{stdout}");
}

#[test]
fn child_probes_without_cap_net_admin() {
    if std::env::var_os("MESHCAP_OD_PROBE_CHILD").is_none() {
        return; // only meaningful under the parent test's setpriv
    }
    let err = probe_transparent().unwrap_err();
    assert!(
        matches!(
            err,
            SocketError::SetOption {
                option: SockOpt::IpTransparent,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_permission_denied());
    assert_eq!(
        err.to_string(),
        "cannot set IP_TRANSPARENT on an unbound socket: the process lacks CAP_NET_ADMIN"
    );
    let err = probe_mark(0x539).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot set SO_MARK=0x539 on an unbound socket: the process lacks CAP_NET_ADMIN"
    );
    // Best effort degrades instead of failing.
    let l = meshcap_origdst::ListenerBuilder::new(sa("127.0.0.1:0"))
        .transparent(Transparent::BestEffort)
        .bind()
        .unwrap();
    assert!(!l.is_transparent());
    assert_eq!(
        l.transparent_error().and_then(io::Error::raw_os_error),
        Some(libc::EPERM)
    );
    let err = meshcap_origdst::ListenerBuilder::new(sa("127.0.0.1:0"))
        .transparent(Transparent::Required)
        .bind()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot set IP_TRANSPARENT on the socket for 127.0.0.1:0: the process lacks CAP_NET_ADMIN"),
        "{err}"
    );
}

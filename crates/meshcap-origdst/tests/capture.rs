//! The lookup against the real kernel: throwaway namespaces (meshcap-testns, tag "od") with real iptables
//! REDIRECT and TPROXY rules, traffic across the pod pair's veth or inside the pod. Each test asserts the
//! exact address and port. Needs root (skips loudly otherwise; CI makes it mandatory).

use meshcap_origdst::{
    Accepted, Kernel, ListenAddr, ListenerBuilder, Lookup, LoopGuard, Mode, NotRedirected, OrigDstSource, OriginalDst,
    Transparent, local_addrs, redirect, tproxy,
};
use meshcap_testns::{NetNs, PodPair, privileged};
use socket2::SockRef;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A bound on how long a connect may take before the test fails (a broken rule set would otherwise hang in
/// SYN retries); not a timing assertion.
const CONNECT_BOUND: Duration = Duration::from_secs(5);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn sh(ns: &NetNs, script: &str) {
    if let Err(e) = ns.sh(script) {
        panic!("in {}: {e}", ns.name());
    }
}

/// Run `f` inside `ns` and unwrap both layers.
fn inside<R: Send + 'static>(ns: &NetNs, f: impl FnOnce() -> io::Result<R> + Send + 'static) -> R {
    match ns.enter(f) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("in {}: {e}", ns.name()),
        Err(e) => panic!("cannot enter {}: {e}", ns.name()),
    }
}

fn listen(ns: &NetNs, builder: ListenerBuilder) -> std::net::TcpListener {
    inside(ns, move || {
        builder.bind().map(|l| l.into_std()).map_err(io::Error::other)
    })
}

fn connect(ns: &NetNs, dst: SocketAddr) -> TcpStream {
    inside(ns, move || TcpStream::connect_timeout(&dst, CONNECT_BOUND))
}

/// Accept one connection and return it with its peer and the kernel's answer in `mode`.
fn accept_lookup(listener: &std::net::TcpListener, mode: Mode) -> (TcpStream, SocketAddr, Lookup) {
    let (stream, peer) = listener.accept().unwrap();
    let lookup = Kernel::new(mode).original_dst(&Accepted::new(&stream, peer)).unwrap();
    (stream, peer, lookup)
}

fn redirected(s: &str) -> Lookup {
    Lookup::Redirected(s.parse().unwrap())
}

/// Pod routes: everything not on the link goes to the peer (so outbound connects have a route before
/// nat OUTPUT rewrites them).
fn pod_default_routes(pair: &PodPair) {
    sh(
        &pair.pod,
        "ip route add default via 10.244.0.5 dev eth0 && ip -6 route add default via fd00::5 dev eth0",
    );
}

#[test]
fn redirect_ipv4_outbound_and_inbound() {
    if !privileged("redirect_ipv4_outbound_and_inbound") {
        return;
    }
    let pair = PodPair::new("od").unwrap();
    pod_default_routes(&pair);
    sh(
        &pair.pod,
        "iptables -t nat -A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 15001 && \
         iptables -t nat -A PREROUTING -p tcp --dport 5000 -j REDIRECT --to-ports 15006",
    );
    let outbound = listen(&pair.pod, ListenerBuilder::new(sa("0.0.0.0:15001")));
    let inbound = listen(&pair.pod, ListenerBuilder::new(sa("0.0.0.0:15006")));

    // The application in the pod calls a service IP: nat OUTPUT.
    let app = connect(&pair.pod, sa("10.96.0.10:80"));
    let (stream, peer, lookup) = accept_lookup(&outbound, Mode::Redirect);
    assert_eq!(lookup, redirected("10.96.0.10:80"));
    assert_eq!(peer, app.local_addr().unwrap());
    // REDIRECT of a locally generated packet lands on 127.0.0.1.
    assert_eq!(stream.local_addr().unwrap(), sa("127.0.0.1:15001"));

    // The peer calls the pod's port 5000 across the veth: nat PREROUTING.
    let client = connect(&pair.peer, sa("10.244.0.6:5000"));
    let (stream, peer, lookup) = accept_lookup(&inbound, Mode::Redirect);
    assert_eq!(lookup, redirected("10.244.0.6:5000"));
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(peer.ip().to_string(), PodPair::PEER_V4);
    assert_eq!(stream.local_addr().unwrap(), sa("10.244.0.6:15006"));
}

#[test]
fn redirect_ipv6_outbound_and_inbound() {
    if !privileged("redirect_ipv6_outbound_and_inbound") {
        return;
    }
    let pair = PodPair::new("od").unwrap();
    pod_default_routes(&pair);
    sh(
        &pair.pod,
        "ip6tables -t nat -A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 15001 && \
         ip6tables -t nat -A PREROUTING -p tcp --dport 5000 -j REDIRECT --to-ports 15006",
    );
    let outbound = listen(&pair.pod, ListenerBuilder::new(sa("[::]:15001")).only_v6(true));
    let inbound = listen(&pair.pod, ListenerBuilder::new(sa("[::]:15006")).only_v6(true));

    let app = connect(&pair.pod, sa("[fd00:96::10]:80"));
    let (stream, peer, lookup) = accept_lookup(&outbound, Mode::Redirect);
    assert_eq!(lookup, redirected("[fd00:96::10]:80"));
    assert_eq!(peer, app.local_addr().unwrap());
    assert_eq!(stream.local_addr().unwrap(), sa("[::1]:15001"));

    let client = connect(&pair.peer, sa("[fd00::6]:5000"));
    let (stream, peer, lookup) = accept_lookup(&inbound, Mode::Redirect);
    assert_eq!(lookup, redirected("[fd00::6]:5000"));
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(stream.local_addr().unwrap(), sa("[fd00::6]:15006"));
}

#[test]
fn dual_stack_listener_reads_an_ipv4_client_with_the_ipv4_option() {
    if !privileged("dual_stack_listener_reads_an_ipv4_client_with_the_ipv4_option") {
        return;
    }
    let pair = PodPair::new("od").unwrap();
    pod_default_routes(&pair);
    sh(
        &pair.pod,
        "iptables -t nat -A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 15001 && \
         iptables -t nat -A PREROUTING -p tcp --dport 5000 -j REDIRECT --to-ports 15006 && \
         ip6tables -t nat -A PREROUTING -p tcp --dport 5000 -j REDIRECT --to-ports 15006",
    );
    let outbound = listen(&pair.pod, ListenerBuilder::new(sa("[::]:15001")).only_v6(false));
    let inbound = listen(&pair.pod, ListenerBuilder::new(sa("[::]:15006")).only_v6(false));

    let app = connect(&pair.pod, sa("10.96.0.10:80"));
    let (stream, peer, lookup) = accept_lookup(&outbound, Mode::Redirect);
    // The trap: the socket is AF_INET6, the peer is IPv4-mapped...
    let SocketAddr::V4(app_local) = app.local_addr().unwrap() else {
        panic!("an IPv4 client")
    };
    assert_eq!(
        peer,
        SocketAddr::from((app_local.ip().to_ipv6_mapped(), app_local.port()))
    );
    assert_eq!(stream.local_addr().unwrap(), sa("[::ffff:127.0.0.1]:15001"));
    // ...so the IPv6 option (what choosing by the socket's domain would ask) finds nothing...
    let v6 = SockRef::from(&stream).original_dst_v6().unwrap_err();
    assert_eq!(v6.raw_os_error(), Some(libc::ENOENT));
    // ...and the lookup picks the IPv4 option from the canonical peer, with a canonical answer.
    assert_eq!(lookup, redirected("10.96.0.10:80"));
    assert!(lookup.redirected().unwrap().as_socket_addr().is_ipv4());

    // The same listener type takes both families from across the veth.
    let _v4 = connect(&pair.peer, sa("10.244.0.6:5000"));
    let (_s, peer, lookup) = accept_lookup(&inbound, Mode::Redirect);
    assert_eq!(meshcap_origdst::canonical(peer).ip().to_string(), PodPair::PEER_V4);
    assert_eq!(lookup, redirected("10.244.0.6:5000"));
    let _v6 = connect(&pair.peer, sa("[fd00::6]:5000"));
    let (_s, peer, lookup) = accept_lookup(&inbound, Mode::Redirect);
    assert_eq!(peer.ip().to_string(), PodPair::PEER_V6);
    assert_eq!(lookup, redirected("[fd00::6]:5000"));
}

/// TPROXY for `family` in the pod: mark and divert `--dport 80` to `on_port`, deliver marked packets
/// locally through table 100.
fn tproxy_rules(pod: &NetNs, v6: bool, on_port: u16) {
    let (ipt, ip, any) = if v6 {
        ("ip6tables", "ip -6", "::/0")
    } else {
        ("iptables", "ip", "0.0.0.0/0")
    };
    sh(
        pod,
        &format!(
            "{ipt} -t mangle -A PREROUTING -p tcp --dport 80 -j TPROXY --on-port {on_port} --tproxy-mark 0x1/0x1 && \
             {ip} rule add fwmark 0x1/0x1 lookup 100 && \
             {ip} route add local {any} dev lo table 100"
        ),
    );
}

#[test]
fn tproxy_ipv4_across_the_veth() {
    if !privileged("tproxy_ipv4_across_the_veth") {
        return;
    }
    let pair = PodPair::new("od").unwrap();
    // The peer sends service traffic to the pod, which is not the service's address.
    sh(&pair.peer, "ip route add 10.96.0.0/16 via 10.244.0.6 dev eth0");
    tproxy_rules(&pair.pod, false, 15006);
    let builder = ListenerBuilder::new(sa("0.0.0.0:15006")).transparent(Transparent::Required);
    let listener = inside(&pair.pod, move || builder.bind().map_err(io::Error::other));
    assert!(listener.is_transparent());
    assert!(SockRef::from(listener.as_std()).ip_transparent_v4().unwrap());

    let client = connect(&pair.peer, sa("10.96.0.10:80"));
    let (stream, peer, lookup) = accept_lookup(listener.as_std(), Mode::Tproxy);
    assert_eq!(lookup, redirected("10.96.0.10:80"));
    assert_eq!(stream.local_addr().unwrap(), sa("10.96.0.10:80"));
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(peer.ip().to_string(), PodPair::PEER_V4);
    // Nothing was NATed: conntrack, if it knows the flow at all, has the same destination, but the TPROXY
    // answer never depends on it.
    assert_eq!(tproxy(&Accepted::new(&stream, peer)).unwrap(), lookup);
}

#[test]
fn tproxy_ipv6_across_the_veth() {
    if !privileged("tproxy_ipv6_across_the_veth") {
        return;
    }
    let pair = PodPair::new("od").unwrap();
    sh(&pair.peer, "ip -6 route add fd00:96::/64 via fd00::6 dev eth0");
    tproxy_rules(&pair.pod, true, 15006);
    let builder = ListenerBuilder::new(sa("[::]:15006"))
        .only_v6(true)
        .transparent(Transparent::Required);
    let listener = inside(&pair.pod, move || builder.bind().map_err(io::Error::other));
    assert!(SockRef::from(listener.as_std()).ip_transparent_v6().unwrap());

    let client = connect(&pair.peer, sa("[fd00:96::10]:80"));
    let (stream, peer, lookup) = accept_lookup(listener.as_std(), Mode::Tproxy);
    assert_eq!(lookup, redirected("[fd00:96::10]:80"));
    assert_eq!(stream.local_addr().unwrap(), sa("[fd00:96::10]:80"));
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(peer.ip().to_string(), PodPair::PEER_V6);
}

#[test]
fn not_redirected_without_rules_and_to_the_listener_itself() {
    if !privileged("not_redirected_without_rules_and_to_the_listener_itself") {
        return;
    }
    // A namespace nobody ever added a rule to: conntrack has no entry.
    let bare = NetNs::new("od").unwrap();
    let listener = listen(&bare, ListenerBuilder::new(sa("127.0.0.1:15001")));
    let _app = connect(&bare, sa("127.0.0.1:15001"));
    let (_stream, _, lookup) = accept_lookup(&listener, Mode::Redirect);
    assert_eq!(
        lookup,
        Lookup::NotRedirected {
            local: sa("127.0.0.1:15001"),
            reason: NotRedirected::NoEntry,
        }
    );

    // With capture rules installed, a direct connection to the listener is tracked but not rewritten.
    let ns = NetNs::new("od").unwrap();
    sh(
        &ns,
        "iptables -t nat -A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 15001",
    );
    sh(
        &ns,
        "ip6tables -t nat -A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 15001",
    );
    let listener = listen(&ns, ListenerBuilder::new(sa("[::]:15001")).only_v6(false));
    for (dst, local) in [("127.0.0.1:15001", "127.0.0.1:15001"), ("[::1]:15001", "[::1]:15001")] {
        let _app = connect(&ns, sa(dst));
        let (stream, _, lookup) = accept_lookup(&listener, Mode::Redirect);
        assert_eq!(
            lookup,
            Lookup::NotRedirected {
                local: sa(local),
                reason: NotRedirected::ToListener,
            },
            "{dst}"
        );
        assert_eq!(lookup.or_local(), sa(local).into());
        // The conntrack answer really was the listener's own address.
        drop(stream);
    }
}

#[test]
fn loop_guard_catches_a_connection_to_the_proxy_port() {
    if !privileged("loop_guard_catches_a_connection_to_the_proxy_port") {
        return;
    }
    let pair = PodPair::new("od").unwrap();
    // Kuma-style: every outbound TCP connection to 15001, every inbound one to 15006.
    sh(
        &pair.pod,
        "iptables -t nat -A OUTPUT -p tcp -j REDIRECT --to-ports 15001 && \
         iptables -t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 15006",
    );
    let outbound = listen(&pair.pod, ListenerBuilder::new(sa("0.0.0.0:15001")));
    let inbound = listen(&pair.pod, ListenerBuilder::new(sa("[::]:15006")).only_v6(false));
    let pod_addrs = inside(&pair.pod, || local_addrs().map_err(io::Error::other));
    assert!(pod_addrs.contains(&PodPair::POD_V4.parse().unwrap()), "{pod_addrs:?}");
    assert!(pod_addrs.contains(&PodPair::POD_V6.parse().unwrap()), "{pod_addrs:?}");
    let guard = LoopGuard::new([sa("0.0.0.0:15001"), sa("[::]:15006")]).with_local_addrs(pod_addrs);

    // The application calls its own pod IP on the proxy's outbound port: captured like everything else,
    // the original destination is the proxy itself.
    let _app = connect(&pair.pod, sa("10.244.0.6:15001"));
    let (_s, _, lookup) = accept_lookup(&outbound, Mode::Redirect);
    assert_eq!(lookup, redirected("10.244.0.6:15001"));
    let err = guard.check(lookup.or_local()).unwrap_err();
    assert_eq!(err.dst(), "10.244.0.6:15001".parse::<OriginalDst>().unwrap());
    assert_eq!(err.listener(), "0.0.0.0:15001".parse::<ListenAddr>().unwrap());

    // The peer calls the pod on the inbound port.
    let _client = connect(&pair.peer, sa("10.244.0.6:15006"));
    let (_s, _, lookup) = accept_lookup(&inbound, Mode::Redirect);
    let dst = lookup.or_local();
    assert_eq!(dst, "10.244.0.6:15006".parse::<OriginalDst>().unwrap());
    assert_eq!(
        guard.check(dst).unwrap_err().to_string(),
        "destination 10.244.0.6:15006 is the proxy's own listener [::]:15006"
    );

    // An ordinary destination passes.
    let _client = connect(&pair.peer, sa("10.244.0.6:5000"));
    let (_s, _, lookup) = accept_lookup(&inbound, Mode::Redirect);
    assert_eq!(lookup, redirected("10.244.0.6:5000"));
    assert!(guard.check(lookup.or_local()).is_ok());
}

#[test]
fn tokio_streams_are_borrowed_the_same_way() {
    if !privileged("tokio_streams_are_borrowed_the_same_way") {
        return;
    }
    let ns = NetNs::new("od").unwrap();
    sh(&ns, "ip route add local 10.96.0.0/16 dev lo");
    sh(
        &ns,
        "iptables -t nat -A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 15001",
    );
    let lookup = inside(&ns, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("0.0.0.0:15001").await?;
            let _app = tokio::net::TcpStream::connect("10.96.0.10:80").await?;
            let (stream, peer) = listener.accept().await?;
            redirect(&Accepted::new(&stream, peer)).map_err(io::Error::other)
        })
    });
    assert_eq!(lookup, redirected("10.96.0.10:80"));
}

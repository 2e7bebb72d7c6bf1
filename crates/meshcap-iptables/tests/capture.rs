//! Real traffic through installed rules, in a pod/peer namespace pair: outbound connections land on the
//! 15001 listener, inbound ones on 15006; an excluded port and the kuma-dp UID bypass capture.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Probe, connect_as, connect_from};
use meshcap_iptables::{Config, Executor, Family, Installer, RetryPolicy, RuleSet};
use meshcap_testns::{PodPair, privileged};

#[test]
fn traffic_lands_on_the_proxy_listeners() {
    if !privileged("traffic_lands_on_the_proxy_listeners") {
        return;
    }
    for program in ["setpriv", "bash"] {
        assert!(meshcap_testns::have_program(program), "{program} is needed");
    }
    let pair = PodPair::new("ipt").unwrap();
    let config = Config::builder()
        .exclude_outbound_ports("9090")
        .unwrap()
        .build()
        .unwrap();
    let installer = Installer::new(Executor::netns(pair.pod.name())).with_retry(RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    });
    for family in Family::ALL {
        installer.install(&RuleSet::build(&config, family)).unwrap();
    }

    let outbound = Probe::bind(&pair.pod, "[::]:15001", "pod :15001");
    let inbound = Probe::bind(&pair.pod, "[::]:15006", "pod :15006");
    let app = Probe::bind(&pair.pod, "[::]:5000", "pod app :5000");
    let remote = Probe::bind(&pair.peer, "[::]:8080", "peer :8080");
    let remote_excluded = Probe::bind(&pair.peer, "[::]:9090", "peer :9090");
    let all = [&outbound, &inbound, &app, &remote, &remote_excluded];
    // The server side of a handshake may be processed just after `connect` returns: wait for the
    // expected listener, then check that no other one got anything.
    let only = |expected: &Probe, what: &str| {
        assert!(
            meshcap_testns::wait_until(Duration::from_secs(5), || expected.took()),
            "{what}: nothing arrived at {}",
            expected.name
        );
        for p in all {
            assert!(
                std::ptr::eq(p, expected) || !p.took(),
                "{what}: {} got a connection",
                p.name
            );
        }
    };

    for (pod, peer) in [(PodPair::POD_V4, PodPair::PEER_V4), (PodPair::POD_V6, PodPair::PEER_V6)] {
        let peer_ip: std::net::IpAddr = peer.parse().unwrap();
        let pod_ip: std::net::IpAddr = pod.parse().unwrap();
        connect_from(&pair.pod, SocketAddr::new(peer_ip, 8080));
        only(&outbound, &format!("pod -> {peer}:8080 is captured"));
        connect_from(&pair.pod, SocketAddr::new(peer_ip, 9090));
        only(
            &remote_excluded,
            &format!("pod -> {peer}:9090 (excluded port) goes direct"),
        );
        connect_as(&pair.pod, 5678, peer, 8080);
        only(&remote, &format!("kuma-dp (uid 5678) -> {peer}:8080 goes direct"));
        connect_from(&pair.peer, SocketAddr::new(pod_ip, 5000));
        only(&inbound, &format!("peer -> {pod}:5000 is captured inbound"));
    }

    // After uninstall nothing is captured any more.
    for family in Family::ALL {
        installer.uninstall(family).unwrap();
    }
    connect_from(&pair.pod, SocketAddr::new(PodPair::PEER_V4.parse().unwrap(), 8080));
    only(&remote, "after uninstall pod -> peer:8080 goes direct");
    connect_from(&pair.peer, SocketAddr::new(PodPair::POD_V4.parse().unwrap(), 5000));
    only(&app, "after uninstall peer -> pod:5000 reaches the app");
}

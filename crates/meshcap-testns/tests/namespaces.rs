//! The namespace helpers themselves: a pod pair is reachable both ways over IPv4 and IPv6, `enter` really
//! runs inside the namespace, and dropping removes the namespaces.

use meshcap_testns::{NetNs, PodPair, privileged};
use std::net::{TcpListener, TcpStream};

#[test]
fn pod_pair_links_both_families_and_cleans_up() {
    if !privileged("pod_pair_links_both_families_and_cleans_up") {
        return;
    }
    let names;
    {
        let pair = PodPair::new("smoke").expect("pod pair");
        names = (pair.pod.name().to_string(), pair.peer.name().to_string());
        pair.peer
            .run(["ping", "-c", "1", "-W", "2", PodPair::POD_V4])
            .expect("ping v4");
        // A listener inside the pod namespace is reachable from a thread inside the peer namespace.
        let listener = pair
            .pod
            .enter(|| TcpListener::bind("[::]:7777"))
            .expect("enter pod")
            .expect("bind in pod");
        let v4 = pair
            .peer
            .enter(|| TcpStream::connect("10.244.0.6:7777").map(|s| s.peer_addr()))
            .unwrap();
        assert_eq!(v4.unwrap().unwrap().to_string(), "10.244.0.6:7777");
        let v6 = pair
            .peer
            .enter(|| TcpStream::connect("[fd00::6]:7777").map(|s| s.peer_addr()))
            .unwrap();
        assert_eq!(v6.unwrap().unwrap().to_string(), "[fd00::6]:7777");
        drop(listener);
    }
    let list = String::from_utf8(
        std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !list.contains(&names.0) && !list.contains(&names.1),
        "namespaces left behind: {list}"
    );
}

#[test]
fn single_namespace_has_loopback_up() {
    if !privileged("single_namespace_has_loopback_up") {
        return;
    }
    let ns = NetNs::new("lo").unwrap();
    let out = ns.run(["ip", "-o", "link", "show", "lo"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("UP"));
}

//! Listener binding in a throwaway network namespace (needs root): the passthrough listener set binds
//! like Envoy's (`reference/envoy/ss-ltnp.txt`), IPv4 and IPv6 wildcards share a port, and a dual-stack
//! socket sees IPv4 clients as IPv4-mapped addresses.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;

use meshcap_proxy::listen::{ListenError, ListenerConfig};
use meshcap_testns::NetNs;

/// `(state, recv-q, send-q, local, peer)` of every listening socket in the current namespace.
fn listening_sockets() -> BTreeSet<Vec<String>> {
    let out = Command::new("ss").arg("-ltn").output().expect("run ss");
    assert!(out.status.success(), "ss -ltn failed");
    parse_ss(&String::from_utf8_lossy(&out.stdout))
}

fn parse_ss(text: &str) -> BTreeSet<Vec<String>> {
    text.lines()
        .skip(1)
        .map(|l| l.split_whitespace().take(5).map(str::to_string).collect::<Vec<_>>())
        .filter(|cols| cols.len() == 5)
        .collect()
}

#[test]
fn passthrough_listeners_bind_like_envoy() {
    if !meshcap_testns::privileged("listen_passthrough_bind") {
        return;
    }
    let Some(reference) = meshcap_testns::reference_dir("listen_passthrough_bind") else {
        return;
    };
    let expected = parse_ss(&std::fs::read_to_string(reference.join("envoy/ss-ltnp.txt")).unwrap());
    assert_eq!(expected.len(), 5);

    let ns = NetNs::new("rt").expect("create namespace");
    let seen = ns
        .enter(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let addrs = [
                    "0.0.0.0:15006",
                    "[::]:15006",
                    "0.0.0.0:15001",
                    "[::]:15001",
                    "127.0.0.1:9901",
                ];
                let mut held = Vec::new();
                for a in addrs {
                    let addr: SocketAddr = a.parse().unwrap();
                    let listener = ListenerConfig::new(a, addr)
                        .bind()
                        .unwrap_or_else(|e| panic!("{a}: {e}"));
                    assert_eq!(listener.local_addr(), addr);
                    held.push(listener);
                }
                listening_sockets()
            })
        })
        .expect("enter namespace");
    assert_eq!(seen, expected);
}

#[test]
fn wildcards_share_a_port_only_with_v6only() {
    if !meshcap_testns::privileged("listen_v6only") {
        return;
    }
    let ns = NetNs::new("rt").expect("create namespace");
    ns.enter(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // v6only (the default): both wildcards bind, and each family reaches its own socket.
            let v4 = ListenerConfig::new("v4", "0.0.0.0:15001".parse().unwrap())
                .bind()
                .unwrap();
            let v6 = ListenerConfig::new("v6", "[::]:15001".parse().unwrap()).bind().unwrap();
            let (v4_peer, v6_peer) = tokio::join!(
                accept_one(v4, "127.0.0.1:15001".parse().unwrap()),
                accept_one(v6, "[::1]:15001".parse().unwrap()),
            );
            assert_eq!(v4_peer.ip().to_string(), "127.0.0.1");
            assert_eq!(v6_peer.ip().to_string(), "::1");

            // Dual-stack: the [::] socket takes the IPv4 client too (as ::ffff:127.0.0.1), and a
            // 0.0.0.0 socket can no longer bind the port.
            let dual = ListenerConfig::new("dual", "[::]:15006".parse().unwrap())
                .v6_only(false)
                .bind()
                .unwrap();
            let err = ListenerConfig::new("v4", "0.0.0.0:15006".parse().unwrap())
                .bind()
                .unwrap_err();
            assert!(matches!(err, ListenError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse));
            let mapped = accept_one(dual, "127.0.0.1:15006".parse().unwrap()).await;
            assert_eq!(mapped.ip().to_string(), "::ffff:127.0.0.1");
        })
    })
    .expect("enter namespace");
}

/// Connect to `target` and return the peer address the listener's handler saw.
async fn accept_one(listener: meshcap_proxy::listen::Listener, target: SocketAddr) -> SocketAddr {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(listener.serve(
        move |c: meshcap_proxy::listen::Connection| {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(c.peer);
            }
            async {}
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let _client = tokio::net::TcpStream::connect(target).await.unwrap();
    let peer = rx.await.unwrap();
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    peer
}

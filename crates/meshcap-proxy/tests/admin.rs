//! The admin server: renderers against a real Envoy's admin output (`reference/envoy/*`), and every
//! endpoint through a real HTTP/1.1 client (hyper) on loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use meshcap_proxy::admin::{
    AdminConfig, AdminError, AdminState, ClusterStatus, HostStatus, ListenerStatus, ServerInfo, ServerState,
    StateHandle, clusters_json, clusters_text, listeners_json, listeners_text,
};
use meshcap_proxy::listen::ListenError;
use meshcap_proxy::stats::{StatValue, StatsRegistry};
use tokio::net::TcpStream;

fn reference(test: &str) -> Option<PathBuf> {
    meshcap_testns::reference_dir(test).map(|d| d.join("envoy"))
}

/// The listeners of the reference bootstrap, in its order.
fn reference_listeners() -> Vec<ListenerStatus> {
    [
        ("inbound:passthrough:ipv4", "0.0.0.0:15006"),
        ("inbound:passthrough:ipv6", "[::]:15006"),
        ("outbound:passthrough:ipv4", "0.0.0.0:15001"),
        ("outbound:passthrough:ipv6", "[::]:15001"),
        ("inbound:10.244.0.6:5000", "10.244.0.6:5000"),
    ]
    .into_iter()
    .map(|(name, addr)| ListenerStatus {
        name: name.to_string(),
        address: addr.parse().unwrap(),
    })
    .collect()
}

/// The clusters of the reference bootstrap, in the given name order.
fn reference_clusters(order: &[&str]) -> Vec<ClusterStatus> {
    order
        .iter()
        .map(|name| {
            let mut c = ClusterStatus::new(*name, name.replace(':', "_"));
            if *name == "localhost:5000" {
                c.hosts.push(HostStatus::new("10.244.0.6:5000".parse().unwrap()));
            }
            c
        })
        .collect()
}

#[test]
fn listeners_render_like_envoy() {
    let Some(dir) = reference("admin_listeners") else {
        return;
    };
    let listeners = reference_listeners();
    assert_eq!(
        listeners_text(&listeners),
        std::fs::read_to_string(dir.join("listeners.txt")).unwrap()
    );
    assert_eq!(
        listeners_json(&listeners),
        std::fs::read_to_string(dir.join("listeners.json")).unwrap()
    );
}

#[test]
fn clusters_render_like_envoy() {
    let Some(dir) = reference("admin_clusters") else { return };
    let text = std::fs::read_to_string(dir.join("clusters.txt")).unwrap();
    let text_order: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once("::observability_name::"))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(text_order.len(), 5);
    assert_eq!(clusters_text(&reference_clusters(&text_order)), text);

    let json = std::fs::read_to_string(dir.join("clusters.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let json_order: Vec<&str> = doc["cluster_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(clusters_json(&reference_clusters(&json_order)), json);
}

#[test]
fn cluster_host_stats_print_values() {
    let mut c = ClusterStatus::new("localhost:5000", "localhost_5000");
    let mut h = HostStatus::new("10.244.0.6:5000".parse().unwrap());
    h.cx_total = 3;
    h.cx_active = 1;
    c.hosts.push(h);
    let text = clusters_text(std::slice::from_ref(&c));
    assert!(text.contains("localhost:5000::10.244.0.6:5000::cx_total::3\n"));
    assert!(text.contains("localhost:5000::10.244.0.6:5000::cx_active::1\n"));
    let json: serde_json::Value = serde_json::from_str(&clusters_json(&[c])).unwrap();
    let stats = &json["cluster_statuses"][0]["host_statuses"][0]["stats"];
    assert_eq!(stats[1], serde_json::json!({"name": "cx_total", "value": "3"}));
    assert_eq!(
        stats[6],
        serde_json::json!({"type": "GAUGE", "name": "cx_active", "value": "1"})
    );
}

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// `content-type` of an Envoy reference capture (`*.headers.txt`).
fn reference_content_type(dir: &std::path::Path, file: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{file}.headers.txt"))).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn endpoints_over_http() {
    let stats = StatsRegistry::new();
    stats.gauge("server.live").unwrap().set(1);
    stats.counter("cluster.localhost_5000.upstream_rq_200").unwrap().add(7);
    let dump = r#"{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"}]}"#;
    let state_handle = StateHandle::new(ServerState::Live);
    let state = AdminState::new(stats.clone())
        .config_dump(move || dump.to_string())
        .listeners(reference_listeners)
        .clusters(|| reference_clusters(&["localhost:5000"]))
        .server_info(ServerInfo {
            node_id: "default.backend-01".into(),
            node_cluster: "backend".into(),
            ..ServerInfo::default()
        })
        .state(state_handle.clone());
    let server = AdminConfig::new("127.0.0.1:0".parse().unwrap()).bind(state).unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    let ready = request(addr, "GET", "/ready").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "LIVE\n"));
    for (k, v) in [
        ("content-type", "text/plain; charset=UTF-8"),
        ("cache-control", "no-cache, max-age=0"),
        ("x-content-type-options", "nosniff"),
        ("server", "envoy"),
    ] {
        assert_eq!(ready.headers.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(ready.headers.contains_key("date"));

    let text = request(addr, "GET", "/stats").await;
    assert_eq!(text.status, 200);
    assert!(text.body.starts_with("cluster.localhost_5000.upstream_rq_200: 7\n"));
    assert!(text.body.ends_with("server.live: 1\n"));
    // The admin listener's own statistics, under Envoy's names.
    assert!(text.body.contains("listener.admin.downstream_cx_total: "));
    assert!(text.body.contains("listener.admin.main_thread.downstream_cx_total: "));
    assert!(text.body.contains("http.admin.downstream_rq_2xx: 1\n"), "{}", text.body);

    let json = request(addr, "GET", "/stats?format=json").await;
    let doc: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert!(
        doc["stats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "server.live" && s["value"] == 1)
    );

    let prom = request(addr, "GET", "/stats/prometheus").await;
    assert!(prom.body.contains(
        "# TYPE envoy_cluster_upstream_rq counter\nenvoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"localhost_5000\"} 7\n"
    ));
    assert_eq!(
        request(addr, "GET", "/stats?format=prometheus")
            .await
            .body
            .lines()
            .next(),
        prom.body.lines().next()
    );

    let filtered = request(addr, "GET", "/stats?filter=%5Eserver%5C.").await;
    assert_eq!(filtered.body, "server.live: 1\n");
    let bad = request(addr, "GET", "/stats?filter=(").await;
    assert_eq!(bad.status, 400);
    let used = request(addr, "GET", "/stats?usedonly").await;
    assert!(!used.body.contains(": 0\n"));

    let dumped = request(addr, "GET", "/config_dump").await;
    assert_eq!(dumped.body, dump);
    assert_eq!(dumped.headers["content-type"], "application/json");

    let listeners = request(addr, "GET", "/listeners").await;
    assert!(listeners.body.starts_with("inbound:passthrough:ipv4::0.0.0.0:15006\n"));
    let listeners_json = request(addr, "GET", "/listeners?format=json").await;
    assert_eq!(listeners_json.body, listeners_json_expected());
    let clusters = request(addr, "GET", "/clusters").await;
    assert!(
        clusters
            .body
            .starts_with("localhost:5000::observability_name::localhost_5000\n")
    );
    let clusters_json = request(addr, "GET", "/clusters?format=json").await;
    assert_eq!(clusters_json.headers["content-type"], "application/json");

    let info = request(addr, "GET", "/server_info").await;
    let info: serde_json::Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["hot_restart_version"], "disabled");
    assert_eq!(info["node"]["id"], "default.backend-01");
    assert_eq!(info["node"]["cluster"], "backend");

    let missing = request(addr, "GET", "/nope").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.starts_with("invalid path: /nope\n"));
    let post = request(addr, "POST", "/stats").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");
    let head = request(addr, "HEAD", "/ready").await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));

    // Content types exactly as a real Envoy sends them.
    let mut reference_requests = 0;
    if let Some(dir) = reference("admin_content_types") {
        for (path, file) in [
            ("/ready", "ready.txt"),
            ("/stats", "stats.txt"),
            ("/stats?format=json", "stats.json"),
            ("/stats/prometheus", "stats_prometheus.txt"),
            ("/listeners", "listeners.txt"),
            ("/listeners?format=json", "listeners.json"),
            ("/clusters", "clusters.txt"),
            ("/clusters?format=json", "clusters.json"),
            ("/server_info", "server_info.json"),
            ("/config_dump", "config_dump.json"),
        ] {
            let reply = request(addr, "GET", path).await;
            reference_requests += 1;
            assert_eq!(
                reply.headers["content-type"],
                reference_content_type(&dir, file),
                "{path}"
            );
            assert_eq!(reply.headers["cache-control"], "no-cache, max-age=0");
        }
    }

    state_handle.set(ServerState::Draining);
    let draining = request(addr, "GET", "/ready").await;
    assert_eq!((draining.status, draining.body.as_str()), (503, "DRAINING\n"));
    let info = request(addr, "GET", "/server_info").await;
    assert!(info.body.contains("\"state\": \"DRAINING\""));

    let snapshot = stats.snapshot();
    let completed = match snapshot.get("listener.admin.http.admin.downstream_rq_completed") {
        Some(StatValue::Counter(n)) => n,
        other => panic!("{other:?}"),
    };
    // Every request so far: 19 above plus the reference comparisons.
    assert_eq!(completed, 19 + reference_requests);
    assert_eq!(
        snapshot.get("http.admin.downstream_rq_4xx"),
        Some(StatValue::Counter(3))
    );
    assert_eq!(snapshot.get("listener.admin.extension_config_missing"), None);

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

fn listeners_json_expected() -> String {
    listeners_json(&reference_listeners())
}

#[tokio::test]
async fn admin_stat_names_are_envoys() {
    let Some(dir) = reference("admin_stat_names") else {
        return;
    };
    let reference_names: std::collections::BTreeSet<String> = std::fs::read_to_string(dir.join("stats.txt"))
        .unwrap()
        .lines()
        .map(|l| l.split_once(": ").unwrap().0.to_string())
        .collect();
    let stats = StatsRegistry::new();
    let server = AdminConfig::new("127.0.0.1:0".parse().unwrap())
        .bind(AdminState::new(stats.clone()))
        .unwrap();
    let ours: Vec<String> = stats.snapshot().stats().iter().map(|s| s.name.clone()).collect();
    assert!(ours.len() > 20);
    let unknown: Vec<&String> = ours.iter().filter(|n| !reference_names.contains(*n)).collect();
    assert!(unknown.is_empty(), "not in Envoy's admin stats: {unknown:?}");
    drop(server);
}

#[tokio::test]
async fn non_loopback_addresses_are_refused_unless_allowed() {
    for addr in ["0.0.0.0:9901", "[::]:9901", "10.244.0.6:9901", "[fd00::6]:9901"] {
        let addr: SocketAddr = addr.parse().unwrap();
        match AdminConfig::new(addr).bind(AdminState::new(StatsRegistry::new())) {
            Err(AdminError::NonLoopback { addr: refused }) => assert_eq!(refused, addr),
            other => panic!("{addr}: {other:?}"),
        }
    }
    let err = AdminConfig::new("0.0.0.0:9901".parse().unwrap())
        .bind(AdminState::new(StatsRegistry::new()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "refusing to serve the admin interface on non-loopback address 0.0.0.0:9901 (set allow_non_loopback to expose it)"
    );
    // Loopback in every spelling is fine.
    for addr in ["127.0.0.1:0", "127.0.0.2:0", "[::1]:0"] {
        let addr: SocketAddr = addr.parse().unwrap();
        match AdminConfig::new(addr).bind(AdminState::new(StatsRegistry::new())) {
            Ok(_) => {}
            // No IPv6 on this machine: the loopback check passed, the bind failed.
            Err(AdminError::Listen(ListenError::Bind { .. })) if addr.is_ipv6() => {}
            Err(e) => panic!("{addr}: {e}"),
        }
    }
    // Allowed explicitly: the check passes and binding is attempted (this documentation address is not
    // local, so the bind itself fails; nothing is exposed).
    let err = AdminConfig::new("192.0.2.1:0".parse().unwrap())
        .allow_non_loopback(true)
        .bind(AdminState::new(StatsRegistry::new()))
        .unwrap_err();
    assert!(matches!(err, AdminError::Listen(ListenError::Bind { .. })), "{err:?}");
}

#[tokio::test]
async fn connection_limit_applies_to_admin() {
    let stats = StatsRegistry::new();
    let server = AdminConfig::new("127.0.0.1:0".parse().unwrap())
        .max_connections(1)
        .bind(AdminState::new(stats.clone()))
        .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    // One idle connection holds the only slot.
    let held = TcpStream::connect(addr).await.unwrap();
    let overflowed = {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf)
            .await
            .unwrap_or(0)
            == 0
    };
    assert!(overflowed);
    drop(held);
    while !matches!(stats.snapshot().get("listener.admin.downstream_cx_overflow"), Some(StatValue::Counter(n)) if n >= 1)
    {
        tokio::task::yield_now().await;
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

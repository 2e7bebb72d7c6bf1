//! The demo's plumbing: a small HTTP/1.1 client (hyper) over connections made inside a namespace or on
//! loopback, the sidecar's admin interface (readiness, statistics, listeners, `/config_dump`), and the
//! packet counters of the nat rules.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use meshcap_testns::NetNs;

/// Where connections come from: inside a namespace, or this process's own network.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Net<'a> {
    /// Inside this namespace.
    Ns(&'a NetNs),
    /// Here.
    Host,
}

impl Net<'_> {
    /// A TCP connection to `addr`.
    pub(crate) fn connect(self, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
        match self {
            Net::Ns(ns) => ns.connect_tcp(addr, timeout),
            Net::Host => TcpStream::connect_timeout(&addr, timeout),
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// The client's own address (what the proxy logs as the downstream remote address).
    pub(crate) client: SocketAddr,
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Bytes,
}

impl Reply {
    /// The value of header `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The status line's reason phrase as hyper knows it.
    pub(crate) fn reason(&self) -> &'static str {
        hyper::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
    }
}

/// `GET path` to `addr` from `net` on a fresh connection, within `timeout`.
pub(crate) fn get(
    rt: &tokio::runtime::Runtime,
    net: Net<'_>,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<Reply, String> {
    let stream = net.connect(addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    let client = stream.local_addr().map_err(|e| e.to_string())?;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let request = async move {
        let stream = tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        driver.abort();
        Ok(Reply {
            client,
            status,
            headers,
            body,
        })
    };
    rt.block_on(async { tokio::time::timeout(timeout, request).await })
        .map_err(|_| format!("GET http://{addr}{path}: no answer within {timeout:?}"))?
        .map_err(|e: String| format!("GET http://{addr}{path}: {e}"))
}

/// The proxy's admin interface.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admin<'a> {
    pub(crate) net: Net<'a>,
    pub(crate) addr: SocketAddr,
}

impl Admin<'_> {
    /// `GET path`, a 200 answer's body as text.
    pub(crate) fn text(&self, rt: &tokio::runtime::Runtime, path: &str) -> Result<String, String> {
        let reply = get(rt, self.net, self.addr, path, Duration::from_secs(10))?;
        if reply.status != 200 {
            return Err(format!(
                "admin {path}: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
        }
        Ok(String::from_utf8_lossy(&reply.body).into_owned())
    }

    /// `GET path` as JSON.
    pub(crate) fn json(&self, rt: &tokio::runtime::Runtime, path: &str) -> Result<serde_json::Value, String> {
        let text = self.text(rt, path)?;
        serde_json::from_str(&text).map_err(|e| format!("admin {path}: {e}"))
    }

    /// Integer statistics (`/stats?format=json`), without the admin's and the server's own.
    pub(crate) fn stats(&self, rt: &tokio::runtime::Runtime) -> Result<BTreeMap<String, i64>, String> {
        let json = self.json(rt, "/stats?format=json")?;
        let mut stats = BTreeMap::new();
        for s in json["stats"].as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (s["name"].as_str(), s["value"].as_i64())
                && !["http.admin.", "listener.admin.", "server.", "filesystem."]
                    .iter()
                    .any(|p| name.starts_with(p))
            {
                stats.insert(name.to_string(), value);
            }
        }
        Ok(stats)
    }

    /// The statistics once the traffic is over: no connection or request in flight, and two reads in a
    /// row equal (a connection's close is counted just after the client is gone).
    pub(crate) fn settled_stats(&self, rt: &tokio::runtime::Runtime) -> Result<BTreeMap<String, i64>, String> {
        let mut last = self.stats(rt)?;
        for _ in 0..250 {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.stats(rt)?;
            let quiet = now
                .iter()
                .all(|(name, v)| !(name.ends_with("downstream_cx_active") || name.ends_with("rq_active")) || *v == 0);
            if quiet && now == last {
                return Ok(now);
            }
            last = now;
        }
        Err("the statistics did not settle within 5 s".to_string())
    }
}

/// What changed between two statistics snapshots (after − before), unchanged ones left out.
pub(crate) fn delta(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    let mut d = BTreeMap::new();
    for name in before.keys().chain(after.keys()) {
        let (a, b) = (
            before.get(name).copied().unwrap_or(0),
            after.get(name).copied().unwrap_or(0),
        );
        if a != b {
            d.insert(name.clone(), b - a);
        }
    }
    d
}

/// One nat rule with its packet counter (`iptables-save -c -t nat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NatRule {
    /// The rule as `iptables-save` prints it, without the counters (`-A CHAIN ...`).
    pub(crate) rule: String,
    pub(crate) packets: u64,
}

impl NatRule {
    /// The chain the rule is in.
    pub(crate) fn chain(&self) -> &str {
        self.rule.split_whitespace().nth(1).unwrap_or("")
    }

    /// The port a `REDIRECT --to-ports P` rule sends to.
    pub(crate) fn redirect_port(&self) -> Option<u16> {
        let mut words = self.rule.split_whitespace();
        words.find(|w| *w == "--to-ports")?;
        words.next()?.parse().ok()
    }

    /// Whether the rule's target is RETURN.
    pub(crate) fn returns(&self) -> bool {
        self.rule.ends_with("-j RETURN") || self.rule.contains("-j RETURN ")
    }

    /// The rule's `--comment`, when it has one.
    pub(crate) fn comment(&self) -> Option<&str> {
        let start = self.rule.find("--comment \"")? + "--comment \"".len();
        let len = self.rule[start..].find('"')?;
        Some(&self.rule[start..start + len])
    }
}

/// The nat rules of `ns` (IPv4) with their packet counters.
pub(crate) fn nat_counters(ns: &NetNs) -> Result<Vec<NatRule>, String> {
    let out = ns
        .run(["iptables-save", "-c", "-t", "nat"])
        .map_err(|e| format!("iptables-save: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (counters, rule) = line.strip_prefix('[')?.split_once("] ")?;
            let packets = counters.split(':').next()?.parse().ok()?;
            Some(NatRule {
                rule: rule.to_string(),
                packets,
            })
        })
        .collect())
}

/// The rules whose packet counters moved from `before` to `after` (same rule set), with the change.
pub(crate) fn nat_moved(before: &[NatRule], after: &[NatRule]) -> Vec<(NatRule, u64)> {
    after
        .iter()
        .zip(before)
        .filter(|(a, b)| a.rule == b.rule && a.packets > b.packets)
        .map(|(a, b)| (a.clone(), a.packets - b.packets))
        .collect()
}

//! What the demo prints: each request's trace, derived from the sidecar's own evidence (the nat rules'
//! packet counters, the statistics that moved, the access-log line of the connection), and the
//! interesting part of `/config_dump`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::Value;

use super::net::{NatRule, Reply};

/// The access-log format the demo runs the proxy with: `key=value` fields, one line per request or TCP
/// session.
pub(crate) const ACCESS_LOG_FORMAT: &str = "DEMO remote=%DOWNSTREAM_REMOTE_ADDRESS% local=%DOWNSTREAM_LOCAL_ADDRESS% \
method=%REQ(:METHOD)% path=%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% protocol=%PROTOCOL% code=%RESPONSE_CODE% \
flags=%RESPONSE_FLAGS% details=%RESPONSE_CODE_DETAILS% cluster=%UPSTREAM_CLUSTER% upstream=%UPSTREAM_HOST% \
rx=%BYTES_RECEIVED% tx=%BYTES_SENT% duration=%DURATION%\n";

/// One request the demo sent, and what was observed around it.
#[derive(Debug)]
pub(crate) struct Call {
    /// Who sent it (`peer`, `app`, `client`).
    pub(crate) from: &'static str,
    pub(crate) target: SocketAddr,
    pub(crate) path: String,
    /// Why this request is interesting.
    pub(crate) why: &'static str,
    pub(crate) reply: Result<Reply, String>,
    /// Statistics that moved (after − before).
    pub(crate) stats: BTreeMap<String, i64>,
    /// nat rules whose packet counters moved; `None` without capture rules.
    pub(crate) nat: Option<Vec<(NatRule, u64)>>,
}

/// An access-log line of [`ACCESS_LOG_FORMAT`], as fields.
pub(crate) fn parse_access_line(line: &str) -> Option<BTreeMap<String, String>> {
    let rest = line.strip_prefix("DEMO ")?;
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The listeners and clusters of a `/config_dump`.
#[derive(Debug, Default)]
pub(crate) struct Dump {
    listeners: Vec<Value>,
    clusters: Vec<Value>,
}

impl Dump {
    /// Pick the static listeners and clusters out of `/config_dump`.
    pub(crate) fn new(config_dump: &Value) -> Dump {
        let mut dump = Dump::default();
        for config in config_dump["configs"].as_array().into_iter().flatten() {
            let ty = config["@type"].as_str().unwrap_or("");
            if ty.ends_with("ListenersConfigDump") {
                dump.listeners = entries(config, "static_listeners", "listener");
            } else if ty.ends_with("ClustersConfigDump") {
                dump.clusters = entries(config, "static_clusters", "cluster");
            }
        }
        dump
    }

    /// The listener whose statistics are `listener.<stat_addr>.*`.
    fn listener_by_stat(&self, stat_addr: &str) -> Option<&Value> {
        self.listeners
            .iter()
            .find(|l| address(l).is_some_and(|a| stat_address(&a) == stat_addr))
    }

    /// The wildcard listener of `family` on `port` (what a REDIRECT to `port` lands on).
    fn wildcard_listener(&self, port: u16, v6: bool) -> Option<&Value> {
        let wildcard = if v6 { "[::]" } else { "0.0.0.0" };
        self.listeners
            .iter()
            .find(|l| address(l).is_some_and(|a| a == format!("{wildcard}:{port}")))
    }

    /// The cluster named `name`, or whose statistics are `cluster.<name>.*` (Envoy logs a cluster's
    /// `alt_stat_name` as %UPSTREAM_CLUSTER%).
    fn cluster(&self, name: &str) -> Option<&str> {
        let named = |c: &&Value| c["name"].as_str() == Some(name);
        let stat = |c: &&Value| c["alt_stat_name"].as_str() == Some(name);
        self.clusters
            .iter()
            .find(named)
            .or_else(|| self.clusters.iter().find(stat))
            .and_then(|c| c["name"].as_str())
    }

    /// The listeners, one line each: name, address, flags, filter chain.
    pub(crate) fn render_listeners(&self) -> String {
        let mut out = String::new();
        let width = self.listeners.iter().map(|l| name(l).len()).max().unwrap_or(0);
        for l in &self.listeners {
            let mut flags = Vec::new();
            if l["use_original_dst"].as_bool() == Some(true) {
                flags.push("use_original_dst".to_string());
            }
            if l["bind_to_port"].as_bool() == Some(false) {
                flags.push("bind_to_port: false".to_string());
            }
            if let Some(dir) = l["traffic_direction"].as_str() {
                flags.push(dir.to_string());
            }
            let _ = writeln!(
                out,
                "  {:width$}  {:18} {}\n  {:width$}  {}",
                name(l),
                address(l).unwrap_or_default(),
                flags.join(", "),
                "",
                chain_summary(l)
            );
        }
        out
    }

    /// The clusters, one line each.
    pub(crate) fn render_clusters(&self) -> String {
        let mut out = String::new();
        let width = self
            .clusters
            .iter()
            .map(|c| c["name"].as_str().unwrap_or("").len())
            .max()
            .unwrap_or(0);
        for c in &self.clusters {
            let mut parts = vec![c["type"].as_str().unwrap_or("").to_string()];
            let endpoints: Vec<String> = c["load_assignment"]["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["lb_endpoints"].as_array().into_iter().flatten())
                .filter_map(|e| socket_address(&e["endpoint"]["address"]))
                .collect();
            if !endpoints.is_empty() {
                parts.push(format!("→ {}", endpoints.join(", ")));
            }
            if let Some(bind) = c["upstream_bind_config"]["source_address"]["address"].as_str() {
                parts.push(format!("from {bind}"));
            }
            if let Some(t) = c["connect_timeout"].as_str() {
                parts.push(format!("connect timeout {t}"));
            }
            let _ = writeln!(
                out,
                "  {:width$}  {}",
                c["name"].as_str().unwrap_or(""),
                parts.join(", ")
            );
        }
        out
    }
}

fn entries(config: &Value, list: &str, key: &str) -> Vec<Value> {
    config[list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e[key].clone())
        .collect()
}

fn name(v: &Value) -> &str {
    v["name"].as_str().unwrap_or("?")
}

fn socket_address(address: &Value) -> Option<String> {
    let sa = &address["socket_address"];
    let ip = sa["address"].as_str()?;
    let port = sa["port_value"].as_u64().unwrap_or(0);
    Some(if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    })
}

fn address(listener: &Value) -> Option<String> {
    socket_address(&listener["address"])
}

/// Envoy's statistics form of a listener address: `0.0.0.0:15001` → `0.0.0.0_15001`, `[::]:15001` →
/// `[__]_15001`.
fn stat_address(address: &str) -> String {
    match address.rsplit_once(':') {
        Some((ip, port)) => format!("{}_{port}", ip.replace(':', "_")),
        None => address.to_string(),
    }
}

/// `tcp_proxy → cluster` or `http_connection_manager PREFIX: filters → cluster`.
fn chain_summary(listener: &Value) -> String {
    let Some(filter) = listener["filter_chains"][0]["filters"][0].as_object() else {
        return "(no filter chain)".to_string();
    };
    let config = &filter["typed_config"];
    match filter["name"].as_str().unwrap_or("") {
        "envoy.filters.network.tcp_proxy" => {
            format!("tcp_proxy → cluster {}", config["cluster"].as_str().unwrap_or("?"))
        }
        "envoy.filters.network.http_connection_manager" => {
            let filters: Vec<String> = config["http_filters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| match f["name"].as_str().unwrap_or("?") {
                    "envoy.filters.http.fault" => format!("fault ({})", fault_summary(&f["typed_config"])),
                    "envoy.filters.http.router" => "router".to_string(),
                    other => other.to_string(),
                })
                .collect();
            let clusters: Vec<&str> = config["route_config"]["virtual_hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|vh| vh["routes"].as_array().into_iter().flatten())
                .filter_map(|r| r["route"]["cluster"].as_str())
                .collect();
            format!(
                "http_connection_manager {}: {} → cluster {}",
                config["stat_prefix"].as_str().unwrap_or("?"),
                filters.join(", "),
                clusters.join(", ")
            )
        }
        other => other.to_string(),
    }
}

/// An `HTTPFault` config in words: `delay 5s on 0.5 %, abort 503 on 100 %`.
pub(crate) fn fault_summary(fault: &Value) -> String {
    let mut parts = Vec::new();
    let delay = &fault["delay"];
    if delay.is_object() {
        let what = match delay["fixed_delay"].as_str() {
            Some(d) => format!("delay {d}"),
            None => "delay from x-envoy-fault-delay-request".to_string(),
        };
        parts.push(format!("{what} on {}", percent(&delay["percentage"])));
    }
    let abort = &fault["abort"];
    if abort.is_object() {
        let what = if let Some(s) = abort["http_status"].as_u64() {
            format!("abort {s}")
        } else if let Some(s) = abort["grpc_status"].as_u64() {
            format!("abort grpc-status {s}")
        } else {
            "abort from x-envoy-fault-abort-request".to_string()
        };
        parts.push(format!("{what} on {}", percent(&abort["percentage"])));
    }
    let limit = &fault["response_rate_limit"];
    if limit.is_object() {
        let what = match limit["fixed_limit"]["limit_kbps"].as_u64() {
            Some(k) => format!("response limit {k} kbps"),
            None => "response limit from x-envoy-fault-throughput-response".to_string(),
        };
        parts.push(format!("{what} on {}", percent(&limit["percentage"])));
    }
    if parts.is_empty() {
        "no fault".to_string()
    } else {
        parts.join(", ")
    }
}

/// A `FractionalPercent` as a percentage (`50/TEN_THOUSAND` → `0.5 %`).
fn percent(p: &Value) -> String {
    let numerator = p["numerator"].as_u64().unwrap_or(0) as f64;
    let scale = match p["denominator"].as_str() {
        Some("TEN_THOUSAND") => 100.0,
        Some("MILLION") => 10_000.0,
        _ => 1.0,
    };
    format!("{} %", numerator / scale)
}

/// The trace of one call.
pub(crate) fn render_call(n: usize, call: &Call, dump: &Dump, access: &[BTreeMap<String, String>]) -> String {
    let mut out = String::new();
    let reply = call.reply.as_ref();
    let client = reply.map(|r| r.client.to_string()).unwrap_or_else(|_| "?".to_string());
    let _ = writeln!(
        out,
        "[{n}] {} {client} → GET http://{}{}   ({})",
        call.from, call.target, call.path, call.why
    );
    let line = |out: &mut String, label: &str, text: &str| {
        let _ = writeln!(out, "    {label:9} {text}");
    };

    // Capture: which REDIRECT rule counted the connection, and where that lands.
    let mut accepted_by: Option<&Value> = None;
    match &call.nat {
        None => line(
            &mut out,
            "capture",
            "none (explicit mode: no capture rules, the client dials what it means)",
        ),
        Some(moved) => {
            let redirects: Vec<&(NatRule, u64)> = moved.iter().filter(|(r, _)| r.redirect_port().is_some()).collect();
            if let Some((rule, _)) = redirects.first() {
                let port = rule.redirect_port().unwrap_or(0);
                accepted_by = dump.wildcard_listener(port, call.target.is_ipv6());
                let on = accepted_by
                    .map(|l| format!(", accepted by {} on {}", name(l), address(l).unwrap_or_default()))
                    .unwrap_or_default();
                line(
                    &mut out,
                    "capture",
                    &format!("iptables nat {}: REDIRECT to :{port}{on}", rule.chain()),
                );
                for (r, _) in moved.iter().filter(|(r, _)| r.returns()) {
                    let why = r.comment().map(str::to_string).unwrap_or_else(|| r.rule.clone());
                    line(
                        &mut out,
                        "",
                        &format!("the sidecar's upstream hop was not captured again: {why}"),
                    );
                }
            } else {
                let why: Vec<String> = moved
                    .iter()
                    .filter(|(r, _)| r.returns())
                    .map(|(r, _)| r.comment().map(str::to_string).unwrap_or_else(|| r.rule.clone()))
                    .collect();
                let why = if why.is_empty() {
                    "no nat rule matched".to_string()
                } else {
                    why.join("; ")
                };
                line(&mut out, "capture", &format!("not captured: nat RETURN ({why})"));
            }
        }
    }

    // The access-log line of this connection (matched by the client's address).
    let entry = reply.ok().and_then(|r| {
        access
            .iter()
            .find(|e| e.get("remote").map(String::as_str) == Some(&r.client.to_string()))
    });
    if let Some(e) = entry {
        line(
            &mut out,
            "orig dst",
            &format!("{} (the access log's downstream local address)", field(e, "local")),
        );
    }

    // The listener that counted the connection.
    let counted: Vec<&str> = call
        .stats
        .keys()
        .filter_map(|k| k.strip_prefix("listener.")?.strip_suffix(".downstream_cx_total"))
        .filter(|a| !a.contains(".worker_"))
        .collect();
    let listener = counted.first().and_then(|a| dump.listener_by_stat(a));
    match (listener, accepted_by) {
        (None, _) => line(
            &mut out,
            "listener",
            "none: no listener statistic moved, the sidecar never saw it",
        ),
        (Some(l), Some(a)) if name(l) != name(a) => line(
            &mut out,
            "listener",
            &format!(
                "{} (handed off: use_original_dst found the listener owning the original destination)",
                name(l)
            ),
        ),
        (Some(l), Some(_)) => line(
            &mut out,
            "listener",
            &format!(
                "{} (no listener owns the original destination: the passthrough keeps it)",
                name(l)
            ),
        ),
        (Some(l), None) => line(
            &mut out,
            "listener",
            &format!("{} ({})", name(l), address(l).unwrap_or_default()),
        ),
    }

    // The filter chain: what the fault filter did, where the router or tcp_proxy went.
    if let Some(l) = listener {
        let filter = l["filter_chains"][0]["filters"][0]["name"].as_str().unwrap_or("");
        if filter == "envoy.filters.network.http_connection_manager" {
            let prefix = l["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"]
                .as_str()
                .unwrap_or("");
            let moved = |what: &str| {
                call.stats
                    .get(&format!("http.{prefix}.fault.{what}"))
                    .copied()
                    .unwrap_or(0)
            };
            let mut faults = Vec::new();
            if moved("delays_injected") > 0 {
                faults.push("delay injected (DI)");
            }
            if moved("aborts_injected") > 0 {
                faults.push("abort injected (FI)");
            }
            let faults = if faults.is_empty() {
                "nothing injected".to_string()
            } else {
                faults.join(", ")
            };
            line(
                &mut out,
                "filters",
                &format!("http_connection_manager {prefix} → fault filter: {faults}"),
            );
        } else {
            line(&mut out, "filters", "tcp_proxy (bytes both ways)");
        }
    }
    let cluster = entry
        .map(|e| field(e, "cluster"))
        .filter(|c| *c != "-")
        .map(|c| dump.cluster(c).unwrap_or(c).to_string())
        .or_else(|| {
            call.stats
                .keys()
                .filter_map(|k| k.strip_prefix("cluster.")?.strip_suffix(".upstream_cx_total"))
                .chain(
                    call.stats
                        .keys()
                        .filter_map(|k| k.strip_prefix("cluster.")?.strip_suffix(".upstream_rq_total")),
                )
                .find_map(|s| dump.cluster(s))
                .map(str::to_string)
        });
    if listener.is_some() {
        let upstream = entry.map(|e| field(e, "upstream")).filter(|u| *u != "-");
        let text = match (&cluster, upstream) {
            (Some(c), Some(u)) => format!("cluster {c}, host {u}"),
            (Some(c), None) => format!("cluster {c}, no upstream connection"),
            (None, _) => "none".to_string(),
        };
        line(&mut out, "upstream", &text);
    }
    if let Some(e) = entry {
        let (rx, tx, ms) = (field(e, "rx"), field(e, "tx"), field(e, "duration"));
        let text = if field(e, "method") == "-" {
            format!(
                "TCP session: {rx} bytes in, {tx} bytes out, {ms} ms, flags {}",
                field(e, "flags")
            )
        } else {
            format!(
                "{} {} {} {} → {} {} {}, body bytes {rx} in, {tx} out, {ms} ms",
                field(e, "method"),
                field(e, "path"),
                field(e, "protocol"),
                field(e, "local"),
                field(e, "code"),
                field(e, "flags"),
                field(e, "details")
            )
        };
        line(&mut out, "log", &text);
    }

    match reply {
        Ok(r) => {
            let body = String::from_utf8_lossy(&r.body);
            let mut body = body.lines().next().unwrap_or("").to_string();
            if body.len() > 110 {
                body.truncate(107);
                body.push_str("...");
            }
            let server = r.header("server").map(|s| format!(", server: {s}")).unwrap_or_default();
            line(
                &mut out,
                "response",
                &format!("{} {}{server}  {body}", r.status, r.reason()),
            );
        }
        Err(e) => line(&mut out, "response", &format!("none: {e}")),
    }
    out
}

fn field<'a>(e: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    e.get(key).map(String::as_str).unwrap_or("-")
}

//! Shared helpers of the integration tests: the Kuma reference folder and Kuma's golden normalisation.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use meshcap_iptables::{Config, RuleSet};

/// `<reference>/kuma-iptables`, or `None` after a loud skip.
pub fn kuma_ref(test: &str) -> Option<PathBuf> {
    meshcap_testns::reference_dir(test).map(|d| d.join("kuma-iptables"))
}

/// Read a reference file.
pub fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Kuma's golden normalisation of `iptables-save` output (INDEX §1.4): drop `#` lines, `-o <word>` →
/// `-o ifPlaceholder`, strip the counters of chain declarations.
pub fn normalize_save(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let line = if line.starts_with(':') {
            match line.rfind(" [") {
                Some(i) if line.ends_with(']') => line[..i].to_string(),
                _ => line.to_string(),
            }
        } else {
            placeholder_out_interface(line)
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `-o <word>` → `-o ifPlaceholder`.
pub fn placeholder_out_interface(line: &str) -> String {
    let mut words: Vec<&str> = line.split(' ').collect();
    for i in 1..words.len() {
        if words[i - 1] == "-o" {
            words[i] = "ifPlaceholder";
        }
    }
    words.join(" ")
}

/// The normalisation of kumactl's dry-run unit test (INDEX §2): loopback placeholder, comments
/// removed, the kuma-dp DNS rule's target replaced by `dnsJumpTargetPlaceholder`.
pub fn normalize_dry_run(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut line = placeholder_out_interface(line);
        while let Some(i) = line.find("-m comment --comment \"") {
            let rest = &line[i + "-m comment --comment \"".len()..];
            let Some(end) = rest.find('"') else { break };
            let cut = i + "-m comment --comment \"".len() + end + 1;
            let cut = if line[cut..].starts_with(' ') { cut + 1 } else { cut };
            line.replace_range(i..cut, "");
        }
        if line.starts_with("-I OUTPUT ")
            && line.contains(" -p udp --dport 53 -m owner --uid-owner ")
            && let Some(i) = line.rfind(" -j ")
        {
            line.replace_range(i + 4.., "dnsJumpTargetPlaceholder");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Rules of every family of the config, as the dry run lists them.
pub fn rule_sets(config: &Config) -> Vec<RuleSet> {
    config.families().iter().map(|f| RuleSet::build(config, *f)).collect()
}

/// The with-multiple-flags parameter set (INDEX §1.2), as kumactl flags map onto the builder.
pub fn with_multiple_flags() -> Config {
    Config::builder()
        .proxy_uid(5678)
        .capture_all_dns()
        .vnets(["docker0:172.17.0.0/16", "br+:172.18.0.0/16", "iface:::1/64"])
        .and_then(|b| b.exclude_outbound_ports_for_uids(["53,3000-5000:106-108"]))
        .and_then(|b| b.exclude_outbound_ips(["10.0.0.1,192.168.0.0/24,fe80::1", "fd00::/8"]))
        .and_then(|b| b.exclude_outbound_ports("1,22,333"))
        .and_then(|b| b.exclude_inbound_ports("4444,55555"))
        .and_then(|b| {
            b.exclude_inbound_ips([
                "192.168.0.1,172.32.16.8/16,fe80::/10",
                "a81b:a033:6399:73c7:72b6:aa8c:6f22:7098",
            ])
        })
        .and_then(|b| b.build())
        .expect("with-multiple-flags config")
}

/// The with-multiple-config-flags sources (INDEX §1.2): `/1.yaml`, `/2.yaml`, then stdin.
pub const CONFIG_LAYERS: [(&str, &str); 3] = [
    ("/1.yaml", "redirect:\n  dns:\n    enabled: false\n    port: 7777\n"),
    (
        "/2.yaml",
        "redirect:\n  dns:\n    enabled: true\n    port: 8888\n  outbound:\n    excludePortsForIPs:\n      - 10.11.12.13\n      - 172.14.15.16/32\n  inbound:\n    excludePorts: [10000, 20000]\n",
    ),
    (
        "-",
        r#"{
  "redirect": {
    "vnet": {"networks": ["docker2:10.0.0.0/8", "docker0:172.17.0.0/16", "br+:172.18.0.0/16", "iface:::1/64"]},
    "dns": {"enabled": true, "captureAll": true},
    "inbound": {
      "enabled": true,
      "excludePorts": [4444, 55555],
      "excludePortsForIPs": ["192.168.0.1,172.32.16.8/16,fe80::/10", "a81b:a033:6399:73c7:72b6:aa8c:6f22:7098"]
    },
    "outbound": {
      "enabled": true,
      "excludePortsForUIDs": ["1", "2-3:4-5"],
      "excludePorts": [6, 77, 888],
      "excludePortsForIPs": ["10.0.0.1,192.168.0.0/24,fe80::1", "fd00::/8"]
    }
  }
}"#,
    ),
];

/// The with-multiple-config-flags configuration, loaded through the layered config sources.
pub fn with_multiple_config_flags() -> Config {
    let mut b = Config::builder().proxy_uid(5678);
    for (name, text) in CONFIG_LAYERS {
        b = b.layer_yaml(text, name).expect(name);
    }
    b.build().expect("with-multiple-config-flags config")
}

/// Docker- and kube-proxy-like state in nat and filter (both families where it applies).
pub const FOREIGN_V4: &str = "*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-USER - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -j KUBE-FIREWALL
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-USER -j RETURN
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-AAAA - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-BBBB - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
-A KUBE-SEP-AAAA -s 10.244.0.5/32 -m comment --comment \"default/web\" -j KUBE-MARK-MASQ
-A KUBE-SEP-AAAA -p tcp -m comment --comment \"default/web\" -m tcp -j DNAT --to-destination 10.244.0.5:8080
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"default/web cluster IP\" -m tcp --dport 80 -j KUBE-SVC-BBBB
-A KUBE-SVC-BBBB -m comment --comment \"default/web -> 10.244.0.5:8080\" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-AAAA
COMMIT
";

pub const FOREIGN_V6: &str = "*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A KUBE-SERVICES -d fd00:96::10/128 -p tcp -m comment --comment \"default/web cluster IP\" -m tcp --dport 80 -j RETURN
COMMIT
";

/// Load [`FOREIGN_V4`] and [`FOREIGN_V6`] into `ns` with the default iptables.
pub fn preload(ns: &meshcap_testns::NetNs) {
    for (tool, text) in [("iptables-restore", FOREIGN_V4), ("ip6tables-restore", FOREIGN_V6)] {
        let mut child = ns
            .command(tool)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("restore");
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "{tool} of the foreign rules");
    }
}

/// A listener bound inside `ns`, checked for pending connections without blocking.
pub struct Probe {
    listener: std::net::TcpListener,
    /// What it stands for, in assertion messages.
    pub name: &'static str,
}

impl Probe {
    /// Bind `addr` inside `ns`.
    pub fn bind(ns: &meshcap_testns::NetNs, addr: &'static str, name: &'static str) -> Probe {
        let listener = ns
            .enter(move || std::net::TcpListener::bind(addr))
            .expect("enter")
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        Probe { listener, name }
    }

    /// Whether a connection is waiting (the handshake completes in the kernel before `accept`).
    pub fn took(&self) -> bool {
        match self.listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("{}: accept: {e}", self.name),
        }
    }
}

/// Connect from inside `ns` (this process's uid).
pub fn connect_from(ns: &meshcap_testns::NetNs, to: std::net::SocketAddr) {
    ns.enter(move || std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(5)))
        .expect("enter")
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
}

/// Connect as `uid`/`gid` from a child process inside `ns` (`setpriv` drops the ids before the
/// connect).
pub fn connect_as(ns: &meshcap_testns::NetNs, uid: u32, host: &str, port: u16) {
    let script = format!("exec 3<>/dev/tcp/{host}/{port}");
    let ids = [format!("--reuid={uid}"), format!("--regid={uid}")];
    let status = ns
        .command("setpriv")
        .args(&ids)
        .arg("--clear-groups")
        .args(["bash", "-c", &script])
        .status()
        .expect("setpriv");
    assert!(status.success(), "connect as uid {uid} to {host}:{port}");
}

/// An error and its sources, joined with `: ` (what a command-line tool prints).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

pub mod strategies;

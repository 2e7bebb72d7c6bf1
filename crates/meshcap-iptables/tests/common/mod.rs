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

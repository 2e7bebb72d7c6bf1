//! `check_loop_safety`: the proxy's own outbound TCP must never reach a REDIRECT. Static checks on
//! rendered rule sets (Kuma's presets, foreign rules, removed and mismatched owner rules), and (root)
//! the same verdicts checked against the kernel: a connection made as the uid is redirected exactly
//! when the checker says so.

mod common;

use std::time::Duration;

use common::{Probe, connect_as};
use meshcap_iptables::{Config, Executor, Family, Installer, RetryPolicy, RuleSet, check_loop_safety};
use meshcap_testns::{NetNs, PodPair, privileged};

fn save(config: &Config, family: Family) -> String {
    RuleSet::build(config, family).render_save()
}

#[test]
fn kuma_presets_are_safe_for_their_uid_only() {
    for config in [
        Config::default(),
        common::with_multiple_flags(),
        common::with_multiple_config_flags(),
    ] {
        for family in Family::ALL {
            let text = save(&config, family);
            assert_eq!(check_loop_safety(&text, config.proxy_uid()), Ok(()), "{family}\n{text}");
            let risk = check_loop_safety(&text, 1000).unwrap_err();
            assert_eq!(risk.uid, 1000);
            assert!(risk.exempt_uids.contains(&config.proxy_uid().to_string()), "{risk}");
            assert_eq!(
                risk.chains,
                ["OUTPUT", "KUMA_MESH_OUTBOUND", "KUMA_MESH_OUTBOUND_REDIRECT"],
                "{risk}"
            );
            assert!(risk.rule.starts_with("-A KUMA_MESH_OUTBOUND_REDIRECT "), "{risk}");
            assert!(risk.rule.ends_with("-j REDIRECT --to-ports 15001"), "{risk}");
        }
    }
}

/// The save text without the lines containing `needle`.
fn without(text: &str, needle: &str) -> String {
    let out: String = text
        .lines()
        .filter(|l| !l.contains(needle))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(out, text, "`{needle}` removed nothing");
    out
}

#[test]
fn a_missing_owner_return_is_a_loop_risk_with_a_clear_message() {
    let text = save(&Config::default(), Family::V4);
    let broken = without(&text, "return outbound traffic owned by UID 5678");
    let risk = check_loop_safety(&broken, 5678).unwrap_err();
    assert!(risk.exempt_uids.is_empty(), "{risk}");
    assert_eq!(risk.port, 80);
    assert_eq!(
        risk.to_string(),
        "loop risk: outbound tcp connections of uid 5678 (e.g. to port 80) are redirected by \
         `-A KUMA_MESH_OUTBOUND_REDIRECT -p tcp -m comment --comment \"kuma/mesh/transparent/proxy/redirect TCP \
         traffic to envoy (port 15001)\" -j REDIRECT --to-ports 15001` (OUTPUT -> KUMA_MESH_OUTBOUND -> \
         KUMA_MESH_OUTBOUND_REDIRECT), so the proxy would capture its own upstream connections; no rule exempts \
         any uid (the owner RETURN rule is missing): reinstall the rules with the proxy's uid 5678"
    );
    // Another uid: the message names the uid the rules were made for.
    let risk = check_loop_safety(&text, 1000).unwrap_err();
    assert!(
        risk.to_string().ends_with(
            "the rules exempt uid 5678 instead: run the proxy as uid 5678 or reinstall the rules for uid 1000"
        ),
        "{risk}"
    );
}

#[test]
fn uid_exclusions_count_port_by_port() {
    let config = Config::builder()
        .exclude_outbound_ports_for_uids(["1000", "tcp:80,443:1001", "udp:*:1002"])
        .unwrap()
        .build()
        .unwrap();
    let text = save(&config, Family::V4);
    // All ports of uid 1000 are excluded: nothing of it is redirected.
    assert_eq!(check_loop_safety(&text, 1000), Ok(()));
    // 1001 only for 80 and 443: any other port loops.
    let risk = check_loop_safety(&text, 1001).unwrap_err();
    assert_eq!(risk.port, 1, "{risk}");
    // UDP exclusions do not protect TCP.
    assert!(check_loop_safety(&text, 1002).is_err());
    assert_eq!(check_loop_safety(&text, 5678), Ok(()));
    assert_eq!(
        check_loop_safety(&text, 1001).unwrap_err().exempt_uids,
        ["1000", "5678"]
    );
}

#[test]
fn include_ports_are_matched_against_port_exclusions() {
    // Only 8080 is captured and uid 1000 is excluded on 8080: uid 1000 cannot loop.
    let config = Config::builder()
        .include_outbound_ports("8080")
        .unwrap()
        .exclude_outbound_ports_for_uids(["tcp:8080:1000"])
        .unwrap()
        .build()
        .unwrap();
    let text = save(&config, Family::V6);
    assert_eq!(check_loop_safety(&text, 1000), Ok(()));
    let risk = check_loop_safety(&text, 1001).unwrap_err();
    assert_eq!(risk.port, 8080, "{risk}");
}

#[test]
fn disabled_outbound_capture_cannot_loop() {
    let config = Config::builder().redirect_outbound(false).build().unwrap();
    for family in Family::ALL {
        assert_eq!(check_loop_safety(&save(&config, family), 1000), Ok(()));
    }
    // No nat table at all, or no text.
    assert_eq!(check_loop_safety("", 1000), Ok(()));
    assert_eq!(
        check_loop_safety("*filter\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j REDIRECT\nCOMMIT\n", 1),
        Ok(())
    );
}

#[test]
fn foreign_rules_are_followed() {
    // Installed after Docker and kube-proxy: their chains are walked too (DNAT to a service does not
    // loop), the verdict is the one of our rules.
    let mut text = common::FOREIGN_V4.to_string();
    text.push_str(&save(&Config::default(), Family::V4).replace(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n",
        "*nat\n",
    ));
    let merged = merge_nat(&text);
    assert_eq!(check_loop_safety(&merged, 5678), Ok(()), "{merged}");
    assert!(check_loop_safety(&merged, 1000).is_err());
    // A foreign REDIRECT before our chain that catches everything is a loop for every uid.
    let hostile = merged.replace(
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A OUTPUT -p tcp -j REDIRECT --to-ports 9999\n",
    );
    let risk = check_loop_safety(&hostile, 5678).unwrap_err();
    assert_eq!(risk.chains, ["OUTPUT"]);
    assert_eq!(risk.rule, "-A OUTPUT -p tcp -j REDIRECT --to-ports 9999");
    // A foreign rule that may or may not match (a mark) protects nothing, and a REDIRECT behind one
    // is still a risk.
    let marked = without(&merged, "return outbound traffic owned by UID 5678").replace(
        "-A KUMA_MESH_OUTBOUND -d 127.0.0.1/32",
        "-A KUMA_MESH_OUTBOUND -m mark --mark 0x1 -j RETURN\n-A KUMA_MESH_OUTBOUND -d 127.0.0.1/32",
    );
    assert!(check_loop_safety(&marked, 5678).is_err());
}

/// One nat block out of a text with two (foreign rules first, then ours without the built-in chain
/// declarations), as iptables-save would print after installing.
fn merge_nat(text: &str) -> String {
    let mut head = String::new();
    let mut decls = String::new();
    let mut rules = String::new();
    let mut in_nat = false;
    let mut out = String::new();
    for line in text.lines() {
        if line == "*nat" {
            in_nat = true;
            continue;
        }
        if in_nat {
            if line == "COMMIT" {
                continue;
            }
            if line.starts_with(':') {
                decls.push_str(line);
                decls.push('\n');
            } else if line.starts_with("-A") {
                rules.push_str(line);
                rules.push('\n');
            } else if line.starts_with('*') {
                in_nat = false;
                head.push_str(line);
                head.push('\n');
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    format!("{out}*nat\n{decls}{rules}COMMIT\n{head}")
}

#[test]
fn counters_comments_and_garbage_are_tolerated() {
    let text = save(&Config::default(), Family::V4);
    let with_counters: String = text
        .lines()
        .map(|l| {
            if l.starts_with("-A") {
                format!("[3:180] {l}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let noisy = format!("# Generated by iptables-save\n{with_counters}garbage \"unterminated\n");
    assert_eq!(check_loop_safety(&noisy, 5678), Ok(()));
    assert!(check_loop_safety(&noisy, 1).is_err());
}

/// Which of `probes` got the connection (waiting for the handshake to land), and that only it did.
fn landed<'a>(probes: &[&'a Probe]) -> &'a Probe {
    let mut got = None;
    assert!(
        meshcap_testns::wait_until(Duration::from_secs(5), || {
            got = probes.iter().copied().find(|p| p.took());
            got.is_some()
        }),
        "the connection arrived nowhere"
    );
    let got = got.unwrap();
    for p in probes {
        assert!(std::ptr::eq(*p, got) || !p.took(), "{} got a connection too", p.name);
    }
    got
}

fn nat_save(ns: &NetNs, family: Family) -> String {
    ns.iptables_save(family == Family::V6).unwrap()
}

/// Delete the first nat rule of `chain` whose text contains `needle` (by position).
fn delete_rule(ns: &NetNs, family: Family, chain: &str, needle: &str) {
    let tool = if family == Family::V4 { "iptables" } else { "ip6tables" };
    let out = ns.run([tool, "-t", "nat", "-S", chain]).unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let n = listing
        .lines()
        .filter(|l| l.starts_with("-A "))
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no rule with `{needle}` in {chain}:\n{listing}"));
    ns.run([tool, "-t", "nat", "-D", chain, &(n + 1).to_string()]).unwrap();
}

#[test]
fn verdicts_agree_with_the_kernel() {
    if !privileged("verdicts_agree_with_the_kernel") {
        return;
    }
    for program in ["setpriv", "bash"] {
        assert!(meshcap_testns::have_program(program), "{program} is needed");
    }
    let pair = PodPair::new("ih").unwrap();
    let installer = Installer::new(Executor::netns(pair.pod.name())).with_retry(RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    });
    // The proxy's outbound listener and a server on the peer for each port tried.
    let proxy = Probe::bind(&pair.pod, "[::]:15001", "the proxy (pod :15001)");
    let peer_ports = [1u16, 80, 443, 8080];
    let peers: Vec<Probe> = peer_ports
        .iter()
        .map(|p| Probe::bind(&pair.peer, Box::leak(format!("[::]:{p}").into_boxed_str()), "the peer"))
        .collect();

    let exclusions = Config::builder()
        .exclude_outbound_ports_for_uids(["tcp:80,443:1001"])
        .unwrap()
        .build()
        .unwrap();
    // (configuration, rule deleted after installing, uid the proxy runs as, the peer ports the
    // kernel redirects for that uid)
    let cases: [(&Config, Option<&str>, u32, &[u16]); 5] = [
        (&Config::default(), None, 5678, &[]),
        (&Config::default(), None, 1000, &[1, 80, 443, 8080]),
        (
            &Config::default(),
            Some("return outbound traffic owned by UID 5678"),
            5678,
            &[1, 80, 443, 8080],
        ),
        (&exclusions, None, 1001, &[1, 8080]),
        (&exclusions, None, 5678, &[]),
    ];
    let mut connections = 0;
    for (config, delete, uid, redirected) in cases {
        for (family, peer) in [(Family::V4, PodPair::PEER_V4), (Family::V6, PodPair::PEER_V6)] {
            installer.install(&RuleSet::build(config, family)).unwrap();
            if let Some(needle) = delete {
                delete_rule(&pair.pod, family, "KUMA_MESH_OUTBOUND", needle);
            }
            let verdict = check_loop_safety(&nat_save(&pair.pod, family), uid);
            let what = format!("{family} uid {uid}, deleted {delete:?}: {verdict:?}");
            for (port, peer_probe) in peer_ports.iter().zip(&peers) {
                connect_as(&pair.pod, uid, peer, *port);
                let got = landed(&[&proxy, peer_probe]);
                let expected = if redirected.contains(port) { &proxy } else { peer_probe };
                assert!(
                    std::ptr::eq(got, expected),
                    "{what}: port {port} landed on {}",
                    got.name
                );
                connections += 1;
            }
            match &verdict {
                Ok(()) => assert!(redirected.is_empty(), "{what}: the kernel redirects {redirected:?}"),
                Err(risk) => assert!(
                    redirected.contains(&risk.port),
                    "{what}: port {} is not redirected by the kernel",
                    risk.port
                ),
            }
        }
    }
    assert_eq!(connections, 40);
}

mod properties {
    use super::common::strategies::{config, host};
    use meshcap_iptables::{RuleSet, check_loop_safety};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every rule set Kuma's builder makes is safe for the uid it was made for, and unsafe for
        /// another uid that no exclusion covers (when outbound capture is on and not every
        /// destination is excluded).
        #[test]
        fn built_rules_are_safe_for_their_uid(config in config(), host in host(), other in 0u32..100_000) {
            for family in config.families() {
                let text = RuleSet::build_with(&config, *family, &host).render_save();
                prop_assert_eq!(check_loop_safety(&text, config.proxy_uid()), Ok(()));
                let excluded = config.exclude_outbound_ports_for_uids().iter().any(|x| {
                    let r = x.uids();
                    r.first() <= other && other <= r.last()
                });
                let everywhere = config
                    .outbound()
                    .exclude_ips()
                    .iter()
                    .any(|a| a.family() == *family && a.prefix_len() == 0);
                if other != config.proxy_uid() && !excluded && !everywhere && config.outbound().enabled() {
                    prop_assert!(check_loop_safety(&text, other).is_err());
                }
            }
        }

        /// Arbitrary text never panics.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}", uid in any::<u32>()) {
            let _ = check_loop_safety(&text, uid);
            let _ = check_loop_safety(&format!("*nat\n{text}\nCOMMIT\n"), uid);
        }

        /// Rule-shaped lines in random order and with random targets never panic, and mentioning
        /// only the uid's own exemption first keeps it safe.
        #[test]
        fn random_rule_lines_never_panic(
            lines in prop::collection::vec(
                (
                    prop::sample::select(vec!["OUTPUT", "A", "B"]),
                    prop::sample::select(vec!["", "-p tcp ", "-p udp ", "! -p tcp ", "-o lo ", "! -o lo ", "-d 127.0.0.1/32 ", "-d 10.0.0.0/8 ", "! -d ::1/128 ", "-m owner --uid-owner 7 ", "-m owner ! --uid-owner 7 ", "-m tcp --dport 80 ", "-m multiport --dports 1:100,200 ", "-m mark --mark 1 ", "-m tcp ! --dport 1:65535 "]),
                    prop::sample::select(vec!["RETURN", "ACCEPT", "REDIRECT --to-ports 1", "A", "B", "LOG", "DNAT --to-destination 1.2.3.4"]),
                    any::<bool>(),
                ),
                0..12,
            ),
            uid in 0u32..10,
        ) {
            let mut text = String::from("*nat\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n");
            for (chain, m, target, goto) in &lines {
                let jump = if *goto && (*target == "A" || *target == "B") { "-g" } else { "-j" };
                text.push_str(&format!("-A {chain} {m}{jump} {target}\n"));
            }
            text.push_str("COMMIT\n");
            let _ = check_loop_safety(&text, uid);
            let guarded = text.replacen(":B - [0:0]\n", ":B - [0:0]\n-A OUTPUT -m owner --uid-owner 7 -j ACCEPT\n", 1);
            if uid == 7 {
                prop_assert_eq!(check_loop_safety(&guarded, uid), Ok(()));
            }
        }
    }
}

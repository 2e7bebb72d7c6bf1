//! Conformance with Kuma's own output (reference data in `MESHCAP_REFERENCE_DIR`, see
//! `kuma-iptables/INDEX.md`): the kumactl dry-run goldens, the hand-verified restore inputs in
//! `derived/`, and the debian-12 (iptables-nft 1.8.9) `iptables-save` goldens rendered from the model.
//! The installed variant of the last group is in `installed.rs`.

mod common;

use common::{kuma_ref, normalize_dry_run, normalize_save, read, rule_sets};
use meshcap_iptables::{Config, Family, HostFacts, IpFamilyMode, Port, RuleSet, render_dry_run};

fn port(n: u16) -> Port {
    Port::new(n).expect("non-zero port")
}

/// kumactl's dry-run unit test: IPv4 only, kuma-dp user root (uid 0).
fn dry_run_base() -> meshcap_iptables::ConfigBuilder {
    Config::builder().proxy_uid(0).ip_family_mode(IpFamilyMode::Ipv4)
}

fn dry_run(config: &Config, host: &HostFacts) -> String {
    let sets: Vec<RuleSet> = config
        .families()
        .iter()
        .map(|f| RuleSet::build_with(config, *f, host))
        .collect();
    render_dry_run(&sets, false)
}

#[test]
fn kumactl_dry_run_goldens() {
    let Some(dir) = kuma_ref("kumactl_dry_run_goldens") else {
        return;
    };
    let dir = dir.join("kumactl-dry-run");
    let host = HostFacts::default();
    let excluded = [
        "tcp:1900,1902,1000-2000:106-108",
        "tcp:2900,2902,3000-5000:203",
        "udp:3900,3902,4000-6000:303",
    ];
    let cases: Vec<(&str, Config, HostFacts)> = vec![
        (
            "install-transparent-proxy.defaults.golden.txt",
            dry_run_base().build().unwrap(),
            host.clone(),
        ),
        (
            "install-transparent-proxy.overrides.golden.txt",
            dry_run_base()
                .redirect_outbound_port(port(12345))
                .redirect_inbound_port(port(12346))
                .exclude_outbound_ports("2000,2001")
                .and_then(|b| b.exclude_inbound_ports("1000,1001"))
                .and_then(|b| b.build())
                .unwrap(),
            host.clone(),
        ),
        (
            // No conntrack module found by the dry run …
            "install-transparent-proxy.dns.no-conntrack.golden.txt",
            dry_run_base()
                .capture_all_dns()
                .redirect_dns_port(port(12345))
                .build()
                .unwrap(),
            host.clone().with_conntrack_zones(false),
        ),
        (
            // … or the zone split skipped explicitly: same output.
            "install-transparent-proxy.dns.no-conntrack.golden.txt",
            dry_run_base()
                .capture_all_dns()
                .redirect_dns_port(port(12345))
                .skip_dns_conntrack_zone_split(true)
                .build()
                .unwrap(),
            host.clone(),
        ),
        (
            "install-transparent-proxy.excludedports.txt",
            dry_run_base()
                .exclude_outbound_ports_for_uids(excluded)
                .and_then(|b| b.build())
                .unwrap(),
            host.clone(),
        ),
        (
            "install-transparent-proxy.excludedports_simpler.txt",
            dry_run_base()
                .exclude_outbound_ports_for_uids(excluded)
                .and_then(|b| b.build())
                .unwrap(),
            host.clone(),
        ),
        (
            "install-transparent-proxy.excludedports_wildcards.txt",
            dry_run_base()
                .exclude_outbound_ports_for_uids(["*:*:0"])
                .and_then(|b| b.build())
                .unwrap(),
            host.clone(),
        ),
        (
            "install-transparent-proxy.excludedports_allprotos.txt",
            dry_run_base()
                .exclude_outbound_ports_for_uids(["tcp:*:0"])
                .and_then(|b| b.build())
                .unwrap(),
            host.clone(),
        ),
        (
            "install-transparent-proxy.excludedports_onlyuid.txt",
            dry_run_base()
                .exclude_outbound_ports_for_uids(["123"])
                .and_then(|b| b.build())
                .unwrap(),
            host.clone(),
        ),
    ];
    for (file, config, host) in cases {
        let golden = read(dir.join(file));
        // Kuma's test strips comments; the dry run also finds no comment match. Check both ways.
        let with_comments = normalize_dry_run(&dry_run(&config, &host));
        let without = normalize_dry_run(&dry_run(&config, &host.clone().with_comment_match(false)));
        assert_eq!(with_comments, golden, "{file} (comments stripped)");
        assert_eq!(without, golden, "{file} (no comment match)");
    }
}

#[test]
fn derived_restore_inputs_are_byte_identical() {
    let Some(dir) = kuma_ref("derived_restore_inputs_are_byte_identical") else {
        return;
    };
    let dir = dir.join("derived");
    let default = Config::default();
    let mf = common::with_multiple_flags();
    for (file, config, family) in [
        ("default-v4.restore-input.txt", &default, Family::V4),
        ("default-v6.restore-input.txt", &default, Family::V6),
        ("mf-v4.restore-input.txt", &mf, Family::V4),
        ("mf-v6.restore-input.txt", &mf, Family::V6),
    ] {
        let ours = RuleSet::build(config, family).render_restore();
        assert_eq!(ours, read(dir.join(file)), "{file}");
        // And the file parses back into the same model.
        let parsed = RuleSet::parse(&ours, family).unwrap();
        assert_eq!(parsed.render_restore(), ours, "{file} round trip");
    }
}

#[test]
fn derived_save_outputs_match_the_model() {
    let Some(dir) = kuma_ref("derived_save_outputs_match_the_model") else {
        return;
    };
    let dir = dir.join("derived");
    let default = Config::default();
    let mf = common::with_multiple_flags();
    for (file, config, family) in [
        ("default-v4.iptables-nft-save.raw.txt", &default, Family::V4),
        ("default-v6.ip6tables-nft-save.raw.txt", &default, Family::V6),
        ("mf-v4.iptables-nft-save.raw.txt", &mf, Family::V4),
        ("mf-v6.ip6tables-nft-save.raw.txt", &mf, Family::V6),
    ] {
        let raw = read(dir.join(file));
        let ours = RuleSet::build(config, family).render_save();
        assert_eq!(normalize_save(&ours), normalize_save(&raw), "{file}");
        // The real save output parses and re-renders identically (modulo banners).
        let parsed = RuleSet::parse(&raw, family).unwrap();
        assert_eq!(
            normalize_save(&parsed.render_save()),
            normalize_save(&raw),
            "{file} parse"
        );
    }
}

#[test]
fn debian12_save_goldens_from_the_model() {
    let Some(dir) = kuma_ref("debian12_save_goldens_from_the_model") else {
        return;
    };
    let dir = dir.join("container-iptables-save");
    for (stem, config) in [
        ("default", Config::default()),
        ("with-multiple-flags", common::with_multiple_flags()),
        ("with-multiple-config-flags", common::with_multiple_config_flags()),
    ] {
        for (family, tool) in [(Family::V4, "iptables"), (Family::V6, "ip6tables")] {
            let file = format!("debian-12-{stem}.{tool}.golden");
            let golden = read(dir.join(&file));
            let ours = normalize_save(&RuleSet::build(&config, family).render_save());
            assert_eq!(ours, golden, "{file}");
            // Every equivalent golden (same content class) agrees too.
            for alias in [
                format!("debian-12-{stem}.{tool}-nft.golden"),
                format!("ubuntu-24-04-{stem}.{tool}.golden"),
            ] {
                assert_eq!(ours, read(dir.join(&alias)), "{alias}");
            }
        }
    }
}

#[test]
fn dry_run_has_kuma_layout_for_both_families() {
    let config = common::with_multiple_flags();
    let text = render_dry_run(&rule_sets(&config), false);
    assert!(text.starts_with("### IPv4 ###\n\n* raw\n"));
    assert!(text.contains("COMMIT\n\n### IPv6 ###\n\n* raw\n"));
    assert!(text.ends_with("COMMIT\n") && !text.ends_with("\n\n"));
}

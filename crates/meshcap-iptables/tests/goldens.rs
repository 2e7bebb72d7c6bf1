//! Our own rendered output, kept as plain files under `tests/golden/` for regression (the Kuma goldens
//! are in `kuma_conformance.rs`). `MESHCAP_BLESS=1 cargo test -p meshcap-iptables --test goldens`
//! rewrites them; review the diff.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;

use meshcap_iptables::{Config, Family, HostFacts, RuleSet, render_dry_run};

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("MESHCAP_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with MESHCAP_BLESS=1 to create it)", path.display()));
    assert_eq!(
        actual, expected,
        "{name} differs from its golden (MESHCAP_BLESS=1 to update)"
    );
}

fn both(config: &Config, host: &HostFacts) -> Vec<RuleSet> {
    config
        .families()
        .iter()
        .map(|f| RuleSet::build_with(config, *f, host))
        .collect()
}

/// The `derived/extras-v4` parameter set: logging, resolvers (one of them Docker's loopback DNS),
/// include ports, outbound disabled, both insert flags, drop-invalid. Shows the Q2/Q3 fixes.
fn extras() -> Config {
    let resolvers: Vec<IpAddr> = vec!["10.96.0.10".parse().unwrap(), "127.0.0.11".parse().unwrap()];
    Config::builder()
        .iptables_logs(true)
        .redirect_dns(resolvers)
        .include_inbound_ports("8080,8443")
        .unwrap()
        .redirect_outbound(false)
        .inbound_insert_instead_of_append(true)
        .outbound_insert_instead_of_append(true)
        .drop_invalid_packets(true)
        .build()
        .unwrap()
}

#[test]
fn default_dry_run() {
    let c = Config::default();
    check(
        "default.dry-run.txt",
        &render_dry_run(&both(&c, &HostFacts::default()), false),
    );
}

#[test]
fn with_multiple_flags_verbose() {
    let c = common::with_multiple_flags();
    check(
        "with-multiple-flags.verbose.txt",
        &render_dry_run(&both(&c, &HostFacts::default()), true),
    );
}

#[test]
fn extras_restore_and_save() {
    let c = extras();
    let v4 = RuleSet::build(&c, Family::V4);
    check("extras-v4.restore.txt", &v4.render_restore());
    check("extras-v4.save.txt", &v4.render_save());
}

#[test]
fn nft_scripts() {
    let c = common::with_multiple_flags();
    for (family, name) in [
        (Family::V4, "with-multiple-flags-v4.nft"),
        (Family::V6, "with-multiple-flags-v6.nft"),
    ] {
        check(name, &RuleSet::build(&c, family).render_nft("kuma-mesh").unwrap());
    }
}

#[test]
fn docker_host_and_long_uid_exclusions() {
    let ports: Vec<String> = (1..=20).map(|p| (p * 100).to_string()).collect();
    let c = Config::builder()
        .capture_all_dns()
        .exclude_outbound_ports_for_uids([format!("tcp:{}:1000-1010", ports.join(","))])
        .unwrap()
        .build()
        .unwrap();
    let host = HostFacts::default().with_docker_output(true);
    check(
        "docker-long-uid-exclusions.dry-run.txt",
        &render_dry_run(&both(&c, &host), false),
    );
}

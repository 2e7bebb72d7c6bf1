//! Privileged tests (root, iptables, `ip netns`): the installer against a real kernel in throwaway
//! namespaces. Installing into a fresh namespace reproduces Kuma's debian-12 `iptables-save` goldens;
//! install is idempotent, verify sees drift, uninstall removes only ours, and a failing install puts
//! the previous state back.

mod common;

use std::time::Duration;

use common::{kuma_ref, normalize_save, preload, read};
use meshcap_iptables::{
    Backend, ChainName, Config, Drift, Executables, Executor, Family, InstallError, Installer, Match, Outcome,
    RetryPolicy, Rule, RuleSet, Step, Table, Target,
};
use meshcap_testns::{NetNs, privileged};

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_retries: 0,
        sleep_between_retries: Duration::ZERO,
        ..RetryPolicy::default()
    }
}

fn installer(ns: &NetNs) -> Installer {
    Installer::new(Executor::netns(ns.name())).with_retry(fast())
}

/// `iptables-save` of the namespace without the `#` banner lines (they carry a timestamp).
fn save(ns: &NetNs, family: Family) -> String {
    ns.iptables_save(family == Family::V6)
        .expect("iptables-save")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn install_in_fresh_namespace_equals_debian12_goldens() {
    if !privileged("install_in_fresh_namespace_equals_debian12_goldens") {
        return;
    }
    let Some(dir) = kuma_ref("install_in_fresh_namespace_equals_debian12_goldens") else {
        return;
    };
    let dir = dir.join("container-iptables-save");
    for (stem, config) in [
        ("default", Config::default()),
        ("with-multiple-flags", common::with_multiple_flags()),
        ("with-multiple-config-flags", common::with_multiple_config_flags()),
    ] {
        let ns = NetNs::new("ipt").unwrap();
        let inst = installer(&ns);
        assert_eq!(
            inst.detect_backend().unwrap(),
            Backend::Nft,
            "this host's iptables is nft"
        );
        for (family, tool) in [(Family::V4, "iptables"), (Family::V6, "ip6tables")] {
            let rules = RuleSet::build(&config, family);
            let report = inst.install(&rules).unwrap();
            assert_eq!(report.added_rules, rules.rule_count());
            let golden = read(dir.join(format!("debian-12-{stem}.{tool}.golden")));
            let first = save(&ns, family);
            assert_eq!(normalize_save(&first), golden, "{stem} {tool}");
            assert!(inst.verify(&rules).unwrap().is_clean(), "{stem} {tool}");
            // Installing again changes nothing.
            let again = inst.install(&rules).unwrap();
            assert!(again.removed_rules > 0 && again.removed_chains == 4, "{again:?}");
            assert_eq!(save(&ns, family), first, "{stem} {tool}: second install");
            // Uninstall leaves nothing of ours (and no table we emptied).
            inst.uninstall(family).unwrap();
            assert_eq!(save(&ns, family), "", "{stem} {tool}: after uninstall");
        }
    }
}

#[test]
fn foreign_rules_survive_install_and_uninstall_byte_identical() {
    if !privileged("foreign_rules_survive_install_and_uninstall_byte_identical") {
        return;
    }
    for config in [Config::default(), common::with_multiple_flags()] {
        let ns = NetNs::new("ipt").unwrap();
        preload(&ns);
        let before = [save(&ns, Family::V4), save(&ns, Family::V6)];
        assert!(before[0].contains("KUBE-SVC-BBBB") && before[1].contains("KUBE-FORWARD"));
        let inst = installer(&ns);
        for family in Family::ALL {
            let rules = RuleSet::build(&config, family);
            inst.install(&rules).unwrap();
            inst.install(&rules).unwrap();
            let report = inst.verify(&rules).unwrap();
            assert!(report.is_clean(), "{report}");
            let during = save(&ns, family);
            assert!(during.contains(":KUMA_MESH_OUTBOUND - [0:0]"));
            // Our OUTPUT rules come after kube-proxy's appended jump unless they are inserts.
            assert!(during.contains("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"));
        }
        for family in Family::ALL {
            inst.uninstall(family).unwrap();
        }
        assert_eq!(save(&ns, Family::V4), before[0]);
        assert_eq!(save(&ns, Family::V6), before[1]);
    }
}

#[test]
fn failing_install_restores_the_previous_state_and_says_why() {
    if !privileged("failing_install_restores_the_previous_state_and_says_why") {
        return;
    }
    let ns = NetNs::new("ipt").unwrap();
    preload(&ns);
    let inst = installer(&ns);
    inst.install(&RuleSet::build(&Config::default(), Family::V4)).unwrap();
    let before = save(&ns, Family::V4);
    // A rule set whose raw table applies (a table that did not exist before) but whose nat table the
    // kernel rejects: CT is only valid in raw.
    let mut bad = RuleSet::build(&common::with_multiple_flags(), Family::V4);
    assert!(bad.table(Table::Raw).is_some());
    let ct_in_nat = Rule::builder()
        .matching(Match::tcp())
        .target(Target::CtZone(3))
        .build()
        .unwrap();
    bad.append(Table::Nat, &ChainName::new("OUTPUT").unwrap(), ct_in_nat)
        .unwrap();
    let err = inst.install(&bad).unwrap_err();
    let InstallError::Failed {
        family: Family::V4,
        step: Step::Apply,
        outcome: Outcome::Restored { ref families },
        ref source,
    } = err
    else {
        panic!("expected a failed apply, put back, got {err:?}");
    };
    assert_eq!(families, &[Family::V4]);
    let InstallError::Apply {
        ref command,
        line,
        ref input,
        ref stderr,
        attempts,
        ..
    } = **source
    else {
        panic!("expected an apply error, got {source:?}");
    };
    assert_eq!(attempts, 1);
    assert!(command.contains("iptables-nft-restore --noflush"), "{command}");
    assert!(stderr.contains("line"), "{stderr}");
    assert!(line.is_some(), "{err}");
    assert_eq!(input.as_deref(), Some("-A OUTPUT -p tcp -j CT --zone 3"), "{err}");
    let message = common::chain(&err);
    assert!(
        message.starts_with(&format!(
            "IPv4: applying the rules failed; the previous IPv4 rules were put back: `ip netns exec {} \
             iptables-nft-restore --noflush` failed after 1 attempt(s) (exit status: 4): iptables-nft-restore",
            ns.name()
        )),
        "{message}"
    );
    assert!(
        message.ends_with("; input line 27: `-A OUTPUT -p tcp -j CT --zone 3`"),
        "{message}"
    );
    assert_eq!(
        save(&ns, Family::V4),
        before,
        "the previous rules are back, byte for byte"
    );
    // The previous installation is intact.
    assert!(
        inst.verify(&RuleSet::build(&Config::default(), Family::V4))
            .unwrap()
            .is_clean()
    );
}

#[test]
fn verify_reports_drift() {
    if !privileged("verify_reports_drift") {
        return;
    }
    let ns = NetNs::new("ipt").unwrap();
    let inst = installer(&ns);
    let config = Config::builder().exclude_inbound_ports("22").unwrap().build().unwrap();
    let rules = RuleSet::build(&config, Family::V4);
    inst.install(&rules).unwrap();
    assert!(inst.verify(&rules).unwrap().is_clean());
    // Someone deletes one rule and adds one to our chain.
    ns.run(["iptables", "-t", "nat", "-D", "KUMA_MESH_INBOUND", "1"])
        .unwrap();
    ns.run([
        "iptables",
        "-t",
        "nat",
        "-A",
        "KUMA_MESH_OUTBOUND",
        "-p",
        "udp",
        "-j",
        "RETURN",
    ])
    .unwrap();
    let report = inst.verify(&rules).unwrap();
    assert!(!report.is_clean());
    let text = report.to_string();
    assert!(
        report
            .drifts()
            .iter()
            .any(|d| matches!(d, Drift::MissingRule { chain, rule, .. }
            if chain == "KUMA_MESH_INBOUND" && rule.contains("--dport 22"))),
        "{text}"
    );
    assert!(
        report
            .drifts()
            .iter()
            .any(|d| matches!(d, Drift::UnexpectedRule { chain, rule, .. }
            if chain == "KUMA_MESH_OUTBOUND" && rule == "-p udp -j RETURN")),
        "{text}"
    );
    assert!(text.contains("missing rule in nat/KUMA_MESH_INBOUND"), "{text}");
    // A fresh install repairs it.
    inst.install(&rules).unwrap();
    assert!(inst.verify(&rules).unwrap().is_clean());
    // Uninstalled: every chain is reported missing.
    inst.uninstall(Family::V4).unwrap();
    let report = inst.verify(&rules).unwrap();
    assert_eq!(
        report
            .drifts()
            .iter()
            .filter(|d| matches!(d, Drift::MissingChain { .. }))
            .count(),
        4,
        "{report}"
    );
}

#[test]
fn comments_disabled_install_is_still_idempotent() {
    if !privileged("comments_disabled_install_is_still_idempotent") {
        return;
    }
    let ns = NetNs::new("ipt").unwrap();
    let inst = installer(&ns);
    let config = Config::builder()
        .disable_comments(true)
        .capture_all_dns()
        .build()
        .unwrap();
    let rules = RuleSet::build(&config, Family::V4);
    inst.install(&rules).unwrap();
    let first = save(&ns, Family::V4);
    assert!(!first.contains("--comment"));
    inst.install(&rules).unwrap();
    assert_eq!(save(&ns, Family::V4), first);
    // Without comments the DNS REDIRECT is only found by comparing with the model.
    inst.uninstall_rules(&rules).unwrap();
    assert_eq!(save(&ns, Family::V4), "");
}

/// `iptables-legacy-save` of the namespace without banners and without empty table blocks (which
/// depend on which tables anything ever touched, INDEX §1.4).
fn legacy_save(ns: &NetNs) -> String {
    let out = ns.run(["iptables-legacy-save"]).expect("iptables-legacy-save");
    let text: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    drop_empty_tables(&normalize_save(&text))
}

fn drop_empty_tables(text: &str) -> String {
    let mut out = String::new();
    for block in text.split_inclusive("COMMIT\n") {
        if block.lines().any(|l| l.starts_with("-A ")) {
            out.push_str(block);
        }
    }
    out
}

#[test]
fn legacy_backend_install_equals_fedora_golden() {
    if !privileged("legacy_backend_install_equals_fedora_golden") {
        return;
    }
    if !meshcap_testns::have_program("iptables-legacy-restore") {
        panic!("iptables-legacy-restore is part of Debian's iptables package and must be installed");
    }
    let Some(dir) = kuma_ref("legacy_backend_install_equals_fedora_golden") else {
        return;
    };
    let ns = NetNs::new("ipt").unwrap();
    let inst = installer(&ns).with_backend(Backend::Legacy);
    let rules = RuleSet::build(&common::with_multiple_flags(), Family::V4);
    let report = inst.install(&rules).unwrap();
    assert_eq!(report.backend, Backend::Legacy);
    assert!(report.script.starts_with("*raw\n"), "{}", report.script);
    let golden = read(dir.join("container-iptables-save/fedora-40-with-multiple-flags.iptables.golden"));
    // Legacy prints tables in kernel order; compare table by table.
    let ours = legacy_save(&ns);
    let mut ours_blocks: Vec<&str> = ours.split_inclusive("COMMIT\n").collect();
    let golden = drop_empty_tables(&golden);
    let mut golden_blocks: Vec<&str> = golden.split_inclusive("COMMIT\n").collect();
    ours_blocks.sort();
    golden_blocks.sort();
    assert_eq!(ours_blocks, golden_blocks);
    assert!(inst.verify(&rules).unwrap().is_clean());
    inst.install(&rules).unwrap();
    assert!(inst.verify(&rules).unwrap().is_clean());
    inst.uninstall(Family::V4).unwrap();
    assert_eq!(legacy_save(&ns), "");
}

#[test]
fn backend_detection_follows_existing_rules() {
    if !privileged("backend_detection_follows_existing_rules") {
        return;
    }
    // Nothing anywhere: nft. Detection must not instantiate legacy tables.
    let ns = NetNs::new("ipt").unwrap();
    assert_eq!(installer(&ns).detect_backend().unwrap(), Backend::Nft);
    let names = ns.run(["cat", "/proc/net/ip_tables_names"]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&names.stdout).trim(),
        "",
        "no legacy table was created"
    );
    // Only legacy holds rules: legacy.
    let ns = NetNs::new("ipt").unwrap();
    ns.run(["iptables-legacy", "-w", "-t", "nat", "-A", "OUTPUT", "-j", "RETURN"])
        .unwrap();
    assert_eq!(installer(&ns).detect_backend().unwrap(), Backend::Legacy);
    // Both hold rules: nft, unless only legacy has DOCKER_OUTPUT.
    ns.run(["iptables-nft", "-t", "nat", "-A", "OUTPUT", "-j", "RETURN"])
        .unwrap();
    assert_eq!(installer(&ns).detect_backend().unwrap(), Backend::Nft);
    ns.run(["iptables-legacy", "-w", "-t", "nat", "-N", "DOCKER_OUTPUT"])
        .unwrap();
    assert_eq!(installer(&ns).detect_backend().unwrap(), Backend::Legacy);
    // Explicit programs: their --version decides the backend (and so the --wait flags).
    let explicit = installer(&ns).with_executables(
        Family::V4,
        Executables::new("iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore"),
    );
    assert_eq!(explicit.executables(Family::V4).unwrap().0, Backend::Legacy);
    // With DOCKER_OUTPUT in the chosen backend, probing tells the builder to jump to it.
    let host = installer(&ns).probe_host(Family::V4).unwrap();
    assert!(host.docker_output());
}

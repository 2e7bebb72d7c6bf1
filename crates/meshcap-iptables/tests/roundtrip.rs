//! Property tests: for random valid configurations, the rendered iptables-save and iptables-restore
//! texts parse back into the same model and render identically; a sample loads with
//! `iptables-restore --test` in a namespace.

use std::io::Write as _;
use std::process::Stdio;

mod common;

use common::strategies::{config, host};
use meshcap_iptables::{Family, RuleSet};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn render_parse_render_is_identity(config in config(), host in host()) {
        for family in config.families() {
            let rules = RuleSet::build_with(&config, *family, &host);
            let save = rules.render_save();
            let parsed = RuleSet::parse(&save, *family).unwrap();
            prop_assert_eq!(parsed.render_save(), save.clone());
            let restore = rules.render_restore();
            let parsed = RuleSet::parse(&restore, *family).unwrap();
            prop_assert_eq!(parsed.render_restore(), restore.clone());
            prop_assert_eq!(parsed.render_save(), save.clone());
            let verbose = rules.render_restore_verbose();
            let parsed = RuleSet::parse(&verbose, *family).unwrap();
            prop_assert_eq!(parsed.render_restore(), restore);
        }
    }
}

#[test]
fn a_sample_loads_with_iptables_restore_test() {
    if !meshcap_testns::privileged("a_sample_loads_with_iptables_restore_test") {
        return;
    }
    let ns = meshcap_testns::NetNs::new("ipt").unwrap();
    // Docker's chain, for rule sets built for a host that has it.
    ns.run(["iptables", "-t", "nat", "-N", "DOCKER_OUTPUT"]).unwrap();
    ns.run(["ip6tables", "-t", "nat", "-N", "DOCKER_OUTPUT"]).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
    runner
        .run(&(config(), host()), |(config, host)| {
            for family in config.families() {
                let text = RuleSet::build_with(&config, *family, &host).render_restore();
                let tool = if *family == Family::V4 {
                    "iptables-restore"
                } else {
                    "ip6tables-restore"
                };
                let mut child = ns
                    .command(tool)
                    .args(["--test", "--noflush"])
                    .stdin(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
                let out = child.wait_with_output().unwrap();
                prop_assert!(
                    out.status.success(),
                    "{tool} --test rejected:\n{text}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        })
        .unwrap();
}

/// Random configurations installed for real (both families at once) read back clean, and
/// uninstalling them leaves the namespace as it was, byte for byte.
#[test]
fn a_sample_installs_verifies_and_uninstalls_cleanly() {
    if !meshcap_testns::privileged("a_sample_installs_verifies_and_uninstalls_cleanly") {
        return;
    }
    let ns = meshcap_testns::NetNs::new("ih").unwrap();
    ns.run(["iptables", "-t", "nat", "-N", "DOCKER_OUTPUT"]).unwrap();
    ns.run(["ip6tables", "-t", "nat", "-N", "DOCKER_OUTPUT"]).unwrap();
    let save = |family: Family| -> String {
        ns.iptables_save(family == Family::V6)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let before = [save(Family::V4), save(Family::V6)];
    let installer = meshcap_iptables::Installer::new(meshcap_iptables::Executor::netns(ns.name())).with_retry(
        meshcap_iptables::RetryPolicy {
            max_retries: 0,
            ..Default::default()
        },
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(16));
    runner
        .run(&(config(), host()), |(config, host)| {
            let sets: Vec<RuleSet> = config
                .families()
                .iter()
                .map(|f| RuleSet::build_with(&config, *f, &host))
                .collect();
            let reports = installer.install_all(&sets);
            prop_assert!(reports.is_ok(), "{:?}", reports.err().map(|e| common::chain(&e)));
            for rules in &sets {
                let report = installer.verify(rules).unwrap();
                prop_assert!(report.is_clean(), "{report}");
                installer.uninstall_rules(rules).unwrap();
            }
            prop_assert_eq!(&save(Family::V4), &before[0]);
            prop_assert_eq!(&save(Family::V6), &before[1]);
            Ok(())
        })
        .unwrap();
}

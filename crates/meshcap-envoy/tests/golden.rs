//! Golden files for rendered bootstraps (`tests/golden/*.json`): several inbounds and outbounds, IPv6,
//! IPv4-only, explicit mode, Kuma fault policies with callers, a raw HTTPFault. Envoy validates these same
//! cases in `tests/envoy.rs`; here any change to the output has to be deliberate.
//!
//! Regenerate with `MESHCAP_UPDATE_GOLDEN=1 cargo test -p meshcap-envoy --test golden`, then review the
//! diff.

use std::path::Path;

use meshcap_envoy::{Dataplane, Policy, Resources};

fn data(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("MESHCAP_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (MESHCAP_UPDATE_GOLDEN=1 creates it)", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from the golden file at line {}:\n  golden: {:?}\n  actual: {:?}\n(MESHCAP_UPDATE_GOLDEN=1 rewrites it)",
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

fn build(dataplane: &str, policies: &[&str]) -> Resources {
    let dp = Dataplane::from_yaml(&data(dataplane)).expect(dataplane);
    let policies: Vec<Policy> = policies.iter().map(|p| data(p).parse().expect(p)).collect();
    Resources::builder(&dp)
        .policies(&policies)
        .service_endpoints(
            "db",
            vec![
                "10.244.1.9:5432".parse().expect("addr"),
                "10.244.1.10:5432".parse().expect("addr"),
            ],
        )
        .build()
        .expect("resources")
}

#[test]
fn several_inbounds_and_outbounds_with_every_kind_of_policy() {
    let r = build(
        "multi.yaml",
        &["faults-sources.yaml", "faults-subsets.yaml", "header-faults.json"],
    );
    check("multi.bootstrap.json", &r.bootstrap_json());
}

#[test]
fn ipv6_dataplane() {
    check(
        "ipv6.bootstrap.json",
        &build("ipv6.yaml", &["faults-sources.yaml"]).bootstrap_json(),
    );
}

#[test]
fn ipv4_only_dataplane() {
    check(
        "ipv4-only.bootstrap.json",
        &build("ipv4-only.yaml", &[]).bootstrap_json(),
    );
}

#[test]
fn explicit_mode_dataplane() {
    check(
        "explicit.bootstrap.json",
        &build("explicit.yaml", &["faults-sources.yaml"]).bootstrap_json(),
    );
}

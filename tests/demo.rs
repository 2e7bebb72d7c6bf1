//! `sidecar demo`, run as a user would: as root (namespaces, Kuma's rules, the proxy as uid 5678), as an
//! unprivileged user and without iptables (explicit mode on loopback). Each run's trace must show what
//! the demo claims (capture port, hand-off, passthrough, fault, responses, `/config_dump`), it must exit
//! cleanly, and it must leave no namespace, process or scratch folder behind.
//!
//! Until `sidecar run` lands, the demo runs with a real Envoy (`--envoy`).

use std::path::PathBuf;
use std::process::{Command, Output};

use meshcap_testns::{NetNs, TempDir, envoy_executable, privileged, require_envoy};

/// The example binary next to this test (`target/<profile>/examples/sidecar`).
fn sidecar() -> PathBuf {
    meshcap_testns::example_binary("sidecar")
}

/// Run a demo command; its stdout and stderr, which must be a success.
fn run_demo(mut command: Command) -> String {
    let Output { status, stdout, stderr } = command.output().expect("run sidecar demo");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    assert!(status.success(), "sidecar demo failed ({status}):\n{out}");
    out
}

/// Every line of `expected` appears in `out`, in this order.
fn assert_in_order(out: &str, expected: &[&str]) {
    let mut rest = out;
    for e in expected {
        match rest.find(e) {
            Some(i) => rest = &rest[i + e.len()..],
            None => panic!("the demo's output lacks {e:?} (in this order):\n{out}"),
        }
    }
}

/// No namespace or scratch folder of demo process `pid` is left.
fn assert_nothing_left(pid: u32) {
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    for tag in ["mc-demop", "mc-demoq"] {
        assert!(
            !list.contains(&format!("{tag}-{pid}-")),
            "namespace of demo {pid} left behind:\n{list}"
        );
    }
    let scratch = format!("meshcap-demo-{pid}-");
    let left: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&scratch))
        .collect();
    assert!(left.is_empty(), "scratch folders left behind: {left:?}");
}

/// Run `command`, returning its output and pid once it has exited successfully.
fn run_with_pid(mut command: Command) -> (String, u32) {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sidecar demo");
    let pid = child.id();
    let Output { status, stdout, stderr } = child.wait_with_output().expect("sidecar demo");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    assert!(status.success(), "sidecar demo failed ({status}):\n{out}");
    (out, pid)
}

#[test]
fn demo_as_root_traces_capture_hand_off_and_cleans_up() {
    if !privileged("demo_as_root_traces_capture_hand_off_and_cleans_up") {
        return;
    }
    let Some(envoy) = require_envoy("demo_as_root_traces_capture_hand_off_and_cleans_up") else {
        return;
    };
    let mut command = Command::new(sidecar());
    command.arg("demo").arg("--envoy").arg(&envoy);
    let (out, pid) = run_with_pid(command);
    assert_in_order(
        &out,
        &[
            "transparent proxying in two network namespaces",
            "the sidecar as uid 5678",
            "Kuma's rules",
            "IPv4 and IPv6",
            // The peer calls the Dataplane's inbound port three times.
            "[1] peer 10.244.0.5:",
            "→ GET http://10.244.0.6:5000/",
            "capture   iptables nat KUMA_MESH_INBOUND_REDIRECT: REDIRECT to :15006, accepted by inbound:passthrough:ipv4 on 0.0.0.0:15006",
            "the sidecar's upstream hop was not captured again: kuma/mesh/transparent/proxy/prevent traffic loops",
            "orig dst  10.244.0.6:5000",
            "listener  inbound:10.244.0.6:5000 (handed off",
            "filters   http_connection_manager localhost_5000 → fault filter:",
            "upstream  cluster localhost:5000",
            "log       GET / HTTP/1.1 10.244.0.6:5000 → ",
            "response  ",
            "\"client\":\"127.0.0.6:",
            "\"counter\":1",
            "[2] peer",
            "\"counter\":2",
            "[3] peer",
            "\"counter\":3",
            // A port the Dataplane does not name: inbound passthrough.
            "[4] peer 10.244.0.5:",
            "→ GET http://10.244.0.6:5001/",
            "REDIRECT to :15006, accepted by inbound:passthrough:ipv4",
            "orig dst  10.244.0.6:5001",
            "listener  inbound:passthrough:ipv4 (no listener owns the original destination",
            "filters   tcp_proxy",
            "upstream  cluster inbound:passthrough:ipv4, host 10.244.0.6:5001",
            "response  200 OK",
            "\"app\":\"backend-5001\"",
            // The app calls out: outbound passthrough, from the pod's address.
            "[5] app 10.244.0.6:",
            "→ GET http://10.244.0.5:8080/",
            "capture   iptables nat KUMA_MESH_OUTBOUND_REDIRECT: REDIRECT to :15001, accepted by outbound:passthrough:ipv4",
            "return outbound traffic owned by UID 5678",
            "orig dst  10.244.0.5:8080",
            "listener  outbound:passthrough:ipv4",
            "upstream  cluster outbound:passthrough:ipv4, host 10.244.0.5:8080",
            "\"client\":\"10.244.0.6:",
            // The app calls its own pod IP: Kuma's rules leave it alone.
            "[6] app 10.244.0.6:",
            "capture   not captured: nat RETURN",
            "listener  none: no listener statistic moved",
            "response  200 OK",
            // The interesting part of /config_dump.
            "/config_dump: listeners",
            "inbound:passthrough:ipv4   0.0.0.0:15006      use_original_dst, INBOUND",
            "tcp_proxy → cluster inbound:passthrough:ipv4",
            "outbound:passthrough:ipv6  [::]:15001         use_original_dst, OUTBOUND",
            "inbound:10.244.0.6:5000    10.244.0.6:5000    bind_to_port: false, INBOUND",
            "http_connection_manager localhost_5000: fault (delay 5s on 0.5 %), router → cluster localhost:5000",
            "/config_dump: clusters",
            "localhost:5000             STATIC, → 10.244.0.6:5000, from 127.0.0.6",
            "Cleaned up: namespaces mc-demop-",
        ],
    );
    assert_nothing_left(pid);
}

#[test]
fn demo_abort_flag_aborts_every_inbound_request() {
    if !privileged("demo_abort_flag_aborts_every_inbound_request") {
        return;
    }
    let Some(envoy) = require_envoy("demo_abort_flag_aborts_every_inbound_request") else {
        return;
    };
    let mut command = Command::new(sidecar());
    command
        .args(["demo", "--abort", "100", "--requests", "1", "--envoy"])
        .arg(&envoy);
    let (out, pid) = run_with_pid(command);
    assert_in_order(
        &out,
        &[
            "faults   delay 5s on 0.5 % of the requests, abort 503 on 100 %",
            "[1] peer",
            "listener  inbound:10.244.0.6:5000 (handed off",
            "fault filter: abort injected (FI)",
            "upstream  cluster localhost:5000, no upstream connection",
            "→ 503 FI fault_filter_abort",
            "response  503 Service Unavailable, server: envoy  fault filter abort",
            // Not the passthrough: nothing to abort there.
            "[2] peer",
            "response  200 OK",
            "fault (delay 5s on 0.5 %), fault (abort 503 on 100 %), router → cluster localhost:5000",
        ],
    );
    assert_nothing_left(pid);
}

#[test]
fn demo_without_root_runs_explicit_mode_on_loopback() {
    if !privileged("demo_without_root_runs_explicit_mode_on_loopback") {
        return;
    }
    let Some(envoy) = require_envoy("demo_without_root_runs_explicit_mode_on_loopback") else {
        return;
    };
    // An unprivileged user, in a namespace of its own so that its loopback ports are its own.
    let ns = NetNs::new("demotest").expect("namespace");
    let dir = TempDir::new("demotest").expect("scratch folder");
    let sidecar = dir.install_executable(&sidecar()).expect("sidecar for nobody");
    let envoy = dir
        .install_executable(&envoy_executable(&envoy))
        .expect("envoy for nobody");
    let mut command = ns.command_as(65534, 65534, &sidecar);
    command.arg("demo").arg("--envoy").arg(&envoy);
    let out = run_demo(command);
    assert_in_order(
        &out,
        &[
            "not running as root",
            "running explicit mode on loopback instead",
            "explicit mode on loopback (no capture rules)",
            "dataplane default.backend-01: inbound 127.0.0.1:15000 → app 127.0.0.1:5000",
            "[1] client 127.0.0.1:",
            "→ GET http://127.0.0.1:15000/",
            "capture   none (explicit mode",
            "orig dst  127.0.0.1:15000",
            "listener  inbound:127.0.0.1:15000",
            "upstream  cluster localhost:5000, host 127.0.0.1:5000",
            "response  200 OK, server: envoy",
            "\"counter\":1",
            "[4] client 127.0.0.1:",
            "→ GET http://127.0.0.1:5000/",
            "listener  none",
            "\"counter\":4",
            "/config_dump: listeners",
            "inbound:127.0.0.1:15000  127.0.0.1:15000    INBOUND",
            "Cleaned up: processes stopped, scratch folder removed",
        ],
    );
}

#[test]
fn demo_without_iptables_says_how_to_install_it() {
    if !privileged("demo_without_iptables_says_how_to_install_it") {
        return;
    }
    let Some(envoy) = require_envoy("demo_without_iptables_says_how_to_install_it") else {
        return;
    };
    // Root, but a PATH without the iptables tools; a namespace of its own for the loopback ports.
    let ns = NetNs::new("demotest").expect("namespace");
    let bin = TempDir::new("demopath").expect("scratch folder");
    for tool in ["ip", "setpriv"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .expect("sh");
        let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
        std::os::unix::fs::symlink(&path, bin.join(tool)).expect("symlink");
    }
    let mut command = ns.command(sidecar());
    command.env("PATH", bin.path()).arg("demo").arg("--envoy").arg(&envoy);
    let out = run_demo(command);
    assert_in_order(
        &out,
        &[
            "iptables, iptables-save, iptables-restore, ip6tables not installed",
            "apt-get install -y iptables iproute2",
            "running explicit mode on loopback instead",
            "listener  inbound:127.0.0.1:15000",
            "response  200 OK, server: envoy",
            "Cleaned up",
        ],
    );
}

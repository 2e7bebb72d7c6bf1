//! The native nftables rendering: Kuma's parameter sets load with `nft -f` (checked and applied, twice,
//! in a namespace), and in a pod/peer pair the nft rules capture like the iptables ones.

mod common;

use std::io::{ErrorKind, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use meshcap_iptables::{Config, Family, RuleSet};
use meshcap_testns::{NetNs, PodPair, privileged, wait_until};

fn nft(ns: &NetNs, args: &[&str], script: &str) -> Result<String, String> {
    let mut child = ns
        .command("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `nft` is installed (CI installs nftables); a loud skip otherwise, a failure under
/// `MESHCAP_REQUIRE_PRIVILEGED=1`.
fn have_nft(test: &str) -> bool {
    if meshcap_testns::have_program("nft") {
        return true;
    }
    assert!(
        std::env::var_os("MESHCAP_REQUIRE_PRIVILEGED").is_none(),
        "{test}: `nft` is not installed (apt-get install nftables)"
    );
    eprintln!("\n!!! SKIPPED `{test}`: `nft` is not installed (apt-get install nftables)\n");
    false
}

fn configs() -> Vec<(&'static str, Config)> {
    let resolvers: Vec<IpAddr> = vec!["10.96.0.10".parse().unwrap(), "fd00::a".parse().unwrap()];
    vec![
        ("default", Config::default()),
        ("with-multiple-flags", common::with_multiple_flags()),
        ("with-multiple-config-flags", common::with_multiple_config_flags()),
        (
            "extras",
            Config::builder()
                .iptables_logs(true)
                .redirect_dns(resolvers)
                .include_inbound_ports("8080,8443")
                .unwrap()
                .drop_invalid_packets(true)
                .outbound_insert_instead_of_append(true)
                .build()
                .unwrap(),
        ),
    ]
}

#[test]
fn kuma_parameter_sets_load_with_nft() {
    if !privileged("kuma_parameter_sets_load_with_nft") || !have_nft("kuma_parameter_sets_load_with_nft") {
        return;
    }
    for (name, config) in configs() {
        let ns = NetNs::new("iptnft").unwrap();
        for family in Family::ALL {
            let script = RuleSet::build(&config, family).render_nft("kuma-mesh").unwrap();
            nft(&ns, &["-c", "-f", "-"], &script).unwrap_or_else(|e| panic!("{name} {family}: nft -c: {e}\n{script}"));
            nft(&ns, &["-f", "-"], &script).unwrap_or_else(|e| panic!("{name} {family}: nft -f: {e}"));
            let first = nft(&ns, &["list", "ruleset"], "").unwrap();
            nft(&ns, &["-f", "-"], &script).unwrap();
            assert_eq!(
                nft(&ns, &["list", "ruleset"], "").unwrap(),
                first,
                "{name} {family}: applying twice"
            );
        }
    }
}

struct Probe(TcpListener, &'static str);

impl Probe {
    fn bind(ns: &NetNs, addr: &'static str, name: &'static str) -> Probe {
        let l = ns.enter(move || TcpListener::bind(addr)).unwrap().unwrap();
        l.set_nonblocking(true).unwrap();
        Probe(l, name)
    }

    fn took(&self) -> bool {
        match self.0.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("{}: {e}", self.1),
        }
    }
}

#[test]
fn nft_rules_capture_traffic() {
    if !privileged("nft_rules_capture_traffic") || !have_nft("nft_rules_capture_traffic") {
        return;
    }
    let pair = PodPair::new("iptnft").unwrap();
    let config = Config::builder()
        .exclude_outbound_ports("9090")
        .unwrap()
        .build()
        .unwrap();
    for family in Family::ALL {
        let script = RuleSet::build(&config, family).render_nft("kuma-mesh").unwrap();
        nft(&pair.pod, &["-f", "-"], &script).unwrap();
    }
    let outbound = Probe::bind(&pair.pod, "[::]:15001", "pod :15001");
    let inbound = Probe::bind(&pair.pod, "[::]:15006", "pod :15006");
    let remote = Probe::bind(&pair.peer, "[::]:9090", "peer :9090");
    let all = [&outbound, &inbound, &remote];
    let only = |expected: &Probe, what: &str| {
        assert!(
            wait_until(Duration::from_secs(5), || expected.took()),
            "{what}: nothing at {}",
            expected.1
        );
        for p in all {
            assert!(
                std::ptr::eq(p, expected) || !p.took(),
                "{what}: {} got a connection",
                p.1
            );
        }
    };
    for (pod, peer) in [(PodPair::POD_V4, PodPair::PEER_V4), (PodPair::POD_V6, PodPair::PEER_V6)] {
        let (pod, peer): (IpAddr, IpAddr) = (pod.parse().unwrap(), peer.parse().unwrap());
        let connect = |ns: &NetNs, to: SocketAddr| {
            ns.enter(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
                .unwrap()
                .unwrap_or_else(|e| panic!("connect {to}: {e}"));
        };
        connect(&pair.pod, SocketAddr::new(peer, 8080));
        only(&outbound, "pod -> peer:8080");
        connect(&pair.pod, SocketAddr::new(peer, 9090));
        only(&remote, "pod -> peer:9090 (excluded)");
        connect(&pair.peer, SocketAddr::new(pod, 5000));
        only(&inbound, "peer -> pod:5000");
    }
}

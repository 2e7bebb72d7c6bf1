//! The recordings' topology: a pod namespace (10.244.0.6, the apps on 5000 and 5001, the proxy as uid
//! 5678, the capture rules) and a peer namespace (10.244.0.5, an app on 8080), joined by a veth pair.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Stdio;

use meshcap::iptables::{Config, Executor, Family, Installer, RuleSet};
use meshcap_testns::{NetNs, PodPair, TempDir};

use super::app::App;

/// The uid (and gid) the proxy runs as, Kuma's `kuma-dp` default.
pub(crate) const PROXY_UID: u32 = 5678;

/// Which namespace a client runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Side {
    /// The pod (the application's side; the recordings' `POD`).
    Pod,
    /// The peer (the recordings' `CLI`).
    Peer,
}

impl Side {
    /// How the recordings' transcripts name the namespace.
    pub(crate) fn recorded_name(self) -> &'static str {
        match self {
            Side::Pod => "[in POD netns]",
            Side::Peer => "[in CLI netns]",
        }
    }
}

/// The namespaces, the apps and a scratch folder.
#[derive(Debug)]
pub(crate) struct Pod {
    pub(crate) pair: PodPair,
    pub(crate) dir: TempDir,
    pub(crate) rt: tokio::runtime::Runtime,
    apps: BTreeMap<(Side, u16), App>,
    curl_runs: u32,
}

impl Pod {
    /// Namespaces tagged `tag` and a runtime for the apps and hyper clients.
    pub(crate) fn new(tag: &str) -> Pod {
        let pair = PodPair::new(tag).expect("namespace pair");
        let dir = TempDir::new(tag).expect("scratch folder");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        Pod {
            pair,
            dir,
            rt,
            apps: BTreeMap::new(),
            curl_runs: 0,
        }
    }

    /// The namespace of `side`.
    pub(crate) fn ns(&self, side: Side) -> &NetNs {
        match side {
            Side::Pod => &self.pair.pod,
            Side::Peer => &self.pair.peer,
        }
    }

    /// The recordings' apps: 0.0.0.0:5000 and 0.0.0.0:5001 in the pod, 10.244.0.5:8080 in the peer.
    pub(crate) fn start_recorded_apps(&mut self) {
        self.start_app(Side::Pod, "0.0.0.0:5000");
        self.start_app(Side::Pod, "0.0.0.0:5001");
        self.start_app(Side::Peer, "10.244.0.5:8080");
    }

    /// Start an app on `bind` in `side`'s namespace.
    pub(crate) fn start_app(&mut self, side: Side, bind: &str) {
        let addr: SocketAddr = bind.parse().expect("app address");
        let listener = self
            .ns(side)
            .bind_tcp(addr)
            .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let app = App::serve(self.rt.handle(), listener, &addr.ip().to_string());
        self.apps.insert((side, addr.port()), app);
    }

    /// Install the recordings' simplified capture chain (`iptables-nat.txt`, envoy-observed.md §3) with
    /// meshcap-iptables, and check that the kernel then lists exactly the recorded rules.
    pub(crate) fn install_recorded_rules(&self, recorded_nat: &str) {
        let mut restore = String::from("*nat\n");
        for line in recorded_nat.lines() {
            if let Some(chain) = line.strip_prefix("-N ") {
                restore.push_str(&format!(":{chain} - [0:0]\n"));
            }
        }
        for line in recorded_nat.lines().filter(|l| l.starts_with("-A ")) {
            restore.push_str(line);
            restore.push('\n');
        }
        restore.push_str("COMMIT\n");
        let rules = RuleSet::parse(&restore, Family::V4).unwrap_or_else(|e| panic!("{e}\n{restore}"));
        let installer = Installer::new(Executor::netns(self.pair.pod.name()));
        installer.install(&rules).expect("install the recorded rules");
        let listed = self.pair.pod.run(["iptables", "-t", "nat", "-S"]).expect("iptables -S");
        assert_eq!(
            String::from_utf8_lossy(&listed.stdout),
            recorded_nat,
            "the installed chain differs from the recordings' iptables-nat.txt"
        );
    }

    /// Install Kuma's full rule set (meshcap-iptables' Kuma preset, proxy uid 5678) for both families.
    pub(crate) fn install_kuma_rules(&self) {
        let config = Config::builder().proxy_uid(PROXY_UID).build().expect("Kuma config");
        let installer = Installer::from_config(&config, Executor::netns(self.pair.pod.name()));
        for family in config.families() {
            let rules = RuleSet::build(&config, *family);
            installer.install(&rules).expect("install Kuma's rules");
            assert!(installer.verify(&rules).expect("verify").is_clean());
        }
    }

    /// Run curl with `args` in `side`'s namespace, stdout and stderr into one file as the recordings did
    /// (`curl ... > file 2>&1`), and return that file's text (`(curl exit N)` appended on failure).
    pub(crate) fn curl(&mut self, side: Side, args: &[&str]) -> String {
        self.curl_runs += 1;
        let path = self.dir.join(format!("curl-{}.out", self.curl_runs));
        let file = std::fs::File::create(&path).expect("curl output file");
        let status = self
            .ns(side)
            .command("curl")
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .status()
            .expect("run curl");
        let mut out = std::fs::read_to_string(&path).expect("curl output");
        if !status.success() {
            out.push_str(&format!("(curl exit {})\n", status.code().unwrap_or(-1)));
        }
        out
    }

    /// The local addresses of the TCP listening sockets in the pod (`ss -ltn`).
    pub(crate) fn listening(&self) -> BTreeSet<String> {
        let out = self.pair.pod.run(["ss", "-Hltn"]).expect("ss");
        parse_ss(&String::from_utf8_lossy(&out.stdout))
    }
}

/// The `Local Address:Port` column of `ss -ltn` output (with or without its header).
pub(crate) fn parse_ss(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("LISTEN"))
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
        .collect()
}

//! `sidecar demo [--abort PERCENT] [--requests N] [--envoy PATH]`: the README's first command.
//!
//! As root with iptables and iproute2: two network namespaces (a pod at 10.244.0.6 and a peer at
//! 10.244.0.5), Kuma's capture rules in the pod (meshcap-iptables' Kuma preset, proxy uid 5678), a counter
//! app on 5000 and 5001 in the pod and on 8080 in the peer, and the sidecar (`sidecar run` on meshcap-envoy's
//! demo Dataplane and its 5 s / 0.5 % delay policy, plus an abort at `--abort` percent) as uid 5678. The
//! peer and the app send a few requests; each one's trace is derived from the evidence — the nat rules'
//! packet counters (capture), the statistics that moved (listener, fault filter, cluster) and the access-log
//! line of the connection (original destination, flags, upstream) — then the interesting part of
//! `/config_dump` is printed and everything is removed again, also on Ctrl-C or an error.
//!
//! Without root, or without the tools, it says why and runs explicit mode on loopback instead (the
//! inbound listener on 127.0.0.1:15000 forwarding to the app on 127.0.0.1:5000), with the same kind of
//! trace. `--envoy PATH` runs the same demo with a real Envoy on this binary's bootstrap instead of
//! meshcap's sidecar.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use meshcap::iptables::{Config, Executor, Installer, RuleSet};
use meshcap_testns::{ChildGuard, NetNs, PodPair, TempDir};

#[path = "demo_app.rs"]
pub(crate) mod app;
#[path = "demo_net.rs"]
mod net;
#[path = "demo_report.rs"]
mod report;

use net::{Admin, Net};
use report::{ACCESS_LOG_FORMAT, Call, Dump};

/// The sidecar's uid (and gid), Kuma's `kuma-dp` default.
const PROXY_UID: u32 = meshcap::iptables::KUMA_DP_UID;
/// How long a request may take (the demo's delay fault holds a request for 5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Run the sidecar on an embedded demo, with a trace of what happens to each request.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Abort this percentage of the requests to the demo service with 503 (0 to 100; 0 adds no abort).
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0, value_parser = parse_percent)]
    abort: f64,
    /// How many requests the peer sends to the demo service (1 to 20).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    requests: u32,
    /// Run a real Envoy (on the bootstrap `sidecar envoy-config` prints) instead of meshcap's sidecar.
    #[arg(long, value_name = "PATH")]
    envoy: Option<PathBuf>,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=100.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{s} is not between 0 and 100"))
    }
}

/// Run the demo.
pub(crate) fn run(args: DemoArgs) -> ExitCode {
    install_interrupt_handler();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sidecar demo: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match why_not_namespaces() {
        None => match namespaces(&args, &rt) {
            Err(Failure::Unavailable(reason)) => {
                println!("{reason}\n→ running explicit mode on loopback instead\n");
                loopback(&args, &rt)
            }
            other => other,
        },
        Some(reason) => {
            println!("{reason}\n→ running explicit mode on loopback instead\n");
            loopback(&args, &rt)
        }
    };
    cleanup_registered();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Unavailable(e) | Failure::Error(e)) => {
            eprintln!("sidecar demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why the demo ended early.
#[derive(Debug)]
enum Failure {
    /// The namespace demo cannot run here (and loopback can).
    Unavailable(String),
    /// Something failed.
    Error(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Error(e)
    }
}

/// Why the namespace demo cannot run here, if it cannot.
fn why_not_namespaces() -> Option<String> {
    if meshcap_testns::euid() != 0 {
        return Some(
            "not running as root: network namespaces and iptables rules need root \
             (sudo target/debug/examples/sidecar demo)"
                .to_string(),
        );
    }
    let missing: Vec<&str> = [
        "ip",
        "iptables",
        "iptables-save",
        "iptables-restore",
        "ip6tables",
        "setpriv",
    ]
    .into_iter()
    .filter(|p| !meshcap_testns::have_program(p))
    .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not installed: the capture demo needs them (apt-get install -y iptables iproute2)",
            missing.join(", ")
        )
    })
}

// --- cleanup, also on Ctrl-C ----------------------------------------------------------------------------

/// What to remove if the demo is interrupted: the owners below remove it on every other path.
#[derive(Debug, Default)]
struct Registry {
    pids: Vec<u32>,
    namespaces: Vec<String>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: Vec::new(),
    namespaces: Vec::new(),
    dirs: Vec::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kill what was started, delete the namespaces and the scratch folder.
fn cleanup_registered() {
    cleanup(&mut registry());
}

fn cleanup(r: &mut Registry) {
    for pid in r.pids.drain(..) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    for ns in r.namespaces.drain(..) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
    }
    for dir in r.dirs.drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// On SIGINT or SIGTERM: clean up and exit (130 / 143).
fn install_interrupt_handler() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        let code = rt.block_on(async {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                return None;
            };
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.ok().map(|()| 130),
                _ = term.recv() => Some(143),
            }
        });
        if let Some(code) = code {
            eprintln!("\nsidecar demo: interrupted, cleaning up");
            // The lock is held until the exit: the demo cannot start anything new meanwhile (everything
            // is created and registered under this lock).
            let mut r = registry();
            cleanup(&mut r);
            std::process::exit(code);
        }
    });
}

/// A child process, killed and reaped on drop (and on interrupt).
#[derive(Debug)]
struct Proc {
    guard: ChildGuard,
    pid: u32,
}

impl Proc {
    fn spawn(mut command: Command, what: &str) -> Result<Proc, String> {
        let mut r = registry();
        let child = command.spawn().map_err(|e| format!("start {what}: {e}"))?;
        let pid = child.id();
        r.pids.push(pid);
        Ok(Proc {
            guard: ChildGuard::new(child),
            pid,
        })
    }

    /// SIGTERM, then wait up to `grace` (SIGKILL after); whether it exited cleanly.
    fn stop(&mut self, grace: Duration) -> Result<bool, String> {
        let status = self.guard.terminate(grace).map_err(|e| e.to_string())?;
        registry().pids.retain(|p| *p != self.pid);
        Ok(status.success())
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.guard.0.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Killed and reaped before it leaves the registry, so an interrupt in between still finds it.
        let _ = self.guard.0.kill();
        let _ = self.guard.0.wait();
        registry().pids.retain(|p| *p != self.pid);
    }
}

fn scratch_dir() -> Result<TempDir, String> {
    let mut r = registry();
    let dir = TempDir::new("demo").map_err(|e| format!("scratch folder: {e}"))?;
    r.dirs.push(dir.path().to_path_buf());
    Ok(dir)
}

fn namespace_pair() -> Result<PodPair, Failure> {
    let mut r = registry();
    let pair = PodPair::new("demo")
        .map_err(|e| Failure::Unavailable(format!("cannot create network namespaces here: {e}")))?;
    r.namespaces
        .extend([pair.pod.name().to_string(), pair.peer.name().to_string()]);
    Ok(pair)
}

// --- the pieces both modes share --------------------------------------------------------------------------

/// The demo's fault policies: the embedded 5 s / 0.5 % delay, and with `--abort` an abort of that share
/// (one policy with both entries: a second policy on the same target would replace the first's list, as in
/// Kuma).
fn policies(abort: f64) -> Vec<(&'static str, String)> {
    if abort == 0.0 {
        return vec![(
            "fault-injection.yaml",
            meshcap::envoy::demo::FAULT_INJECTION_YAML.to_string(),
        )];
    }
    vec![(
        "fault-injection.yaml",
        format!(
            "type: MeshFaultInjection
mesh: default
name: backend-faults
spec:
  targetRef:
    kind: MeshService
    name: backend
  from:
    - targetRef:
        kind: Mesh
      default:
        http:
          - delay:
              value: 5s
              percentage: \"0.5\"
          - abort:
              httpStatus: 503
              percentage: \"{abort}\"
"
        ),
    )]
}

fn fault_line(abort: f64) -> String {
    let abort = if abort == 0.0 {
        "no abort (try --abort 100)".to_string()
    } else {
        format!("abort 503 on {abort} %")
    };
    format!("delay 5s on 0.5 % of the requests, {abort}")
}

/// Which proxy runs, and how.
struct Launch<'a> {
    envoy: Option<&'a Path>,
    net: Net<'a>,
    /// Run as this uid/gid (inside the namespace).
    uid: Option<u32>,
    dir: &'a TempDir,
    dataplane: &'a str,
    policies: &'a [(&'static str, String)],
    admin: SocketAddr,
}

/// A started proxy: the process, its access log, and how it was started.
struct Proxy {
    proc: Proc,
    access_log: PathBuf,
    log: PathBuf,
    command: String,
}

fn start_proxy(launch: &Launch<'_>) -> Result<Proxy, String> {
    let dir = launch.dir;
    let write = |name: &str, text: &str| {
        dir.write(name, text)
            .map_err(|e| format!("write {name}: {e}"))
            .map(|p| p.to_string_lossy().into_owned())
    };
    let dataplane = write("dataplane.yaml", launch.dataplane)?;
    let mut policy_files = Vec::new();
    for (name, text) in launch.policies {
        policy_files.push(write(name, text)?);
    }
    let access_log = dir
        .writable_file("access.log")
        .map_err(|e| format!("access log: {e}"))?;
    let log = dir.join("proxy.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("proxy log: {e}"))?;
    let log_dup = log_file.try_clone().map_err(|e| e.to_string())?;

    let self_exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let (program, args, stdout): (PathBuf, Vec<String>, std::fs::File) = match launch.envoy {
        None => {
            let mut args = vec!["run".to_string(), "--dataplane".to_string(), dataplane];
            for p in policy_files {
                args.push("--policy".to_string());
                args.push(p);
            }
            args.extend(
                [
                    "--admin-address",
                    &launch.admin.to_string(),
                    "--concurrency",
                    "1",
                    "--access-log",
                    &access_log.to_string_lossy(),
                    "--access-log-format",
                    ACCESS_LOG_FORMAT,
                ]
                .map(str::to_string),
            );
            (self_exe, args, log_dup)
        }
        Some(envoy) => {
            let boot = envoy_bootstrap(launch.dataplane, launch.policies, launch.admin)?;
            let boot = write("bootstrap.json", &boot)?;
            let args = [
                "-c",
                &boot,
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ]
            .map(str::to_string)
            .to_vec();
            let stdout = std::fs::OpenOptions::new()
                .append(true)
                .open(&access_log)
                .map_err(|e| format!("access log: {e}"))?;
            (meshcap_testns::envoy_executable(envoy), args, stdout)
        }
    };
    // A process run as another user needs a copy it can reach.
    let program = match launch.uid {
        Some(_) => dir
            .install_executable(&program)
            .map_err(|e| format!("copy {} for uid {PROXY_UID}: {e}", program.display()))?,
        None => program,
    };
    let mut command = match (launch.net, launch.uid) {
        (Net::Ns(ns), Some(uid)) => ns.command_as(uid, uid, &program),
        (Net::Ns(ns), None) => ns.command(&program),
        (Net::Host, _) => Command::new(&program),
    };
    command
        .args(&args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log_file);
    let shown = format!(
        "{}{} {}",
        match launch.uid {
            Some(uid) => format!("setpriv --reuid={uid} --regid={uid} --clear-groups "),
            None => String::new(),
        },
        program.display(),
        args.iter()
            .map(|a| if a.contains(' ') {
                format!("'{}'", a.trim_end())
            } else {
                a.clone()
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let proc = Proc::spawn(command, "the proxy")?;
    Ok(Proxy {
        proc,
        access_log,
        log,
        command: shown,
    })
}

/// The bootstrap a real Envoy runs for the demo, with the demo's access log on every listener (stdout).
fn envoy_bootstrap(dataplane: &str, policies: &[(&str, String)], admin: SocketAddr) -> Result<String, String> {
    use meshcap::envoy::{Dataplane, Policy, Resources};
    let dp = Dataplane::from_yaml(dataplane).map_err(|e| format!("demo Dataplane: {e}"))?;
    let policies = policies
        .iter()
        .map(|(name, text)| Policy::from_yaml(text).map_err(|e| format!("{name}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let resources = Resources::builder(&dp)
        .policies(&policies)
        .admin_address(admin)
        .build()
        .map_err(|e| format!("demo resources: {e}"))?;
    let mut boot: serde_json::Value =
        serde_json::from_str(&resources.bootstrap_json()).map_err(|e| format!("bootstrap: {e}"))?;
    let access_log = serde_json::json!([{
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}}
        }
    }]);
    for listener in boot["static_resources"]["listeners"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        for chain in listener["filter_chains"].as_array_mut().into_iter().flatten() {
            for filter in chain["filters"].as_array_mut().into_iter().flatten() {
                filter["typed_config"]["access_log"] = access_log.clone();
            }
        }
    }
    Ok(boot.to_string())
}

/// Wait until the admin says ready (or the proxy exits: then its output is the error).
fn wait_ready(proxy: &mut Proxy, admin: Admin<'_>, rt: &tokio::runtime::Runtime) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = proxy.proc.exited() {
            let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
            return Err(format!("the proxy exited ({status}):\n{log}"));
        }
        if admin.text(rt, "/ready").is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the proxy's admin on {} was not ready within 30 s", admin.addr));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Start the demo app on `listen` (inside `ns` when given) and wait until it accepts.
fn start_app(ns: Option<&NetNs>, listen: SocketAddr, name: &str) -> Result<Proc, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let mut command = match ns {
        Some(ns) => ns.command(&exe),
        None => Command::new(&exe),
    };
    command
        .args(["demo-app", "--listen", &listen.to_string(), "--name", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut proc = Proc::spawn(command, "the demo app")?;
    let net = ns.map_or(Net::Host, Net::Ns);
    let probe: SocketAddr = match listen.ip().is_unspecified() {
        true => SocketAddr::from(([127, 0, 0, 1], listen.port())),
        false => listen,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while net.connect(probe, Duration::from_secs(1)).is_err() {
        if let Some(status) = proc.exited() {
            return Err(format!("the demo app on {listen} exited ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!("the demo app on {listen} does not accept connections"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(proc)
}

/// One request and the evidence around it.
struct Probe<'a> {
    rt: &'a tokio::runtime::Runtime,
    admin: Admin<'a>,
    pod: Option<&'a NetNs>,
    stats: std::collections::BTreeMap<String, i64>,
}

impl Probe<'_> {
    fn call(
        &mut self,
        from: &'static str,
        net: Net<'_>,
        target: SocketAddr,
        path: &str,
        why: &'static str,
    ) -> Result<Call, String> {
        // The nat counters are read right around the request: the admin calls below count too.
        let nat_before = self.pod.map(net::nat_counters).transpose()?;
        let reply = net::get(self.rt, net, target, path, REQUEST_TIMEOUT);
        let nat = match (self.pod, nat_before) {
            (Some(pod), Some(before)) => Some(net::nat_moved(&before, &net::nat_counters(pod)?)),
            _ => None,
        };
        let after = self.admin.settled_stats(self.rt)?;
        let stats = net::delta(&self.stats, &after);
        self.stats = after;
        let status = match &reply {
            Ok(r) => format!("{} {}", r.status, r.reason()),
            Err(e) => e.clone(),
        };
        println!("  {from:>6} → http://{target}{path}: {status}");
        Ok(Call {
            from,
            target,
            path: path.to_string(),
            why,
            reply,
            stats,
            nat,
        })
    }
}

/// Stop the proxy (SIGTERM: a graceful drain), read its access log, print the traces and the config.
fn report(mut proxy: Proxy, calls: &[Call], config_dump: &serde_json::Value) -> Result<(), String> {
    let clean = proxy.proc.stop(Duration::from_secs(15))?;
    let text = std::fs::read_to_string(&proxy.access_log).map_err(|e| format!("access log: {e}"))?;
    let access: Vec<_> = text.lines().filter_map(report::parse_access_line).collect();
    let dump = Dump::new(config_dump);

    println!("\nWhat happened to each request (nat counters, statistics that moved, access log)");
    println!("--------------------------------------------------------------------------------");
    for (n, call) in calls.iter().enumerate() {
        println!("{}", report::render_call(n + 1, call, &dump, &access));
    }
    println!("/config_dump: listeners");
    println!("-----------------------");
    print!("{}", dump.render_listeners());
    println!("\n/config_dump: clusters");
    println!("----------------------");
    print!("{}", dump.render_clusters());
    println!();
    if !clean {
        let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
        return Err(format!("the proxy did not exit cleanly on SIGTERM:\n{log}"));
    }
    Ok(())
}

fn proxy_name(args: &DemoArgs) -> String {
    match &args.envoy {
        Some(p) => format!("Envoy ({})", p.display()),
        None => "meshcap's sidecar (sidecar run)".to_string(),
    }
}

// --- the namespace demo -----------------------------------------------------------------------------------

fn namespaces(args: &DemoArgs, rt: &tokio::runtime::Runtime) -> Result<(), Failure> {
    let iptables = Command::new("iptables")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let pair = namespace_pair()?;
    let started = Instant::now();
    println!("meshcap sidecar demo: transparent proxying in two network namespaces");
    println!("======================================================================");
    println!(
        "  pod   {}  10.244.0.6  demo app on :5000 and :5001, the sidecar as uid {PROXY_UID}",
        pair.pod.name()
    );
    println!("  peer  {}  10.244.0.5  demo app on :8080", pair.peer.name());

    let dir = scratch_dir()?;
    let _apps = [
        start_app(Some(&pair.pod), "0.0.0.0:5000".parse().expect("address"), "backend")?,
        start_app(
            Some(&pair.pod),
            "0.0.0.0:5001".parse().expect("address"),
            "backend-5001",
        )?,
        start_app(Some(&pair.peer), "10.244.0.5:8080".parse().expect("address"), "remote")?,
    ];

    // Kuma's capture rules, from meshcap-iptables' Kuma preset; like `sidecar iptables install` (and
    // kumactl), ::6 on lo for the inbound IPv6 hops the sidecar sources from it.
    pair.pod
        .run(["ip", "-6", "addr", "replace", "::6/128", "dev", "lo"])
        .map_err(|e| format!("add ::6 to lo: {e}"))?;
    let config = Config::builder()
        .proxy_uid(PROXY_UID)
        .build()
        .map_err(|e| format!("Kuma config: {e}"))?;
    let installer = Installer::from_config(&config, Executor::netns(pair.pod.name()));
    let mut installed = Vec::new();
    for family in config.families() {
        let rules = RuleSet::build(&config, *family);
        installer
            .install(&rules)
            .map_err(|e| format!("install the capture rules: {e}"))?;
        installed.push(match family {
            meshcap::iptables::Family::V4 => "IPv4",
            _ => "IPv6",
        });
    }
    println!(
        "  capture  Kuma's rules ({iptables}, {}): inbound TCP → :15006, outbound TCP → :15001, \
         uid {PROXY_UID} not captured",
        installed.join(" and ")
    );

    let dataplane = meshcap::envoy::demo::DATAPLANE_YAML;
    let policies = policies(args.abort);
    println!("  dataplane default.backend-01: inbound 10.244.0.6:5000 (http, service backend)");
    println!("  faults   {}", fault_line(args.abort));
    let admin_addr: SocketAddr = "127.0.0.1:9901".parse().expect("address");
    let mut proxy = start_proxy(&Launch {
        envoy: args.envoy.as_deref(),
        net: Net::Ns(&pair.pod),
        uid: Some(PROXY_UID),
        dir: &dir,
        dataplane,
        policies: &policies,
        admin: admin_addr,
    })?;
    let admin = Admin {
        net: Net::Ns(&pair.pod),
        addr: admin_addr,
    };
    wait_ready(&mut proxy, admin, rt)?;
    println!("  proxy    {}, ready on {admin_addr}", proxy_name(args));
    println!("           {}", proxy.command);

    println!("\nRequests");
    println!("--------");
    let mut probe = Probe {
        rt,
        admin,
        pod: Some(&pair.pod),
        stats: admin.settled_stats(rt)?,
    };
    let (pod, peer) = (Net::Ns(&pair.pod), Net::Ns(&pair.peer));
    let service: SocketAddr = "10.244.0.6:5000".parse().expect("address");
    let mut calls = Vec::new();
    for _ in 0..args.requests {
        calls.push(probe.call("peer", peer, service, "/", "the Dataplane's inbound port")?);
    }
    calls.push(probe.call(
        "peer",
        peer,
        "10.244.0.6:5001".parse().expect("address"),
        "/",
        "a pod port the Dataplane does not name",
    )?);
    calls.push(probe.call(
        "app",
        pod,
        "10.244.0.5:8080".parse().expect("address"),
        "/",
        "the app calls a service outside the pod",
    )?);
    calls.push(probe.call("app", pod, service, "/", "the app calls its own pod IP")?);
    let config_dump = admin.json(rt, "/config_dump")?;

    report(proxy, &calls, &config_dump)?;
    let names = format!("{} and {}", pair.pod.name(), pair.peer.name());
    drop(_apps);
    drop(pair);
    drop(dir);
    registry().namespaces.clear();
    println!(
        "Cleaned up: namespaces {names} deleted (with their rules), processes stopped, scratch folder removed \
         ({:.1} s).",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// --- the loopback demo ------------------------------------------------------------------------------------

/// `preferred` on 127.0.0.1 if it is free, else a free port the system picks.
fn loopback_port(preferred: u16) -> Result<u16, String> {
    if TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        return Ok(preferred);
    }
    let l = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn loopback(args: &DemoArgs, rt: &tokio::runtime::Runtime) -> Result<(), Failure> {
    let started = Instant::now();
    let (inbound, app, admin_port) = (loopback_port(15000)?, loopback_port(5000)?, loopback_port(9901)?);
    println!("meshcap sidecar demo: explicit mode on loopback (no capture rules)");
    println!("==================================================================");
    let moved: Vec<String> = [(15000, inbound), (5000, app), (9901, admin_port)]
        .iter()
        .filter(|(want, got)| want != got)
        .map(|(want, got)| format!(":{want} is taken, using :{got}"))
        .collect();
    if !moved.is_empty() {
        println!("  ports    {}", moved.join(", "));
    }
    let dir = scratch_dir()?;
    let app_addr = SocketAddr::from(([127, 0, 0, 1], app));
    let _app = start_app(None, app_addr, "backend")?;
    println!("  app      demo app on {app_addr}");

    let dataplane = format!(
        "type: Dataplane
mesh: default
name: backend-01
networking:
  address: 127.0.0.1
  inbound:
    - port: {inbound}
      servicePort: {app}
      serviceAddress: 127.0.0.1
      tags:
        kuma.io/service: backend
        kuma.io/protocol: http
  admin:
    port: {admin_port}
"
    );
    let policies = policies(args.abort);
    println!(
        "  dataplane default.backend-01: inbound 127.0.0.1:{inbound} → app 127.0.0.1:{app} (http, service backend)"
    );
    println!("  faults   {}", fault_line(args.abort));
    let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let mut proxy = start_proxy(&Launch {
        envoy: args.envoy.as_deref(),
        net: Net::Host,
        uid: None,
        dir: &dir,
        dataplane: &dataplane,
        policies: &policies,
        admin: admin_addr,
    })?;
    let admin = Admin {
        net: Net::Host,
        addr: admin_addr,
    };
    wait_ready(&mut proxy, admin, rt)?;
    println!("  proxy    {}, ready on {admin_addr}", proxy_name(args));
    println!("           {}", proxy.command);

    println!("\nRequests");
    println!("--------");
    let mut probe = Probe {
        rt,
        admin,
        pod: None,
        stats: admin.settled_stats(rt)?,
    };
    let listener = SocketAddr::from(([127, 0, 0, 1], inbound));
    let mut calls = Vec::new();
    for _ in 0..args.requests {
        calls.push(probe.call("client", Net::Host, listener, "/", "the Dataplane's inbound listener")?);
    }
    calls.push(probe.call(
        "client",
        Net::Host,
        app_addr,
        "/",
        "the app directly, around the sidecar",
    )?);
    let config_dump = admin.json(rt, "/config_dump")?;

    report(proxy, &calls, &config_dump)?;
    drop(_app);
    drop(dir);
    println!(
        "Cleaned up: processes stopped, scratch folder removed ({:.1} s).",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

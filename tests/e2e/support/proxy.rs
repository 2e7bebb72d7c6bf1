//! The proxy under test, pluggable: the real Envoy 1.40 running the bootstrap `sidecar envoy-config`
//! generates, or meshcap's own `sidecar run` on the same Dataplane and policies. Either runs in the pod
//! namespace as uid 5678 from a scratch folder that user can read, and is stopped with SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use meshcap_testns::{ChildGuard, TempDir, envoy_executable, require_envoy};

use super::http::{self, Response};
use super::pod::{PROXY_UID, Pod, Side};
use super::stats::Snapshot;

/// The admin address both proxies use (the Dataplane names no other).
pub(crate) const ADMIN: &str = "127.0.0.1:9901";

/// Which proxy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyKind {
    /// The real Envoy on `sidecar envoy-config`'s bootstrap.
    Envoy,
    /// meshcap's `sidecar run`.
    #[allow(dead_code, reason = "its suite is enabled when `sidecar run` lands")]
    Sidecar,
}

impl ProxyKind {
    /// Whether the proxy accepts HTTP/2 with prior knowledge on an HTTP listener (Envoy's codec `AUTO`);
    /// meshcap's HTTP connection manager is HTTP/1.1 only.
    pub(crate) fn speaks_h2c(self) -> bool {
        matches!(self, ProxyKind::Envoy)
    }

    /// Whether this proxy can run here: Envoy must be installed (a loud skip otherwise, a failure under
    /// `MESHCAP_REQUIRE_PRIVILEGED=1`); the sidecar is built with the tests.
    pub(crate) fn available(self, test: &str) -> bool {
        match self {
            ProxyKind::Envoy => require_envoy(test).is_some(),
            ProxyKind::Sidecar => true,
        }
    }
}

/// What the proxy is configured with.
#[derive(Debug, Clone)]
pub(crate) struct ProxyConfig {
    /// The Dataplane (YAML).
    pub(crate) dataplane: String,
    /// Policies: file name (its extension tells YAML from JSON) and contents.
    pub(crate) policies: Vec<(String, String)>,
    /// An Envoy access-log format for every HTTP request (Envoy: a stdout logger on each HTTP connection
    /// manager; the sidecar: `--access-log FILE --access-log-format FMT`).
    pub(crate) access_log_format: Option<String>,
}

impl ProxyConfig {
    /// The recordings' Dataplane (meshcap-envoy's demo: backend-01 at 10.244.0.6, HTTP inbound 5000).
    pub(crate) fn demo() -> ProxyConfig {
        ProxyConfig {
            dataplane: meshcap::envoy::demo::DATAPLANE_YAML.to_string(),
            policies: Vec::new(),
            access_log_format: None,
        }
    }

    /// With one more policy.
    pub(crate) fn policy(mut self, file: &str, contents: &str) -> ProxyConfig {
        self.policies.push((file.to_string(), contents.to_string()));
        self
    }

    /// With an access log in `format`.
    pub(crate) fn access_log(mut self, format: &str) -> ProxyConfig {
        self.access_log_format = Some(format.to_string());
        self
    }

    /// Write the Dataplane and policies into `dir`; the `--dataplane FILE --policy FILE...` arguments.
    fn write_files(&self, dir: &TempDir) -> Vec<String> {
        let mut args = vec![
            "--dataplane".to_string(),
            path_arg(&dir.write("dataplane.yaml", &self.dataplane).expect("write dataplane")),
        ];
        for (name, contents) in &self.policies {
            args.push("--policy".to_string());
            args.push(path_arg(&dir.write(name, contents).expect("write policy")));
        }
        args
    }
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The example binary, built by `cargo test` next to this test (`target/<profile>/examples/sidecar`).
pub(crate) fn sidecar_binary() -> PathBuf {
    meshcap_testns::example_binary("sidecar")
}

/// `sidecar envoy-config` for `config`: the bootstrap a real Envoy runs.
pub(crate) fn bootstrap(config: &ProxyConfig, dir: &TempDir) -> serde_json::Value {
    let out = Command::new(sidecar_binary())
        .arg("envoy-config")
        .args(config.write_files(dir))
        .output()
        .expect("run sidecar envoy-config");
    assert!(
        out.status.success(),
        "sidecar envoy-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bootstrap JSON")
}

/// Add a stdout access log in `format` to every HTTP connection manager of `bootstrap`, the way the
/// recordings' script did.
pub(crate) fn add_access_log(bootstrap: &mut serde_json::Value, format: &str) {
    let listeners = bootstrap["static_resources"]["listeners"]
        .as_array_mut()
        .expect("static listeners");
    for listener in listeners {
        for chain in listener["filter_chains"].as_array_mut().into_iter().flatten() {
            for filter in chain["filters"].as_array_mut().into_iter().flatten() {
                if filter["name"] == "envoy.filters.network.http_connection_manager" {
                    filter["typed_config"]["access_log"] = serde_json::json!([{
                        "name": "envoy.access_loggers.stdout",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                            "log_format": {"text_format_source": {"inline_string": format}}
                        }
                    }]);
                }
            }
        }
    }
}

/// A running proxy.
#[derive(Debug)]
pub(crate) struct RunningProxy {
    kind: ProxyKind,
    child: ChildGuard,
    /// stdout and stderr.
    log: PathBuf,
    /// The sidecar's access log file (Envoy's lines are on stdout).
    access_log: Option<PathBuf>,
}

impl RunningProxy {
    /// Start `kind` with `config` in `pod` (uid 5678), and wait until its admin says it is ready.
    pub(crate) fn start(kind: ProxyKind, pod: &Pod, config: &ProxyConfig) -> RunningProxy {
        let dir = &pod.dir;
        let log = dir.join(format!("{kind:?}.log").to_lowercase());
        let out = std::fs::File::create(&log).expect("proxy log");
        let (mut command, access_log) = match kind {
            ProxyKind::Envoy => {
                let mut boot = bootstrap(config, dir);
                if let Some(format) = &config.access_log_format {
                    add_access_log(&mut boot, format);
                }
                let boot = dir.write("bootstrap.json", boot.to_string()).expect("write bootstrap");
                let envoy = require_envoy("e2e").expect("Envoy (checked by ProxyKind::available)");
                let envoy = dir
                    .install_executable(&envoy_executable(&envoy))
                    .expect("envoy into the scratch folder");
                let mut c = pod.ns(Side::Pod).command_as(PROXY_UID, PROXY_UID, envoy);
                c.arg("-c")
                    .arg(boot)
                    .args(["--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"]);
                (c, None)
            }
            ProxyKind::Sidecar => {
                let sidecar = dir
                    .install_executable(&sidecar_binary())
                    .expect("sidecar into the scratch folder");
                let mut c = pod.ns(Side::Pod).command_as(PROXY_UID, PROXY_UID, sidecar);
                c.arg("run").args(config.write_files(dir)).args(["--concurrency", "1"]);
                let access_log = config.access_log_format.as_ref().map(|format| {
                    let path = dir.writable_file("access.log").expect("access log file");
                    c.arg("--access-log").arg(&path).arg("--access-log-format").arg(format);
                    path
                });
                (c, access_log)
            }
        };
        command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        let child = ChildGuard::new(command.spawn().expect("start the proxy"));
        let mut proxy = RunningProxy {
            kind,
            child,
            log,
            access_log,
        };
        proxy.wait_ready(pod);
        proxy
    }

    fn wait_ready(&mut self, pod: &Pod) {
        let mut last = String::new();
        let ready = meshcap_testns::wait_until(Duration::from_secs(30), || {
            if let Ok(Some(status)) = self.child.0.try_wait() {
                panic!("{:?} exited early ({status}):\n{}", self.kind, self.log_text());
            }
            match self.admin_get(pod, "/ready") {
                Ok(r) if r.status == 200 => true,
                Ok(r) => {
                    last = format!("{} {}", r.status, String::from_utf8_lossy(&r.body));
                    false
                }
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        assert!(
            ready,
            "{:?} not ready after 30 s ({last}):\n{}",
            self.kind,
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the admin interface, from inside the pod.
    pub(crate) fn admin_get(&self, pod: &Pod, path: &str) -> Result<Response, String> {
        let addr: SocketAddr = ADMIN.parse().expect("admin address");
        pod.rt.block_on(http::get(pod.ns(Side::Pod), addr, path))
    }

    /// `/stats?format=json`.
    pub(crate) fn stats(&self, pod: &Pod) -> Snapshot {
        let r = self.admin_get(pod, "/stats?format=json").expect("admin /stats");
        assert_eq!(
            r.status,
            200,
            "/stats?format=json: {}",
            String::from_utf8_lossy(&r.body)
        );
        Snapshot::from_json(&String::from_utf8_lossy(&r.body)).expect("stats JSON")
    }

    /// The statistics once the traffic is over: nothing in flight and two reads in a row equal (closes
    /// are counted asynchronously after the client is gone).
    pub(crate) fn settled_stats(&self, pod: &Pod) -> Snapshot {
        let mut last = self.stats(pod);
        let mut settled = None;
        meshcap_testns::wait_until(Duration::from_secs(10), || {
            let now = self.stats(pod);
            let done = now.quiescent() && now == last;
            last = now;
            if done {
                settled = Some(last.clone());
            }
            done
        });
        settled.unwrap_or_else(|| panic!("{:?}: statistics did not settle:\n{last:?}", self.kind))
    }

    /// Stop with SIGTERM (a graceful drain); the proxy must exit cleanly. Returns the access-log lines.
    pub(crate) fn stop(mut self) -> Vec<String> {
        let status = self.child.terminate(Duration::from_secs(20)).expect("stop the proxy");
        let log = self.log_text();
        assert!(
            status.success(),
            "{:?} exited with {status} after SIGTERM:\n{log}",
            self.kind
        );
        let access_text = match &self.access_log {
            Some(path) => std::fs::read_to_string(path).expect("access log"),
            None => log.clone(),
        };
        super::recording::access_lines(&access_text)
    }
}

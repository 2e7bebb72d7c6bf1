//! The replay driver: a pod with its apps and capture rules, the proxy under test, the recordings, and
//! checkpoints comparing the statistics that moved since the previous checkpoint with a recorded delta.

use std::collections::BTreeMap;

use super::pod::{Pod, Side};
use super::proxy::{ProxyConfig, ProxyKind, RunningProxy};
use super::recording::{self, Recording};
use super::stats::{Delta, Snapshot};

/// The HTTP connection manager's stat prefix for the Dataplane's inbound 5000 (`localhost_5000`); its
/// downstream byte counter includes `x-envoy-upstream-service-time`, whose value varies in length.
const HCM_TX_BYTES: &str = "http.localhost_5000.downstream_cx_tx_bytes_total";

/// One test's replay.
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) kind: ProxyKind,
    pub(crate) rec: Recording,
    pub(crate) pod: Pod,
    proxy: Option<RunningProxy>,
    mark: Snapshot,
    /// Expected-value corrections accumulated since the mark (length differences of varying values).
    corrections: BTreeMap<String, i64>,
    /// Stats that may move by up to this much since the mark without being recorded (random faults).
    tolerated: BTreeMap<String, i64>,
    /// Whether curl's User-Agent here has the recorded length (else byte counters cannot compare).
    same_user_agent: bool,
}

impl Replay {
    /// Everything a replay needs, or `None` after a loud skip (not root, no Envoy, no recordings);
    /// under `MESHCAP_REQUIRE_PRIVILEGED=1` / `MESHCAP_REQUIRE_REFERENCE=1` a missing piece fails.
    pub(crate) fn begin(kind: ProxyKind, test: &str) -> Option<Replay> {
        if !meshcap_testns::privileged(test) || !kind.available(test) {
            return None;
        }
        let rec = Recording::open(test)?;
        let pod = Pod::new("e2e");
        let local_ua = local_curl_user_agent();
        let recorded_ua = rec.curl_user_agent();
        let same_user_agent = local_ua.len() == recorded_ua.len();
        if !same_user_agent {
            meshcap_testns::loud_skip(&format!(
                "{test}: byte counters not compared: this curl sends User-Agent {local_ua}, the recordings' {recorded_ua}"
            ));
        }
        Some(Replay {
            kind,
            rec,
            pod,
            proxy: None,
            mark: Snapshot::default(),
            corrections: BTreeMap::new(),
            tolerated: BTreeMap::new(),
            same_user_agent,
        })
    }

    /// The recordings' apps and their capture chain (`iptables-nat.txt`).
    pub(crate) fn recorded_topology(&mut self) {
        self.pod.start_recorded_apps();
        let nat = self.rec.nat_rules();
        self.pod.install_recorded_rules(&nat);
    }

    /// Start the proxy under test; the checkpoint mark is its settled boot statistics.
    pub(crate) fn start(&mut self, config: &ProxyConfig) {
        assert!(self.proxy.is_none(), "a proxy already runs");
        let proxy = RunningProxy::start(self.kind, &self.pod, config);
        self.mark = proxy.settled_stats(&self.pod);
        self.corrections.clear();
        self.tolerated.clear();
        self.proxy = Some(proxy);
    }

    /// The running proxy.
    pub(crate) fn proxy(&self) -> &RunningProxy {
        self.proxy.as_ref().expect("no proxy runs")
    }

    /// Stop the proxy (SIGTERM; it must exit cleanly) and return its access-log lines.
    pub(crate) fn stop(&mut self) -> Vec<String> {
        self.proxy.take().expect("no proxy runs").stop()
    }

    /// The settled statistics now (does not move the mark).
    pub(crate) fn settled(&self) -> Snapshot {
        self.proxy().settled_stats(&self.pod)
    }

    /// Replay a recorded curl call: `args` must be the recorded command line, and the output must equal
    /// the recorded one (modulo the masked variables). Returns the raw output.
    pub(crate) fn curl(&mut self, side: Side, recorded: &str, args: &[&str]) -> String {
        self.curl_observed(side, recorded, args, &[])
    }

    /// [`curl`](Self::curl) with `observe` appended to the command: options that only make curl report
    /// more (`-D FILE`), leaving the request and the output as recorded.
    pub(crate) fn curl_observed(&mut self, side: Side, recorded: &str, args: &[&str], observe: &[&str]) -> String {
        let (command, expected) = self.rec.transcript(recorded);
        let replayed = format!("$ {} curl {}", side.recorded_name(), args.join(" "));
        assert_eq!(
            command, replayed,
            "{recorded}: the replay runs another command than the recording"
        );
        let all: Vec<&str> = args.iter().chain(observe).copied().collect();
        let out = self.pod.curl(side, &all);
        assert_eq!(
            recording::normalize_transcript(&out),
            recording::normalize_transcript(&expected),
            "{:?}: {recorded}: the client saw something else than in the recording\n--- replay:\n{out}\n--- recording:\n{expected}",
            self.kind
        );
        if let (Some(now), Some(then)) = (recording::service_time(&out), recording::service_time(&expected)) {
            self.correct(HCM_TX_BYTES, now.len() as i64 - then.len() as i64);
        }
        out
    }

    /// Run curl with `args` (a call the recordings did not make); the raw output.
    pub(crate) fn curl_unrecorded(&mut self, side: Side, args: &[&str]) -> String {
        self.pod.curl(side, args)
    }

    /// Correct the expectation of `name` at the next checkpoint by `by`.
    pub(crate) fn correct(&mut self, name: &str, by: i64) {
        *self.corrections.entry(name.to_string()).or_default() += by;
    }

    /// Let `name` move by up to `max` (in either direction) until the next checkpoint.
    pub(crate) fn tolerate(&mut self, name: &str, max: i64) {
        *self.tolerated.entry(name.to_string()).or_default() += max;
    }

    /// Checkpoint: the statistics that moved since the last checkpoint are exactly the recorded delta
    /// `recorded` (a `*-stats-delta.txt`), corrected by `adjust` (expected − recorded).
    pub(crate) fn check_delta_adjusted(&mut self, recorded: &str, adjust: &Delta) {
        let mut expected = Delta::parse_recorded(&self.rec.read(recorded)).expect("recorded delta");
        expected.0.retain(|name, _| Snapshot::compared(name));
        self.check_delta_against(recorded, expected.plus(adjust));
    }

    /// Checkpoint against the recorded delta `recorded` as it is.
    pub(crate) fn check_delta(&mut self, recorded: &str) {
        self.check_delta_adjusted(recorded, &Delta::default());
    }

    /// Checkpoint against an expected delta.
    pub(crate) fn check_delta_against(&mut self, what: &str, mut expected: Delta) {
        let now = self.settled();
        let mut observed = self.mark.delta(&now);
        for (name, by) in std::mem::take(&mut self.corrections) {
            expected.adjust(&name, by);
        }
        for (name, max) in std::mem::take(&mut self.tolerated) {
            let moved = observed.get(&name) - expected.get(&name);
            assert!(
                moved.abs() <= max,
                "{what}: {name} moved by {moved}, more than the tolerated {max}"
            );
            observed.adjust(&name, -moved);
        }
        if !self.same_user_agent {
            for d in [&mut observed, &mut expected] {
                d.0.retain(|name, _| !name.ends_with("_bytes_total") && !name.ends_with("_bytes_buffered"));
            }
        }
        let diff = observed.diff(&expected);
        assert!(
            diff.is_empty(),
            "{:?}: {what}: the statistics moved differently than recorded:\n{diff}--- observed:\n{observed}--- expected:\n{expected}",
            self.kind
        );
        self.mark = now;
    }

    /// Checkpoint: at least these changes (other statistics may move too).
    pub(crate) fn check_delta_includes(&mut self, what: &str, expected: &[(&str, i64)]) -> Delta {
        let now = self.settled();
        let observed = self.mark.delta(&now);
        let mut missing = String::new();
        for (name, d) in expected {
            if observed.get(name) != *d {
                missing.push_str(&format!(
                    "  {name}: expected {d:+}, observed {:+}\n",
                    observed.get(name)
                ));
            }
        }
        assert!(
            missing.is_empty(),
            "{:?}: {what}:\n{missing}--- observed:\n{observed}",
            self.kind
        );
        self.corrections.clear();
        self.tolerated.clear();
        self.mark = now;
        observed
    }

    /// The access-log lines equal the recorded ones (`ACCESS` lines of `recorded_log`, minus those at
    /// `skip` indexes), start time and client port masked; the durations are returned in order.
    pub(crate) fn check_access_log(&self, access: &[String], recorded_log: &str, skip: &[usize]) -> Vec<Option<u64>> {
        let recorded: Vec<String> = self
            .rec
            .access_lines(recorded_log)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !skip.contains(i))
            .map(|(_, l)| recording::normalize_access_line(&l).0)
            .collect();
        let (replayed, durations): (Vec<String>, Vec<Option<u64>>) =
            access.iter().map(|l| recording::normalize_access_line(l)).unzip();
        assert_eq!(
            replayed.join("\n"),
            recorded.join("\n"),
            "{:?}: the access log differs from {recorded_log}",
            self.kind
        );
        durations
    }
}

/// The User-Agent this machine's curl sends (`curl/X.Y.Z`).
fn local_curl_user_agent() -> String {
    let out = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .expect("curl --version");
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(1).expect("curl version");
    format!("curl/{version}")
}

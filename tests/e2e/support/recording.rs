//! The recordings (`<reference>/envoy/e2e`, read in place, never copied) and the rules for comparing a
//! replay with them.
//!
//! A replayed output equals the recorded one after masking what differs from run to run by nature:
//! `date` headers, the value of `x-envoy-upstream-service-time` (milliseconds), the client's ephemeral
//! port in the app's answer (`from 127.0.0.6:34606`), curl's `time_total` and its version in `-v` output.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

/// The recordings folder.
#[derive(Debug, Clone)]
pub(crate) struct Recording {
    dir: PathBuf,
}

impl Recording {
    /// The recordings, or `None` (after a loud skip, or a panic under `MESHCAP_REQUIRE_REFERENCE=1`).
    pub(crate) fn open(test: &str) -> Option<Recording> {
        let dir = meshcap_testns::reference_dir(test)?.join("envoy/e2e");
        assert!(dir.is_dir(), "{}: no e2e recordings there", dir.display());
        Some(Recording { dir })
    }

    /// The envoy reference folder (`<reference>/envoy`).
    pub(crate) fn envoy_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }

    /// The text of a recorded file.
    pub(crate) fn read(&self, name: &str) -> String {
        let path = self.dir.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A recorded JSON file (`bootstrap-abort.json`), or one of the envoy folder (`../bootstrap.json`).
    pub(crate) fn json(&self, name: &str) -> serde_json::Value {
        let text = match name.strip_prefix("../") {
            Some(name) => {
                std::fs::read_to_string(self.envoy_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
            }
            None => self.read(name),
        };
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// A recorded curl transcript: the `$ command` line and the output.
    pub(crate) fn transcript(&self, name: &str) -> (String, String) {
        let text = self.read(name);
        let (command, output) = text.split_once('\n').unwrap_or((&text, ""));
        (command.to_string(), output.to_string())
    }

    /// The access-log lines (`ACCESS ...`) of a recorded Envoy log.
    pub(crate) fn access_lines(&self, name: &str) -> Vec<String> {
        access_lines(&self.read(name))
    }

    /// The `iptables -t nat -S` listing of the recordings (without the `iptables --version` line).
    pub(crate) fn nat_rules(&self) -> String {
        self.read("iptables-nat.txt")
            .lines()
            .filter(|l| l.starts_with('-'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// curl's `User-Agent` in the recordings (from the verbose B1 transcript).
    pub(crate) fn curl_user_agent(&self) -> String {
        let (_, out) = self.transcript("B1-cli-get-verbose.txt");
        out.lines()
            .find_map(|l| l.strip_prefix("> User-Agent: "))
            .expect("B1-cli-get-verbose.txt shows curl's User-Agent")
            .trim()
            .to_string()
    }
}

/// The `ACCESS ...` lines of a log.
pub(crate) fn access_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.starts_with("ACCESS "))
        .map(str::to_string)
        .collect()
}

static DATE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?mi)^(< )?(date): .*$").unwrap());
static SERVICE_TIME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^(< )?(x-envoy-upstream-service-time): \d+\r?$").unwrap());
static APP_PEER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"( from [0-9a-f.:\[\]]+):\d+$").unwrap());
static APP_PEER_LINE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?m)( from [0-9a-f.:\[\]]+):\d+$").unwrap());
static TIME_TOTAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"time_total=[0-9.]+").unwrap());
static CURL_VERSION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"curl/\d+\.\d+\.\d+").unwrap());
static ACCESS_TIME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^ACCESS \[[^\]]*\]").unwrap());
static REMOTE_PORT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(downstream_remote=[0-9a-f.:\[\]]+):\d+").unwrap());
static DURATION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r" dur=(\d+)").unwrap());

/// A curl transcript with the run-to-run variables masked (see the module docs).
pub(crate) fn normalize_transcript(text: &str) -> String {
    let t = text.replace("\r\n", "\n");
    let t = DATE.replace_all(&t, "${1}${2}: <date>");
    let t = SERVICE_TIME.replace_all(&t, "${1}${2}: <ms>");
    let t = APP_PEER_LINE.replace_all(&t, "${1}:<port>");
    // curl's -w output follows the body (on the body's last line when the body has no newline).
    let t = TIME_TOTAL.replace_all(&t, "time_total=<s>");
    let t = CURL_VERSION.replace_all(&t, "curl/<version>");
    t.into_owned()
}

/// The app's answer with the client port masked (`app 0.0.0.0:5000 saw GET /x from 127.0.0.6:<port>`).
pub(crate) fn normalize_app_body(body: &str) -> String {
    APP_PEER.replace(body.trim_end(), "${1}:<port>").into_owned()
}

/// The value of `x-envoy-upstream-service-time` in a transcript, as text.
pub(crate) fn service_time(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| {
            l.trim_start_matches("< ")
                .strip_prefix("x-envoy-upstream-service-time: ")
        })
        .map(|v| v.trim().to_string())
}

/// curl's `time_total` in seconds, when the transcript has one.
pub(crate) fn time_total(text: &str) -> Option<f64> {
    let m = TIME_TOTAL.find(text)?;
    m.as_str().strip_prefix("time_total=")?.parse().ok()
}

/// An access-log line with the start time and the client port masked, and the duration (`dur=`) cut out
/// and returned separately.
pub(crate) fn normalize_access_line(line: &str) -> (String, Option<u64>) {
    let l = ACCESS_TIME.replace(line, "ACCESS [<time>]");
    let l = REMOTE_PORT.replace_all(&l, "${1}:<port>");
    let dur = DURATION.captures(&l).and_then(|c| c[1].parse().ok());
    let l = DURATION.replace_all(&l, " dur=<ms>");
    (l.into_owned(), dur)
}

//! Statistics snapshots and deltas, in the shape of the recordings' `*-stats-delta.txt` files
//! (`name: before -> after`, counters and gauges that changed).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Stats the recordings left out of every delta (`e2e.sh`: the admin endpoint's own traffic and the
/// access-log file), plus `server.*`, which Envoy refreshes on its periodic stats flush (uptime, memory)
/// whatever the traffic; the recordings' phases were shorter than one flush interval.
const NOISE: [&str; 4] = ["http.admin.", "listener.admin.", "filesystem.", "server."];

/// Gauges of bytes sitting in a connection's buffer at the moment of the snapshot: they follow how the
/// kernel happened to deliver a response (one read or two) and when the snapshot was taken, so the
/// recordings' values (`upstream_cx_rx_bytes_buffered: 0 -> 50`, then `50 -> 206`) are not reproducible.
const TIMING: [&str; 2] = ["_rx_bytes_buffered", "_tx_bytes_buffered"];

/// Integer statistics by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot(pub(crate) BTreeMap<String, i64>);

impl Snapshot {
    /// Parse `/stats?format=json` (`{"stats": [{"name": .., "value": ..}, .., {"histograms": ..}]}`),
    /// keeping integer values outside [`NOISE`].
    pub(crate) fn from_json(text: &str) -> Result<Snapshot, String> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("stats JSON: {e}: {text:.200}"))?;
        let stats = json
            .get("stats")
            .and_then(|s| s.as_array())
            .ok_or_else(|| format!("stats JSON without a `stats` array: {text:.200}"))?;
        let mut map = BTreeMap::new();
        for s in stats {
            if let (Some(name), Some(value)) = (s.get("name").and_then(|n| n.as_str()), s.get("value")) {
                if !Snapshot::compared(name) {
                    continue;
                }
                if let Some(v) = value.as_i64() {
                    map.insert(name.to_string(), v);
                }
            }
        }
        Ok(Snapshot(map))
    }

    /// Whether a statistic of this name is compared at all (not [`NOISE`], not [`TIMING`]).
    pub(crate) fn compared(name: &str) -> bool {
        !NOISE.iter().any(|p| name.starts_with(p)) && !TIMING.iter().any(|s| name.ends_with(s))
    }

    /// Whether nothing is in flight: every downstream connection closed, no request active.
    pub(crate) fn quiescent(&self) -> bool {
        self.0.iter().all(|(name, v)| {
            let in_flight = name.ends_with("downstream_cx_active") || name.ends_with("rq_active");
            !in_flight || *v == 0
        })
    }

    /// What changed from `self` to `after`.
    pub(crate) fn delta(&self, after: &Snapshot) -> Delta {
        let mut changes = BTreeMap::new();
        for name in self.0.keys().chain(after.0.keys()) {
            let (a, b) = (
                self.0.get(name).copied().unwrap_or(0),
                after.0.get(name).copied().unwrap_or(0),
            );
            if a != b {
                changes.insert(name.clone(), b - a);
            }
        }
        Delta(changes)
    }
}

/// Changes by name (after − before), zero changes left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Delta(pub(crate) BTreeMap<String, i64>);

impl Delta {
    /// Parse a recorded `*-stats-delta.txt` (`name: 0 -> 1` lines).
    pub(crate) fn parse_recorded(text: &str) -> Result<Delta, String> {
        let mut changes = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parse = || -> Option<(String, i64)> {
                let (name, values) = line.rsplit_once(": ")?;
                let (a, b) = values.split_once(" -> ")?;
                Some((
                    name.to_string(),
                    b.trim().parse::<i64>().ok()? - a.trim().parse::<i64>().ok()?,
                ))
            };
            let (name, d) = parse().ok_or_else(|| format!("unreadable stats delta line {line:?}"))?;
            if d != 0 {
                changes.insert(name, d);
            }
        }
        Ok(Delta(changes))
    }

    /// `self + other`.
    pub(crate) fn plus(&self, other: &Delta) -> Delta {
        let mut sum = self.0.clone();
        for (k, v) in &other.0 {
            *sum.entry(k.clone()).or_default() += v;
        }
        sum.retain(|_, v| *v != 0);
        Delta(sum)
    }

    /// `self - other`.
    pub(crate) fn minus(&self, other: &Delta) -> Delta {
        self.plus(&Delta(other.0.iter().map(|(k, v)| (k.clone(), -v)).collect()))
    }

    /// Add `by` to `name`.
    pub(crate) fn adjust(&mut self, name: &str, by: i64) {
        if by == 0 {
            return;
        }
        let v = self.0.entry(name.to_string()).or_default();
        *v += by;
        if *v == 0 {
            self.0.remove(name);
        }
    }

    /// The change of `name` (0 when it did not move).
    pub(crate) fn get(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// A readable list of the differences between `self` (observed) and `expected`, empty when equal.
    pub(crate) fn diff(&self, expected: &Delta) -> String {
        let mut out = String::new();
        for name in expected
            .0
            .keys()
            .chain(self.0.keys().filter(|k| !expected.0.contains_key(*k)))
        {
            let (e, o) = (expected.get(name), self.get(name));
            if e != o {
                let _ = writeln!(out, "  {name}: expected {e:+}, observed {o:+}");
            }
        }
        out
    }
}

impl std::fmt::Display for Delta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (k, v) in &self.0 {
            writeln!(f, "  {k}: {v:+}")?;
        }
        Ok(())
    }
}

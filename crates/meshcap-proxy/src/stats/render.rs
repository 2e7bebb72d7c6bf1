//! Envoy's admin renderings of a [`Snapshot`]: `/stats` text, `/stats?format=json` and
//! `/stats/prometheus` (exposition format 0.0.4, as Envoy writes it).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use regex::Regex;

use super::tags::{Extracted, Tag, TagExtractor};
use super::{Snapshot, Stat, StatKind, StatValue, StatsError};

/// Which statistics an admin request asks for (Envoy's `usedonly` and `filter=` query parameters).
#[derive(Debug, Clone, Default)]
pub struct StatsFilter {
    used_only: bool,
    pattern: Option<Regex>,
}

impl StatsFilter {
    /// Everything.
    pub fn new() -> StatsFilter {
        StatsFilter::default()
    }

    /// Only statistics that were used. Envoy tracks a "used" flag per statistic; here a statistic counts as
    /// used when it is not zero.
    pub fn used_only(mut self, used_only: bool) -> StatsFilter {
        self.used_only = used_only;
        self
    }

    /// Only statistics whose name matches `pattern` somewhere (RE2-style syntax, as Envoy's
    /// `filter=` parameter).
    ///
    /// # Errors
    /// [`StatsError::InvalidFilter`] when `pattern` is not a valid regular expression.
    pub fn pattern(mut self, pattern: &str) -> Result<StatsFilter, StatsError> {
        let regex = Regex::new(pattern).map_err(|e| StatsError::InvalidFilter {
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })?;
        self.pattern = Some(regex);
        Ok(self)
    }

    /// Whether a statistic passes.
    pub fn matches(&self, name: &str, value: StatValue) -> bool {
        (!self.used_only || !value.is_zero()) && self.pattern.as_ref().is_none_or(|r| r.is_match(name))
    }
}

/// Compare two dotted names token by token (Envoy compares statistic names symbol by symbol, so
/// `a.b` sorts before `a-x.b` although `-` is below `.` in ASCII).
pub(crate) fn cmp_tokens(a: &str, b: &str) -> Ordering {
    a.split('.').cmp(b.split('.'))
}

/// Replace every byte outside `[a-zA-Z0-9_]` by `_` (Prometheus metric and label names).
fn push_sanitized(out: &mut String, name: &str) {
    out.extend(
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }),
    );
}

/// Escape a label value: `\` → `\\`, newline → `\n`, `"` → `\"`.
fn push_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\n' => out.push_str(r"\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn push_labels(out: &mut String, tags: &[Tag]) {
    for (i, tag) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_sanitized(out, tag.name);
        out.push_str("=\"");
        push_label_value(out, &tag.value);
        out.push('"');
    }
}

struct Family<'a> {
    kind: StatKind,
    extracted: String,
    members: Vec<(&'a Stat, Arc<Extracted>)>,
}

impl Snapshot {
    /// Envoy's `/stats` text: one `name: value` line per statistic, sorted by name.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.stats.len() * 48);
        for stat in &self.stats {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{}: {}", stat.name, stat.value);
        }
        out
    }

    /// Envoy's `/stats?format=json`: `{"stats":[{"name":…,"value":…},…]}`, sorted by name.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.stats.len() * 64 + 16);
        out.push_str("{\"stats\":[");
        for (i, stat) in self.stats.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            // Serialising a string cannot fail.
            out.push_str(&serde_json::to_string(&stat.name).unwrap_or_default());
            let _ = write!(out, ",\"value\":{}}}", stat.value);
        }
        out.push_str("]}");
        out
    }

    /// Envoy's `/stats/prometheus` (text exposition format 0.0.4, served as
    /// `text/plain; charset=UTF-8`).
    ///
    /// Tags are pulled out of the names with Envoy's default extractors ([`super::tags`]); the metric
    /// name is `envoy_` plus the tag-extracted name with every byte outside `[a-zA-Z0-9_]` replaced by
    /// `_`; counters keep their names (no `_total` suffix is added); each family starts with a
    /// `# TYPE` line; counter families come first, then gauges, each sorted by tag-extracted name, and
    /// the series of one family are sorted by their full statistic name — all as Envoy prints them.
    pub fn to_prometheus(&self) -> String {
        let extractor = TagExtractor::envoy_default();
        let mut families: Vec<Family<'_>> = Vec::new();
        let mut index: BTreeMap<(StatKind, String), usize> = BTreeMap::new();
        for stat in &self.stats {
            let extracted = extractor.extract_cached(&stat.name);
            let kind = stat.value.kind();
            let slot = *index.entry((kind, extracted.name.clone())).or_insert_with(|| {
                families.push(Family {
                    kind,
                    extracted: extracted.name.clone(),
                    members: Vec::new(),
                });
                families.len() - 1
            });
            families[slot].members.push((stat, extracted));
        }
        families.sort_by(|a, b| a.kind.cmp(&b.kind).then_with(|| cmp_tokens(&a.extracted, &b.extracted)));

        let mut out = String::with_capacity(self.stats.len() * 96);
        let mut metric = String::new();
        for family in &mut families {
            metric.clear();
            metric.push_str("envoy_");
            push_sanitized(&mut metric, &family.extracted);
            let _ = writeln!(out, "# TYPE {metric} {}", family.kind);
            family.members.sort_by(|(a, _), (b, _)| cmp_tokens(&a.name, &b.name));
            for (stat, extracted) in &family.members {
                out.push_str(&metric);
                out.push('{');
                push_labels(&mut out, &extracted.tags);
                let _ = writeln!(out, "}} {}", stat.value);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(stats: &[(&str, StatValue)]) -> Snapshot {
        Snapshot::from_stats(stats.iter().map(|(n, v)| (n.to_string(), *v)))
    }

    #[test]
    fn token_order() {
        assert_eq!(cmp_tokens("http.async.x", "http.async-client.x"), Ordering::Less);
        assert_eq!(cmp_tokens("cluster.x", "cluster_manager.y"), Ordering::Less);
        assert_eq!(cmp_tokens("listener.10.x", "listener.[__]_1.x"), Ordering::Less);
        assert_eq!(cmp_tokens("a.b", "a.b.c"), Ordering::Less);
        assert_eq!(cmp_tokens("a.b", "a.b"), Ordering::Equal);
    }

    #[test]
    fn text_and_json() {
        let s = snap(&[("b.c", StatValue::Gauge(-1)), ("a\"q.x", StatValue::Counter(7))]);
        assert_eq!(s.to_text(), "a\"q.x: 7\nb.c: -1\n");
        assert_eq!(
            s.to_json(),
            r#"{"stats":[{"name":"a\"q.x","value":7},{"name":"b.c","value":-1}]}"#
        );
        assert_eq!(Snapshot::default().to_json(), r#"{"stats":[]}"#);
        assert_eq!(Snapshot::default().to_text(), "");
        assert_eq!(Snapshot::default().to_prometheus(), "");
    }

    #[test]
    fn prometheus_groups_counters_then_gauges() {
        let s = snap(&[
            ("cluster.b.upstream_cx_active", StatValue::Gauge(2)),
            ("cluster.a.upstream_cx_active", StatValue::Gauge(1)),
            ("cluster.b.upstream_cx_total", StatValue::Counter(4)),
            ("server.live", StatValue::Gauge(1)),
            ("cluster.a.upstream_rq_200", StatValue::Counter(3)),
            ("cluster.a.upstream_rq_503", StatValue::Counter(1)),
        ]);
        assert_eq!(
            s.to_prometheus(),
            "# TYPE envoy_cluster_upstream_cx_total counter\n\
             envoy_cluster_upstream_cx_total{envoy_cluster_name=\"b\"} 4\n\
             # TYPE envoy_cluster_upstream_rq counter\n\
             envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"a\"} 3\n\
             envoy_cluster_upstream_rq{envoy_response_code=\"503\",envoy_cluster_name=\"a\"} 1\n\
             # TYPE envoy_cluster_upstream_cx_active gauge\n\
             envoy_cluster_upstream_cx_active{envoy_cluster_name=\"a\"} 1\n\
             envoy_cluster_upstream_cx_active{envoy_cluster_name=\"b\"} 2\n\
             # TYPE envoy_server_live gauge\n\
             envoy_server_live{} 1\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let s = snap(&[("cluster.a\"b\\c.x", StatValue::Counter(1))]);
        assert_eq!(
            s.to_prometheus(),
            "# TYPE envoy_cluster_x counter\nenvoy_cluster_x{envoy_cluster_name=\"a\\\"b\\\\c\"} 1\n"
        );
    }

    #[test]
    fn filter() {
        let s = snap(&[
            ("a.x", StatValue::Counter(0)),
            ("a.y", StatValue::Counter(1)),
            ("b.y", StatValue::Gauge(0)),
        ]);
        let used = s.clone().filtered(&StatsFilter::new().used_only(true));
        assert_eq!(used.to_text(), "a.y: 1\n");
        let y = s.clone().filtered(&StatsFilter::new().pattern(r"\.y$").unwrap());
        assert_eq!(y.to_text(), "a.y: 1\nb.y: 0\n");
        assert!(matches!(
            StatsFilter::new().pattern("("),
            Err(StatsError::InvalidFilter { .. })
        ));
    }
}

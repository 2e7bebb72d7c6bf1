//! The stats renderers against a real Envoy 1.40's admin output (`reference/envoy/stats*.{txt,json}`).
//!
//! The input is the set of statistic names and values Envoy printed on `/stats`; our renderings of that
//! set must reproduce Envoy's `/stats`, `/stats?format=json` and `/stats/prometheus` bodies.
//!
//! * Histograms are excluded: we record none, so Envoy's `No recorded values` lines, the JSON
//!   `histograms` element and the Prometheus `histogram` families have no counterpart.
//! * `/stats` text does not say whether a statistic is a counter or a gauge; for Prometheus the kind
//!   of each input statistic is taken from the reference's `# TYPE` line of the family our tag
//!   extraction puts it in (a name we extract differently from Envoy finds no family and fails).
//! * The captures were taken one admin request apart, so the admin listener's own counters
//!   (`listener.admin.*`, `http.admin.*`) differ between the files by the requests in between; for
//!   those series only the value may differ, never the name, labels or position.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use meshcap_proxy::stats::tags::TagExtractor;
use meshcap_proxy::stats::{Snapshot, StatValue};

fn reference(test: &str) -> Option<std::path::PathBuf> {
    meshcap_testns::reference_dir(test).map(|d| d.join("envoy"))
}

/// `name: value` lines of `/stats`, histograms skipped.
fn parse_stats_txt(dir: &Path) -> Vec<(String, u64)> {
    let text = fs::read_to_string(dir.join("stats.txt")).expect("read stats.txt");
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ").expect("`name: value` line");
            value.parse::<u64>().ok().map(|v| (name.to_string(), v))
        })
        .collect()
}

struct PromReference {
    /// metric name → type.
    types: HashMap<String, String>,
    /// All lines of counter and gauge families, in order.
    lines: Vec<String>,
}

fn parse_prom_reference(dir: &Path) -> PromReference {
    let text = fs::read_to_string(dir.join("stats_prometheus.txt")).expect("read stats_prometheus.txt");
    let mut types = HashMap::new();
    let mut lines = Vec::new();
    let mut current_is_histogram = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (metric, kind) = rest.split_once(' ').expect("# TYPE metric kind");
            types.insert(metric.to_string(), kind.to_string());
            current_is_histogram = kind == "histogram";
        }
        if !current_is_histogram {
            lines.push(line.to_string());
        }
    }
    PromReference { types, lines }
}

fn prom_metric_name(stat: &str) -> String {
    let extracted = TagExtractor::envoy_default().extract(stat).name;
    let sanitized: String = extracted
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    format!("envoy_{sanitized}")
}

/// Split a sample line into its series part and value.
fn split_sample(line: &str) -> (&str, &str) {
    line.rsplit_once(' ').expect("sample line has a value")
}

#[test]
fn text_matches_envoy() {
    let Some(dir) = reference("stats_text_matches_envoy") else {
        return;
    };
    let stats = parse_stats_txt(&dir);
    assert!(stats.len() > 900, "reference has {} statistics", stats.len());
    // Feed them in reverse so the renderer's sorting is what produces Envoy's order.
    let snap = Snapshot::from_stats(stats.iter().rev().map(|(n, v)| (n.clone(), StatValue::Counter(*v))));
    let expected: String = fs::read_to_string(dir.join("stats.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.ends_with(": No recorded values"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(snap.to_text(), expected);
}

#[test]
fn json_matches_envoy() {
    let Some(dir) = reference("stats_json_matches_envoy") else {
        return;
    };
    let text = fs::read_to_string(dir.join("stats.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entries = doc["stats"].as_array().unwrap();
    let stats: Vec<(String, StatValue)> = entries
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                StatValue::Counter(e["value"].as_u64()?),
            ))
        })
        .collect();
    assert_eq!(
        stats.len() + 1,
        entries.len(),
        "all but the histograms element are name/value pairs"
    );
    let snap = Snapshot::from_stats(stats.into_iter().rev());
    // Envoy's body without its trailing histograms element.
    let cut = text
        .find(",{\"histograms\":")
        .expect("reference has a histograms element");
    let expected = format!("{}]}}", &text[..cut]);
    assert_eq!(snap.to_json(), expected.trim_end());
}

#[test]
fn prometheus_matches_envoy() {
    let Some(dir) = reference("stats_prometheus_matches_envoy") else {
        return;
    };
    let stats = parse_stats_txt(&dir);
    let reference = parse_prom_reference(&dir);

    let mut unknown = Vec::new();
    let snap = Snapshot::from_stats(stats.iter().map(|(name, v)| {
        let metric = prom_metric_name(name);
        let value = match reference.types.get(&metric).map(String::as_str) {
            Some("gauge") => StatValue::Gauge(*v as i64),
            Some("counter") => StatValue::Counter(*v),
            _ => {
                unknown.push(format!("{name} -> {metric}"));
                StatValue::Counter(*v)
            }
        };
        (name.clone(), value)
    }));
    assert!(
        unknown.is_empty(),
        "names extracted unlike Envoy:\n{}",
        unknown.join("\n")
    );

    let ours = snap.to_prometheus();
    let ours: Vec<&str> = ours.lines().collect();
    let mut mismatches = Vec::new();
    for (i, (a, b)) in ours.iter().zip(&reference.lines).enumerate() {
        if a == b {
            continue;
        }
        let same_series_admin = !a.starts_with('#')
            && split_sample(a).0 == split_sample(b).0
            && (a.starts_with("envoy_listener_admin") || a.contains("=\"admin\""));
        if !same_series_admin {
            mismatches.push(format!("line {}:\n  ours:  {a}\n  envoy: {b}", i + 1));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} lines differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert_eq!(ours.len(), reference.lines.len(), "line count");
}

/// A strict reader of the text exposition format 0.0.4 as Envoy writes it: every sample belongs to
/// the family declared by the `# TYPE` line just above it, families are contiguous and unique, names
/// and label names match Prometheus' grammar, label values are properly quoted and escaped, values
/// parse, and no series repeats.
fn check_exposition(text: &str) -> Result<usize, String> {
    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut families = std::collections::HashSet::new();
    let mut series = std::collections::HashSet::new();
    let mut current: Option<String> = None;
    let mut samples = 0;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (metric, kind) = rest.split_once(' ').ok_or(format!("line {n}: bad TYPE"))?;
            if !is_name(metric) || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("line {n}: bad TYPE {rest:?}"));
            }
            if !families.insert(metric.to_string()) {
                return Err(format!("line {n}: family {metric} declared twice"));
            }
            current = Some(metric.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(format!("line {n}: unexpected line {line:?}"));
        }
        let open = line.find('{').ok_or(format!("line {n}: no label set"))?;
        let metric = &line[..open];
        if Some(metric) != current.as_deref() || !is_name(metric) {
            return Err(format!("line {n}: sample {metric} outside its family"));
        }
        // Labels: name="value" pairs separated by commas, values with \\ \" \n escapes only.
        let bytes = line.as_bytes();
        let mut i = open + 1;
        loop {
            if bytes.get(i) == Some(&b'}') {
                i += 1;
                break;
            }
            let eq = line[i..].find('=').ok_or(format!("line {n}: label without ="))? + i;
            if !is_name(&line[i..eq]) || bytes.get(eq + 1) != Some(&b'"') {
                return Err(format!("line {n}: bad label name {:?}", &line[i..eq]));
            }
            i = eq + 2;
            loop {
                match bytes.get(i) {
                    Some(b'\\') => {
                        if !matches!(bytes.get(i + 1), Some(b'\\' | b'"' | b'n')) {
                            return Err(format!("line {n}: bad escape"));
                        }
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\n') | None => return Err(format!("line {n}: unterminated label value")),
                    Some(_) => i += 1,
                }
            }
            match bytes.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {}
                _ => return Err(format!("line {n}: expected , or }}")),
            }
        }
        let rest = line[i..]
            .strip_prefix(' ')
            .ok_or(format!("line {n}: no space before value"))?;
        rest.parse::<f64>()
            .map_err(|_| format!("line {n}: bad value {rest:?}"))?;
        if !series.insert(line[..i].to_string()) {
            return Err(format!("line {n}: duplicate series {}", &line[..i]));
        }
        samples += 1;
    }
    Ok(samples)
}

#[test]
fn prometheus_output_parses() {
    let Some(dir) = reference("stats_prometheus_parses") else {
        return;
    };
    let stats = parse_stats_txt(&dir);
    let reference = parse_prom_reference(&dir);
    let snap = Snapshot::from_stats(stats.iter().map(|(name, v)| {
        let value = match reference.types.get(&prom_metric_name(name)).map(String::as_str) {
            Some("gauge") => StatValue::Gauge(*v as i64),
            _ => StatValue::Counter(*v),
        };
        (name.clone(), value)
    }));
    let text = snap.to_prometheus();

    let samples = check_exposition(&text).unwrap_or_else(|e| panic!("strict check: {e}"));
    assert_eq!(samples, stats.len());

    // And an independent parser. prometheus-parse 0.2 silently skips samples with an empty label set
    // (`envoy_server_live{} 1`, valid exposition format that Envoy prints for untagged statistics), so it
    // must see exactly the labelled ones.
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("prometheus-parse");
    let labelled = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("{} "))
        .count();
    assert_eq!(scrape.samples.len(), labelled);
    assert!(labelled > 800, "{labelled}");
    let active = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "envoy_cluster_membership_total" && s.labels.get("envoy_cluster_name") == Some("localhost_5000")
        })
        .expect("membership_total sample");
    assert!(matches!(active.value, prometheus_parse::Value::Gauge(v) if v == 1.0));
    let worker = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "envoy_listener_worker_downstream_cx_total"
                && s.labels.get("envoy_listener_address") == Some("[__]_15001")
        })
        .expect("worker series");
    assert_eq!(worker.labels.get("envoy_worker_id"), Some("0"));
    assert!(matches!(worker.value, prometheus_parse::Value::Counter(_)));

    // The strict checker is not a rubber stamp.
    for bad in [
        "envoy_x{} 1\n",
        "# TYPE envoy_x counter\nenvoy_x{a=\"1} 1\n",
        "# TYPE envoy_x counter\nenvoy_x{a=\"1\"} one\n",
        "# TYPE envoy_x counter\nenvoy_x{} 1\nenvoy_x{} 2\n",
        "# TYPE envoy_x counter\n# TYPE envoy_x counter\n",
        "# TYPE envoy_x counter\nenvoy_x{1a=\"b\"} 1\n",
    ] {
        assert!(check_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

/// Our stat blocks use Envoy's names and kinds: the listener and tcp_proxy blocks have exactly Envoy's
/// set for one listener / one tcp_proxy prefix, the cluster block a subset of Envoy's cluster set.
#[test]
fn stat_blocks_use_envoy_names_and_kinds() {
    use meshcap_proxy::listen::ListenerStats;
    use meshcap_proxy::stats::StatSource;
    use meshcap_proxy::tcp_proxy::TcpProxyStats;
    use meshcap_proxy::upstream::ClusterStats;
    use std::collections::BTreeSet;

    let Some(dir) = reference("stat_blocks_use_envoy_names") else {
        return;
    };
    let reference_names: Vec<String> = parse_stats_txt(&dir).into_iter().map(|(n, _)| n).collect();
    let prom = parse_prom_reference(&dir);
    let with_prefix = |prefix: &str| -> BTreeSet<String> {
        reference_names
            .iter()
            .filter(|n| n.strip_prefix(prefix).is_some_and(|rest| !rest.contains("http.")))
            .cloned()
            .collect()
    };
    let collect = |source: &dyn StatSource| -> Vec<(String, StatValue)> {
        let mut v = Vec::new();
        source.visit_stats(&mut |n, value| v.push((n.to_string(), value)));
        v
    };

    let listener = collect(&ListenerStats::new("listener.0.0.0.0_15001", "worker_0"));
    let tcp = collect(&TcpProxyStats::new("outbound_passthrough_ipv4"));
    let cluster = collect(&ClusterStats::new("outbound_passthrough_ipv4"));

    let names = |v: &[(String, StatValue)]| v.iter().map(|(n, _)| n.clone()).collect::<BTreeSet<_>>();
    assert_eq!(names(&listener), with_prefix("listener.0.0.0.0_15001."));
    assert_eq!(names(&tcp), with_prefix("tcp.outbound_passthrough_ipv4."));
    let envoy_cluster = with_prefix("cluster.outbound_passthrough_ipv4.");
    let extra: Vec<_> = names(&cluster).difference(&envoy_cluster).cloned().collect();
    assert!(extra.is_empty(), "cluster stats Envoy does not have: {extra:?}");

    for (name, value) in listener.iter().chain(&tcp).chain(&cluster) {
        let kind = prom.types.get(&prom_metric_name(name)).map(String::as_str);
        let ours = match value {
            StatValue::Counter(_) => "counter",
            StatValue::Gauge(_) => "gauge",
            _ => "other",
        };
        assert_eq!(kind, Some(ours), "{name}");
    }
}

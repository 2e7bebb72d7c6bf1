//! Statistic names from anywhere (a cluster name out of a config file, a listener address) never make
//! tag extraction or the admin renderers panic, and the renderings keep their shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshcap_proxy::stats::tags::TagExtractor;
use meshcap_proxy::stats::{Snapshot, StatValue};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let stats: Vec<(String, StatValue)> = text
        .split('\n')
        .enumerate()
        .map(|(i, name)| {
            let value = if i % 2 == 0 {
                StatValue::Counter(i as u64)
            } else {
                StatValue::Gauge(-(i as i64))
            };
            (name.to_string(), value)
        })
        .collect();
    for (name, _) in &stats {
        let extracted = TagExtractor::envoy_default().extract(name);
        assert!(extracted.name.len() <= name.len());
    }
    let snap = Snapshot::from_stats(stats);
    let text = snap.to_text();
    assert!(text.matches(": ").count() >= snap.len());
    let json = snap.to_json();
    assert!(json.starts_with("{\"stats\":[") && json.ends_with("]}"));
    let prom = snap.to_prometheus();
    let samples = prom.lines().filter(|l| !l.starts_with("# TYPE ")).count();
    // Names with a newline cannot occur (split above), so every statistic is one sample line.
    assert_eq!(samples, snap.len());
});

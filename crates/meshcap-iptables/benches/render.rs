//! Rendering a large configuration: building the rule set, the restore text, the save text, and parsing
//! the save text back.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use meshcap_iptables::{Config, Family, RuleSet};

fn large_config() -> Config {
    let ports: Vec<String> = (1000..1200).map(|p| p.to_string()).collect();
    let ips: Vec<String> = (0..100)
        .map(|i| format!("10.{}.{}.0/24", i / 10, i % 10))
        .chain((0..50).map(|i| format!("fd00:{i:x}::/64")))
        .collect();
    let uids: Vec<String> = (0..20)
        .map(|i| format!("tcp:{},{}-{}:{}", 2000 + i, 3000 + i * 10, 3005 + i * 10, 100 + i))
        .collect();
    let vnets: Vec<String> = (0..20).map(|i| format!("br{i}:172.{}.0.0/16", 16 + i)).collect();
    Config::builder()
        .exclude_inbound_ports(&ports.join(","))
        .and_then(|b| b.exclude_outbound_ports(&ports.join(",")))
        .and_then(|b| b.exclude_outbound_ips(&ips))
        .and_then(|b| b.exclude_inbound_ips(&ips))
        .and_then(|b| b.exclude_outbound_ports_for_uids(&uids))
        .and_then(|b| b.vnets(&vnets))
        .map(|b| b.capture_all_dns().iptables_logs(true).drop_invalid_packets(true))
        .and_then(|b| b.build())
        .unwrap_or_else(|e| panic!("bench config: {e}"))
}

fn render(c: &mut Criterion) {
    let config = large_config();
    let rules = RuleSet::build(&config, Family::V4);
    let saved = rules.render_save();
    let mut g = c.benchmark_group(format!("large config ({} rules)", rules.rule_count()));
    g.bench_function("build", |b| b.iter(|| RuleSet::build(black_box(&config), Family::V4)));
    g.bench_function("render_restore", |b| b.iter(|| black_box(&rules).render_restore()));
    g.bench_function("render_save", |b| b.iter(|| black_box(&rules).render_save()));
    g.bench_function("parse_save", |b| {
        b.iter(|| RuleSet::parse(black_box(&saved), Family::V4).map(|r| r.rule_count()))
    });
    g.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);

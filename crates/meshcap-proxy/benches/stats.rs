//! Statistics hot path and scrape cost: a counter increment (what the data path pays per event), and
//! a snapshot plus each admin rendering of an Envoy-sized statistics set (what a scrape costs).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshcap_proxy::listen::ListenerStats;
use meshcap_proxy::stats::tags::TagExtractor;
use meshcap_proxy::stats::{Counter, Gauge, StatsRegistry};
use meshcap_proxy::tcp_proxy::TcpProxyStats;
use meshcap_proxy::upstream::ClusterStats;

fn increments(c: &mut Criterion) {
    let mut g = c.benchmark_group("stats_increment");
    g.throughput(Throughput::Elements(1));
    let counter = Counter::new();
    g.bench_function("counter_inc", |b| b.iter(|| black_box(&counter).inc()));
    let gauge = Gauge::new();
    g.bench_function("gauge_inc_dec", |b| {
        b.iter(|| {
            black_box(&gauge).inc();
            black_box(&gauge).dec();
        })
    });
    // Two threads hammering the same counter: the cost of sharing one cache line.
    let shared = Arc::new(Counter::new());
    g.bench_function("counter_inc_contended", |b| {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let other = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    shared.inc();
                }
            })
        };
        b.iter(|| black_box(&*shared).inc());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        other.join().unwrap();
    });
    g.finish();
}

/// A registry shaped like the reference Envoy's: 5 listeners, 5 clusters, 4 tcp_proxy prefixes.
fn envoy_sized_registry() -> StatsRegistry {
    let r = StatsRegistry::new();
    for addr in [
        "0.0.0.0_15001",
        "0.0.0.0_15006",
        "[__]_15001",
        "[__]_15006",
        "10.244.0.6_5000",
    ] {
        r.register(Arc::new(ListenerStats::new(format!("listener.{addr}"), "worker_0")));
    }
    for name in [
        "inbound_passthrough_ipv4",
        "inbound_passthrough_ipv6",
        "outbound_passthrough_ipv4",
        "outbound_passthrough_ipv6",
        "localhost_5000",
    ] {
        let cluster = Arc::new(ClusterStats::new(name));
        cluster.upstream_cx_total.add(12345);
        r.register(cluster);
        r.register(Arc::new(TcpProxyStats::new(name)));
    }
    for i in 0..200 {
        r.counter(&format!("cluster.localhost_5000.upstream_rq_{}", 200 + i % 300))
            .unwrap()
            .add(i);
    }
    r
}

fn scrape(c: &mut Criterion) {
    let registry = envoy_sized_registry();
    let snapshot = registry.snapshot();
    let mut g = c.benchmark_group("stats_scrape");
    g.throughput(Throughput::Elements(snapshot.len() as u64));
    g.bench_function("snapshot", |b| b.iter(|| black_box(registry.snapshot())));
    g.bench_function("render_text", |b| b.iter(|| black_box(snapshot.to_text())));
    g.bench_function("render_json", |b| b.iter(|| black_box(snapshot.to_json())));
    g.bench_function("render_prometheus", |b| b.iter(|| black_box(snapshot.to_prometheus())));
    g.finish();

    let mut g = c.benchmark_group("stats_tags");
    let extractor = TagExtractor::envoy_default();
    for name in [
        "listener.10.244.0.6_5000.http.localhost_5000.downstream_rq_2xx",
        "cluster.outbound_passthrough_ipv4.upstream_cx_total",
        "server.live",
    ] {
        g.bench_function(name, |b| b.iter(|| black_box(extractor.extract(black_box(name)))));
    }
    g.finish();
}

criterion_group!(benches, increments, scrape);
criterion_main!(benches);

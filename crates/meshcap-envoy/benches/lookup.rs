//! The per-connection lookup (`Resources::listener_for`) and the per-change renderings.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use meshcap_envoy::{ConfigDumpOptions, Dataplane, Inbound, Outbound, Resources, Tags, Timestamp, TrafficDirection};
use meshcap_envoy::{TransparentProxying, demo};

/// A Dataplane with 50 inbounds and 200 outbounds.
fn large() -> Resources {
    let mut b = Dataplane::builder("default", "big-01", "10.244.0.6".parse().expect("ip"));
    for i in 0..50u16 {
        b = b.inbound(Inbound::new(
            5000 + i,
            Tags::new()
                .with("kuma.io/service", format!("svc-{i}"))
                .with("kuma.io/protocol", "http"),
        ));
    }
    for i in 0..200u16 {
        b = b.outbound(Outbound::new(
            20_000 + i,
            Tags::new().with("kuma.io/service", format!("dep-{i}")),
        ));
    }
    let dp = b
        .transparent_proxying(TransparentProxying::new(15006, 15001))
        .build()
        .expect("dataplane");
    Resources::from_dataplane(&dp).expect("resources")
}

fn lookup(c: &mut Criterion) {
    let seed = demo::resources();
    let big = large();
    let hit: SocketAddr = "10.244.0.6:5000".parse().expect("addr");
    let miss: SocketAddr = "10.244.0.5:8080".parse().expect("addr");
    let outbound: SocketAddr = "127.0.0.1:20150".parse().expect("addr");
    c.bench_function("listener_for/seed/inbound hit", |b| {
        b.iter(|| seed.listener_for(TrafficDirection::Inbound, black_box(hit)))
    });
    c.bench_function("listener_for/seed/passthrough", |b| {
        b.iter(|| seed.listener_for(TrafficDirection::Outbound, black_box(miss)))
    });
    c.bench_function("listener_for/250 listeners/outbound hit", |b| {
        b.iter(|| big.listener_for(TrafficDirection::Outbound, black_box(outbound)))
    });
    c.bench_function("listener_for/250 listeners/passthrough", |b| {
        b.iter(|| big.listener_for(TrafficDirection::Outbound, black_box(miss)))
    });
}

fn render(c: &mut Criterion) {
    let seed = demo::resources();
    let at = Timestamp::from_unix(1_795_692_936, 386_000_000).expect("timestamp");
    let options = ConfigDumpOptions::new(at);
    c.bench_function("config_dump_json/seed", |b| {
        b.iter(|| seed.config_dump_json(black_box(&options)))
    });
    c.bench_function("bootstrap_json/seed", |b| b.iter(|| seed.bootstrap_json()));
    c.bench_function("build/seed", |b| {
        let dp = demo::dataplane();
        b.iter(|| Resources::from_dataplane(black_box(&dp)))
    });
}

criterion_group!(benches, lookup, render);
criterion_main!(benches);

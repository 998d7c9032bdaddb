//! Micro-benchmarks of the pure functions on the data path: protocol detection, latency
//! recording, the pool lookup, and rendering of the rules (for scale).

use std::hint::black_box;
use std::time::Duration;

use bulwark_proxy::config::Config;
use bulwark_proxy::metrics::{Direction, Metrics};
use bulwark_proxy::pool::{Pools, Version};
use bulwark_proxy::transport::detect::classify;
use criterion::{Criterion, criterion_group, criterion_main};

fn detection(c: &mut Criterion) {
    let h1 = b"GET /api/v1/users?id=42 HTTP/1.1\r\nHost: users.default.svc:8080\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";
    let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00";
    let tls = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let opaque = b"*1\r\n$4\r\nPING\r\n";
    let mut g = c.benchmark_group("detect");
    g.bench_function("http1", |b| b.iter(|| classify(black_box(h1))));
    g.bench_function("http2", |b| b.iter(|| classify(black_box(h2))));
    g.bench_function("tls", |b| b.iter(|| classify(black_box(&tls))));
    g.bench_function("opaque", |b| b.iter(|| classify(black_box(opaque))));
    g.finish();
}

fn metrics(c: &mut Criterion) {
    let m = Metrics::new(256);
    c.bench_function("metrics/record_request", |b| {
        b.iter(|| {
            m.record_request(
                Direction::Outbound,
                black_box("users.default.svc:8080"),
                200,
                Duration::from_micros(137),
            )
        })
    });
}

fn pool_lookup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let cfg = Config::default();
    let connect = cfg.tcp.connect_timeout;
    let pools = Pools::new(cfg.http, cfg.tcp, None);
    let addrs: Vec<std::net::SocketAddr> = (0..64)
        .map(|i| std::net::SocketAddr::from(([10, 0, 0, i as u8], 8080)))
        .collect();
    for a in &addrs {
        pools.get(*a, Version::Http1, connect, None, None);
    }
    let mut i = 0;
    c.bench_function("pool/get_existing", |b| {
        b.iter(|| {
            i = (i + 1) % addrs.len();
            black_box(pools.get(addrs[i], Version::Http1, connect, None, None));
        })
    });
}

criterion_group!(benches, detection, metrics, pool_lookup);
criterion_main!(benches);

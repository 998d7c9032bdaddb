use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use bulwark_api::policy::Algorithm;

use super::*;
use crate::outbound::policy::BalancePolicy;

fn endpoints(n: usize, now: Instant) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            let addr: SocketAddr = format!("10.0.0.{}:80", i + 1).parse().unwrap();
            Arc::new(Endpoint::new(addr, Duration::from_millis(30), now))
        })
        .collect()
}

fn lb(algorithm: Algorithm) -> BalancePolicy {
    BalancePolicy {
        algorithm,
        default_rtt: Duration::from_millis(30),
        decay: Duration::from_secs(10),
        slow_start: None,
    }
}

fn rng(seed: u64) -> impl FnMut() -> f64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn peak_ewma_jumps_to_peaks_and_decays_toward_new_samples() {
    let t0 = Instant::now();
    let mut e = Ewma::new(Duration::from_millis(30), t0);
    e.observe(Duration::from_millis(100), t0, Duration::from_secs(10));
    assert_eq!(
        e.estimate_ns(),
        100e6,
        "a peak replaces the estimate at once"
    );
    e.observe(
        Duration::from_millis(10),
        t0 + Duration::from_secs(10),
        Duration::from_secs(10),
    );
    let expected = 100e6 * (-1f64).exp() + 10e6 * (1.0 - (-1f64).exp());
    assert!(
        (e.estimate_ns() - expected).abs() < 1.0,
        "{}",
        e.estimate_ns()
    );
}

#[test]
fn peak_ewma_sends_most_load_to_the_fast_endpoints() {
    let now = Instant::now();
    let eps = endpoints(3, now);
    for (i, e) in eps.iter().enumerate() {
        let rtt = if i == 2 { 50 } else { 5 };
        e.lock()
            .ewma
            .observe(Duration::from_millis(rtt), now, Duration::from_secs(10));
        e.lock().ewma = Ewma {
            estimate_ns: rtt as f64 * 1e6,
            updated: now,
        };
    }
    let rr = AtomicU64::new(0);
    let mut counts = [0u32; 3];
    let mut r = rng(7);
    for _ in 0..3000 {
        let (e, pool) = pick(&eps, &[], &lb(Algorithm::PeakEwma), 50, &rr, now, &mut r).unwrap();
        assert_eq!(pool, Candidates::Healthy);
        counts[eps.iter().position(|x| Arc::ptr_eq(x, &e)).unwrap()] += 1;
    }
    // P2C never picks the slow one when it is paired with a fast one: it gets only the
    // (impossible) pairs of itself, so nothing.
    assert_eq!(counts[2], 0, "{counts:?}");
    assert!(counts[0] > 1200 && counts[1] > 1200, "{counts:?}");
}

#[test]
fn least_request_prefers_fewer_in_flight_and_round_robin_cycles() {
    let now = Instant::now();
    let eps = endpoints(2, now);
    eps[0].in_flight.store(5, Ordering::Relaxed);
    let rr = AtomicU64::new(0);
    let mut r = rng(3);
    for _ in 0..50 {
        let (e, _) = pick(
            &eps,
            &[],
            &lb(Algorithm::LeastRequest),
            50,
            &rr,
            now,
            &mut r,
        )
        .unwrap();
        assert_eq!(e.addr, eps[1].addr);
    }
    let eps = endpoints(3, now);
    let order: Vec<SocketAddr> = (0..6)
        .map(|_| {
            pick(&eps, &[], &lb(Algorithm::RoundRobin), 50, &rr, now, &mut r)
                .unwrap()
                .0
                .addr
        })
        .collect();
    assert_eq!(order[0..3], order[3..6]);
    assert_ne!(order[0], order[1]);
}

#[test]
fn tried_and_ejected_endpoints_are_skipped_unless_nothing_else_is_left() {
    let now = Instant::now();
    let eps = endpoints(3, now);
    let rr = AtomicU64::new(0);
    let mut r = rng(11);
    let policy = lb(Algorithm::PeakEwma);
    for _ in 0..50 {
        let (e, _) = pick(
            &eps,
            &[eps[0].addr, eps[1].addr],
            &policy,
            50,
            &rr,
            now,
            &mut r,
        )
        .unwrap();
        assert_eq!(e.addr, eps[2].addr);
    }
    let (e, _) = pick(&eps[..1], &[eps[0].addr], &policy, 50, &rr, now, &mut r).unwrap();
    assert_eq!(e.addr, eps[0].addr, "the only endpoint is tried again");
    let op = crate::outbound::policy::OutlierPolicy {
        max_ejection_percent: 100,
        ..crate::outbound::build::outlier_policy(None)
    };
    eps[0]
        .lock()
        .outlier
        .eject(outlier::Reason::Latency, String::new(), now, &op, 0.0);
    eps[0].set_ejected(true);
    for _ in 0..50 {
        let (e, pool) = pick(&eps, &[], &policy, 50, &rr, now, &mut r).unwrap();
        assert_ne!(e.addr, eps[0].addr);
        assert_eq!(pool, Candidates::Healthy);
    }
    eps[1]
        .lock()
        .outlier
        .eject(outlier::Reason::Latency, String::new(), now, &op, 0.0);
    eps[1].set_ejected(true);
    let (_, pool) = pick(&eps, &[], &policy, 50, &rr, now, &mut r).unwrap();
    assert_eq!(
        pool,
        Candidates::Panic,
        "one of three healthy is below 50 %"
    );
    let (_, pool) = pick(&eps, &[], &policy, 0, &rr, now, &mut r).unwrap();
    assert_eq!(
        pool,
        Candidates::Healthy,
        "panic threshold 0 turns panic off"
    );
}

/// Shares of 4,000 picks among `endpoints` at `now`.
fn shares(endpoints: &[Arc<Endpoint>], policy: &BalancePolicy, now: Instant) -> Vec<usize> {
    let rr = AtomicU64::new(0);
    let mut unit = rng(7);
    let mut n = vec![0; endpoints.len()];
    for _ in 0..4000 {
        let (e, _) = pick(endpoints, &[], policy, 50, &rr, now, &mut unit).unwrap();
        n[endpoints.iter().position(|x| Arc::ptr_eq(x, &e)).unwrap()] += 1;
    }
    n
}

#[test]
fn a_joining_endpoint_ramps_up_over_the_slow_start_window_in_every_algorithm() {
    let now = Instant::now();
    let window = Duration::from_secs(10);
    for algorithm in [
        Algorithm::RoundRobin,
        Algorithm::LeastRequest,
        Algorithm::PeakEwma,
    ] {
        let mut eps = endpoints(3, now);
        let addr: SocketAddr = "10.0.0.9:80".parse().unwrap();
        eps.push(Arc::new(Endpoint::joining(
            addr,
            Duration::from_millis(30),
            now,
        )));
        let policy = BalancePolicy {
            slow_start: Some(window),
            ..lb(algorithm)
        };
        let at = |secs: u64| shares(&eps, &policy, now + Duration::from_secs(secs));
        let start = at(0);
        assert!(
            start[3] < 4000 / 4 / 3,
            "{algorithm:?}: starts at a small share: {start:?}"
        );
        let half = at(5);
        assert!(
            half[3] > start[3],
            "{algorithm:?}: grows: {start:?} then {half:?}"
        );
        let done = at(10);
        assert!(
            done[3] > 4000 / 4 * 3 / 4,
            "{algorithm:?}: full weight after the window: {done:?}"
        );
        assert_eq!(eps[3].weight(policy.slow_start, now + window), 1.0);
        // Without a window it is at full weight at once.
        let off = shares(&eps, &lb(algorithm), now);
        assert!(off[3] > 4000 / 4 * 3 / 4, "{algorithm:?}: {off:?}");
    }
}

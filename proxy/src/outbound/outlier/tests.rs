use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::outbound::build::outlier_policy;
use crate::outbound::policy::OutlierPolicy;

fn policy() -> OutlierPolicy {
    OutlierPolicy {
        consecutive_gateway: 3,
        ..outlier_policy(None)
    }
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn consecutive_errors_trip_and_a_success_resets_the_count() {
    let p = policy();
    let mut s = State::default();
    for _ in 0..4 {
        assert_eq!(s.observe(Health::Status(500), MS, &p), None);
    }
    assert_eq!(s.observe(Health::Success, MS, &p), None);
    for _ in 0..4 {
        assert_eq!(s.observe(Health::Status(500), MS, &p), None);
    }
    let (reason, detail) = s.observe(Health::Status(500), MS, &p).unwrap();
    assert_eq!(reason, Reason::Consecutive5xx);
    assert!(detail.contains("5 consecutive"), "{detail}");
    s.eject(reason, detail, Instant::now(), &p, 0.0);
    let c = s.ejected.as_ref().unwrap().counters;
    assert_eq!(
        (c.consecutive_5xx, c.interval_requests, c.interval_failures),
        (5, 10, 9),
        "the counters as they stood at the trip"
    );
    assert_eq!(s.ejection_count, 1);
    let mut g = State::default();
    g.observe(Health::ConnectFailure, MS, &p);
    g.observe(Health::Status(503), MS, &p);
    assert_eq!(
        g.observe(Health::Status(502), MS, &p).map(|r| r.0),
        Some(Reason::ConsecutiveGatewayErrors)
    );
}

#[test]
fn ejection_lengthens_with_each_ejection_up_to_the_cap_then_probation() {
    let p = policy();
    let t0 = Instant::now();
    let mut s = State::default();
    let mut lengths = Vec::new();
    for i in 0..12 {
        let now = t0 + Duration::from_secs(1000 * i);
        s.eject(Reason::Consecutive5xx, String::new(), now, &p, 0.0);
        lengths.push(s.ejected.as_ref().unwrap().until - now);
        assert!(
            !s.release_if_due(now + Duration::from_secs(29)),
            "not back before its time"
        );
        assert!(s.release_if_due(now + Duration::from_secs(400)));
        assert!(s.probation);
    }
    assert_eq!(lengths[0], Duration::from_secs(30));
    assert_eq!(lengths[1], Duration::from_secs(60));
    assert_eq!(lengths[11], Duration::from_secs(300), "capped");
    // Jitter adds at most 10 %.
    let mut j = State::default();
    j.eject(Reason::Latency, String::new(), t0, &p, 0.99);
    let len = j.ejected.as_ref().unwrap().until - t0;
    assert!(
        len > Duration::from_secs(30) && len < Duration::from_secs(33),
        "{len:?}"
    );
}

#[test]
fn a_failure_on_probation_ejects_again_and_clean_intervals_forgive() {
    let p = policy();
    let t0 = Instant::now();
    let mut s = State::default();
    s.eject(Reason::Consecutive5xx, String::new(), t0, &p, 0.0);
    assert!(s.release_if_due(t0 + Duration::from_secs(31)));
    let (reason, detail) = s.observe(Health::Status(500), MS, &p).unwrap();
    assert_eq!(reason, Reason::ProbationFailure);
    s.eject(reason, detail, t0 + Duration::from_secs(32), &p, 0.0);
    let first = s.ejected.as_ref().and_then(|e| e.first.clone()).unwrap();
    assert_eq!(
        first.reason,
        Reason::Consecutive5xx,
        "the original reason is kept"
    );
    // Failing probation again still names the ejection that began the run.
    assert!(s.release_if_due(t0 + Duration::from_secs(200)));
    let (reason, detail) = s.observe(Health::ConnectFailure, MS, &p).unwrap();
    s.eject(reason, detail, t0 + Duration::from_secs(200), &p, 0.0);
    let again = s.ejected.as_ref().and_then(|e| e.first.clone()).unwrap();
    assert_eq!(again.reason, Reason::Consecutive5xx);
    let mut fresh = State::default();
    fresh.eject(Reason::Latency, String::new(), t0, &p, 0.0);
    assert_eq!(fresh.ejected.as_ref().unwrap().first, None);
    let mut ok = State::default();
    ok.eject(Reason::Consecutive5xx, String::new(), t0, &p, 0.0);
    ok.release_if_due(t0 + Duration::from_secs(31));
    evaluate(&mut [&mut ok], &p);
    assert!(ok.probation, "an interval without requests proves nothing");
    ok.observe(Health::Success, MS, &p);
    evaluate(&mut [&mut ok], &p);
    assert!(!ok.probation, "a clean interval ends probation");
    assert_eq!(ok.ejection_count, 1);
    evaluate(&mut [&mut ok], &p);
    assert_eq!(
        ok.ejection_count, 0,
        "and each clean interval takes one ejection off"
    );
}

fn feed(s: &mut State, ok: u32, failed: u32, latency: Duration, p: &OutlierPolicy) {
    let mut p = p.clone();
    p.consecutive_5xx = 0;
    p.consecutive_gateway = 0;
    for _ in 0..ok {
        s.observe(Health::Success, latency, &p);
    }
    for _ in 0..failed {
        s.observe(Health::Status(500), latency, &p);
    }
}

#[test]
fn failure_percentage_success_rate_and_latency_are_judged_per_interval() {
    let mut p = policy();
    p.failure_percentage = Some((50, 20));
    let (mut a, mut b, mut c) = (State::default(), State::default(), State::default());
    feed(&mut a, 10, 30, MS, &p);
    feed(&mut b, 40, 0, MS, &p);
    feed(&mut c, 5, 5, MS, &p); // too few requests to be judged
    let v = evaluate(&mut [&mut a, &mut b, &mut c], &p);
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].0, v[0].1), (0, Reason::FailurePercentage));
    assert!(v[0].2.contains("75% of 40"), "{}", v[0].2);
    assert_eq!(a.volume(), 0, "counters restart each interval");
    a.eject(v[0].1, v[0].2.clone(), Instant::now(), &p, 0.0);
    let c = a.ejected.as_ref().unwrap().counters;
    assert_eq!(
        (c.last_interval_requests, c.last_interval_failures),
        (40, 30),
        "the interval that was judged"
    );
    assert_eq!(c.last_interval_p90_ms, Some(1.0));

    let mut p = policy();
    p.success_rate = Some((3, 50, 1.0));
    let mut s: Vec<State> = (0..5).map(|_| State::default()).collect();
    for (i, st) in s.iter_mut().enumerate() {
        if i == 2 {
            feed(st, 60, 40, MS, &p)
        } else {
            feed(st, 99, 1, MS, &p)
        }
    }
    let mut refs: Vec<&mut State> = s.iter_mut().collect();
    let v = evaluate(&mut refs, &p);
    assert_eq!(
        v.iter().map(|v| (v.0, v.1)).collect::<Vec<_>>(),
        vec![(2, Reason::SuccessRate)]
    );

    let mut p = policy();
    p.latency = Some((5.0, 20));
    let mut s: Vec<State> = (0..3).map(|_| State::default()).collect();
    feed(&mut s[0], 50, 0, Duration::from_millis(2), &p);
    feed(&mut s[1], 50, 0, Duration::from_millis(3), &p);
    feed(&mut s[2], 50, 0, Duration::from_millis(30), &p);
    let mut refs: Vec<&mut State> = s.iter_mut().collect();
    let v = evaluate(&mut refs, &p);
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].0, v[0].1), (2, Reason::Latency));
    assert!(v[0].2.contains("p90 30.0 ms"), "{}", v[0].2);

    // Latency alone (a cancelled hedge) counts for the latency detector, not for the rates.
    let mut s: Vec<State> = (0..3).map(|_| State::default()).collect();
    feed(&mut s[0], 50, 0, Duration::from_millis(2), &p);
    feed(&mut s[1], 50, 0, Duration::from_millis(3), &p);
    for _ in 0..30 {
        s[2].observe_latency(Duration::from_millis(40));
    }
    assert_eq!(s[2].volume(), 0);
    let mut refs: Vec<&mut State> = s.iter_mut().collect();
    let v = evaluate(&mut refs, &p);
    assert_eq!(
        v.iter().map(|v| (v.0, v.1)).collect::<Vec<_>>(),
        vec![(2, Reason::Latency)]
    );
}

#[test]
fn ejection_cap_and_panic_threshold() {
    assert_eq!(ejection_cap(1, 50), 0, "a lone endpoint is never ejected");
    assert_eq!(ejection_cap(2, 10), 1, "at least one of two or more");
    assert_eq!(ejection_cap(10, 50), 5);
    assert_eq!(ejection_cap(5, 0), 0, "0 % ejects nothing");
    assert_eq!(ejection_cap(1, 100), 1, "100 % may eject a lone endpoint");
    assert!(!in_panic(3, 2, 50));
    assert!(in_panic(3, 1, 50));
    assert!(!in_panic(4, 2, 50), "exactly at the threshold is not panic");
    assert!(!in_panic(3, 0, 0), "threshold 0 turns panic mode off");
}

/// Gray failure under peak-EWMA: the slow endpoint gets a handful of requests an interval,
/// never `requestVolume` in one, and is judged once its carried samples are enough.
#[test]
fn a_starved_slow_endpoint_is_judged_on_samples_carried_across_intervals() {
    let mut p = policy();
    p.latency = Some((3.0, 50));
    let (mut a, mut b, mut slow) = (State::default(), State::default(), State::default());
    let mut ejected_at = None;
    for interval in 1..=LATENCY_CARRY_INTERVALS {
        feed(&mut a, 200, 0, MS * 5, &p);
        feed(&mut b, 200, 0, MS * 5, &p);
        feed(&mut slow, 8, 0, MS * 50, &p);
        let v = evaluate(&mut [&mut a, &mut b, &mut slow], &p);
        if let Some(e) = v.first() {
            assert_eq!((e.0, e.1), (2, Reason::Latency), "{v:?}");
            ejected_at = Some(interval);
            break;
        }
    }
    // 8 a interval: the 50th sample arrives in the 7th.
    assert_eq!(ejected_at, Some(7));
}

#[test]
fn carried_samples_are_dropped_when_they_never_reach_the_volume() {
    let mut p = policy();
    p.latency = Some((3.0, 50));
    let mut slow = State::default();
    let mut peer = State::default();
    feed(&mut slow, 40, 0, MS * 50, &p);
    for _ in 0..LATENCY_CARRY_INTERVALS {
        feed(&mut peer, 100, 0, MS, &p);
        assert!(evaluate(&mut [&mut peer, &mut slow], &p).is_empty());
    }
    // Ten quiet intervals later the old samples are gone: ten more fast ones and the
    // endpoint is healthy on what it does now.
    feed(&mut slow, 50, 0, MS, &p);
    feed(&mut peer, 100, 0, MS, &p);
    assert!(evaluate(&mut [&mut peer, &mut slow], &p).is_empty());
    assert_eq!(slow.latencies.len(), 0, "judged, then cleared");
}

#[test]
fn a_returning_endpoint_is_judged_afresh() {
    let p = policy();
    let mut s = State::default();
    feed(&mut s, 30, 0, MS * 50, &p);
    let t0 = Instant::now();
    s.eject(Reason::Latency, "slow".into(), t0, &p, 0.0);
    assert!(s.release_if_due(t0 + p.max_ejection * 2));
    assert!(s.latencies.is_empty());
}

//! What `/outliers` shows of a target: each endpoint's state, the ejection in force or the
//! last one with the counters that tripped it, and when it is probed next.

use std::sync::atomic::Ordering;

use serde::Serialize;
use tokio::time::Instant;

use super::outlier;
use super::target::TargetState;

/// The report of one target, `now`, after due outlier work.
pub fn of(state: &TargetState, now: Instant) -> TargetReport {
    state.maintain(now);
    let target = state.target.load();
    let endpoints = state
        .endpoints()
        .iter()
        .map(|e| {
            let s = e.lock();
            let o = &s.outlier;
            let state = if o.is_ejected() {
                "ejected"
            } else if o.probation {
                "probation"
            } else {
                "healthy"
            };
            let ejection = o
                .ejected
                .as_ref()
                .or(o.last.as_ref())
                .map(|j| EjectionReport {
                    reason: j.reason.label(),
                    detail: j.detail.clone(),
                    counters: j.counters,
                    first: j.first.as_ref().map(|c| FirstReport {
                        reason: c.reason.label(),
                        detail: c.detail.clone(),
                        counters: c.counters,
                    }),
                    ejected_ago_ms: now.saturating_duration_since(j.since).as_millis() as u64,
                    next_probe_in_ms: o
                        .ejected
                        .as_ref()
                        .map(|j| j.until.saturating_duration_since(now).as_millis() as u64),
                });
            EndpointReport {
                address: e.addr.to_string(),
                state,
                ejection_count: o.ejection_count,
                total_ejections: o.total_ejections,
                requests: e.requests.load(Ordering::Relaxed),
                in_flight: e.in_flight.load(Ordering::Relaxed),
                ewma_ms: s.ewma.estimate_ns() / 1e6,
                interval_requests: o.volume(),
                slow_start: {
                    let window = target.balance.slow_start;
                    let w = e.weight(window, now);
                    (w < 1.0).then(|| SlowStartReport {
                        weight: (w * 100.0).round() / 100.0,
                        remaining_ms: e.joined.zip(window).map_or(0, |(j, w)| {
                            w.saturating_sub(now.saturating_duration_since(j))
                                .as_millis() as u64
                        }),
                    })
                },
                ejection,
                pod: None,
            }
        })
        .collect();
    TargetReport {
        target: target.key.clone(),
        panic: state.panicking(),
        endpoints,
    }
}

/// One target in `/outliers`.
#[derive(Debug, Serialize)]
pub struct TargetReport {
    /// `Backend/NS/NAME` or `Service/...`.
    pub target: String,
    /// Whether ejections are being ignored for want of healthy endpoints.
    pub panic: bool,
    /// Its endpoints.
    pub endpoints: Vec<EndpointReport>,
}

/// An endpoint ramping up in its slow-start window.
#[derive(Debug, Serialize)]
pub struct SlowStartReport {
    /// Its weight now, from 0.1 to 1.
    pub weight: f64,
    /// Until it is at full weight.
    pub remaining_ms: u64,
}

/// One endpoint in `/outliers`.
#[derive(Debug, Serialize)]
pub struct EndpointReport {
    /// `ip:port`.
    pub address: String,
    /// healthy, ejected or probation.
    pub state: &'static str,
    /// Ejections that still lengthen the next one.
    pub ejection_count: u32,
    /// Ejections ever.
    pub total_ejections: u64,
    /// Requests sent to it.
    pub requests: u64,
    /// Requests in flight.
    pub in_flight: u32,
    /// Peak-EWMA latency estimate.
    pub ewma_ms: f64,
    /// Requests in the current outlier interval.
    pub interval_requests: u32,
    /// Its slow start, while it ramps up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStartReport>,
    /// The pod behind the address (its UID), when the control plane said: a connection is
    /// reused only for the pod it was opened to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The ejection in force, or the last one.
    pub ejection: Option<EjectionReport>,
}

/// An ejection in `/outliers`.
#[derive(Debug, Serialize)]
pub struct EjectionReport {
    /// Why.
    pub reason: &'static str,
    /// The numbers that tripped it, in words.
    pub detail: String,
    /// The endpoint's counters at the trip, as numbers.
    pub counters: outlier::Counters,
    /// For `probation_failure`: the ejection that began the run (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<FirstReport>,
    /// How long ago it began.
    pub ejected_ago_ms: u64,
    /// When the endpoint is tried again (absent once it is back).
    pub next_probe_in_ms: Option<u64>,
}

/// The ejection that began a run of probation failures, in `/outliers`.
#[derive(Debug, Serialize)]
pub struct FirstReport {
    /// Why.
    pub reason: &'static str,
    /// The numbers that tripped it, in words.
    pub detail: String,
    /// The endpoint's counters at that trip.
    pub counters: outlier::Counters,
}

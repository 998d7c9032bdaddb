//! One latency series per (direction, authority, status class): an hdrhistogram with two
//! significant figures, from which `/metrics` renders buckets and `/stats` reads exact
//! percentiles.

use std::time::SystemTime;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Direction;
use super::labels::ByAuthority;
use super::requests::{AuthorityStats, CountKey, Exemplar, TraceId};
use crate::lock::lock;

/// Upper bounds of the Prometheus buckets, in microseconds. The lowest, 50 µs and 100 µs,
/// resolve a sidecar's own overhead (Linkerd's smallest bucket is 1 ms).
pub const BUCKETS_US: [u64; 18] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// Largest latency recorded exactly; longer ones are recorded as this value.
pub(super) const MAX_TRACKED_US: u64 = 60_000_000;

pub(super) const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One authority's latency series, indexed by direction × status class and created on first
/// use, so recording a request is no allocation; and its request counters.
#[derive(Debug, Default)]
pub(super) struct Series {
    latency: [Option<Box<Latency>>; 10],
    /// `bulwark_requests_total`, at most [`super::requests::MAX_COUNTS_PER_AUTHORITY`].
    pub(super) counts: Vec<(CountKey, u64)>,
}

impl Series {
    pub(super) fn record(&mut self, slot: usize, us: u64, trace: Option<&TraceId>) {
        let l = self.latency[slot].get_or_insert_with(|| {
            Box::new(Latency {
                // Two significant figures: 1 % resolution in ~10 KiB per series.
                hist: Histogram::new_with_bounds(1, MAX_TRACKED_US, 2)
                    .expect("static histogram bounds are valid"),
                sum_us: 0,
                exemplars: None,
            })
        });
        l.hist.saturating_record(us);
        l.sum_us = l.sum_us.saturating_add(us);
        if let Some(trace) = trace {
            let value = l.hist.lowest_equivalent(us);
            let bucket = BUCKETS_US
                .iter()
                .position(|&b| value <= b)
                .unwrap_or(BUCKETS_US.len());
            l.exemplars.get_or_insert_default()[bucket] = Some(Exemplar {
                trace: *trace,
                us: value,
                at: SystemTime::now(),
            });
        }
    }
}

/// Calls `f` on every recorded series as (direction, authority, status class, latency),
/// sorted in that order. Each authority's series is locked only while `f` reads it.
pub(super) fn each_series(
    series: &ByAuthority<AuthorityStats>,
    mut f: impl FnMut(&'static str, &str, &'static str, &Latency),
) {
    let rows = series.sorted();
    for (d, direction) in [Direction::Inbound, Direction::Outbound]
        .into_iter()
        .enumerate()
    {
        for (authority, s) in &rows {
            let s = lock(&s.series);
            for (class, l) in s.latency[d * 5..d * 5 + 5].iter().enumerate() {
                if let Some(l) = l {
                    f(direction.as_str(), authority, STATUS_CLASSES[class], l);
                }
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct Latency {
    pub(super) hist: Histogram<u64>,
    pub(super) sum_us: u64,
    /// Per bucket (and +Inf), the last request with a trace id.
    pub(super) exemplars: Option<Box<[Option<Exemplar>; BUCKETS_US.len() + 1]>>,
}

/// Status class label of an HTTP status, or of a proxy-made failure.
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[class_index(status)]
}

pub(super) fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// One row of `/stats`.
#[derive(Debug, Serialize)]
pub struct LatencyStats {
    /// inbound or outbound.
    pub direction: &'static str,
    /// Request authority (Host or :authority), or `other` past the label bound.
    pub authority: String,
    /// 2xx, 4xx, 5xx …
    pub status_class: &'static str,
    /// Requests recorded.
    pub count: u64,
    /// Percentiles in milliseconds.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p90_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub p999_ms: f64,
    /// See `p50_ms`.
    pub max_ms: f64,
}

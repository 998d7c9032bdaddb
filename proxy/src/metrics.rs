//! What the proxy counts: request latency histograms ([`latency`]: hdrhistogram, so both
//! Prometheus buckets and exact percentiles come from one record), connections, bytes,
//! detection outcomes, proxy-made errors and the resilience counters ([`Resilience`]).
//! [`encode`] is the one Prometheus text exposition of all of it.

pub mod encode;
mod labels;
pub mod latency;
pub mod process;
pub mod requests;
pub mod resilience;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use self::labels::ByAuthority;
use self::latency::{LatencyStats, each_series};
pub use self::process::ProcessStats;
use self::requests::{AuthorityStats, RequestCount};
pub use self::resilience::Resilience;
use crate::error::Kind;
use crate::lock::lock;
use crate::transport::copy::ByteCounters;
use crate::transport::detect::Protocol;

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Into the pod, toward its app.
    Inbound,
    /// From the pod's app, out to other services.
    Outbound,
}

impl Direction {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// How detection of one connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectLabel {
    /// Decided from the first bytes.
    Detected(Protocol),
    /// No decisive bytes in time: forwarded as opaque.
    Timeout,
    /// The client closed first.
    Closed,
    /// Destination port is configured opaque.
    ConfiguredOpaque,
    /// Destination port was learned opaque.
    LearnedOpaque,
}

const DETECT_LABELS: [&str; 8] = [
    "http1",
    "http2",
    "tls",
    "opaque",
    "timeout",
    "closed",
    "configured_opaque",
    "learned_opaque",
];

impl DetectLabel {
    fn index(self) -> usize {
        match self {
            DetectLabel::Detected(Protocol::Http1) => 0,
            DetectLabel::Detected(Protocol::Http2) => 1,
            DetectLabel::Detected(Protocol::Tls) => 2,
            DetectLabel::Detected(Protocol::Opaque) => 3,
            DetectLabel::Timeout => 4,
            DetectLabel::Closed => 5,
            DetectLabel::ConfiguredOpaque => 6,
            DetectLabel::LearnedOpaque => 7,
        }
    }
}

#[derive(Debug, Default)]
struct DirectionCounters {
    opened: [AtomicU64; 4],
    closed: AtomicU64,
    bytes: ByteCounters,
    detect: [AtomicU64; 8],
    h2_client_resets: AtomicU64,
    /// After a detection time-out, who spoke first: [server, client].
    learn_evidence: [AtomicU64; 2],
    ports_learned: AtomicU64,
}

/// The discovery client's state, as metrics.
#[derive(Debug, Default)]
pub struct DiscoveryCounters {
    /// 1 while a stream to the control plane is open.
    pub connected: AtomicU64,
    /// Version of the applied snapshot.
    pub version: AtomicU64,
    /// Snapshots applied.
    pub applied: AtomicU64,
    /// Snapshots rejected.
    pub rejected: AtomicU64,
    /// Streams that ended or failed to open.
    pub disconnects: AtomicU64,
}

/// gRPC outcomes counted: the 17 status codes, and a stream that failed without one.
pub const GRPC_OUTCOMES: usize = 18;

/// One policy target's gauges, as the scrape finds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGauges {
    /// `Backend/NS/NAME` or `Service/...`.
    pub target: String,
    /// Endpoints healthy, on probation and ejected; `None` for a target without endpoints.
    pub endpoints: Option<[usize; 3]>,
    /// Whether ejections are ignored for want of healthy endpoints.
    pub panic: bool,
    /// Requests holding a bulkhead slot, if the target has a bulkhead.
    pub bulkhead_active: Option<usize>,
}

/// All of the proxy's counters. Shared by every task behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    /// Latency series, request counts, gRPC outcomes and bytes per authority.
    requests: ByAuthority<AuthorityStats>,
    directions: [DirectionCounters; 2],
    errors: Mutex<HashMap<(Direction, Kind), u64>>,
    limited: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    resilience: Mutex<BTreeMap<(Resilience, String, &'static str), u64>>,
    /// The discovery client's state.
    pub discovery: DiscoveryCounters,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: AtomicU64,
}

impl Metrics {
    /// Metrics with at most `max_authorities` distinct authority labels.
    pub fn new(max_authorities: usize) -> Self {
        Self {
            requests: ByAuthority::new(max_authorities),
            directions: Default::default(),
            errors: Mutex::new(HashMap::new()),
            limited: Mutex::new(BTreeMap::new()),
            resilience: Mutex::new(BTreeMap::new()),
            discovery: DiscoveryCounters::default(),
            access_log_dropped: AtomicU64::new(0),
        }
    }

    /// The counters of `authority`: what one request records into. Past `max_authorities`
    /// distinct authorities (or for one longer than 255 bytes) they are those of `other`.
    pub fn authority(&self, authority: &str) -> Arc<AuthorityStats> {
        self.requests.get(authority)
    }

    /// Records one request's time to response headers (a shorthand of [`Self::authority`]
    /// and [`AuthorityStats::record_latency`]).
    pub fn record_request(
        &self,
        direction: Direction,
        authority: &str,
        status: u16,
        latency: Duration,
    ) {
        self.requests.with(authority, |a| {
            a.record_latency(direction, status, latency, None)
        });
    }

    /// Counts a connection accepted and handed to `protocol`.
    pub fn connection_opened(&self, direction: Direction, protocol: Protocol) {
        let idx = match protocol {
            Protocol::Http1 => 0,
            Protocol::Http2 => 1,
            Protocol::Tls => 2,
            Protocol::Opaque => 3,
        };
        self.directions[direction.index()].opened[idx].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections accepted in `direction` and not finished yet.
    pub fn connections_open(&self, direction: Direction) -> u64 {
        let d = &self.directions[direction.index()];
        let opened: u64 = d.opened.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        opened.saturating_sub(d.closed.load(Ordering::Relaxed))
    }

    /// Counts a connection finished.
    pub fn connection_closed(&self, direction: Direction) {
        self.directions[direction.index()]
            .closed
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Byte counters for opaque connections in `direction`.
    pub fn bytes(&self, direction: Direction) -> &ByteCounters {
        &self.directions[direction.index()].bytes
    }

    /// Counts an HTTP connection the proxy ended because the client broke a limit;
    /// `reason` is a fixed label.
    pub fn http_connection_limited(&self, direction: Direction, reason: &'static str) {
        *lock(&self.limited)
            .entry((direction.as_str(), reason))
            .or_default() += 1;
    }

    /// Counts how a gRPC call ended, by its status (`None`: the stream failed before one
    /// came), in `bulwark_grpc_responses_total` alone; a request's [`requests::Tally`]
    /// counts it there and in `bulwark_requests_total`.
    #[cfg(test)]
    pub fn record_grpc(&self, direction: Direction, authority: &str, status: Option<u32>) {
        let label = match status {
            Some(code) if code <= 16 => code as u8,
            Some(_) => crate::http::headers::GRPC_UNKNOWN as u8, // not a gRPC code
            None => requests::GRPC_RESET,
        };
        self.requests
            .with(authority, |a| a.count_grpc(direction, label));
    }

    /// Counts an RST_STREAM from an HTTP/2 client.
    pub fn h2_client_reset(&self, direction: Direction) {
        self.directions[direction.index()]
            .h2_client_resets
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts who spoke first on a connection whose detection timed out; `learned` when
    /// that vote made the port opaque.
    pub fn learn_evidence(&self, direction: Direction, server_first: bool, learned: bool) {
        let c = &self.directions[direction.index()];
        c.learn_evidence[usize::from(!server_first)].fetch_add(1, Ordering::Relaxed);
        if learned {
            c.ports_learned.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a detection outcome.
    pub fn detected(&self, direction: Direction, label: DetectLabel) {
        self.directions[direction.index()].detect[label.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failure the proxy answered for.
    pub fn error(&self, direction: Direction, kind: Kind) {
        let mut map = lock(&self.errors);
        *map.entry((direction, kind)).or_default() += 1;
    }

    /// Counts a resilience event: `target` is a policy target (bounded by the policy),
    /// `reason` a fixed label.
    pub fn count(&self, name: Resilience, target: &str, reason: &'static str) {
        let mut map = lock(&self.resilience);
        match map.get_mut(&(name, target.to_string(), reason)) {
            Some(v) => *v += 1,
            None => {
                map.insert((name, target.to_string(), reason), 1);
            }
        }
    }

    /// A resilience counter's value (0 when never counted).
    pub fn counted(&self, name: Resilience, target: &str, reason: &'static str) -> u64 {
        let map = lock(&self.resilience);
        map.get(&(name, target.to_string(), reason))
            .copied()
            .unwrap_or(0)
    }

    /// Percentiles per series, sorted.
    pub fn stats(&self) -> Vec<LatencyStats> {
        let ms = |us: u64| us as f64 / 1000.0;
        let mut rows = Vec::new();
        each_series(&self.requests, |direction, authority, status_class, l| {
            rows.push(LatencyStats {
                direction,
                authority: authority.to_string(),
                status_class,
                count: l.hist.len(),
                p50_ms: ms(l.hist.value_at_quantile(0.50)),
                p90_ms: ms(l.hist.value_at_quantile(0.90)),
                p99_ms: ms(l.hist.value_at_quantile(0.99)),
                p999_ms: ms(l.hist.value_at_quantile(0.999)),
                max_ms: ms(l.hist.max()),
            })
        });
        rows
    }

    /// `bulwark_requests_total` as rows, sorted by authority.
    pub fn request_counts(&self) -> Vec<RequestCount> {
        let mut rows = Vec::new();
        for (authority, a) in self.requests.sorted() {
            let s = lock(&a.series);
            for (key, n) in &s.counts {
                rows.push(RequestCount::new(&authority, key, *n));
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests;

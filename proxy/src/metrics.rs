//! What the proxy counts: request latency histograms (hdrhistogram, so both Prometheus
//! buckets and exact percentiles come from one record), connections, bytes, detection
//! outcomes and proxy-made errors. Rendering to Prometheus text and to JSON lives here too.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::error::Kind;
use crate::lock::lock;
use crate::transport::copy::ByteCounters;
use crate::transport::detect::{LearnedPort, Protocol};

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

/// Upper bounds of the Prometheus buckets, in microseconds. The lowest, 50 µs and 100 µs,
/// resolve a sidecar's own overhead (Linkerd's smallest bucket is 1 ms).
pub const BUCKETS_US: [u64; 18] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// Largest latency recorded exactly; longer ones are recorded as this value.
const MAX_TRACKED_US: u64 = 60_000_000;

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One authority's latency series, indexed by direction × status class and created on first
/// use, so recording a request is one hash lookup and no allocation.
#[derive(Debug, Default)]
struct Series([Option<Box<Latency>>; 10]);

impl Series {
    fn record(&mut self, slot: usize, us: u64) {
        let l = self.0[slot].get_or_insert_with(|| {
            Box::new(Latency {
                // Two significant figures: 1 % resolution in ~10 KiB per series.
                hist: Histogram::new_with_bounds(1, MAX_TRACKED_US, 2)
                    .expect("static histogram bounds are valid"),
                sum_us: 0,
            })
        });
        l.hist.saturating_record(us);
        l.sum_us = l.sum_us.saturating_add(us);
    }
}

/// Every recorded series as (direction, authority, status class, latency), sorted.
fn sorted_series(
    map: &HashMap<String, Series>,
) -> Vec<(&'static str, &str, &'static str, &Latency)> {
    let mut rows = Vec::new();
    for (authority, series) in map {
        for (slot, l) in series.0.iter().enumerate() {
            if let Some(l) = l {
                let direction = [Direction::Inbound, Direction::Outbound][slot / 5].as_str();
                rows.push((
                    direction,
                    authority.as_str(),
                    STATUS_CLASSES[slot % 5],
                    &**l,
                ));
            }
        }
    }
    rows.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    rows
}

#[derive(Debug)]
struct Latency {
    hist: Histogram<u64>,
    sum_us: u64,
}

/// Status class label of an HTTP status, or of a proxy-made failure.
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[class_index(status)]
}

fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

#[derive(Debug, Default)]
struct DirectionCounters {
    opened: [AtomicU64; 4],
    closed: AtomicU64,
    bytes: ByteCounters,
    detect: [AtomicU64; 8],
}

/// A resilience counter. Rendered as `bulwark_<name>_total{target, reason}`; the target is
/// a policy target (bounded by the policy), the reason a fixed label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resilience {
    /// Retries sent, by the failure retried.
    Retries,
    /// Retries the policy allowed but the body could not be replayed.
    RetriesSkipped,
    /// Retries not sent because the budget was spent.
    RetryBudgetExhausted,
    /// Hedged requests, by what became of them.
    Hedges,
    /// Endpoints ejected, by reason.
    OutlierEjections,
    /// Ejections not made because `maxEjectionPercent` was reached.
    OutlierEjectionsSkipped,
    /// Endpoints back from ejection, on probation.
    OutlierReturns,
    /// Picks made in panic mode.
    BalancerPanic,
    /// Requests refused by the bulkhead.
    BulkheadRejections,
    /// Failed lookups of hostname endpoints.
    DnsFailures,
}

impl Resilience {
    /// Every counter, in exposition order.
    pub const ALL: [Resilience; 10] = [
        Resilience::Retries,
        Resilience::RetriesSkipped,
        Resilience::RetryBudgetExhausted,
        Resilience::Hedges,
        Resilience::OutlierEjections,
        Resilience::OutlierEjectionsSkipped,
        Resilience::OutlierReturns,
        Resilience::BalancerPanic,
        Resilience::BulkheadRejections,
        Resilience::DnsFailures,
    ];

    /// The name inside `bulwark_<name>_total`.
    pub fn name(self) -> &'static str {
        match self {
            Resilience::Retries => "retries",
            Resilience::RetriesSkipped => "retries_skipped",
            Resilience::RetryBudgetExhausted => "retry_budget_exhausted",
            Resilience::Hedges => "hedges",
            Resilience::OutlierEjections => "outlier_ejections",
            Resilience::OutlierEjectionsSkipped => "outlier_ejections_skipped",
            Resilience::OutlierReturns => "outlier_returns",
            Resilience::BalancerPanic => "balancer_panic",
            Resilience::BulkheadRejections => "bulkhead_rejections",
            Resilience::DnsFailures => "dns_failures",
        }
    }

    /// The `# HELP` text.
    pub fn help(self) -> &'static str {
        match self {
            Resilience::Retries => "Retries sent, by the failure retried.",
            Resilience::RetriesSkipped => {
                "Retries the policy allowed but the request body could not be replayed (past maxBufferedBodyBytes)."
            }
            Resilience::RetryBudgetExhausted => {
                "Retries not sent because the retry budget was spent."
            }
            Resilience::Hedges => {
                "Hedged requests: sent, original_won, hedge_won, budget_exhausted."
            }
            Resilience::OutlierEjections => "Endpoints ejected, by reason.",
            Resilience::OutlierEjectionsSkipped => {
                "Ejections not made because maxEjectionPercent was reached."
            }
            Resilience::OutlierReturns => "Endpoints returned from ejection to probation.",
            Resilience::BalancerPanic => {
                "Picks made in panic mode (too few healthy endpoints; ejections ignored)."
            }
            Resilience::BulkheadRejections => {
                "Requests refused by the bulkhead: bulkhead_full or bulkhead_queue_timeout."
            }
            Resilience::DnsFailures => "Failed lookups of hostname endpoints.",
        }
    }
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

/// All of the proxy's counters. Shared by every task behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    max_authorities: usize,
    requests: Mutex<HashMap<String, Series>>,
    directions: [DirectionCounters; 2],
    errors: Mutex<HashMap<(Direction, Kind), u64>>,
    resilience: Mutex<BTreeMap<(Resilience, String, &'static str), u64>>,
    /// The discovery client's state.
    pub discovery: DiscoveryCounters,
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

impl Metrics {
    /// Metrics with at most `max_authorities` distinct authority labels.
    pub fn new(max_authorities: usize) -> Self {
        Self {
            max_authorities,
            requests: Mutex::new(HashMap::new()),
            directions: Default::default(),
            errors: Mutex::new(HashMap::new()),
            resilience: Mutex::new(BTreeMap::new()),
            discovery: DiscoveryCounters::default(),
        }
    }

    /// Records one request's time to response headers. Past `max_authorities` distinct
    /// authorities (or for one longer than 255 bytes) the request counts under `other`.
    pub fn record_request(
        &self,
        direction: Direction,
        authority: &str,
        status: u16,
        latency: Duration,
    ) {
        let slot = direction.index() * 5 + class_index(status);
        let us = (latency.as_micros() as u64).clamp(1, MAX_TRACKED_US);
        let mut map = lock(&self.requests);
        if let Some(series) = map.get_mut(authority) {
            series.record(slot, us);
            return;
        }
        let label = if map.len() < self.max_authorities && authority.len() <= 255 {
            authority
        } else {
            "other"
        };
        map.entry(label.to_string()).or_default().record(slot, us);
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

    fn render_resilience(&self, o: &mut String) {
        let map = lock(&self.resilience);
        for counter in Resilience::ALL {
            let name = counter.name();
            header(
                o,
                &format!("bulwark_{name}_total"),
                "counter",
                counter.help(),
            );
            for ((_, target, reason), v) in map.iter().filter(|(k, _)| k.0 == counter) {
                let _ = writeln!(
                    o,
                    "bulwark_{name}_total{{target=\"{}\",reason=\"{reason}\"}} {v}",
                    escape(target)
                );
            }
        }
    }

    /// Percentiles per series, sorted.
    pub fn stats(&self) -> Vec<LatencyStats> {
        let map = lock(&self.requests);
        let ms = |us: u64| us as f64 / 1000.0;
        sorted_series(&map)
            .into_iter()
            .map(|(direction, authority, status_class, l)| LatencyStats {
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
            .collect()
    }

    /// Prometheus text exposition (format 0.0.4).
    pub fn render(&self, learned: &[LearnedPort], process: &ProcessStats) -> String {
        let mut o = String::with_capacity(4096);
        self.render_requests(&mut o);
        self.render_resilience(&mut o);
        header(
            &mut o,
            "bulwark_connections_opened_total",
            "counter",
            "Connections accepted, by the protocol they were forwarded as.",
        );
        for d in [Direction::Inbound, Direction::Outbound] {
            for (i, p) in ["http1", "http2", "tls", "opaque"].iter().enumerate() {
                let v = self.directions[d.index()].opened[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    o,
                    "bulwark_connections_opened_total{{direction=\"{}\",protocol=\"{p}\"}} {v}",
                    d.as_str()
                );
            }
        }
        header(
            &mut o,
            "bulwark_connections_closed_total",
            "counter",
            "Connections finished.",
        );
        for d in [Direction::Inbound, Direction::Outbound] {
            let v = self.directions[d.index()].closed.load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "bulwark_connections_closed_total{{direction=\"{}\"}} {v}",
                d.as_str()
            );
        }
        header(
            &mut o,
            "bulwark_tcp_bytes_total",
            "counter",
            "Bytes forwarded on opaque (L4) connections, by who sent them.",
        );
        for d in [Direction::Inbound, Direction::Outbound] {
            let b = &self.directions[d.index()].bytes;
            for (peer, c) in [("client", &b.from_client), ("server", &b.from_server)] {
                let _ = writeln!(
                    o,
                    "bulwark_tcp_bytes_total{{direction=\"{}\",from=\"{peer}\"}} {}",
                    d.as_str(),
                    c.load(Ordering::Relaxed)
                );
            }
        }
        header(
            &mut o,
            "bulwark_detect_total",
            "counter",
            "Protocol detection outcomes.",
        );
        for d in [Direction::Inbound, Direction::Outbound] {
            for (i, label) in DETECT_LABELS.iter().enumerate() {
                let v = self.directions[d.index()].detect[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    o,
                    "bulwark_detect_total{{direction=\"{}\",outcome=\"{label}\"}} {v}",
                    d.as_str()
                );
            }
        }
        header(
            &mut o,
            "bulwark_detect_learned_opaque_port",
            "gauge",
            "Destination ports learned as opaque (server speaks first); 1 while learned.",
        );
        for p in learned {
            let _ = writeln!(
                o,
                "bulwark_detect_learned_opaque_port{{port=\"{}\"}} 1",
                p.port
            );
        }
        header(
            &mut o,
            "bulwark_proxy_errors_total",
            "counter",
            "Requests or connections the proxy failed, by reason.",
        );
        {
            let map = lock(&self.errors);
            let mut rows: Vec<_> = map
                .iter()
                .map(|((d, k), v)| (d.as_str(), k.reason(), v))
                .collect();
            rows.sort();
            for (d, reason, v) in rows {
                let _ = writeln!(
                    o,
                    "bulwark_proxy_errors_total{{direction=\"{d}\",reason=\"{reason}\"}} {v}"
                );
            }
        }
        let d = &self.discovery;
        for (name, kind, help, v) in [
            (
                "bulwark_discovery_connected",
                "gauge",
                "1 while the stream to the control plane is open.",
                &d.connected,
            ),
            (
                "bulwark_discovery_snapshot_version",
                "gauge",
                "Version of the applied snapshot (0: flags only).",
                &d.version,
            ),
            (
                "bulwark_discovery_snapshots_applied_total",
                "counter",
                "Snapshots applied.",
                &d.applied,
            ),
            (
                "bulwark_discovery_snapshots_rejected_total",
                "counter",
                "Snapshots rejected (NACKed); the previous one stayed.",
                &d.rejected,
            ),
            (
                "bulwark_discovery_disconnects_total",
                "counter",
                "Streams to the control plane that ended or failed to open.",
                &d.disconnects,
            ),
        ] {
            header(&mut o, name, kind, help);
            let _ = writeln!(o, "{name} {}", v.load(Ordering::Relaxed));
        }
        process.render(&mut o);
        o
    }

    fn render_requests(&self, o: &mut String) {
        header(
            o,
            "bulwark_request_duration_seconds",
            "histogram",
            "Time from request received to response headers, by direction, authority and status class.",
        );
        let map = lock(&self.requests);
        for (direction, authority, status_class, l) in sorted_series(&map) {
            let labels = format!(
                "direction=\"{direction}\",authority=\"{}\",status_class=\"{status_class}\"",
                escape(authority),
            );
            let mut counts = [0u64; BUCKETS_US.len()];
            for v in l.hist.iter_recorded() {
                let value = l.hist.lowest_equivalent(v.value_iterated_to());
                if let Some(i) = BUCKETS_US.iter().position(|&b| value <= b) {
                    counts[i] += v.count_at_value();
                }
            }
            let mut cumulative = 0;
            for (b, c) in BUCKETS_US.iter().zip(counts) {
                cumulative += c;
                let _ = writeln!(
                    o,
                    "bulwark_request_duration_seconds_bucket{{{labels},le=\"{}\"}} {cumulative}",
                    *b as f64 / 1e6
                );
            }
            let _ = writeln!(
                o,
                "bulwark_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                l.hist.len()
            );
            let _ = writeln!(
                o,
                "bulwark_request_duration_seconds_sum{{{labels}}} {}",
                l.sum_us as f64 / 1e6
            );
            let _ = writeln!(
                o,
                "bulwark_request_duration_seconds_count{{{labels}}} {}",
                l.hist.len()
            );
        }
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// Escapes a label value per the exposition format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The process's own resource use, read from /proc.
#[derive(Debug, Default, Serialize)]
pub struct ProcessStats {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size in bytes.
    pub peak_rss_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// User + system CPU time in seconds.
    pub cpu_seconds: f64,
}

impl ProcessStats {
    /// Reads the current values; missing files leave zeros.
    pub fn read() -> Self {
        let mut s = Self::default();
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for line in status.lines() {
                let kb = |l: &str| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                        * 1024
                };
                if line.starts_with("VmRSS:") {
                    s.rss_bytes = kb(line);
                } else if line.starts_with("VmHWM:") {
                    s.peak_rss_bytes = kb(line);
                }
            }
        }
        s.open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces) start after the last ')'.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            // utime and stime are fields 14 and 15 of stat; 11 and 12 after the name and state.
            let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
                .ok()
                .flatten()
                .unwrap_or(100) as f64;
            s.cpu_seconds = (ticks(11) + ticks(12)) as f64 / hz;
        }
        s
    }

    fn render(&self, o: &mut String) {
        header(
            o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(o, "process_resident_memory_bytes {}", self.rss_bytes);
        header(
            o,
            "process_resident_memory_peak_bytes",
            "gauge",
            "Peak resident memory size in bytes.",
        );
        let _ = writeln!(
            o,
            "process_resident_memory_peak_bytes {}",
            self.peak_rss_bytes
        );
        header(o, "process_open_fds", "gauge", "Open file descriptors.");
        let _ = writeln!(o, "process_open_fds {}", self.open_fds);
        header(
            o,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time in seconds.",
        );
        let _ = writeln!(o, "process_cpu_seconds_total {}", self.cpu_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_resolve_tenths_of_a_millisecond() {
        let m = Metrics::new(10);
        m.record_request(
            Direction::Outbound,
            "web:80",
            200,
            Duration::from_micros(40),
        );
        m.record_request(
            Direction::Outbound,
            "web:80",
            200,
            Duration::from_micros(90),
        );
        m.record_request(Direction::Outbound, "web:80", 200, Duration::from_millis(3));
        let text = m.render(&[], &ProcessStats::default());
        let l = "direction=\"outbound\",authority=\"web:80\",status_class=\"2xx\"";
        assert!(
            text.contains(&format!(
                "bulwark_request_duration_seconds_bucket{{{l},le=\"0.00005\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "bulwark_request_duration_seconds_bucket{{{l},le=\"0.0001\"}} 2"
        )));
        assert!(text.contains(&format!(
            "bulwark_request_duration_seconds_bucket{{{l},le=\"0.0025\"}} 2"
        )));
        assert!(text.contains(&format!(
            "bulwark_request_duration_seconds_bucket{{{l},le=\"0.005\"}} 3"
        )));
        assert!(text.contains(&format!(
            "bulwark_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} 3"
        )));
        assert!(text.contains(&format!("bulwark_request_duration_seconds_count{{{l}}} 3")));
    }

    #[test]
    fn authority_labels_are_bounded_and_escaped() {
        let m = Metrics::new(2);
        for a in ["a", "b\"q", "c", "d"] {
            m.record_request(Direction::Inbound, a, 503, Duration::from_millis(1));
        }
        let stats = m.stats();
        let names: Vec<&str> = stats.iter().map(|s| s.authority.as_str()).collect();
        assert_eq!(names, ["a", "b\"q", "other"]);
        assert_eq!(stats[2].count, 2);
        assert!(
            m.render(&[], &ProcessStats::default())
                .contains("authority=\"b\\\"q\"")
        );
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let m = Metrics::new(10);
        for i in 1..=1000 {
            m.record_request(Direction::Outbound, "x", 200, Duration::from_micros(i * 10));
        }
        let s = &m.stats()[0];
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 5.0).abs() < 0.1, "{}", s.p50_ms);
        assert!((s.p99_ms - 9.9).abs() < 0.15, "{}", s.p99_ms);
        assert!((s.max_ms - 10.0).abs() < 0.1, "{}", s.max_ms);
    }
}

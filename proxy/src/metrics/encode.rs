//! The one Prometheus text exposition (format 0.0.4) of everything the proxy counts: request
//! histograms, resilience counters, connections, detection, errors, discovery, the
//! targets' endpoint gauges and the process. Label values are escaped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::latency::{BUCKETS_US, each_series};
use super::requests::RequestCount;
use super::{
    DETECT_LABELS, Direction, DirectionCounters, GRPC_OUTCOMES, Metrics, ProcessStats, Resilience,
    TargetGauges,
};
use crate::lock::lock;
use crate::transport::detect::LearnedPort;

impl Metrics {
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

    /// Prometheus text exposition (format 0.0.4).
    /// Everything, with the policy targets' gauges as they are now.
    pub fn render(
        &self,
        learned: &[LearnedPort],
        process: &ProcessStats,
        targets: &[TargetGauges],
    ) -> String {
        self.render_as(Format::Prometheus, learned, process, targets)
    }

    /// [`Self::render`] in `format`; OpenMetrics adds the histograms' exemplars (finish it
    /// with [`to_openmetrics`] once every family is written).
    pub fn render_as(
        &self,
        format: Format,
        learned: &[LearnedPort],
        process: &ProcessStats,
        targets: &[TargetGauges],
    ) -> String {
        let mut o = String::with_capacity(4096);
        self.render_requests(&mut o, format);
        self.render_counts(&mut o);
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
        self.per_direction(
            &mut o,
            "bulwark_connections_closed_total",
            "Connections finished.",
            |c| &c.closed,
        );
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
            "bulwark_detect_learn_evidence_total",
            "counter",
            "Connections whose detection timed out, by who then spoke first: the server (a vote to learn the port as opaque) or the client (a vote against).",
        );
        for d in [Direction::Inbound, Direction::Outbound] {
            let c = &self.directions[d.index()].learn_evidence;
            for (first, v) in [("server", &c[0]), ("client", &c[1])] {
                let _ = writeln!(
                    o,
                    "bulwark_detect_learn_evidence_total{{direction=\"{}\",first=\"{first}\"}} {}",
                    d.as_str(),
                    v.load(Ordering::Relaxed)
                );
            }
        }
        self.per_direction(
            &mut o,
            "bulwark_detect_ports_learned_total",
            "Times a destination port was learned as opaque (server speaks first).",
            |c| &c.ports_learned,
        );
        self.per_direction(
            &mut o,
            "bulwark_h2_client_resets_total",
            "RST_STREAM frames HTTP/2 clients sent: streams they gave up before the answer.",
            |c| &c.h2_client_resets,
        );
        self.render_grpc(&mut o);
        header(
            &mut o,
            "bulwark_http_connections_limited_total",
            "counter",
            "Downstream HTTP connections the proxy ended because the client broke a limit or the protocol, by reason.",
        );
        for ((d, reason), v) in lock(&self.limited).iter() {
            let _ = writeln!(
                o,
                "bulwark_http_connections_limited_total{{direction=\"{d}\",reason=\"{reason}\"}} {v}"
            );
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
        header(
            &mut o,
            "bulwark_access_log_dropped_total",
            "counter",
            "Access-log lines dropped because the writer fell behind.",
        );
        let _ = writeln!(
            o,
            "bulwark_access_log_dropped_total {}",
            self.access_log_dropped.load(Ordering::Relaxed)
        );
        render_targets(&mut o, targets);
        process.render(&mut o);
        o
    }

    /// A counter with one sample per direction.
    fn per_direction(
        &self,
        o: &mut String,
        name: &str,
        help: &str,
        counter: impl Fn(&DirectionCounters) -> &AtomicU64,
    ) {
        header(o, name, "counter", help);
        for d in [Direction::Inbound, Direction::Outbound] {
            let v = counter(&self.directions[d.index()]).load(Ordering::Relaxed);
            let _ = writeln!(o, "{name}{{direction=\"{}\"}} {v}", d.as_str());
        }
    }

    /// `bulwark_requests_total` and the body byte counters.
    fn render_counts(&self, o: &mut String) {
        header(
            o,
            "bulwark_requests_total",
            "counter",
            "Requests whose response ended, by HTTP status, gRPC status, policy route and classification (failure: 5xx, a gRPC status other than 0, or a stream that failed).",
        );
        let rows = self.request_counts();
        for d in ["inbound", "outbound"] {
            let mut rows: Vec<_> = rows.iter().filter(|r| r.direction == d).collect();
            rows.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
            for r in rows {
                let _ = writeln!(
                    o,
                    "bulwark_requests_total{{direction=\"{d}\",authority=\"{}\",target=\"{}\",route=\"{}\",dst_namespace=\"{}\",dst_service_account=\"{}\",status_code=\"{}\",grpc_status=\"{}\",classification=\"{}\"}} {}",
                    escape(&r.authority),
                    escape(&r.target),
                    escape(&r.route),
                    escape(&r.dst_namespace),
                    escape(&r.dst_service_account),
                    r.status_code,
                    r.grpc_status,
                    r.classification,
                    r.count
                );
            }
        }
        let authorities = self.requests.sorted();
        for (i, name, help) in [
            (
                0,
                "bulwark_request_bytes_total",
                "Request body bytes read from clients.",
            ),
            (
                1,
                "bulwark_response_bytes_total",
                "Response body bytes sent to clients.",
            ),
        ] {
            header(o, name, "counter", help);
            for d in [Direction::Inbound, Direction::Outbound] {
                for (authority, a) in &authorities {
                    let n = a.bytes[d.index()][i].load(Ordering::Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            o,
                            "{name}{{direction=\"{}\",authority=\"{}\"}} {n}",
                            d.as_str(),
                            escape(authority)
                        );
                    }
                }
            }
        }
    }

    fn render_grpc(&self, o: &mut String) {
        header(
            o,
            "bulwark_grpc_responses_total",
            "counter",
            "gRPC calls by the status they ended with (grpc_status 0-16; reset: the stream failed before a status came), whatever their HTTP status.",
        );
        let rows = self.requests.sorted();
        for d in [Direction::Inbound, Direction::Outbound] {
            for (authority, a) in &rows {
                let counts = a.grpc[d.index()].iter().map(|n| n.load(Ordering::Relaxed));
                for (code, n) in counts.enumerate().filter(|(_, n)| *n > 0) {
                    let status = if code == GRPC_OUTCOMES - 1 {
                        "reset".to_string()
                    } else {
                        code.to_string()
                    };
                    let _ = writeln!(
                        o,
                        "bulwark_grpc_responses_total{{direction=\"{}\",authority=\"{}\",grpc_status=\"{status}\"}} {n}",
                        d.as_str(),
                        escape(authority)
                    );
                }
            }
        }
    }

    fn render_requests(&self, o: &mut String, format: Format) {
        header(
            o,
            "bulwark_request_duration_seconds",
            "histogram",
            "Time from request received to response headers, by direction, authority and status class.",
        );
        let exemplars = format == Format::OpenMetrics;
        each_series(&self.requests, |direction, authority, status_class, l| {
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
            let exemplar = |i: usize| match (&l.exemplars, exemplars) {
                (Some(e), true) => e[i].map(exemplar).unwrap_or_default(),
                _ => String::new(),
            };
            for (i, (b, c)) in BUCKETS_US.iter().zip(counts).enumerate() {
                cumulative += c;
                let _ = writeln!(
                    o,
                    "bulwark_request_duration_seconds_bucket{{{labels},le=\"{}\"}} {cumulative}{}",
                    *b as f64 / 1e6,
                    exemplar(i)
                );
            }
            let _ = writeln!(
                o,
                "bulwark_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}{}",
                l.hist.len(),
                exemplar(BUCKETS_US.len())
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
        });
    }
}

/// The order of `bulwark_requests_total` samples within a direction.
fn sort_key(r: &RequestCount) -> [&str; 7] {
    [
        &r.authority,
        &r.target,
        &r.route,
        &r.dst_namespace,
        &r.dst_service_account,
        &r.status_code,
        &r.grpc_status,
    ]
}

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text, version 0.0.4 (the default).
    Prometheus,
    /// OpenMetrics 1.0 text: exemplars on the latency buckets.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the scraper's `Accept` asks for it.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The response's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Rewrites a finished Prometheus text exposition as OpenMetrics: a counter's family is
/// named without its `_total` suffix, and `# EOF` ends it.
pub fn to_openmetrics(text: &str) -> String {
    let mut o = String::with_capacity(text.len() + 16);
    let mut counters = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_string());
        }
    }
    for line in text.lines() {
        let meta = ["# TYPE ", "# HELP "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let family = match name.strip_suffix("_total") {
                    Some(f) if counters.contains(name) => f,
                    _ => name,
                };
                let _ = writeln!(o, "{p}{family} {tail}");
            }
            None => {
                o.push_str(line);
                o.push('\n');
            }
        }
    }
    o.push_str("# EOF\n");
    o
}

/// ` # {trace_id="…"} VALUE TIMESTAMP`: an exemplar as OpenMetrics writes it.
fn exemplar(e: super::requests::Exemplar) -> String {
    let id = super::requests::trace_hex(&e.trace);
    let at =
        e.at.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
    format!(" # {{trace_id=\"{id}\"}} {} {at:.3}", e.us as f64 / 1e6)
}

pub(super) fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// Escapes a label value per the exposition format.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Gauges of the policy targets: endpoints per outlier state, panic mode, bulkhead
/// occupancy.
fn render_targets(o: &mut String, targets: &[TargetGauges]) {
    header(
        o,
        "bulwark_endpoints",
        "gauge",
        "Endpoints of each target, by outlier state (healthy, probation, ejected).",
    );
    for t in targets.iter().filter(|t| t.endpoints.is_some()) {
        let counts = t.endpoints.unwrap_or_default();
        for (state, n) in ["healthy", "probation", "ejected"].iter().zip(counts) {
            let _ = writeln!(
                o,
                "bulwark_endpoints{{target=\"{}\",state=\"{state}\"}} {n}",
                escape(&t.target)
            );
        }
    }
    header(
        o,
        "bulwark_balancer_in_panic",
        "gauge",
        "1 while a target has too few healthy endpoints and ignores ejections.",
    );
    for t in targets.iter().filter(|t| t.endpoints.is_some()) {
        let _ = writeln!(
            o,
            "bulwark_balancer_in_panic{{target=\"{}\"}} {}",
            escape(&t.target),
            u8::from(t.panic)
        );
    }
    header(
        o,
        "bulwark_bulkhead_active",
        "gauge",
        "Requests holding a bulkhead slot.",
    );
    for t in targets {
        if let Some(active) = t.bulkhead_active {
            let _ = writeln!(
                o,
                "bulwark_bulkhead_active{{target=\"{}\"}} {active}",
                escape(&t.target)
            );
        }
    }
}

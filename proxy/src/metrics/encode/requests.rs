//! The request families: the latency histogram (with its exemplars for OpenMetrics),
//! `bulwark_requests_total`, the body byte counters and `bulwark_grpc_responses_total`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::super::latency::{BUCKETS_US, each_series};
use super::super::requests::RequestCount;
use super::super::{Direction, GRPC_OUTCOMES, Metrics};
use super::openmetrics::{Format, exemplar};
use super::{escape, header};

impl Metrics {
    /// `bulwark_requests_total` and the body byte counters.
    pub(super) fn render_counts(&self, o: &mut String) {
        header(
            o,
            "bulwark_requests_total",
            "counter",
            "Requests whose response ended, by HTTP status, gRPC status, policy route, destination workload, mesh TLS and classification (failure: 5xx, a gRPC status other than 0, or a stream that failed).",
        );
        let rows = self.request_counts();
        for d in ["inbound", "outbound"] {
            let mut rows: Vec<_> = rows.iter().filter(|r| r.direction == d).collect();
            rows.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
            for r in rows {
                let _ = writeln!(
                    o,
                    "bulwark_requests_total{{direction=\"{d}\",authority=\"{}\",target=\"{}\",route=\"{}\",dst_namespace=\"{}\",dst_service_account=\"{}\",tls=\"{}\",status_code=\"{}\",grpc_status=\"{}\",classification=\"{}\"}} {}",
                    escape(&r.authority),
                    escape(&r.target),
                    escape(&r.route),
                    escape(&r.dst_namespace),
                    escape(&r.dst_service_account),
                    r.tls,
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

    pub(super) fn render_grpc(&self, o: &mut String) {
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

    pub(super) fn render_requests(&self, o: &mut String, format: Format) {
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

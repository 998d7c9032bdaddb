//! The one Prometheus text exposition (format 0.0.4) of everything the proxy counts: request
//! histograms, resilience counters, connections, detection, errors, discovery, the
//! targets' endpoint gauges and the process. Label values are escaped. The request
//! families are in [`requests`]; [`openmetrics`] rewrites the text for OpenMetrics
//! scrapers.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    DETECT_LABELS, Direction, DirectionCounters, Metrics, ProcessStats, Resilience, TargetGauges,
};
use crate::lock::lock;
use crate::transport::detect::LearnedPort;

mod openmetrics;
mod requests;

pub use self::openmetrics::{Format, to_openmetrics};

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

//! The control plane's Prometheus text: gauges and counters from the state, and the
//! push-to-ACK histogram.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::{State, lock};

impl State {
    /// Prometheus text for the admin port.
    pub fn render_metrics(&self) -> String {
        let policy = self.policy();
        let connected = lock(&self.proxies).len();
        let c = lock(&self.counters);
        let mut o = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "bulwark_cp_policy_version",
            "gauge",
            "Version of the policy being served.",
            policy.version.to_string(),
        );
        metric(
            "bulwark_cp_connected_proxies",
            "gauge",
            "Proxies with an open discovery stream.",
            connected.to_string(),
        );
        metric(
            "bulwark_cp_snapshots_sent_total",
            "counter",
            "Snapshots pushed to proxies.",
            c.pushes.to_string(),
        );
        metric(
            "bulwark_cp_nacks_total",
            "counter",
            "Snapshots proxies rejected.",
            c.nacks.to_string(),
        );
        metric(
            "bulwark_cp_policy_rejections_total",
            "counter",
            "Policy changes rejected as invalid.",
            c.rejections.to_string(),
        );
        metric(
            "bulwark_cp_invalid_objects",
            "gauge",
            "Policy objects in the cluster refused as invalid (Kubernetes source); never pushed.",
            self.invalid_count().to_string(),
        );
        render_histogram(
            &mut o,
            "bulwark_cp_push_to_ack_seconds",
            "Time from sending a snapshot to its ACK.",
            &c.push_to_ack,
        );
        self.issue.render(&mut o);
        o
    }
}

/// Upper bounds (seconds) of the push-to-ACK buckets: a healthy push is acknowledged in
/// milliseconds, a struggling one in seconds.
const PUSH_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus histogram (cumulative buckets, sum, count) read from an hdrhistogram of
/// microseconds, so replicas' figures can be aggregated, which quantiles cannot.
pub(super) fn render_histogram(o: &mut String, name: &str, help: &str, h: &Histogram<u64>) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
    for le in PUSH_BUCKETS {
        // Whole recorded ranges at or below the bound: a range that straddles it is left
        // out rather than counted under a bound its values may exceed.
        let le_us = (le * 1e6) as u64;
        let n: u64 = h
            .iter_recorded()
            .filter(|v| v.value_iterated_to() <= le_us)
            .map(|v| v.count_at_value())
            .sum();
        let _ = writeln!(o, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {}", h.len());
    let sum: f64 = h
        .iter_recorded()
        .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
        .sum();
    let _ = writeln!(o, "{name}_sum {}", sum / 1e6);
    let _ = writeln!(o, "{name}_count {}", h.len());
}

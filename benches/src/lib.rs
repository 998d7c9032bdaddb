//! Shared pieces of the benchmark tools: the load generator's report format and histogram
//! pooling across rounds.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Lowest and highest latency recorded, in microseconds (1 µs to 60 s).
pub const HIST_BOUNDS: (u64, u64) = (1, 60_000_000);

/// What one load generator run reports (printed as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// "h1" or "h2".
    pub proto: String,
    /// Offered rate in requests/s; 0 for closed loop.
    pub rate: u64,
    /// Connections used.
    pub connections: usize,
    /// Measured seconds (after warm-up).
    pub seconds: f64,
    /// Requests that were due in the measured window.
    pub scheduled: u64,
    /// Requests completed with a 2xx in the measured window.
    pub completed: u64,
    /// Requests completed in the whole run, warm-up included.
    pub all: u64,
    /// Requests failed (connection error or non-2xx).
    pub errors: u64,
    /// completed / seconds.
    pub achieved_rps: f64,
    /// Latency histogram as (value µs, count) pairs; pooled by the runner.
    pub hist: Vec<(u64, u64)>,
}

/// Resident memory of process `pid`, in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Raises this process's open-file limit to its hard limit: thousands of simulated proxy
/// streams are thousands of sockets.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// A new latency histogram with the shared bounds and 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(HIST_BOUNDS.0, HIST_BOUNDS.1, 3)
        .expect("static histogram bounds are valid")
}

/// Flattens a histogram into (value, count) pairs.
pub fn to_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds (value, count) pairs into a histogram.
pub fn add_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(v, c) in pairs {
        let _ = h.record_n(v.clamp(HIST_BOUNDS.0, HIST_BOUNDS.1), c);
    }
}

/// The policy of the B2 topology: the upstream at `upstream` (an `ip:port`) as a Backend
/// under a typical TrafficPolicy (timeouts, retries, outlier detection), for
/// `--workload bench/client`.
pub fn b2_policy(upstream: &str) -> String {
    format!(
        "apiVersion: bulwark.dev/v1alpha1\nkind: Backend\nmetadata: {{name: upstream, namespace: bench}}\nspec:\n  endpoints: [\"{upstream}\"]\n---\n\
         apiVersion: bulwark.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: upstream, namespace: bench}}\nspec:\n  targetRef: {{kind: Backend, name: upstream}}\n\
         \x20 timeouts: {{request: 5s, perTry: 2s}}\n  retries: {{attempts: 3, conditions: [5xx, reset, connect-failure]}}\n\
         \x20 outlierDetection: {{consecutive5xx: 5, failurePercentage: {{threshold: 85}}}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_preserves_percentiles() {
        let mut a = histogram();
        for v in 1..=10_000u64 {
            a.record(v * 3).unwrap();
        }
        let mut b = histogram();
        add_pairs(&mut b, &to_pairs(&a));
        add_pairs(&mut b, &to_pairs(&a));
        assert_eq!(b.len(), 2 * a.len());
        for q in [0.5, 0.9, 0.99, 0.999] {
            assert_eq!(a.value_at_quantile(q), b.value_at_quantile(q), "q={q}");
        }
    }
}

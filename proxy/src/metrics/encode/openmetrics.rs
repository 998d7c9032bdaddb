//! OpenMetrics 1.0 for the scrapers that ask for it: the same families, counters named
//! without `_total`, `# EOF` at the end, and exemplars on the latency buckets.

use std::fmt::Write as _;

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
pub(super) fn exemplar(e: crate::metrics::requests::Exemplar) -> String {
    let id = crate::metrics::requests::trace_hex(&e.trace);
    let at =
        e.at.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
    format!(" # {{trace_id=\"{id}\"}} {} {at:.3}", e.us as f64 / 1e6)
}

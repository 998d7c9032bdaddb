//! What the proxy adds to requests for observing them: `x-request-id` and the access log.

use serde::Serialize;

/// One access-log line per this many requests (1: every request).
pub const DEFAULT_ACCESS_LOG_SAMPLE: u32 = 1;
/// Access-log lines waiting for the writer; past it lines are dropped (and counted), so a
/// slow log reader never holds up requests.
pub const ACCESS_LOG_QUEUE: usize = 4096;

/// When the proxy gives a request without `x-request-id` one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestId {
    /// While the access log is on: the id is what ties one request's lines on each hop
    /// together, and without a reader it costs 3–5 % of a hop (see docs/benchmarks.md).
    Auto,
    /// Always.
    #[value(alias = "true")]
    On,
    /// Never.
    #[value(alias = "false")]
    Off,
}

/// How the access log is written (to stdout, one line per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// No access log.
    Off,
    /// `key=value` fields, space-separated (docs/operations.md lists them).
    Text,
    /// One JSON object per line.
    Json,
}

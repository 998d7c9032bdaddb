//! The policy types a request is handled with, every field resolved, and the defaults that
//! fill whatever the documents leave out. Built once per snapshot by [`super::build`],
//! read per request; `/config_dump` serializes them as they run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bulwark_api::policy::{self, Algorithm, RetryCondition};
use serde::Serialize;

pub use crate::metrics::requests::RouteLabel;

/// Connect timeout when no policy sets one: the proxy's own (`--connect-timeout`).
pub use crate::config::DEFAULT_CONNECT_TIMEOUT;
/// Attempts in all when no policy sets them: one retry.
pub const DEFAULT_ATTEMPTS: u32 = 2;
/// First retry backoff (Linkerd and Envoy).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Largest retry backoff (Linkerd and Envoy).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);
/// Longest `Retry-After` honoured; a longer one is not waited for (the response is returned).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Retry budget ratio (Linkerd's ServiceProfile default).
pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
/// Retries per second always allowed.
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 10;
/// Window the budget ratio is computed over.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Largest request body buffered for replay (Linkerd's limit).
pub const DEFAULT_MAX_BUFFERED_BODY: u64 = 64 * 1024;
/// Consecutive 5xx that eject an endpoint (Envoy's default).
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
/// Outlier statistics interval (Envoy's default).
pub const DEFAULT_OUTLIER_INTERVAL: Duration = Duration::from_secs(10);
/// First ejection time (Envoy's default).
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
/// Longest ejection (Envoy's default).
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
/// Most endpoints ejected at once, in percent.
pub const DEFAULT_MAX_EJECTION_PERCENT: u8 = 50;
/// Below this share of healthy endpoints, ejections are ignored (Envoy's default).
pub const DEFAULT_PANIC_THRESHOLD: u8 = 50;
/// Peak-EWMA latency of an endpoint never measured (Linkerd's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Peak-EWMA decay (Linkerd's default).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// Share of requests that may be hedged.
pub const DEFAULT_HEDGE_RATIO: f64 = 0.1;
/// Requests waiting for a bulkhead slot when only the concurrency is limited (Linkerd's
/// queue capacity).
pub const DEFAULT_MAX_PENDING: u32 = 100;
/// Longest wait for a bulkhead slot.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
/// Success-rate detection: fewest endpoints with enough volume to compare (Envoy's default).
pub const DEFAULT_SUCCESS_RATE_MIN_HOSTS: u32 = 5;
/// Success-rate detection: requests an endpoint needs in an interval to be judged (Envoy).
pub const DEFAULT_SUCCESS_RATE_REQUEST_VOLUME: u32 = 100;
/// Success-rate detection: standard deviations below the mean that eject (Envoy's 1900/1000).
pub const DEFAULT_SUCCESS_RATE_STDEV_FACTOR: f64 = 1.9;
/// Failure-percentage detection: failure share, in percent, that ejects (Envoy's default).
pub const DEFAULT_FAILURE_PERCENTAGE_THRESHOLD: u8 = 85;
/// Failure-percentage detection: requests needed in an interval to be judged (Envoy).
pub const DEFAULT_FAILURE_PERCENTAGE_REQUEST_VOLUME: u32 = 50;
/// Latency detection: how many times the peers' median p90 an endpoint's p90 may reach.
pub const DEFAULT_LATENCY_FACTOR: f64 = 5.0;
/// Latency detection: requests needed in an interval to be judged.
pub const DEFAULT_LATENCY_REQUEST_VOLUME: u32 = 50;

/// Timeouts in effect. `None` means no limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeouts {
    /// TCP connect to an endpoint.
    #[serde(serialize_with = "ser::duration")]
    pub connect: Duration,
    /// The whole request, retries and the response body included.
    #[serde(serialize_with = "ser::opt_duration")]
    pub request: Option<Duration>,
    /// One attempt, until its response headers.
    #[serde(serialize_with = "ser::opt_duration")]
    pub per_try: Option<Duration>,
    /// From the request to the response headers, over every attempt.
    #[serde(serialize_with = "ser::opt_duration")]
    pub response_headers: Option<Duration>,
    /// A response body with no bytes for this long is ended.
    #[serde(serialize_with = "ser::opt_duration")]
    pub idle: Option<Duration>,
}

/// Retries in effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Failures retried.
    pub conditions: Vec<RetryCondition>,
    /// Statuses retried besides the conditions.
    pub status_codes: Vec<u16>,
    /// gRPC status codes retried.
    pub grpc_codes: Vec<u32>,
    /// First backoff.
    #[serde(serialize_with = "ser::duration")]
    pub backoff_base: Duration,
    /// Largest backoff.
    #[serde(serialize_with = "ser::duration")]
    pub backoff_max: Duration,
    /// Largest body buffered for replay.
    pub max_buffered_body: u64,
}

/// The retry budget in effect (one per target).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetPolicy {
    /// Share of requests retries may add.
    pub ratio: f64,
    /// Retries always allowed per second.
    pub min_per_second: u32,
    /// Window of the ratio.
    #[serde(serialize_with = "ser::duration")]
    pub window: Duration,
}

/// Outlier detection in effect. A detector with a zero threshold is off.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutlierPolicy {
    /// Consecutive 5xx that eject; 0 is off.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 or connect failures that eject; 0 is off.
    pub consecutive_gateway: u32,
    /// Success-rate detection: (min hosts, request volume, stdev factor).
    pub success_rate: Option<(u32, u32, f64)>,
    /// Failure-percentage detection: (threshold percent, request volume).
    pub failure_percentage: Option<(u8, u32)>,
    /// Latency detection: (factor over the peers' median p90, request volume).
    pub latency: Option<(f64, u32)>,
    /// Evaluation interval.
    #[serde(serialize_with = "ser::duration")]
    pub interval: Duration,
    /// Base ejection time.
    #[serde(serialize_with = "ser::duration")]
    pub base_ejection: Duration,
    /// Longest ejection.
    #[serde(serialize_with = "ser::duration")]
    pub max_ejection: Duration,
    /// Most endpoints ejected at once, percent.
    pub max_ejection_percent: u8,
    /// Healthy share below which ejections are ignored, percent.
    pub panic_threshold: u8,
}

/// Load balancing in effect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BalancePolicy {
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Peak-EWMA latency of an unmeasured endpoint.
    #[serde(serialize_with = "ser::duration")]
    pub default_rtt: Duration,
    /// Peak-EWMA decay.
    #[serde(serialize_with = "ser::duration")]
    pub decay: Duration,
    /// Slow-start window of an endpoint that joins the target; none: off.
    #[serde(serialize_with = "ser::opt_duration")]
    pub slow_start: Option<Duration>,
}

/// Bulkhead limits in effect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LimitPolicy {
    /// Concurrent requests to the target.
    pub max_concurrent: u32,
    /// Requests waiting for a slot.
    pub max_pending: u32,
    /// Longest wait for a slot.
    #[serde(serialize_with = "ser::duration")]
    pub queue_timeout: Duration,
}

/// Hedging in effect for a route.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HedgePolicy {
    /// Fixed delay; `None` means the route's observed p95.
    #[serde(serialize_with = "ser::opt_duration")]
    pub delay: Option<Duration>,
    /// Share of requests that may be hedged.
    pub ratio: f64,
}

/// Per-request policy: the target's, with a route's overrides applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestPolicy {
    /// Route name (`default` when no route matched).
    pub route: String,
    /// The `target` and `route` labels of its requests' metrics.
    #[serde(skip)]
    pub label: Arc<RouteLabel>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Retries.
    pub retry: RetryPolicy,
    /// Hedging, if the route asks for it.
    pub hedge: Option<HedgePolicy>,
}

/// A route: its match and its resolved policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// What it matches.
    #[serde(skip)]
    pub matches: policy::RouteMatch,
    /// The policy of requests it matches.
    pub policy: Arc<RequestPolicy>,
}

/// Where a Backend's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum EndpointSpec {
    /// A literal address.
    Addr(SocketAddr),
    /// A hostname, resolved and refreshed on its TTL.
    Dns {
        /// Hostname.
        host: String,
        /// Port.
        port: u16,
    },
}

/// A destination with policy: a Backend (with endpoints to balance over) or a Service
/// (forwarded to the original destination).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// `Backend/NS/NAME` or `Service/NS/NAME[:PORT]`; also the key of its run-time state.
    pub key: String,
    /// Endpoints; empty for a Service (the original destination is used).
    pub endpoints: Vec<EndpointSpec>,
    /// Retry budget.
    pub budget: BudgetPolicy,
    /// Outlier detection.
    pub outlier: OutlierPolicy,
    /// Load balancing.
    pub balance: BalancePolicy,
    /// Bulkhead.
    pub limits: Option<LimitPolicy>,
    /// Policy of requests no route matches.
    pub default: Arc<RequestPolicy>,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
}

/// Durations in `/config_dump` read as in the policy (`250ms`, `10s`), not as structs.
mod ser {
    use std::time::Duration;

    pub fn duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&bulwark_api::duration::format(*d))
    }

    pub fn opt_duration<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration(d, s),
            None => s.serialize_none(),
        }
    }
}

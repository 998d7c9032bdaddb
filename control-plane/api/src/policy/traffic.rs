//! `TrafficPolicy`: how clients call a Service or Backend (timeouts, retries within a budget,
//! outlier detection, load balancing, the bulkhead, and per-route overrides with hedging).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// `TrafficPolicy.spec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicySpec {
    /// What the policy applies to.
    pub target_ref: TargetRef,
    /// Timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Retries, always within a budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Ejecting misbehaving endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Choosing an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// Bulkhead: bounds on concurrent and queued requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Per-route overrides, matched in order; the first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// What a TrafficPolicy applies to.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    /// `Service` (Kubernetes) or `Backend`.
    pub kind: TargetKind,
    /// Name of the Service or Backend, in the policy's namespace.
    pub name: String,
    /// Only this port of the target; all ports when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// Kinds a TrafficPolicy can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum TargetKind {
    /// A Kubernetes Service.
    #[default]
    Service,
    /// A Bulwark Backend.
    Backend,
}

/// Timeouts. Defaults: connect 1s (Linkerd 1 s, Envoy 5 s); the others none.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.perTry) || !has(self.request) || duration(self.perTry) <= duration(self.request)", "message": "perTry is longer than the request timeout: no attempt could use it"}
]))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    /// TCP connect to an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Duration>,
    /// The whole request, retries and the response body included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// One attempt, until its response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try: Option<Duration>,
    /// From the request to the response headers, over every attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<Duration>,
    /// A streamed response body with no bytes for this long is ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
}

/// Retries. Defaults: 2 attempts in all, on connect-failure, refused-stream and reset,
/// backoff 25ms → 250ms jittered, within the default budget.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retries {
    /// Attempts in all, the first included (1 means no retry). At most 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub attempts: Option<u32>,
    /// What failures are retried. Absent or empty: connect-failure, refused-stream, reset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RetryCondition>,
    /// HTTP statuses retried in addition to the conditions (100-599).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 100, max = 599)))]
    pub status_codes: Vec<u16>,
    /// gRPC status codes retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_codes: Vec<GrpcCode>,
    /// Jittered exponential backoff between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Bound on retries as a share of requests. Retries always have a budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
    /// Request bodies up to this size are buffered for replay; larger ones are not retried.
    /// Default 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16777216))]
    pub max_buffered_body_bytes: Option<u64>,
}

/// Failures a retry may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RetryCondition {
    /// Any 5xx response.
    #[serde(rename = "5xx")]
    ServerError,
    /// 502, 503, 504, or a connect failure.
    #[serde(rename = "gateway-error")]
    GatewayError,
    /// The connection was reset before a response.
    #[serde(rename = "reset")]
    Reset,
    /// The endpoint could not be connected to.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The HTTP/2 stream was refused (REFUSED_STREAM): the request was not processed.
    #[serde(rename = "refused-stream")]
    RefusedStream,
}

/// gRPC status codes that may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GrpcCode {
    /// CANCELLED (1).
    Cancelled,
    /// DEADLINE_EXCEEDED (4).
    DeadlineExceeded,
    /// INTERNAL (13).
    Internal,
    /// RESOURCE_EXHAUSTED (8).
    ResourceExhausted,
    /// UNAVAILABLE (14).
    Unavailable,
}

/// Backoff between attempts: `base × 2^n`, capped at `max`, with full jitter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.base) || !has(self.max) || duration(self.base) <= duration(self.max)", "message": "base is longer than max"}
]))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backoff {
    /// First delay. Default 25ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Duration>,
    /// Largest delay. Default 250ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

/// Retry budget (Linkerd's ServiceProfile defaults): retries may add at most `ratio` of
/// the requests over `window`, plus `minPerSecond` retries per second.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryBudget {
    /// Share of requests, between 0 and 1. Default 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub ratio: Option<f64>,
    /// Retries always allowed per second. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10000))]
    pub min_per_second: Option<u32>,
    /// Window the ratio is computed over, 1s to 60s. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// Outlier detection. Defaults: consecutive5xx 5, interval 10s, baseEjectionTime 30s,
/// maxEjectionTime 300s, maxEjectionPercent 50, panicThreshold 50.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.baseEjectionTime) || !has(self.maxEjectionTime) || duration(self.baseEjectionTime) <= duration(self.maxEjectionTime)", "message": "baseEjectionTime is longer than maxEjectionTime"}
]))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Consecutive 5xx responses that eject an endpoint; 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502/503/504 or connect failures that eject an endpoint; 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Eject endpoints whose success rate is far below their peers'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRate>,
    /// Eject endpoints whose failure share is above a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_percentage: Option<FailurePercentage>,
    /// Eject endpoints much slower than their peers (the slow failure that passes checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyOutlier>,
    /// How often the statistics are evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Ejection time is this × the endpoint's ejection count, capped at `maxEjectionTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Cap on one ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<Duration>,
    /// Most endpoints ejected at once, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub max_ejection_percent: Option<u8>,
    /// Below this percentage of healthy endpoints, ejections are ignored (and said so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub panic_threshold: Option<u8>,
}

/// Success-rate outliers (Envoy's defaults).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SuccessRate {
    /// Endpoints with enough volume needed to judge. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub min_hosts: Option<u32>,
    /// Requests an endpoint needs in an interval to be judged. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u32>,
    /// Ejected below mean − factor × stdev. Default 1.9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdev_factor: Option<f64>,
}

/// Failure-percentage outliers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FailurePercentage {
    /// Failure share, in percent, that ejects. Default 85.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub threshold: Option<u8>,
    /// Requests needed in an interval to be judged. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u32>,
}

/// Latency outliers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LatencyOutlier {
    /// Ejected when its p90 exceeds this multiple of the peers' median p90. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// Requests needed in an interval to be judged, 1 to 256. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub request_volume: Option<u32>,
}

/// Load balancing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.algorithm) || self.algorithm == 'peakEwma' || (!has(self.defaultRtt) && !has(self.decay))", "message": "defaultRtt and decay apply to the peakEwma algorithm only"}
]))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancer {
    /// Algorithm. Default peakEwma.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
    /// peakEwma: latency assumed for an endpoint with no measurement yet. Default 30ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_rtt: Option<Duration>,
    /// peakEwma: how fast old latency is forgotten. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay: Option<Duration>,
    /// Slow start, in every algorithm: an endpoint that joins a target (a new or restarted
    /// pod) takes a share of the load that grows linearly over this window, from 10 % of
    /// its fair share. Endpoints present when the target first appears start at full
    /// weight. Default: off. At most 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<Duration>,
}

/// Load-balancing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Algorithm {
    /// Power of two choices over peak-EWMA latency (Linkerd's).
    PeakEwma,
    /// Round robin.
    RoundRobin,
    /// Power of two choices over in-flight requests.
    LeastRequest,
}

/// Bulkhead limits; beyond them requests fail fast with 503 and the reason.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.maxConcurrentRequests) || (!has(self.maxPending) && !has(self.queueTimeout))", "message": "maxPending and queueTimeout have no effect without maxConcurrentRequests: nothing queues until the concurrency is limited"}
]))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Concurrent requests to the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_concurrent_requests: Option<u32>,
    /// Requests waiting for a slot. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000000))]
    pub max_pending: Option<u32>,
    /// Longest wait for a slot. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<Duration>,
}

/// A per-route override.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.retries) || !has(self.retries.budget)", "message": "the retry budget belongs to the target, shared by its routes: set it in spec.retries"}
]))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Route {
    /// Name used in logs and as the key of the route's hedge budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Which requests the route matches; every given criterion must match.
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// Overrides the policy's timeouts for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Overrides the policy's retries for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Hedged requests for this route (idempotent requests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedging: Option<Hedging>,
}

/// Request matching.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.pathPrefix) || has(self.method) || (has(self.headers) && size(self.headers) > 0) || has(self.grpc)", "message": "needs at least one of pathPrefix, method, headers, grpc"}
]))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteMatch {
    /// Path prefix, starting with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Header values that must be present, exactly.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// gRPC service and method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcMatch>,
}

/// gRPC matching.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcMatch {
    /// Fully qualified service, e.g. `shop.v1.Cart`.
    pub service: String,
    /// Method; every method when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// Hedging: a second attempt to another endpoint when the first is slow; the first
/// response wins.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hedging {
    /// Fixed delay before the hedge. When absent, the route's observed p95 latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// Share of requests that may be hedged, between 0 and 1. Default 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub budget_ratio: Option<f64>,
}

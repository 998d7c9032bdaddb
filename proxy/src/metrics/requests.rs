//! Everything counted per authority label: the latency series, the request counter by
//! status and route (`bulwark_requests_total`), gRPC outcomes and body bytes. A request
//! looks its authority up once, when its head is read ([`super::Metrics::authority`]), and
//! keeps the handle: the latency, the bytes as they stream and the [`Tally`] made when the
//! response ends all go through it without another lookup.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::latency::{MAX_TRACKED_US, Series, class_index};
use super::{Direction, GRPC_OUTCOMES};
use crate::lock::lock;

/// Distinct (direction, status, gRPC status, route) counters one authority keeps; past it,
/// requests count with `status_code="other"` and no route.
pub const MAX_COUNTS_PER_AUTHORITY: usize = 256;

/// The policy route a request took: the `target` and `route` labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RouteLabel {
    /// `Backend/NS/NAME` or `Service/NS/NAME`.
    pub target: Box<str>,
    /// The route's name (`default` when none matched).
    pub route: Box<str>,
}

/// The destination workload of a request, where the control plane knows it: the meshed
/// endpoint's identity (`dst_namespace`, `dst_service_account`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DstLabel {
    /// The workload's namespace.
    pub namespace: Box<str>,
    /// Its service account (the workload, as mesh identities name it).
    pub service_account: Box<str>,
}

/// The labels a request's route and destination give it.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    /// The policy route it took.
    pub route: Option<Arc<RouteLabel>>,
    /// The meshed workload that answered.
    pub dst: Option<Arc<DstLabel>>,
    /// Whether it crossed the hop over mesh TLS: to a meshed endpoint (outbound), from a
    /// client that proved its identity (inbound).
    pub tls: bool,
}

/// The gRPC label of a request: a status code `0..=16`, [`GRPC_RESET`] for a stream that
/// failed before one came, [`NOT_GRPC`] for a request that is not gRPC.
pub type GrpcLabel = u8;
/// A gRPC stream that failed, or was given up, before a status came.
pub const GRPC_RESET: GrpcLabel = (GRPC_OUTCOMES - 1) as u8;
/// Not a gRPC request.
pub const NOT_GRPC: GrpcLabel = u8::MAX;

/// A W3C trace id (from `traceparent`): the exemplar of the latency it was recorded with.
pub type TraceId = [u8; 16];

/// Lower-case hex of a trace id, as W3C and OpenMetrics exemplars write it.
pub fn trace_hex(id: &TraceId) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(32);
    for b in id {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// One authority's counters.
#[derive(Debug, Default)]
pub struct AuthorityStats {
    pub(super) series: Mutex<Series>,
    /// Per direction, per outcome (see [`GrpcLabel`]).
    pub(super) grpc: [[AtomicU64; GRPC_OUTCOMES]; 2],
    /// Per direction: request body bytes read from the client, response body bytes sent.
    pub(super) bytes: [[AtomicU64; 2]; 2],
}

/// The key of one `bulwark_requests_total` sample within an authority.
#[derive(Debug, Clone)]
pub(super) struct CountKey {
    pub(super) direction: Direction,
    /// 0: past [`MAX_COUNTS_PER_AUTHORITY`] (`other`).
    pub(super) status: u16,
    pub(super) grpc: GrpcLabel,
    pub(super) route: Option<Arc<RouteLabel>>,
    pub(super) dst: Option<Arc<DstLabel>>,
    pub(super) tls: bool,
}

/// Equal labels, by pointer first (the same snapshot's labels are one allocation).
fn same<T: PartialEq>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        (None, None) => true,
        _ => false,
    }
}

impl PartialEq for CountKey {
    fn eq(&self, o: &Self) -> bool {
        self.direction == o.direction
            && self.status == o.status
            && self.grpc == o.grpc
            && self.tls == o.tls
            && same(&self.route, &o.route)
            && same(&self.dst, &o.dst)
    }
}

impl CountKey {
    /// Failure: an HTTP 5xx, a gRPC status other than OK, or a stream that failed.
    pub(super) fn failed(&self) -> bool {
        self.status >= 500 || (self.grpc != NOT_GRPC && self.grpc != 0)
    }
}

impl AuthorityStats {
    /// Records a request's time to response headers, with the trace it was part of.
    pub fn record_latency(
        &self,
        direction: Direction,
        status: u16,
        latency: Duration,
        trace: Option<&TraceId>,
    ) {
        let slot = direction.index() * 5 + class_index(status);
        let us = (latency.as_micros() as u64).clamp(1, MAX_TRACKED_US);
        lock(&self.series).record(slot, us, trace);
    }

    /// Adds body bytes: `response` false for the client's request body.
    pub fn add_bytes(&self, direction: Direction, response: bool, n: u64) {
        self.bytes[direction.index()][usize::from(response)].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one request in `bulwark_requests_total` and, for gRPC, its outcome.
    fn count(&self, key: &CountKey) {
        if key.grpc != NOT_GRPC {
            self.grpc[key.direction.index()][usize::from(key.grpc)].fetch_add(1, Ordering::Relaxed);
        }
        let mut s = lock(&self.series);
        if let Some(c) = s.counts.iter_mut().find(|c| c.0 == *key) {
            c.1 += 1;
            return;
        }
        let mut key = key.clone();
        if s.counts.len() >= MAX_COUNTS_PER_AUTHORITY {
            key.status = 0;
            key.route = None;
            key.dst = None;
            if let Some(c) = s.counts.iter_mut().find(|c| c.0 == key) {
                c.1 += 1;
                return;
            }
        }
        s.counts.push((key, 1));
    }

    /// Counts a gRPC outcome alone (tests; requests count theirs through a [`Tally`]).
    #[cfg(test)]
    pub(super) fn count_grpc(&self, direction: Direction, grpc: GrpcLabel) {
        self.grpc[direction.index()][usize::from(grpc)].fetch_add(1, Ordering::Relaxed);
    }
}

/// One request's entry in `bulwark_requests_total`, made once, when its response ends: the
/// last frame read, the trailers, a failure, or the body dropped unfinished (a gRPC call
/// then counts as `reset`). It also counts the response body's bytes as they pass.
#[derive(Debug)]
pub struct Tally {
    stats: Arc<AuthorityStats>,
    key: CountKey,
    done: bool,
    /// Response body bytes so far.
    sent: u64,
    then: Option<Box<dyn AfterTally>>,
}

/// Told what a [`Tally`] counted, once the response has ended (the access log).
pub trait AfterTally: Send + std::fmt::Debug {
    /// The response ended with `grpc_status` (the label; `None` unless gRPC) after
    /// `response_bytes` body bytes.
    fn ended(self: Box<Self>, grpc_status: Option<String>, response_bytes: u64);
}

impl Tally {
    /// A tally for a response with `status` and `labels`; `grpc` whether the call is gRPC.
    pub fn new(
        stats: Arc<AuthorityStats>,
        direction: Direction,
        status: u16,
        grpc: bool,
        labels: Labels,
    ) -> Self {
        Self {
            stats,
            key: CountKey {
                direction,
                status,
                grpc: if grpc { GRPC_RESET } else { NOT_GRPC },
                route: labels.route,
                dst: labels.dst,
                tls: labels.tls,
            },
            done: false,
            sent: 0,
            then: None,
        }
    }

    /// `then` is told what was counted when the response ends.
    pub fn then(mut self, then: Option<Box<dyn AfterTally>>) -> Self {
        self.then = then;
        self
    }

    /// Response body bytes sent.
    pub fn bytes(&mut self, n: u64) {
        self.sent += n;
        self.stats.add_bytes(self.key.direction, true, n);
    }

    /// The response ended; a gRPC call with `grpc_status` (`None`: failed without one).
    /// Only the first end counts.
    pub fn end(&mut self, grpc_status: Option<u32>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if self.key.grpc != NOT_GRPC {
            self.key.grpc = match grpc_status {
                Some(c) if c <= 16 => c as GrpcLabel,
                Some(_) => crate::http::headers::GRPC_UNKNOWN as GrpcLabel,
                None => GRPC_RESET,
            };
        }
        self.stats.count(&self.key);
        if let Some(then) = self.then.take() {
            then.ended(grpc_label(self.key.grpc), self.sent);
        }
    }

    /// Whether the request is a gRPC call.
    pub fn is_grpc(&self) -> bool {
        self.key.grpc != NOT_GRPC
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.end(None);
    }
}

/// The `grpc_status` label; `None` for a request that is not gRPC.
fn grpc_label(g: GrpcLabel) -> Option<String> {
    match g {
        NOT_GRPC => None,
        GRPC_RESET => Some("reset".to_string()),
        c => Some(c.to_string()),
    }
}

/// One row of `/stats`' `requests`.
#[derive(Debug, Serialize)]
pub struct RequestCount {
    /// inbound or outbound.
    pub direction: &'static str,
    /// Request authority, or `other` past the label bound.
    pub authority: String,
    /// The policy target, empty without one.
    pub target: String,
    /// The policy route, empty without a target.
    pub route: String,
    /// The namespace of the meshed workload that answered, empty when not known.
    pub dst_namespace: String,
    /// Its service account, empty when not known.
    pub dst_service_account: String,
    /// Whether the hop was mesh TLS.
    pub tls: bool,
    /// The HTTP status, or `other` past the bound.
    pub status_code: String,
    /// The gRPC status (`0`–`16`, `reset`), empty for other requests.
    pub grpc_status: String,
    /// `success` or `failure`.
    pub classification: &'static str,
    /// Requests counted.
    pub count: u64,
}

impl RequestCount {
    pub(super) fn new(authority: &str, key: &CountKey, count: u64) -> Self {
        let (target, route) = key
            .route
            .as_ref()
            .map(|r| (r.target.to_string(), r.route.to_string()))
            .unwrap_or_default();
        let (dst_namespace, dst_service_account) = key
            .dst
            .as_ref()
            .map(|d| (d.namespace.to_string(), d.service_account.to_string()))
            .unwrap_or_default();
        Self {
            direction: key.direction.as_str(),
            authority: authority.to_string(),
            target,
            route,
            dst_namespace,
            dst_service_account,
            tls: key.tls,
            status_code: match key.status {
                0 => "other".to_string(),
                s => s.to_string(),
            },
            grpc_status: grpc_label(key.grpc).unwrap_or_default(),
            classification: if key.failed() { "failure" } else { "success" },
            count,
        }
    }
}

/// The last request of one bucket that carried a trace id.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exemplar {
    pub(super) trace: TraceId,
    pub(super) us: u64,
    pub(super) at: SystemTime,
}

//! One request to a target with policy: bulkhead, deadline (the policy's and the caller's
//! `grpc-timeout`), then attempts — each to an endpoint the balancer picks, never the one
//! that just failed when another exists — with per-try timeouts, retries within the budget,
//! and an optional hedge. Every attempt feeds the endpoint's latency estimate and outlier
//! state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;

use super::balance::{Endpoint, InFlight};
use super::outlier::Outcome;
use super::replay::ReplayBody;
use super::retry::{self, Failure};
use super::route::{RequestPolicy, Target};
use super::{Shed, TargetState};
use crate::listener::Shared;
use crate::pool::{ReqBody, Version};
use crate::transport::socket::ConnectError;

/// Latency charged to an endpoint's estimate for a 5xx, connect failure or reset, so the
/// balancer steers away from a fast-failing endpoint (which would otherwise look like the
/// fastest) before outlier detection has decided anything.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// A response the proxy makes itself, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalError {
    /// HTTP status (mapped to a gRPC status for gRPC callers).
    pub status: StatusCode,
    /// Fixed reason, sent in `x-bulwark-error` and used as a metric label.
    pub reason: &'static str,
}

/// An upstream response and what must outlive its body: the deadline, the idle timeout and
/// the bulkhead slot.
#[derive(Debug)]
pub struct Upstream {
    /// The response.
    pub resp: Response<Incoming>,
    /// Deadline for the whole response, body included.
    pub deadline: Option<Instant>,
    /// Longest silence in the body.
    pub idle: Option<Duration>,
    /// The bulkhead slot, released when the body ends.
    pub permit: Option<super::Slot>,
    /// A gRPC call's outcome, known only once its trailers arrive.
    pub outcome: Option<PendingOutcome>,
}

/// The outcome of a gRPC call whose status comes in the trailers, after the messages (not
/// in a trailers-only response): the endpoint's outlier state hears of it when the body
/// ends. A call the client abandons counts for nothing.
#[derive(Debug)]
pub struct PendingOutcome {
    state: Arc<TargetState>,
    ep: Arc<Endpoint>,
    /// Time to the response headers, the latency the detectors compare.
    latency: Duration,
}

impl PendingOutcome {
    /// The trailers arrived; a missing `grpc-status` is a broken call (UNKNOWN).
    pub fn trailers(self, trailers: &HeaderMap) {
        let code = grpc_status(trailers).unwrap_or(2);
        self.finish(outcome_of(200, Some(code)));
    }

    /// The body ended with no trailers (UNKNOWN, as gRPC clients read it).
    pub fn no_trailers(self) {
        self.finish(outcome_of(200, Some(2)));
    }

    /// The body failed: reset by the upstream, or cut by a timeout.
    pub fn failed(self) {
        self.finish(Outcome::ConnectFailure);
    }

    fn finish(self, outcome: Outcome) {
        // The latency estimate already had this call's time to headers.
        self.state
            .record_outcome(&self.ep, outcome, self.latency, None);
    }
}

/// Everything a call needs besides the request.
#[derive(Debug)]
pub struct Call<'a> {
    /// Pools, metrics, config.
    pub shared: &'a Shared,
    /// Upstream protocol.
    pub version: Version,
    /// The connection's original destination (used when the target has no endpoints).
    pub dst: SocketAddr,
    /// The target as of this request's snapshot.
    pub target: &'a Target,
    /// Its run-time state.
    pub state: &'a Arc<TargetState>,
    /// Whether the request is gRPC.
    pub grpc: bool,
    /// When the request arrived.
    pub start: Instant,
    /// An HTTP/1.1 upgrade: one attempt, body streamed.
    pub upgrade: bool,
}

/// The request body: replayable (a copy is kept while it streams) or streamed once.
enum RequestBody {
    Replayable(ReplayBody),
    Streamed(Option<Incoming>),
}

impl RequestBody {
    /// The body for the next attempt, if it can have one.
    fn next(&mut self) -> Option<ReqBody> {
        match self {
            RequestBody::Replayable(r) => r.replay().map(Either::Right),
            RequestBody::Streamed(b) => b.take().map(Either::Left),
        }
    }

    fn can_replay(&self) -> bool {
        match self {
            RequestBody::Replayable(r) => r.replay().is_some(),
            RequestBody::Streamed(_) => false,
        }
    }
}

/// One attempt's result.
struct Attempt {
    addr: SocketAddr,
    /// The other endpoint of a hedged pair, which this request has tried too.
    also_tried: Option<SocketAddr>,
    result: Result<Response<Incoming>, (Failure, &'static str)>,
    /// Its outcome, when the trailers will tell it.
    outcome: Option<PendingOutcome>,
}

impl Attempt {
    /// The failure a retry would answer, if the attempt failed.
    fn failure(&self, p: &RequestPolicy, grpc: bool) -> Option<Failure> {
        match &self.result {
            Err((f, _)) => Some(*f),
            Ok(resp) => response_failure(resp, p, grpc),
        }
    }
}

/// Whether a response counts as a failure: a 5xx, a status listed for retry, or a gRPC
/// trailers-only error.
fn response_failure<B>(resp: &Response<B>, p: &RequestPolicy, grpc: bool) -> Option<Failure> {
    let s = resp.status().as_u16();
    if grpc {
        if let Some(code) = grpc_status(resp.headers()) {
            if code != 0 {
                return Some(Failure::Grpc(code));
            }
        }
    }
    (s >= 500 || p.retry.status_codes.contains(&s)).then_some(Failure::Status(s))
}

fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Parses a `grpc-timeout` (`<digits><H|M|S|m|u|n>`, at most 8 digits).
pub fn parse_grpc_timeout(h: &HeaderMap) -> Option<Duration> {
    let v = h.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a `grpc-timeout` with the unit that keeps it within 8 digits.
pub fn format_grpc_timeout(d: Duration) -> String {
    let us = d.as_micros();
    if us < 100_000_000 {
        format!("{}u", us.max(1))
    } else {
        format!("{}m", d.as_millis().min(99_999_999))
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Runs one request through the target's policy.
pub async fn call(c: &Call<'_>, req: Request<Incoming>) -> Result<Upstream, LocalError> {
    let key = c.target.key.as_str();
    let metrics = &c.shared.metrics;
    let policy = c
        .target
        .request_policy(req.method(), req.uri().path(), req.headers())
        .clone();
    c.state.deposit(Instant::now());
    let caller_deadline = c
        .grpc
        .then(|| parse_grpc_timeout(req.headers()))
        .flatten()
        .map(|d| c.start + d);
    let deadline = earliest(
        policy.timeouts.request.map(|d| c.start + d),
        caller_deadline,
    );
    let headers_deadline = earliest(
        deadline,
        policy.timeouts.response_headers.map(|d| c.start + d),
    );
    let permit = match c.state.bulkhead() {
        Some(b) => Some(b.acquire(headers_deadline).await.map_err(|shed| {
            let e = match shed {
                Shed::QueueFull => LocalError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    reason: "bulkhead_full",
                },
                Shed::QueueTimeout => LocalError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    reason: "bulkhead_queue_timeout",
                },
                Shed::Deadline => deadline_error(deadline, headers_deadline, caller_deadline),
            };
            metrics.count("bulkhead_rejections", key, e.reason);
            e
        })?),
        None => None,
    };
    let safe = retry::replay_safe(req.method(), req.headers());
    let (parts, body) = req.into_parts();
    let replay_wanted = !c.upgrade && (policy.retry.attempts > 1 || policy.hedge.is_some());
    let mut body = if replay_wanted {
        RequestBody::Replayable(ReplayBody::new(body, policy.retry.max_buffered_body))
    } else {
        RequestBody::Streamed(Some(body))
    };
    let attempts = if replay_wanted {
        policy.retry.attempts.max(1)
    } else {
        1
    };
    let hedge = policy.hedge.filter(|_| replay_wanted && safe);
    if let Some(h) = &hedge {
        c.state
            .hedge_budget(&policy.route, h.ratio, Instant::now(), false);
    }
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut n = 0;
    loop {
        n += 1;
        let now = Instant::now();
        if headers_deadline.is_some_and(|d| d <= now) {
            return Err(deadline_error(deadline, headers_deadline, caller_deadline));
        }
        let try_deadline = earliest(headers_deadline, policy.timeouts.per_try.map(|d| now + d));
        let first = choose(c, &tried, now)?;
        let a = if let (Some(h), 1) = (&hedge, n) {
            let delay = h.delay.or_else(|| c.state.route_p95(&policy.route));
            hedged(
                c,
                &policy,
                first,
                &parts,
                &mut body,
                deadline,
                headers_deadline,
                try_deadline,
                delay,
                h.ratio,
            )
            .await
        } else {
            let Some(req) = request(&parts, &mut body, deadline.filter(|_| c.grpc)) else {
                unreachable!("a retry is decided only when the body can be replayed");
            };
            attempt(c, &policy, first, req, try_deadline).await
        };
        let Some(failure) = a.failure(&policy, c.grpc) else {
            if let Ok(resp) = a.result {
                // Only a hedge without a fixed delay reads the route's latency.
                if policy.hedge.is_some_and(|h| h.delay.is_none()) {
                    c.state
                        .record_route_latency(&policy.route, c.start.elapsed());
                }
                return Ok(Upstream {
                    resp,
                    deadline,
                    idle: policy.timeouts.idle,
                    permit,
                    outcome: a.outcome,
                });
            }
            unreachable!("an attempt without failure has a response");
        };
        let now = Instant::now();
        let mut retry = n < attempts
            && retry::should_retry(failure, &policy.retry, safe || failure.never_reached_app());
        if retry && !body.can_replay() {
            // More than maxBufferedBodyBytes went out, or the client's body failed.
            c.shared
                .metrics
                .count("retries_skipped", key, "body_not_replayable");
            retry = false;
        }
        let mut wait = retry::backoff(&policy.retry, n, super::unit());
        if let Ok(resp) = &a.result {
            match retry::retry_after(resp.headers()) {
                Some(None) => retry = false,
                Some(Some(d)) => wait = wait.max(d),
                None => {}
            }
        }
        if retry && headers_deadline.is_some_and(|d| now + wait >= d) {
            retry = false;
        }
        if retry && !c.state.withdraw_retry(now) {
            metrics.count("retry_budget_exhausted", key, failure.label());
            tracing::debug!(target = key, "retry budget exhausted");
            retry = false;
        }
        if !retry {
            return match a.result {
                Ok(resp) => Ok(Upstream {
                    resp,
                    deadline,
                    idle: policy.timeouts.idle,
                    permit,
                    outcome: a.outcome,
                }),
                Err((Failure::PerTryTimeout, _))
                    if headers_deadline.is_some_and(|d| d <= Instant::now()) =>
                {
                    Err(deadline_error(deadline, headers_deadline, caller_deadline))
                }
                Err((f, reason)) => Err(failure_error(f, reason)),
            };
        }
        metrics.count("retries", key, failure.label());
        tried.push(a.addr);
        tried.extend(a.also_tried);
        tokio::time::sleep(wait).await;
    }
}

fn choose(
    c: &Call<'_>,
    tried: &[SocketAddr],
    now: Instant,
) -> Result<(Option<Arc<Endpoint>>, SocketAddr), LocalError> {
    if c.target.endpoints.is_empty() {
        return Ok((None, c.dst));
    }
    match c.state.pick(tried, now) {
        Some(ep) => {
            let addr = ep.addr;
            Ok((Some(ep), addr))
        }
        None => Err(LocalError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: "no_endpoints",
        }),
    }
}

/// The 504 for a passed deadline, named after the limit that fired: the caller's
/// `grpc-timeout`, the policy's request timeout, or its response-headers timeout.
fn deadline_error(
    deadline: Option<Instant>,
    headers: Option<Instant>,
    caller: Option<Instant>,
) -> LocalError {
    let reason = if headers.is_some() && headers == caller {
        "caller_deadline"
    } else if headers.is_some() && headers == deadline {
        "request_timeout"
    } else {
        "response_headers_timeout"
    };
    LocalError {
        status: StatusCode::GATEWAY_TIMEOUT,
        reason,
    }
}

fn failure_error(f: Failure, reason: &'static str) -> LocalError {
    let status = match f {
        Failure::PerTryTimeout => StatusCode::GATEWAY_TIMEOUT,
        Failure::RefusedStream => StatusCode::SERVICE_UNAVAILABLE,
        _ if reason == "connect_timeout" => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    LocalError { status, reason }
}

/// The request for one attempt; a gRPC call's deadline goes on as its `grpc-timeout`, less
/// the time already spent (`grpc_deadline` is `None` for other requests).
fn request(
    parts: &Parts,
    body: &mut RequestBody,
    grpc_deadline: Option<Instant>,
) -> Option<Request<ReqBody>> {
    let mut req = Request::from_parts(parts.clone(), body.next()?);
    if let Some(d) = grpc_deadline {
        let left = d.saturating_duration_since(Instant::now());
        if let Ok(v) = HeaderValue::from_str(&format_grpc_timeout(left)) {
            req.headers_mut().insert("grpc-timeout", v);
        }
    }
    Some(req)
}

/// Sends one attempt and records what it came to on the endpoint.
async fn attempt(
    c: &Call<'_>,
    policy: &RequestPolicy,
    (ep, addr): (Option<Arc<Endpoint>>, SocketAddr),
    req: Request<ReqBody>,
    deadline: Option<Instant>,
) -> Attempt {
    let _guard = ep.as_ref().map(InFlight::start);
    let started = Instant::now();
    let mut running = Unfinished {
        state: c.state,
        ep,
        started,
    };
    let client = c.shared.pools.get(addr, c.version, policy.timeouts.connect);
    let fut = client.request(req);
    let result = match deadline {
        Some(d) => match tokio::time::timeout_at(d, fut).await {
            Ok(r) => r.map_err(|e| classify(&e)),
            Err(_) => Err((Failure::PerTryTimeout, "per_try_timeout")),
        },
        None => fut.await.map_err(|e| classify(&e)),
    };
    if let Err((f, reason)) = &result {
        tracing::debug!(target = %c.target.key, endpoint = %addr, failure = f.label(), reason, "attempt failed");
    }
    let mut a = Attempt {
        addr,
        also_tried: None,
        result,
        outcome: None,
    };
    if let Some(ep) = running.ep.take() {
        a.outcome = record(c.state, c.grpc, ep, &a, started.elapsed());
    }
    a
}

/// An attempt under way. Dropped before it finished (a hedge that lost, a caller that went
/// away), it still tells the endpoint's latency estimate and the latency detector how long
/// the endpoint had kept the request, when that is longer than the estimate: the time is a
/// lower bound, so it says something only when it is already slow. Otherwise a slow
/// endpoint whose requests hedging keeps winning would never look slow, while a hedge
/// cancelled early (the original won) must not make its endpoint look fast.
struct Unfinished<'a> {
    state: &'a TargetState,
    ep: Option<Arc<Endpoint>>,
    started: Instant,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(ep) = self.ep.take() {
            let target = self.state.target.load();
            let latency = self.started.elapsed();
            let mut s = ep.lock();
            if latency.as_nanos() as f64 > s.ewma.estimate_ns() {
                s.ewma
                    .observe(latency, Instant::now(), target.balance.decay);
                s.outlier.observe_latency(latency);
            }
        }
    }
}

/// Feeds an attempt's outcome into the endpoint's latency estimate and outlier state. A
/// gRPC response that is not trailers-only has its status still to come: the latency is
/// recorded now, the outcome is returned to be told when the trailers arrive.
fn record(
    state: &Arc<TargetState>,
    grpc: bool,
    ep: Arc<Endpoint>,
    a: &Attempt,
    latency: Duration,
) -> Option<PendingOutcome> {
    let outcome = match &a.result {
        Ok(resp) if grpc && resp.status().as_u16() < 500 => match grpc_status(resp.headers()) {
            Some(code) => outcome_of(200, Some(code)),
            None => {
                let target = state.target.load();
                ep.lock()
                    .ewma
                    .observe(latency, Instant::now(), target.balance.decay);
                return Some(PendingOutcome {
                    state: state.clone(),
                    ep,
                    latency,
                });
            }
        },
        Ok(resp) => outcome_of(resp.status().as_u16(), None),
        Err(_) => Outcome::ConnectFailure,
    };
    let rtt = if !matches!(outcome, Outcome::Success) {
        latency.max(FAILURE_PENALTY)
    } else {
        latency
    };
    state.record_outcome(&ep, outcome, latency, Some(rtt));
    None
}

/// What a response says about the endpoint's health. A trailers-only gRPC error counts as
/// the HTTP status it stands for (UNAVAILABLE 503, DEADLINE_EXCEEDED 504, INTERNAL, UNKNOWN
/// and DATA_LOSS 500); other gRPC codes are the application's answer, not a fault. A status
/// in the trailers is read the same way, when it arrives ([`PendingOutcome`]).
fn outcome_of(status: u16, grpc: Option<u32>) -> Outcome {
    let status = match grpc {
        Some(14) => 503,
        Some(4) => 504,
        Some(2 | 13 | 15) => 500,
        _ => status,
    };
    if status >= 500 {
        Outcome::Status(status)
    } else {
        Outcome::Success
    }
}

/// The first attempt of a hedged route: if it has not answered after `delay`, a second one
/// goes to another endpoint (within the hedge budget); the first good response wins and the
/// other is cancelled.
#[allow(clippy::too_many_arguments)]
async fn hedged(
    c: &Call<'_>,
    policy: &RequestPolicy,
    first: (Option<Arc<Endpoint>>, SocketAddr),
    parts: &Parts,
    body: &mut RequestBody,
    deadline: Option<Instant>,
    headers_deadline: Option<Instant>,
    try_deadline: Option<Instant>,
    delay: Option<Duration>,
    ratio: f64,
) -> Attempt {
    let first_addr = first.1;
    let Some(req) = request(parts, body, deadline.filter(|_| c.grpc)) else {
        unreachable!("the first attempt always has a body");
    };
    let primary = attempt(c, policy, first, req, try_deadline);
    tokio::pin!(primary);
    let Some(delay) = delay else {
        return primary.await;
    };
    tokio::select! {
        a = &mut primary => return a,
        _ = tokio::time::sleep(delay) => {}
    }
    let key = c.target.key.as_str();
    // Two attempts at once need the whole body in hand.
    let complete = matches!(body, RequestBody::Replayable(r) if r.is_complete());
    if !complete {
        c.shared.metrics.count("hedges", key, "body_incomplete");
        return primary.await;
    }
    if !c
        .state
        .hedge_budget(&policy.route, ratio, Instant::now(), true)
    {
        c.shared.metrics.count("hedges", key, "budget_exhausted");
        return primary.await;
    }
    let second = match c.state.pick(&[first_addr], Instant::now()) {
        Some(ep) if ep.addr != first_addr => {
            let addr = ep.addr;
            (Some(ep), addr)
        }
        _ => return primary.await,
    };
    c.shared.metrics.count("hedges", key, "sent");
    // The hedge gets a whole per-try time of its own, but never past the request's limits.
    let hedge_deadline = earliest(try_deadline.map(|d| d + delay), headers_deadline);
    let Some(req) = request(parts, body, deadline.filter(|_| c.grpc)) else {
        return primary.await;
    };
    let second_addr = second.1;
    let secondary = attempt(c, policy, second, req, hedge_deadline);
    tokio::pin!(secondary);
    let both = |mut a: Attempt, other: SocketAddr| {
        a.also_tried = Some(other);
        a
    };
    tokio::select! {
        a = &mut primary => {
            if a.failure(policy, c.grpc).is_none() {
                c.shared.metrics.count("hedges", key, "original_won");
                a
            } else {
                let b = secondary.await;
                if b.failure(policy, c.grpc).is_none() {
                    c.shared.metrics.count("hedges", key, "hedge_won");
                }
                both(b, first_addr)
            }
        }
        b = &mut secondary => {
            if b.failure(policy, c.grpc).is_none() {
                c.shared.metrics.count("hedges", key, "hedge_won");
                b
            } else {
                let a = primary.await;
                if a.failure(policy, c.grpc).is_none() {
                    c.shared.metrics.count("hedges", key, "original_won");
                }
                both(a, second_addr)
            }
        }
    }
}

/// Sorts a client error into a failure kind and a reason label: a failed connect (the
/// request never left), a refused HTTP/2 stream (never processed), or a reset.
pub fn classify(e: &hyper_util::client::legacy::Error) -> (Failure, &'static str) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(c) = err.downcast_ref::<ConnectError>() {
            return match c {
                ConnectError::Refused { .. } => (Failure::ConnectFailure, "connect_refused"),
                ConnectError::TimedOut { .. } => (Failure::ConnectFailure, "connect_timeout"),
            };
        }
        if let Some(h) = err.downcast_ref::<h2::Error>() {
            if h.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return (Failure::RefusedStream, "refused_stream");
            }
        }
        source = err.source();
    }
    (Failure::Reset, "upstream_reset")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_status_in_the_trailers_counts_against_the_endpoint() {
        let yaml = "apiVersion: bulwark.dev/v1alpha1\nkind: Backend\nmetadata: {name: api, namespace: shop}\nspec:\n  endpoints: [\"10.1.0.1:50051\"]\n---\napiVersion: bulwark.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: api, namespace: shop}\nspec:\n  targetRef: {kind: Backend, name: api}\n  outlierDetection: {consecutive5xx: 3, maxEjectionPercent: 100}\n";
        let mut loaded = bulwark_api::load::Loaded::default();
        bulwark_api::load::load_str(std::path::Path::new("t.yaml"), yaml, &mut loaded);
        assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
        let docs: Vec<_> = loaded.documents.into_iter().map(|d| d.document).collect();
        let table = super::super::route::build(&docs);
        let state = Arc::new(TargetState::new(
            table.targets[0].clone(),
            Arc::new(crate::metrics::Metrics::new(8)),
        ));
        let ep = state.endpoints()[0].clone();
        let pending = || PendingOutcome {
            state: state.clone(),
            ep: ep.clone(),
            latency: Duration::from_millis(1),
        };
        let trailers = |code: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-status", HeaderValue::from_static(code));
            h
        };
        pending().trailers(&trailers("14"));
        pending().trailers(&trailers("0"));
        pending().trailers(&trailers("14"));
        pending().no_trailers();
        assert!(
            !ep.lock().outlier.is_ejected(),
            "an OK in between reset the count"
        );
        pending().trailers(&trailers("13"));
        let reason = ep.lock().outlier.ejected.as_ref().map(|e| e.reason);
        assert_eq!(
            reason,
            Some(super::super::outlier::Reason::Consecutive5xx),
            "UNAVAILABLE, UNKNOWN (no trailers), INTERNAL: three in a row"
        );
        let before = ep.lock().outlier.volume();
        pending().failed();
        drop(pending());
        assert_eq!(
            ep.lock().outlier.volume(),
            before + 1,
            "a failed body counts; an abandoned call does not"
        );
    }

    #[test]
    fn grpc_errors_count_against_the_endpoint() {
        assert_eq!(outcome_of(200, Some(14)), Outcome::Status(503));
        assert_eq!(outcome_of(200, Some(4)), Outcome::Status(504));
        assert_eq!(
            outcome_of(200, Some(5)),
            Outcome::Success,
            "NOT_FOUND is an answer"
        );
        assert_eq!(outcome_of(200, None), Outcome::Success);
        assert_eq!(outcome_of(502, None), Outcome::Status(502));
    }

    #[test]
    fn a_deadline_error_names_the_limit_that_fired() {
        let t = Instant::now();
        let (early, late) = (Some(t), Some(t + Duration::from_secs(1)));
        assert_eq!(
            deadline_error(early, early, early).reason,
            "caller_deadline"
        );
        assert_eq!(deadline_error(early, early, late).reason, "request_timeout");
        assert_eq!(
            deadline_error(late, early, late).reason,
            "response_headers_timeout"
        );
        assert_eq!(
            deadline_error(None, early, None).reason,
            "response_headers_timeout"
        );
    }

    #[test]
    fn grpc_timeout_round_trips() {
        let mut h = HeaderMap::new();
        for (v, d) in [
            ("100m", Duration::from_millis(100)),
            ("2S", Duration::from_secs(2)),
            ("1H", Duration::from_secs(3600)),
            ("5000u", Duration::from_millis(5)),
        ] {
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            assert_eq!(parse_grpc_timeout(&h), Some(d), "{v}");
        }
        for bad in ["", "m", "123456789m", "10x", "-1S"] {
            h.insert("grpc-timeout", HeaderValue::from_static(bad));
            assert_eq!(parse_grpc_timeout(&h), None, "{bad:?}");
        }
        assert_eq!(format_grpc_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(format_grpc_timeout(Duration::from_secs(200)), "200000m");
        assert_eq!(format_grpc_timeout(Duration::ZERO), "1u");
    }

    #[test]
    fn failures_are_read_from_status_and_grpc_status() {
        let p = RequestPolicy {
            route: "r".into(),
            timeouts: super::super::route::Timeouts {
                connect: Duration::from_secs(1),
                request: None,
                per_try: None,
                response_headers: None,
                idle: None,
            },
            retry: super::super::route::RetryPolicy {
                attempts: 2,
                conditions: vec![],
                status_codes: vec![429],
                grpc_codes: vec![14],
                backoff_base: Duration::from_millis(25),
                backoff_max: Duration::from_millis(250),
                max_buffered_body: 65536,
            },
            hedge: None,
        };
        let resp = |s: u16, grpc: Option<&'static str>| {
            let mut b = Response::builder().status(s);
            if let Some(g) = grpc {
                b = b.header("grpc-status", g);
            }
            b.body(()).unwrap()
        };
        assert_eq!(response_failure(&resp(200, None), &p, false), None);
        assert_eq!(
            response_failure(&resp(429, None), &p, false),
            Some(Failure::Status(429))
        );
        assert_eq!(
            response_failure(&resp(503, None), &p, false),
            Some(Failure::Status(503))
        );
        assert_eq!(
            response_failure(&resp(200, Some("14")), &p, true),
            Some(Failure::Grpc(14))
        );
        assert_eq!(response_failure(&resp(200, Some("0")), &p, true), None);
    }
}

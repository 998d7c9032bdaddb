//! One attempt: a request sent to one endpoint within its per-try deadline, and what its
//! result says about that endpoint. Every outcome is fed into the endpoint's latency
//! estimate and outlier state, except failures that are not the endpoint's (a client that
//! aborted its upload); a gRPC status still to come in the trailers is told when it arrives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use tokio::time::Instant;

use super::balance::{Endpoint, InFlight};
use super::call::{Call, Upstream};
use super::outlier::Health;
use super::policy::RequestPolicy;
use super::retry::Failure;
use super::target::TargetState;
use crate::error::{Error, Kind, Side};
use crate::http::body::{AttemptBody, BodyEnd};
use crate::http::headers::{GRPC_UNKNOWN, grpc_status, grpc_status_at_end};

/// Latency charged to an endpoint's estimate for a 5xx, connect failure or reset, so the
/// balancer steers away from a fast-failing endpoint (which would otherwise look like the
/// fastest) before outlier detection has decided anything.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// An endpoint to send to: the balancer's pick (with its state), or, for a target without
/// endpoints, the original destination.
#[derive(Debug, Clone)]
pub struct Dest {
    /// The picked endpoint, whose health the attempt feeds.
    pub endpoint: Option<Arc<Endpoint>>,
    /// Where the attempt goes.
    pub addr: SocketAddr,
}

/// One attempt's result.
#[derive(Debug)]
pub struct Attempt<R> {
    /// Where it went.
    pub addr: SocketAddr,
    /// The other endpoint of a hedged pair, which this request has tried too.
    pub also_tried: Option<SocketAddr>,
    /// The response, or why there is none.
    pub result: Result<Response<R>, Error>,
    /// Its health outcome, when the trailers will tell it.
    pub pending: Option<PendingGrpcStatus>,
}

impl<R> Attempt<R> {
    /// The failure a retry would answer, if the attempt failed.
    pub fn failure(&self, p: &RequestPolicy, grpc: bool) -> Option<Failure> {
        match &self.result {
            Err(e) => Some(Failure::from(e)),
            Ok(resp) => response_failure(resp, p, grpc),
        }
    }
}

/// Whether a response counts as a failure: a 5xx, a status listed for retry, or a gRPC
/// trailers-only error.
pub fn response_failure<B>(resp: &Response<B>, p: &RequestPolicy, grpc: bool) -> Option<Failure> {
    let s = resp.status().as_u16();
    if grpc
        && let Some(code) = grpc_status(resp.headers())
        && code != 0
    {
        return Some(Failure::Grpc(code));
    }
    (s >= 500 || p.retry.status_codes.contains(&s)).then_some(Failure::Status(s))
}

/// Sends one attempt and records what it came to on the endpoint.
pub async fn send<B, U: Upstream<B>>(
    c: &Call<'_, U>,
    policy: &RequestPolicy,
    dest: Dest,
    req: Request<AttemptBody<B>>,
    deadline: Option<Instant>,
) -> Attempt<U::Body> {
    let _guard = dest.endpoint.as_ref().map(InFlight::start);
    let started = Instant::now();
    let mut running = Unfinished {
        state: c.state,
        ep: dest.endpoint,
        started,
    };
    let fut = c.upstream.send(dest.addr, policy.timeouts.connect, req);
    let result = match deadline {
        Some(d) => match tokio::time::timeout_at(d, fut).await {
            Ok(r) => r,
            Err(_) => Err(Kind::PerTryTimeout.into()),
        },
        None => fut.await,
    };
    if let Err(e) = &result {
        tracing::debug!(target = %c.target.key, endpoint = %dest.addr, reason = e.reason(), side = ?e.side, "attempt failed");
    }
    let mut a = Attempt {
        addr: dest.addr,
        also_tried: None,
        result,
        pending: None,
    };
    if let Some(ep) = running.ep.take() {
        a.pending = record(c.state, c.grpc, ep, &a.result, started.elapsed());
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

/// Feeds an attempt's result into the endpoint's latency estimate and outlier state. A
/// failure that is not the endpoint's (the client's body failed) says nothing of it and is
/// not recorded. A gRPC response that is not trailers-only has its status still to come:
/// the latency is recorded now, the outcome is returned to be told when the trailers
/// arrive.
fn record<R>(
    state: &Arc<TargetState>,
    grpc: bool,
    ep: Arc<Endpoint>,
    result: &Result<Response<R>, Error>,
    latency: Duration,
) -> Option<PendingGrpcStatus> {
    let health = match result {
        Ok(resp) if grpc && resp.status().as_u16() < 500 => match grpc_status(resp.headers()) {
            Some(code) => health_of(200, Some(code)),
            None => {
                let target = state.target.load();
                ep.lock()
                    .ewma
                    .observe(latency, Instant::now(), target.balance.decay);
                return Some(PendingGrpcStatus {
                    state: state.clone(),
                    ep,
                    latency,
                });
            }
        },
        Ok(resp) => health_of(resp.status().as_u16(), None),
        Err(e) if e.side == Side::Upstream => Health::ConnectFailure,
        Err(_) => return None,
    };
    let rtt = if !matches!(health, Health::Success) {
        latency.max(FAILURE_PENALTY)
    } else {
        latency
    };
    state.record_outcome(&ep, health, latency, Some(rtt));
    None
}

/// What a response says about the endpoint's health. A trailers-only gRPC error counts as
/// the HTTP status it stands for (UNAVAILABLE 503, DEADLINE_EXCEEDED 504, INTERNAL, UNKNOWN
/// and DATA_LOSS 500); other gRPC codes are the application's answer, not a fault. A status
/// in the trailers is read the same way, when it arrives ([`PendingGrpcStatus`]).
pub fn health_of(status: u16, grpc: Option<u32>) -> Health {
    let status = match grpc {
        Some(14) => 503,
        Some(4) => 504,
        Some(2 | 13 | 15) => 500,
        _ => status,
    };
    if status >= 500 {
        Health::Status(status)
    } else {
        Health::Success
    }
}

/// The outcome of a gRPC call whose status comes in the trailers, after the messages (not
/// in a trailers-only response): the endpoint's outlier state hears of it when the body
/// ends. A call the client abandons counts for nothing.
#[derive(Debug)]
pub struct PendingGrpcStatus {
    state: Arc<TargetState>,
    ep: Arc<Endpoint>,
    /// Time to the response headers, the latency the detectors compare.
    latency: Duration,
}

impl PendingGrpcStatus {
    fn finish(self, health: Health) {
        // The latency estimate already had this call's time to headers.
        self.state
            .record_outcome(&self.ep, health, self.latency, None);
    }
}

impl BodyEnd for PendingGrpcStatus {
    /// A missing `grpc-status` is a broken call (UNKNOWN).
    fn trailers(self: Box<Self>, trailers: &HeaderMap) {
        let code = grpc_status_at_end(trailers);
        self.finish(health_of(200, Some(code)));
    }

    /// No trailers is UNKNOWN, as gRPC clients read it.
    fn no_trailers(self: Box<Self>) {
        self.finish(health_of(200, Some(GRPC_UNKNOWN)));
    }

    fn failed(self: Box<Self>) {
        self.finish(Health::ConnectFailure);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::outbound::outlier::Reason;
    use crate::outbound::test_util::{backend_state, policy_with_retries};

    #[test]
    fn a_grpc_status_in_the_trailers_counts_against_the_endpoint() {
        let state = backend_state(
            1,
            "outlierDetection: {consecutive5xx: 3, maxEjectionPercent: 100}",
        );
        let ep = state.endpoints()[0].clone();
        let pending = || {
            Box::new(PendingGrpcStatus {
                state: state.clone(),
                ep: ep.clone(),
                latency: Duration::from_millis(1),
            })
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
            Some(Reason::Consecutive5xx),
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
        assert_eq!(health_of(200, Some(14)), Health::Status(503));
        assert_eq!(health_of(200, Some(4)), Health::Status(504));
        assert_eq!(
            health_of(200, Some(5)),
            Health::Success,
            "NOT_FOUND is an answer"
        );
        assert_eq!(health_of(200, None), Health::Success);
        assert_eq!(health_of(502, None), Health::Status(502));
    }

    #[test]
    fn a_clients_failure_says_nothing_of_the_endpoint() {
        let state = backend_state(
            1,
            "outlierDetection: {consecutiveGatewayErrors: 1, maxEjectionPercent: 100}",
        );
        let ep = state.endpoints()[0].clone();
        let aborted: Result<Response<()>, Error> = Err(Kind::DownstreamAborted.into());
        for _ in 0..10 {
            assert!(record(&state, false, ep.clone(), &aborted, FAILURE_PENALTY * 2).is_none());
        }
        let s = ep.lock();
        assert_eq!(s.outlier.volume(), 0, "nothing was recorded");
        assert!(!s.outlier.is_ejected());
        assert!(s.ewma.estimate_ns() < FAILURE_PENALTY.as_nanos() as f64);
        drop(s);
        let refused: Result<Response<()>, Error> = Err(Kind::ConnectRefused.into());
        record(
            &state,
            false,
            ep.clone(),
            &refused,
            Duration::from_millis(1),
        );
        assert!(
            ep.lock().outlier.is_ejected(),
            "an upstream failure does count"
        );
    }

    #[test]
    fn failures_are_read_from_status_and_grpc_status() {
        let p = policy_with_retries(2, &[429]);
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

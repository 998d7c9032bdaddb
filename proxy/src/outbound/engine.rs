//! The request engine: one request to a target with policy. Bulkhead, deadlines (the
//! policy's and the caller's `grpc-timeout`), then attempts — each to an endpoint the
//! balancer picks, never the one that just failed when another exists — with per-try
//! timeouts, retries decided by [`retry::decide`] within the budget, and an optional hedge
//! ([`hedge::first_attempt`]).
//!
//! The engine reaches the network only through [`Upstream`] ([`super::call`]), and reads
//! tokio's clock, so its unit tests run with a scripted upstream and paused time
//! (`engine/tests.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Body;
use tokio::time::Instant;

use super::attempt::{self, Attempt, Dest, PendingGrpcStatus};
use super::bulkhead::{Shed, Slot};
use super::call::{Bodies, Call, Upstream, request};
use super::deadline::{self, Deadlines};
use super::hedge;
use super::retry::{self, Attempted, Decision, Failure, Stop};
use crate::error::{Error, Kind};
use crate::http::Served;
use crate::http::replay::ReplayBody;
use crate::metrics::Resilience;
use crate::random;

/// The upstream's response and what must outlive its body.
#[derive(Debug)]
pub struct Reply<R> {
    /// The response.
    pub resp: Response<R>,
    /// Deadline for the whole response, body included.
    pub deadline: Option<Instant>,
    /// Longest silence in the body.
    pub idle: Option<Duration>,
    /// The bulkhead slot, released when the body ends.
    pub slot: Option<Slot>,
    /// A gRPC call's outcome, known only once its trailers arrive.
    pub pending: Option<PendingGrpcStatus>,
    /// Who answered, after how many attempts.
    pub served: Served,
}

/// Runs one request through the target's policy.
pub async fn run<B, U>(c: &Call<'_, U>, req: Request<B>) -> Result<Reply<U::Body>, Error>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    U: Upstream<B>,
{
    let key = c.target.key.as_str();
    let policy = c.policy;
    c.state.deposit(Instant::now());
    let deadlines = Deadlines::new(c.start, &policy.timeouts, req.headers(), c.grpc);
    let slot = match c.state.bulkhead() {
        Some(b) => Some(b.acquire(deadlines.headers).await.map_err(|shed| {
            let e = match shed {
                Shed::QueueFull => Kind::BulkheadFull.into(),
                Shed::QueueTimeout => Kind::BulkheadQueueTimeout.into(),
                Shed::Deadline => deadlines.error(),
            };
            c.metrics
                .count(Resilience::BulkheadRejections, key, e.reason());
            e
        })?),
        None => None,
    };
    let safe = retry::replay_safe(req.method(), req.headers());
    let (parts, body) = req.into_parts();
    let replay_wanted = !c.upgrade && (policy.retry.attempts > 1 || policy.hedge.is_some());
    let mut body = if replay_wanted {
        Bodies::Replayable(ReplayBody::new(body, policy.retry.max_buffered_body))
    } else {
        Bodies::Streamed(Some(body))
    };
    let max = if replay_wanted {
        policy.retry.attempts.max(1)
    } else {
        1
    };
    let hedge = policy.hedge.filter(|_| replay_wanted && safe);
    if let Some(h) = &hedge {
        c.state
            .hedges
            .budget(&policy.route, h.ratio, Instant::now(), false);
    }
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut n = 0;
    let grpc_deadline = deadlines.request.filter(|_| c.grpc);
    // The next attempt's body: the first one's now, a retry's when the retry is decided.
    let mut next = body.for_attempt();
    let answer = loop {
        n += 1;
        let now = Instant::now();
        if deadlines.passed(now) {
            break Err(deadlines.error());
        }
        let try_deadline =
            deadline::earliest(deadlines.headers, policy.timeouts.per_try.map(|d| now + d));
        let first = choose(c, &tried, now)?;
        let Some(this_body) = next.take() else {
            // Both are taken before the loop or when a retry is decided.
            break Err(Kind::DownstreamAborted.into());
        };
        let a = match (&hedge, n) {
            (Some(h), 1) => {
                let delay = h.delay.or_else(|| c.state.hedges.p95(&policy.route));
                let plan = hedge::Plan {
                    policy,
                    parts: &parts,
                    deadlines: &deadlines,
                    try_deadline,
                    delay,
                    ratio: h.ratio,
                };
                hedge::first_attempt(c, &plan, (first, this_body), &mut body).await
            }
            _ => {
                let req = request(&parts, this_body, grpc_deadline);
                attempt::send(c, policy, first, req, try_deadline).await
            }
        };
        let Some(failure) = a.failure(policy, c.grpc) else {
            // Only a hedge without a fixed delay reads the route's latency.
            if policy.hedge.is_some_and(|h| h.delay.is_none()) {
                c.state
                    .hedges
                    .record_latency(&policy.route, c.start.elapsed());
            }
            break finish(a, n, &deadlines);
        };
        let now = Instant::now();
        let attempted = Attempted {
            n,
            max,
            failure,
            safe,
            can_replay: body.can_replay(),
            retry_after: a
                .result
                .as_ref()
                .ok()
                .and_then(|r| retry::retry_after(r.headers())),
            time_left: deadlines.left(now),
            jitter: random::unit(),
        };
        let wait = match retry::decide(&policy.retry, &attempted) {
            Decision::Retry(wait) if c.state.withdraw_retry(now) => wait,
            Decision::Retry(_) => {
                c.metrics
                    .count(Resilience::RetryBudgetExhausted, key, failure.label());
                tracing::debug!(target = key, "retry budget exhausted");
                break finish(a, n, &deadlines);
            }
            Decision::Stop(stop) => {
                if stop == Stop::BodyNotReplayable {
                    c.metrics
                        .count(Resilience::RetriesSkipped, key, "body_not_replayable");
                }
                break finish(a, n, &deadlines);
            }
        };
        // The retry's body is taken now, before the backoff: from here on the failed
        // attempt's connection (which may still be sending) can no longer read on from the
        // client. The copy may have outgrown its limit since the decision (that
        // connection read on): then this attempt's answer stands.
        next = body.for_attempt();
        if next.is_none() {
            c.metrics
                .count(Resilience::RetriesSkipped, key, "body_not_replayable");
            break finish(a, n, &deadlines);
        }
        c.metrics.count(Resilience::Retries, key, failure.label());
        tried.push(a.addr);
        tried.extend(a.also_tried);
        tokio::time::sleep(wait).await;
    };
    answer.map(|(resp, pending, served)| Reply {
        resp,
        deadline: deadlines.request,
        idle: policy.timeouts.idle,
        slot,
        pending,
        served,
    })
}

/// The answer an attempt comes to when no other follows: its response, or its error (a
/// per-try timeout that ran into the request's deadline is named after the deadline).
fn finish<R>(
    a: Attempt<R>,
    n: u32,
    deadlines: &Deadlines,
) -> Result<(Response<R>, Option<PendingGrpcStatus>, Served), Error> {
    let served = Served {
        endpoint: a.addr,
        attempts: n + u32::from(a.also_tried.is_some()),
        hedged: a.also_tried.is_some(),
    };
    match a.result {
        Ok(resp) => Ok((resp, a.pending, served)),
        Err(e)
            if Failure::from(&e) == Failure::PerTryTimeout && deadlines.passed(Instant::now()) =>
        {
            Err(deadlines.error())
        }
        Err(e) => Err(e),
    }
}

/// The endpoint for the next attempt: one the balancer picks, avoiding `tried`, or the
/// original destination for a target without endpoints.
pub fn choose<U>(c: &Call<'_, U>, tried: &[SocketAddr], now: Instant) -> Result<Dest, Error> {
    if c.target.endpoints.is_empty() {
        return Ok(Dest {
            endpoint: None,
            addr: c.dst,
        });
    }
    match c.state.pick(tried, now) {
        Some(ep) => Ok(Dest {
            addr: ep.addr,
            endpoint: Some(ep),
        }),
        None => Err(Kind::NoEndpoints.into()),
    }
}

#[cfg(test)]
mod tests;

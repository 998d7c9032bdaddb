//! Hedging: when a route's first attempt has not answered after a delay (fixed, or the
//! route's observed p95, [`super::route_stats`]), a second attempt goes to another
//! endpoint within the route's hedge budget, and the first good response wins.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use hyper::body::Body;
use tokio::time::Instant;

use super::attempt::{self, Attempt, Dest};
use super::call::{self, Bodies, Call, Upstream};
use super::deadline::{Deadlines, earliest};
use super::policy::RequestPolicy;
use crate::http::body::AttemptBody;
use crate::metrics::Resilience;

/// What a hedged first attempt needs to know.
#[derive(Debug)]
pub struct Plan<'a> {
    /// The route's policy.
    pub policy: &'a RequestPolicy,
    /// The request head, for a second copy.
    pub parts: &'a Parts,
    /// The request's deadlines.
    pub deadlines: &'a Deadlines,
    /// The first attempt's own deadline.
    pub try_deadline: Option<Instant>,
    /// How long the first attempt runs alone; `None` (no p95 yet) never hedges.
    pub delay: Option<Duration>,
    /// Share of requests that may be hedged.
    pub ratio: f64,
}

/// The first attempt of a hedged route: if it has not answered after the delay, a second
/// one goes to another endpoint (within the hedge budget, and only once the whole body is
/// in hand); the first good response wins and the other is cancelled.
pub async fn first_attempt<B, U>(
    c: &Call<'_, U>,
    plan: &Plan<'_>,
    (first, first_body): (Dest, AttemptBody<B>),
    body: &mut Bodies<B>,
) -> Attempt<U::Body>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    U: Upstream<B>,
{
    let (policy, grpc_deadline) = (plan.policy, plan.deadlines.request.filter(|_| c.grpc));
    let first_addr = first.addr;
    let req = call::request(plan.parts, first_body, grpc_deadline);
    let primary = attempt::send(c, policy, first, req, plan.try_deadline);
    tokio::pin!(primary);
    let Some(delay) = plan.delay else {
        return primary.await;
    };
    tokio::select! {
        a = &mut primary => return a,
        _ = tokio::time::sleep(delay) => {}
    }
    let key = c.target.key.as_str();
    let count = |reason| c.metrics.count(Resilience::Hedges, key, reason);
    // Two attempts at once need the whole body in hand.
    if !body.is_complete() {
        count("body_incomplete");
        return primary.await;
    }
    if !c
        .state
        .hedges
        .budget(&policy.route, plan.ratio, Instant::now(), true)
    {
        count("budget_exhausted");
        return primary.await;
    }
    let second = match c.state.pick(&[first_addr], Instant::now()) {
        Some(ep) if ep.addr != first_addr => Dest {
            addr: ep.addr,
            endpoint: Some(ep),
        },
        _ => return primary.await,
    };
    let Some(copy) = body.for_attempt() else {
        return primary.await;
    };
    let req = call::request(plan.parts, copy, grpc_deadline);
    count("sent");
    // The hedge gets a whole per-try time of its own, but never past the request's limits.
    let hedge_deadline = earliest(plan.try_deadline.map(|d| d + delay), plan.deadlines.headers);
    let second_addr = second.addr;
    let secondary = attempt::send(c, policy, second, req, hedge_deadline);
    tokio::pin!(secondary);
    let won = |a: &Attempt<U::Body>| a.failure(policy, c.grpc).is_none();
    let both = |mut a: Attempt<U::Body>, other: SocketAddr| {
        a.also_tried = Some(other);
        a
    };
    tokio::select! {
        a = &mut primary => {
            if won(&a) {
                count("original_won");
                return a;
            }
            let b = secondary.await;
            if won(&b) {
                count("hedge_won");
            }
            both(b, first_addr)
        }
        b = &mut secondary => {
            if won(&b) {
                count("hedge_won");
                return b;
            }
            let a = primary.await;
            if won(&a) {
                count("original_won");
            }
            both(a, second_addr)
        }
    }
}

//! Retry decisions, pure: which failures may be retried for which requests, the backoff
//! between attempts, and [`decide`], which weighs one failed attempt against the policy,
//! the body, `Retry-After` and the time left. The engine acts on the [`Decision`]; the
//! budget ([`super::budget`]) has the last word.

use std::time::Duration;

use bulwark_api::policy::RetryCondition;
use http::{HeaderMap, Method};

use super::policy::{MAX_RETRY_AFTER, RetryPolicy};
use crate::error::{Error, Kind};

/// What went wrong with one attempt, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The endpoint refused or did not answer the connect: the request never left.
    ConnectFailure,
    /// HTTP/2 REFUSED_STREAM: the server did not process the request.
    RefusedStream,
    /// The connection broke after the request may have been sent.
    Reset,
    /// The attempt's own timeout passed before the response headers.
    PerTryTimeout,
    /// A response with this status.
    Status(u16),
    /// A gRPC response (headers or trailers-only) with this `grpc-status`.
    Grpc(u32),
    /// Not the endpoint's doing (the client's body failed): never retried.
    Downstream,
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Self {
        match e.kind {
            Kind::ConnectRefused | Kind::ConnectTimeout | Kind::TlsHandshake => {
                Failure::ConnectFailure
            }
            Kind::RefusedStream => Failure::RefusedStream,
            Kind::UpstreamReset => Failure::Reset,
            Kind::PerTryTimeout => Failure::PerTryTimeout,
            _ => Failure::Downstream,
        }
    }
}

impl Failure {
    /// Whether the request provably never reached the application.
    pub fn never_reached_app(self) -> bool {
        matches!(self, Failure::ConnectFailure | Failure::RefusedStream)
    }

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::ConnectFailure => "connect_failure",
            Failure::RefusedStream => "refused_stream",
            Failure::Reset => "reset",
            Failure::PerTryTimeout => "per_try_timeout",
            Failure::Status(_) => "status",
            Failure::Grpc(_) => "grpc_status",
            Failure::Downstream => "downstream",
        }
    }
}

/// Whether a request may be sent twice: its method is idempotent (RFC 9110 §9.2.2) or the
/// client made it so with an `Idempotency-Key`.
pub fn replay_safe(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) || headers.contains_key("idempotency-key")
}

/// Whether the policy retries this failure for a request whose replay safety is `safe`.
/// Failures before the application saw the request are retried whatever the method; the
/// rest only when the request is replay-safe. Listed gRPC codes are the operator's
/// statement that the route's methods may be retried (gRPC's own retry policy works so).
pub fn should_retry(f: Failure, p: &RetryPolicy, safe: bool) -> bool {
    let has = |c: RetryCondition| p.conditions.contains(&c);
    match f {
        Failure::ConnectFailure => {
            has(RetryCondition::ConnectFailure) || has(RetryCondition::GatewayError)
        }
        Failure::RefusedStream => has(RetryCondition::RefusedStream) || has(RetryCondition::Reset),
        Failure::Reset => safe && has(RetryCondition::Reset),
        Failure::PerTryTimeout => {
            safe && (has(RetryCondition::ServerError)
                || has(RetryCondition::GatewayError)
                || has(RetryCondition::Reset))
        }
        Failure::Status(s) => {
            safe && (p.status_codes.contains(&s)
                || (s >= 500 && has(RetryCondition::ServerError))
                || ((502..=504).contains(&s) && has(RetryCondition::GatewayError)))
        }
        Failure::Grpc(code) => p.grpc_codes.contains(&code),
        Failure::Downstream => false,
    }
}

/// One failed attempt, as [`decide`] weighs it.
#[derive(Debug, Clone, Copy)]
pub struct Attempted {
    /// Attempts made so far, this one included.
    pub n: u32,
    /// Attempts the request may have in all.
    pub max: u32,
    /// What went wrong.
    pub failure: Failure,
    /// Whether the request may be sent twice (method or `Idempotency-Key`).
    pub safe: bool,
    /// Whether the body can still be replayed.
    pub can_replay: bool,
    /// The response's `Retry-After`, as [`retry_after`] reads it.
    pub retry_after: Option<Option<Duration>>,
    /// Time left before the response-headers deadline (`None`: no deadline).
    pub time_left: Option<Duration>,
    /// A random number in [0, 1) for the backoff's jitter.
    pub jitter: f64,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this wait (if the budget allows).
    Retry(Duration),
    /// Stop and answer with this attempt's result.
    Stop(Stop),
}

/// Why no retry follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every attempt the policy allows was made.
    Attempts,
    /// The policy does not retry this failure for this request.
    NotRetried,
    /// The body can no longer be replayed (past `maxBufferedBodyBytes`, or it failed).
    BodyNotReplayable,
    /// The response asked for a longer wait than the proxy gives.
    RetryAfterTooLong,
    /// The wait would end past the deadline.
    Deadline,
}

/// Decides whether a failed attempt is followed by another, and after what wait. Pure.
pub fn decide(p: &RetryPolicy, a: &Attempted) -> Decision {
    if a.n >= a.max {
        return Decision::Stop(Stop::Attempts);
    }
    let safe = a.safe || a.failure.never_reached_app();
    if !should_retry(a.failure, p, safe) {
        return Decision::Stop(Stop::NotRetried);
    }
    if !a.can_replay {
        return Decision::Stop(Stop::BodyNotReplayable);
    }
    let mut wait = backoff(p, a.n, a.jitter);
    match a.retry_after {
        Some(None) => return Decision::Stop(Stop::RetryAfterTooLong),
        Some(Some(d)) => wait = wait.max(d),
        None => {}
    }
    if a.time_left.is_some_and(|left| wait >= left) {
        return Decision::Stop(Stop::Deadline);
    }
    Decision::Retry(wait)
}

/// Backoff before retry number `n` (1 for the first retry): full jitter over
/// `base × 2^(n−1)` capped at `max`; `unit` is a random number in [0, 1).
pub fn backoff(p: &RetryPolicy, n: u32, unit: f64) -> Duration {
    let exp = p
        .backoff_base
        .saturating_mul(1u32 << n.saturating_sub(1).min(16));
    exp.min(p.backoff_max).mul_f64(unit.clamp(0.0, 1.0))
}

/// A `Retry-After` given in seconds. `Some(None)` when it asks for longer than we wait
/// (the response is then returned rather than retried).
pub fn retry_after(headers: &HeaderMap) -> Option<Option<Duration>> {
    let secs: u64 = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let d = Duration::from_secs(secs);
    Some((d <= MAX_RETRY_AFTER).then_some(d))
}

#[cfg(test)]
mod tests;

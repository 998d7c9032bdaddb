//! Retry decisions, pure: which failures may be retried for which requests, the backoff
//! between attempts, and the budget that keeps retries from becoming a denial of service.

use std::time::Duration;

use tokio::time::Instant;

use bulwark_api::policy::RetryCondition;
use http::{HeaderMap, Method};

use super::route::{MAX_RETRY_AFTER, RetryPolicy};

/// Slots the budget window is divided into.
const SLOTS: usize = 10;

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
    }
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

/// A sliding-window budget: over the last `window`, withdrawals may not exceed
/// `ratio × deposits + min_per_second × window`. Requests deposit, retries (or hedges)
/// withdraw; a refused withdrawal is counted as exhaustion.
#[derive(Debug, Clone)]
pub struct Budget {
    ratio: f64,
    min_per_second: u32,
    window: Duration,
    slots: [(u64, u64); SLOTS],
    slot: usize,
    slot_start: Option<Instant>,
}

impl Budget {
    /// An empty budget.
    pub fn new(ratio: f64, min_per_second: u32, window: Duration) -> Self {
        Self {
            ratio,
            min_per_second,
            window: window.max(Duration::from_millis(SLOTS as u64)),
            slots: [(0, 0); SLOTS],
            slot: 0,
            slot_start: None,
        }
    }

    /// Changes the parameters, keeping the counts.
    pub fn set(&mut self, ratio: f64, min_per_second: u32, window: Duration) {
        self.ratio = ratio;
        self.min_per_second = min_per_second;
        self.window = window.max(Duration::from_millis(SLOTS as u64));
    }

    fn advance(&mut self, now: Instant) {
        let len = self.window / SLOTS as u32;
        let start = *self.slot_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        let steps = (elapsed.as_nanos() / len.as_nanos().max(1)) as usize;
        if steps == 0 {
            return;
        }
        for _ in 0..steps.min(SLOTS) {
            self.slot = (self.slot + 1) % SLOTS;
            self.slots[self.slot] = (0, 0);
        }
        self.slot_start = Some(start + len * steps as u32);
    }

    /// One request.
    pub fn deposit(&mut self, now: Instant) {
        self.advance(now);
        self.slots[self.slot].0 += 1;
    }

    /// Takes one retry if the budget allows it.
    pub fn withdraw(&mut self, now: Instant) -> bool {
        self.advance(now);
        let (deposits, withdrawals) = self
            .slots
            .iter()
            .fold((0, 0), |a, s| (a.0 + s.0, a.1 + s.1));
        let allowed =
            self.ratio * deposits as f64 + self.min_per_second as f64 * self.window.as_secs_f64();
        if (withdrawals as f64) < allowed.floor() {
            self.slots[self.slot].1 += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests;

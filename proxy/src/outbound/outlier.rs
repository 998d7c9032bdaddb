//! Outlier detection for one endpoint, as pure state over explicit instants: consecutive
//! 5xx and gateway errors trip at once; success rate, failure percentage and latency are
//! judged against the peers once per interval. An ejection lasts base × ejection count
//! (capped, jittered); the endpoint then returns on probation, and one failure there ejects
//! it again. Every ejection keeps its reason and the counters that tripped it.

use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;

use super::policy::OutlierPolicy;

mod peers;

pub use self::peers::{ejection_cap, evaluate, in_panic};

/// Latencies kept per endpoint for the latency detector.
pub const LATENCY_SAMPLES: usize = 256;
/// Intervals an endpoint's latency samples are carried into while they are too few to be
/// judged. The balancer sends a slow endpoint so little traffic that it may never reach
/// `requestVolume` in one interval, yet enough to hold the tail at its latency; carried
/// samples get it judged. Past this many intervals they are dropped as stale.
pub const LATENCY_CARRY_INTERVALS: u32 = 10;

/// Why an endpoint was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `consecutive5xx` 5xx responses in a row.
    Consecutive5xx,
    /// `consecutiveGatewayErrors` 502/503/504 or connect failures in a row.
    ConsecutiveGatewayErrors,
    /// Success rate far below the peers'.
    SuccessRate,
    /// Failure share above the threshold.
    FailurePercentage,
    /// Much slower than the peers.
    Latency,
    /// Failed again while on probation after an ejection.
    ProbationFailure,
}

impl Reason {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Consecutive5xx => "consecutive_5xx",
            Reason::ConsecutiveGatewayErrors => "consecutive_gateway_errors",
            Reason::SuccessRate => "success_rate",
            Reason::FailurePercentage => "failure_percentage",
            Reason::Latency => "latency",
            Reason::ProbationFailure => "probation_failure",
        }
    }
}

/// What one request to the endpoint came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// A response below 500.
    Success,
    /// A 5xx response; 502/503/504 also count as gateway errors.
    Status(u16),
    /// The endpoint could not be connected to, or reset the request (a gateway error).
    ConnectFailure,
}

impl Health {
    fn is_failure(self) -> bool {
        !matches!(self, Health::Success)
    }

    fn is_gateway(self) -> bool {
        matches!(self, Health::ConnectFailure | Health::Status(502..=504))
    }
}

/// The endpoint's counters at the moment it was ejected, for `/outliers`: the consecutive
/// counts (what the per-response detectors trip on), the interval under way, and the
/// interval that ended last (what the interval detectors judged).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Counters {
    /// 5xx responses in a row.
    pub consecutive_5xx: u32,
    /// Gateway errors (502/503/504, transport failures) in a row.
    pub consecutive_gateway_errors: u32,
    /// Requests in the interval under way.
    pub interval_requests: u32,
    /// Failures among them.
    pub interval_failures: u32,
    /// Requests in the interval that ended last.
    pub last_interval_requests: u32,
    /// Failures among them.
    pub last_interval_failures: u32,
    /// Their p90 latency, when any latency was recorded.
    pub last_interval_p90_ms: Option<f64>,
}

/// What tripped an ejection: the detector, the numbers in words and as counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cause {
    /// Why.
    pub reason: Reason,
    /// The numbers that tripped it, in words.
    pub detail: String,
    /// The counters as they stood.
    pub counters: Counters,
}

/// An ejection in force (or the last one, for the record).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ejection {
    /// Why.
    pub reason: Reason,
    /// The numbers that tripped it, in words.
    pub detail: String,
    /// The counters as they stood.
    pub counters: Counters,
    /// For a failure on probation: the ejection that began the run of ejections, so the
    /// original reason is not lost behind `probation_failure`.
    pub first: Option<Cause>,
    /// When it began.
    #[serde(skip)]
    pub since: Instant,
    /// When the endpoint returns on probation.
    #[serde(skip)]
    pub until: Instant,
}

/// One endpoint's outlier state.
#[derive(Debug, Clone)]
pub struct State {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    successes: u32,
    failures: u32,
    latencies: Vec<u32>,
    next_latency: usize,
    /// Intervals the latency samples have been carried through unjudged.
    latency_carried: u32,
    /// Ejections so far that still weigh on the next ejection's length.
    pub ejection_count: u32,
    /// Ejections ever.
    pub total_ejections: u64,
    /// The ejection in force, if any.
    pub ejected: Option<Ejection>,
    /// The last ejection, kept for `/outliers` after the endpoint returned.
    pub last: Option<Ejection>,
    /// Back from an ejection and not yet proven healthy for a whole interval.
    pub probation: bool,
    /// The interval that ended last: (requests, failures, p90 µs).
    last_interval: (u32, u32, Option<u32>),
    /// The counters when a per-response detector last tripped.
    tripped: Option<Counters>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            consecutive_5xx: 0,
            consecutive_gateway: 0,
            successes: 0,
            failures: 0,
            latencies: Vec::with_capacity(LATENCY_SAMPLES),
            next_latency: 0,
            latency_carried: 0,
            ejection_count: 0,
            total_ejections: 0,
            ejected: None,
            last: None,
            probation: false,
            last_interval: (0, 0, None),
            tripped: None,
        }
    }
}

impl State {
    /// Records one request. Returns a reason when a consecutive-error detector (or a failure
    /// on probation) trips; the caller decides whether the ejection is allowed.
    pub fn observe(
        &mut self,
        outcome: Health,
        latency: Duration,
        p: &OutlierPolicy,
    ) -> Option<(Reason, String)> {
        if outcome.is_failure() {
            self.failures = self.failures.saturating_add(1);
        } else {
            self.successes = self.successes.saturating_add(1);
        }
        self.observe_latency(latency);
        // A detector that is off keeps no count, so turning it on later starts from zero.
        self.consecutive_5xx = match outcome {
            Health::Status(_) if p.consecutive_5xx > 0 => self.consecutive_5xx + 1,
            _ => 0,
        };
        self.consecutive_gateway = if outcome.is_gateway() && p.consecutive_gateway > 0 {
            self.consecutive_gateway + 1
        } else {
            0
        };
        if self.ejected.is_some() {
            return None;
        }
        let trip = if self.probation && outcome.is_failure() {
            Some((
                Reason::ProbationFailure,
                format!("{outcome:?} while on probation"),
            ))
        } else if p.consecutive_5xx > 0 && self.consecutive_5xx >= p.consecutive_5xx {
            Some((
                Reason::Consecutive5xx,
                format!("{} consecutive 5xx responses", self.consecutive_5xx),
            ))
        } else if p.consecutive_gateway > 0 && self.consecutive_gateway >= p.consecutive_gateway {
            Some((
                Reason::ConsecutiveGatewayErrors,
                format!(
                    "{} consecutive gateway errors (502/503/504 or connect failure)",
                    self.consecutive_gateway
                ),
            ))
        } else {
            None
        };
        // The counters as they stand now, for the ejection that may follow: by the time it
        // is decided, other requests may have moved them on.
        if trip.is_some() {
            self.tripped = Some(self.counters());
        }
        trip
    }

    /// The counters as they stand.
    fn counters(&self) -> Counters {
        let (last_requests, last_failures, last_p90) = self.last_interval;
        Counters {
            consecutive_5xx: self.consecutive_5xx,
            consecutive_gateway_errors: self.consecutive_gateway,
            interval_requests: self.volume(),
            interval_failures: self.failures,
            last_interval_requests: last_requests,
            last_interval_failures: last_failures,
            last_interval_p90_ms: last_p90.map(|us| us as f64 / 1000.0),
        }
    }

    /// Records a latency sample alone: a request cancelled before its answer (a hedge that
    /// lost) says how slow the endpoint was, but not whether it would have succeeded.
    pub fn observe_latency(&mut self, latency: Duration) {
        let micros = latency.as_micros().min(u32::MAX as u128) as u32;
        if self.latencies.len() < LATENCY_SAMPLES {
            self.latencies.push(micros);
        } else {
            self.latencies[self.next_latency] = micros;
        }
        self.next_latency = (self.next_latency + 1) % LATENCY_SAMPLES;
    }

    /// Ejects for base × count (capped) plus up to 10 % jitter (`jitter` in [0, 1)).
    pub fn eject(
        &mut self,
        reason: Reason,
        detail: String,
        now: Instant,
        p: &OutlierPolicy,
        jitter: f64,
    ) {
        self.ejection_count = self.ejection_count.saturating_add(1);
        self.total_ejections += 1;
        let length = p
            .base_ejection
            .saturating_mul(self.ejection_count)
            .min(p.max_ejection);
        let length = length + length.mul_f64(0.1 * jitter.clamp(0.0, 1.0));
        let counters = self.tripped.take().unwrap_or_else(|| self.counters());
        let first = match (reason, &self.last) {
            (Reason::ProbationFailure, Some(prev)) => Some(prev.first.clone().unwrap_or(Cause {
                reason: prev.reason,
                detail: prev.detail.clone(),
                counters: prev.counters,
            })),
            _ => None,
        };
        let e = Ejection {
            reason,
            detail,
            counters,
            first,
            since: now,
            until: now + length,
        };
        self.last = Some(e.clone());
        self.ejected = Some(e);
        self.probation = false;
        self.consecutive_5xx = 0;
        self.consecutive_gateway = 0;
    }

    /// Ends an ejection whose time is up: the endpoint is back, on probation. Returns
    /// whether it came back now.
    pub fn release_if_due(&mut self, now: Instant) -> bool {
        if self.ejected.as_ref().is_some_and(|e| e.until <= now) {
            self.ejected = None;
            self.probation = true;
            self.successes = 0;
            self.failures = 0;
            // Judged afresh on what it does now, not on what got it ejected.
            self.clear_latencies();
            return true;
        }
        false
    }

    /// Whether requests may go to it.
    pub fn is_ejected(&self) -> bool {
        self.ejected.is_some()
    }

    fn p90(&self) -> Option<u32> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v = self.latencies.clone();
        let i = (v.len() * 9 / 10).min(v.len() - 1);
        Some(*v.select_nth_unstable(i).1)
    }

    /// Requests seen this interval.
    pub fn volume(&self) -> u32 {
        self.successes + self.failures
    }

    /// Whether there are enough latency samples to judge, `volume` being the least.
    fn latency_judgeable(&self, volume: u32) -> bool {
        self.latencies.len() as u32 >= volume.max(1)
    }

    fn clear_latencies(&mut self) {
        self.latencies.clear();
        self.next_latency = 0;
        self.latency_carried = 0;
    }

    /// Starts a new interval: counters reset. On probation, an interval of real requests
    /// without a failure ends it (a quiet one proves nothing, so probation goes on); after
    /// that, each clean interval takes one ejection off the count (so ejections lengthen
    /// only for repeat offenders). Latency samples too few to have been judged against
    /// `latency_volume` are carried into the next interval, for at most
    /// [`LATENCY_CARRY_INTERVALS`].
    fn new_interval(&mut self, latency_volume: u32) {
        if !self.is_ejected() && self.failures == 0 {
            if !self.probation {
                self.ejection_count = self.ejection_count.saturating_sub(1);
            } else if self.successes > 0 {
                self.probation = false;
            }
        }
        self.last_interval = (self.volume(), self.failures, self.p90());
        self.tripped = None;
        self.successes = 0;
        self.failures = 0;
        self.latency_carried += 1;
        if self.latency_judgeable(latency_volume) || self.latency_carried >= LATENCY_CARRY_INTERVALS
        {
            self.clear_latencies();
        }
    }
}

#[cfg(test)]
mod tests;

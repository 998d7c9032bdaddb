//! Choosing an endpoint: power of two choices over peak-EWMA latency (the default, as in
//! Linkerd), over in-flight requests (least-request), or round robin. Ejected endpoints and
//! endpoints an earlier attempt of the same request failed on are skipped; below the panic
//! threshold ejections are ignored rather than leaving too few endpoints to carry the load.
//!
//! Slow start, in every algorithm: an endpoint that joined the target less than the window
//! ago has a weight from [`SLOW_START_MIN_WEIGHT`] growing linearly to 1, and is passed over
//! with probability 1 − weight: round robin moves on to the next endpoint, P2C lets the
//! other of its pair win whatever the costs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use bulwark_api::policy::Algorithm;

use super::outlier;
use super::policy::BalancePolicy;
use crate::lock::lock;

/// Peak-EWMA latency estimate: a sample above the estimate replaces it at once (peak); below,
/// it is blended in with weight `1 − e^(−Δt/decay)`, so old latency fades over `decay`.
#[derive(Debug, Clone, Copy)]
pub struct Ewma {
    estimate_ns: f64,
    updated: Instant,
}

impl Ewma {
    /// An estimate that starts at `default_rtt`.
    pub fn new(default_rtt: Duration, now: Instant) -> Self {
        Self {
            estimate_ns: default_rtt.as_nanos() as f64,
            updated: now,
        }
    }

    /// Takes in one observed latency.
    pub fn observe(&mut self, rtt: Duration, now: Instant, decay: Duration) {
        let rtt = rtt.as_nanos() as f64;
        if rtt > self.estimate_ns {
            self.estimate_ns = rtt;
        } else {
            let w = weight(now.saturating_duration_since(self.updated), decay);
            self.estimate_ns = self.estimate_ns * w + rtt * (1.0 - w);
        }
        self.updated = now;
    }

    /// The estimate in nanoseconds.
    pub fn estimate_ns(&self) -> f64 {
        self.estimate_ns
    }
}

/// The share of the old estimate kept after `elapsed`.
fn weight(elapsed: Duration, decay: Duration) -> f64 {
    (-(elapsed.as_secs_f64()) / decay.as_secs_f64().max(1e-3)).exp()
}

/// The weight an endpoint starts its slow start with (Envoy's default minimum too).
pub const SLOW_START_MIN_WEIGHT: f64 = 0.1;

/// One endpoint of a target, with its load and health.
#[derive(Debug)]
pub struct Endpoint {
    /// Where it is.
    pub addr: SocketAddr,
    /// When it joined its target; none for the endpoints the target started with.
    pub joined: Option<Instant>,
    /// Requests in flight to it.
    pub in_flight: AtomicU32,
    /// Requests sent to it.
    pub requests: AtomicU64,
    /// Whether it is ejected: the outlier state's verdict, readable without its lock by
    /// every pick.
    ejected: AtomicBool,
    /// Latency estimate and outlier state.
    pub state: Mutex<EndpointState>,
}

/// The mutable part of an endpoint.
#[derive(Debug)]
pub struct EndpointState {
    /// Peak-EWMA latency.
    pub ewma: Ewma,
    /// Outlier detection.
    pub outlier: outlier::State,
}

impl Endpoint {
    /// A fresh endpoint, present since the target began.
    pub fn new(addr: SocketAddr, default_rtt: Duration, now: Instant) -> Self {
        Self {
            addr,
            joined: None,
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            ejected: AtomicBool::new(false),
            state: Mutex::new(EndpointState {
                ewma: Ewma::new(default_rtt, now),
                outlier: outlier::State::default(),
            }),
        }
    }

    /// An endpoint that joined its target at `now`: it slow-starts when the target has a
    /// window.
    pub fn joining(addr: SocketAddr, default_rtt: Duration, now: Instant) -> Self {
        Self {
            joined: Some(now),
            ..Self::new(addr, default_rtt, now)
        }
    }

    /// Its slow-start weight at `now` under `window`: 1 once ramped up (or with no window).
    pub fn weight(&self, window: Option<Duration>, now: Instant) -> f64 {
        match (self.joined, window) {
            (Some(joined), Some(w)) if !w.is_zero() => {
                let f = now.saturating_duration_since(joined).as_secs_f64() / w.as_secs_f64();
                if f >= 1.0 {
                    1.0
                } else {
                    f.max(SLOW_START_MIN_WEIGHT)
                }
            }
            _ => 1.0,
        }
    }

    /// Whether it is ejected now.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Mirrors the outlier state's verdict; called by whoever ejects or releases it,
    /// holding the state's lock.
    pub fn set_ejected(&self, ejected: bool) {
        self.ejected.store(ejected, Ordering::Relaxed);
    }

    /// Locks the mutable state (a poisoned lock still holds usable numbers).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, EndpointState> {
        lock(&self.state)
    }

    /// Peak-EWMA cost: the latency estimate, decayed to now, times the requests it would
    /// have to serve (in flight + this one).
    pub fn ewma_cost(&self, now: Instant, decay: Duration) -> f64 {
        let s = self.lock();
        let w = weight(now.saturating_duration_since(s.ewma.updated), decay);
        let est = s.ewma.estimate_ns() * w;
        est.max(1.0) * (self.in_flight.load(Ordering::Relaxed) as f64 + 1.0)
    }
}

/// Counts a request (or an opaque connection) in flight on an endpoint until dropped, however
/// it ends (a hedge's loser is dropped mid-flight).
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    /// Starts counting.
    pub fn start(e: &Arc<Endpoint>) -> Self {
        e.in_flight.fetch_add(1, Ordering::Relaxed);
        e.requests.fetch_add(1, Ordering::Relaxed);
        Self(e.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints to choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidates {
    /// Healthy endpoints only.
    Healthy,
    /// Too few are healthy: every endpoint, ejected ones included (panic mode).
    Panic,
}

/// Picks one endpoint. `exclude` lists addresses already tried by this request; they are
/// used again only when nothing else is left. `unit()` yields random numbers in [0, 1).
pub fn pick(
    endpoints: &[Arc<Endpoint>],
    exclude: &[SocketAddr],
    policy: &BalancePolicy,
    panic_threshold: u8,
    rr: &AtomicU64,
    now: Instant,
    mut unit: impl FnMut() -> f64,
) -> Option<(Arc<Endpoint>, Candidates)> {
    match endpoints {
        [] => return None,
        // No choice to make for a lone healthy endpoint. Only `maxEjectionPercent: 100`
        // ejects a lone one; the panic threshold then says whether it is still used.
        [only] if !only.is_ejected() => {
            return Some((only.clone(), Candidates::Healthy));
        }
        _ => {}
    }
    // The candidates are counted and then indexed, not collected: no allocation per pick.
    let healthy = endpoints.iter().filter(|e| !e.is_ejected()).count();
    let pool = if outlier::in_panic(endpoints.len(), healthy, panic_threshold) {
        Candidates::Panic
    } else {
        Candidates::Healthy
    };
    let in_pool = |e: &Endpoint| pool == Candidates::Panic || !e.is_ejected();
    let fresh = endpoints
        .iter()
        .filter(|e| in_pool(e) && !exclude.contains(&e.addr))
        .count();
    let is_candidate = |e: &Endpoint| in_pool(e) && (fresh == 0 || !exclude.contains(&e.addr));
    let n = match fresh {
        0 => endpoints.iter().filter(|e| in_pool(e)).count(),
        n => n,
    };
    // An ejection between the count and the lookup can shorten the list by one: any
    // endpoint is then as good an answer.
    let nth = |k: usize| {
        endpoints
            .iter()
            .filter(|e| is_candidate(e))
            .nth(k)
            .unwrap_or(&endpoints[0])
    };
    let chosen = match n {
        0 => return None,
        1 => nth(0),
        n => match policy.algorithm {
            Algorithm::RoundRobin => {
                // A ramping endpoint is passed over with probability 1 − weight, at most
                // once round the candidates.
                let start = rr.fetch_add(1, Ordering::Relaxed) as usize;
                let mut chosen = nth(start % n);
                if policy.slow_start.is_some() {
                    for k in 0..n {
                        let e = nth((start + k) % n);
                        let w = e.weight(policy.slow_start, now);
                        if w >= 1.0 || unit() < w {
                            chosen = e;
                            break;
                        }
                    }
                }
                chosen
            }
            Algorithm::PeakEwma | Algorithm::LeastRequest => {
                let a = ((unit() * n as f64) as usize).min(n - 1);
                let mut b = ((unit() * (n - 1) as f64) as usize).min(n - 2);
                if b >= a {
                    b += 1;
                }
                let (ea, eb) = (nth(a), nth(b));
                let cost = |e: &Endpoint| match policy.algorithm {
                    Algorithm::LeastRequest => e.in_flight.load(Ordering::Relaxed) as f64,
                    _ => e.ewma_cost(now, policy.decay),
                };
                // A ramping endpoint of the pair is admitted with probability = its
                // weight; one passed over loses to the other whatever the costs.
                let (in_a, in_b) = match policy.slow_start {
                    None => (true, true),
                    Some(_) => {
                        let mut admitted = |e: &Endpoint| {
                            let w = e.weight(policy.slow_start, now);
                            w >= 1.0 || unit() < w
                        };
                        (admitted(ea), admitted(eb))
                    }
                };
                match (in_a, in_b) {
                    (true, false) => ea,
                    (false, true) => eb,
                    _ if cost(eb) < cost(ea) => eb,
                    _ => ea,
                }
            }
        },
    };
    Some((chosen.clone(), pool))
}

#[cfg(test)]
mod tests;

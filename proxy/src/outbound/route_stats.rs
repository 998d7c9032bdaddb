//! What a target keeps per route for hedging: the hedge budget, and the latency samples
//! whose p95 is the hedge delay when the route names none.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::budget::Budget;
use super::policy::DEFAULT_BUDGET_WINDOW;
use crate::lock::lock;
use crate::map::FastMap;
use crate::random;

/// Latencies kept per route for the hedging delay (its p95).
const ROUTE_SAMPLES: usize = 512;
/// Samples a route needs before its p95 is trusted as a hedging delay.
const ROUTE_MIN_SAMPLES: usize = 20;
/// New samples between two computations of a route's p95: requests read the last one.
const P95_EVERY: usize = 32;

/// A target's per-route figures: the hedge budget and the latency samples.
#[derive(Debug, Default)]
pub struct RouteStats {
    budgets: Mutex<FastMap<String, Budget>>,
    latency: Mutex<FastMap<String, Samples>>,
}

/// One route's latency samples (a uniform reservoir once full) and their last p95.
#[derive(Debug, Default)]
struct Samples {
    us: Vec<u32>,
    /// Samples recorded since `p95` was computed.
    fresh: usize,
    p95: Option<u32>,
}

impl Samples {
    fn record(&mut self, us: u32) {
        if self.us.len() >= ROUTE_SAMPLES {
            let i = (random::unit() * ROUTE_SAMPLES as f64) as usize % ROUTE_SAMPLES;
            self.us[i] = us;
        } else {
            self.us.push(us);
        }
        self.fresh += 1;
        let first = self.p95.is_none() && self.us.len() >= ROUTE_MIN_SAMPLES;
        if first || (self.p95.is_some() && self.fresh >= P95_EVERY) {
            let mut v = self.us.clone();
            let i = (v.len() * 95 / 100).min(v.len() - 1);
            self.p95 = Some(*v.select_nth_unstable(i).1);
            self.fresh = 0;
        }
    }
}

impl RouteStats {
    /// Counts one request into a route's hedge budget (`take` false) or takes one hedge
    /// from it (`take` true), saying whether that is allowed.
    pub fn budget(&self, route: &str, ratio: f64, now: Instant, take: bool) -> bool {
        let window = DEFAULT_BUDGET_WINDOW;
        let mut map = lock(&self.budgets);
        if !map.contains_key(route) {
            map.insert(route.to_string(), Budget::new(ratio, 0, window));
        }
        let Some(b) = map.get_mut(route) else {
            return false;
        };
        b.set(ratio, 0, window);
        if take {
            b.withdraw(now)
        } else {
            b.deposit(now);
            true
        }
    }

    /// Records a successful request's latency on its route (for the hedging delay).
    pub fn record_latency(&self, route: &str, latency: Duration) {
        let us = latency.as_micros().min(u32::MAX as u128) as u32;
        let mut map = lock(&self.latency);
        match map.get_mut(route) {
            Some(s) => s.record(us),
            None => map.entry(route.to_string()).or_default().record(us),
        }
    }

    /// The route's observed p95, once it has enough samples; computed every
    /// [`P95_EVERY`] samples, not per request.
    pub fn p95(&self, route: &str) -> Option<Duration> {
        let us = lock(&self.latency).get(route)?.p95?;
        Some(Duration::from_micros(u64::from(us)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p95_appears_with_enough_samples_and_follows_new_ones() {
        let stats = RouteStats::default();
        for _ in 0..ROUTE_MIN_SAMPLES - 1 {
            stats.record_latency("r", Duration::from_millis(10));
        }
        assert_eq!(stats.p95("r"), None, "too few samples");
        stats.record_latency("r", Duration::from_millis(10));
        assert_eq!(stats.p95("r"), Some(Duration::from_millis(10)));
        // The reservoir fills with slower answers: the p95 follows within P95_EVERY.
        for _ in 0..ROUTE_SAMPLES * 4 {
            stats.record_latency("r", Duration::from_millis(50));
        }
        assert_eq!(stats.p95("r"), Some(Duration::from_millis(50)));
        assert_eq!(stats.p95("other"), None);
    }
}

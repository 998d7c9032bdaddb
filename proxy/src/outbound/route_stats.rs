//! What a target keeps per route for hedging: the hedge budget, and the latency samples
//! whose p95 is the hedge delay when the route names none.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::budget::Budget;
use super::policy::DEFAULT_BUDGET_WINDOW;
use crate::lock::lock;
use crate::random;

/// Latencies kept per route for the hedging delay (its p95).
const ROUTE_SAMPLES: usize = 512;
/// Samples a route needs before its p95 is trusted as a hedging delay.
const ROUTE_MIN_SAMPLES: usize = 20;

/// A target's per-route figures: the hedge budget and the latency samples.
#[derive(Debug, Default)]
pub struct RouteStats {
    budgets: Mutex<HashMap<String, Budget>>,
    latency: Mutex<HashMap<String, Vec<u32>>>,
}

impl RouteStats {
    /// Counts one request into a route's hedge budget (`take` false) or takes one hedge
    /// from it (`take` true), saying whether that is allowed.
    pub fn budget(&self, route: &str, ratio: f64, now: Instant, take: bool) -> bool {
        let window = DEFAULT_BUDGET_WINDOW;
        let mut map = lock(&self.budgets);
        let b = map
            .entry(route.to_string())
            .or_insert_with(|| Budget::new(ratio, 0, window));
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
        let mut map = lock(&self.latency);
        if !map.contains_key(route) {
            map.insert(route.to_string(), Vec::new());
        }
        let Some(v) = map.get_mut(route) else { return };
        let us = latency.as_micros().min(u32::MAX as u128) as u32;
        if v.len() >= ROUTE_SAMPLES {
            let i = (random::unit() * ROUTE_SAMPLES as f64) as usize % ROUTE_SAMPLES;
            v[i] = us;
        } else {
            v.push(us);
        }
    }

    /// The route's observed p95, once it has enough samples.
    pub fn p95(&self, route: &str) -> Option<Duration> {
        let map = lock(&self.latency);
        let v = map.get(route)?;
        if v.len() < ROUTE_MIN_SAMPLES {
            return None;
        }
        let mut v = v.clone();
        let i = (v.len() * 95 / 100).min(v.len() - 1);
        Some(Duration::from_micros(*v.select_nth_unstable(i).1 as u64))
    }
}

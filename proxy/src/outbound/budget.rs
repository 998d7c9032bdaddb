//! The retry budget (and, per route, the hedge budget): a sliding window in which retries
//! may add at most a ratio of the requests plus a floor per second, so retries cannot turn
//! an outage into a denial of service.

use std::time::Duration;

use tokio::time::Instant;

/// Slots the budget window is divided into.
const SLOTS: usize = 10;

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
mod tests {
    use super::*;

    #[test]
    fn budget_allows_ratio_of_requests_plus_the_floor() {
        let t0 = Instant::now();
        let mut b = Budget::new(0.2, 1, Duration::from_secs(10));
        // Floor: 1/s over a 10 s window = 10 retries with no traffic at all.
        let floor = (0..100).filter(|_| b.withdraw(t0)).count();
        assert_eq!(floor, 10);
        for _ in 0..100 {
            b.deposit(t0);
        }
        let more = (0..100).filter(|_| b.withdraw(t0)).count();
        assert_eq!(more, 20, "20 % of 100 requests");
        // The window slides: 11 s later the old counts are gone and the floor is back.
        let later = t0 + Duration::from_secs(11);
        let again = (0..100).filter(|_| b.withdraw(later)).count();
        assert_eq!(again, 10);
    }

    #[test]
    fn bound_holds_over_a_long_run_with_every_request_failing() {
        // Every request is retried if the budget allows: retries ≤ ratio × requests + floor × time.
        let t0 = Instant::now();
        let mut b = Budget::new(0.2, 10, Duration::from_secs(10));
        let (mut requests, mut retries) = (0u64, 0u64);
        for ms in 0..30_000u64 {
            let now = t0 + Duration::from_millis(ms);
            b.deposit(now);
            requests += 1;
            if b.withdraw(now) {
                retries += 1;
            }
        }
        let bound = 0.2 * requests as f64 + 10.0 * 30.0 + 100.0;
        assert!(
            (retries as f64) <= bound,
            "{retries} retries for {requests} requests"
        );
        assert!(
            retries as f64 >= 0.2 * requests as f64,
            "the budget is not stingier than its ratio"
        );
    }
}

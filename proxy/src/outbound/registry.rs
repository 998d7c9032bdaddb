//! The target registry: every target's run-time state across snapshots. A new snapshot's
//! targets get their existing state (updated in place) or a fresh one; the state of a
//! target that is gone is dropped and its DNS refresh stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::time::Instant;

use super::dns::{self, Resolver};
use super::policy::Target;
use super::report::{self, TargetReport};
use super::target::TargetState;
use crate::config::DnsConfig;
use crate::lock::lock;
use crate::metrics::{Metrics, TargetGauges};

/// Every target's run-time state, kept across snapshots and keyed by target, so a policy
/// edit neither forgets ejections nor resets budgets.
#[derive(Debug)]
pub struct Registry {
    states: Mutex<HashMap<String, Arc<TargetState>>>,
    dns: DnsConfig,
    /// Built on the first hostname endpoint: most proxies never need one, and it costs
    /// memory.
    resolver: OnceLock<Option<Resolver>>,
    max_endpoints: usize,
    metrics: Arc<Metrics>,
}

impl Registry {
    /// An empty registry; `dns` configures the resolver, built when a hostname endpoint first needs
    /// it; a snapshot may name at most `max_endpoints` endpoints.
    pub fn new(dns: DnsConfig, max_endpoints: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            states: Mutex::new(HashMap::new()),
            dns,
            resolver: OnceLock::new(),
            max_endpoints,
            metrics,
        }
    }

    /// The most endpoints a snapshot may name (`--max-policy-endpoints`).
    pub fn max_endpoints(&self) -> usize {
        self.max_endpoints
    }

    fn resolver(&self) -> Option<Resolver> {
        self.resolver
            .get_or_init(|| {
                let d = &self.dns;
                Resolver::new(&d.servers, d.min_refresh, d.max_refresh)
                    .inspect_err(
                        |e| tracing::error!(error = %e, "hostname endpoints will not be resolved"),
                    )
                    .ok()
            })
            .clone()
    }

    /// The state of every target of `targets`, in the same order: existing state updated,
    /// new state created (with its DNS refresh), state of vanished targets dropped.
    pub fn states_for(&self, targets: &[Arc<Target>]) -> Vec<Arc<TargetState>> {
        let mut states = lock(&self.states);
        let mut next = HashMap::new();
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            let state = match states.remove(&t.key) {
                Some(s) => {
                    let dns_changed = dns::specs(&s.target.load()) != dns::specs(t);
                    s.update(t.clone());
                    if dns_changed {
                        dns::start(self.resolver(), &s);
                    }
                    s
                }
                None => {
                    let s = Arc::new(TargetState::new(t.clone(), self.metrics.clone()));
                    dns::start(self.resolver(), &s);
                    s
                }
            };
            next.insert(t.key.clone(), state.clone());
            out.push(state);
        }
        for (_, gone) in states.drain() {
            if let Some(c) = lock(&gone.dns).take() {
                c.cancel();
            }
        }
        *states = next;
        out
    }

    /// Every target's `/outliers` report.
    pub fn report(&self) -> Vec<TargetReport> {
        let now = Instant::now();
        let mut v: Vec<TargetReport> = lock(&self.states)
            .values()
            .filter(|s| !s.target.load().endpoints.is_empty())
            .map(|s| report::of(s, now))
            .collect();
        v.sort_by(|a, b| a.target.cmp(&b.target));
        v
    }

    /// Every target's gauges for `/metrics`, sorted by target.
    pub fn gauges(&self) -> Vec<TargetGauges> {
        let now = Instant::now();
        let mut v: Vec<TargetGauges> = lock(&self.states)
            .values()
            .map(|s| {
                let has_endpoints = !s.target.load().endpoints.is_empty();
                let report = has_endpoints.then(|| report::of(s, now));
                let count = |r: &TargetReport, state| {
                    r.endpoints.iter().filter(|e| e.state == state).count()
                };
                TargetGauges {
                    target: s.target.load().key.clone(),
                    endpoints: report.as_ref().map(|r| {
                        [
                            count(r, "healthy"),
                            count(r, "probation"),
                            count(r, "ejected"),
                        ]
                    }),
                    panic: report.as_ref().is_some_and(|r| r.panic),
                    bulkhead_active: s.bulkhead().map(|b| b.active()),
                }
            })
            .collect();
        v.sort_by(|a, b| a.target.cmp(&b.target));
        v
    }
}

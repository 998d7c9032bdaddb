//! One target's run-time state: its endpoints (with their latency estimates and outlier
//! state), the retry budget, the hedge state and the bulkhead. Kept across snapshots by
//! the [`super::registry::Registry`], so a policy edit forgets nothing it learnt.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bulwark_api::policy::Algorithm;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::balance::{self, Candidates, Endpoint};
use super::budget::Budget;
use super::bulkhead::Bulkhead;
use super::outlier;
use super::policy::{EndpointSpec, Target};
use super::route_stats::RouteStats;
use crate::lock::lock;
use crate::metrics::{Metrics, Resilience};
use crate::random;

/// One target's run-time state. Kept across snapshots while the target exists, so a policy
/// edit does not forget latency, ejections or budgets.
#[derive(Debug)]
pub struct TargetState {
    /// The target as of the latest snapshot.
    pub target: ArcSwap<Target>,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    resolved: Mutex<HashMap<(String, u16), Vec<SocketAddr>>>,
    /// Every address the hostname endpoints resolve to now, for lookups by address.
    resolved_addrs: ArcSwap<HashSet<SocketAddr>>,
    rr: AtomicU64,
    next_evaluation: Mutex<Option<Instant>>,
    /// Held while an ejection is decided, so two at once cannot both pass the cap.
    ejecting: Mutex<()>,
    budget: Mutex<Budget>,
    /// Hedge budgets and the route latencies that set hedge delays.
    pub hedges: RouteStats,
    bulkhead: ArcSwap<Option<Arc<Bulkhead>>>,
    in_panic: AtomicBool,
    /// Its first endpoints have been set.
    started: AtomicBool,
    /// Cancels the DNS refresh of its hostname endpoints.
    pub(super) dns: Mutex<Option<CancellationToken>>,
    pub(super) metrics: Arc<Metrics>,
}

impl TargetState {
    /// Fresh state for `target`: endpoints unmeasured, budgets empty.
    pub fn new(target: Arc<Target>, metrics: Arc<Metrics>) -> Self {
        let b = &target.budget;
        let state = Self {
            budget: Mutex::new(Budget::new(b.ratio, b.min_per_second, b.window)),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            resolved: Mutex::new(HashMap::new()),
            resolved_addrs: ArcSwap::from_pointee(Default::default()),
            rr: AtomicU64::new(0),
            next_evaluation: Mutex::new(None),
            ejecting: Mutex::new(()),
            hedges: RouteStats::default(),
            bulkhead: ArcSwap::from_pointee(target.limits.map(|l| Arc::new(Bulkhead::new(l)))),
            in_panic: AtomicBool::new(false),
            started: AtomicBool::new(false),
            dns: Mutex::new(None),
            target: ArcSwap::new(target),
            metrics,
        };
        state.rebuild_endpoints();
        state
    }

    /// Takes a new version of the target: policy swapped, endpoints reconciled (an endpoint
    /// that stays keeps its latency and health).
    pub(super) fn update(&self, target: Arc<Target>) {
        let old = self.target.load_full();
        let b = &target.budget;
        lock(&self.budget).set(b.ratio, b.min_per_second, b.window);
        if old.limits != target.limits {
            match (self.bulkhead(), target.limits) {
                (Some(b), Some(l)) => b.resize(l),
                (_, l) => self
                    .bulkhead
                    .store(Arc::new(l.map(|l| Arc::new(Bulkhead::new(l))))),
            }
        }
        self.target.store(target);
        self.rebuild_endpoints();
    }

    /// The endpoint list from the literal addresses and the latest DNS answers.
    fn rebuild_endpoints(&self) {
        let resolved = lock(&self.resolved);
        let target = self.target.load();
        let mut addrs = BTreeSet::new();
        let mut from_dns = HashSet::new();
        for e in &target.endpoints {
            match e {
                EndpointSpec::Addr(a) => {
                    addrs.insert(*a);
                }
                EndpointSpec::Dns { host, port } => {
                    if let Some(v) = resolved.get(&(host.clone(), *port)) {
                        addrs.extend(v.iter().copied());
                        from_dns.extend(v.iter().copied());
                    }
                }
            }
        }
        // The lock on the answers stays held until the list is stored: two refreshes at once
        // would otherwise race, and the later store could drop the other's answer.
        self.resolved_addrs.store(Arc::new(from_dns));
        let old = self.endpoints.load();
        let now = Instant::now();
        // The endpoints a target starts with are at full weight; later ones join (and slow
        // start, when the target has a window).
        let first = old.is_empty() && !self.started.swap(true, Ordering::Relaxed);
        let rtt = target.balance.default_rtt;
        let next: Vec<Arc<Endpoint>> = addrs
            .into_iter()
            .map(|a| {
                old.iter()
                    .find(|e| e.addr == a)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(if first {
                            Endpoint::new(a, rtt, now)
                        } else {
                            Endpoint::joining(a, rtt, now)
                        })
                    })
            })
            .collect();
        self.endpoints.store(Arc::new(next));
        drop(resolved);
    }

    /// Whether `addr` is one a hostname endpoint resolves to now.
    pub fn has_resolved_address(&self, addr: SocketAddr) -> bool {
        self.resolved_addrs.load().contains(&addr)
    }

    /// The endpoints right now.
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// The bulkhead, if the target has limits.
    pub fn bulkhead(&self) -> Option<Arc<Bulkhead>> {
        self.bulkhead.load().as_ref().clone()
    }

    /// Counts one request into the retry budget.
    pub fn deposit(&self, now: Instant) {
        lock(&self.budget).deposit(now);
    }

    /// Takes one retry from the budget.
    pub fn withdraw_retry(&self, now: Instant) -> bool {
        lock(&self.budget).withdraw(now)
    }

    /// Counts one request into a route's hedge budget and says whether a hedge is allowed.
    /// Picks an endpoint not in `exclude` (when possible). Runs due outlier work first.
    pub fn pick(&self, exclude: &[SocketAddr], now: Instant) -> Option<Arc<Endpoint>> {
        self.pick_as(exclude, now, None)
    }

    /// Picks an endpoint for an opaque connection: round robin if configured, else power of
    /// two choices over open connections (a connect time says little about the load a
    /// connection will bring, so latency is not used).
    pub fn pick_connection(&self, exclude: &[SocketAddr], now: Instant) -> Option<Arc<Endpoint>> {
        let algorithm = match self.target.load().balance.algorithm {
            Algorithm::RoundRobin => Algorithm::RoundRobin,
            _ => Algorithm::LeastRequest,
        };
        self.pick_as(exclude, now, Some(algorithm))
    }

    fn pick_as(
        &self,
        exclude: &[SocketAddr],
        now: Instant,
        algorithm: Option<Algorithm>,
    ) -> Option<Arc<Endpoint>> {
        self.maintain(now);
        let target = self.target.load();
        let endpoints = self.endpoints.load();
        let mut balance = target.balance;
        if let Some(a) = algorithm {
            balance.algorithm = a;
        }
        let (ep, pool) = balance::pick(
            &endpoints,
            exclude,
            &balance,
            target.outlier.panic_threshold,
            &self.rr,
            now,
            random::unit,
        )?;
        let panic = pool == Candidates::Panic;
        if self.in_panic.swap(panic, Ordering::Relaxed) != panic {
            if panic {
                tracing::warn!(target = %target.key, threshold = target.outlier.panic_threshold, "too few healthy endpoints: ignoring ejections (panic mode)");
            } else {
                tracing::info!(target = %target.key, "enough healthy endpoints again: ejections honoured");
            }
        }
        if panic {
            self.metrics
                .count(Resilience::BalancerPanic, &target.key, "panic");
        }
        Some(ep)
    }

    /// Whether the target is in panic mode.
    pub fn panicking(&self) -> bool {
        self.in_panic.load(Ordering::Relaxed)
    }

    /// Ends due ejections and, once per interval, judges the endpoints against each other.
    pub fn maintain(&self, now: Instant) {
        let target = self.target.load();
        let policy = &target.outlier;
        let endpoints = self.endpoints.load();
        for e in endpoints.iter().filter(|e| e.is_ejected()) {
            let mut s = e.lock();
            let released = s.outlier.release_if_due(now);
            if released {
                e.set_ejected(false);
            }
            drop(s);
            if released {
                tracing::info!(target = %target.key, endpoint = %e.addr, "endpoint back from ejection, on probation");
                self.metrics
                    .count(Resilience::OutlierReturns, &target.key, "probation");
            }
        }
        {
            let mut next = lock(&self.next_evaluation);
            match *next {
                None => {
                    *next = Some(now + policy.interval);
                    return;
                }
                Some(t) if t > now => return,
                Some(_) => *next = Some(now + policy.interval),
            }
        }
        let mut guards: Vec<_> = endpoints.iter().map(|e| e.lock()).collect();
        let mut states: Vec<&mut outlier::State> =
            guards.iter_mut().map(|g| &mut g.outlier).collect();
        let verdicts = outlier::evaluate(&mut states, policy);
        drop(states);
        drop(guards);
        for (i, reason, detail) in verdicts {
            if let Some(e) = endpoints.get(i) {
                self.try_eject(e, reason, detail, now);
            }
        }
    }

    /// Feeds one outcome into the endpoint's outlier state (and, with `rtt`, its latency
    /// estimate), and ejects it if a detector trips.
    pub fn record_outcome(
        &self,
        ep: &Endpoint,
        outcome: outlier::Health,
        latency: Duration,
        rtt: Option<Duration>,
    ) {
        let target = self.target.load();
        let now = Instant::now();
        let tripped = {
            let mut s = ep.lock();
            if let Some(rtt) = rtt {
                s.ewma.observe(rtt, now, target.balance.decay);
            }
            s.outlier.observe(outcome, latency, &target.outlier)
        };
        if let Some((reason, detail)) = tripped {
            self.try_eject(ep, reason, detail, now);
        }
    }

    /// Ejects `ep` unless that would pass `maxEjectionPercent`. Logs and counts either way.
    pub fn try_eject(&self, ep: &Endpoint, reason: outlier::Reason, detail: String, now: Instant) {
        let target = self.target.load();
        let policy = &target.outlier;
        let endpoints = self.endpoints.load();
        let _deciding = lock(&self.ejecting);
        let ejected = endpoints.iter().filter(|e| e.is_ejected()).count();
        if ejected >= outlier::ejection_cap(endpoints.len(), policy.max_ejection_percent) {
            tracing::warn!(target = %target.key, endpoint = %ep.addr, reason = reason.label(), %detail, max_ejection_percent = policy.max_ejection_percent, "outlier not ejected: the ejection cap is reached");
            self.metrics.count(
                Resilience::OutlierEjectionsSkipped,
                &target.key,
                reason.label(),
            );
            return;
        }
        let mut s = ep.lock();
        if s.outlier.is_ejected() {
            return;
        }
        s.outlier
            .eject(reason, detail.clone(), now, policy, random::unit());
        ep.set_ejected(true);
        let length = s
            .outlier
            .ejected
            .as_ref()
            .map(|e| e.until - now)
            .unwrap_or_default();
        let count = s.outlier.ejection_count;
        let first = s
            .outlier
            .ejected
            .as_ref()
            .and_then(|e| e.first.as_ref())
            .map(|c| c.reason.label());
        drop(s);
        tracing::warn!(
            event = "ejection",
            target = %target.key,
            endpoint = %ep.addr,
            reason = reason.label(),
            %detail,
            first_reason = first,
            ejection_count = count,
            ejected_for_ms = length.as_millis() as u64,
            "endpoint ejected"
        );
        self.metrics
            .count(Resilience::OutlierEjections, &target.key, reason.label());
    }

    /// Takes a DNS answer for `host:port`; says whether it changed the endpoints.
    pub(super) fn set_resolved(&self, host: &str, port: u16, addrs: Vec<SocketAddr>) -> bool {
        let mut r = lock(&self.resolved);
        let key = (host.to_string(), port);
        if r.get(&key) == Some(&addrs) {
            return false;
        }
        r.insert(key, addrs);
        drop(r);
        self.rebuild_endpoints();
        true
    }
}

//! Outbound policy at run time. [`route`] decides which target a request is for and with
//! which policy; this module keeps each target's state across snapshots (endpoints with
//! their latency and health, the retry and hedge budgets, the bulkhead) and [`call`] runs
//! one request through it: bulkhead, balancing, timeouts, retries, hedging, outlier
//! detection.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use arc_swap::ArcSwap;
use bulwark_api::policy::Algorithm;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

pub mod balance;
pub mod call;
pub mod outlier;
pub mod replay;
pub mod resolve;
pub mod retry;
pub mod route;

use balance::{Endpoint, Pool};
use resolve::Resolver;
use retry::Budget;
use route::{EndpointSpec, LimitPolicy, Target};

/// Latencies kept per route for the hedging delay (its p95).
const ROUTE_SAMPLES: usize = 512;
/// Samples a route needs before its p95 is trusted as a hedging delay.
const ROUTE_MIN_SAMPLES: usize = 20;

/// A random number in [0, 1) from a per-thread xorshift generator: cheap, and good enough
/// for choosing endpoints and jittering delays.
pub fn unit() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static SEED: Cell<u64> = Cell::new(
            (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                ^ (std::process::id() as u64) << 32)
                | 1,
        );
    }
    SEED.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Why the bulkhead turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Every slot busy and the queue full.
    QueueFull,
    /// Waited `queueTimeout` without a slot.
    QueueTimeout,
    /// The request's own deadline came first while it waited.
    Deadline,
}

/// Bounds concurrent and queued requests to one target.
#[derive(Debug)]
pub struct Bulkhead {
    limits: Mutex<LimitPolicy>,
    slots: Arc<Semaphore>,
    pending: AtomicU64,
    /// Slots held by requests (not by a shrink taking slots back).
    active: Arc<AtomicU64>,
}

/// A request's place in a bulkhead, given back when dropped (with the response body).
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    active: Arc<AtomicU64>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Bulkhead {
    fn new(limits: LimitPolicy) -> Self {
        Self {
            limits: Mutex::new(limits),
            slots: Arc::new(Semaphore::new(limits.max_concurrent as usize)),
            pending: AtomicU64::new(0),
            active: Arc::new(AtomicU64::new(0)),
        }
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        self.active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Slot {
            _permit: permit,
            active: self.active.clone(),
        }
    }

    /// A slot, at once, after queueing, or the reason there is none. The wait ends at
    /// `queueTimeout` or at `until` (the request's deadline), whichever comes first: time in
    /// the queue is part of the request's time.
    pub async fn acquire(&self, until: Option<Instant>) -> Result<Slot, Shed> {
        use std::sync::atomic::Ordering;
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(self.slot(p));
        }
        let limits = *lock(&self.limits);
        if self.pending.fetch_add(1, Ordering::AcqRel) >= limits.max_pending as u64 {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(Shed::QueueFull);
        }
        let queue_end = Instant::now() + limits.queue_timeout;
        let (end, shed) = match until {
            Some(u) if u < queue_end => (u, Shed::Deadline),
            _ => (queue_end, Shed::QueueTimeout),
        };
        let r = tokio::time::timeout_at(end, self.slots.clone().acquire_owned()).await;
        self.pending.fetch_sub(1, Ordering::AcqRel);
        match r {
            Ok(Ok(p)) => Ok(self.slot(p)),
            _ => Err(shed),
        }
    }

    /// Requests holding a slot (during a shrink, possibly more than the new limit).
    pub fn active(&self) -> usize {
        self.active.load(std::sync::atomic::Ordering::Relaxed) as usize
    }

    /// Takes new limits in place, so the requests in flight keep counting. More slots are
    /// free at once; fewer are taken back as requests finish (until then new requests wait,
    /// as the smaller limit says).
    fn resize(&self, next: LimitPolicy) {
        let old = std::mem::replace(&mut *lock(&self.limits), next).max_concurrent;
        let new = next.max_concurrent;
        if new > old {
            self.slots.add_permits((new - old) as usize);
        } else if new < old {
            let (slots, n) = (self.slots.clone(), old - new);
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        if let Ok(p) = slots.acquire_many_owned(n).await {
                            p.forget();
                        }
                    });
                }
                // No runtime (a test building state by hand): take back what is free.
                Err(_) => {
                    slots.forget_permits(n as usize);
                }
            }
        }
    }
}

/// One target's run-time state. Kept across snapshots while the target exists, so a policy
/// edit does not forget latency, ejections or budgets.
#[derive(Debug)]
pub struct TargetState {
    /// The target as of the latest snapshot.
    pub target: ArcSwap<Target>,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    resolved: Mutex<HashMap<(String, u16), Vec<SocketAddr>>>,
    /// Every address the hostname endpoints resolve to now, for lookups by address.
    resolved_addrs: ArcSwap<std::collections::HashSet<SocketAddr>>,
    rr: AtomicU64,
    next_evaluation: Mutex<Option<Instant>>,
    /// Held while an ejection is decided, so two at once cannot both pass the cap.
    ejecting: Mutex<()>,
    budget: Mutex<Budget>,
    hedge_budgets: Mutex<HashMap<String, Budget>>,
    bulkhead: ArcSwap<Option<Arc<Bulkhead>>>,
    route_latency: Mutex<HashMap<String, Vec<u32>>>,
    in_panic: std::sync::atomic::AtomicBool,
    dns: Mutex<Option<CancellationToken>>,
    metrics: Arc<Metrics>,
}

impl TargetState {
    fn new(target: Arc<Target>, metrics: Arc<Metrics>) -> Self {
        let b = &target.budget;
        let state = Self {
            budget: Mutex::new(Budget::new(b.ratio, b.min_per_second, b.window)),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            resolved: Mutex::new(HashMap::new()),
            resolved_addrs: ArcSwap::from_pointee(Default::default()),
            rr: AtomicU64::new(0),
            next_evaluation: Mutex::new(None),
            ejecting: Mutex::new(()),
            hedge_budgets: Mutex::new(HashMap::new()),
            bulkhead: ArcSwap::from_pointee(target.limits.map(|l| Arc::new(Bulkhead::new(l)))),
            route_latency: Mutex::new(HashMap::new()),
            in_panic: std::sync::atomic::AtomicBool::new(false),
            dns: Mutex::new(None),
            target: ArcSwap::new(target),
            metrics,
        };
        state.rebuild_endpoints();
        state
    }

    /// Takes a new version of the target: policy swapped, endpoints reconciled (an endpoint
    /// that stays keeps its latency and health).
    fn update(&self, target: Arc<Target>) {
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
        let mut from_dns = std::collections::HashSet::new();
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
        let next: Vec<Arc<Endpoint>> = addrs
            .into_iter()
            .map(|a| {
                old.iter()
                    .find(|e| e.addr == a)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(a, target.balance.default_rtt, now)))
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
    pub fn hedge_budget(&self, route: &str, ratio: f64, now: Instant, take: bool) -> bool {
        let window = route::DEFAULT_BUDGET_WINDOW;
        let mut map = lock(&self.hedge_budgets);
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
    pub fn record_route_latency(&self, route: &str, latency: Duration) {
        let mut map = lock(&self.route_latency);
        if !map.contains_key(route) {
            map.insert(route.to_string(), Vec::new());
        }
        let Some(v) = map.get_mut(route) else { return };
        let us = latency.as_micros().min(u32::MAX as u128) as u32;
        if v.len() >= ROUTE_SAMPLES {
            let i = (unit() * ROUTE_SAMPLES as f64) as usize % ROUTE_SAMPLES;
            v[i] = us;
        } else {
            v.push(us);
        }
    }

    /// The route's observed p95, once it has enough samples.
    pub fn route_p95(&self, route: &str) -> Option<Duration> {
        let map = lock(&self.route_latency);
        let v = map.get(route)?;
        if v.len() < ROUTE_MIN_SAMPLES {
            return None;
        }
        let mut v = v.clone();
        let i = (v.len() * 95 / 100).min(v.len() - 1);
        Some(Duration::from_micros(*v.select_nth_unstable(i).1 as u64))
    }

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
            unit,
        )?;
        let panic = pool == Pool::Panic;
        if self
            .in_panic
            .swap(panic, std::sync::atomic::Ordering::Relaxed)
            != panic
        {
            if panic {
                tracing::warn!(target = %target.key, threshold = target.outlier.panic_threshold, "too few healthy endpoints: ignoring ejections (panic mode)");
            } else {
                tracing::info!(target = %target.key, "enough healthy endpoints again: ejections honoured");
            }
        }
        if panic {
            self.metrics.count("balancer_panic", &target.key, "panic");
        }
        Some(ep)
    }

    /// Whether the target is in panic mode.
    pub fn panicking(&self) -> bool {
        self.in_panic.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ends due ejections and, once per interval, judges the endpoints against each other.
    pub fn maintain(&self, now: Instant) {
        let target = self.target.load();
        let policy = &target.outlier;
        let endpoints = self.endpoints.load();
        for e in endpoints.iter() {
            if e.lock().outlier.release_if_due(now) {
                tracing::info!(target = %target.key, endpoint = %e.addr, "endpoint back from ejection, on probation");
                self.metrics
                    .count("outlier_returns", &target.key, "probation");
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
        outcome: outlier::Outcome,
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
        let ejected = endpoints
            .iter()
            .filter(|e| e.lock().outlier.is_ejected())
            .count();
        if ejected >= outlier::ejection_cap(endpoints.len(), policy.max_ejection_percent) {
            tracing::warn!(target = %target.key, endpoint = %ep.addr, reason = reason.label(), %detail, max_ejection_percent = policy.max_ejection_percent, "outlier not ejected: the ejection cap is reached");
            self.metrics
                .count("outlier_ejections_skipped", &target.key, reason.label());
            return;
        }
        let mut s = ep.lock();
        if s.outlier.is_ejected() {
            return;
        }
        s.outlier.eject(reason, detail.clone(), now, policy, unit());
        let length = s
            .outlier
            .ejected
            .as_ref()
            .map(|e| e.until - now)
            .unwrap_or_default();
        let count = s.outlier.ejection_count;
        drop(s);
        tracing::warn!(
            event = "ejection",
            target = %target.key,
            endpoint = %ep.addr,
            reason = reason.label(),
            %detail,
            ejection_count = count,
            ejected_for_ms = length.as_millis() as u64,
            "endpoint ejected"
        );
        self.metrics
            .count("outlier_ejections", &target.key, reason.label());
    }

    /// This target's endpoints as `/outliers` shows them.
    pub fn report(&self, now: Instant) -> TargetReport {
        self.maintain(now);
        let target = self.target.load();
        let endpoints = self
            .endpoints
            .load()
            .iter()
            .map(|e| {
                let s = e.lock();
                let o = &s.outlier;
                let state = if o.is_ejected() {
                    "ejected"
                } else if o.probation {
                    "probation"
                } else {
                    "healthy"
                };
                let ejection = o
                    .ejected
                    .as_ref()
                    .or(o.last.as_ref())
                    .map(|j| EjectionReport {
                        reason: j.reason.label(),
                        detail: j.detail.clone(),
                        counters: j.counters,
                        ejected_ago_ms: now.saturating_duration_since(j.since).as_millis() as u64,
                        next_probe_in_ms: o
                            .ejected
                            .as_ref()
                            .map(|j| j.until.saturating_duration_since(now).as_millis() as u64),
                    });
                EndpointReport {
                    address: e.addr.to_string(),
                    state,
                    ejection_count: o.ejection_count,
                    total_ejections: o.total_ejections,
                    requests: e.requests.load(std::sync::atomic::Ordering::Relaxed),
                    in_flight: e.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                    ewma_ms: s.ewma.estimate_ns() / 1e6,
                    interval_requests: o.volume(),
                    ejection,
                }
            })
            .collect();
        TargetReport {
            target: target.key.clone(),
            panic: self.panicking(),
            endpoints,
        }
    }

    fn set_resolved(&self, host: &str, port: u16, addrs: Vec<SocketAddr>) -> bool {
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

/// One target in `/outliers`.
#[derive(Debug, Serialize)]
pub struct TargetReport {
    /// `Backend/NS/NAME` or `Service/...`.
    pub target: String,
    /// Whether ejections are being ignored for want of healthy endpoints.
    pub panic: bool,
    /// Its endpoints.
    pub endpoints: Vec<EndpointReport>,
}

/// One endpoint in `/outliers`.
#[derive(Debug, Serialize)]
pub struct EndpointReport {
    /// `ip:port`.
    pub address: String,
    /// healthy, ejected or probation.
    pub state: &'static str,
    /// Ejections that still lengthen the next one.
    pub ejection_count: u32,
    /// Ejections ever.
    pub total_ejections: u64,
    /// Requests sent to it.
    pub requests: u64,
    /// Requests in flight.
    pub in_flight: u32,
    /// Peak-EWMA latency estimate.
    pub ewma_ms: f64,
    /// Requests in the current outlier interval.
    pub interval_requests: u32,
    /// The ejection in force, or the last one.
    pub ejection: Option<EjectionReport>,
}

/// An ejection in `/outliers`.
#[derive(Debug, Serialize)]
pub struct EjectionReport {
    /// Why.
    pub reason: &'static str,
    /// The numbers that tripped it, in words.
    pub detail: String,
    /// The endpoint's counters at the trip, as numbers.
    pub counters: outlier::Counters,
    /// How long ago it began.
    pub ejected_ago_ms: u64,
    /// When the endpoint is tried again (absent once it is back).
    pub next_probe_in_ms: Option<u64>,
}

/// Every target's state, kept across snapshots.
#[derive(Debug)]
pub struct Router {
    states: Mutex<HashMap<String, Arc<TargetState>>>,
    dns: crate::config::DnsConfig,
    /// Built on the first hostname endpoint: most proxies never need one, and it costs
    /// memory.
    resolver: std::sync::OnceLock<Option<Resolver>>,
    max_endpoints: usize,
    metrics: Arc<Metrics>,
}

impl Router {
    /// A router; `dns` configures the resolver, built when a hostname endpoint first needs
    /// it; a snapshot may name at most `max_endpoints` endpoints.
    pub fn new(dns: crate::config::DnsConfig, max_endpoints: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            states: Mutex::new(HashMap::new()),
            dns,
            resolver: std::sync::OnceLock::new(),
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
    pub fn attach(&self, targets: &[Arc<Target>]) -> Vec<Arc<TargetState>> {
        let mut states = lock(&self.states);
        let mut next = HashMap::new();
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            let state = match states.remove(&t.key) {
                Some(s) => {
                    let dns_changed = dns_specs(&s.target.load()) != dns_specs(t);
                    s.update(t.clone());
                    if dns_changed {
                        self.start_dns(&s);
                    }
                    s
                }
                None => {
                    let s = Arc::new(TargetState::new(t.clone(), self.metrics.clone()));
                    self.start_dns(&s);
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
            .map(|s| s.report(now))
            .collect();
        v.sort_by(|a, b| a.target.cmp(&b.target));
        v
    }

    /// Gauges for `/metrics`: endpoints per target and state, bulkhead occupancy.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let reports = self.report();
        let _ = writeln!(
            o,
            "# HELP bulwark_endpoints Endpoints of each target, by outlier state (healthy, probation, ejected)."
        );
        let _ = writeln!(o, "# TYPE bulwark_endpoints gauge");
        for r in &reports {
            for state in ["healthy", "probation", "ejected"] {
                let n = r.endpoints.iter().filter(|e| e.state == state).count();
                let _ = writeln!(
                    o,
                    "bulwark_endpoints{{target=\"{}\",state=\"{state}\"}} {n}",
                    r.target
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP bulwark_balancer_panic 1 while a target has too few healthy endpoints and ignores ejections."
        );
        let _ = writeln!(o, "# TYPE bulwark_balancer_panic gauge");
        for r in &reports {
            let _ = writeln!(
                o,
                "bulwark_balancer_panic{{target=\"{}\"}} {}",
                r.target,
                u8::from(r.panic)
            );
        }
        let _ = writeln!(
            o,
            "# HELP bulwark_bulkhead_active Requests holding a bulkhead slot."
        );
        let _ = writeln!(o, "# TYPE bulwark_bulkhead_active gauge");
        let mut states: Vec<_> = lock(&self.states).values().cloned().collect();
        states.sort_by_key(|s| s.target.load().key.clone());
        for s in states {
            if let Some(b) = s.bulkhead() {
                let _ = writeln!(
                    o,
                    "bulwark_bulkhead_active{{target=\"{}\"}} {}",
                    s.target.load().key,
                    b.active()
                );
            }
        }
        o
    }

    fn start_dns(&self, state: &Arc<TargetState>) {
        let specs = dns_specs(&state.target.load());
        if let Some(old) = lock(&state.dns).take() {
            old.cancel();
        }
        if specs.is_empty() {
            return;
        }
        let Some(resolver) = self.resolver() else {
            tracing::error!(target = %state.target.load().key, "hostname endpoints but no DNS resolver; they are skipped");
            return;
        };
        let token = CancellationToken::new();
        *lock(&state.dns) = Some(token.clone());
        for (host, port) in specs {
            let weak = Arc::downgrade(state);
            let (resolver, token) = (resolver.clone(), token.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = refresh(resolver, host, port, weak) => {}
                    _ = token.cancelled() => {}
                }
            });
        }
    }
}

fn dns_specs(t: &Target) -> Vec<(String, u16)> {
    t.endpoints
        .iter()
        .filter_map(|e| match e {
            EndpointSpec::Dns { host, port } => Some((host.clone(), *port)),
            EndpointSpec::Addr(_) => None,
        })
        .collect()
}

/// Resolves `host` for as long as its target lives: again when the TTL runs out, with
/// backoff (2 s doubling to 30 s) while lookups fail, keeping the last good answer.
async fn refresh(resolver: Resolver, host: String, port: u16, state: std::sync::Weak<TargetState>) {
    let mut failures = 0u32;
    loop {
        let result = resolver.lookup(&host, port).await;
        let Some(s) = state.upgrade() else { return };
        let key = s.target.load().key.clone();
        let wait = match result {
            Ok((addrs, until)) => {
                failures = 0;
                if s.set_resolved(&host, port, addrs.clone()) {
                    tracing::info!(target = %key, %host, addresses = ?addrs, "hostname endpoint resolved");
                }
                until.saturating_duration_since(Instant::now())
            }
            Err(e) => {
                failures += 1;
                s.metrics.count("dns_failures", &key, "lookup");
                tracing::warn!(target = %key, error = %e, "DNS lookup failed; keeping the last addresses");
                Duration::from_secs(1 << failures.min(5)).min(Duration::from_secs(30))
            }
        };
        drop(s);
        tokio::time::sleep(wait.max(resolver.min_refresh)).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bulkhead_queues_within_its_bounds_and_the_requests_deadline() {
        let b = Bulkhead::new(LimitPolicy {
            max_concurrent: 1,
            max_pending: 1,
            queue_timeout: Duration::from_secs(1),
        });
        let held = b.acquire(None).await.expect("a free slot");
        assert_eq!(b.active(), 1);
        // One waits (the queue holds one); the next is turned away at once.
        let waiter = b.acquire(None);
        tokio::pin!(waiter);
        assert!(futures_poll_once(waiter.as_mut()).await.is_none());
        assert_eq!(b.acquire(None).await.err(), Some(Shed::QueueFull));
        drop(held);
        let _held = waiter.await.expect("a released slot goes to the waiter");
        // A waiter whose own deadline comes before the queue timeout leaves at its deadline.
        let t0 = Instant::now();
        let until = t0 + Duration::from_millis(300);
        assert_eq!(b.acquire(Some(until)).await.err(), Some(Shed::Deadline));
        let waited = t0.elapsed();
        assert!(waited == Duration::from_millis(300), "{waited:?}");
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(b.acquire(Some(far)).await.err(), Some(Shed::QueueTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn new_limits_keep_counting_the_requests_in_flight() {
        let limits = |n| LimitPolicy {
            max_concurrent: n,
            max_pending: 10,
            queue_timeout: Duration::from_millis(100),
        };
        let b = Bulkhead::new(limits(2));
        let first = b.acquire(None).await.expect("a slot");
        let second = b.acquire(None).await.expect("a slot");
        b.resize(limits(1));
        assert_eq!(b.active(), 2, "both still in flight, over the new limit");
        drop(first);
        tokio::task::yield_now().await;
        assert_eq!(
            b.acquire(None).await.err(),
            Some(Shed::QueueTimeout),
            "one still in flight fills the new limit of one"
        );
        drop(second);
        let third = b.acquire(None).await.expect("free again");
        b.resize(limits(3));
        let _more = (b.acquire(None).await, b.acquire(None).await);
        assert_eq!(b.active(), 3, "a larger limit frees slots at once");
        drop(third);
    }

    /// Polls a future once; `None` while it is pending.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}

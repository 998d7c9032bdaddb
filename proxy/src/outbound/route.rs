//! Routing, decided without I/O: which Backend or Service a connection or request is for,
//! and the effective policy it is handled with (MeshConfig defaults, then the
//! TrafficPolicy, then the first matching route's overrides, every absent field filled with
//! its documented default).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bulwark_api::policy::{
    self, Algorithm, Document, GrpcCode, MeshDefaults, RetryCondition, TargetKind, TrafficPolicy,
};
use http::{HeaderMap, Method};
use serde::Serialize;

/// Connect timeout when no policy sets one (Linkerd's outbound default).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts in all when no policy sets them: one retry.
pub const DEFAULT_ATTEMPTS: u32 = 2;
/// First retry backoff (Linkerd and Envoy).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Largest retry backoff (Linkerd and Envoy).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);
/// Longest `Retry-After` honoured; a longer one is not waited for (the response is returned).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Retry budget ratio (Linkerd's ServiceProfile default).
pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
/// Retries per second always allowed.
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 10;
/// Window the budget ratio is computed over.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Largest request body buffered for replay (Linkerd's limit).
pub const DEFAULT_MAX_BUFFERED_BODY: u64 = 64 * 1024;
/// Consecutive 5xx that eject an endpoint (Envoy's default).
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
/// Outlier statistics interval (Envoy's default).
pub const DEFAULT_OUTLIER_INTERVAL: Duration = Duration::from_secs(10);
/// First ejection time (Envoy's default).
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
/// Longest ejection (Envoy's default).
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
/// Most endpoints ejected at once, in percent.
pub const DEFAULT_MAX_EJECTION_PERCENT: u8 = 50;
/// Below this share of healthy endpoints, ejections are ignored (Envoy's default).
pub const DEFAULT_PANIC_THRESHOLD: u8 = 50;
/// Peak-EWMA latency of an endpoint never measured (Linkerd's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Peak-EWMA decay (Linkerd's default).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// Share of requests that may be hedged.
pub const DEFAULT_HEDGE_RATIO: f64 = 0.1;
/// Requests waiting for a bulkhead slot when only the concurrency is limited (Linkerd's
/// queue capacity).
pub const DEFAULT_MAX_PENDING: u32 = 100;
/// Longest wait for a bulkhead slot.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);

/// Timeouts in effect. `None` means no limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeouts {
    /// TCP connect to an endpoint.
    #[serde(serialize_with = "ser::duration")]
    pub connect: Duration,
    /// The whole request, retries and the response body included.
    #[serde(serialize_with = "ser::opt_duration")]
    pub request: Option<Duration>,
    /// One attempt, until its response headers.
    #[serde(serialize_with = "ser::opt_duration")]
    pub per_try: Option<Duration>,
    /// From the request to the response headers, over every attempt.
    #[serde(serialize_with = "ser::opt_duration")]
    pub response_headers: Option<Duration>,
    /// A response body with no bytes for this long is ended.
    #[serde(serialize_with = "ser::opt_duration")]
    pub idle: Option<Duration>,
}

/// Retries in effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Failures retried.
    pub conditions: Vec<RetryCondition>,
    /// Statuses retried besides the conditions.
    pub status_codes: Vec<u16>,
    /// gRPC status codes retried.
    pub grpc_codes: Vec<u32>,
    /// First backoff.
    #[serde(serialize_with = "ser::duration")]
    pub backoff_base: Duration,
    /// Largest backoff.
    #[serde(serialize_with = "ser::duration")]
    pub backoff_max: Duration,
    /// Largest body buffered for replay.
    pub max_buffered_body: u64,
}

/// The retry budget in effect (one per target).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetPolicy {
    /// Share of requests retries may add.
    pub ratio: f64,
    /// Retries always allowed per second.
    pub min_per_second: u32,
    /// Window of the ratio.
    #[serde(serialize_with = "ser::duration")]
    pub window: Duration,
}

/// Outlier detection in effect. A detector with a zero threshold is off.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutlierPolicy {
    /// Consecutive 5xx that eject; 0 is off.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 or connect failures that eject; 0 is off.
    pub consecutive_gateway: u32,
    /// Success-rate detection: (min hosts, request volume, stdev factor).
    pub success_rate: Option<(u32, u32, f64)>,
    /// Failure-percentage detection: (threshold percent, request volume).
    pub failure_percentage: Option<(u8, u32)>,
    /// Latency detection: (factor over the peers' median p90, request volume).
    pub latency: Option<(f64, u32)>,
    /// Evaluation interval.
    #[serde(serialize_with = "ser::duration")]
    pub interval: Duration,
    /// Base ejection time.
    #[serde(serialize_with = "ser::duration")]
    pub base_ejection: Duration,
    /// Longest ejection.
    #[serde(serialize_with = "ser::duration")]
    pub max_ejection: Duration,
    /// Most endpoints ejected at once, percent.
    pub max_ejection_percent: u8,
    /// Healthy share below which ejections are ignored, percent.
    pub panic_threshold: u8,
}

/// Load balancing in effect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BalancePolicy {
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Peak-EWMA latency of an unmeasured endpoint.
    #[serde(serialize_with = "ser::duration")]
    pub default_rtt: Duration,
    /// Peak-EWMA decay.
    #[serde(serialize_with = "ser::duration")]
    pub decay: Duration,
}

/// Bulkhead limits in effect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LimitPolicy {
    /// Concurrent requests to the target.
    pub max_concurrent: u32,
    /// Requests waiting for a slot.
    pub max_pending: u32,
    /// Longest wait for a slot.
    #[serde(serialize_with = "ser::duration")]
    pub queue_timeout: Duration,
}

/// Hedging in effect for a route.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HedgePolicy {
    /// Fixed delay; `None` means the route's observed p95.
    #[serde(serialize_with = "ser::opt_duration")]
    pub delay: Option<Duration>,
    /// Share of requests that may be hedged.
    pub ratio: f64,
}

/// Per-request policy: the target's, with a route's overrides applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestPolicy {
    /// Route name (`default` when no route matched).
    pub route: String,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Retries.
    pub retry: RetryPolicy,
    /// Hedging, if the route asks for it.
    pub hedge: Option<HedgePolicy>,
}

/// A route: its match and its resolved policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// What it matches.
    #[serde(skip)]
    pub matches: policy::RouteMatch,
    /// The policy of requests it matches.
    pub policy: Arc<RequestPolicy>,
}

/// Where a Backend's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum EndpointSpec {
    /// A literal address.
    Addr(SocketAddr),
    /// A hostname, resolved and refreshed on its TTL.
    Dns {
        /// Hostname.
        host: String,
        /// Port.
        port: u16,
    },
}

/// A destination with policy: a Backend (with endpoints to balance over) or a Service
/// (forwarded to the original destination).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// `Backend/NS/NAME` or `Service/NS/NAME[:PORT]`; also the key of its run-time state.
    pub key: String,
    /// Endpoints; empty for a Service (the original destination is used).
    pub endpoints: Vec<EndpointSpec>,
    /// Retry budget.
    pub budget: BudgetPolicy,
    /// Outlier detection.
    pub outlier: OutlierPolicy,
    /// Load balancing.
    pub balance: BalancePolicy,
    /// Bulkhead.
    pub limits: Option<LimitPolicy>,
    /// Policy of requests no route matches.
    pub default: Arc<RequestPolicy>,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
}

impl Target {
    /// The policy for a request: the first matching route's, or the target's.
    pub fn request_policy(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> &Arc<RequestPolicy> {
        self.routes
            .iter()
            .find(|r| route_matches(&r.matches, method, path, headers))
            .map(|r| &r.policy)
            .unwrap_or(&self.default)
    }
}

/// Whether every criterion of `m` holds for the request.
pub fn route_matches(
    m: &policy::RouteMatch,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> bool {
    if let Some(p) = &m.path_prefix {
        if !path.starts_with(p.as_str()) {
            return false;
        }
    }
    if let Some(want) = &m.method {
        if !want.eq_ignore_ascii_case(method.as_str()) {
            return false;
        }
    }
    for (name, value) in &m.headers {
        if headers.get(name.as_str()).and_then(|v| v.to_str().ok()) != Some(value.as_str()) {
            return false;
        }
    }
    if let Some(g) = &m.grpc {
        // gRPC paths are `/package.Service/Method`.
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (service, rpc) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if service != g.service || g.method.as_deref().is_some_and(|m| m != rpc) {
            return false;
        }
    }
    true
}

/// Every target of one snapshot, indexed by the names and addresses that reach it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteTable {
    /// The targets.
    pub targets: Vec<Arc<Target>>,
    /// Host names (lower case) → (port, target) pairs, the port `None` when every port
    /// matches. Keyed by the name alone so a lookup borrows the request's authority instead
    /// of building a key.
    #[serde(skip)]
    by_host: HashMap<String, Vec<(Option<u16>, usize)>>,
    /// Literal endpoint addresses → target.
    #[serde(skip)]
    by_addr: HashMap<SocketAddr, usize>,
    /// The targets with hostname endpoints, whose addresses only DNS knows.
    #[serde(skip)]
    pub hostname_targets: Vec<usize>,
}

impl RouteTable {
    /// The target of a connection to `dst`, whose HTTP authority (if any) is `authority`.
    /// The authority is looked up first (with its port, then without), then the address.
    pub fn lookup(&self, dst: SocketAddr, authority: Option<&str>) -> Option<&Arc<Target>> {
        self.lookup_index(dst, authority)
            .and_then(|i| self.targets.get(i))
    }

    /// Like [`RouteTable::lookup`], as an index into `targets`.
    pub fn lookup_index(&self, dst: SocketAddr, authority: Option<&str>) -> Option<usize> {
        if self.targets.is_empty() {
            return None;
        }
        if let Some(a) = authority {
            let (host, port) = split_authority(a, dst.port());
            let host = host.trim_end_matches('.');
            let hit = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                self.host_entry(&host.to_ascii_lowercase(), port)
            } else {
                self.host_entry(host, port)
            };
            if hit.is_some() {
                return hit;
            }
        }
        self.by_addr.get(&dst).copied()
    }

    /// The target for `host` on `port`: one named for that port first, then one for any.
    fn host_entry(&self, host: &str, port: u16) -> Option<usize> {
        let entries = self.by_host.get(host)?;
        entries
            .iter()
            .find(|e| e.0 == Some(port))
            .or_else(|| entries.iter().find(|e| e.0.is_none()))
            .map(|e| e.1)
    }

    /// Adds `host` (on `port`, or every port) for target `i`, unless it is taken.
    fn add_host(&mut self, host: String, port: Option<u16>, i: usize) {
        let entries = self.by_host.entry(host).or_default();
        if !entries.iter().any(|e| e.0 == port) {
            entries.push((port, i));
        }
    }

    /// Whether the table has no target.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// Whether an HTTP authority names a host (rather than being absent or an IP address).
pub fn names_a_host(authority: Option<&str>) -> bool {
    authority.is_some_and(|a| {
        let (host, _) = split_authority(a, 0);
        host.parse::<std::net::IpAddr>().is_err()
    })
}

fn split_authority(authority: &str, default_port: u16) -> (&str, u16) {
    // `[v6]:port`, `host:port`, or a bare host.
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (host, port.unwrap_or(default_port));
        }
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().unwrap_or(default_port)),
        _ => (authority, default_port),
    }
}

/// The names a Kubernetes-style object is reached by from its own namespace and others.
fn names(name: &str, namespace: &str) -> [String; 4] {
    [
        name.to_string(),
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ]
}

/// Parses `ip:port`, `[v6]:port` or `host:port` (validation has checked the form).
pub fn endpoint_spec(s: &str) -> Option<EndpointSpec> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(EndpointSpec::Addr(addr));
    }
    let (host, port) = s.rsplit_once(':')?;
    Some(EndpointSpec::Dns {
        host: host.to_ascii_lowercase(),
        port: port.parse().ok()?,
    })
}

impl RouteTable {
    /// Endpoints the targets name (a hostname counts once, whatever it resolves to).
    pub fn endpoint_count(&self) -> usize {
        self.targets.iter().map(|t| t.endpoints.len()).sum()
    }

    /// Refuses a table naming more endpoints than `max`: each costs run-time state, a
    /// connection pool and metrics, so a mistaken generator cannot exhaust the proxy.
    pub fn check_bound(&self, max: usize) -> Result<(), String> {
        let n = self.endpoint_count();
        if n > max {
            return Err(format!(
                "the policy names {n} endpoints, more than this proxy takes (--max-policy-endpoints {max})"
            ));
        }
        Ok(())
    }
}

/// Builds the table from a snapshot's documents. Pure.
pub fn build(documents: &[Document]) -> RouteTable {
    let defaults = documents.iter().find_map(|d| match d {
        Document::MeshConfig(m) => m.spec.defaults.clone(),
        _ => None,
    });
    let defaults = defaults.unwrap_or_default();
    let mut table = RouteTable::default();
    let policies: Vec<&TrafficPolicy> = documents
        .iter()
        .filter_map(|d| match d {
            Document::TrafficPolicy(p) => Some(p),
            _ => None,
        })
        .collect();
    let policy_for = |kind: TargetKind, ns: &str, name: &str| {
        policies.iter().copied().find(|p| {
            p.spec.target_ref.kind == kind
                && p.spec.target_ref.name == name
                && p.metadata.namespace() == ns
        })
    };
    // Backends: reached by name (on its ports, or any), by any endpoint hostname, and by
    // any literal endpoint.
    for d in documents {
        let Document::Backend(b) = d else { continue };
        let ns = b.metadata.namespace();
        let endpoints: Vec<EndpointSpec> = b
            .spec
            .endpoints
            .iter()
            .filter_map(|e| endpoint_spec(e))
            .collect();
        let tp = policy_for(TargetKind::Backend, ns, &b.metadata.name);
        let target = target(
            format!("Backend/{ns}/{}", b.metadata.name),
            endpoints,
            &defaults,
            tp,
        );
        let i = table.targets.len();
        let ports: Vec<Option<u16>> = match b.spec.ports.as_slice() {
            [] => vec![None],
            listed => listed.iter().map(|&p| Some(p)).collect(),
        };
        for n in names(&b.metadata.name, ns) {
            for &p in &ports {
                table.add_host(n.clone(), p, i);
            }
        }
        for e in &target.endpoints {
            match e {
                EndpointSpec::Addr(a) => {
                    table.by_addr.entry(*a).or_insert(i);
                }
                EndpointSpec::Dns { host, port } => {
                    if table.hostname_targets.last() != Some(&i) {
                        table.hostname_targets.push(i);
                    }
                    table.add_host(host.clone(), Some(*port), i);
                }
            }
        }
        table.targets.push(Arc::new(target));
    }
    // Services: reached by name (and port, when the policy names one); the endpoint is the
    // original destination.
    for p in &policies {
        let r = &p.spec.target_ref;
        if r.kind != TargetKind::Service {
            continue;
        }
        let ns = p.metadata.namespace();
        let key = match r.port {
            Some(port) => format!("Service/{ns}/{}:{port}", r.name),
            None => format!("Service/{ns}/{}", r.name),
        };
        let i = table.targets.len();
        for n in names(&r.name, ns) {
            table.add_host(n, r.port, i);
        }
        table
            .targets
            .push(Arc::new(target(key, Vec::new(), &defaults, Some(p))));
    }
    table
}

fn target(
    key: String,
    endpoints: Vec<EndpointSpec>,
    mesh: &MeshDefaults,
    tp: Option<&TrafficPolicy>,
) -> Target {
    let spec = tp.map(|p| &p.spec);
    let timeouts = layered(
        mesh.timeouts.as_ref(),
        spec.and_then(|s| s.timeouts.as_ref()),
    );
    let retries = layered(mesh.retries.as_ref(), spec.and_then(|s| s.retries.as_ref()));
    // Outlier detection is taken whole from the most specific level that sets it: a
    // detector is on by being present, so a merge would leave a policy no way to turn off
    // one the mesh turns on.
    let outlier = spec
        .and_then(|s| s.outlier_detection.as_ref())
        .or(mesh.outlier_detection.as_ref())
        .cloned();
    let lb = layered(
        mesh.load_balancer.as_ref(),
        spec.and_then(|s| s.load_balancer.as_ref()),
    );
    let (outlier, lb) = (outlier.as_ref(), lb.as_ref());
    let default = Arc::new(RequestPolicy {
        route: "default".into(),
        timeouts: timeouts_of(timeouts.as_ref()),
        retry: retry_policy(retries.as_ref()),
        hedge: None,
    });
    let routes = spec
        .map(|s| s.routes.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, r)| Route {
            matches: r.matches.clone(),
            policy: Arc::new(RequestPolicy {
                route: r.name.clone().unwrap_or_else(|| format!("route-{i}")),
                timeouts: timeouts_of(layered(timeouts.as_ref(), r.timeouts.as_ref()).as_ref()),
                retry: retry_policy(layered(retries.as_ref(), r.retries.as_ref()).as_ref()),
                hedge: r.hedging.as_ref().map(|h| HedgePolicy {
                    delay: h.delay.as_ref().map(|d| d.0),
                    ratio: h.budget_ratio.unwrap_or(DEFAULT_HEDGE_RATIO),
                }),
            }),
        })
        .collect();
    let budget = retries.as_ref().and_then(|r| r.budget.as_ref());
    Target {
        key,
        endpoints,
        budget: BudgetPolicy {
            ratio: budget.and_then(|b| b.ratio).unwrap_or(DEFAULT_BUDGET_RATIO),
            min_per_second: budget
                .and_then(|b| b.min_per_second)
                .unwrap_or(DEFAULT_BUDGET_MIN_PER_SECOND),
            window: budget
                .and_then(|b| b.window.as_ref())
                .map(|w| w.0)
                .unwrap_or(DEFAULT_BUDGET_WINDOW),
        },
        outlier: outlier_policy(outlier),
        balance: BalancePolicy {
            algorithm: lb.and_then(|l| l.algorithm).unwrap_or(Algorithm::PeakEwma),
            default_rtt: lb
                .and_then(|l| l.default_rtt.as_ref())
                .map(|d| d.0)
                .unwrap_or(DEFAULT_RTT),
            decay: lb
                .and_then(|l| l.decay.as_ref())
                .map(|d| d.0)
                .unwrap_or(DEFAULT_DECAY),
        },
        limits: spec.and_then(|s| s.limits.as_ref()).and_then(|l| {
            let max_concurrent = l.max_concurrent_requests?;
            Some(LimitPolicy {
                max_concurrent,
                max_pending: l.max_pending.unwrap_or(DEFAULT_MAX_PENDING),
                queue_timeout: l
                    .queue_timeout
                    .as_ref()
                    .map(|d| d.0)
                    .unwrap_or(DEFAULT_QUEUE_TIMEOUT),
            })
        }),
        default,
        routes,
    }
}

/// `over` laid on `base` field by field, nested sections too (a list replaces a list):
/// whatever a TrafficPolicy leaves out comes from the MeshConfig defaults, and whatever a
/// route leaves out from its TrafficPolicy. Done once per snapshot, not per request.
fn layered<T>(base: Option<&T>, over: Option<&T>) -> Option<T>
where
    T: Clone + serde::Serialize + serde::de::DeserializeOwned,
{
    fn lay(base: &mut serde_json::Value, over: serde_json::Value) {
        match (base, over) {
            (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
                for (k, v) in o {
                    lay(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, o) => *b = o,
        }
    }
    let (base, over) = match (base, over) {
        (Some(b), Some(o)) => (b, o),
        (b, o) => return o.or(b).cloned(),
    };
    let merged = serde_json::to_value(base).and_then(|mut v| {
        lay(&mut v, serde_json::to_value(over)?);
        serde_json::from_value(v)
    });
    // Both sides are valid documents of the same type, so the merge is too; should it ever
    // not be, the more specific side wins whole.
    Some(merged.unwrap_or_else(|_| over.clone()))
}

fn timeouts_of(t: Option<&policy::Timeouts>) -> Timeouts {
    let d = |f: fn(&policy::Timeouts) -> Option<&bulwark_api::duration::Duration>| {
        t.and_then(f).map(|d| d.0)
    };
    Timeouts {
        connect: d(|t| t.connect.as_ref()).unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        request: d(|t| t.request.as_ref()),
        per_try: d(|t| t.per_try.as_ref()),
        response_headers: d(|t| t.response_headers.as_ref()),
        idle: d(|t| t.idle.as_ref()),
    }
}

fn grpc_code(c: GrpcCode) -> u32 {
    match c {
        GrpcCode::Cancelled => 1,
        GrpcCode::DeadlineExceeded => 4,
        GrpcCode::ResourceExhausted => 8,
        GrpcCode::Internal => 13,
        GrpcCode::Unavailable => 14,
    }
}

fn retry_policy(r: Option<&policy::Retries>) -> RetryPolicy {
    let backoff = r.and_then(|r| r.backoff.as_ref());
    RetryPolicy {
        attempts: r.and_then(|r| r.attempts).unwrap_or(DEFAULT_ATTEMPTS),
        // Absent conditions are the default ones, whatever status or gRPC codes are listed.
        conditions: match r {
            Some(r) if !r.conditions.is_empty() => r.conditions.clone(),
            _ => vec![
                RetryCondition::ConnectFailure,
                RetryCondition::RefusedStream,
                RetryCondition::Reset,
            ],
        },
        status_codes: r.map(|r| r.status_codes.clone()).unwrap_or_default(),
        grpc_codes: r
            .map(|r| r.grpc_codes.iter().copied().map(grpc_code).collect())
            .unwrap_or_default(),
        backoff_base: backoff
            .and_then(|b| b.base.as_ref())
            .map(|d| d.0)
            .unwrap_or(DEFAULT_BACKOFF_BASE),
        backoff_max: backoff
            .and_then(|b| b.max.as_ref())
            .map(|d| d.0)
            .unwrap_or(DEFAULT_BACKOFF_MAX),
        max_buffered_body: r
            .and_then(|r| r.max_buffered_body_bytes)
            .unwrap_or(DEFAULT_MAX_BUFFERED_BODY),
    }
}

/// Outlier detection from its policy section; `None` gives every default.
pub fn outlier_policy(o: Option<&policy::OutlierDetection>) -> OutlierPolicy {
    let d =
        |v: Option<&bulwark_api::duration::Duration>, default| v.map(|d| d.0).unwrap_or(default);
    OutlierPolicy {
        consecutive_5xx: o
            .and_then(|o| o.consecutive_5xx)
            .unwrap_or(DEFAULT_CONSECUTIVE_5XX),
        consecutive_gateway: o.and_then(|o| o.consecutive_gateway_errors).unwrap_or(0),
        success_rate: o.and_then(|o| o.success_rate.as_ref()).map(|s| {
            (
                s.min_hosts.unwrap_or(5),
                s.request_volume.unwrap_or(100),
                s.stdev_factor.unwrap_or(1.9),
            )
        }),
        failure_percentage: o
            .and_then(|o| o.failure_percentage.as_ref())
            .map(|f| (f.threshold.unwrap_or(85), f.request_volume.unwrap_or(50))),
        latency: o
            .and_then(|o| o.latency.as_ref())
            .map(|l| (l.factor.unwrap_or(5.0), l.request_volume.unwrap_or(50))),
        interval: d(
            o.and_then(|o| o.interval.as_ref()),
            DEFAULT_OUTLIER_INTERVAL,
        ),
        base_ejection: d(
            o.and_then(|o| o.base_ejection_time.as_ref()),
            DEFAULT_BASE_EJECTION,
        ),
        max_ejection: d(
            o.and_then(|o| o.max_ejection_time.as_ref()),
            DEFAULT_MAX_EJECTION,
        ),
        max_ejection_percent: o
            .and_then(|o| o.max_ejection_percent)
            .unwrap_or(DEFAULT_MAX_EJECTION_PERCENT),
        panic_threshold: o
            .and_then(|o| o.panic_threshold)
            .unwrap_or(DEFAULT_PANIC_THRESHOLD),
    }
}

/// Durations in `/config_dump` read as in the policy (`250ms`, `10s`), not as structs.
mod ser {
    use std::time::Duration;

    pub fn duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&bulwark_api::duration::format(*d))
    }

    pub fn opt_duration<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration(d, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests;

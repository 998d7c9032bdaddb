//! From a snapshot's documents to its targets, pure: each Backend and each Service with a
//! TrafficPolicy becomes a [`Target`] with its effective policy (MeshConfig defaults, then
//! the TrafficPolicy, then a route's overrides, every absent field its `DEFAULT_*`), and
//! the [`RouteTable`] indexes them by the names and addresses that reach them.
//!
//! A Service whose endpoints the control plane sends (Kubernetes mode) becomes one target
//! per port, balanced across its endpoints and reached by its names and cluster IPs; a
//! Service it does not send keeps the address the app dialled as its one endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use bulwark_api::policy::{
    self, Algorithm, Document, GrpcCode, MeshDefaults, RetryCondition, TargetKind, TrafficPolicy,
};

use super::policy::*;
use super::route::RouteTable;

mod services;

pub use services::{ServicePortSpec, ServiceSpec};

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

/// Builds the table from a snapshot's documents and Services. Pure.
pub fn table(documents: &[Document], services: &[ServiceSpec]) -> RouteTable {
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
                    table.add_addr(*a, i);
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
    let sent = services::add(&mut table, services, &policies, &defaults);
    // Services the control plane sent no endpoints for: reached by name (and port, when
    // the policy names one); the endpoint is the original destination.
    for p in &policies {
        let r = &p.spec.target_ref;
        if r.kind != TargetKind::Service {
            continue;
        }
        let ns = p.metadata.namespace();
        if sent.contains(&(ns, r.name.as_str(), r.port)) {
            continue;
        }
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
    let label = |route: &str| {
        Arc::new(RouteLabel {
            target: key.as_str().into(),
            route: route.into(),
        })
    };
    let default = Arc::new(RequestPolicy {
        route: "default".into(),
        label: label("default"),
        timeouts: timeouts_of(timeouts.as_ref()),
        retry: retry_policy(retries.as_ref()),
        hedge: None,
    });
    let routes = spec
        .map(|s| s.routes.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let route = r.name.clone().unwrap_or_else(|| format!("route-{i}"));
            Route {
                matches: r.matches.clone(),
                policy: Arc::new(RequestPolicy {
                    label: label(&route),
                    route,
                    timeouts: timeouts_of(layered(timeouts.as_ref(), r.timeouts.as_ref()).as_ref()),
                    retry: retry_policy(layered(retries.as_ref(), r.retries.as_ref()).as_ref()),
                    hedge: r.hedging.as_ref().map(|h| HedgePolicy {
                        delay: h.delay.as_ref().map(|d| d.0),
                        ratio: h.budget_ratio.unwrap_or(DEFAULT_HEDGE_RATIO),
                    }),
                }),
            }
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
            slow_start: lb.and_then(|l| l.slow_start.as_ref()).map(|d| d.0),
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
                s.min_hosts.unwrap_or(DEFAULT_SUCCESS_RATE_MIN_HOSTS),
                s.request_volume
                    .unwrap_or(DEFAULT_SUCCESS_RATE_REQUEST_VOLUME),
                s.stdev_factor.unwrap_or(DEFAULT_SUCCESS_RATE_STDEV_FACTOR),
            )
        }),
        failure_percentage: o.and_then(|o| o.failure_percentage.as_ref()).map(|f| {
            (
                f.threshold.unwrap_or(DEFAULT_FAILURE_PERCENTAGE_THRESHOLD),
                f.request_volume
                    .unwrap_or(DEFAULT_FAILURE_PERCENTAGE_REQUEST_VOLUME),
            )
        }),
        latency: o.and_then(|o| o.latency.as_ref()).map(|l| {
            (
                l.factor.unwrap_or(DEFAULT_LATENCY_FACTOR),
                l.request_volume.unwrap_or(DEFAULT_LATENCY_REQUEST_VOLUME),
            )
        }),
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

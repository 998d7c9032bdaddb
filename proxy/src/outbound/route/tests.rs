use std::net::SocketAddr;
use std::time::Duration;

use bulwark_api::policy::{Algorithm, Document, RetryCondition};
use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::outbound::build::{self, endpoint_spec};
use crate::outbound::policy::*;
use crate::outbound::test_util::docs;

const POLICY: &str = r#"
apiVersion: bulwark.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  trustDomain: cluster.local
  defaults:
    timeouts: {connect: 2s, request: 10s}
    retries: {attempts: 2, conditions: [connect-failure], backoff: {max: 400ms}}
    outlierDetection: {latency: {factor: 4}}
---
apiVersion: bulwark.dev/v1alpha1
kind: Backend
metadata: {name: api, namespace: shop}
spec:
  endpoints: ["10.1.0.1:8080", "10.1.0.2:8080", "api.example.test:8080"]
---
apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api, namespace: shop}
spec:
  targetRef: {kind: Backend, name: api}
  timeouts: {perTry: 200ms}
  retries:
    attempts: 3
    conditions: [5xx]
    budget: {ratio: 0.5}
  loadBalancer: {algorithm: roundRobin}
  outlierDetection: {consecutive5xx: 7}
  limits: {maxConcurrentRequests: 10}
  routes:
    - name: reads
      match: {pathPrefix: /items, method: GET}
      hedging: {delay: 20ms}
    - name: orders
      match: {grpc: {service: shop.v1.Orders, method: Place}}
      timeouts: {request: 1s}
      retries: {attempts: 1}
---
apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web, namespace: shop}
spec:
  targetRef: {kind: Service, name: web, port: 80}
"#;

#[test]
fn targets_are_found_by_name_endpoint_hostname_and_address() {
    let t = build::table(&docs(POLICY), &[]);
    let dst: SocketAddr = "10.9.9.9:8080".parse().unwrap();
    for authority in [
        "api",
        "api:8080",
        "API.shop",
        "api.shop.svc.cluster.local:8080",
        "api.example.test:8080",
    ] {
        assert_eq!(
            t.lookup(dst, Some(authority)).map(|t| t.key.as_str()),
            Some("Backend/shop/api"),
            "{authority}"
        );
    }
    assert!(
        t.lookup(dst, Some("api.example.test:9999")).is_none(),
        "an endpoint hostname matches on its port"
    );
    assert!(!names_a_host(None));
    assert!(!names_a_host(Some("10.1.0.9:8080")));
    assert!(!names_a_host(Some("[fd00::1]:80")));
    assert!(names_a_host(Some("shop.example:8080")));
    let mut with_ports = docs(POLICY);
    for d in &mut with_ports {
        if let Document::Backend(b) = d {
            b.spec.ports = vec![8080];
        }
    }
    let tp = build::table(&with_ports, &[]);
    assert!(tp.lookup(dst, Some("api.shop:8080")).is_some());
    assert!(
        tp.lookup(dst, Some("api.shop:9090")).is_none(),
        "a Backend with ports is reached by name on those only"
    );
    let ep: SocketAddr = "10.1.0.2:8080".parse().unwrap();
    assert_eq!(
        t.lookup(ep, Some("10.1.0.2:8080")).unwrap().key,
        "Backend/shop/api"
    );
    assert_eq!(t.lookup(ep, None).unwrap().key, "Backend/shop/api");
    let svc: SocketAddr = "10.96.0.10:80".parse().unwrap();
    assert_eq!(
        t.lookup(svc, Some("web.shop")).unwrap().key,
        "Service/shop/web:80"
    );
    assert!(
        t.lookup(svc, Some("web.shop:8080")).is_none(),
        "the Service policy names port 80"
    );
    assert!(
        t.lookup(svc, Some("elsewhere")).is_none(),
        "unknown destinations pass through"
    );
}

#[test]
fn effective_policy_layers_defaults_policy_and_route() {
    let t = build::table(&docs(POLICY), &[]);
    let api = t
        .targets
        .iter()
        .find(|t| t.key == "Backend/shop/api")
        .unwrap();
    assert_eq!(api.endpoints.len(), 3);
    assert_eq!(api.balance.algorithm, Algorithm::RoundRobin);
    assert_eq!(api.budget.ratio, 0.5);
    assert_eq!(api.budget.min_per_second, DEFAULT_BUDGET_MIN_PER_SECOND);
    assert_eq!(api.limits.unwrap().max_pending, DEFAULT_MAX_PENDING);
    let d = &api.default;
    assert_eq!(d.timeouts.connect, Duration::from_secs(2), "mesh default");
    assert_eq!(
        d.timeouts.request,
        Some(Duration::from_secs(10)),
        "mesh default"
    );
    assert_eq!(
        d.timeouts.per_try,
        Some(Duration::from_millis(200)),
        "policy"
    );
    assert_eq!(d.retry.attempts, 3);
    assert_eq!(d.retry.conditions, vec![RetryCondition::ServerError]);
    assert_eq!(
        d.retry.backoff_max,
        Duration::from_millis(400),
        "a field the policy leaves out comes from the mesh defaults"
    );
    let h = HeaderMap::new();
    let reads = api.request_policy(&Method::GET, "/items/7", &h);
    assert_eq!(reads.route, "reads");
    assert_eq!(reads.hedge.unwrap().delay, Some(Duration::from_millis(20)));
    assert_eq!(reads.hedge.unwrap().ratio, DEFAULT_HEDGE_RATIO);
    assert_eq!(
        api.request_policy(&Method::POST, "/items/7", &h).route,
        "default"
    );
    let orders = api.request_policy(&Method::POST, "/shop.v1.Orders/Place", &h);
    assert_eq!(orders.route, "orders");
    assert_eq!(orders.timeouts.request, Some(Duration::from_secs(1)));
    assert_eq!(
        orders.timeouts.per_try,
        Some(Duration::from_millis(200)),
        "inherited"
    );
    assert_eq!(orders.retry.attempts, 1, "the route's own");
    assert_eq!(
        orders.retry.conditions,
        vec![RetryCondition::ServerError],
        "the rest of the retries from the policy"
    );
    assert_eq!(
        api.request_policy(&Method::POST, "/shop.v1.Orders/Cancel", &h)
            .route,
        "default"
    );
    let web = t
        .targets
        .iter()
        .find(|t| t.key.starts_with("Service/"))
        .unwrap();
    assert!(web.endpoints.is_empty());
    assert_eq!(web.default.retry.attempts, 2, "mesh default retries");
    assert_eq!(web.outlier.consecutive_5xx, DEFAULT_CONSECUTIVE_5XX);
    assert_eq!(
        web.outlier.latency,
        Some((4.0, 50)),
        "the mesh's detector, inherited"
    );
    assert_eq!(api.outlier.consecutive_5xx, 7);
    assert_eq!(
        api.outlier.latency, None,
        "outlierDetection is taken whole: the policy's has no latency detector"
    );
}

#[test]
fn header_matches_are_exact() {
    let m = bulwark_api::policy::RouteMatch {
        headers: [("x-tier".to_string(), "gold".to_string())].into(),
        ..Default::default()
    };
    let mut h = HeaderMap::new();
    assert!(!route_matches(&m, &Method::GET, "/", &h));
    h.insert("x-tier", HeaderValue::from_static("gold"));
    assert!(route_matches(&m, &Method::GET, "/", &h));
    h.insert("x-tier", HeaderValue::from_static("golden"));
    assert!(!route_matches(&m, &Method::GET, "/", &h));
}

#[test]
fn endpoint_specs_parse_addresses_and_hostnames() {
    assert_eq!(
        endpoint_spec("[fd00::1]:80"),
        Some(EndpointSpec::Addr("[fd00::1]:80".parse().unwrap()))
    );
    assert_eq!(
        endpoint_spec("DB.internal:5432"),
        Some(EndpointSpec::Dns {
            host: "db.internal".into(),
            port: 5432
        })
    );
    assert_eq!(endpoint_spec("nohost"), None);
}

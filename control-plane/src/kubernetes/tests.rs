//! The Kubernetes source against kube-rs's client over a mock service: an API server that
//! answers lists and streams watch events as kube-apiserver writes them (bookmarks, 410
//! Gone, relists included), and the view computed from real API objects.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::*;
use bulwark_api::wire;

type Reply = UnsyncBoxBody<Bytes, Infallible>;

fn service(name: &str, ns: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-svc-{name}"), "resourceVersion": "1",
                     "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "type": "ClusterIP", "ipFamilies": ["IPv4"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                           {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": "metrics"}]},
        "status": {"loadBalancer": {}}
    })
}

/// An EndpointSlice of `service` with `(ip, ready, serving, terminating)` endpoints.
fn slice(name: &str, service: &str, ns: &str, endpoints: &[(&str, bool, bool, bool)]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1",
                     "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service, "uid": format!("uid-svc-{service}")}]},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9100, "protocol": "TCP"}],
        "endpoints": endpoints.iter().map(|(ip, ready, serving, terminating)| json!({
            "addresses": [ip],
            "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
            "nodeName": "node-a",
            "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("pod-{ip}")}
        })).collect::<Vec<_>>()
    })
}

fn pod(name: &str, ns: &str, sa: &str, ip: &str, injected: bool) -> Value {
    let annotations = if injected {
        json!({"bulwark.dev/proxy-version": "0.1.0"})
    } else {
        json!({})
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": "1",
                     "labels": {"app": name}, "annotations": annotations},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "registry.example/app:1"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn policy(name: &str, ns: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "bulwark.dev/v1alpha1", "kind": "TrafficPolicy",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-tp-{name}"), "resourceVersion": "1", "generation": 1,
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": spec
    })
}

fn objects(policy: &[Value], services: &[Value], slices: &[Value], pods: &[Value]) -> Objects {
    fn arcs<T: serde::de::DeserializeOwned>(v: &[Value]) -> Vec<Arc<T>> {
        v.iter()
            .map(|o| Arc::new(serde_json::from_value(o.clone()).expect("an API object")))
            .collect()
    }
    Objects {
        policy: arcs(policy),
        services: arcs(services),
        slices: arcs(slices),
        pods: arcs(pods),
    }
}

#[test]
fn a_service_gets_its_ready_endpoints_by_port_name_and_terminating_ones_apart() {
    let v = view::view(
        &objects(
            &[],
            &[
                service("web", "shop", "10.96.0.10"),
                json!({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "db", "namespace": "shop"},
                       "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}),
            ],
            &[
                slice(
                    "web-a",
                    "web",
                    "shop",
                    &[
                        ("10.1.0.2", true, true, false),
                        ("10.1.0.1", true, true, false),
                        ("10.1.0.3", false, true, true),
                        ("10.1.0.4", false, false, false),
                    ],
                ),
                slice("web-b", "web", "shop", &[("10.1.0.5", true, true, false)]),
                slice("other", "api", "shop", &[("10.1.9.9", true, true, false)]),
            ],
            &[],
        ),
        "cluster.local",
    );
    assert_eq!(v.services.len(), 1, "the headless Service is not sent");
    let web = &v.services[0];
    assert_eq!((web.namespace.as_str(), web.name.as_str()), ("shop", "web"));
    assert_eq!(web.cluster_ips, ["10.96.0.10"]);
    let http = &web.ports[0];
    assert_eq!((http.port, http.name.as_str()), (80, "http"));
    assert_eq!(
        http.ready,
        ["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.5:8080"],
        "both slices, sorted; the unready one left out"
    );
    assert_eq!(http.terminating, ["10.1.0.3:8080"]);
    let metrics = &web.ports[1];
    assert_eq!(metrics.port, 9090);
    assert_eq!(
        metrics.ready[0], "10.1.0.1:9100",
        "a named target port is the slice's port of that name"
    );
}

#[test]
fn injected_running_pods_are_meshed_with_their_service_accounts_identity() {
    let mut done = pod("old", "shop", "web", "10.1.0.7", true);
    done["status"]["phase"] = json!("Succeeded");
    let mut default_sa = pod("plain-sa", "shop", "", "10.1.0.8", true);
    default_sa["spec"]
        .as_object_mut()
        .unwrap()
        .remove("serviceAccountName");
    let v = view::view(
        &objects(
            &[],
            &[],
            &[],
            &[
                pod("web-1", "shop", "web", "10.1.0.1", true),
                pod("legacy", "shop", "legacy", "10.1.0.2", false),
                done,
                default_sa,
            ],
        ),
        "cluster.local",
    );
    assert_eq!(
        v.members,
        [
            (
                "10.1.0.1".into(),
                "spiffe://cluster.local/ns/shop/sa/web".into()
            ),
            (
                "10.1.0.8".into(),
                "spiffe://cluster.local/ns/shop/sa/default".into()
            ),
        ]
    );
}

#[test]
fn an_invalid_policy_object_is_refused_by_name_and_the_rest_served() {
    let v = view::view(
        &objects(
            &[
                policy(
                    "web",
                    "shop",
                    json!({"targetRef": {"kind": "Service", "name": "web"},
                                             "retries": {"attempts": 3}}),
                ),
                policy(
                    "bad",
                    "shop",
                    json!({"targetRef": {"kind": "Service", "name": "web"},
                                             "retries": {"atempts": 3}}),
                ),
                policy(
                    "zero",
                    "shop",
                    json!({"targetRef": {"kind": "Service", "name": "web"},
                                              "retries": {"attempts": 0}}),
                ),
            ],
            &[],
            &[],
            &[],
        ),
        "cluster.local",
    );
    let names: Vec<&str> = v
        .documents
        .iter()
        .map(|d| d.metadata().name.as_str())
        .collect();
    assert_eq!(names, ["web"]);
    assert_eq!(v.invalid.len(), 2, "{:?}", v.invalid);
    assert!(
        v.invalid[0].starts_with("TrafficPolicy shop/bad: spec.retries"),
        "{}",
        v.invalid[0]
    );
    assert!(
        v.invalid[0].contains("did you mean `attempts`"),
        "{}",
        v.invalid[0]
    );
    assert!(
        v.invalid[1].starts_with("TrafficPolicy shop/zero: spec.retries.attempts"),
        "{}",
        v.invalid[1]
    );
}

/// One resource of the mock API server: its objects, resource version and open watches.
#[derive(Default)]
struct Resource {
    items: Vec<Value>,
    version: u64,
    watches: Vec<mpsc::Sender<Bytes>>,
}

/// An API server in memory, answering kube-rs's lists and watches by path.
#[derive(Default, Clone)]
struct Fake {
    resources: Arc<Mutex<HashMap<String, Resource>>>,
    lists: Arc<Mutex<Vec<String>>>,
    /// The Lease (`coordination.k8s.io`), if created.
    lease: Arc<Mutex<Option<Value>>>,
    /// Status patches, as (path, body).
    patches: Arc<Mutex<Vec<(String, Value)>>>,
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/bulwark/leases";

fn not_found() -> Response<Reply> {
    json_reply(
        404,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "not found", "reason": "NotFound", "code": 404}),
    )
}

fn conflict() -> Response<Reply> {
    json_reply(
        409,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "the object has been modified; please apply your changes to the latest version and try again",
               "reason": "Conflict", "code": 409}),
    )
}

const RESOURCES: [(&str, &str); 7] = [
    ("/apis/bulwark.dev/v1alpha1/backends", "BackendList"),
    (
        "/apis/bulwark.dev/v1alpha1/trafficpolicies",
        "TrafficPolicyList",
    ),
    ("/apis/bulwark.dev/v1alpha1/meshconfigs", "MeshConfigList"),
    (
        "/apis/bulwark.dev/v1alpha1/authorizationpolicies",
        "AuthorizationPolicyList",
    ),
    ("/api/v1/services", "ServiceList"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "EndpointSliceList",
    ),
    ("/api/v1/pods", "PodList"),
];

impl Fake {
    fn with<T>(&self, path: &str, f: impl FnOnce(&mut Resource) -> T) -> T {
        let mut r = self.resources.lock().unwrap();
        f(r.entry(path.to_string()).or_default())
    }

    /// Adds or replaces `obj`; open watches see ADDED or MODIFIED, unless `quietly` (a
    /// change made while no watch is open, seen only by the next list).
    fn apply(&self, path: &str, mut obj: Value, quietly: bool) {
        self.with(path, |r| {
            r.version += 1;
            obj["metadata"]["resourceVersion"] = json!(r.version.to_string());
            let name = obj["metadata"]["name"].clone();
            let kind = match r.items.iter().position(|o| o["metadata"]["name"] == name) {
                Some(i) => {
                    r.items[i] = obj.clone();
                    "MODIFIED"
                }
                None => {
                    r.items.push(obj.clone());
                    "ADDED"
                }
            };
            if !quietly {
                send(r, json!({"type": kind, "object": obj}));
            }
        });
    }

    /// A BOOKMARK, as a server sends when a watch asked for them.
    fn bookmark(&self, path: &str, kind: &str, api_version: &str) {
        self.with(path, |r| {
            let v = r.version.to_string();
            send(
                r,
                json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                       "metadata": {"resourceVersion": v,
                                    "annotations": {"k8s.io/initial-events-end": "true"}}}}),
            )
        });
    }

    /// The watches' resource version is compacted away: each gets the 410 a server sends,
    /// then its stream ends.
    fn expire(&self, path: &str) {
        self.with(path, |r| {
            let v = r.version;
            send(
                r,
                json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": format!("too old resource version: 1 ({v})"),
                       "reason": "Expired", "code": 410}}),
            );
            r.watches.clear();
        });
    }

    fn lists_of(&self, path: &str) -> usize {
        self.lists
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    /// Lease reads and writes (with resourceVersion conflicts, as the API server checks
    /// them) and status patches.
    fn write(&self, method: &http::Method, path: &str, body: Value) -> Response<Reply> {
        if path.ends_with("/status") {
            assert_eq!(method, http::Method::PATCH, "{path}");
            self.patches
                .lock()
                .unwrap()
                .push((path.to_string(), body.clone()));
            return json_reply(200, body);
        }
        let mut lease = self.lease.lock().unwrap();
        let bump = |mut l: Value| {
            let v: u64 = l["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            l["metadata"]["resourceVersion"] = json!((v + 1).to_string());
            l
        };
        match (method.as_str(), lease.clone()) {
            ("GET", Some(l)) => json_reply(200, l),
            ("GET", None) => not_found(),
            ("POST", None) => {
                let mut l = body;
                l["metadata"]["resourceVersion"] = json!("1");
                *lease = Some(l.clone());
                json_reply(201, l)
            }
            ("POST", Some(_)) => conflict(),
            ("PUT", Some(cur))
                if cur["metadata"]["resourceVersion"] == body["metadata"]["resourceVersion"] =>
            {
                let l = bump(body);
                *lease = Some(l.clone());
                json_reply(200, l)
            }
            ("PUT", _) => conflict(),
            _ => not_found(),
        }
    }

    /// Answers every request until the client goes away.
    async fn serve(self, mut handle: tower_test::mock::Handle<Request<Body>, Response<Reply>>) {
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            if path.starts_with(LEASES) || path.ends_with("/status") {
                let method = req.method().clone();
                let body = req.into_body().collect_bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                send.send_response(self.write(&method, &path, body));
                continue;
            }
            let Some((_, list_kind)) = RESOURCES.iter().find(|(p, _)| *p == path) else {
                send.send_response(not_found());
                continue;
            };
            if query.split('&').any(|kv| kv == "watch=true") {
                let (tx, rx) = mpsc::channel(64);
                self.with(&path, |r| r.watches.push(tx));
                let body =
                    StreamBody::new(tokio_stream::StreamExt::map(ReceiverStream::new(rx), |b| {
                        Ok::<_, Infallible>(Frame::data(b))
                    }));
                send.send_response(
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(body.boxed_unsync())
                        .unwrap(),
                );
            } else {
                self.lists.lock().unwrap().push(path.clone());
                let (items, v) = self.with(&path, |r| (r.items.clone(), r.version));
                let api_version = items
                    .first()
                    .map(|o| o["apiVersion"].clone())
                    .unwrap_or(json!("v1"));
                send.send_response(json_reply(
                    200,
                    json!({"kind": list_kind, "apiVersion": api_version,
                           "metadata": {"resourceVersion": v.to_string()}, "items": items}),
                ));
            }
        }
    }
}

fn send(r: &mut Resource, event: Value) {
    let mut line = serde_json::to_vec(&event).unwrap();
    line.push(b'\n');
    let line = Bytes::from(line);
    r.watches.retain(|w| w.try_send(line.clone()).is_ok());
}

fn json_reply(status: u16, v: Value) -> Response<Reply> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(serde_json::to_vec(&v).unwrap()))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .unwrap()
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const PODS: &str = "/api/v1/pods";
const POLICIES: &str = "/apis/bulwark.dev/v1alpha1/trafficpolicies";

fn ready_of(state: &State) -> Vec<String> {
    state
        .policy()
        .services
        .iter()
        .find(|s| s.name == "web")
        .map(|s| s.ports[0].ready.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_source_lists_follows_watches_and_relists_after_410_gone() {
    let fake = Fake::default();
    fake.apply(SERVICES, service("web", "shop", "10.96.0.10"), false);
    fake.apply(
        SLICES,
        slice("web-a", "web", "shop", &[("10.1.0.1", true, true, false)]),
        false,
    );
    fake.apply(PODS, pod("web-1", "shop", "web", "10.1.0.1", true), false);
    fake.apply(
        POLICIES,
        policy(
            "web",
            "shop",
            json!({"targetRef": {"kind": "Service", "name": "web"}}),
        ),
        false,
    );
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Reply>>();
    let client = kube::Client::new(svc, "default");
    let server = tokio::spawn(fake.clone().serve(handle));
    let state = Arc::new(State::new());
    let source = tokio::spawn(run(
        state.clone(),
        client,
        "cluster.local".into(),
        true,
        None,
    ));

    // Listed: one version with the policy, the Service's endpoint, and the meshed pod.
    until("the first list is served", || state.policy().version > 0).await;
    let first = state.policy();
    assert_eq!(first.documents.len(), 1);
    assert_eq!(ready_of(&state), ["10.1.0.1:8080"]);
    assert_eq!(
        *state.members().borrow().clone(),
        [(
            "10.1.0.1".to_string(),
            "spiffe://cluster.local/ns/shop/sa/web".to_string()
        )]
    );

    // Followed: a scale-up arrives as a MODIFIED slice; a bookmark changes nothing.
    until("the watches are open", || {
        fake.with(SLICES, |r| !r.watches.is_empty())
            && fake.with(SERVICES, |r| !r.watches.is_empty())
    })
    .await;
    fake.bookmark(SLICES, "EndpointSlice", "discovery.k8s.io/v1");
    fake.apply(
        SLICES,
        slice(
            "web-a",
            "web",
            "shop",
            &[
                ("10.1.0.1", true, true, false),
                ("10.1.0.2", true, true, false),
            ],
        ),
        false,
    );
    until("the new endpoint is served", || ready_of(&state).len() == 2).await;
    let scaled = state.policy().version;
    assert!(scaled > first.version);

    // Expired: the slices' watch gets 410 Gone. A change made meanwhile reaches no watch;
    // the relist finds it, and until then the last state stays served.
    let lists_before = fake.lists_of(SLICES);
    fake.expire(SLICES);
    fake.apply(
        SLICES,
        slice(
            "web-a",
            "web",
            "shop",
            &[
                ("10.1.0.1", true, true, false),
                ("10.1.0.2", false, true, true),
            ],
        ),
        true,
    );
    assert_eq!(ready_of(&state).len(), 2, "the last good state is kept");
    until("the relist's state is served", || {
        state.policy().services[0].ports[0].terminating == ["10.1.0.2:8080"]
    })
    .await;
    assert!(fake.lists_of(SLICES) > lists_before, "a relist happened");
    assert_eq!(ready_of(&state), ["10.1.0.1:8080"]);

    // An invalid object is refused by name and never pushed; the valid one stays.
    fake.apply(
        POLICIES,
        policy(
            "bad",
            "shop",
            json!({"targetRef": {"kind": "Service", "name": "web"},
                                     "timeouts": {"request": "soon"}}),
        ),
        false,
    );
    until("the refusal is recorded", || state.invalid_count() == 1).await;
    assert_eq!(state.policy().documents.len(), 1);
    assert!(
        state
            .status()
            .rejected_reason
            .starts_with("TrafficPolicy shop/bad: spec.timeouts.request"),
        "{}",
        state.status().rejected_reason
    );
    assert!(
        state
            .render_metrics()
            .contains("bulwark_cp_invalid_objects 1")
    );
    source.abort();
    server.abort();
}

#[test]
fn pods_are_trimmed_to_what_the_view_reads() {
    let mut p: Pod = serde_json::from_value(pod("web-1", "shop", "web", "10.1.0.1", true)).unwrap();
    trim_pod(&mut p);
    let v = serde_json::to_value(&p).unwrap();
    assert!(
        v["spec"].get("containers").is_none_or(|c| c == &json!([])),
        "{v}"
    );
    assert!(v["status"].get("conditions").is_none(), "{v}");
    assert!(v["metadata"].get("labels").is_none(), "{v}");
    let v = view::view(
        &Objects {
            pods: vec![Arc::new(p)],
            ..Default::default()
        },
        "cluster.local",
    );
    assert_eq!(v.members.len(), 1, "still meshed after trimming");
}

fn proxy(ns: &str, in_sync: bool, nack: Option<&str>) -> wire::ProxyStatus {
    wire::ProxyStatus {
        workload: format!("{ns}/client"),
        namespace: ns.into(),
        sent_version: 5,
        acked_version: if nack.is_some() { 4 } else { 5 },
        nacked_version: if nack.is_some() { 5 } else { 0 },
        nack_reason: nack.unwrap_or_default().into(),
        in_sync,
        ..Default::default()
    }
}

#[test]
fn a_status_says_accepted_or_why_not_and_how_the_proxies_it_concerns_are() {
    let verdict = |problems: Vec<String>| {
        status::status_of(
            &view::Verdict {
                kind: "TrafficPolicy".into(),
                namespace: Some("shop".into()),
                name: "web".into(),
                generation: Some(3),
                problems,
            },
            &[
                proxy("shop", true, None),
                proxy("shop", false, Some("document 0: too many endpoints")),
                proxy("billing", true, None),
            ],
            "2026-12-03T10:00:00Z",
        )
    };
    let ok = verdict(vec![]);
    assert_eq!(ok["observedGeneration"], 3);
    let c = &ok["conditions"][0];
    assert_eq!(
        (
            c["type"].as_str(),
            c["status"].as_str(),
            c["reason"].as_str()
        ),
        (Some("Accepted"), Some("True"), Some("Accepted"))
    );
    assert_eq!(c["lastTransitionTime"], "2026-12-03T10:00:00Z");
    assert_eq!(
        ok["proxies"],
        json!({"connected": 2, "inSync": 1, "rejecting": 1,
                                      "lastRejection": "shop/client: document 0: too many endpoints"})
    );
    let bad = verdict(vec![
        "spec.retries.attempts: must be between 1 and 10, got 0".into(),
    ]);
    let c = &bad["conditions"][0];
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("Invalid"))
    );
    assert_eq!(
        c["message"],
        "spec.retries.attempts: must be between 1 and 10, got 0"
    );
}

#[tokio::test]
async fn one_replica_holds_the_lease_until_it_stops_renewing_it() {
    let fake = Fake::default();
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Reply>>();
    let client = kube::Client::new(svc, "default");
    let server = tokio::spawn(fake.clone().serve(handle));
    let a = status::Elector::new(client.clone(), "bulwark", "cp-a".into());
    let b = status::Elector::new(client, "bulwark", "cp-b".into());
    assert!(
        a.try_hold().await.unwrap(),
        "the first replica creates the Lease"
    );
    assert!(!b.try_hold().await.unwrap(), "a held Lease is not taken");
    assert!(a.try_hold().await.unwrap(), "the holder renews it");
    let held = fake.lease.lock().unwrap().clone().unwrap();
    assert_eq!(held["spec"]["holderIdentity"], "cp-a");
    assert_eq!(held["spec"]["leaseDurationSeconds"], 15);
    // cp-a stops renewing: once the Lease is older than its duration, cp-b takes it.
    fake.lease.lock().unwrap().as_mut().unwrap()["spec"]["renewTime"] =
        json!("2026-01-01T00:00:00.000000Z");
    assert!(b.try_hold().await.unwrap(), "an expired Lease is taken");
    let held = fake.lease.lock().unwrap().clone().unwrap();
    assert_eq!(held["spec"]["holderIdentity"], "cp-b");
    assert_eq!(held["spec"]["leaseTransitions"], 1);
    assert!(!a.try_hold().await.unwrap(), "the old holder stands down");
    server.abort();
}

#[tokio::test]
async fn the_elected_replica_writes_each_objects_status_once_per_change() {
    let fake = Fake::default();
    fake.apply(
        POLICIES,
        policy(
            "web",
            "shop",
            json!({"targetRef": {"kind": "Service", "name": "web"}}),
        ),
        false,
    );
    fake.apply(
        POLICIES,
        policy(
            "bad",
            "shop",
            json!({"targetRef": {"kind": "Service", "name": "web"},
                                     "retries": {"attempts": 0}}),
        ),
        false,
    );
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Reply>>();
    let client = kube::Client::new(svc, "default");
    let server = tokio::spawn(fake.clone().serve(handle));
    let state = Arc::new(State::new());
    let elector = status::Elector::new(client.clone(), "bulwark", "cp-a".into());
    let source = tokio::spawn(run(
        state.clone(),
        client,
        "cluster.local".into(),
        false,
        Some(elector),
    ));
    let patches = || fake.patches.lock().unwrap().clone();
    until("both statuses are written", || patches().len() >= 2).await;
    let of = |name: &str| {
        patches()
            .into_iter()
            .rev()
            .find(|(p, _)| {
                p == &format!(
                    "/apis/bulwark.dev/v1alpha1/namespaces/shop/trafficpolicies/{name}/status"
                )
            })
            .map(|(_, b)| b)
            .unwrap_or_else(|| panic!("no status for {name}: {:?}", patches()))
    };
    let web = of("web");
    assert_eq!(web["status"]["conditions"][0]["status"], "True", "{web}");
    assert_eq!(web["status"]["observedGeneration"], 1);
    let bad = of("bad");
    assert_eq!(bad["status"]["conditions"][0]["reason"], "Invalid", "{bad}");
    assert!(
        bad["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.retries.attempts"),
        "{bad}"
    );
    // Nothing changed: nothing is written again.
    let n = patches().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(patches().len(), n, "{:?}", patches());
    source.abort();
    server.abort();
}

//! Policy documents as typed values: a test says `Backend::new("api").replicas(0..3)` and
//! `TrafficPolicy::for_backend("api").retries(Retries::attempts(3))`, and [`Policy::to_yaml`]
//! writes the file the control plane reads. Each document is written as JSON (YAML is a
//! superset of it), one per `---` section. The harness builds these itself rather than using
//! the API crate's types, so a test keeps meaning what it says when those types change.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The namespace every test document lives in.
pub const NAMESPACE: &str = "shop";

const API_VERSION: &str = "bulwark.dev/v1alpha1";

/// A duration as the policy reads it: whole seconds as `Ns`, otherwise `Nms`.
fn duration(d: Duration) -> Value {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) && ms > 0 {
        format!("{}s", ms / 1000).into()
    } else {
        format!("{ms}ms").into()
    }
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    duration(*d).serialize(s)
}

fn document(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    })
}

/// The documents of one policy file.
#[derive(Debug, Clone, Default)]
pub struct Policy(Vec<Document>);

/// One document of a [`Policy`].
#[derive(Debug, Clone)]
pub enum Document {
    /// See [`Backend`].
    Backend(Backend),
    /// See [`TrafficPolicy`].
    TrafficPolicy(TrafficPolicy),
}

impl From<Backend> for Document {
    fn from(b: Backend) -> Self {
        Self::Backend(b)
    }
}

impl From<TrafficPolicy> for Document {
    fn from(p: TrafficPolicy) -> Self {
        Self::TrafficPolicy(p)
    }
}

impl<D: Into<Document>> From<D> for Policy {
    fn from(d: D) -> Self {
        Self(vec![d.into()])
    }
}

impl Policy {
    /// No documents yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a document after those already there.
    pub fn with(mut self, d: impl Into<Document>) -> Self {
        self.0.push(d.into());
        self
    }

    /// The file's text, with endpoints that name replica N given `replicas[N]`'s address.
    pub fn to_yaml(&self, replicas: &[Ipv4Addr]) -> Result<String> {
        let docs = self
            .0
            .iter()
            .map(|d| {
                let v = match d {
                    Document::Backend(b) => b.to_json(replicas)?,
                    Document::TrafficPolicy(p) => p.to_json(),
                };
                Ok(serde_json::to_string_pretty(&v)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(docs.join("\n---\n") + "\n")
    }
}

/// Where a Backend sends traffic.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A replica of a [`crate::policy::PolicyMesh`] (by index) on `port`.
    Replica {
        /// Index of the replica.
        index: usize,
        /// Its port.
        port: u16,
    },
    /// A literal `host:port` (an address, or a name looked up over DNS).
    Address(String),
}

/// A `Backend` in the `shop` namespace: a name for a set of endpoints.
#[derive(Debug, Clone)]
pub struct Backend {
    name: String,
    endpoints: Vec<Endpoint>,
}

impl Backend {
    /// A Backend with no endpoints yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            endpoints: Vec::new(),
        }
    }

    /// The replicas in `indexes`, on the test server's HTTP port 8080.
    pub fn replicas(self, indexes: impl IntoIterator<Item = usize>) -> Self {
        self.replicas_on(indexes, 8080)
    }

    /// The replicas in `indexes`, on `port`.
    pub fn replicas_on(mut self, indexes: impl IntoIterator<Item = usize>, port: u16) -> Self {
        self.endpoints.extend(
            indexes
                .into_iter()
                .map(|index| Endpoint::Replica { index, port }),
        );
        self
    }

    /// A literal `host:port`.
    pub fn endpoint(mut self, address: impl std::fmt::Display) -> Self {
        self.endpoints.push(Endpoint::Address(address.to_string()));
        self
    }

    fn to_json(&self, replicas: &[Ipv4Addr]) -> Result<Value> {
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| match e {
                Endpoint::Replica { index, port } => replicas
                    .get(*index)
                    .map(|ip| format!("{ip}:{port}"))
                    .with_context(|| {
                        format!("Backend {} names replica {index}, not started", self.name)
                    }),
                Endpoint::Address(a) => Ok(a.clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(document(
            "Backend",
            &self.name,
            json!({ "endpoints": endpoints }),
        ))
    }
}

/// Failures a retry may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// Any 5xx response.
    Status5xx,
    /// 502, 503, 504 or a connect failure.
    GatewayError,
    /// The connection was reset before a response.
    Reset,
    /// The endpoint could not be connected to.
    ConnectFailure,
    /// The HTTP/2 stream was refused.
    RefusedStream,
}

impl RetryOn {
    fn as_str(self) -> &'static str {
        match self {
            Self::Status5xx => "5xx",
            Self::GatewayError => "gateway-error",
            Self::Reset => "reset",
            Self::ConnectFailure => "connect-failure",
            Self::RefusedStream => "refused-stream",
        }
    }
}

/// How a Backend's endpoints are picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// The default: lowest peak-EWMA latency of two random picks.
    PeakEwma,
    /// In turn (keeps sending to a bad endpoint until it is ejected).
    RoundRobin,
    /// Fewest requests in flight.
    LeastRequest,
}

impl Algorithm {
    fn as_str(self) -> &'static str {
        match self {
            Self::PeakEwma => "peakEwma",
            Self::RoundRobin => "roundRobin",
            Self::LeastRequest => "leastRequest",
        }
    }
}

/// A policy section: the fields set so far, by their policy names.
#[derive(Debug, Clone, Default)]
struct Fields(Map<String, Value>);

impl Fields {
    fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }
}

/// `spec.retries`.
#[derive(Debug, Clone)]
pub struct Retries(Fields);

impl Retries {
    /// At most `n` tries in all (1: no retries).
    pub fn attempts(n: u32) -> Self {
        Self(Fields::default().set("attempts", n))
    }

    /// The failures retried.
    pub fn on(self, conditions: impl IntoIterator<Item = RetryOn>) -> Self {
        let c: Vec<Value> = conditions.into_iter().map(|c| c.as_str().into()).collect();
        Self(self.0.set("conditions", c))
    }

    /// Retries are at most `budget.ratio` of requests, plus `budget.min_per_second`.
    pub fn budget(self, budget: RetryBudget) -> Self {
        Self(self.0.set("budget", to_value(&budget)))
    }
}

/// `spec.retries.budget`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries allowed per request seen.
    pub ratio: f64,
    /// Retries allowed per second whatever the ratio.
    pub min_per_second: u32,
    /// The window requests and retries are counted over.
    #[serde(serialize_with = "serialize_duration")]
    pub window: Duration,
}

/// `spec.outlierDetection`.
#[derive(Debug, Clone, Default)]
pub struct OutlierDetection(Fields);

impl OutlierDetection {
    /// Nothing set: the policy's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ejects after `n` 5xx in a row (0: never for this reason).
    pub fn consecutive_5xx(self, n: u32) -> Self {
        Self(self.0.set("consecutive5xx", n))
    }

    /// Ejects after `n` gateway errors (502, 503, 504, timeouts, resets) in a row.
    pub fn consecutive_gateway_errors(self, n: u32) -> Self {
        Self(self.0.set("consecutiveGatewayErrors", n))
    }

    /// Ejects an endpoint whose p90 is over `factor` times the peers' median, once it has
    /// served `request_volume` requests in an interval.
    pub fn latency(self, factor: f64, request_volume: u32) -> Self {
        let l = json!({"factor": factor, "requestVolume": request_volume});
        Self(self.0.set("latency", l))
    }

    /// How often the latency and rate checks run.
    pub fn interval(self, d: Duration) -> Self {
        Self(self.0.set("interval", duration(d)))
    }

    /// How long a first ejection lasts.
    pub fn base_ejection_time(self, d: Duration) -> Self {
        Self(self.0.set("baseEjectionTime", duration(d)))
    }

    /// At most this share of endpoints ejected at once, in percent.
    pub fn max_ejection_percent(self, p: u8) -> Self {
        Self(self.0.set("maxEjectionPercent", p))
    }

    /// Below this share of healthy endpoints, in percent, ejections are ignored.
    pub fn panic_threshold(self, p: u8) -> Self {
        Self(self.0.set("panicThreshold", p))
    }
}

/// `spec.timeouts`.
#[derive(Debug, Clone, Default)]
pub struct Timeouts(Fields);

impl Timeouts {
    /// Nothing set: the policy's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The whole request, retries included.
    pub fn request(self, d: Duration) -> Self {
        Self(self.0.set("request", duration(d)))
    }

    /// Each try.
    pub fn per_try(self, d: Duration) -> Self {
        Self(self.0.set("perTry", duration(d)))
    }
}

/// `spec.limits`: the bulkhead.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Requests in flight at once.
    pub max_concurrent_requests: u32,
    /// Requests waiting for a slot.
    pub max_pending: u32,
    /// How long a request waits for a slot.
    #[serde(serialize_with = "serialize_duration")]
    pub queue_timeout: Duration,
}

/// `spec.routes[]`.
#[derive(Debug, Clone)]
pub struct Route {
    fields: Fields,
    matches: Fields,
}

impl Route {
    /// A route named `name` that matches everything until told otherwise.
    pub fn new(name: &str) -> Self {
        Self {
            fields: Fields::default().set("name", name),
            matches: Fields::default(),
        }
    }

    /// Matches paths starting with `prefix`.
    pub fn path_prefix(mut self, prefix: &str) -> Self {
        self.matches = self.matches.set("pathPrefix", prefix);
        self
    }

    /// Matches one method.
    pub fn method(mut self, method: &str) -> Self {
        self.matches = self.matches.set("method", method);
        self
    }

    /// Sends a second try when the first has not answered within `hedging.delay`.
    pub fn hedging(mut self, hedging: Hedging) -> Self {
        self.fields = self.fields.set("hedging", to_value(&hedging));
        self
    }

    fn to_json(&self) -> Value {
        let mut v = self.fields.0.clone();
        v.insert("match".into(), Value::Object(self.matches.0.clone()));
        Value::Object(v)
    }
}

/// `spec.routes[].hedging`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hedging {
    /// How long the first try has before a hedge is sent.
    #[serde(serialize_with = "serialize_duration")]
    pub delay: Duration,
    /// Hedges allowed per request seen.
    pub budget_ratio: f64,
}

fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).expect("policy sections are plain data")
}

/// A `TrafficPolicy` for one Backend (named like it).
#[derive(Debug, Clone)]
pub struct TrafficPolicy {
    backend: String,
    spec: Fields,
    routes: Vec<Route>,
}

impl TrafficPolicy {
    /// A policy that targets the Backend `name` and sets nothing yet.
    pub fn for_backend(name: &str) -> Self {
        Self {
            backend: name.into(),
            spec: Fields::default().set("targetRef", json!({"kind": "Backend", "name": name})),
            routes: Vec::new(),
        }
    }

    /// See [`Retries`].
    pub fn retries(mut self, r: Retries) -> Self {
        self.spec = self.spec.set("retries", r.0.0);
        self
    }

    /// See [`OutlierDetection`].
    pub fn outlier(mut self, o: OutlierDetection) -> Self {
        self.spec = self.spec.set("outlierDetection", o.0.0);
        self
    }

    /// `spec.loadBalancer.algorithm`.
    pub fn load_balancer(mut self, a: Algorithm) -> Self {
        self.spec = self
            .spec
            .set("loadBalancer", json!({"algorithm": a.as_str()}));
        self
    }

    /// See [`Timeouts`].
    pub fn timeouts(mut self, t: Timeouts) -> Self {
        self.spec = self.spec.set("timeouts", t.0.0);
        self
    }

    /// See [`Limits`].
    pub fn limits(mut self, l: Limits) -> Self {
        self.spec = self.spec.set("limits", to_value(&l));
        self
    }

    /// Adds a route after those already there.
    pub fn route(mut self, r: Route) -> Self {
        self.routes.push(r);
        self
    }

    fn to_json(&self) -> Value {
        let mut spec = self.spec.0.clone();
        if !self.routes.is_empty() {
            let routes = self.routes.iter().map(Route::to_json).collect();
            spec.insert("routes".into(), Value::Array(routes));
        }
        document("TrafficPolicy", &self.backend, Value::Object(spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_written_as_json_documents_with_replica_addresses() {
        let p = Policy::new()
            .with(Backend::new("api").replicas(0..2).endpoint("db.test:5432"))
            .with(
                TrafficPolicy::for_backend("api")
                    .retries(Retries::attempts(3).on([RetryOn::Status5xx, RetryOn::Reset]))
                    .timeouts(Timeouts::new().request(Duration::from_millis(600)))
                    .outlier(OutlierDetection::new().interval(Duration::from_secs(1)))
                    .route(Route::new("reads").method("GET").hedging(Hedging {
                        delay: Duration::from_millis(30),
                        budget_ratio: 0.5,
                    })),
            );
        let ips = [Ipv4Addr::new(10, 0, 0, 4), Ipv4Addr::new(10, 0, 0, 5)];
        let text = p.to_yaml(&ips).expect("renders");
        let docs: Vec<Value> = text
            .split("\n---\n")
            .map(|d| serde_json::from_str(d).expect("each document is JSON"))
            .collect();
        assert_eq!(
            docs[0]["spec"]["endpoints"],
            json!(["10.0.0.4:8080", "10.0.0.5:8080", "db.test:5432"])
        );
        let spec = &docs[1]["spec"];
        assert_eq!(spec["targetRef"], json!({"kind": "Backend", "name": "api"}));
        assert_eq!(spec["retries"]["conditions"], json!(["5xx", "reset"]));
        assert_eq!(spec["timeouts"]["request"], "600ms");
        assert_eq!(spec["outlierDetection"]["interval"], "1s");
        assert_eq!(
            spec["routes"][0],
            json!({"name": "reads", "match": {"method": "GET"},
                   "hedging": {"delay": "30ms", "budgetRatio": 0.5}})
        );
        assert!(
            Policy::from(Backend::new("x").replicas([3]))
                .to_yaml(&ips)
                .is_err()
        );
    }
}

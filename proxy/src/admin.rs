//! The admin port: metrics, percentiles, readiness, liveness, the running config, learned
//! opaque ports, the live page (`admin/page.html`), and (opt-in, loopback only) shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::drain::Drain;
use crate::identity::Identity;
use crate::inbound::authz::Journal;
use crate::inbound::callers::Callers;
use crate::lock::lock;
use crate::metrics::encode::{Format, to_openmetrics};
use crate::metrics::{Metrics, ProcessStats};
use crate::outbound::registry::Registry;
use crate::snapshot::SharedSnapshot;
use crate::transport::detect::OpaqueLearner;
use crate::transport::mesh::MeshTls;

/// State of the iptables redirection as the proxy last saw it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum RedirectState {
    /// Verification is turned off (`--verify-redirect=false`).
    NotRequired,
    /// Not verified yet, with the last reason.
    Unverified(String),
    /// The rules are in place.
    Verified,
}

/// What `/ready` is made of.
#[derive(Debug)]
pub struct Readiness {
    /// Every listener is bound.
    pub listeners_bound: AtomicBool,
    /// Redirection state.
    pub redirect: Mutex<RedirectState>,
    /// With a control plane: whether its first snapshot was applied. `None` without one.
    pub snapshot_applied: Option<Arc<AtomicBool>>,
    /// With mesh identity on: the first certificate is awaited.
    pub identity: Option<Arc<Identity>>,
}

#[derive(Serialize)]
struct ReadyBody<'a> {
    ready: bool,
    listeners_bound: bool,
    redirect: &'a RedirectState,
    /// Version of the applied snapshot (0: none; flags only).
    snapshot_version: u64,
    /// Whether a control plane's first snapshot is still awaited.
    awaiting_snapshot: bool,
    /// Whether the first mesh certificate is still awaited.
    awaiting_identity: bool,
    draining: bool,
}

/// Everything the admin server reads.
#[derive(Debug)]
pub struct Admin {
    /// The running configuration (`/config_dump`, `/shutdown`'s switch).
    pub cfg: Arc<Config>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Ports learned as server-speaks-first.
    pub learner: Arc<OpaqueLearner>,
    /// The current policy.
    pub snapshot: SharedSnapshot,
    /// Every target's run-time state (`/outliers`, endpoint gauges).
    pub registry: Arc<Registry>,
    /// Shutdown signal (`/shutdown`, and `/ready` while draining).
    pub drain: Drain,
    /// Readiness inputs.
    pub readiness: Arc<Readiness>,
    /// The log filter, when it may be changed at run time (`/log-level`).
    pub log: Option<Arc<dyn LogControl>>,
    /// Mesh TLS (its handshake counters), when identity is on.
    pub mesh: Option<Arc<MeshTls>>,
    /// Recent authorization decisions (`/authz`) and their counters.
    pub journal: Arc<Journal>,
    /// Inbound requests by caller identity.
    pub callers: Arc<Callers>,
    /// The mesh identity, when on (`/identity`).
    pub identity: Option<Arc<Identity>>,
}

/// The process's log filter, read and replaced at run time.
pub trait LogControl: Send + Sync + std::fmt::Debug {
    /// The filter in force, as `BULWARK_LOG` writes it.
    fn current(&self) -> String;
    /// Replaces it; an error says why the filter does not parse.
    fn set(&self, filter: &str) -> Result<(), String>;
}

/// Serves the admin port until the process exits (it keeps answering while draining, so
/// probes see `/ready` turn 503).
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&admin, peer, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("a response built from valid static parts")
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    reply(status, "application/json", body)
}

/// The live page: one self-contained file polling `/stats`, `/outliers` and `/metrics`,
/// so it works where nothing can be fetched from outside the cluster.
const PAGE: &str = include_str!("admin/page.html");

fn page() -> Response<Full<Bytes>> {
    let mut res = reply(StatusCode::OK, "text/html; charset=utf-8", PAGE);
    // Never a copy cached before an upgrade: the page must match the JSON it reads.
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

/// Routes one admin request. Pure apart from reading shared state and, for `/shutdown`,
/// signalling the drain.
fn route(admin: &Admin, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let s = admin;
    let path = req.uri().path();
    let method = req.method();
    if path == "/shutdown" {
        return shutdown(admin, peer, method);
    }
    if path == "/log-level" {
        return log_level(admin, peer, method, req.uri().query());
    }
    if method != Method::GET && method != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
    }
    match path {
        "/metrics" => {
            let accept = req.headers().get(header::ACCEPT);
            let format = Format::from_accept(accept.and_then(|v| v.to_str().ok()));
            let mut text = s.metrics.render_as(
                format,
                &s.learner.learned(Instant::now()),
                &ProcessStats::read(),
                &s.registry.gauges(),
            );
            if let Some(i) = &s.identity {
                i.render(&mut text);
            }
            if let Some(m) = &s.mesh {
                m.render(&mut text);
            }
            s.journal.render(&mut text);
            s.callers.render(&mut text);
            if format == Format::OpenMetrics {
                text = to_openmetrics(&text);
            }
            reply(StatusCode::OK, format.content_type(), text)
        }
        "/stats" => json(
            StatusCode::OK,
            &serde_json::json!({
                "latency": s.metrics.stats(),
                "requests": s.metrics.request_counts(),
                "process": ProcessStats::read(),
                "learned_opaque_ports": s.learner.learned(Instant::now()),
                "connections_open": {
                    "inbound": s.metrics.connections_open(crate::metrics::Direction::Inbound),
                    "outbound": s.metrics.connections_open(crate::metrics::Direction::Outbound),
                },
            }),
        ),
        "/ready" => {
            let r = &admin.readiness;
            let redirect = lock(&r.redirect).clone();
            let listeners_bound = r.listeners_bound.load(Ordering::Acquire);
            let draining = s.drain.is_draining();
            let redirect_ok = matches!(
                redirect,
                RedirectState::Verified | RedirectState::NotRequired
            );
            let awaiting_snapshot = r
                .snapshot_applied
                .as_ref()
                .is_some_and(|a| !a.load(Ordering::Acquire));
            let awaiting_identity = r.identity.as_ref().is_some_and(|i| !i.is_ready());
            let ready = listeners_bound
                && redirect_ok
                && !draining
                && !awaiting_snapshot
                && !awaiting_identity;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = ReadyBody {
                ready,
                listeners_bound,
                redirect: &redirect,
                snapshot_version: s.snapshot.load().version,
                awaiting_snapshot,
                awaiting_identity,
                draining,
            };
            json(status, &body)
        }
        "/" | "/dashboard" => page(),
        "/live" => reply(StatusCode::OK, "text/plain", "live\n"),
        "/config_dump" => json(
            StatusCode::OK,
            &serde_json::json!({ "config": &*s.cfg, "snapshot": &**s.snapshot.load() }),
        ),
        "/detect" => json(StatusCode::OK, &s.learner.learned(Instant::now())),
        "/outliers" => {
            let mut report = s.registry.report();
            let snapshot = s.snapshot.load();
            for e in report.iter_mut().flat_map(|t| t.endpoints.iter_mut()) {
                e.pod = e
                    .address
                    .parse()
                    .ok()
                    .and_then(|a| snapshot.endpoint_owner(a))
                    .map(str::to_string);
            }
            json(StatusCode::OK, &report)
        }
        "/identity" => match &s.identity {
            Some(i) => json(StatusCode::OK, &i.report(std::time::SystemTime::now())),
            None => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "mesh identity is off (it takes --trust-anchors and --identity-token-file)\n",
            ),
        },
        "/authz" => {
            let snapshot = s.snapshot.load();
            let w = &s.cfg.workload;
            let policies: Vec<&str> = snapshot
                .authz
                .policies
                .iter()
                .filter(|p| p.workload == (w.namespace.clone(), w.name.clone()))
                .map(|p| p.name.as_str())
                .collect();
            let body = serde_json::json!({
                "workload": format!("{}/{}", w.namespace, w.name),
                "default": snapshot.authz.default,
                "policies": policies,
                "recent": s.journal.recent(),
            });
            json(StatusCode::OK, &body)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "endpoints: / /dashboard /metrics /stats /ready /live /config_dump /detect /outliers /identity /authz /log-level /shutdown\n",
        ),
    }
}

/// `GET /log-level`: the filter in force. `PUT /log-level?level=FILTER` (loopback only, as
/// any app in the pod could otherwise turn on debug logs of every request): replaces it.
fn log_level(
    admin: &Admin,
    peer: SocketAddr,
    method: &Method,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let Some(log) = &admin.log else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "no run-time log control\n",
        );
    };
    if method == Method::GET {
        return reply(StatusCode::OK, "text/plain", format!("{}\n", log.current()));
    }
    if method != Method::PUT && method != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET, or PUT /log-level?level=FILTER\n",
        );
    }
    if !peer.ip().is_loopback() {
        return reply(
            StatusCode::FORBIDDEN,
            "text/plain",
            "the log level is changed from loopback only\n",
        );
    }
    let Some(filter) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("level="))
    else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "say the filter: /log-level?level=debug (or info,bulwark_proxy=debug)\n",
        );
    };
    let filter = filter.replace("%2C", ",").replace("%3D", "=");
    match log.set(&filter) {
        Ok(()) => {
            tracing::info!(%peer, filter = %filter, "log filter changed on the admin port");
            reply(StatusCode::OK, "text/plain", format!("{filter}\n"))
        }
        Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
    }
}

/// `POST /shutdown`: off unless enabled, and only from loopback, because any app in the pod
/// can reach the admin port (the lesson of CVE-2024-40632).
fn shutdown(admin: &Admin, peer: SocketAddr, method: &Method) -> Response<Full<Bytes>> {
    if !admin.cfg.admin_shutdown {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "shutdown endpoint is disabled (--admin-shutdown)\n",
        );
    }
    if method != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST\n");
    }
    if !peer.ip().is_loopback() {
        return reply(
            StatusCode::FORBIDDEN,
            "text/plain",
            "shutdown is accepted from loopback only\n",
        );
    }
    tracing::info!(%peer, "shutdown requested on the admin port");
    admin.drain.signal();
    reply(StatusCode::ACCEPTED, "text/plain", "draining\n")
}

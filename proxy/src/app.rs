//! Wires the proxy together: bind the listeners and the admin port, verify redirection,
//! serve until the shutdown signal, then drain.

use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

use crate::accept::{self, Accept};
use crate::admin::{self, Admin, LogControl, Readiness, RedirectState};
use crate::config::Config;
use crate::discovery;
use crate::drain::Drain;
use crate::http::Hop;
use crate::http::access_log::AccessLog;
use crate::http::spans::Spans;
use crate::inbound::Inbound;
use crate::inbound::authz::Journal;
use crate::inbound::callers::Callers;
use crate::init::{self, InitSpec, Iptables, Ipv6Mode};
use crate::lock::lock;
use crate::metrics::{Direction, Metrics};
use crate::outbound::Outbound;
use crate::outbound::registry::Registry;
use crate::pool::Pools;
use crate::snapshot::{self, Snapshot};
use crate::transport::detect::OpaqueLearner;
use crate::transport::mesh::MeshTls;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A listener could not bind.
    #[error("cannot bind the {what} listener on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Its address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The OTLP exporter could not be set up.
    #[error("{0}")]
    Spans(#[source] crate::http::spans::SpansError),
    /// A `--policy` file has problems; each line names file, position, field and reason.
    #[error("invalid policy:\n{0}")]
    Policy(String),
    /// The configuration breaks a cross-field rule.
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The trust anchors cannot be read, or the identity is not a valid SPIFFE ID.
    #[error("mesh identity: {0}")]
    Identity(String),
}

fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    let err = |source| AppError::Bind { what, addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    if addr.is_ipv6() {
        // Keep the IPv6 listener to IPv6: the IPv4 one is bound separately.
        socket2::SockRef::from(&socket)
            .set_only_v6(true)
            .map_err(err)?;
    }
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)
}

/// The listeners `cfg` asks for, with their direction.
fn listener_addrs(cfg: &Config) -> Vec<(&'static str, Direction, SocketAddr)> {
    let mut v = vec![
        ("outbound", Direction::Outbound, cfg.outbound_addr),
        ("inbound", Direction::Inbound, cfg.inbound_addr),
    ];
    if cfg.ipv6 {
        v.push((
            "outbound IPv6",
            Direction::Outbound,
            SocketAddr::from((Ipv6Addr::LOCALHOST, cfg.outbound_addr.port())),
        ));
        v.push((
            "inbound IPv6",
            Direction::Inbound,
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, cfg.inbound_addr.port())),
        ));
    }
    v
}

/// Runs the proxy until `shutdown` resolves (or `POST /shutdown`), then drains for at most
/// the grace period. `log`, when given, lets the admin port change the log filter.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()>,
    log: Option<Arc<dyn LogControl>>,
) -> Result<(), AppError> {
    cfg.validate()?;
    let (identity, control_tls) = crate::identity::from_config(&cfg).map_err(AppError::Identity)?;
    let cfg = Arc::new(cfg);
    let drain = Drain::new();
    let metrics = Arc::new(Metrics::new(cfg.metrics_max_authorities));
    let registry = Arc::new(Registry::new(
        cfg.dns.clone(),
        cfg.max_policy_endpoints,
        metrics.clone(),
    ));
    let learner = Arc::new(OpaqueLearner::new(
        cfg.detect.learn_threshold,
        cfg.detect.learn_ttl,
    ));
    let flags = Snapshot::from_flags(cfg.detect.opaque_ports.iter().copied().collect());
    let snapshot = snapshot::shared(flags);
    if !cfg.policy_paths.is_empty() {
        let local = local_snapshot(&cfg, &registry)?;
        tracing::info!(
            documents = local.documents.len(),
            targets = local.routes.targets.len(),
            "policy loaded from files"
        );
        snapshot.store(Arc::new(local));
    }
    let snapshot_applied = cfg
        .control_plane
        .as_ref()
        .map(|_| Arc::new(AtomicBool::new(false)));
    let readiness = Arc::new(Readiness {
        snapshot_applied: snapshot_applied.clone(),
        identity: identity.clone(),
        listeners_bound: AtomicBool::new(false),
        redirect: Mutex::new(if cfg.verify_redirect {
            RedirectState::Unverified("not checked yet".into())
        } else {
            RedirectState::NotRequired
        }),
    });

    let mesh = identity
        .as_ref()
        .map(|i| Arc::new(MeshTls::new(i.bundle.clone(), i.certs.clone())));
    let journal = Arc::new(Journal::default());
    let callers = Arc::new(Callers::default());
    let admin_listener = bind("admin", cfg.admin_addr)?;
    let mut listeners = Vec::new();
    for (what, direction, addr) in listener_addrs(&cfg) {
        listeners.push((direction, bind(what, addr)?));
        tracing::info!(%addr, what, "listening");
    }
    tracing::info!(addr = %cfg.admin_addr, "admin listening");
    tokio::spawn(admin::serve(
        admin_listener,
        Arc::new(Admin {
            cfg: cfg.clone(),
            metrics: metrics.clone(),
            learner: learner.clone(),
            snapshot: snapshot.clone(),
            registry: registry.clone(),
            drain: drain.clone(),
            readiness: readiness.clone(),
            identity: identity.clone(),
            log,
            mesh: mesh.clone(),
            journal: journal.clone(),
            callers: callers.clone(),
        }),
    ));
    let pools = Arc::new(Pools::new(cfg.http.clone(), cfg.tcp.clone(), mesh.clone()));
    let access_log = AccessLog::start(
        cfg.http.access_log,
        cfg.http.access_log_sample,
        metrics.clone(),
    );
    let spans = match &cfg.http.otlp_endpoint {
        Some(endpoint) => {
            let w = &cfg.workload;
            let workload = format!("{}/{}", w.namespace, w.name);
            let s = Spans::start(endpoint, &workload).map_err(AppError::Spans)?;
            tracing::info!(%endpoint, "exporting spans of sampled requests over OTLP");
            Some(Arc::new(s))
        }
        None => None,
    };
    let hop = |direction| Hop {
        direction,
        access_log: access_log.clone(),
        spans: spans.clone(),
        metrics: metrics.clone(),
        pools: pools.clone(),
        mesh: mesh.clone(),
        drain: drain.clone(),
        limits: cfg.http.clone(),
        tcp: cfg.tcp.clone(),
    };
    let inbound = Arc::new(Inbound {
        hop: hop(Direction::Inbound),
        snapshot: snapshot.clone(),
        workload: (cfg.workload.namespace.clone(), cfg.workload.name.clone()),
        journal: journal.clone(),
        callers: callers.clone(),
        probes: crate::inbound::probes::Probes::new(&cfg.inbound_probes),
    });
    let outbound = Arc::new(Outbound {
        hop: hop(Direction::Outbound),
        snapshot: snapshot.clone(),
    });
    let accept = |direction| {
        Arc::new(Accept {
            direction,
            detect: cfg.detect.clone(),
            keepalive: cfg.tcp.keepalive,
            learner: learner.clone(),
            find_tls_everywhere: direction == Direction::Inbound && mesh.is_some(),
            snapshot: snapshot.clone(),
            metrics: metrics.clone(),
            drain: drain.clone(),
        })
    };
    let mut accept_loops = Vec::new();
    for (direction, l) in listeners {
        let a = accept(direction);
        accept_loops.push(match direction {
            Direction::Inbound => tokio::spawn(accept::serve(l, a, inbound.clone())),
            Direction::Outbound => tokio::spawn(accept::serve(l, a, outbound.clone())),
        });
    }
    readiness.listeners_bound.store(true, Ordering::Release);
    if cfg.verify_redirect {
        tokio::spawn(verify_redirect(
            cfg.clone(),
            readiness.clone(),
            drain.clone(),
        ));
    }
    if let (Some(identity), Some(anchors)) = (&identity, &cfg.identity.trust_anchors) {
        tokio::spawn(crate::identity::bundle::follow(
            anchors.clone(),
            identity.bundle.clone(),
            drain.clone(),
        ));
    }
    if let (Some(endpoint), Some(identity), Some(tls), Some(token_file)) = (
        cfg.control_plane.clone(),
        identity.clone(),
        control_tls.clone(),
        cfg.identity.token_file.clone(),
    ) {
        let certifier = crate::identity::Certifier {
            endpoint,
            tls,
            token_file,
        };
        tokio::spawn(crate::identity::run(identity, certifier, drain.clone()));
    }
    if let (Some(endpoint), Some(applied)) = (cfg.control_plane.clone(), snapshot_applied) {
        let w = &cfg.workload;
        let info = discovery::ProxyInfo {
            workload: format!("{}/{}", w.namespace, w.name),
            namespace: w.namespace.clone(),
            service_account: w.service_account.clone(),
            pod_ips: w.pod_ips.clone(),
            pod: w.pod.clone(),
        };
        let channel = discovery::Channel {
            endpoint,
            tls: control_tls,
            identity: identity.clone(),
        };
        tokio::spawn(discovery::run(
            channel,
            info,
            snapshot.clone(),
            registry.clone(),
            applied,
            metrics.clone(),
            drain.clone(),
        ));
    }
    serve_until(shutdown, &drain, accept_loops, &cfg).await;
    if let Some(s) = spans {
        // The last batch goes out before the process ends; the SDK's flush blocks.
        let _ = tokio::task::spawn_blocking(move || s.shutdown()).await;
    }
    Ok(())
}

/// Waits for the shutdown signal, then drains: listeners stop, connections finish within
/// the grace period.
async fn serve_until(
    shutdown: impl Future<Output = ()>,
    drain: &Drain,
    accept_loops: Vec<tokio::task::JoinHandle<()>>,
    cfg: &Config,
) {
    tokio::select! {
        _ = shutdown => tracing::info!("shutdown signal received; draining"),
        _ = drain.signaled() => tracing::info!("draining"),
    }
    drain.signal();
    for l in accept_loops {
        let _ = l.await;
    }
    let left = drain.wait(cfg.shutdown_grace).await;
    if left > 0 {
        tracing::warn!(left, grace = ?cfg.shutdown_grace, "grace period ended with connections still open");
    } else {
        tracing::info!("drained");
    }
}

/// The snapshot of `--policy` files: every problem is reported at once, with its file, line,
/// field and reason; documents of the workload's namespace and the MeshConfig apply.
fn local_snapshot(cfg: &Config, registry: &Registry) -> Result<Snapshot, AppError> {
    let loaded = bulwark_api::load::load_paths(&cfg.policy_paths);
    if !loaded.is_valid() {
        let lines: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        return Err(AppError::Policy(lines.join("\n")));
    }
    let namespace = cfg.workload.namespace.as_str();
    let documents: Vec<_> = loaded
        .documents
        .into_iter()
        .map(|s| s.document)
        .filter(|d| {
            matches!(d, bulwark_api::policy::Document::MeshConfig(_))
                || d.metadata().namespace() == namespace
        })
        .collect();
    let opaque_ports = cfg.detect.opaque_ports.iter().copied().collect();
    Snapshot::build(0, opaque_ports, documents, Vec::new(), registry)
        .map_err(|e| AppError::Policy(e.0))
}

/// Checks the iptables rules until they are in place (every second at first, backing off
/// to every 10 s), so `/ready` turns 200 as soon as `init` has run.
async fn verify_redirect(cfg: Arc<Config>, readiness: Arc<Readiness>, drain: Drain) {
    let spec = InitSpec {
        inbound_port: cfg.inbound_addr.port(),
        outbound_port: cfg.outbound_addr.port(),
        admin_port: cfg.admin_addr.port(),
        proxy_uid: cfg.proxy_uid,
        proxy_gid: cfg.proxy_gid,
        skip_inbound_ports: vec![],
        skip_outbound_ports: vec![],
        skip_outbound_cidrs: vec![],
    };
    let mode = if cfg.ipv6 {
        Ipv6Mode::On
    } else {
        Ipv6Mode::Off
    };
    let mut wait = Duration::from_secs(1);
    while !drain.is_draining() {
        let spec = spec.clone();
        let result = tokio::task::spawn_blocking(move || {
            let tools = init::families(mode, Iptables::Auto)?;
            init::check(&spec, &tools, false)
        })
        .await;
        let state = match result {
            Ok(Ok(())) => RedirectState::Verified,
            Ok(Err(e)) => RedirectState::Unverified(e.to_string()),
            Err(e) => RedirectState::Unverified(format!("check panicked: {e}")),
        };
        let done = state == RedirectState::Verified;
        if let RedirectState::Unverified(reason) = &state {
            tracing::warn!(%reason, "redirection not verified yet");
        } else {
            tracing::info!("redirection verified");
        }
        *lock(&readiness.redirect) = state;
        if done {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = drain.signaled() => return,
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

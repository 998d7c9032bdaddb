//! The discovery client: one stream to the control plane. Every snapshot is parsed and
//! validated whole, then stored with one swap (connections already open keep the snapshot
//! they started with) and acknowledged; an invalid one is rejected with its reason and the
//! previous snapshot stays. While the control plane is away the proxy keeps serving its
//! last good snapshot and reconnects with jittered exponential backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bulwark_api::load;
use bulwark_api::policy::validate::validate;
use bulwark_api::wire::discovery_client::DiscoveryClient;
use bulwark_api::wire::{self, control_message, proxy_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::outbound::build::{ServicePortSpec, ServiceSpec};
use crate::outbound::registry::Registry;
use crate::snapshot::{SharedSnapshot, Snapshot};

/// First reconnect delay; doubled per failure up to [`BACKOFF_MAX`], fully jittered.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a connect to the control plane may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 PING period on the stream. The proxy only listens on it, so without pings a
/// half-open connection (a node gone, a partition) would never be noticed, and the proxy
/// would never reconnect to a control plane that came back elsewhere.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a PING may go unanswered before the stream is taken for dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy tells the control plane about itself in its Hello.
#[derive(Debug, Clone, Default)]
pub struct ProxyInfo {
    /// NAMESPACE/NAME.
    pub workload: String,
    /// The namespace (scopes the policy it receives).
    pub namespace: String,
    /// Service account.
    pub service_account: String,
    /// Pod IPs.
    pub pod_ips: Vec<String>,
    /// Pod name (empty outside Kubernetes).
    pub pod: String,
}

/// Why a snapshot was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Builds the next snapshot from a received one, its targets' state from `registry`; the
/// caller swaps it in. A snapshot naming more endpoints than the registry takes is rejected
/// whole.
pub fn build(
    received: &wire::Snapshot,
    current: &Snapshot,
    registry: &Registry,
) -> Result<Snapshot, Rejected> {
    let values: Vec<serde_json::Value> = serde_json::from_str(&received.documents_json)
        .map_err(|e| Rejected(format!("documents are not a JSON array: {e}")))?;
    let mut documents = Vec::with_capacity(values.len());
    let mut problems = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let name = v
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or("?");
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
        match load::document(v) {
            Ok(doc) => {
                for p in validate(&doc) {
                    problems.push(format!(
                        "document {i} ({kind} {name}): {}: {}",
                        p.path, p.reason
                    ));
                }
                documents.push(doc);
            }
            Err((path, reason)) => {
                problems.push(format!("document {i} ({kind} {name}): {path}: {reason}"))
            }
        }
    }
    let mut meshed = std::collections::BTreeMap::new();
    for (i, m) in received.meshed.iter().enumerate() {
        match (m.ip.parse::<std::net::IpAddr>(), m.identity.parse()) {
            (Ok(ip), Ok(id)) => {
                meshed.insert(ip, id);
            }
            (Err(e), _) => problems.push(format!("meshed[{i}].ip {:?}: {e}", m.ip)),
            (_, Err(e)) => problems.push(format!("meshed[{i}].identity: {e}")),
        }
    }
    let services = services(&received.services, &mut problems);
    if !problems.is_empty() {
        return Err(Rejected(problems.join("; ")));
    }
    let mut next = Snapshot::build(
        received.version,
        current.opaque_ports.clone(),
        documents,
        services,
        registry,
    )
    .map_err(|e| Rejected(e.0))?;
    next.set_meshed(meshed);
    next.discovers_services = received.discovers_services;
    next.interest = current.interest.clone();
    Ok(next)
}

/// The received Services as the route table takes them; each malformed field is a problem.
fn services(received: &[wire::Service], problems: &mut Vec<String>) -> Vec<ServiceSpec> {
    let mut out = Vec::with_capacity(received.len());
    for (i, s) in received.iter().enumerate() {
        let at = |field: &str| format!("services[{i}] ({}/{}).{field}", s.namespace, s.name);
        let mut cluster_ips = Vec::with_capacity(s.cluster_ips.len());
        for (j, ip) in s.cluster_ips.iter().enumerate() {
            match ip.parse() {
                Ok(ip) => cluster_ips.push(ip),
                Err(e) => {
                    problems.push(format!("{} {ip:?}: {e}", at(&format!("cluster_ips[{j}]"))))
                }
            }
        }
        let mut ports = Vec::with_capacity(s.ports.len());
        for (j, p) in s.ports.iter().enumerate() {
            let Some(port) = u16::try_from(p.port).ok().filter(|&p| p > 0) else {
                problems.push(format!(
                    "{}: {} is not a port",
                    at(&format!("ports[{j}].port")),
                    p.port
                ));
                continue;
            };
            let mut addrs = |list: &[String], field: &str| -> Vec<std::net::SocketAddr> {
                list.iter()
                    .enumerate()
                    .filter_map(|(k, a)| match a.parse() {
                        Ok(a) => Some(a),
                        Err(e) => {
                            problems.push(format!(
                                "{} {a:?}: {e}",
                                at(&format!("ports[{j}].{field}[{k}]"))
                            ));
                            None
                        }
                    })
                    .collect()
            };
            let ready = addrs(&p.ready, "ready");
            let terminating = addrs(&p.terminating, "terminating");
            let mut owners: Vec<(std::net::SocketAddr, String)> =
                Vec::with_capacity(p.owners.len());
            for (a, uid) in &p.owners {
                match a.parse() {
                    Ok(a) => owners.push((a, uid.clone())),
                    Err(e) => {
                        problems.push(format!("{} {a:?}: {e}", at(&format!("ports[{j}].owners"))))
                    }
                }
            }
            owners.sort();
            ports.push(ServicePortSpec {
                port,
                ready,
                terminating,
                owners,
            });
        }
        out.push(ServiceSpec {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            cluster_ips,
            ports,
        });
    }
    out
}

/// How the discovery stream reaches the control plane.
#[derive(Debug, Clone)]
pub struct Channel {
    /// The control plane's URI.
    pub endpoint: String,
    /// TLS to it, when the proxy has trust anchors.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The proxy's identity: the stream waits for its first certificate, so the control
    /// plane knows who is on it from the first connection.
    pub identity: Option<Arc<crate::identity::Identity>>,
}

/// Follows the control plane until drain. `applied` turns true with the first snapshot.
pub async fn run(
    channel: Channel,
    info: ProxyInfo,
    snapshot: SharedSnapshot,
    registry: Arc<Registry>,
    applied: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    drain: Drain,
) {
    if let Some(identity) = &channel.identity {
        tokio::select! {
            _ = identity.wait_ready() => {}
            _ = drain.signaled() => return,
        }
    }
    let endpoint = &channel.endpoint;
    let mut backoff = BACKOFF_BASE;
    while !drain.is_draining() {
        let result = tokio::select! {
            r = session(&channel, &info, &snapshot, &registry, &applied, &metrics) => r,
            _ = drain.signaled() => return,
        };
        metrics.discovery.connected.store(0, Ordering::Relaxed);
        metrics
            .discovery
            .disconnects
            .fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(got_snapshot) => {
                tracing::warn!(%endpoint, "control plane closed the stream; serving the last snapshot");
                if got_snapshot {
                    backoff = BACKOFF_BASE;
                }
            }
            Err(e) => {
                tracing::warn!(%endpoint, error = %e, "control plane unreachable; serving the last snapshot")
            }
        }
        // Full jitter: a random delay in [0, backoff), so proxies do not reconnect in step
        // (the generator is seeded from the clock: sidecars often share a PID).
        let delay = backoff.mul_f64(crate::random::unit());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = drain.signaled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One stream: Hello, then apply and answer each snapshot. Returns whether any snapshot
/// arrived (a stream that delivered is a healthy one; its end resets the backoff).
async fn session(
    channel: &Channel,
    info: &ProxyInfo,
    snapshot: &SharedSnapshot,
    registry: &Registry,
    applied: &AtomicBool,
    metrics: &Metrics,
) -> Result<bool, tonic::Status> {
    let endpoint = channel.endpoint.as_str();
    let options = bulwark_identity::channel::ChannelOptions {
        connect_timeout: CONNECT_TIMEOUT,
        keepalive: Some((KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)),
    };
    let connected = bulwark_identity::channel::connect(endpoint, channel.tls.clone(), &options)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {}", crate::error::chain(&e))))?;
    let mut client = DiscoveryClient::new(connected);
    let (tx, rx) = mpsc::channel(8);
    let mut renewals = channel.identity.as_ref().map(|i| i.subscribe());
    let hello = |not_after: i64| wire::ProxyMessage {
        message: Some(proxy_message::Message::Hello(wire::Hello {
            workload: info.workload.clone(),
            namespace: info.namespace.clone(),
            service_account: info.service_account.clone(),
            pod_ips: info.pod_ips.clone(),
            pod: info.pod.clone(),
            proxy_version: env!("CARGO_PKG_VERSION").to_string(),
            cert_not_after_unix: not_after,
        })),
    };
    let not_after = renewals.as_mut().map_or(0, |r| *r.borrow_and_update());
    let _ = tx.send(hello(not_after)).await;
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    tracing::info!(%endpoint, "connected to the control plane");
    let d = &metrics.discovery;
    d.connected.store(1, Ordering::Relaxed);
    let mut got = false;
    // Destinations noted so far are sent once the first snapshot says the control plane
    // discovers Services; new ones as they come.
    let interest = snapshot.load().interest.clone();
    let mut reported = 0;
    loop {
        if snapshot.load().discovers_services {
            let (addresses, hosts, next) = interest.since(reported);
            if next > reported {
                let msg = proxy_message::Message::Interest(wire::Interest { addresses, hosts });
                if tx
                    .send(wire::ProxyMessage { message: Some(msg) })
                    .await
                    .is_err()
                {
                    break;
                }
                reported = next;
            }
        }
        let renewed = async {
            match renewals.as_mut() {
                Some(r) => r.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let msg = tokio::select! {
            m = inbound.message() => m?,
            _ = interest.changed() => continue,
            ok = renewed => {
                // Tell the control plane the new expiry (bulwarkctl status shows it).
                let t = renewals.as_mut().map_or(0, |r| *r.borrow_and_update());
                if !ok || tx.send(hello(t)).await.is_err() {
                    renewals = None;
                }
                continue;
            }
        };
        let Some(msg) = msg else { break };
        let Some(control_message::Message::Snapshot(s)) = msg.message else {
            continue;
        };
        got = true;
        let answer = match build(&s, &snapshot.load(), registry) {
            Ok(next) => {
                let docs = next.documents.len();
                snapshot.store(Arc::new(next));
                applied.store(true, Ordering::Release);
                d.version.store(s.version, Ordering::Relaxed);
                d.applied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(version = s.version, documents = docs, "snapshot applied");
                proxy_message::Message::Ack(wire::Ack { version: s.version })
            }
            Err(Rejected(reason)) => {
                d.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(version = s.version, %reason, "snapshot rejected; keeping the previous one");
                proxy_message::Message::Nack(wire::Nack {
                    version: s.version,
                    reason,
                })
            }
        };
        if tx
            .send(wire::ProxyMessage {
                message: Some(answer),
            })
            .await
            .is_err()
        {
            break;
        }
    }
    Ok(got)
}

pub mod interest;

#[cfg(test)]
mod tests;

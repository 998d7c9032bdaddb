//! Accept loop for both directions: accept → original destination → detect → forward.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::drain::Drain;
use crate::http;
use crate::metrics::{DetectLabel, Direction, Metrics};
use crate::outbound::Router;
use crate::outbound::balance::InFlight;
use crate::outbound::outlier::Outcome as EndpointOutcome;
use crate::pool::{Pools, Version};
use crate::snapshot::SharedSnapshot;
use crate::transport::detect::{self, OpaqueLearner, Outcome, Prefixed, Protocol};
use crate::transport::{copy, orig_dst, socket};

/// What every connection task shares.
#[derive(Debug)]
pub struct Shared {
    /// The running configuration.
    pub cfg: Arc<Config>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Ports learned as server-speaks-first.
    pub learner: Arc<OpaqueLearner>,
    /// Current policy.
    pub snapshot: SharedSnapshot,
    /// Upstream HTTP pools.
    pub pools: Pools,
    /// Run-time state of policy targets (endpoints, health, budgets).
    pub router: Arc<Router>,
    /// Shutdown signal and task tracker.
    pub drain: Drain,
}

/// Accepts connections until drain, handing each to its own task.
pub async fn serve(listener: TcpListener, direction: Direction, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shared.drain.signaled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let s = shared.clone();
                shared.drain.spawn(async move {
                    handle(stream, peer, direction, &s).await;
                    s.metrics.connection_closed(direction);
                });
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, ?direction, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!(?direction, "listener closed for drain");
}

/// The decision for one connection: which protocol to forward it as, and how it was made.
fn skip_detection(shared: &Shared, port: u16) -> Option<DetectLabel> {
    if shared.snapshot.load().opaque_ports.contains(&port) {
        Some(DetectLabel::ConfiguredOpaque)
    } else if shared.learner.is_opaque(port, Instant::now()) {
        Some(DetectLabel::LearnedOpaque)
    } else {
        None
    }
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    direction: Direction,
    shared: &Arc<Shared>,
) {
    socket::tune(&stream, shared.cfg.tcp.keepalive);
    let dst = match orig_dst::original_dst(&stream) {
        Ok(dst) if Some(dst) != stream.local_addr().ok() => dst,
        _ => {
            // Connected to the proxy port directly: forwarding would loop back to us.
            shared.metrics.error(direction, "not_redirected");
            tracing::debug!(%peer, ?direction, "connection was not redirected; closing");
            shared
                .metrics
                .connection_opened(direction, Protocol::Opaque);
            return;
        }
    };
    let (label, prefix) = match skip_detection(shared, dst.port()) {
        Some(label) => (label, Bytes::new()),
        None => match detect::detect(&mut stream, shared.cfg.detect.timeout).await {
            Ok((outcome, prefix)) => {
                let label = match outcome {
                    Outcome::Detected(p) => {
                        shared.learner.record_detected(dst.port());
                        DetectLabel::Detected(p)
                    }
                    Outcome::TimedOut => {
                        if shared.learner.record_timeout(dst.port(), Instant::now()) {
                            tracing::info!(
                                port = dst.port(),
                                ?direction,
                                "learned opaque port: clients wait for the server to speak first"
                            );
                        }
                        DetectLabel::Timeout
                    }
                    Outcome::Closed => DetectLabel::Closed,
                };
                (label, prefix)
            }
            Err(e) => {
                tracing::debug!(error = %e, %peer, "read failed during detection");
                shared
                    .metrics
                    .connection_opened(direction, Protocol::Opaque);
                return;
            }
        },
    };
    let protocol = match label {
        DetectLabel::Detected(p) => p,
        _ => Protocol::Opaque,
    };
    shared.metrics.detected(direction, label);
    shared.metrics.connection_opened(direction, protocol);
    let io = Prefixed::new(prefix, stream);
    match protocol {
        Protocol::Http1 => http::serve(io, Version::Http1, direction, dst, shared.clone()).await,
        Protocol::Http2 => http::serve(io, Version::Http2, direction, dst, shared.clone()).await,
        Protocol::Tls | Protocol::Opaque => forward_opaque(io, dst, direction, shared).await,
    }
}

async fn forward_opaque(
    io: Prefixed<TcpStream>,
    dst: SocketAddr,
    direction: Direction,
    shared: &Shared,
) {
    let tcp = &shared.cfg.tcp;
    let upstream = match direction {
        Direction::Outbound => connect_balanced(dst, shared).await,
        Direction::Inbound => socket::connect(dst, tcp.connect_timeout, tcp.keepalive)
            .await
            .map(|s| (s, None)),
    };
    let (upstream, _in_flight) = match upstream {
        Ok(s) => s,
        Err(e) => {
            let reason = match e {
                socket::ConnectError::Refused { .. } => "connect_refused",
                socket::ConnectError::TimedOut { .. } => "connect_timeout",
            };
            shared.metrics.error(direction, reason);
            tracing::info!(error = %e, ?direction, "opaque connection failed upstream");
            return;
        }
    };
    match copy::bidirectional(
        io,
        upstream,
        tcp.idle_timeout,
        shared.metrics.bytes(direction),
    )
    .await
    {
        Ok(_) => {}
        Err(copy::CopyError::Idle(d)) => {
            shared.metrics.error(direction, "idle_timeout");
            tracing::debug!(%dst, idle = ?d, "opaque connection closed for idleness");
        }
        Err(e) => tracing::debug!(error = %e, %dst, "opaque connection ended with an error"),
    }
}

/// Connects an opaque connection: to the original destination, or, when it belongs to a
/// Backend, to an endpoint the balancer picks (a connection is balanced as a whole). A
/// failed connect is tried on another endpoint, up to three in all: nothing was sent yet.
/// The returned guard counts the connection on its endpoint while it lives.
async fn connect_balanced(
    dst: SocketAddr,
    shared: &Shared,
) -> Result<(TcpStream, Option<InFlight>), socket::ConnectError> {
    let tcp = &shared.cfg.tcp;
    let snapshot = shared.snapshot.load();
    let Some((target, state)) = snapshot
        .lookup(dst, None)
        .filter(|(t, _)| !t.endpoints.is_empty())
    else {
        return socket::connect(dst, tcp.connect_timeout, tcp.keepalive)
            .await
            .map(|s| (s, None));
    };
    let connect = target.default.timeouts.connect;
    // A connection counts into the target's retry budget like a request, and a connect
    // to another endpoint is a retry it pays for: a dead Backend cannot triple the SYNs.
    state.deposit(Instant::now());
    let mut tried = Vec::new();
    loop {
        let now = Instant::now();
        let Some(ep) = state.pick_connection(&tried, now) else {
            return socket::connect(dst, connect, tcp.keepalive)
                .await
                .map(|s| (s, None));
        };
        let started = Instant::now();
        let result = socket::connect(ep.addr, connect, tcp.keepalive).await;
        let outcome = if result.is_ok() {
            EndpointOutcome::Success
        } else {
            EndpointOutcome::ConnectFailure
        };
        let took = started.elapsed();
        state.record_outcome(&ep, outcome, took, Some(took));
        match result {
            Ok(s) => return Ok((s, Some(InFlight::start(&ep)))),
            Err(e) if tried.len() >= 2 || tried.contains(&ep.addr) => return Err(e),
            Err(e) if !state.withdraw_retry(Instant::now()) => {
                shared
                    .metrics
                    .count("retry_budget_exhausted", &target.key, "connect_failure");
                return Err(e);
            }
            Err(e) => {
                tracing::debug!(error = %e, endpoint = %ep.addr, "connect failed; trying another endpoint");
                shared
                    .metrics
                    .count("retries", &target.key, "connect_failure");
                tried.push(ep.addr);
            }
        }
    }
}

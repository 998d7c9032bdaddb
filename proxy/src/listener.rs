//! Accept loop for both directions: accept → original destination → detect → forward.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::drain::Drain;
use crate::http;
use crate::metrics::{DetectLabel, Direction, Metrics};
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
    let upstream = match socket::connect(dst, tcp.connect_timeout, tcp.keepalive).await {
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

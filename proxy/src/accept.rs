//! The accept loop both listeners share: accept → original destination → detect, then the
//! connection is handed to its direction's [`Room`] ([`crate::inbound`] or
//! [`crate::outbound`]), which decides everything after.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::config::DetectConfig;
use crate::drain::Drain;
use crate::error::Kind;
use crate::metrics::{DetectLabel, Direction, Metrics};
use crate::pool::Version;
use crate::snapshot::SharedSnapshot;
use crate::transport::copy::{OnFirstByte, Speaker};
use crate::transport::detect::{self, Detection, OpaqueLearner, Prefixed, Protocol};
use crate::transport::{orig_dst, socket};

/// A redirected connection, its first bytes kept for replay.
pub type Conn = Prefixed<TcpStream>;

/// A direction: what happens to a connection once its protocol is known.
pub trait Room: Send + Sync + 'static {
    /// Serves an HTTP connection to `dst`.
    fn http(
        self: Arc<Self>,
        io: Conn,
        version: Version,
        dst: SocketAddr,
    ) -> impl Future<Output = ()> + Send;
    /// Forwards an opaque (or TLS passthrough) connection to `dst`; `learn`, after a
    /// detection timeout, is told who speaks first.
    fn opaque(
        self: Arc<Self>,
        io: Conn,
        dst: SocketAddr,
        learn: Option<OnFirstByte>,
    ) -> impl Future<Output = ()> + Send;
    /// Handles a connection that opened with a TLS ClientHello; by default it is forwarded
    /// as it is.
    fn tls(self: Arc<Self>, io: Conn, dst: SocketAddr) -> impl Future<Output = ()> + Send {
        self.opaque(io, dst, None)
    }
}

/// What the accept loop takes.
#[derive(Debug)]
pub struct Accept {
    /// Which listener this is.
    pub direction: Direction,
    /// Detection timeout and learning.
    pub detect: DetectConfig,
    /// TCP keepalive set on accepted connections.
    pub keepalive: Duration,
    /// Ports learned as server-speaks-first.
    pub learner: Arc<OpaqueLearner>,
    /// Whether a port that skips protocol detection still looks for a ClientHello (an
    /// inbound proxy with mesh TLS: a meshed client speaks first, whatever the port).
    pub find_tls_everywhere: bool,
    /// The current policy (its configured opaque ports).
    pub snapshot: SharedSnapshot,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Shutdown signal and task tracker.
    pub drain: Drain,
}

/// Accepts connections until drain, handing each to its own task.
pub async fn serve<R: Room>(listener: TcpListener, accept: Arc<Accept>, room: Arc<R>) {
    let direction = accept.direction;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = accept.drain.signaled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (a, room) = (accept.clone(), room.clone());
                accept.drain.spawn(async move {
                    handle(stream, peer, &a, room).await;
                    a.metrics.connection_closed(a.direction);
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

/// Whether detection is skipped for `port`, and why.
fn skip_detection(a: &Accept, port: u16) -> Option<DetectLabel> {
    if a.snapshot.load().opaque_ports.contains(&port) {
        Some(DetectLabel::ConfiguredOpaque)
    } else if a.learner.is_opaque(port, Instant::now()) {
        Some(DetectLabel::LearnedOpaque)
    } else {
        None
    }
}

async fn handle<R: Room>(mut stream: TcpStream, peer: SocketAddr, a: &Accept, room: Arc<R>) {
    let direction = a.direction;
    socket::tune(&stream, a.keepalive);
    let dst = match orig_dst::original_dst(&stream) {
        Ok(dst) if Some(dst) != stream.local_addr().ok() => dst,
        _ => {
            // Connected to the proxy port directly: forwarding would loop back to us.
            a.metrics.error(direction, Kind::NotRedirected);
            tracing::debug!(%peer, ?direction, "connection was not redirected; closing");
            a.metrics.connection_opened(direction, Protocol::Opaque);
            return;
        }
    };
    let skip = skip_detection(a, dst.port());
    let detected = match skip {
        Some(label) if !a.find_tls_everywhere => Ok((label, Bytes::new())),
        // A port that skips detection is only looked at for a ClientHello; anything else
        // keeps the skip's label (and its opaque handling).
        _ => detect::detect(&mut stream, a.detect.timeout)
            .await
            .map(|(detection, prefix)| match (skip, detection) {
                (None, d) => (label(a, d, dst.port()), prefix),
                (Some(_), Detection::Detected(Protocol::Tls)) => {
                    (DetectLabel::Detected(Protocol::Tls), prefix)
                }
                (Some(skipped), _) => (skipped, prefix),
            }),
    };
    let (label, prefix) = match detected {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, %peer, "read failed during detection");
            a.metrics.connection_opened(direction, Protocol::Opaque);
            return;
        }
    };
    let protocol = match label {
        DetectLabel::Detected(p) => p,
        _ => Protocol::Opaque,
    };
    a.metrics.detected(direction, label);
    a.metrics.connection_opened(direction, protocol);
    // A time-out alone proves nothing (a silent client, a peer's idle pooled connection):
    // the port is learned only when the server then speaks before the client does.
    let learn =
        (label == DetectLabel::Timeout && prefix.is_empty()).then(|| evidence(a, dst.port()));
    let io = Prefixed::new(prefix, stream);
    match protocol {
        Protocol::Http1 => room.http(io, Version::Http1, dst).await,
        Protocol::Http2 => room.http(io, Version::Http2, dst).await,
        Protocol::Tls => room.tls(io, dst).await,
        Protocol::Opaque => room.opaque(io, dst, learn).await,
    }
}

/// What the learner makes of the first byte on a connection whose detection timed out:
/// the server speaking first is a vote for server-speaks-first, the client speaking first
/// (it was only slow) a vote against.
fn evidence(a: &Accept, port: u16) -> OnFirstByte {
    let (learner, direction, metrics) = (a.learner.clone(), a.direction, a.metrics.clone());
    Box::new(move |first| match first {
        Speaker::Server => {
            let learned = learner.record_timeout(port, Instant::now());
            metrics.learn_evidence(direction, true, learned);
            if learned {
                tracing::info!(
                    port,
                    ?direction,
                    "learned opaque port: the server spoke first after clients waited"
                );
            }
        }
        Speaker::Client => {
            metrics.learn_evidence(direction, false, false);
            learner.record_detected(port);
        }
    })
}

/// Labels how detection on `port` went; a detected protocol resets the learner's count.
fn label(a: &Accept, detection: Detection, port: u16) -> DetectLabel {
    match detection {
        Detection::Detected(p) => {
            a.learner.record_detected(port);
            DetectLabel::Detected(p)
        }
        Detection::TimedOut => DetectLabel::Timeout,
        Detection::Closed => DetectLabel::Closed,
    }
}

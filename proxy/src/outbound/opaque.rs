//! Opaque TCP to a target with endpoints: a connection is balanced as a whole (round robin
//! if configured, else power of two choices over open connections: a connect time says
//! little about the load a long-lived connection brings), and a failed connect is tried on
//! another endpoint, up to three in all (nothing was sent yet), within the retry budget.

use std::net::SocketAddr;

use tokio::time::Instant;

use super::balance::InFlight;
use super::outlier::Health;
use crate::config::TcpConfig;
use crate::metrics::{Metrics, Resilience};
use crate::snapshot::Snapshot;
use crate::transport::mesh::{self, MeshTls, Stream};
use crate::transport::socket::ConnectError;

/// Dials `addr` for an opaque connection: mesh TLS (ALPN opaque, one TLS connection per
/// connection) when it is a meshed peer.
async fn dial(
    addr: SocketAddr,
    snapshot: &Snapshot,
    mesh: Option<&MeshTls>,
    timeout: std::time::Duration,
    tcp: &TcpConfig,
) -> Result<Stream, ConnectError> {
    let peer = snapshot.mesh_peer(addr);
    let alpn = bulwark_identity::ALPN_OPAQUE;
    mesh::dial(addr, peer, mesh, alpn, (timeout, tcp.keepalive)).await
}

/// Connects an opaque connection to `dst`: to the original destination, or, when it
/// belongs to a Backend, to an endpoint the balancer picks. The returned guard counts the
/// connection on its endpoint while it lives.
pub async fn connect(
    dst: SocketAddr,
    snapshot: &Snapshot,
    mesh: Option<&MeshTls>,
    tcp: &TcpConfig,
    metrics: &Metrics,
) -> Result<(Stream, Option<InFlight>), ConnectError> {
    let Some((target, state)) = snapshot
        .lookup(dst, None)
        .filter(|(t, _)| !t.endpoints.is_empty())
    else {
        return dial(dst, snapshot, mesh, tcp.connect_timeout, tcp)
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
            return dial(dst, snapshot, mesh, connect, tcp)
                .await
                .map(|s| (s, None));
        };
        let started = Instant::now();
        let result = dial(ep.addr, snapshot, mesh, connect, tcp).await;
        let health = if result.is_ok() {
            Health::Success
        } else {
            Health::ConnectFailure
        };
        let took = started.elapsed();
        state.record_outcome(&ep, health, took, Some(took));
        match result {
            Ok(s) => return Ok((s, Some(InFlight::start(&ep)))),
            Err(e) if tried.len() >= 2 || tried.contains(&ep.addr) => return Err(e),
            Err(e) if !state.withdraw_retry(Instant::now()) => {
                metrics.count(
                    Resilience::RetryBudgetExhausted,
                    &target.key,
                    "connect_failure",
                );
                return Err(e);
            }
            Err(e) => {
                tracing::debug!(error = %e, endpoint = %ep.addr, "connect failed; trying another endpoint");
                metrics.count(Resilience::Retries, &target.key, "connect_failure");
                tried.push(ep.addr);
            }
        }
    }
}

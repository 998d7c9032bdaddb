//! Opaque TCP forwarding, the same in both directions once the upstream connection is made:
//! bytes both ways with half-close and the idle timeout, counted; a failed connect counted
//! as the proxy's error.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Kind;
use crate::http::Hop;
use crate::transport::copy::{self, OnFirstByte};
use crate::transport::socket::ConnectError;

/// Copies `io` ⇄ `upstream` until both sides close or the connection idles out; `learn`
/// hears who sent the first byte.
pub async fn copy<D, U>(hop: &Hop, io: D, upstream: U, dst: SocketAddr, learn: Option<OnFirstByte>)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let bytes = hop.metrics.bytes(hop.direction);
    match copy::bidirectional_noting(io, upstream, hop.tcp.idle_timeout, bytes, learn).await {
        Ok(_) => {}
        Err(copy::CopyError::Idle(d)) => {
            hop.metrics.error(hop.direction, Kind::IdleTimeout);
            tracing::debug!(%dst, idle = ?d, "opaque connection closed for idleness");
        }
        Err(e) => tracing::debug!(error = %e, %dst, "opaque connection ended with an error"),
    }
}

/// Counts and logs an opaque connection whose upstream could not be reached.
pub fn connect_failed(hop: &Hop, e: &ConnectError) {
    hop.metrics.error(hop.direction, e.kind());
    tracing::info!(error = %e, direction = ?hop.direction, "opaque connection failed upstream");
}

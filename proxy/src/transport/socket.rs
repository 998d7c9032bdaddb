//! Socket options applied to both legs of a proxied connection, and the upstream connect.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpSocket, TcpStream};

/// Why an upstream connection could not be made. Both are safe to retry: no byte was sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The endpoint answered with a reset or was unreachable.
    #[error("connect to {addr} failed: {source}")]
    Refused {
        /// The endpoint.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// No answer within the connect timeout.
    #[error("connect to {addr} timed out after {timeout:?}")]
    TimedOut {
        /// The endpoint.
        addr: SocketAddr,
        /// The configured bound.
        timeout: Duration,
    },
    /// The TCP connection was made, but the mesh TLS handshake on it failed (the peer is not
    /// who the snapshot says, or refused this proxy's certificate): nothing was sent.
    #[error("mesh TLS handshake with {addr} failed: {source}")]
    Handshake {
        /// The endpoint.
        addr: SocketAddr,
        /// What rustls said.
        source: io::Error,
    },
}

impl ConnectError {
    /// The proxy's error for it.
    pub fn kind(&self) -> crate::error::Kind {
        match self {
            ConnectError::Refused { .. } => crate::error::Kind::ConnectRefused,
            ConnectError::TimedOut { .. } => crate::error::Kind::ConnectTimeout,
            ConnectError::Handshake { .. } => crate::error::Kind::TlsHandshake,
        }
    }
}

/// Sets TCP_NODELAY and keepalive: proxies forward small writes at once, and keepalive
/// notices peers that vanished without a FIN.
pub fn tune(stream: &TcpStream, keepalive: Duration) {
    let _ = stream.set_nodelay(true);
    let ka = TcpKeepalive::new()
        .with_time(keepalive)
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    if let Err(e) = SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "could not set TCP keepalive");
    }
}

/// Connects to `addr` within `timeout`, tuned like the downstream leg.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    keepalive: Duration,
) -> Result<TcpStream, ConnectError> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|source| ConnectError::Refused { addr, source })?;
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(Ok(stream)) => {
            tune(&stream, keepalive);
            Ok(stream)
        }
        Ok(Err(source)) => Err(ConnectError::Refused { addr, source }),
        Err(_) => Err(ConnectError::TimedOut { addr, timeout }),
    }
}

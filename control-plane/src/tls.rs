//! The control plane's gRPC listener over TLS: handshakes run in their own tasks (a slow
//! client cannot stall the accept loop), and each connection carries who is on the other
//! end ([`Peer`]) to the services.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bulwark_identity::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a gRPC connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// The mesh identity its certificate proves; none if it presented none.
    pub identity: Option<SpiffeId>,
    /// When that certificate expires, Unix seconds.
    pub not_after: Option<i64>,
}

/// A TLS connection, as tonic serves it.
#[derive(Debug)]
pub struct TlsConn {
    io: TlsStream<TcpStream>,
    peer: Peer,
}

impl Connected for TlsConn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The connections of `listener`, each through a TLS handshake with `acceptor`; failed
/// handshakes are logged and dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(io)) => {
                        let certs = io.get_ref().1.peer_certificates();
                        let identity = bulwark_identity::tls::peer_identity(certs);
                        let not_after = certs
                            .and_then(|c| c.first())
                            .and_then(|c| bulwark_identity::verify::validity_of(c).ok())
                            .map(|(_, na)| na);
                        let peer = Peer {
                            addr,
                            identity,
                            not_after,
                        };
                        let _ = tx.send(Ok(TlsConn { io, peer })).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%addr, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::warn!(%addr, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The acceptor for `config`.
pub fn acceptor(config: Arc<rustls::ServerConfig>) -> TlsAcceptor {
    TlsAcceptor::from(config)
}

/// Keeps `certs` holding a certificate for the control plane's own `id` from `ca`, renewed
/// at 70 % of its lifetime (a failure is retried every 10 s; the one in force stays).
pub async fn keep_own_certificate(
    ca: Arc<crate::ca::Ca>,
    id: SpiffeId,
    certs: Arc<bulwark_identity::tls::CertStore>,
) {
    loop {
        let wait = match own_certificate(&ca, &id) {
            Ok((key, lifetime)) => {
                certs.store(key);
                lifetime.mul_f64(0.7)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot renew the control plane's own certificate");
                Duration::from_secs(10)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// A certificate for `id`, ready for rustls, and its lifetime.
pub fn own_certificate(
    ca: &crate::ca::Ca,
    id: &SpiffeId,
) -> Result<(Arc<rustls::sign::CertifiedKey>, Duration), String> {
    let (issued, key) = ca.issue_self(id).map_err(|e| e.to_string())?;
    let mut chain = vec![issued.leaf];
    chain.extend(issued.intermediates);
    let lifetime = issued
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let key =
        bulwark_identity::certified_key(chain, key.serialize_der()).map_err(|e| e.to_string())?;
    Ok((key, lifetime))
}

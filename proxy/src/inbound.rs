//! The inbound direction: connections from other pods to this pod's app. Requests go to
//! their original destination with the proxy's own limits; client policy is never applied
//! here (retries, timeouts and balancing are the caller's side).
//!
//! A connection is admitted first ([`mode`]): a mesh ClientHello (a Bulwark ALPN) is
//! terminated here, requiring the client's certificate, and what it carries (HTTP/1,
//! HTTP/2 or opaque bytes, as its ALPN says) is served like any other connection, knowing
//! the caller's identity. Anything else is forwarded as it came on a permissive port and
//! closed on a strict one.

pub mod mode;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bulwark_identity::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use self::mode::{Admission, Arrival};
use crate::accept::{Conn, Room};
use crate::error::Kind;
use crate::http::{Hop, server};
use crate::pool::Version;
use crate::snapshot::SharedSnapshot;
use crate::tcp;
use crate::transport::copy::OnFirstByte;
use crate::transport::detect::Prefixed;
use crate::transport::mesh::{self, Hello, MeshTls};
use crate::transport::socket;

/// What the inbound direction takes.
#[derive(Debug)]
pub struct Inbound {
    /// HTTP forwarding (and the mesh TLS, if identity is on).
    pub hop: Hop,
    /// The current policy (each port's mTLS mode).
    pub snapshot: SharedSnapshot,
}

impl Inbound {
    /// Decides what happens to `arrival` on `dst`'s port; a refusal is counted and logged
    /// with the peer's address here.
    fn admit(&self, arrival: Arrival, dst: SocketAddr, io: &TcpStream) -> Admission {
        let mode = self.snapshot.load().inbound_modes.of(dst.port());
        let admission = mode::admit(mode, arrival, self.hop.mesh.is_some());
        if admission == Admission::Refuse {
            self.hop
                .metrics
                .error(self.hop.direction, Kind::PlaintextRefused);
            let peer = io.peer_addr().ok();
            tracing::info!(
                peer = ?peer,
                %dst,
                "connection refused: the port is strict and this is not mesh TLS"
            );
        }
        admission
    }

    /// Serves HTTP from a client known as `client` (none: not mesh TLS) to the app at `dst`.
    async fn serve_http<I>(
        self: Arc<Self>,
        io: I,
        version: Version,
        dst: SocketAddr,
        client: Option<Arc<SpiffeId>>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let room = self.clone();
        let forward = move |mut req, open| {
            let this = room.clone();
            let _client = client.clone();
            async move {
                let resp = match this.hop.prepare(&mut req, version, dst, open) {
                    Ok(p) => {
                        let result = this.hop.passthrough(req, version, dst, None).await;
                        this.hop.finish(p, dst, result)
                    }
                    Err((p, e)) => this.hop.finish(p, dst, Err(e)),
                };
                Ok::<_, Infallible>(resp)
            }
        };
        server::serve(io, version, &self.hop, forward).await;
    }

    /// Forwards opaque bytes to the app at `dst`.
    async fn forward_opaque<I>(&self, io: I, dst: SocketAddr, learn: Option<OnFirstByte>)
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let tcp = &self.hop.tcp;
        match socket::connect(dst, tcp.connect_timeout, tcp.keepalive).await {
            Ok(upstream) => tcp::copy(&self.hop, io, upstream, dst, learn).await,
            Err(e) => tcp::connect_failed(&self.hop, &e),
        }
    }

    /// Terminates a mesh connection and serves what its ALPN says it carries.
    async fn terminate(self: Arc<Self>, mesh: &MeshTls, io: Conn, dst: SocketAddr) {
        let peer = io.get_ref().peer_addr().ok();
        let timeout = self.hop.limits.header_read_timeout;
        let t = match mesh.accept(io, timeout).await {
            Ok(t) => t,
            Err(e) => {
                self.hop
                    .metrics
                    .error(self.hop.direction, Kind::TlsHandshake);
                tracing::info!(error = %e, peer = ?peer, %dst, "mesh TLS handshake refused");
                return;
            }
        };
        tracing::debug!(client = %t.peer, peer = ?peer, %dst, "mesh connection");
        let client = Some(Arc::new(t.peer));
        match t.alpn.as_slice() {
            bulwark_identity::ALPN_HTTP1 => {
                self.serve_http(t.stream, Version::Http1, dst, client).await
            }
            bulwark_identity::ALPN_H2 => {
                self.serve_http(t.stream, Version::Http2, dst, client).await
            }
            _ => self.forward_opaque(t.stream, dst, None).await,
        }
    }
}

impl Room for Inbound {
    async fn http(self: Arc<Self>, io: Conn, version: Version, dst: SocketAddr) {
        if self.admit(Arrival::Other, dst, io.get_ref()) == Admission::Refuse {
            return;
        }
        self.serve_http(io, version, dst, None).await;
    }

    async fn opaque(self: Arc<Self>, io: Conn, dst: SocketAddr, learn: Option<OnFirstByte>) {
        if self.admit(Arrival::Other, dst, io.get_ref()) == Admission::Refuse {
            return;
        }
        self.forward_opaque(io, dst, learn).await;
    }

    async fn tls(self: Arc<Self>, io: Conn, dst: SocketAddr) {
        let (prefix, mut tcp) = io.into_parts();
        let (hello, seen) = match mesh::read_hello(prefix, &mut tcp).await {
            Ok(read) => read,
            Err(e) => {
                tracing::debug!(error = %e, %dst, "read failed in a ClientHello");
                return;
            }
        };
        let arrival = match hello {
            Hello::Mesh => Arrival::MeshTls,
            Hello::Other => Arrival::Other,
        };
        let admission = self.admit(arrival, dst, &tcp);
        let io = Prefixed::new(seen, tcp);
        match (admission, self.hop.mesh.clone()) {
            (Admission::Terminate, Some(mesh)) => self.terminate(&mesh, io, dst).await,
            (Admission::Refuse, _) => {}
            _ => self.forward_opaque(io, dst, None).await,
        }
    }
}

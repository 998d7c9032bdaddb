//! Mesh TLS on the data path: the outbound proxy originates TLS 1.3 to a meshed peer with
//! its certificate and a Bulwark ALPN, verifying the peer's SPIFFE ID; the inbound proxy
//! reads a ClientHello's ALPN to tell a mesh connection from anything else, and terminates
//! it requiring a client certificate.
//!
//! A client configuration is kept per expected identity, each with its own session cache:
//! a TLS 1.3 resumption skips the certificate check, so a session may only ever be resumed
//! toward the identity it was first verified as.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bulwark_identity::SpiffeId;
use bulwark_identity::tls::{self, CertStore, SharedBundle};
use bytes::{Bytes, BytesMut};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use super::socket::ConnectError;
use crate::lock::lock;

/// Most client configurations kept (one per peer identity); past it the cache starts over.
pub const MAX_PEER_CONFIGS: usize = 1024;

/// Most bytes read looking for a whole ClientHello; one that does not fit is not a mesh
/// connection.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// A client configuration's key: who the server must be, and the ALPN offered.
type PeerKey = (SpiffeId, &'static [u8]);

/// The mesh's TLS settings: the proxy's certificate and the roots peers are checked against.
pub struct MeshTls {
    bundle: SharedBundle,
    certs: Arc<CertStore>,
    server: Arc<ServerConfig>,
    clients: Mutex<HashMap<PeerKey, Arc<ClientConfig>>>,
    /// Handshakes as the client (outbound) and as the server (inbound).
    handshakes: [Handshakes; 2],
}

/// Handshakes of one side, by result.
#[derive(Debug, Default)]
struct Handshakes {
    full: AtomicU64,
    resumed: AtomicU64,
    failed: AtomicU64,
}

impl Handshakes {
    fn done(&self, kind: Option<rustls::HandshakeKind>) {
        let c = if kind == Some(rustls::HandshakeKind::Resumed) {
            &self.resumed
        } else {
            &self.full
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

const CLIENT: usize = 0;
const SERVER: usize = 1;

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls")
            .field("certs", &self.certs)
            .finish_non_exhaustive()
    }
}

impl MeshTls {
    /// TLS presenting `certs` (renewed in place) and verifying peers against `bundle`.
    pub fn new(bundle: SharedBundle, certs: Arc<CertStore>) -> Self {
        let server = tls::server_config(
            bundle.clone(),
            certs.clone(),
            true,
            &bulwark_identity::MESH_ALPNS,
        );
        Self {
            bundle,
            certs,
            server,
            clients: Mutex::new(HashMap::new()),
            handshakes: Default::default(),
        }
    }

    /// Appends the handshake counters in Prometheus text form.
    pub fn render(&self, o: &mut String) {
        o.push_str(
            "# HELP bulwark_tls_handshakes_total Mesh TLS handshakes, as the client (outbound) and as the server (inbound), by result: full, resumed (TLS 1.3 resumption), failed.\n\
             # TYPE bulwark_tls_handshakes_total counter\n",
        );
        for (side, h) in [
            ("client", &self.handshakes[CLIENT]),
            ("server", &self.handshakes[SERVER]),
        ] {
            for (result, c) in [
                ("full", &h.full),
                ("resumed", &h.resumed),
                ("failed", &h.failed),
            ] {
                let _ = writeln!(
                    o,
                    "bulwark_tls_handshakes_total{{side=\"{side}\",result=\"{result}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
        }
    }

    /// Whether this proxy holds a certificate to present. Without one, mesh TLS is not
    /// originated (a peer would refuse the handshake).
    pub fn ready(&self) -> bool {
        self.certs.load().is_some()
    }

    fn client(&self, peer: &SpiffeId, alpn: &'static [u8]) -> Arc<ClientConfig> {
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get(&(peer.clone(), alpn)) {
            return c.clone();
        }
        if clients.len() >= MAX_PEER_CONFIGS {
            clients.clear();
        }
        let c = tls::client_config(
            self.bundle.clone(),
            peer.clone(),
            self.certs.clone(),
            &[alpn],
        );
        clients.insert((peer.clone(), alpn), c.clone());
        c
    }

    /// Runs the client handshake on `tcp` to `addr`, which must prove `peer`, within
    /// `timeout`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        peer: &SpiffeId,
        alpn: &'static [u8],
        timeout: Duration,
    ) -> Result<client::TlsStream<TcpStream>, ConnectError> {
        let connector = TlsConnector::from(self.client(peer, alpn));
        let name = ServerName::IpAddress(addr.ip().into());
        let counts = &self.handshakes[CLIENT];
        let source = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => {
                counts.done(s.get_ref().1.handshake_kind());
                return Ok(s);
            }
            Ok(Err(source)) => source,
            Err(_) => io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"),
        };
        counts.failed();
        Err(ConnectError::Handshake { addr, source })
    }

    /// Terminates a mesh connection whose ClientHello (and anything after it) is replayed
    /// by `io`, requiring and verifying the client's certificate.
    pub async fn accept<IO>(&self, io: IO, timeout: Duration) -> io::Result<Terminated<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let counts = &self.handshakes[SERVER];
        let handshake = TlsAcceptor::from(self.server.clone()).accept(io);
        let accepted = match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                counts.failed();
                return Err(e);
            }
            Err(_) => {
                counts.failed();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
        };
        let (_, conn) = accepted.get_ref();
        let Some(peer) = tls::peer_identity(conn.peer_certificates()) else {
            counts.failed();
            return Err(io::Error::other("client certificate names no SPIFFE ID"));
        };
        counts.done(conn.handshake_kind());
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec).unwrap_or_default();
        Ok(Terminated {
            stream: accepted,
            peer,
            alpn,
        })
    }
}

/// An inbound mesh connection after its handshake.
#[derive(Debug)]
pub struct Terminated<IO> {
    /// The decrypted stream.
    pub stream: server::TlsStream<IO>,
    /// The client's verified identity.
    pub peer: SpiffeId,
    /// The ALPN agreed (one of the mesh's).
    pub alpn: Vec<u8>,
}

/// What a ClientHello offered, read without consuming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A Bulwark ALPN: a peer proxy's mesh connection.
    Mesh,
    /// Some other TLS (the application's own, or a client outside the mesh).
    Other,
}

/// Reads the rest of a ClientHello whose first bytes are `prefix` from `io`, and says
/// whether it is a mesh one. Returns every byte read, for replay, whatever the verdict;
/// a ClientHello that does not parse or does not fit in [`MAX_CLIENT_HELLO`] is `Other`.
pub async fn read_hello<IO: AsyncRead + Unpin>(
    prefix: Bytes,
    io: &mut IO,
) -> io::Result<(Hello, Bytes)> {
    let mut seen = BytesMut::from(&prefix[..]);
    let mut acceptor = rustls::server::Acceptor::default();
    let mut fed = 0;
    loop {
        while fed < seen.len() {
            match acceptor.read_tls(&mut &seen[fed..]) {
                Ok(0) => break,
                Ok(n) => fed += n,
                Err(_) => return Ok((Hello::Other, seen.freeze())),
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let mesh = accepted
                    .client_hello()
                    .alpn()
                    .is_some_and(|mut offered| offered.any(bulwark_identity::is_mesh_alpn));
                let verdict = if mesh { Hello::Mesh } else { Hello::Other };
                return Ok((verdict, seen.freeze()));
            }
            Ok(None) => {}
            Err(_) => return Ok((Hello::Other, seen.freeze())),
        }
        if seen.len() >= MAX_CLIENT_HELLO {
            return Ok((Hello::Other, seen.freeze()));
        }
        seen.reserve(4096);
        if io.read_buf(&mut seen).await? == 0 {
            return Ok((Hello::Other, seen.freeze()));
        }
    }
}

/// An upstream connection: plain TCP, or mesh TLS over it.
#[derive(Debug)]
pub enum Stream {
    /// Plaintext.
    Plain(TcpStream),
    /// Mesh TLS.
    Tls(Box<client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the connection is mesh TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Dials `addr` and, when it is a meshed peer that must prove `peer`, runs the mesh
/// handshake with `alpn` over it. A proxy with mesh TLS but no certificate yet refuses to
/// reach a meshed peer rather than fall back to plaintext: a silent downgrade would pass a
/// permissive port as unauthenticated.
pub async fn dial(
    addr: SocketAddr,
    peer: Option<&SpiffeId>,
    mesh: Option<&MeshTls>,
    alpn: &'static [u8],
    (timeout, keepalive): (Duration, Duration),
) -> Result<Stream, ConnectError> {
    if let (Some(_), Some(mesh)) = (peer, mesh)
        && !mesh.ready()
    {
        return Err(ConnectError::Handshake {
            addr,
            source: io::Error::other("this proxy has no certificate yet"),
        });
    }
    let tcp = super::socket::connect(addr, timeout, keepalive).await?;
    match (peer, mesh) {
        (Some(peer), Some(mesh)) => mesh
            .connect(tcp, addr, peer, alpn, timeout)
            .await
            .map(|s| Stream::Tls(Box::new(s))),
        _ => Ok(Stream::Plain(tcp)),
    }
}

#[cfg(test)]
mod tests;

//! Upstream HTTP connection pools, one per endpoint and protocol, bounded in count.
//!
//! Each pool is a hyper-util client whose connector always dials one endpoint, so the
//! request keeps its own authority (`Host` / `:authority`) while the connection goes to the
//! original destination. A pool to a meshed endpoint dials mesh TLS (its ALPN says which
//! HTTP version the connection carries); connections are reused, so handshakes are rare.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bulwark_identity::SpiffeId;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::config::{HttpConfig, TcpConfig};
use crate::error::{Error, Kind, chain};
use crate::http::body::{AttemptBody, DownstreamBodyError};
use crate::lock::lock;
use crate::transport::mesh::{self, MeshTls, Stream};
use crate::transport::socket::ConnectError;

/// Dials one endpoint, whatever the request URI says: mesh TLS when it is a meshed peer.
#[derive(Debug, Clone)]
pub struct EndpointConnector {
    addr: SocketAddr,
    connect_timeout: Duration,
    keepalive: Duration,
    /// The identity the endpoint must prove, and the TLS to prove it with.
    peer: Option<(SpiffeId, Arc<MeshTls>)>,
    alpn: &'static [u8],
}

impl tower_service::Service<http::Uri> for EndpointConnector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (peer, tls) = match &this.peer {
                Some((p, t)) => (Some(p), Some(&**t)),
                None => (None, None),
            };
            let times = (this.connect_timeout, this.keepalive);
            mesh::dial(this.addr, peer, tls, this.alpn, times)
                .await
                .map(TokioIo::new)
        })
    }
}

/// A pooled client for one endpoint.
pub type EndpointClient = Client<EndpointConnector, AttemptBody>;

/// Which HTTP version the pool speaks upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
}

impl Version {
    /// The mesh ALPN of a connection carrying this version.
    pub fn mesh_alpn(self) -> &'static [u8] {
        match self {
            Version::Http1 => bulwark_identity::ALPN_HTTP1,
            Version::Http2 => bulwark_identity::ALPN_H2,
        }
    }
}

/// A pool's key: endpoint, protocol, and connect timeout (policies may differ in it). The
/// identity an endpoint must prove and the pod behind it are kept in its entry: an address
/// has one of each at a time, and a pool whose address now belongs to another identity or
/// another pod (a new pod on a reused IP) is replaced, its idle connections closed.
type Key = (SocketAddr, Version, Duration);

/// Pools keyed by endpoint and protocol, with a use counter for LRU eviction.
#[derive(Debug, Default)]
struct Table {
    clock: u64,
    map: HashMap<Key, Entry>,
}

#[derive(Debug)]
struct Entry {
    client: EndpointClient,
    peer: Option<SpiffeId>,
    owner: Option<Box<str>>,
    last_used: u64,
}

/// Every endpoint's pool. The least recently used pool is dropped past the bound (its idle
/// connections close; requests in flight on it finish).
#[derive(Debug)]
pub struct Pools {
    http: HttpConfig,
    tcp: TcpConfig,
    mesh: Option<Arc<MeshTls>>,
    clients: Mutex<Table>,
}

impl Pools {
    /// Empty pools built with these limits; `mesh` is the TLS for meshed endpoints (none:
    /// every connection is plaintext).
    pub fn new(http: HttpConfig, tcp: TcpConfig, mesh: Option<Arc<MeshTls>>) -> Self {
        Self {
            http,
            tcp,
            mesh,
            clients: Mutex::new(Table::default()),
        }
    }

    /// The client for `addr`, which must prove `peer` when it is meshed, and is the pod
    /// `owner` when known; created on first use.
    pub fn get(
        &self,
        addr: SocketAddr,
        version: Version,
        connect_timeout: Duration,
        peer: Option<&SpiffeId>,
        owner: Option<&str>,
    ) -> EndpointClient {
        let peer = peer.filter(|_| self.mesh.is_some());
        let key = (addr, version, connect_timeout);
        let mut guard = lock(&self.clients);
        let Table { clock, map } = &mut *guard;
        *clock += 1;
        let now = *clock;
        if let Some(e) = map.get_mut(&key) {
            if e.peer.as_ref() == peer && e.owner.as_deref() == owner {
                e.last_used = now;
                return e.client.clone();
            }
            tracing::debug!(%addr, owner, "the endpoint's identity or pod changed: its pooled connections are dropped");
        } else if map.len() >= self.http.pool_max_endpoints
            && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        let client = self.build(key, peer);
        map.insert(
            key,
            Entry {
                client: client.clone(),
                peer: peer.cloned(),
                owner: owner.map(Box::from),
                last_used: now,
            },
        );
        client
    }

    /// Sends `req` to `addr` on a pooled connection; a failure says whose fault it was.
    /// The request is handed to the client before the future is returned, so it is not
    /// moved through one more future on its way (this is on every request's path).
    pub fn send(
        &self,
        addr: SocketAddr,
        version: Version,
        connect_timeout: Duration,
        peer: Option<&SpiffeId>,
        owner: Option<&str>,
        req: Request<AttemptBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, Error>> + Send + 'static {
        let sent = self
            .get(addr, version, connect_timeout, peer, owner)
            .request(req);
        async move {
            sent.await.map_err(|e| {
                let error = error_of(&e);
                tracing::debug!(error = %chain(&e), %addr, reason = error.reason(), "upstream request failed");
                error
            })
        }
    }

    /// Endpoints with a live pool.
    pub fn len(&self) -> usize {
        lock(&self.clients).map.len()
    }

    /// Whether no pool exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn build(
        &self,
        (addr, version, connect_timeout): Key,
        peer: Option<&SpiffeId>,
    ) -> EndpointClient {
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(self.http.pool_idle_timeout)
            .pool_max_idle_per_host(self.http.pool_max_idle_per_endpoint)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        if version == Version::Http2 {
            b.http2_only(true)
                .http2_max_header_list_size(self.http.max_header_bytes as u32)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .http2_keep_alive_while_idle(false);
        } else {
            b.http1_max_headers(self.http.max_headers.max(100));
        }
        b.build(EndpointConnector {
            addr,
            connect_timeout,
            keepalive: self.tcp.keepalive,
            peer: peer.zip(self.mesh.clone()).map(|(p, m)| (p.clone(), m)),
            alpn: version.mesh_alpn(),
        })
    }
}

/// Why the client's body failed: its framing was broken (a chunk line hyper's decoder
/// refuses: an overflowing size, a bare LF), or it stopped before its end.
fn client_body_failure(e: &DownstreamBodyError) -> Kind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            )
        {
            return Kind::MalformedRequest;
        }
        source = err.source();
    }
    Kind::DownstreamAborted
}

/// Sorts a client error by whose fault it is: the client's body failed (its upload was
/// aborted), a connect failed (the request never left), an HTTP/2 stream was refused (never
/// processed), or else the upstream connection broke.
pub fn error_of(e: &hyper_util::client::legacy::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(b) = err.downcast_ref::<DownstreamBodyError>() {
            return client_body_failure(b).into();
        }
        if let Some(c) = err.downcast_ref::<ConnectError>() {
            return c.kind().into();
        }
        if let Some(h) = err.downcast_ref::<h2::Error>() {
            if h.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Kind::RefusedStream.into();
            }
            // hyper resets an HTTP/2 stream with INTERNAL_ERROR itself (not the peer, not
            // the h2 library) when the request body it is sending fails.
            if h.is_reset()
                && !h.is_remote()
                && !h.is_library()
                && h.reason() == Some(h2::Reason::INTERNAL_ERROR)
            {
                return Kind::DownstreamAborted.into();
            }
        }
        source = err.source();
    }
    Kind::UpstreamReset.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A request whose body fails mid-upload with `kind`, sent over `version` by a real
    /// hyper client to a real socket that reads everything: the error must say the client
    /// failed.
    async fn aborted_upload(version: Version, kind: std::io::ErrorKind) -> Error {
        use bytes::Bytes;
        use http_body_util::StreamBody;
        use hyper::body::Frame;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            // A server that reads the whole request body before it answers.
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                use http_body_util::BodyExt;
                let _ = req.into_body().collect().await;
                Ok::<_, std::convert::Infallible>(Response::new(
                    http_body_util::Empty::<Bytes>::new(),
                ))
            });
            let io = TokioIo::new(s);
            let _ = match version {
                Version::Http1 => {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                }
                Version::Http2 => {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await
                }
            };
        });
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"part of an upload"))),
            Err(std::io::Error::new(kind, "client went away")),
        ];
        let body = AttemptBody::Streamed(StreamBody::new(tokio_stream::iter(frames)));
        let mut b = Client::builder(TokioExecutor::new());
        b.http2_only(version == Version::Http2);
        let client: Client<_, AttemptBody<_>> = b.build(EndpointConnector {
            addr,
            connect_timeout: Duration::from_secs(1),
            keepalive: Duration::from_secs(60),
            peer: None,
            alpn: version.mesh_alpn(),
        });
        let req = Request::post(format!("http://{addr}/upload"))
            .body(body)
            .unwrap();
        let result = tokio::time::timeout(Duration::from_secs(5), client.request(req)).await;
        sink.abort();
        match result {
            Ok(Err(e)) => error_of(&e),
            other => panic!("expected a failed request, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_aborted_upload_is_the_clients_fault() {
        for version in [Version::Http1, Version::Http2] {
            let e = aborted_upload(version, std::io::ErrorKind::ConnectionReset).await;
            assert_eq!(e.kind, Kind::DownstreamAborted, "{version:?}");
            assert_eq!(e.side, crate::error::Side::Downstream);
        }
    }

    #[tokio::test]
    async fn a_body_whose_framing_breaks_is_a_malformed_request() {
        // hyper's chunked decoder fails with InvalidInput or InvalidData.
        for kind in [
            std::io::ErrorKind::InvalidInput,
            std::io::ErrorKind::InvalidData,
        ] {
            let e = aborted_upload(Version::Http1, kind).await;
            assert_eq!(e.kind, Kind::MalformedRequest, "{kind:?}");
            assert_eq!(e.side, crate::error::Side::Downstream);
        }
    }

    #[tokio::test]
    async fn pools_are_per_endpoint_and_bounded() {
        let mut cfg = Config::default();
        cfg.http.pool_max_endpoints = 2;
        let t = cfg.tcp.connect_timeout;
        let pools = Pools::new(cfg.http, cfg.tcp, None);
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let c: SocketAddr = "10.0.0.3:80".parse().unwrap();
        pools.get(a, Version::Http1, t, None, None);
        pools.get(b, Version::Http1, t, None, None);
        pools.get(a, Version::Http1, t, None, None);
        assert_eq!(pools.len(), 2);
        pools.get(c, Version::Http1, t, None, None);
        assert_eq!(pools.len(), 2);
        let map = &pools.clients.lock().unwrap().map;
        assert!(
            map.contains_key(&(a, Version::Http1, t)),
            "a was used most recently and stays"
        );
        assert!(!map.contains_key(&(b, Version::Http1, t)));
    }
}

//! Upstream HTTP connection pools, one per endpoint and protocol, bounded in count.
//!
//! Each pool is a hyper-util client whose connector always dials one endpoint, so the
//! request keeps its own authority (`Host` / `:authority`) while the connection goes to the
//! original destination.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::config::{HttpConfig, TcpConfig};
use crate::error::{Error, Kind, chain};
use crate::http::body::{AttemptBody, DownstreamBodyError};
use crate::lock::lock;
use crate::transport::socket::{self, ConnectError};

/// Dials one endpoint, whatever the request URI says.
#[derive(Debug, Clone)]
pub struct EndpointConnector {
    addr: SocketAddr,
    connect_timeout: Duration,
    keepalive: Duration,
}

impl tower_service::Service<http::Uri> for EndpointConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (addr, timeout, keepalive) = (self.addr, self.connect_timeout, self.keepalive);
        Box::pin(async move {
            socket::connect(addr, timeout, keepalive)
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

/// A pool's identity: endpoint, protocol, and connect timeout (policies may differ in it).
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
    last_used: u64,
}

/// Every endpoint's pool. The least recently used pool is dropped past the bound (its idle
/// connections close; requests in flight on it finish).
#[derive(Debug)]
pub struct Pools {
    http: HttpConfig,
    tcp: TcpConfig,
    clients: Mutex<Table>,
}

impl Pools {
    /// Empty pools built with these limits.
    pub fn new(http: HttpConfig, tcp: TcpConfig) -> Self {
        Self {
            http,
            tcp,
            clients: Mutex::new(Table::default()),
        }
    }

    /// The client for `addr`, created on first use.
    pub fn get(
        &self,
        addr: SocketAddr,
        version: Version,
        connect_timeout: Duration,
    ) -> EndpointClient {
        let key = (addr, version, connect_timeout);
        let mut guard = lock(&self.clients);
        let Table { clock, map } = &mut *guard;
        *clock += 1;
        let now = *clock;
        if let Some(e) = map.get_mut(&key) {
            e.last_used = now;
            return e.client.clone();
        }
        if map.len() >= self.http.pool_max_endpoints {
            if let Some(oldest) = map.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        let client = self.build(key);
        map.insert(
            key,
            Entry {
                client: client.clone(),
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
        req: Request<AttemptBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, Error>> + Send + 'static {
        let sent = self.get(addr, version, connect_timeout).request(req);
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

    fn build(&self, (addr, version, connect_timeout): Key) -> EndpointClient {
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
        })
    }
}

/// Why the client's body failed: its framing was broken (a chunk line hyper's decoder
/// refuses: an overflowing size, a bare LF), or it stopped before its end.
fn client_body_failure(e: &DownstreamBodyError) -> Kind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            ) {
                return Kind::MalformedRequest;
            }
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
        let pools = Pools::new(cfg.http, cfg.tcp);
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let c: SocketAddr = "10.0.0.3:80".parse().unwrap();
        pools.get(a, Version::Http1, t);
        pools.get(b, Version::Http1, t);
        pools.get(a, Version::Http1, t);
        assert_eq!(pools.len(), 2);
        pools.get(c, Version::Http1, t);
        assert_eq!(pools.len(), 2);
        let map = &pools.clients.lock().unwrap().map;
        assert!(
            map.contains_key(&(a, Version::Http1, t)),
            "a was used most recently and stays"
        );
        assert!(!map.contains_key(&(b, Version::Http1, t)));
    }
}

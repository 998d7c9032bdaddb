//! One endpoint's upstream connections: HTTP/1 connections reused one request at a time,
//! or one shared HTTP/2 connection.
//!
//! Each connection is a hyper `client::conn` sender with its connection task; nothing else
//! sits between a request and its connection. An HTTP/1 connection goes back to the idle
//! list when its response body has been read to the end ([`UpstreamBody`] puts it there),
//! so no task is spawned per request to wait for it. A body dropped before its end takes
//! the connection with it: hyper closes a connection whose response was not read out.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bulwark_identity::SpiffeId;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::{Version, error_of};
use crate::error::{Error, Kind};
use crate::http::body::AttemptBody;
use crate::lock::lock;
use crate::transport::mesh::{self, MeshTls};

/// How one endpoint's connections are dialled and kept.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub addr: SocketAddr,
    pub version: Version,
    pub connect_timeout: Duration,
    pub keepalive: Duration,
    /// The identity the endpoint must prove, and the TLS to prove it with.
    pub peer: Option<(SpiffeId, Arc<MeshTls>)>,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    pub max_headers: usize,
    pub max_header_bytes: u32,
}

/// What an endpoint's connections carry upstream: the request bodies hyper can send.
pub trait SendBody:
    Body<Data = bytes::Bytes, Error = Self::Failure> + Send + Unpin + 'static
{
    /// The body's error.
    type Failure: std::error::Error + Send + Sync + 'static;
}

impl<B> SendBody for B
where
    B: Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Failure = B::Error;
}

/// An HTTP/1 connection waiting for its next request, and since when.
struct Idle<B> {
    tx: http1::SendRequest<B>,
    since: Instant,
}

impl<B> std::fmt::Debug for Idle<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle").field("since", &self.since).finish()
    }
}

/// One endpoint's connections, carrying request bodies of type `B`.
#[derive(Debug)]
pub struct Endpoint<B = AttemptBody> {
    settings: Settings,
    /// HTTP/1: idle connections, the most recently used last.
    idle: Mutex<Vec<Idle<B>>>,
    /// HTTP/2: the shared connection, and when a request last took it.
    h2: Mutex<Option<(http2::SendRequest<B>, Instant)>>,
    /// Held while an HTTP/2 connection is dialled, so concurrent requests share one dial.
    h2_dial: tokio::sync::Mutex<()>,
}

impl<B: SendBody> Endpoint<B> {
    pub(super) fn new(settings: Settings) -> Self {
        Self {
            settings,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_dial: tokio::sync::Mutex::new(()),
        }
    }

    /// Sends `req` (its URI already in the form its version wants) and waits for the
    /// response head.
    pub async fn send(
        self: Arc<Self>,
        req: Request<B>,
    ) -> Result<Response<UpstreamBody<B>>, Error> {
        match self.settings.version {
            Version::Http1 => self.send_h1(req).await,
            Version::Http2 => {
                let mut tx = match self.open_h2() {
                    Some(tx) => tx,
                    None => Box::pin(self.dial_h2()).await?,
                };
                let resp = tx.send_request(req).await.map_err(|e| error_of(&e))?;
                Ok(resp.map(UpstreamBody::passthrough))
            }
        }
    }

    /// HTTP/1: on an idle connection, else a new one. A reused connection the upstream
    /// closed before the request went out (the race every keep-alive pool has) gets the
    /// request back, and it goes on a new connection.
    async fn send_h1(
        self: Arc<Self>,
        mut req: Request<B>,
    ) -> Result<Response<UpstreamBody<B>>, Error> {
        loop {
            // Dialling is boxed: its futures (TCP, mesh TLS, the handshake) are large, and
            // inline they would grow every request's future, which is moved and, on
            // HTTP/2, copied into a task per stream.
            let (mut tx, reused) = match self.checkout() {
                Some(tx) => (tx, true),
                None => (Box::pin(self.dial_h1()).await?, false),
            };
            if tx.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(Kind::UpstreamReset.into());
            }
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let upgraded = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
                    let park = (!upgraded).then(|| Park {
                        endpoint: Arc::downgrade(&self),
                        tx,
                    });
                    return Ok(resp.map(|b| UpstreamBody::new(b, park)));
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if reused => req = back,
                    _ => return Err(error_of(e.error())),
                },
            }
        }
    }

    /// The most recently idled connection still open; stale ones are closed on the way.
    fn checkout(&self) -> Option<http1::SendRequest<B>> {
        let mut idle = lock(&self.idle);
        while let Some(i) = idle.pop() {
            if !i.tx.is_closed() && i.since.elapsed() < self.settings.idle_timeout {
                return Some(i.tx);
            }
        }
        None
    }

    /// Puts a connection whose response was read out back in the idle list.
    fn park(&self, tx: http1::SendRequest<B>) {
        if tx.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < self.settings.max_idle {
            idle.push(Idle {
                tx,
                since: Instant::now(),
            });
        }
    }

    /// Lets go of connections idle past the idle timeout: HTTP/1 ones close at once, the
    /// HTTP/2 one when its last stream ends.
    pub(super) fn sweep(&self) {
        let timeout = self.settings.idle_timeout;
        lock(&self.idle).retain(|i| !i.tx.is_closed() && i.since.elapsed() < timeout);
        let mut h2 = lock(&self.h2);
        if h2
            .as_ref()
            .is_some_and(|(tx, used)| tx.is_closed() || used.elapsed() >= timeout)
        {
            *h2 = None;
        }
    }

    /// Idle HTTP/1 connections (for tests and the pool's size).
    #[cfg(test)]
    pub(super) fn idle(&self) -> usize {
        lock(&self.idle).len()
    }

    /// A new shared HTTP/2 connection, when there is none or it closed; requests that
    /// find a dial under way wait for it.
    async fn dial_h2(&self) -> Result<http2::SendRequest<B>, Error> {
        let _dialling = self.h2_dial.lock().await;
        if let Some(tx) = self.open_h2() {
            return Ok(tx);
        }
        let io = self.dial().await?;
        let mut b = http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_header_list_size(self.settings.max_header_bytes)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(false);
        let (tx, conn) = b.handshake(io).await.map_err(|e| error_of(&e))?;
        tokio::spawn(conn_task(self.settings.addr, conn));
        *lock(&self.h2) = Some((tx.clone(), Instant::now()));
        Ok(tx)
    }

    fn open_h2(&self) -> Option<http2::SendRequest<B>> {
        let mut h2 = lock(&self.h2);
        let (tx, used) = h2.as_mut().filter(|(tx, _)| !tx.is_closed())?;
        *used = Instant::now();
        Some(tx.clone())
    }

    async fn dial_h1(&self) -> Result<http1::SendRequest<B>, Error> {
        let io = self.dial().await?;
        let mut b = http1::Builder::new();
        b.max_headers(self.settings.max_headers.max(100));
        let (tx, conn) = b.handshake(io).await.map_err(|e| error_of(&e))?;
        tokio::spawn(conn_task(self.settings.addr, conn.with_upgrades()));
        Ok(tx)
    }

    async fn dial(&self) -> Result<TokioIo<mesh::Stream>, Error> {
        let s = &self.settings;
        let (peer, tls) = match &s.peer {
            Some((p, t)) => (Some(p), Some(&**t)),
            None => (None, None),
        };
        let times = (s.connect_timeout, s.keepalive);
        match mesh::dial(s.addr, peer, tls, s.version.mesh_alpn(), times).await {
            Ok(io) => Ok(TokioIo::new(io)),
            Err(e) => {
                tracing::debug!(error = %crate::error::chain(&e), addr = %s.addr, "upstream connect failed");
                Err(e.kind().into())
            }
        }
    }
}

/// Drives one upstream connection until it closes.
async fn conn_task<F: Future<Output = Result<(), hyper::Error>>>(addr: SocketAddr, conn: F) {
    if let Err(e) = conn.await {
        tracing::debug!(%addr, error = %e, "upstream connection closed with an error");
    }
}

/// Returns an HTTP/1 connection to its endpoint when its response body has ended.
struct Park<B: SendBody> {
    endpoint: Weak<Endpoint<B>>,
    tx: http1::SendRequest<B>,
}

/// An upstream response body. An HTTP/1 body read to its end puts its connection back in
/// the endpoint's idle list.
pub struct UpstreamBody<B: SendBody = AttemptBody> {
    inner: Incoming,
    park: Option<Park<B>>,
}

impl<B: SendBody> std::fmt::Debug for UpstreamBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("inner", &self.inner)
            .field("pooled", &self.park.is_some())
            .finish()
    }
}

impl<B: SendBody> UpstreamBody<B> {
    fn new(inner: Incoming, park: Option<Park<B>>) -> Self {
        let mut b = Self { inner, park };
        // A body with nothing to read (HEAD, 204, 304) is never polled.
        if b.inner.is_end_stream() {
            b.release();
        }
        b
    }

    /// A body whose connection is not this body's to return (HTTP/2, an upgrade).
    pub fn passthrough(inner: Incoming) -> Self {
        Self { inner, park: None }
    }

    fn release(&mut self) {
        if let Some(p) = self.park.take()
            && let Some(endpoint) = p.endpoint.upgrade()
        {
            endpoint.park(p.tx);
        }
    }
}

impl<B: SendBody> Body for UpstreamBody<B> {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, hyper::Error>>> {
        let f = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &f {
            None => self.release(),
            Some(Ok(_)) if self.inner.is_end_stream() => self.release(),
            Some(Err(_)) => self.park = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(f)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! The bodies the proxy sends. Downstream: the upstream's response body, streamed, with the
//! request's deadline and idle timeout enforced on it (whatever must live as long as the
//! body held until it ends, and whoever waits for the trailers told how it ended), or a
//! small body the proxy wrote itself. Upstream: the client's request body, streamed once
//! or replayed, its failures marked as the client's.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::activity::Open;
use super::headers::GRPC_UNKNOWN;
use super::replay::ReplayBody;
use crate::metrics::Direction;
use crate::metrics::requests::{AuthorityStats, Tally};
use crate::pool::UpstreamBody;

/// Told how a streamed response body ended (a gRPC call's status comes in its trailers).
pub trait BodyEnd: Send + std::fmt::Debug {
    /// The trailers arrived.
    fn trailers(self: Box<Self>, trailers: &http::HeaderMap);
    /// The body ended without trailers.
    fn no_trailers(self: Box<Self>);
    /// The body failed: reset by the upstream, or cut by a timeout.
    fn failed(self: Box<Self>);
}

/// Something that must live as long as a response body (a bulkhead slot).
pub type Hold = Box<dyn std::fmt::Debug + Send>;

/// Why a streamed response body was cut short.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The upstream body failed.
    #[error("upstream body: {0}")]
    Upstream(#[from] hyper::Error),
    /// The request's deadline passed while the body was streaming.
    #[error("request timeout reached while streaming the response")]
    Deadline,
    /// No body bytes for the idle timeout.
    #[error("response body idle for {0:?}")]
    Idle(Duration),
}

/// Response body.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from upstream.
    Upstream(Box<Timed>),
    /// Written by the proxy.
    Local(Option<Bytes>),
}

/// An upstream body with timers.
#[derive(Debug)]
pub struct Timed {
    inner: UpstreamBody,
    deadline: Option<Pin<Box<Sleep>>>,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    _hold: Option<Hold>,
    outcome: Option<Box<dyn BodyEnd>>,
    /// Counts the response in `bulwark_requests_total` when it ends, and its bytes.
    tally: Option<Tally>,
    _open: Option<Open>,
}

impl ProxyBody {
    /// An upstream body with no timers.
    pub fn upstream(inner: UpstreamBody) -> Self {
        Self::timed(inner, None, None, None, None)
    }

    /// An upstream body ended at `deadline` or after `idle` without data; `hold` lives as
    /// long as the body, `outcome` hears how it ended.
    pub fn timed(
        inner: UpstreamBody,
        deadline: Option<Instant>,
        idle: Option<Duration>,
        hold: Option<Hold>,
        outcome: Option<Box<dyn BodyEnd>>,
    ) -> Self {
        ProxyBody::Upstream(Box::new(Timed {
            inner,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            _hold: hold,
            outcome,
            tally: None,
            _open: None,
        }))
    }

    /// The body counts its response when it ends (see [`Tally`]).
    pub fn tallied(mut self, tally: Tally) -> Self {
        if let ProxyBody::Upstream(t) = &mut self {
            t.tally = Some(tally);
        }
        self
    }

    /// The body keeps its request open on the connection (for the stream idle timeout)
    /// until it ends or drops.
    pub fn held_open(mut self, open: Open) -> Self {
        if let ProxyBody::Upstream(t) = &mut self {
            t._open = Some(open);
        }
        self
    }

    /// A body the proxy wrote.
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Local(Some(bytes.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Local(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            ProxyBody::Upstream(t) => {
                if let Poll::Ready(f) = Pin::new(&mut t.inner).poll_frame(cx) {
                    if let (Some((d, sleep)), Some(Ok(_))) = (&mut t.idle, &f) {
                        sleep.as_mut().reset(Instant::now() + *d);
                    }
                    if let Some(tally) = &mut t.tally {
                        tally_frame(tally, &f, t.inner.is_end_stream());
                    }
                    if let Some(o) = t.outcome.take() {
                        match &f {
                            Some(Ok(frame)) => match frame.trailers_ref() {
                                Some(trailers) => o.trailers(trailers),
                                None => t.outcome = Some(o),
                            },
                            Some(Err(_)) => o.failed(),
                            None => o.no_trailers(),
                        }
                    }
                    return Poll::Ready(f.map(|r| r.map_err(BodyError::from)));
                }
                let mut cut = None;
                if let Some(s) = &mut t.deadline
                    && s.as_mut().poll(cx).is_ready()
                {
                    cut = Some(BodyError::Deadline);
                }
                if let (None, Some((d, s))) = (&cut, &mut t.idle)
                    && s.as_mut().poll(cx).is_ready()
                {
                    cut = Some(BodyError::Idle(*d));
                }
                match cut {
                    Some(e) => {
                        if let Some(o) = t.outcome.take() {
                            o.failed();
                        }
                        if let Some(tally) = &mut t.tally {
                            tally.end(None);
                        }
                        Poll::Ready(Some(Err(e)))
                    }
                    None => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            ProxyBody::Upstream(t) => t.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(b) => {
                SizeHint::with_exact(b.as_ref().map(|b| b.len() as u64).unwrap_or(0))
            }
            ProxyBody::Upstream(t) => t.inner.size_hint(),
        }
    }
}

/// Counts one response frame: data bytes, and the end (the last frame read, trailers —
/// a gRPC call's status — or a failure). A body whose last data frame says so has ended
/// before its end is read, so the count is there before the client has the response.
fn tally_frame(tally: &mut Tally, f: &Option<Result<Frame<Bytes>, hyper::Error>>, at_end: bool) {
    match f {
        Some(Ok(frame)) => {
            if let Some(d) = frame.data_ref() {
                tally.bytes(d.len() as u64);
                if at_end {
                    let status = tally.is_grpc().then_some(GRPC_UNKNOWN);
                    tally.end(status);
                }
            } else if let Some(trailers) = frame.trailers_ref() {
                tally.end(Some(super::headers::grpc_status_at_end(trailers)));
            }
        }
        Some(Err(_)) => tally.end(None),
        None => tally.end(tally.is_grpc().then_some(GRPC_UNKNOWN)),
    }
}

/// The client's request body as the proxy reads it, its data bytes counted for its
/// authority (`bulwark_request_bytes_total`).
#[derive(Debug)]
pub struct ClientBody {
    inner: Incoming,
    counted: Option<(Arc<AuthorityStats>, Direction)>,
    /// This request's own count, for its access-log line.
    logged: Option<Arc<AtomicU64>>,
}

impl ClientBody {
    /// `inner`, counted into its authority's `stats` and, if it is to be logged, `logged`.
    pub fn counted(
        inner: Incoming,
        stats: Option<(Arc<AuthorityStats>, Direction)>,
        logged: Option<Arc<AtomicU64>>,
    ) -> Self {
        Self {
            inner,
            counted: stats,
            logged,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let f = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some((stats, d))) = (&f, &this.counted)
            && let Some(data) = frame.data_ref()
        {
            stats.add_bytes(*d, false, data.len() as u64);
            if let Some(n) = &this.logged {
                n.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        f
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client's request body failed (it aborted its upload, or went away). Carried as the
/// error of an [`AttemptBody`], so a failed upstream request can tell the client's fault
/// from the endpoint's.
#[derive(Debug, thiserror::Error)]
#[error("client request body failed: {0}")]
pub struct DownstreamBodyError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// The request body of one upstream attempt: the client's, streamed once, or a replay of it.
#[derive(Debug)]
pub enum AttemptBody<B = ClientBody> {
    /// Streamed as it arrives; no second attempt can have it.
    Streamed(B),
    /// Replayable: a copy is kept while it streams.
    Replayed(ReplayBody<B>),
}

impl<B> Body for AttemptBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Data = Bytes;
    type Error = DownstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DownstreamBodyError>>> {
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| DownstreamBodyError(e);
        match self.get_mut() {
            AttemptBody::Streamed(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| failed(e.into())))),
            AttemptBody::Replayed(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| failed(e.into())))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            AttemptBody::Streamed(b) => b.is_end_stream(),
            AttemptBody::Replayed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AttemptBody::Streamed(b) => b.size_hint(),
            AttemptBody::Replayed(b) => b.size_hint(),
        }
    }
}

//! What a call to a target is made of, shared by the engine's stages: the [`Upstream`]
//! attempts go to, the [`Call`] context, the request body across attempts ([`Bodies`]),
//! and the request of one attempt.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderValue, Request, Response};
use hyper::body::Body;
use tokio::time::Instant;

use super::deadline;
use super::policy::{RequestPolicy, Target};
use super::target::TargetState;
use crate::error::Error;
use crate::http::body::AttemptBody;
use crate::http::replay::ReplayBody;
use crate::metrics::Metrics;

/// Where attempts go: the proxy's connection pools in production, a script in tests.
pub trait Upstream<B>: Sync {
    /// The response body.
    type Body: Send;

    /// Sends `req` to `addr` (connecting within `connect_timeout` if a new connection is
    /// needed). A failure says whose fault it was.
    fn send(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        req: Request<AttemptBody<B>>,
    ) -> impl Future<Output = Result<Response<Self::Body>, Error>> + Send;
}

/// Everything a call needs besides the request.
#[derive(Debug)]
pub struct Call<'a, U> {
    /// Where attempts go.
    pub upstream: &'a U,
    /// Counters.
    pub metrics: &'a Metrics,
    /// The connection's original destination (used when the target has no endpoints).
    pub dst: SocketAddr,
    /// The target as of this request's snapshot.
    pub target: &'a Target,
    /// Its run-time state.
    pub state: &'a Arc<TargetState>,
    /// The policy of the request's route.
    pub policy: &'a Arc<RequestPolicy>,
    /// Whether the request is gRPC.
    pub grpc: bool,
    /// When the request arrived.
    pub start: Instant,
    /// An HTTP/1.1 upgrade: one attempt, body streamed.
    pub upgrade: bool,
}

/// The request body across attempts: replayable (a copy is kept while it streams) or
/// streamed once.
#[derive(Debug)]
pub enum Bodies<B> {
    /// A copy is kept for retries and hedges.
    Replayable(ReplayBody<B>),
    /// One attempt only; taken by it.
    Streamed(Option<B>),
}

impl<B: Body> Bodies<B> {
    /// The body for the next attempt, if it can have one.
    pub fn for_attempt(&mut self) -> Option<AttemptBody<B>> {
        match self {
            Bodies::Replayable(r) => r.replay().map(AttemptBody::Replayed),
            Bodies::Streamed(b) => b.take().map(AttemptBody::Streamed),
        }
    }

    /// Whether another attempt could have the body.
    pub fn can_replay(&self) -> bool {
        match self {
            Bodies::Replayable(r) => r.can_replay(),
            Bodies::Streamed(_) => false,
        }
    }

    /// Whether the whole body is in hand (two attempts at once need it).
    pub fn is_complete(&self) -> bool {
        matches!(self, Bodies::Replayable(r) if r.is_complete())
    }
}

/// The request for one attempt with `body`; a gRPC call's deadline goes on as its
/// `grpc-timeout`, less the time already spent (`grpc_deadline` is `None` for other
/// requests).
pub fn request<B: Body>(
    parts: &Parts,
    body: AttemptBody<B>,
    grpc_deadline: Option<Instant>,
) -> Request<AttemptBody<B>> {
    let mut req = Request::from_parts(parts.clone(), body);
    if let Some(d) = grpc_deadline {
        let left = d.saturating_duration_since(Instant::now());
        if let Ok(v) = HeaderValue::from_str(&deadline::format_grpc_timeout(left)) {
            req.headers_mut().insert("grpc-timeout", v);
        }
    }
    req
}

//! HTTP plumbing both directions share: the connection server ([`server`]), the head as a
//! proxy must treat it ([`headers`]), Upgrade tunnels ([`upgrade`]), the bodies
//! ([`body`], [`replay`]) and the responses the proxy makes itself ([`respond`]).
//!
//! A direction forwards one request in three steps: [`Hop::prepare`] reads and rewrites the
//! head, the direction decides where the request goes and sends it, [`Hop::finish`]
//! records it and hands the response (or the proxy's error) back downstream.

pub mod access_log;
pub mod activity;
pub mod body;
pub mod h2_guard;
pub mod headers;
pub mod replay;
pub mod respond;
pub mod server;
pub mod spans;
pub mod trace;
pub mod upgrade;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bulwark_identity::SpiffeId;
use http::header::{CONNECTION, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use self::access_log::{AccessLog, Pending};
use self::activity::Open;
use self::body::{BodyEnd, ClientBody, Hold, ProxyBody};
use self::spans::Spans;
use crate::config::{HttpConfig, RequestId, TcpConfig};
use crate::drain::Drain;
use crate::error::{Error, Kind};
use crate::metrics::requests::{AfterTally, AuthorityStats, Labels, Tally, TraceId};
use crate::metrics::{Direction, Metrics};
use crate::pool::{Pools, UpstreamBody, Version};
use crate::transport::mesh::MeshTls;

/// What forwarding HTTP in one direction takes.
#[derive(Debug)]
pub struct Hop {
    /// Which listener the requests came through (a metric label).
    pub direction: Direction,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Upstream connection pools.
    pub pools: Arc<Pools>,
    /// Mesh TLS (this proxy's certificate and the trust bundle), when identity is on.
    pub mesh: Option<Arc<MeshTls>>,
    /// Shutdown signal; upgraded tunnels run as its tasks.
    pub drain: Drain,
    /// Server limits.
    pub limits: HttpConfig,
    /// Connect timeout and idle timeout (of tunnels).
    pub tcp: TcpConfig,
    /// The access log, when on.
    pub access_log: Option<Arc<AccessLog>>,
    /// The span exporter, when on.
    pub spans: Option<Arc<Spans>>,
}

/// What [`Hop::prepare`] read from a request head.
#[derive(Debug)]
pub struct Prepared {
    /// The authority the request is for (`Host`/`:authority`, else the destination).
    pub authority: String,
    /// Whether it is gRPC.
    pub grpc: bool,
    /// The downstream half of an HTTP/1.1 Upgrade, if the request asks for one.
    pub upgrade: Option<OnUpgrade>,
    /// When the request arrived.
    pub start: Instant,
    /// Holds the request open on its connection until the response body ends.
    pub open: Open,
    /// The counters of its authority.
    pub stats: Arc<AuthorityStats>,
    /// The trace it is part of, if its headers say.
    pub trace: Option<TraceId>,
    /// Its access-log line and span, if it is one to log or trace.
    pub log: Option<Box<Pending>>,
}

/// Who answered a forwarded request (the access log's fields).
#[derive(Debug, Clone, Copy)]
pub struct Served {
    /// The endpoint whose response it is.
    pub endpoint: SocketAddr,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// Whether a hedged attempt was sent.
    pub hedged: bool,
}

/// An upstream response with what must outlive its body.
#[derive(Debug)]
pub struct Forwarded {
    /// The response.
    pub resp: Response<UpstreamBody>,
    /// Deadline for the whole response, body included.
    pub deadline: Option<Instant>,
    /// Longest silence in the body.
    pub idle: Option<Duration>,
    /// Lives as long as the body (a bulkhead slot).
    pub hold: Option<Hold>,
    /// Told how the body ended.
    pub on_end: Option<Box<dyn BodyEnd>>,
    /// Who answered.
    pub served: Option<Served>,
}

impl Forwarded {
    /// A response from `endpoint`, first try, with nothing attached.
    pub fn plain(resp: Response<UpstreamBody>, endpoint: SocketAddr) -> Self {
        Self {
            resp,
            deadline: None,
            idle: None,
            hold: None,
            on_end: None,
            served: Some(Served {
                endpoint,
                attempts: 1,
                hedged: false,
            }),
        }
    }
}

impl Hop {
    /// Reads the head and rewrites it for the next hop: hop-by-hop fields removed (an
    /// Upgrade keeps `Connection: upgrade`), the URI in the form the upstream version wants
    /// (HTTP/2: absolute, with the request's own authority; HTTP/1: origin-form, the
    /// authority in `Host`); the pools dial `dst` whatever it says. A head whose framing is in doubt
    /// is refused: the error comes back with what was read, for [`Hop::finish`].
    pub fn prepare(
        &self,
        req: &mut Request<Incoming>,
        version: Version,
        dst: SocketAddr,
        open: Open,
    ) -> Result<Prepared, (Prepared, Error)> {
        self.prepare_for(req, (version, version), dst, open)
    }

    /// [`Hop::prepare`] for a request that came in one version (`down`) and goes on in
    /// another (`up`): an HTTP/1 request a peer proxy carried over HTTP/2.
    pub fn prepare_for(
        &self,
        req: &mut Request<Incoming>,
        (version, up): (Version, Version),
        dst: SocketAddr,
        open: Open,
    ) -> Result<Prepared, (Prepared, Error)> {
        let start = Instant::now();
        let authority = headers::authority_of(req).unwrap_or_else(|| dst.to_string());
        let grpc = headers::is_grpc(req.headers());
        let stats = self.metrics.authority(&authority);
        let trace = trace::trace_id(req.headers());
        let refused = if let Some(doubt) = headers::framing_doubt(req.headers()) {
            tracing::info!(%dst, %authority, doubt, "request refused: its framing is in doubt");
            Some(Kind::MalformedRequest)
        } else if version == Version::Http2 && req.headers().len() > self.limits.max_headers {
            // hyper bounds an HTTP/1 head's fields itself, an HTTP/2 header list only in bytes.
            Some(Kind::TooManyHeaders)
        } else {
            None
        };
        if let Some(kind) = refused {
            let p = Prepared {
                authority,
                grpc,
                upgrade: None,
                start,
                open,
                stats,
                trace,
                log: self.pending_log(req),
            };
            return Err((p, kind.into()));
        }
        let upgrade = match version {
            Version::Http1 => headers::upgrade_protocol(req.headers()),
            Version::Http2 => None,
        };
        headers::strip_hop_by_hop(req.headers_mut());
        if self.adds_request_id() {
            trace::ensure_request_id(req.headers_mut());
        }
        let log = self.pending_log(req);
        let upgrade = upgrade.map(|proto| {
            req.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
            req.headers_mut().insert(UPGRADE, proto);
            hyper::upgrade::on(&mut *req)
        });
        match up {
            Version::Http2 => {
                *req.uri_mut() =
                    headers::absolute_uri(std::mem::take(req.uri_mut()), &authority, dst);
            }
            Version::Http1 => {
                // An absolute-form target wins over `Host` (RFC 9112 §3.2.2), and a request
                // without one (HTTP/1.0) gets it: the upstream is told the authority the
                // proxy routed and labelled the request by.
                let absolute = req.uri().authority().is_some();
                if (absolute || !req.headers().contains_key(http::header::HOST))
                    && let Ok(v) = http::HeaderValue::from_str(&authority)
                {
                    req.headers_mut().insert(http::header::HOST, v);
                }
                if req.method() != http::Method::CONNECT {
                    *req.uri_mut() = headers::origin_form(std::mem::take(req.uri_mut()));
                }
            }
        }
        Ok(Prepared {
            authority,
            grpc,
            upgrade,
            start,
            open,
            stats,
            trace,
            log,
        })
    }

    /// Whether a request without `x-request-id` gets one.
    fn adds_request_id(&self) -> bool {
        match self.limits.request_id {
            RequestId::On => true,
            RequestId::Off => false,
            RequestId::Auto => self.access_log.is_some(),
        }
    }

    /// The access-log line and the span of `req`: a line if the log is on and this request
    /// is one to log, a span if spans are on and its trace is sampled (its `traceparent`
    /// then names the proxy's span).
    fn pending_log<B>(&self, req: &mut Request<B>) -> Option<Box<Pending>> {
        let log = self.access_log.as_ref().filter(|l| l.sampled()).cloned();
        let span = self
            .spans
            .as_ref()
            .and_then(|s| s.begin(self.direction, req.headers_mut()));
        if log.is_none() && span.is_none() {
            return None;
        }
        Some(Box::new(Pending::new(log, span, self.direction, req)))
    }

    /// The request with its body counted for its authority (and its log line).
    pub fn client_body(&self, p: &Prepared, req: Request<Incoming>) -> Request<ClientBody> {
        // A body known to be empty (most GETs) has no bytes to count.
        let stats = (!req.body().is_end_stream()).then(|| (p.stats.clone(), self.direction));
        let logged = p.log.as_ref().map(|l| l.request_bytes.clone());
        req.map(|b| ClientBody::counted(b, stats, logged))
    }

    /// Records the request and turns what forwarding came to into the downstream response:
    /// the proxy's error response, or the upstream's with its body timed and counted when
    /// it ends (and, on 101, the upgraded halves joined). `labels` are its route's and its
    /// destination's, where known.
    pub fn finish(
        &self,
        p: Prepared,
        dst: SocketAddr,
        labels: Labels,
        result: Result<Forwarded, Error>,
    ) -> Response<ProxyBody> {
        let d = self.direction;
        let mut log = p.log;
        if let Some(l) = &mut log {
            l.entry.authority.clone_from(&p.authority);
        }
        let f = match result {
            Ok(f) => f,
            Err(e) => {
                self.metrics.error(d, e.kind);
                let status = e.status().as_u16();
                p.stats
                    .record_latency(d, status, p.start.elapsed(), p.trace.as_ref());
                tracing::info!(%dst, authority = %p.authority, reason = e.reason(), side = ?e.side, "request failed");
                if let Some(l) = &mut log {
                    (l.entry.status, l.entry.error) = (status, Some(e.reason()));
                }
                let then = log.map(|l| l as Box<dyn AfterTally>);
                let mut tally = Tally::new(p.stats, d, status, p.grpc, labels).then(then);
                tally.end(Some(e.grpc_status()));
                return respond::error_response(&e, p.grpc);
            }
        };
        let mut resp = f.resp;
        let status = resp.status().as_u16();
        p.stats
            .record_latency(d, status, p.start.elapsed(), p.trace.as_ref());
        if let Some(l) = &mut log {
            l.entry.status = status;
            if let Some(s) = f.served {
                l.entry.upstream = Some(s.endpoint);
                (l.entry.attempts, l.entry.hedged) = (s.attempts, s.hedged);
            }
        }
        let then = log.map(|l| l as Box<dyn AfterTally>);
        let mut tally = Tally::new(p.stats, d, status, p.grpc, labels).then(then);
        if p.grpc
            && let Some(code) = headers::grpc_status(resp.headers())
        {
            // Trailers-only (an error before any message): the status is in the headers.
            // Otherwise it comes in the trailers, when the body ends.
            tally.end(Some(code));
        }
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(down) = p.upgrade {
                let up = hyper::upgrade::on(&mut resp);
                let (metrics, idle) = (self.metrics.clone(), self.tcp.idle_timeout);
                self.drain.spawn(async move {
                    upgrade::tunnel(down, up, idle, metrics.bytes(d)).await;
                });
            }
        } else {
            headers::strip_hop_by_hop(resp.headers_mut());
        }
        resp.map(|b| {
            ProxyBody::timed(b, f.deadline, f.idle, f.hold, f.on_end)
                .held_open(p.open)
                .tallied(tally)
        })
    }

    /// One attempt straight to `dst` with the proxy's own limits: what a request with no
    /// policy gets; over mesh TLS when `dst` is a meshed peer that must prove `peer`. Sent
    /// at once; the future only waits for the answer.
    pub fn passthrough(
        &self,
        req: Request<ClientBody>,
        version: Version,
        dst: SocketAddr,
        peer: Option<&SpiffeId>,
        owner: Option<&str>,
    ) -> impl Future<Output = Result<Forwarded, Error>> + Send + 'static {
        let req = req.map(body::AttemptBody::Streamed);
        let sent = self
            .pools
            .send(dst, version, self.tcp.connect_timeout, peer, owner, req);
        async move { sent.await.map(|r| Forwarded::plain(r, dst)) }
    }
}

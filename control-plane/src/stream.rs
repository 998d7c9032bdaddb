//! `Discovery.Stream`, served without tonic's per-stream machinery: a proxy's snapshot is
//! encoded once per scope and version ([`crate::scope::Scoped::encoded`]) and every stream
//! of that scope sends the same bytes, and the response body itself follows the policy (no
//! task or channel per stream). A control plane holds one stream per proxy for the proxy's
//! life, so what each stream keeps is what a cluster pays per pod (docs/benchmarks.md).
//!
//! The wire is the generated service's: gRPC framing of `ControlMessage`s, `grpc-status`
//! in the trailers when the stream ends, a refused stream answered trailers-only.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bulwark_api::codec::Lean;
use bulwark_api::wire::{self, control_message, proxy_message};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use hyper::body::Frame;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codec::Codec as _;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Status, Streaming};

use crate::scope::{Scoped, Wanted, scoped};
use crate::state::{Members, Policy, ProxyIdentity, State};
use crate::tls::Peer;

/// The method's path.
pub const PATH: &str = "/bulwark.discovery.v1.Discovery/Stream";

/// The largest message a proxy may send (tonic's default for a server).
const MAX_MESSAGE: usize = 4 << 20;

/// The `Discovery` service, for the gRPC server's router.
#[derive(Debug, Clone)]
pub struct DiscoveryRoute {
    state: Arc<State>,
}

impl DiscoveryRoute {
    /// The service over `state`.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

impl NamedService for DiscoveryRoute {
    const NAME: &'static str = wire::discovery_server::SERVICE_NAME;
}

impl Service<http::Request<Body>> for DiscoveryRoute {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            if req.uri().path() != PATH {
                return Ok(Status::unimplemented("").into_http());
            }
            Ok(match open(state, req).await {
                Ok(body) => {
                    let mut resp = http::Response::new(Body::new(body));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/grpc"),
                    );
                    resp
                }
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Reads the proxy's Hello, checks it against the connection's certificate and registers
/// the proxy; the body that follows the policy for it.
async fn open(state: Arc<State>, req: http::Request<Body>) -> Result<Follow, Status> {
    let peer = req.extensions().get::<Peer>().cloned();
    let decoder = Lean::<wire::ControlMessage, wire::ProxyMessage>::default().decoder();
    let mut inbound = Streaming::new_request(decoder, req.into_body(), None, Some(MAX_MESSAGE));
    let hello = match inbound.message().await? {
        Some(wire::ProxyMessage {
            message: Some(proxy_message::Message::Hello(h)),
        }) => h,
        _ => {
            return Err(Status::invalid_argument(
                "the first message on a discovery stream must be Hello",
            ));
        }
    };
    if hello.namespace.is_empty() {
        return Err(Status::invalid_argument(
            "Hello.namespace is required: it scopes the proxy's policy",
        ));
    }
    let hello_not_after = hello.cert_not_after_unix;
    let mut id = ProxyIdentity::from(hello);
    if let Some(Peer {
        identity: Some(proven),
        not_after,
        ..
    }) = peer
    {
        // The namespace scopes the policy a proxy is sent: a certificate for one namespace
        // does not get another's.
        if proven.namespace() != id.namespace {
            return Err(Status::permission_denied(format!(
                "the connection's certificate is {proven}, but Hello.namespace is {}",
                id.namespace
            )));
        }
        id.certified = Some((proven, not_after.unwrap_or(hello_not_after)));
    }
    tracing::info!(workload = %id.workload, namespace = %id.namespace, "proxy connected");
    let namespace = id.namespace.clone();
    let workload = id.workload.clone();
    let registered = Registered {
        key: state.register(id),
        workload,
        state: state.clone(),
    };
    let follower = Follower {
        policies: state.subscribe(),
        members: state.members(),
        closing: state.closing(),
        state,
        registered,
        namespace,
        inbound,
        last_sent: None,
        wanted: Wanted::default(),
    };
    Ok(Follow {
        next: Some(Box::pin(follower.next(true))),
        ended: false,
    })
}

/// The proxy's registration; dropped with its stream, however the stream ended.
#[derive(Debug)]
struct Registered {
    key: u64,
    workload: String,
    state: Arc<State>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.state.unregister(self.key);
        tracing::info!(workload = %self.workload, "proxy disconnected");
    }
}

/// What one stream keeps between snapshots.
struct Follower {
    state: Arc<State>,
    registered: Registered,
    namespace: String,
    inbound: Streaming<wire::ProxyMessage>,
    policies: watch::Receiver<Arc<Policy>>,
    members: watch::Receiver<Arc<Members>>,
    closing: watch::Receiver<bool>,
    last_sent: Option<(Arc<Scoped>, Arc<Members>)>,
    wanted: Wanted,
}

type Next = Pin<Box<dyn Future<Output = Option<(Bytes, Follower)>> + Send>>;

impl Follower {
    /// The next snapshot to send (with `fresh`, first look at the policy as it is), and the
    /// follower to wait for the one after; `None` when the stream is over. Answers ACKs,
    /// NACKs and Interest meanwhile.
    async fn next(mut self, mut fresh: bool) -> Option<(Bytes, Follower)> {
        loop {
            if fresh && let Some(bytes) = self.snapshot() {
                return Some((bytes, self));
            }
            fresh = self.wait().await?;
        }
    }

    /// The snapshot the proxy lacks, if its scoped policy changed since the last one.
    fn snapshot(&mut self) -> Option<Bytes> {
        let policy = self.policies.borrow_and_update().clone();
        let meshed = self.members.borrow_and_update().clone();
        let key = self.registered.key;
        if policy.version == 0 {
            return None;
        }
        let services = self.wanted.services(&policy, &self.namespace);
        let scope = scoped(&policy, &self.namespace, &services);
        // Shared scopes of one version are one allocation; across versions, content.
        let unchanged = self
            .last_sent
            .as_ref()
            .is_some_and(|(s, m)| (Arc::ptr_eq(s, &scope) || **s == *scope) && **m == *meshed);
        if unchanged {
            self.state.unchanged(key, policy.version);
            return None;
        }
        let bytes = scope.encoded(&policy, &meshed);
        self.state.sent(key, policy.version);
        self.last_sent = Some((scope, meshed));
        Some(bytes)
    }

    /// Waits for a reason to look at the policy again (`Some(true)`), or for the stream
    /// to end (`None`).
    async fn wait(&mut self) -> Option<bool> {
        let key = self.registered.key;
        loop {
            tokio::select! {
                changed = self.policies.changed() => return changed.ok().map(|()| true),
                changed = self.members.changed() => return changed.ok().map(|()| true),
                msg = self.inbound.message() => match msg {
                    Ok(Some(wire::ProxyMessage { message: Some(m) })) => match m {
                        proxy_message::Message::Ack(a) => self.state.acked(key, a.version),
                        proxy_message::Message::Nack(n) => {
                            self.state.nacked(key, n.version, n.reason)
                        }
                        proxy_message::Message::Hello(h) => {
                            self.state.renewed(key, h.cert_not_after_unix)
                        }
                        // A Service newly named widens the scope: compute it again.
                        proxy_message::Message::Interest(i) => {
                            if self.wanted.add(i) {
                                return Some(true);
                            }
                        }
                    },
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return None,
                },
                _ = self.closing.wait_for(|c| *c) => return None,
            }
        }
    }
}

/// The response body: each snapshot as one gRPC message frame, then `grpc-status: 0`.
struct Follow {
    next: Option<Next>,
    ended: bool,
}

impl hyper::body::Body for Follow {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let Some(next) = self.next.as_mut() else {
            if std::mem::replace(&mut self.ended, true) {
                return Poll::Ready(None);
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        };
        match std::task::ready!(next.as_mut().poll(cx)) {
            Some((bytes, follower)) => {
                self.next = Some(Box::pin(follower.next(false)));
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            None => {
                self.next = None;
                self.poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// One snapshot as the gRPC frame of a `ControlMessage`: the uncompressed flag, the
/// length, the message.
pub fn frame(msg: &wire::ControlMessage) -> Bytes {
    use prost::Message as _;
    let len = msg.encoded_len();
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    // Encoding into a Vec sized for it cannot run out of room.
    let _ = msg.encode(&mut buf);
    Bytes::from(buf)
}

/// The `ControlMessage` of a scope at a policy version, with the mesh's members.
pub fn snapshot_message(policy: &Policy, scope: &Scoped, meshed: &Members) -> wire::ControlMessage {
    let snapshot = wire::Snapshot {
        version: policy.version,
        documents_json: scope.json.clone(),
        meshed: meshed
            .iter()
            .map(|(ip, identity)| wire::MeshedEndpoint {
                ip: ip.clone(),
                identity: identity.clone(),
            })
            .collect(),
        services: scope.services.clone(),
        discovers_services: policy.discovers_services,
    };
    wire::ControlMessage {
        message: Some(control_message::Message::Snapshot(snapshot)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn a_frame_is_what_a_grpc_decoder_reads() {
        let msg = wire::ControlMessage {
            message: Some(control_message::Message::Snapshot(wire::Snapshot {
                version: 7,
                documents_json: "[]".into(),
                ..Default::default()
            })),
        };
        let f = frame(&msg);
        assert_eq!(f[0], 0, "not compressed");
        let len = u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
        assert_eq!(len, f.len() - 5);
        assert_eq!(wire::ControlMessage::decode(&f[5..]).unwrap(), msg);
    }
}

//! The gRPC services: `Discovery.Stream` and `Admin.Status`.

use std::pin::Pin;
use std::sync::Arc;

use bulwark_api::wire::admin_server::Admin;
use bulwark_api::wire::discovery_server::Discovery;
use bulwark_api::wire::{self, control_message, proxy_message};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::scope::{Scoped, Wanted, scoped};
use crate::state::{Members, ProxyIdentity, State};
use crate::tls::Peer;

/// Serves both services from the shared state.
#[derive(Debug, Clone)]
pub struct Service {
    state: Arc<State>,
}

impl Service {
    /// Services over `state`.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

type ControlStream = Pin<Box<dyn Stream<Item = Result<wire::ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Discovery for Service {
    type StreamStream = ControlStream;

    async fn stream(
        &self,
        request: Request<Streaming<wire::ProxyMessage>>,
    ) -> Result<Response<ControlStream>, Status> {
        let peer = request.extensions().get::<Peer>().cloned();
        let mut inbound = request.into_inner();
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
            // The namespace scopes the policy a proxy is sent: a certificate for one
            // namespace does not get another's.
            if proven.namespace() != id.namespace {
                return Err(Status::permission_denied(format!(
                    "the connection's certificate is {proven}, but Hello.namespace is {}",
                    id.namespace
                )));
            }
            id.certified = Some((proven, not_after.unwrap_or(hello_not_after)));
        }
        tracing::info!(workload = %id.workload, namespace = %id.namespace, "proxy connected");
        let (tx, rx) = mpsc::channel(4);
        let state = self.state.clone();
        tokio::spawn(async move {
            let namespace = id.namespace.clone();
            let workload = id.workload.clone();
            let key = state.register(id);
            follow(&state, key, &namespace, &mut inbound, tx).await;
            state.unregister(key);
            tracing::info!(%workload, "proxy disconnected");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends the proxy a snapshot whenever its scoped policy changes, and records its answers,
/// until either side ends the stream.
async fn follow(
    state: &State,
    key: u64,
    namespace: &str,
    inbound: &mut Streaming<wire::ProxyMessage>,
    tx: mpsc::Sender<Result<wire::ControlMessage, Status>>,
) {
    let mut policies = state.subscribe();
    let mut members = state.members();
    let mut closing = state.closing();
    let mut last_sent: Option<(Arc<Scoped>, Arc<Members>)> = None;
    let mut wanted = Wanted::default();
    loop {
        let policy = policies.borrow_and_update().clone();
        let meshed = members.borrow_and_update().clone();
        if policy.version > 0 {
            let scope = scoped(&policy, namespace, &wanted.services(&policy, namespace));
            // Shared scopes of one version are one allocation; across versions, content.
            let unchanged = last_sent
                .as_ref()
                .is_some_and(|(s, m)| (Arc::ptr_eq(s, &scope) || **s == *scope) && **m == *meshed);
            if !unchanged {
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
                let msg = wire::ControlMessage {
                    message: Some(control_message::Message::Snapshot(snapshot)),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                state.sent(key, policy.version);
                last_sent = Some((scope, meshed));
            } else {
                state.unchanged(key, policy.version);
            }
        }
        // Wait for a new policy, answering ACKs and NACKs meanwhile.
        loop {
            tokio::select! {
                changed = policies.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                changed = members.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                msg = inbound.message() => match msg {
                    Ok(Some(wire::ProxyMessage { message: Some(m) })) => match m {
                        proxy_message::Message::Ack(a) => state.acked(key, a.version),
                        proxy_message::Message::Nack(n) => state.nacked(key, n.version, n.reason),
                        proxy_message::Message::Hello(h) => state.renewed(key, h.cert_not_after_unix),
                        // A Service newly named widens the scope: compute it again.
                        proxy_message::Message::Interest(i) => {
                            if wanted.add(i) {
                                break;
                            }
                        }
                    },
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return,
                },
                _ = tx.closed() => return,
                _ = closing.wait_for(|c| *c) => return,
            }
        }
    }
}

#[tonic::async_trait]
impl Admin for Service {
    async fn status(
        &self,
        _: Request<wire::StatusRequest>,
    ) -> Result<Response<wire::StatusResponse>, Status> {
        Ok(Response::new(self.state.status()))
    }
}

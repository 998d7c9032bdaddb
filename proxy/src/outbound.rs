//! The outbound direction: connections from this pod's app to other services. Each request
//! (or opaque connection) is looked up in the snapshot's route table; one for a target with
//! policy runs through the [`engine`], anything else goes to its original destination.
//!
//! In request order: [`route`] finds the target (built by [`build`] from the documents, with
//! the types of [`policy`]); the [`registry`] keeps each target's [`target`] state; the
//! [`engine`] takes a [`bulkhead`] slot, sets the [`deadline`]s, and runs attempts
//! ([`attempt`]) to endpoints [`balance`] picks, retried as [`retry`] decides within the
//! [`budget`], hedged by [`hedge`], each feeding [`outlier`] detection. Opaque connections
//! are balanced by [`opaque`]; hostname endpoints come from [`dns`]; `/outliers` is
//! [`report`].

pub mod attempt;
pub mod balance;
pub mod budget;
pub mod build;
pub mod bulkhead;
pub mod call;
pub mod deadline;
pub mod dns;
pub mod engine;
pub mod hedge;
pub mod opaque;
pub mod outlier;
pub mod policy;
pub mod registry;
pub mod report;
pub mod retry;
pub mod route;
pub mod route_stats;
pub mod target;

#[cfg(test)]
pub(crate) mod test_util;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::accept::{Conn, Room};
use crate::error::Error;
use crate::http::activity::Open;
use crate::http::body::AttemptBody;
use crate::http::body::{BodyEnd, ClientBody, Hold, ProxyBody};
use crate::http::{Forwarded, Hop, server};
use crate::metrics::requests::Labels;
use crate::pool::{Pools, UpstreamBody, Version};
use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::tcp;
use crate::transport::copy::OnFirstByte;
use call::{Call, Upstream};

/// What the outbound direction takes.
#[derive(Debug)]
pub struct Outbound {
    /// HTTP forwarding.
    pub hop: Hop,
    /// The current policy.
    pub snapshot: SharedSnapshot,
}

/// The engine's upstream in production: the connection pools, for one HTTP version.
#[derive(Debug, Clone, Copy)]
pub struct PooledUpstream<'a> {
    /// The pools.
    pub pools: &'a Pools,
    /// The version spoken upstream (the downstream's).
    pub version: Version,
    /// Which endpoints are meshed, and who each must prove to be.
    pub snapshot: &'a Snapshot,
}

impl Upstream<ClientBody> for PooledUpstream<'_> {
    type Body = UpstreamBody;

    /// Hands the request to the pool at once (no future of its own to move it through).
    fn send(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        req: Request<AttemptBody>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, Error>> + Send {
        let peer = self.snapshot.mesh_peer(addr);
        let owner = self.snapshot.endpoint_owner(addr);
        self.pools
            .send(addr, self.version, connect_timeout, peer, owner, req)
    }
}

impl Outbound {
    /// Forwards one request: through its target's policy when the snapshot has one for it,
    /// else straight to the original destination.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        version: Version,
        dst: SocketAddr,
        open: Open,
    ) -> Response<ProxyBody> {
        let p = match self.hop.prepare(&mut req, version, dst, open) {
            Ok(p) => p,
            Err((p, e)) => return self.hop.finish(p, dst, Labels::default(), Err(e)),
        };
        let req = self.hop.client_body(&p, req);
        let snapshot = self.snapshot.load();
        let mut labels = Labels::default();
        let result = match snapshot.lookup(dst, Some(&p.authority)) {
            Some((target, state)) => {
                let policy = target.request_policy(req.method(), req.uri().path(), req.headers());
                labels.route = Some(policy.label.clone());
                let upstream = PooledUpstream {
                    pools: &self.hop.pools,
                    version,
                    snapshot: &snapshot,
                };
                let c = Call {
                    upstream: &upstream,
                    metrics: &self.hop.metrics,
                    dst,
                    target,
                    state,
                    policy,
                    grpc: p.grpc,
                    start: p.start,
                    upgrade: p.upgrade.is_some(),
                };
                engine::run(&c, req).await.map(|r| Forwarded {
                    resp: r.resp,
                    deadline: r.deadline,
                    idle: r.idle,
                    hold: r.slot.map(|s| Box::new(s) as Hold),
                    on_end: r.pending.map(|o| Box::new(o) as Box<dyn BodyEnd>),
                    served: Some(r.served),
                })
            }
            None => {
                let peer = snapshot.mesh_peer(dst);
                let owner = snapshot.endpoint_owner(dst);
                self.hop.passthrough(req, version, dst, peer, owner).await
            }
        };
        if let Ok(Forwarded {
            served: Some(s), ..
        }) = &result
        {
            labels.dst = snapshot.dst_label(s.endpoint);
            // A meshed endpoint is only ever reached over mesh TLS when this proxy has it.
            labels.tls = labels.dst.is_some() && self.hop.mesh.is_some();
        }
        self.hop.finish(p, dst, labels, result)
    }
}

impl Room for Outbound {
    async fn http(self: Arc<Self>, io: Conn, version: Version, dst: SocketAddr) {
        let room = self.clone();
        let forward = move |req, open| {
            let this = room.clone();
            async move { Ok::<_, Infallible>(this.forward(req, version, dst, open).await) }
        };
        server::serve(io, version, &self.hop, forward).await;
    }

    async fn opaque(self: Arc<Self>, io: Conn, dst: SocketAddr, learn: Option<OnFirstByte>) {
        let snapshot = self.snapshot.load_full();
        let mesh = self.hop.mesh.as_deref();
        let connected =
            opaque::connect(dst, &snapshot, mesh, &self.hop.tcp, &self.hop.metrics).await;
        match connected {
            Ok((upstream, _in_flight)) => tcp::copy(&self.hop, io, upstream, dst, learn).await,
            Err(e) => tcp::connect_failed(&self.hop, &e),
        }
    }
}

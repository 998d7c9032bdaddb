//! The inbound direction: connections from other pods to this pod's app. Requests go to
//! their original destination with the proxy's own limits; client policy is never applied
//! here (retries, timeouts and balancing are the caller's side). This is where TLS
//! termination (the peer's identity) and authorization will sit, ahead of forwarding.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::accept::{Conn, Room};
use crate::http::{Hop, server};
use crate::pool::Version;
use crate::tcp;
use crate::transport::copy::OnFirstByte;
use crate::transport::socket;

/// What the inbound direction takes.
#[derive(Debug)]
pub struct Inbound {
    /// HTTP forwarding.
    pub hop: Hop,
}

impl Room for Inbound {
    async fn http(self: Arc<Self>, io: Conn, version: Version, dst: SocketAddr) {
        let room = self.clone();
        let forward = move |mut req, open| {
            let this = room.clone();
            async move {
                let resp = match this.hop.prepare(&mut req, version, dst, open) {
                    Ok(p) => {
                        let result = this.hop.passthrough(req, version, dst).await;
                        this.hop.finish(p, dst, result)
                    }
                    Err((p, e)) => this.hop.finish(p, dst, Err(e)),
                };
                Ok::<_, Infallible>(resp)
            }
        };
        server::serve(io, version, &self.hop, forward).await;
    }

    async fn opaque(self: Arc<Self>, io: Conn, dst: SocketAddr, learn: Option<OnFirstByte>) {
        let tcp = &self.hop.tcp;
        match socket::connect(dst, tcp.connect_timeout, tcp.keepalive).await {
            Ok(upstream) => tcp::copy(&self.hop, io, upstream, dst, learn).await,
            Err(e) => tcp::connect_failed(&self.hop, &e),
        }
    }
}

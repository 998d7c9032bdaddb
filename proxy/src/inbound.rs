//! The inbound direction: connections from other pods to this pod's app. Requests go to
//! their original destination with the proxy's own limits; client policy is never applied
//! here (retries, timeouts and balancing are the caller's side).
//!
//! A connection is admitted first ([`mode`]): a mesh ClientHello (a Bulwark ALPN) is
//! terminated here, requiring the client's certificate, and what it carries (HTTP/1,
//! HTTP/2 or opaque bytes, as its ALPN says) is served like any other connection, knowing
//! the caller's identity. Anything else is forwarded as it came on a permissive port and
//! closed on a strict one, except that plaintext HTTP on a port the app's probes target is
//! read and only its probe requests pass ([`probes`]). Every other request (and every
//! connection that is not HTTP) is then authorized ([`authz`]) before it is forwarded.

pub mod authz;
pub mod callers;
pub mod mode;
pub mod probes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use self::authz::Journal;
use self::callers::Callers;
use self::mode::{Admission, Arrival};
use self::probes::Probes;
use crate::accept::{Conn, Room};
use crate::error::Kind;
use crate::http::{Hop, Prepared, server};
use crate::metrics::requests::Labels;
use crate::pool::{Version, multiplex};
use crate::snapshot::SharedSnapshot;
use crate::tcp;
use crate::transport::copy::OnFirstByte;
use crate::transport::detect::Prefixed;
use crate::transport::mesh::{self, Hello, MeshTls};
use crate::transport::socket;

/// What the inbound direction takes.
#[derive(Debug)]
pub struct Inbound {
    /// HTTP forwarding (and the mesh TLS, if identity is on).
    pub hop: Hop,
    /// The current policy (each port's mTLS mode, the authorization policies).
    pub snapshot: SharedSnapshot,
    /// This workload's namespace and name, which authorization policies target.
    pub workload: (String, String),
    /// Recent authorization decisions and their counters (`/authz`).
    pub journal: Arc<Journal>,
    /// Requests by caller identity.
    pub callers: Arc<Callers>,
    /// The app's HTTP probes, admitted whatever the mode.
    pub probes: Probes,
}

/// Which requests a connection may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Any, each authorized.
    Open,
    /// Probes only: plaintext on a strict port that the app's probes target.
    ProbesOnly,
}

/// Who is calling: the peer's address and, over mesh TLS, its verified identity, with the
/// counter its requests go to.
#[derive(Debug, Clone)]
struct Caller {
    addr: SocketAddr,
    id: Option<Arc<str>>,
    requests: Arc<AtomicU64>,
}

/// The caller's identity goes on the request's access-log line.
fn with_client_id(mut p: Prepared, caller: &Caller) -> Prepared {
    if let Some(l) = &mut p.log {
        l.entry.client_id.clone_from(&caller.id);
    }
    p
}

impl Inbound {
    fn caller(&self, addr: SocketAddr, id: Option<Arc<str>>) -> Caller {
        let requests = self.callers.counter(id.as_deref());
        Caller { addr, id, requests }
    }

    fn plain_caller(&self, io: &TcpStream) -> Option<Caller> {
        Some(self.caller(io.peer_addr().ok()?, None))
    }
}

impl Inbound {
    /// Decides what happens to `arrival` on `dst`'s port; a refusal is counted and logged
    /// with the peer's address here.
    fn admit(&self, arrival: Arrival, dst: SocketAddr, io: &TcpStream) -> Admission {
        let admission = self.admission(arrival, dst);
        if admission == Admission::Refuse {
            self.refused(dst, io);
        }
        admission
    }

    fn admission(&self, arrival: Arrival, dst: SocketAddr) -> Admission {
        let mode = self.snapshot.load().inbound_modes.of(dst.port());
        mode::admit(mode, arrival, self.hop.mesh.is_some())
    }

    fn refused(&self, dst: SocketAddr, io: &TcpStream) {
        self.hop
            .metrics
            .error(self.hop.direction, Kind::PlaintextRefused);
        let peer = io.peer_addr().ok();
        tracing::info!(
            peer = ?peer,
            %dst,
            "connection refused: the port is strict and this is not mesh TLS"
        );
    }

    /// What becomes of a request: a probe passes; past a probes-only gate nothing else
    /// does; anything else is authorized.
    fn verdict(
        &self,
        gate: Gate,
        caller: &Caller,
        dst: SocketAddr,
        req: &http::Request<hyper::body::Incoming>,
    ) -> Result<(), Kind> {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if self.probes.admits(dst.port(), req.method(), target) {
            return Ok(());
        }
        if gate == Gate::ProbesOnly {
            tracing::info!(
                peer = %caller.addr,
                %dst,
                target,
                "request refused: the port is strict, this is not mesh TLS and not a probe"
            );
            return Err(Kind::PlaintextRefused);
        }
        match self.authorized(caller, dst, Some((req.method().as_str(), req.uri().path()))) {
            true => Ok(()),
            false => Err(Kind::Unauthorized),
        }
    }

    /// Whether `caller` may make `http` (method, path; none: a connection that is not
    /// HTTP) to `dst`; a decision that needed a policy is journaled.
    fn authorized(&self, caller: &Caller, dst: SocketAddr, http: Option<(&str, &str)>) -> bool {
        let snapshot = self.snapshot.load();
        let workload = (self.workload.0.as_str(), self.workload.1.as_str());
        if !snapshot.authz.applies(workload) {
            return true;
        }
        let r = authz::Request {
            port: dst.port(),
            peer: caller.addr.ip(),
            client: caller.id.as_deref(),
            http,
        };
        let decision = snapshot.authz.decide(workload, &r);
        self.journal.record(caller.addr, &r, &decision);
        decision.allowed
    }

    /// Serves HTTP from `caller` to the app at `dst`, each request let through `gate` first.
    async fn serve_http<I>(
        self: Arc<Self>,
        io: I,
        version: Version,
        dst: SocketAddr,
        caller: Caller,
        gate: Gate,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let room = self.clone();
        let forward = move |mut req: http::Request<hyper::body::Incoming>, open| {
            let this = room.clone();
            let caller = caller.clone();
            caller.requests.fetch_add(1, Ordering::Relaxed);
            let verdict = this.verdict(gate, &caller, dst, &req);
            let up = app_version(version, &mut req, caller.id.is_some());
            async move {
                let prepared = this.hop.prepare_for(&mut req, (version, up), dst, open);
                let labels = Labels {
                    tls: caller.id.is_some(),
                    ..Labels::default()
                };
                let resp = match prepared.map(|p| with_client_id(p, &caller)) {
                    Ok(p) if let Err(kind) = verdict => {
                        this.hop.finish(p, dst, labels, Err(kind.into()))
                    }
                    Ok(p) => {
                        tell_client_id(req.headers_mut(), caller.id.as_deref());
                        let req = this.hop.client_body(&p, req);
                        let result = this.hop.passthrough(req, up, dst, None, None).await;
                        this.hop.finish(p, dst, labels, result)
                    }
                    Err((p, e)) => this.hop.finish(p, dst, labels, Err(e)),
                };
                Ok::<_, Infallible>(resp)
            }
        };
        server::serve(io, version, &self.hop, forward).await;
    }

    /// Forwards opaque bytes from `caller` to the app at `dst`, if authorized.
    async fn forward_opaque<I>(
        &self,
        io: I,
        dst: SocketAddr,
        caller: Caller,
        learn: Option<OnFirstByte>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        if !self.authorized(&caller, dst, None) {
            self.hop
                .metrics
                .error(self.hop.direction, Kind::Unauthorized);
            return;
        }
        let tcp = &self.hop.tcp;
        match socket::connect(dst, tcp.connect_timeout, tcp.keepalive).await {
            Ok(upstream) => tcp::copy(&self.hop, io, upstream, dst, learn).await,
            Err(e) => tcp::connect_failed(&self.hop, &e),
        }
    }

    /// Terminates a mesh connection and serves what its ALPN says it carries.
    async fn terminate(self: Arc<Self>, mesh: &MeshTls, io: Conn, dst: SocketAddr) {
        let peer = io.get_ref().peer_addr().ok();
        let timeout = self.hop.limits.header_read_timeout;
        let t = match mesh.accept(io, timeout).await {
            Ok(t) => t,
            Err(e) => {
                self.hop
                    .metrics
                    .error(self.hop.direction, Kind::TlsHandshake);
                tracing::info!(error = %e, peer = ?peer, %dst, "mesh TLS handshake refused");
                return;
            }
        };
        tracing::debug!(client = %t.peer, peer = ?peer, %dst, "mesh connection");
        let Some(addr) = peer else { return };
        let caller = self.caller(addr, Some(t.peer.to_string().into()));
        match t.alpn.as_slice() {
            bulwark_identity::ALPN_HTTP1 => {
                self.serve_http(t.stream, Version::Http1, dst, caller, Gate::Open)
                    .await
            }
            bulwark_identity::ALPN_H2 => {
                self.serve_http(t.stream, Version::Http2, dst, caller, Gate::Open)
                    .await
            }
            _ => self.forward_opaque(t.stream, dst, caller, None).await,
        }
    }
}

/// The version a request goes to the app in: HTTP/1 when a peer's proxy carried an HTTP/1
/// request as a stream on a mesh HTTP/2 connection, else the one it came in. Only a mesh
/// peer's [`multiplex::ORIG_PROTO`] counts; anyone else's is removed.
fn app_version<B>(version: Version, req: &mut http::Request<B>, meshed: bool) -> Version {
    if version == Version::Http2 && meshed && multiplex::lower(req) {
        return Version::Http1;
    }
    req.headers_mut().remove(multiplex::ORIG_PROTO);
    version
}

/// The header that tells the app who called: the client's verified SPIFFE ID, set by the
/// inbound proxy only (Linkerd's `l5d-client-id`).
pub const CLIENT_ID_HEADER: &str = "x-bulwark-client-id";

/// Sets [`CLIENT_ID_HEADER`] to `id`, and removes whatever the client sent in it: a caller
/// can never claim an identity it did not prove.
fn tell_client_id(headers: &mut http::HeaderMap, id: Option<&str>) {
    headers.remove(CLIENT_ID_HEADER);
    if let Some(v) = id.and_then(|id| http::HeaderValue::from_str(id).ok()) {
        headers.insert(CLIENT_ID_HEADER, v);
    }
}

impl Room for Inbound {
    async fn http(self: Arc<Self>, io: Conn, version: Version, dst: SocketAddr) {
        let Some(caller) = self.plain_caller(io.get_ref()) else {
            return;
        };
        let gate = match self.admission(Arrival::Other, dst) {
            Admission::Refuse if self.probes.on_port(dst.port()) => Gate::ProbesOnly,
            Admission::Refuse => return self.refused(dst, io.get_ref()),
            _ => Gate::Open,
        };
        self.serve_http(io, version, dst, caller, gate).await;
    }

    async fn opaque(self: Arc<Self>, io: Conn, dst: SocketAddr, learn: Option<OnFirstByte>) {
        let Some(caller) = self.plain_caller(io.get_ref()) else {
            return;
        };
        if self.admit(Arrival::Other, dst, io.get_ref()) == Admission::Refuse {
            return;
        }
        self.forward_opaque(io, dst, caller, learn).await;
    }

    async fn tls(self: Arc<Self>, io: Conn, dst: SocketAddr) {
        let (prefix, mut tcp) = io.into_parts();
        let (hello, seen) = match mesh::read_hello(prefix, &mut tcp).await {
            Ok(read) => read,
            Err(e) => {
                tracing::debug!(error = %e, %dst, "read failed in a ClientHello");
                return;
            }
        };
        let arrival = match hello {
            Hello::Mesh => Arrival::MeshTls,
            Hello::Other => Arrival::Other,
        };
        let Some(caller) = self.plain_caller(&tcp) else {
            return;
        };
        let admission = self.admit(arrival, dst, &tcp);
        let io = Prefixed::new(seen, tcp);
        match (admission, self.hop.mesh.clone()) {
            (Admission::Terminate, Some(mesh)) => self.terminate(&mesh, io, dst).await,
            (Admission::Refuse, _) => {}
            _ => self.forward_opaque(io, dst, caller, None).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_proxy_says_who_called() {
        let mut h = http::HeaderMap::new();
        h.insert(
            CLIENT_ID_HEADER,
            "spiffe://cluster.local/ns/x/sa/forged".parse().unwrap(),
        );
        tell_client_id(&mut h, None);
        assert!(h.get(CLIENT_ID_HEADER).is_none());
        h.append(CLIENT_ID_HEADER, "forged".parse().unwrap());
        h.append(CLIENT_ID_HEADER, "forged again".parse().unwrap());
        tell_client_id(&mut h, Some("spiffe://cluster.local/ns/shop/sa/web"));
        let all: Vec<_> = h.get_all(CLIENT_ID_HEADER).iter().collect();
        assert_eq!(all, ["spiffe://cluster.local/ns/shop/sa/web"]);
    }
}

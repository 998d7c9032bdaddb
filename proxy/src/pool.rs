//! Upstream HTTP connections, pooled per endpoint and protocol, bounded in count.
//!
//! Each endpoint's pool ([`endpoint`]) dials that one address, whatever the request's
//! authority says, so the request keeps its own `Host` / `:authority` while the connection
//! goes to the original destination. A pool to a meshed endpoint dials mesh TLS (its ALPN
//! says which HTTP version the connection carries); connections are reused, so handshakes
//! are rare. A sweeper task closes connections idle past the idle timeout.

mod endpoint;
pub mod multiplex;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bulwark_identity::SpiffeId;
use http::{Request, Response};

use crate::config::{HttpConfig, MeshHttp1, TcpConfig};
use crate::error::{Error, Kind};
use crate::http::body::{AttemptBody, DownstreamBodyError};
use crate::lock::lock;
use crate::map::FastMap;
use crate::transport::mesh::MeshTls;
use crate::transport::socket::ConnectError;

pub use endpoint::{Endpoint, UpstreamBody};

/// Which HTTP version the pool speaks upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
}

impl Version {
    /// The mesh ALPN of a connection carrying this version.
    pub fn mesh_alpn(self) -> &'static [u8] {
        match self {
            Version::Http1 => bulwark_identity::ALPN_HTTP1,
            Version::Http2 => bulwark_identity::ALPN_H2,
        }
    }
}

/// A pool's key: endpoint, protocol, and connect timeout (policies may differ in it). The
/// identity an endpoint must prove and the pod behind it are kept in its entry: an address
/// has one of each at a time, and a pool whose address now belongs to another identity or
/// another pod (a new pod on a reused IP) is replaced, its idle connections closed.
type Key = (SocketAddr, Version, Duration);

/// Pools keyed by endpoint and protocol, with a use counter for LRU eviction.
#[derive(Debug, Default)]
struct Table {
    clock: u64,
    map: FastMap<Key, Entry>,
    /// Whether the sweeper task runs.
    swept: bool,
}

#[derive(Debug)]
struct Entry {
    pool: Arc<Endpoint>,
    peer: Option<SpiffeId>,
    owner: Option<Box<str>>,
    last_used: u64,
}

/// Every endpoint's pool. The least recently used pool is dropped past the bound (its idle
/// connections close; requests in flight on it finish).
#[derive(Debug)]
pub struct Pools {
    http: HttpConfig,
    tcp: TcpConfig,
    mesh: Option<Arc<MeshTls>>,
    clients: Arc<Mutex<Table>>,
}

impl Pools {
    /// Empty pools built with these limits; `mesh` is the TLS for meshed endpoints (none:
    /// every connection is plaintext).
    pub fn new(http: HttpConfig, tcp: TcpConfig, mesh: Option<Arc<MeshTls>>) -> Self {
        Self {
            http,
            tcp,
            mesh,
            clients: Arc::new(Mutex::new(Table::default())),
        }
    }

    /// The pool for `addr`, which must prove `peer` when it is meshed, and is the pod
    /// `owner` when known; created on first use.
    pub fn get(
        &self,
        addr: SocketAddr,
        version: Version,
        connect_timeout: Duration,
        peer: Option<&SpiffeId>,
        owner: Option<&str>,
    ) -> Arc<Endpoint> {
        let peer = peer.filter(|_| self.mesh.is_some());
        let key = (addr, version, connect_timeout);
        let mut guard = lock(&self.clients);
        let table = &mut *guard;
        table.clock += 1;
        let now = table.clock;
        if let Some(e) = table.map.get_mut(&key) {
            if e.peer.as_ref() == peer && e.owner.as_deref() == owner {
                e.last_used = now;
                return e.pool.clone();
            }
            tracing::debug!(%addr, owner, "the endpoint's identity or pod changed: its pooled connections are dropped");
        } else if table.map.len() >= self.http.pool_max_endpoints
            && let Some(oldest) = table
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
        {
            table.map.remove(&oldest);
        }
        if !table.swept {
            table.swept = self.start_sweeper();
        }
        let pool = Arc::new(self.build(key, peer));
        table.map.insert(
            key,
            Entry {
                pool: pool.clone(),
                peer: peer.cloned(),
                owner: owner.map(Box::from),
                last_used: now,
            },
        );
        pool
    }

    /// Sends `req` to `addr` on a pooled connection; a failure says whose fault it was. To
    /// a meshed peer, an HTTP/1 request goes as a stream on the shared HTTP/2 mesh connection
    /// when multiplexing is on ([`multiplex`]); its response then says HTTP/2, which the
    /// downstream HTTP/1 server writes as HTTP/1.1. An app's own [`multiplex::ORIG_PROTO`]
    /// never reaches the peer.
    pub fn send(
        &self,
        addr: SocketAddr,
        version: Version,
        connect_timeout: Duration,
        peer: Option<&SpiffeId>,
        owner: Option<&str>,
        mut req: Request<AttemptBody>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, Error>> + Send + 'static {
        // The endpoint's future is returned as it is: wrapped in another one it would be
        // stored twice, and hyper's HTTP/2 server copies a request's whole future into the
        // stream's task (benches/instructions.json guards this).
        let meshed = peer.is_some() && self.mesh.is_some();
        let version = match version {
            Version::Http1
                if meshed
                    && self.http.mesh_http1 == MeshHttp1::Multiplexed
                    && multiplex::liftable(&req) =>
            {
                multiplex::lift(&mut req, addr);
                Version::Http2
            }
            v => {
                if meshed {
                    req.headers_mut().remove(multiplex::ORIG_PROTO);
                }
                v
            }
        };
        self.get(addr, version, connect_timeout, peer, owner)
            .send(req)
    }

    /// Endpoints with a live pool.
    pub fn len(&self) -> usize {
        lock(&self.clients).map.len()
    }

    /// Whether no pool exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn build(&self, key: Key, peer: Option<&SpiffeId>) -> Endpoint {
        Endpoint::new(self.settings(key, peer))
    }

    fn settings(
        &self,
        (addr, version, connect_timeout): Key,
        peer: Option<&SpiffeId>,
    ) -> endpoint::Settings {
        endpoint::Settings {
            addr,
            version,
            connect_timeout,
            keepalive: self.tcp.keepalive,
            peer: peer.zip(self.mesh.clone()).map(|(p, m)| (p.clone(), m)),
            idle_timeout: self.http.pool_idle_timeout,
            max_idle: self.http.pool_max_idle_per_endpoint,
            max_headers: self.http.max_headers,
            max_header_bytes: u32::try_from(self.http.max_header_bytes).unwrap_or(u32::MAX),
        }
    }

    /// Starts the task that closes idle connections, when there is a runtime to run it;
    /// it ends with the pools.
    fn start_sweeper(&self) -> bool {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let every = (self.http.pool_idle_timeout / 2)
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        rt.spawn(sweep(Arc::downgrade(&self.clients), every));
        true
    }
}

/// Every `every`, lets each pool close its connections idle past the timeout.
async fn sweep(table: Weak<Mutex<Table>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(table) = table.upgrade() else { return };
        let pools: Vec<Arc<Endpoint>> = lock(&table).map.values().map(|e| e.pool.clone()).collect();
        for p in pools {
            p.sweep();
        }
    }
}

/// Why the client's body failed: its framing was broken (a chunk line hyper's decoder
/// refuses: an overflowing size, a bare LF), or it stopped before its end.
fn client_body_failure(e: &DownstreamBodyError) -> Kind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            )
        {
            return Kind::MalformedRequest;
        }
        source = err.source();
    }
    Kind::DownstreamAborted
}

/// Sorts a client error by whose fault it is: the client's body failed (its upload was
/// aborted), a connect failed (the request never left), an HTTP/2 stream was refused (never
/// processed), or else the upstream connection broke.
pub fn error_of(e: &(dyn std::error::Error + 'static)) -> Error {
    let mut source = Some(e);
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
mod tests;

//! Upstream HTTP connection pools, one per endpoint and protocol, bounded in count.
//!
//! Each pool is a hyper-util client whose connector always dials one endpoint, so the
//! request keeps its own authority (`Host` / `:authority`) while the connection goes to the
//! original destination.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::config::{HttpConfig, TcpConfig};
use crate::outbound::replay::ReplayBody;
use crate::transport::socket::{self, ConnectError};

/// Dials one endpoint, whatever the request URI says.
#[derive(Debug, Clone)]
pub struct EndpointConnector {
    addr: SocketAddr,
    connect_timeout: Duration,
    keepalive: Duration,
}

impl tower_service::Service<http::Uri> for EndpointConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (addr, timeout, keepalive) = (self.addr, self.connect_timeout, self.keepalive);
        Box::pin(async move {
            socket::connect(addr, timeout, keepalive)
                .await
                .map(TokioIo::new)
        })
    }
}

/// A request body sent upstream: the downstream's, streamed once, or one that can be
/// replayed by a retry or a hedge.
pub type ReqBody = Either<Incoming, ReplayBody>;

/// A pooled client for one endpoint.
pub type EndpointClient = Client<EndpointConnector, ReqBody>;

/// Which HTTP version the pool speaks upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
}

/// A pool's identity: endpoint, protocol, and connect timeout (policies may differ in it).
type Key = (SocketAddr, Version, Duration);

/// Pools keyed by endpoint and protocol, with a use counter for LRU eviction.
#[derive(Debug, Default)]
struct Table {
    clock: u64,
    map: HashMap<Key, Entry>,
}

#[derive(Debug)]
struct Entry {
    client: EndpointClient,
    last_used: u64,
}

/// Every endpoint's pool. The least recently used pool is dropped past the bound (its idle
/// connections close; requests in flight on it finish).
#[derive(Debug)]
pub struct Pools {
    http: HttpConfig,
    tcp: TcpConfig,
    clients: Mutex<Table>,
}

impl Pools {
    /// Empty pools built with these limits.
    pub fn new(http: HttpConfig, tcp: TcpConfig) -> Self {
        Self {
            http,
            tcp,
            clients: Mutex::new(Table::default()),
        }
    }

    /// The client for `addr`, created on first use.
    pub fn get(
        &self,
        addr: SocketAddr,
        version: Version,
        connect_timeout: Duration,
    ) -> EndpointClient {
        let key = (addr, version, connect_timeout);
        let mut guard = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let Table { clock, map } = &mut *guard;
        *clock += 1;
        let now = *clock;
        if let Some(e) = map.get_mut(&key) {
            e.last_used = now;
            return e.client.clone();
        }
        if map.len() >= self.http.pool_max_endpoints {
            if let Some(oldest) = map.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        let client = self.build(key);
        map.insert(
            key,
            Entry {
                client: client.clone(),
                last_used: now,
            },
        );
        client
    }

    /// Endpoints with a live pool.
    pub fn len(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    /// Whether no pool exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn build(&self, (addr, version, connect_timeout): Key) -> EndpointClient {
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(self.http.pool_idle_timeout)
            .pool_max_idle_per_host(self.http.pool_max_idle_per_endpoint)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        if version == Version::Http2 {
            b.http2_only(true)
                .http2_max_header_list_size(self.http.max_header_bytes as u32)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .http2_keep_alive_while_idle(false);
        } else {
            b.http1_max_headers(self.http.max_headers.max(100));
        }
        b.build(EndpointConnector {
            addr,
            connect_timeout,
            keepalive: self.tcp.keepalive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn pools_are_per_endpoint_and_bounded() {
        let mut cfg = Config::default();
        cfg.http.pool_max_endpoints = 2;
        let t = cfg.tcp.connect_timeout;
        let pools = Pools::new(cfg.http, cfg.tcp);
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let c: SocketAddr = "10.0.0.3:80".parse().unwrap();
        pools.get(a, Version::Http1, t);
        pools.get(b, Version::Http1, t);
        pools.get(a, Version::Http1, t);
        assert_eq!(pools.len(), 2);
        pools.get(c, Version::Http1, t);
        assert_eq!(pools.len(), 2);
        let map = &pools.clients.lock().unwrap().map;
        assert!(
            map.contains_key(&(a, Version::Http1, t)),
            "a was used most recently and stays"
        );
        assert!(!map.contains_key(&(b, Version::Http1, t)));
    }
}

//! Routing, decided without I/O: which target a connection or request is for (by HTTP
//! authority, then by address), and which of its routes a request matches.

use crate::map::FastMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bulwark_api::policy;
use http::{HeaderMap, Method};
use serde::Serialize;

use super::policy::{RequestPolicy, Target};

impl Target {
    /// The policy for a request: the first matching route's, or the target's.
    pub fn request_policy(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> &Arc<RequestPolicy> {
        self.routes
            .iter()
            .find(|r| route_matches(&r.matches, method, path, headers))
            .map(|r| &r.policy)
            .unwrap_or(&self.default)
    }
}

/// Whether every criterion of `m` holds for the request.
pub fn route_matches(
    m: &policy::RouteMatch,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> bool {
    if let Some(p) = &m.path_prefix
        && !path.starts_with(p.as_str())
    {
        return false;
    }
    if let Some(want) = &m.method
        && !want.eq_ignore_ascii_case(method.as_str())
    {
        return false;
    }
    for (name, value) in &m.headers {
        if headers.get(name.as_str()).and_then(|v| v.to_str().ok()) != Some(value.as_str()) {
            return false;
        }
    }
    if let Some(g) = &m.grpc {
        // gRPC paths are `/package.Service/Method`.
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (service, rpc) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if service != g.service || g.method.as_deref().is_some_and(|m| m != rpc) {
            return false;
        }
    }
    true
}

/// Every target of one snapshot, indexed by the names and addresses that reach it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteTable {
    /// The targets.
    pub targets: Vec<Arc<Target>>,
    /// Host names (lower case) → (port, target) pairs, the port `None` when every port
    /// matches. Keyed by the name alone so a lookup borrows the request's authority instead
    /// of building a key.
    #[serde(skip)]
    by_host: FastMap<String, Vec<(Option<u16>, usize)>>,
    /// Literal endpoint addresses → target.
    #[serde(skip)]
    by_addr: FastMap<SocketAddr, usize>,
    /// The targets with hostname endpoints, whose addresses only DNS knows.
    #[serde(skip)]
    pub hostname_targets: Vec<usize>,
}

impl RouteTable {
    /// The target of a connection to `dst`, whose HTTP authority (if any) is `authority`.
    /// The authority is looked up first (with its port, then without), then the address.
    pub fn lookup(&self, dst: SocketAddr, authority: Option<&str>) -> Option<&Arc<Target>> {
        self.lookup_index(dst, authority)
            .and_then(|i| self.targets.get(i))
    }

    /// Like [`RouteTable::lookup`], as an index into `targets`.
    pub fn lookup_index(&self, dst: SocketAddr, authority: Option<&str>) -> Option<usize> {
        if self.targets.is_empty() {
            return None;
        }
        if let Some(a) = authority {
            let (host, port) = split_authority(a, dst.port());
            let host = host.trim_end_matches('.');
            let hit = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                self.host_entry(&host.to_ascii_lowercase(), port)
            } else {
                self.host_entry(host, port)
            };
            if hit.is_some() {
                return hit;
            }
        }
        self.by_addr.get(&dst).copied()
    }

    /// The target for `host` on `port`: one named for that port first, then one for any.
    fn host_entry(&self, host: &str, port: u16) -> Option<usize> {
        let entries = self.by_host.get(host)?;
        entries
            .iter()
            .find(|e| e.0 == Some(port))
            .or_else(|| entries.iter().find(|e| e.0.is_none()))
            .map(|e| e.1)
    }

    /// Adds `host` (on `port`, or every port) for target `i`, unless it is taken.
    pub(super) fn add_host(&mut self, host: String, port: Option<u16>, i: usize) {
        let entries = self.by_host.entry(host).or_default();
        if !entries.iter().any(|e| e.0 == port) {
            entries.push((port, i));
        }
    }

    /// Adds a literal endpoint address for target `i`, unless it is taken.
    pub(super) fn add_addr(&mut self, addr: SocketAddr, i: usize) {
        self.by_addr.entry(addr).or_insert(i);
    }

    /// Whether the table has no target.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// Whether an HTTP authority names a host (rather than being absent or an IP address).
pub fn names_a_host(authority: Option<&str>) -> bool {
    authority.is_some_and(|a| {
        let (host, _) = split_authority(a, 0);
        host.parse::<std::net::IpAddr>().is_err()
    })
}

fn split_authority(authority: &str, default_port: u16) -> (&str, u16) {
    // `[v6]:port`, `host:port`, or a bare host.
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host, port.unwrap_or(default_port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().unwrap_or(default_port)),
        _ => (authority, default_port),
    }
}

impl RouteTable {
    /// Endpoints the targets name (a hostname counts once, whatever it resolves to).
    pub fn endpoint_count(&self) -> usize {
        self.targets.iter().map(|t| t.endpoints.len()).sum()
    }

    /// Refuses a table naming more endpoints than `max`: each costs run-time state, a
    /// connection pool and metrics, so a mistaken generator cannot exhaust the proxy.
    pub fn check_bound(&self, max: usize) -> Result<(), String> {
        let n = self.endpoint_count();
        if n > max {
            return Err(format!(
                "the policy names {n} endpoints, more than this proxy takes (--max-policy-endpoints {max})"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

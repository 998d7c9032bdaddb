//! Services with endpoints (cluster mode): a target per Service port, reached by the
//! Service's names on that port and by each cluster IP, balanced over the ready endpoints,
//! the terminating ones only while none is ready.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bulwark_api::policy::{MeshDefaults, TargetKind, TrafficPolicy};

use super::super::policy::EndpointSpec;
use super::super::route::RouteTable;
use super::{names, target};

/// A Kubernetes Service and its endpoints, as the control plane sent them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Cluster IPs (one per IP family).
    pub cluster_ips: Vec<IpAddr>,
    /// Ports, each with its endpoints.
    pub ports: Vec<ServicePortSpec>,
}

/// One port of a [`ServiceSpec`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServicePortSpec {
    /// The port the Service is called on.
    pub port: u16,
    /// Endpoints taking new requests.
    pub ready: Vec<SocketAddr>,
    /// Terminating endpoints still serving: used only while none is ready.
    pub terminating: Vec<SocketAddr>,
    /// The pod behind each endpoint (its UID), where known.
    pub owners: Vec<(SocketAddr, String)>,
}

/// Adds a target per port of each Service; the policy naming a port wins over one naming
/// none. Returns what was sent, as (namespace, name, port), with `None` for the Service as
/// a whole, so policies on them are not given an original-destination target too.
pub(super) fn add<'a>(
    table: &mut RouteTable,
    services: &'a [ServiceSpec],
    policies: &[&TrafficPolicy],
    defaults: &MeshDefaults,
) -> HashSet<(&'a str, &'a str, Option<u16>)> {
    let mut sent = HashSet::new();
    for s in services {
        for sp in &s.ports {
            let tp = policies
                .iter()
                .copied()
                .filter(|p| {
                    let r = &p.spec.target_ref;
                    r.kind == TargetKind::Service
                        && r.name == s.name
                        && p.metadata.namespace() == s.namespace
                        && r.port.is_none_or(|port| port == sp.port)
                })
                .max_by_key(|p| p.spec.target_ref.port.is_some());
            let chosen = if sp.ready.is_empty() {
                &sp.terminating
            } else {
                &sp.ready
            };
            let endpoints = chosen.iter().map(|a| EndpointSpec::Addr(*a)).collect();
            let key = format!("Service/{}/{}:{}", s.namespace, s.name, sp.port);
            let i = table.targets.len();
            for n in names(&s.name, &s.namespace) {
                table.add_host(n, Some(sp.port), i);
            }
            for ip in &s.cluster_ips {
                table.add_addr(SocketAddr::new(*ip, sp.port), i);
            }
            table
                .targets
                .push(Arc::new(target(key, endpoints, defaults, tp)));
            sent.insert((s.namespace.as_str(), s.name.as_str(), Some(sp.port)));
        }
        sent.insert((s.namespace.as_str(), s.name.as_str(), None));
    }
    sent
}

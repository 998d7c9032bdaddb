//! The policy a connection is handled with. Built whole — documents, route table and each
//! target's run-time state together, by [`Snapshot::build`] — and swapped in one store, so
//! a connection reads one consistent snapshot when it starts and keeps it to the end.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bulwark_api::policy::Document;
use bulwark_identity::SpiffeId;
use serde::Serialize;

use crate::discovery::interest::Interest;
use crate::inbound::authz::Authz;
use crate::inbound::mode::Modes;
use crate::metrics::requests::DstLabel;
use crate::outbound::build::{self, ServiceSpec};
use crate::outbound::policy::Target;
use crate::outbound::registry::Registry;
use crate::outbound::route::{self, RouteTable};
use crate::outbound::target::TargetState;

/// Immutable policy. Until a control plane supplies one, it is derived from the flags.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Snapshot {
    /// Version of the policy from the control plane; 0 means "local flags only".
    pub version: u64,
    /// Destination ports forwarded as opaque TCP without detection.
    pub opaque_ports: BTreeSet<u16>,
    /// The policy documents in scope for this proxy, validated.
    pub documents: Vec<Document>,
    /// The Kubernetes Services in scope, with their endpoints (none in file mode).
    pub services: Vec<ServiceSpec>,
    /// The targets the documents define, with their effective policy.
    pub routes: RouteTable,
    /// The meshed workloads' pod IPs and the identity each must prove: connections to them
    /// are mesh TLS.
    pub meshed: Arc<BTreeMap<IpAddr, SpiffeId>>,
    /// The same workloads as request-metric labels (one allocation each, shared by every
    /// request to them).
    #[serde(skip)]
    pub dst_labels: Arc<crate::map::FastMap<IpAddr, Arc<DstLabel>>>,
    /// What each inbound port accepts besides mesh TLS.
    pub inbound_modes: Modes,
    /// Who may reach this workload's ports and routes.
    pub authz: Authz,
    /// The pod behind each Service endpoint (its UID): a pooled connection is used only for
    /// the pod it was opened to.
    #[serde(skip)]
    pub owners: Arc<crate::map::FastMap<SocketAddr, Arc<str>>>,
    /// The control plane discovers Services: destinations without a target are noted in
    /// `interest` for it.
    pub discovers_services: bool,
    /// Destinations noted for the control plane; shared by every snapshot of the process.
    #[serde(skip)]
    pub interest: Arc<Interest>,
    /// Each target's run-time state, in the order of `routes.targets`.
    #[serde(skip)]
    states: Vec<Arc<TargetState>>,
}

/// Why a snapshot could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TooLarge(pub String);

impl Snapshot {
    /// A snapshot with no policy: the flags' opaque ports only.
    pub fn from_flags(opaque_ports: BTreeSet<u16>) -> Self {
        Self {
            opaque_ports,
            ..Self::default()
        }
    }

    /// The snapshot of `documents` (validated) and `services`: their targets, each with its
    /// run-time state from `registry` (kept from the last snapshot where the target was
    /// there already). Refused whole when they name more endpoints than the registry takes.
    pub fn build(
        version: u64,
        opaque_ports: BTreeSet<u16>,
        documents: Vec<Document>,
        services: Vec<ServiceSpec>,
        registry: &Registry,
    ) -> Result<Self, TooLarge> {
        let routes = build::table(&documents, &services);
        let owners: crate::map::FastMap<SocketAddr, Arc<str>> = services
            .iter()
            .flat_map(|s| &s.ports)
            .flat_map(|p| &p.owners)
            .map(|(a, uid)| (*a, Arc::from(uid.as_str())))
            .collect();
        routes
            .check_bound(registry.max_endpoints())
            .map_err(TooLarge)?;
        let states = registry.states_for(&routes.targets);
        Ok(Self {
            version,
            opaque_ports,
            inbound_modes: Modes::from_documents(&documents),
            authz: Authz::from_documents(&documents),
            documents,
            services,
            routes,
            meshed: Arc::default(),
            dst_labels: Arc::default(),
            discovers_services: false,
            interest: Arc::default(),
            owners: Arc::new(owners),
            states,
        })
    }

    /// The pod behind `addr`, when the control plane said.
    pub fn endpoint_owner(&self, addr: SocketAddr) -> Option<&str> {
        if self.owners.is_empty() {
            return None;
        }
        self.owners.get(&addr).map(|o| &**o)
    }

    /// The request-metric labels of the meshed workload at `addr`.
    pub fn dst_label(&self, addr: SocketAddr) -> Option<Arc<DstLabel>> {
        if self.dst_labels.is_empty() {
            return None;
        }
        self.dst_labels.get(&addr.ip()).cloned()
    }

    /// Sets the meshed workloads, and their metric labels with them.
    pub fn set_meshed(&mut self, meshed: BTreeMap<IpAddr, SpiffeId>) {
        let labels = meshed.iter().map(|(ip, id)| {
            let label = DstLabel {
                namespace: id.namespace().into(),
                service_account: id.service_account().into(),
            };
            (*ip, Arc::new(label))
        });
        self.dst_labels = Arc::new(labels.collect());
        self.meshed = Arc::new(meshed);
    }

    /// The identity the peer at `addr` must prove, when it is a meshed workload.
    pub fn mesh_peer(&self, addr: SocketAddr) -> Option<&SpiffeId> {
        if self.meshed.is_empty() {
            return None;
        }
        self.meshed.get(&addr.ip())
    }

    /// The target (and its state) of a connection to `dst` with this HTTP authority.
    pub fn lookup(
        &self,
        dst: SocketAddr,
        authority: Option<&str>,
    ) -> Option<(&Arc<Target>, &Arc<TargetState>)> {
        let i = match self.routes.lookup_index(dst, authority) {
            Some(i) => i,
            // An app that resolved a Backend's hostname itself dials the address, and an
            // opaque protocol carries no name: the address DNS gave for it is the Backend's.
            // Not when the request names another host: one address can serve many names.
            None if !self.routes.hostname_targets.is_empty() && !route::names_a_host(authority) => {
                self.routes.hostname_targets.iter().copied().find(|&i| {
                    self.states
                        .get(i)
                        .is_some_and(|s| s.has_resolved_address(dst))
                })?
            }
            None => {
                if self.discovers_services {
                    self.interest.note(dst, authority);
                }
                return None;
            }
        };
        Some((self.routes.targets.get(i)?, self.states.get(i)?))
    }
}

/// The one place the current snapshot lives.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// A shared snapshot holding `initial`.
pub fn shared(initial: Snapshot) -> SharedSnapshot {
    Arc::new(ArcSwap::from_pointee(initial))
}

//! What the Kubernetes source adds to the state: the Services' index, the meshed pods,
//! and the policy objects it refused.

use bulwark_api::wire;

use super::{Members, State, lock};

/// See [`Policy::service_index`].
#[derive(Debug, Default)]
pub struct ServiceIndex {
    /// Cluster IP and port → Service.
    pub by_addr: std::collections::HashMap<std::net::SocketAddr, usize>,
    /// (namespace, name) → Service.
    pub by_name: std::collections::HashMap<(String, String), usize>,
}

impl ServiceIndex {
    pub(super) fn of(services: &[wire::Service]) -> Self {
        let mut index = Self::default();
        for (i, s) in services.iter().enumerate() {
            index
                .by_name
                .insert((s.namespace.clone(), s.name.clone()), i);
            for ip in s.cluster_ips.iter().filter_map(|ip| ip.parse().ok()) {
                for p in s.ports.iter().filter_map(|p| u16::try_from(p.port).ok()) {
                    index.by_addr.insert(std::net::SocketAddr::new(ip, p), i);
                }
            }
        }
        index
    }
}

impl State {
    /// The meshed pods the Kubernetes source sees (IP, identity): callers originate mesh
    /// TLS to them even before their proxies connect here.
    pub fn set_pod_members(&self, members: Members) {
        *lock(&self.pod_members) = members;
        let proxies = lock(&self.proxies);
        self.update_members(&proxies);
    }

    /// The policy objects the Kubernetes source refused, each `Kind ns/name: problems`.
    pub fn set_invalid(&self, invalid: Vec<String>) {
        let changed = {
            let mut cur = lock(&self.invalid);
            let changed = *cur != invalid && !invalid.is_empty();
            *cur = invalid;
            changed
        };
        if changed {
            lock(&self.counters).rejections += 1;
        }
    }

    /// How many policy objects are refused now.
    pub fn invalid_count(&self) -> usize {
        lock(&self.invalid).len()
    }
}

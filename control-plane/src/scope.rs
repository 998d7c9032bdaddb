//! Which policy a proxy receives: the documents of its own namespace, the mesh-wide
//! MeshConfig, and (from the Kubernetes source) its namespace's Services with their
//! endpoints, plus each Service of another namespace it reported calling, with the
//! TrafficPolicies on it. A proxy never holds policy it does not need.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use bulwark_api::policy::{Document, TargetKind};
use bulwark_api::wire;

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::state::{Members, Policy};
use crate::stream;

/// The most destinations one proxy's reports are kept for (the proxy bounds its own
/// reports the same way).
pub const MAX_WANTED: usize = 1024;

/// What a proxy reported calling: addresses and host names with no target in its snapshot.
#[derive(Debug, Default)]
pub struct Wanted {
    addrs: BTreeSet<SocketAddr>,
    hosts: BTreeSet<String>,
}

impl Wanted {
    /// Adds a report; whether anything new was added. Unparsable or excess entries are
    /// dropped.
    pub fn add(&mut self, interest: wire::Interest) -> bool {
        let mut added = false;
        for a in interest.addresses.iter().filter_map(|a| a.parse().ok()) {
            if self.addrs.len() < MAX_WANTED {
                added |= self.addrs.insert(a);
            }
        }
        for h in interest.hosts {
            if self.hosts.len() < MAX_WANTED && !h.is_empty() && h.len() <= 253 {
                added |= self.hosts.insert(h.to_ascii_lowercase());
            }
        }
        added
    }

    /// The Services of other namespaces than `namespace` that the reports name, as
    /// (namespace, name): by cluster IP and port, or by `name.namespace[.svc…]`.
    pub fn services(&self, policy: &Policy, namespace: &str) -> BTreeSet<(String, String)> {
        let index = &policy.service_index;
        let mut out = BTreeSet::new();
        for a in &self.addrs {
            if let Some(&i) = index.by_addr.get(a) {
                let s = &policy.services[i];
                out.insert((s.namespace.clone(), s.name.clone()));
            }
        }
        for h in &self.hosts {
            let labels: Vec<&str> = h.split('.').collect();
            let key = match labels.as_slice() {
                [name, ns] => (ns.to_string(), name.to_string()),
                [name, ns, "svc", ..] => (ns.to_string(), name.to_string()),
                _ => continue,
            };
            if index.by_name.contains_key(&key) {
                out.insert(key);
            }
        }
        out.retain(|(ns, _)| ns != namespace);
        out
    }
}

/// What one proxy's snapshot holds of a policy version.
#[derive(Debug)]
pub struct Scoped {
    /// The documents, as the snapshot's JSON array.
    pub json: String,
    /// The Services with their endpoints.
    pub services: Vec<wire::Service>,
    /// The snapshot as sent, for the version and members it was last encoded for: every
    /// stream of a shared scope sends these same bytes.
    encoded: Mutex<Option<Encoded>>,
}

#[derive(Debug)]
struct Encoded {
    version: u64,
    members: Arc<Members>,
    frame: Bytes,
}

/// Equal content; the encoding is not part of it.
impl PartialEq for Scoped {
    fn eq(&self, o: &Self) -> bool {
        self.json == o.json && self.services == o.services
    }
}

impl Scoped {
    /// A scope of these documents and Services.
    pub fn new(json: String, services: Vec<wire::Service>) -> Self {
        Self {
            json,
            services,
            encoded: Mutex::new(None),
        }
    }

    /// The snapshot frame of this scope at `policy`'s version with `members`, encoded once
    /// for all the streams that share the scope.
    pub fn encoded(&self, policy: &Policy, members: &Arc<Members>) -> Bytes {
        let mut cache = self.encoded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = cache.as_ref()
            && e.version == policy.version
            && (Arc::ptr_eq(&e.members, members) || e.members == *members)
        {
            return e.frame.clone();
        }
        let frame = stream::frame(&stream::snapshot_message(policy, self, members));
        *cache = Some(Encoded {
            version: policy.version,
            members: members.clone(),
            frame: frame.clone(),
        });
        frame
    }
}

/// The scope of a proxy in `namespace` that called the Services `wanted` (namespace,
/// name) of other namespaces. A proxy that called none outside its namespace shares its
/// namespace's scope, computed once per version however many proxies it has: a change is
/// serialised once per namespace, not once per stream.
pub fn scoped(
    policy: &Policy,
    namespace: &str,
    wanted: &BTreeSet<(String, String)>,
) -> std::sync::Arc<Scoped> {
    if wanted.is_empty() {
        let mut cache = policy.scoped.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cache.get(namespace) {
            return s.clone();
        }
        let fresh = compute(policy, namespace, wanted);
        let s = match policy.scoped_before.get(namespace) {
            Some(before) if **before == fresh => before.clone(),
            _ => std::sync::Arc::new(fresh),
        };
        cache.insert(namespace.to_string(), s.clone());
        return s;
    }
    std::sync::Arc::new(compute(policy, namespace, wanted))
}

fn compute(policy: &Policy, namespace: &str, wanted: &BTreeSet<(String, String)>) -> Scoped {
    let docs: Vec<&Document> = policy
        .documents
        .iter()
        .filter(|d| match d {
            Document::MeshConfig(_) => true,
            _ if d.metadata().namespace() == namespace => true,
            Document::TrafficPolicy(p) => {
                p.spec.target_ref.kind == TargetKind::Service
                    && wanted.contains(&(
                        p.metadata.namespace().to_string(),
                        p.spec.target_ref.name.clone(),
                    ))
            }
            _ => false,
        })
        .collect();
    let json = serde_json::to_string(&docs).unwrap_or_else(|_| "[]".into());
    let services = policy
        .services
        .iter()
        .filter(|s| {
            s.namespace == namespace || wanted.contains(&(s.namespace.clone(), s.name.clone()))
        })
        .cloned()
        .collect();
    Scoped::new(json, services)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_api::load::{Loaded, load_str};
    use std::path::Path;

    fn docs() -> Vec<Document> {
        let text = "\
apiVersion: bulwark.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: cluster.local}
---
apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web, namespace: shop}
spec: {targetRef: {kind: Service, name: web}}
---
apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api, namespace: billing}
spec: {targetRef: {kind: Service, name: api}}
";
        let mut loaded = Loaded::default();
        load_str(Path::new("p.yaml"), text, &mut loaded);
        assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
        loaded.documents.into_iter().map(|s| s.document).collect()
    }

    fn names(json: &str) -> Vec<String> {
        let v: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
        v.iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_proxy_gets_its_namespace_and_the_mesh_config_only() {
        let state = crate::state::State::new();
        state.publish(docs());
        let p = state.policy();
        let none = BTreeSet::new();
        assert_eq!(names(&scoped(&p, "shop", &none).json), ["mesh", "web"]);
        assert_eq!(names(&scoped(&p, "other", &none).json), ["mesh"]);
        assert_eq!(names(&scoped(&p, "billing", &none).json), ["mesh", "api"]);
        assert!(
            std::sync::Arc::ptr_eq(&scoped(&p, "shop", &none), &scoped(&p, "shop", &none)),
            "one namespace's scope is computed once per version"
        );
        // A new version that leaves shop as it was keeps shop's scope itself, so its
        // streams tell "unchanged" by the pointer; billing's changed.
        let before = scoped(&p, "shop", &none);
        let _ = scoped(&p, "billing", &none);
        let mut next = docs();
        next.retain(|d| d.metadata().name != "api");
        state.publish(next);
        let p2 = state.policy();
        assert!(std::sync::Arc::ptr_eq(&before, &scoped(&p2, "shop", &none)));
        assert_eq!(names(&scoped(&p2, "billing", &none).json), ["mesh"]);
    }

    fn service(ns: &str, name: &str, ip: &str) -> wire::Service {
        wire::Service {
            namespace: ns.into(),
            name: name.into(),
            cluster_ips: vec![ip.into()],
            ports: vec![wire::ServicePort {
                port: 80,
                name: "http".into(),
                ready: vec!["10.1.0.1:8080".into()],
                terminating: vec![],
                owners: Default::default(),
            }],
        }
    }

    #[test]
    fn a_service_of_another_namespace_joins_the_scope_once_the_proxy_calls_it() {
        let state = crate::state::State::new();
        state.publish_with(
            docs(),
            vec![
                service("billing", "api", "10.96.0.20"),
                service("shop", "web", "10.96.0.10"),
                service("ops", "grafana", "10.96.0.30"),
            ],
        );
        let p = state.policy();
        let mut wanted = Wanted::default();
        let s = scoped(&p, "shop", &wanted.services(&p, "shop"));
        assert_eq!(names(&s.json), ["mesh", "web"]);
        assert_eq!(s.services.len(), 1);
        // Called by cluster IP: billing/api and its policy join; an unknown address does not.
        assert!(wanted.add(wire::Interest {
            addresses: vec!["10.96.0.20:80".into(), "10.96.9.9:80".into()],
            hosts: vec![],
        }));
        let called = wanted.services(&p, "shop");
        assert_eq!(called.len(), 1);
        let s = scoped(&p, "shop", &called);
        assert_eq!(names(&s.json), ["mesh", "web", "api"]);
        let scoped_names: Vec<&str> = s.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(scoped_names, ["api", "web"]);
        // By name: `grafana.ops.svc.cluster.local` names ops/grafana, `grafana` alone does
        // not (it would be shop's), and a report seen before adds nothing.
        assert!(wanted.add(wire::Interest {
            addresses: vec![],
            hosts: vec!["grafana.ops.svc.cluster.local".into(), "grafana".into()],
        }));
        assert!(!wanted.add(wire::Interest {
            addresses: vec!["10.96.0.20:80".into()],
            hosts: vec![],
        }));
        assert_eq!(wanted.services(&p, "shop").len(), 2);
    }
}

//! From the API objects to what proxies are sent, pure: the valid policy objects as
//! documents, each Service with the endpoints its EndpointSlices list, and the meshed pods
//! with the identity their service account grants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bulwark_api::policy::Document;
use bulwark_api::wire;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use serde_json::Value;

use crate::inject::VERSION_ANNOTATION;
use crate::state::Members;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What one set of API objects gives the proxies.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct View {
    /// Valid policy objects, by kind, namespace and name.
    pub documents: Vec<Document>,
    /// Policy objects refused, each as `Kind namespace/name: field: reason`; never pushed.
    pub invalid: Vec<String>,
    /// Services with a cluster IP, by namespace and name, with their endpoints.
    pub services: Vec<wire::Service>,
    /// Meshed pods' IPs and identities, sorted by IP.
    pub members: Members,
    /// Every policy object with what was decided about it, for its status.
    pub verdicts: Vec<Verdict>,
}

/// What was decided about one policy object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Its kind.
    pub kind: String,
    /// Its namespace (none for a cluster-scoped kind).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The generation it was read at.
    pub generation: Option<i64>,
    /// Why it is refused, each `field: reason`; empty when accepted.
    pub problems: Vec<String>,
}

/// The objects of one moment, as the reflectors hold them.
#[derive(Debug, Default)]
pub struct Objects {
    /// Backends, TrafficPolicies, MeshConfigs and AuthorizationPolicies.
    pub policy: Vec<Arc<DynamicObject>>,
    /// Services.
    pub services: Vec<Arc<Service>>,
    /// EndpointSlices.
    pub slices: Vec<Arc<EndpointSlice>>,
    /// Pods.
    pub pods: Vec<Arc<Pod>>,
}

/// Computes the view. `trust_domain` names the pods' identities.
pub fn view(objects: &Objects, trust_domain: &str) -> View {
    let (documents, invalid, verdicts) = documents(&objects.policy);
    View {
        documents,
        invalid,
        verdicts,
        services: services(&objects.services, &objects.slices),
        members: members(&objects.pods, trust_domain),
    }
}

/// A policy object as the policy loader reads it: the API server's own metadata (uid,
/// resourceVersion, managedFields, …) and status dropped.
pub fn policy_value(obj: &DynamicObject) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "labels" | "annotations"));
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            if a.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    v
}

fn documents(objects: &[Arc<DynamicObject>]) -> (Vec<Document>, Vec<String>, Vec<Verdict>) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    let mut verdicts = Vec::new();
    for obj in objects {
        let value = policy_value(obj);
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("?");
        let what = format!(
            "{kind} {}/{}",
            obj.metadata.namespace.as_deref().unwrap_or("-"),
            obj.metadata.name.as_deref().unwrap_or("?")
        );
        let problems: Vec<String> = match bulwark_api::load::document_problems(&value) {
            Err(problems) => problems,
            Ok(doc) => {
                let p: Vec<String> = bulwark_api::policy::validate::validate(&doc)
                    .into_iter()
                    .map(|p| format!("{}: {}", p.path, p.reason))
                    .collect();
                if p.is_empty() {
                    valid.push(doc);
                }
                p
            }
        };
        if !problems.is_empty() {
            invalid.push(format!("{what}: {}", problems.join("; ")));
        }
        verdicts.push(Verdict {
            kind: kind.to_string(),
            namespace: obj.metadata.namespace.clone(),
            name: obj.metadata.name.clone().unwrap_or_default(),
            generation: obj.metadata.generation,
            problems,
        });
    }
    let order = |d: &Document| {
        let m = d.metadata();
        (d.kind(), m.namespace().to_string(), m.name.clone())
    };
    valid.sort_by_key(order);
    invalid.sort();
    verdicts
        .sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
    (valid, invalid, verdicts)
}

fn services(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Vec<wire::Service> {
    // Each Service's slices, by namespace and Service name.
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let (Some(ns), Some(name)) = (
            s.metadata.namespace.as_deref(),
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) else {
            continue;
        };
        by_service.entry((ns, name.as_str())).or_default().push(s);
    }
    let mut out = Vec::new();
    for svc in services {
        let (Some(ns), Some(name), Some(spec)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        // Headless Services (and ExternalName ones) have no cluster IP: their names resolve
        // to the pods themselves, which the app dials as it chose.
        let mut cluster_ips: Vec<String> = spec
            .cluster_ips
            .clone()
            .unwrap_or_else(|| spec.cluster_ip.iter().cloned().collect())
            .into_iter()
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
            .collect();
        cluster_ips.dedup();
        if cluster_ips.is_empty() {
            continue;
        }
        let svc_slices = by_service
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                let port = u32::try_from(p.port).ok()?;
                let pname = p.name.clone().unwrap_or_default();
                let (ready, terminating, owners) = endpoints(svc_slices, &pname);
                Some(wire::ServicePort {
                    port,
                    name: pname,
                    ready,
                    terminating,
                    owners,
                })
            })
            .collect::<Vec<_>>();
        if ports.is_empty() {
            continue;
        }
        out.push(wire::Service {
            namespace: ns.to_string(),
            name: name.to_string(),
            cluster_ips,
            ports,
        });
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// The ready and the terminating-but-serving endpoints of the Service port named `port`,
/// as `ip:port`, sorted, and the pod UID behind each. Conditions left unset mean what the
/// API says they mean: ready unless said otherwise, serving as ready, not terminating.
fn endpoints(
    slices: &[&EndpointSlice],
    port: &str,
) -> (
    Vec<String>,
    Vec<String>,
    std::collections::HashMap<String, String>,
) {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    let mut owners = std::collections::HashMap::new();
    for s in slices {
        if !matches!(s.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(target) = s
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port)
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for e in &s.endpoints {
            let c = e.conditions.as_ref();
            let is_ready = c.and_then(|c| c.ready).unwrap_or(true);
            let is_serving = c.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            for a in &e.addresses {
                let Ok(ip) = a.parse::<std::net::IpAddr>() else {
                    continue;
                };
                let addr = std::net::SocketAddr::new(ip, target).to_string();
                if let Some(uid) = e.target_ref.as_ref().and_then(|r| r.uid.as_ref())
                    && (is_ready || is_serving)
                {
                    owners.insert(addr.clone(), uid.clone());
                }
                if is_ready && !is_terminating {
                    ready.insert(addr);
                } else if is_serving && is_terminating {
                    terminating.insert(addr);
                }
            }
        }
    }
    (
        ready.into_iter().collect(),
        terminating.into_iter().collect(),
        owners,
    )
}

/// The pods with an injected proxy, still running, each IP with the identity of the pod's
/// service account.
fn members(pods: &[Arc<Pod>], trust_domain: &str) -> Members {
    let mut out: Members = Vec::new();
    for p in pods {
        let meshed = p
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(VERSION_ANNOTATION));
        let Some(ns) = p.metadata.namespace.as_deref() else {
            continue;
        };
        let Some(status) = p.status.as_ref().filter(|_| meshed) else {
            continue;
        };
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let sa = p
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        let Ok(id) = bulwark_identity::SpiffeId::new(trust_domain, ns, sa) else {
            continue;
        };
        let ips: Vec<&str> = match &status.pod_ips {
            Some(ips) if !ips.is_empty() => ips.iter().map(|i| i.ip.as_str()).collect(),
            _ => status.pod_ip.as_deref().into_iter().collect(),
        };
        for ip in ips {
            if ip.parse::<std::net::IpAddr>().is_ok() {
                out.push((ip.to_string(), id.to_string()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

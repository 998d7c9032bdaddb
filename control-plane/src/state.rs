//! The control plane's state: the policy being served, the last rejected change, and every
//! connected proxy with the versions it was sent, acknowledged or rejected.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bulwark_api::policy::Document;
use bulwark_api::wire;
use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::identity::IssueCounters;

/// A policy version: every valid document, built whole.
#[derive(Debug)]
pub struct Policy {
    /// Increases with every valid policy; 0 means none yet.
    pub version: u64,
    /// The documents.
    pub documents: Vec<Document>,
    /// Kubernetes Services with their endpoints (none in file mode).
    pub services: Vec<wire::Service>,
    /// The Services by cluster IP and port, and by namespace and name (indexes into
    /// `services`), to resolve what proxies report calling.
    pub service_index: ServiceIndex,
    /// Services are discovered (the Kubernetes source): proxies report what they call.
    pub discovers_services: bool,
    /// Each namespace's scope, computed on first use (see [`crate::scope::scoped`]).
    pub scoped: Mutex<std::collections::HashMap<String, Arc<crate::scope::Scoped>>>,
    /// The previous version's scopes: a namespace whose scope did not change keeps the
    /// same allocation, so its streams see "unchanged" without comparing content.
    pub scoped_before: std::collections::HashMap<String, Arc<crate::scope::Scoped>>,
    /// When it was loaded.
    pub loaded_at: Instant,
}

#[derive(Debug)]
struct Rejection {
    reason: String,
    at: Instant,
}

/// Who a proxy said it is.
#[derive(Debug, Clone, Default)]
pub struct ProxyIdentity {
    /// NAMESPACE/NAME.
    pub workload: String,
    /// Namespace, which scopes its policy.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
    /// Pod IPs.
    pub pod_ips: Vec<String>,
    /// Pod name (empty outside Kubernetes).
    pub pod: String,
    /// Proxy version.
    pub proxy_version: String,
    /// The identity its connection's certificate proves, and when that expires (Unix
    /// seconds); none for a proxy without mesh identity.
    pub certified: Option<(bulwark_identity::SpiffeId, i64)>,
}

impl From<wire::Hello> for ProxyIdentity {
    fn from(h: wire::Hello) -> Self {
        Self {
            workload: h.workload,
            namespace: h.namespace,
            service_account: h.service_account,
            pod_ips: h.pod_ips,
            pod: h.pod,
            proxy_version: h.proxy_version,
            certified: None,
        }
    }
}

#[derive(Debug)]
struct ProxyEntry {
    id: ProxyIdentity,
    connected_at: Instant,
    sent_version: u64,
    sent_at: Option<Instant>,
    acked_version: u64,
    nacked_version: u64,
    nack_reason: String,
    /// The newest policy version this proxy's scope was compared against: a version that
    /// changed nothing in its namespace is not sent, yet the proxy is not behind.
    checked_version: u64,
}

#[derive(Debug)]
struct Counters {
    push_to_ack: Histogram<u64>,
    nacks: u64,
    rejections: u64,
    pushes: u64,
}

/// Shared by the source, every stream and the admin port.
#[derive(Debug)]
pub struct State {
    policy: watch::Sender<Arc<Policy>>,
    rejected: Mutex<Option<Rejection>>,
    proxies: Mutex<BTreeMap<u64, ProxyEntry>>,
    next_id: AtomicU64,
    counters: Mutex<Counters>,
    issue: Arc<IssueCounters>,
    members: watch::Sender<Arc<Members>>,
    /// Meshed pods, as the Kubernetes source sees them.
    pod_members: Mutex<Members>,
    /// Policy objects the Kubernetes source refused (never pushed).
    invalid: Mutex<Vec<String>>,
    closing: watch::Sender<bool>,
}

/// The meshed workloads: each pod IP of a proxy whose stream proved an identity, with that
/// identity, sorted by IP. Callers originate mesh TLS only to these and expect exactly the
/// identity named.
pub type Members = Vec<(String, String)>;

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    /// No policy yet, no proxies.
    pub fn new() -> Self {
        let (policy, _) = watch::channel(Arc::new(Policy {
            version: 0,
            documents: Vec::new(),
            services: Vec::new(),
            service_index: ServiceIndex::default(),
            discovers_services: false,
            scoped: Mutex::default(),
            scoped_before: Default::default(),
            loaded_at: Instant::now(),
        }));
        Self {
            policy,
            rejected: Mutex::new(None),
            proxies: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            counters: Mutex::new(Counters {
                push_to_ack: Histogram::new_with_bounds(1, 600_000_000, 2)
                    .expect("static histogram bounds are valid"),
                nacks: 0,
                rejections: 0,
                pushes: 0,
            }),
            issue: Arc::default(),
            members: watch::channel(Arc::default()).0,
            pod_members: Mutex::default(),
            invalid: Mutex::default(),
            closing: watch::channel(false).0,
        }
    }

    /// A receiver that sees every change of the meshed workloads.
    pub fn members(&self) -> watch::Receiver<Arc<Members>> {
        self.members.subscribe()
    }

    /// Recomputes the meshed workloads from the connected proxies and the meshed pods;
    /// tells subscribers only when they changed.
    fn update_members(&self, proxies: &BTreeMap<u64, ProxyEntry>) {
        let mut m: Members = proxies
            .values()
            .filter_map(|e| Some((e.id.pod_ips.clone(), e.id.certified.as_ref()?.0.to_string())))
            .flat_map(|(ips, id)| ips.into_iter().map(move |ip| (ip, id.clone())))
            .collect();
        m.extend(lock(&self.pod_members).iter().cloned());
        m.sort();
        m.dedup();
        self.members.send_if_modified(|cur| {
            if **cur == m {
                return false;
            }
            *cur = Arc::new(m);
            true
        });
    }

    /// The identity service's counters, rendered with the rest.
    pub fn issue_counters(&self) -> Arc<IssueCounters> {
        self.issue.clone()
    }

    /// Ends every discovery stream (on shutdown): proxies keep their snapshot and reconnect,
    /// to this process's successor or another replica.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// A receiver that changes when streams must end.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// The policy being served.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.borrow().clone()
    }

    /// A receiver that sees every new policy.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Policy>> {
        self.policy.subscribe()
    }

    /// Serves `documents` as the next version; clears any recorded rejection. Versions are
    /// milliseconds since the Unix epoch (or one more than the last, if the clock has not
    /// moved on), so they keep increasing across control-plane restarts and proxies never
    /// see a version go backwards.
    pub fn publish(&self, documents: Vec<Document>) -> u64 {
        self.publish_version(documents, Vec::new(), false)
    }

    /// Like [`State::publish`], with the Services and endpoints of the Kubernetes source.
    pub fn publish_with(&self, documents: Vec<Document>, services: Vec<wire::Service>) -> u64 {
        self.publish_version(documents, services, true)
    }

    fn publish_version(
        &self,
        documents: Vec<Document>,
        services: Vec<wire::Service>,
        discovers_services: bool,
    ) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let (version, scoped_before) = {
            let current = self.policy.borrow();
            let before = lock(&current.scoped).clone();
            (now.max(current.version + 1), before)
        };
        self.policy.send_replace(Arc::new(Policy {
            version,
            documents,
            service_index: ServiceIndex::of(&services),
            services,
            discovers_services,
            scoped: Mutex::default(),
            scoped_before,
            loaded_at: Instant::now(),
        }));
        *lock(&self.rejected) = None;
        version
    }

    /// Records that the latest change was rejected; the current policy stays.
    pub fn reject(&self, reason: String) {
        *lock(&self.rejected) = Some(Rejection {
            reason,
            at: Instant::now(),
        });
        lock(&self.counters).rejections += 1;
    }

    /// A proxy connected.
    pub fn register(&self, id: ProxyIdentity) -> u64 {
        let key = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = ProxyEntry {
            id,
            connected_at: Instant::now(),
            sent_version: 0,
            sent_at: None,
            acked_version: 0,
            nacked_version: 0,
            nack_reason: String::new(),
            checked_version: 0,
        };
        let mut proxies = lock(&self.proxies);
        proxies.insert(key, entry);
        self.update_members(&proxies);
        key
    }

    /// A proxy with a certified stream renewed its certificate.
    pub fn renewed(&self, key: u64, not_after: i64) {
        if let Some(e) = lock(&self.proxies).get_mut(&key)
            && let Some((_, t)) = &mut e.id.certified
        {
            *t = not_after;
        }
    }

    /// A proxy's stream ended.
    pub fn unregister(&self, key: u64) {
        let mut proxies = lock(&self.proxies);
        proxies.remove(&key);
        self.update_members(&proxies);
    }

    /// A snapshot was sent.
    pub fn sent(&self, key: u64, version: u64) {
        if let Some(e) = lock(&self.proxies).get_mut(&key) {
            e.sent_version = version;
            e.sent_at = Some(Instant::now());
            e.checked_version = version;
        }
        lock(&self.counters).pushes += 1;
    }

    /// Policy `version` left the proxy's scoped documents as they were: nothing to send.
    pub fn unchanged(&self, key: u64, version: u64) {
        if let Some(e) = lock(&self.proxies).get_mut(&key) {
            e.checked_version = version;
        }
    }

    /// The proxy applied `version`.
    pub fn acked(&self, key: u64, version: u64) {
        let latency = {
            let mut proxies = lock(&self.proxies);
            let Some(e) = proxies.get_mut(&key) else {
                return;
            };
            e.acked_version = version;
            e.sent_at
                .filter(|_| e.sent_version == version)
                .map(|t| t.elapsed())
        };
        if let Some(l) = latency {
            lock(&self.counters)
                .push_to_ack
                .saturating_record((l.as_micros() as u64).max(1));
        }
    }

    /// The proxy rejected `version` and kept its previous snapshot.
    pub fn nacked(&self, key: u64, version: u64, reason: String) {
        if let Some(e) = lock(&self.proxies).get_mut(&key) {
            tracing::warn!(workload = %e.id.workload, version, %reason, "proxy rejected a snapshot");
            e.nacked_version = version;
            e.nack_reason = reason;
        }
        lock(&self.counters).nacks += 1;
    }
}

mod cluster;
mod metrics;
mod status;

pub use cluster::ServiceIndex;

#[cfg(test)]
mod tests;

//! The Kubernetes source (`serve --kubernetes`): reflectors over the policy CRDs, Services,
//! EndpointSlices and Pods, and one loop that turns what they hold into the served policy.
//!
//! Every watch lists, then follows; kube-runtime relists on its own when a watch expires
//! (410 Gone) and backs off while the API server is unreachable. Meanwhile the stores keep
//! the last objects they saw, so proxies keep being served the last good state. Nothing is
//! published until every watch has listed once, so a proxy never sees a half-read cluster.
//!
//! Changes are gathered for a short window ([`DEBOUNCE`]) and then computed once, in
//! [`view`]; a view that equals the one being served publishes nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_stream::StreamExt;

use crate::state::State;

pub mod status;
pub mod view;

pub use view::{Objects, View};

/// How long changes are gathered before the view is computed again: an EndpointSlice
/// rollout of many pods is one push, not one per pod.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// The policy kinds, with their plural resource names.
pub const POLICY_KINDS: [(&str, &str); 4] = [
    ("Backend", "backends"),
    ("TrafficPolicy", "trafficpolicies"),
    ("MeshConfig", "meshconfigs"),
    ("AuthorizationPolicy", "authorizationpolicies"),
];

/// The stores the reflectors fill.
#[derive(Clone)]
struct Stores {
    policy: Vec<Store<DynamicObject>>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    fn objects(&self) -> Objects {
        Objects {
            policy: self.policy.iter().flat_map(|s| s.state()).collect(),
            services: self.services.state(),
            slices: self.slices.state(),
            pods: self.pods.state(),
        }
    }

    async fn ready(&self) {
        for s in &self.policy {
            let _ = s.wait_until_ready().await;
        }
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        let _ = self.pods.wait_until_ready().await;
    }
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Follows one resource into `writer`, waking `changed` on every event; errors are logged
/// (the watcher retries with backoff and relists on 410 Gone).
fn follow<K>(
    what: &'static str,
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    changed: Arc<Notify>,
    trim: fn(&mut K),
) -> Task
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    Box::pin(async move {
        let stream = watcher(api, watcher::Config::default())
            .modify(trim)
            .default_backoff()
            .reflect(writer);
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    if failing {
                        tracing::info!(resource = what, "watch restored; relisted");
                    }
                    failing = false;
                    changed.notify_one();
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changed.notify_one(),
                Err(e) => {
                    if !failing {
                        tracing::warn!(resource = what, error = %e, "watch failed; serving the last state seen, retrying with backoff");
                    } else {
                        tracing::debug!(resource = what, error = %e, "watch still failing");
                    }
                    failing = true;
                }
            }
        }
    })
}

/// Drops what the view never reads (managed fields, the last-applied annotation), so the
/// stores hold the cluster in as little memory as it can.
fn trim_meta(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = &mut meta.annotations {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A pod is read for its IPs, phase, service account and one annotation: the rest (its
/// containers, volumes, conditions) is dropped as it arrives.
fn trim_pod(p: &mut Pod) {
    trim_meta(&mut p.metadata);
    if let Some(a) = &mut p.metadata.annotations {
        a.retain(|k, _| k == crate::inject::VERSION_ANNOTATION);
    }
    p.metadata.labels = None;
    p.metadata.owner_references = None;
    if let Some(spec) = p.spec.take() {
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            service_account_name: spec.service_account_name,
            ..Default::default()
        });
    }
    if let Some(status) = p.status.take() {
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: status.phase,
            pod_ip: status.pod_ip,
            pod_ips: status.pod_ips,
            ..Default::default()
        });
    }
}

fn trim_service(s: &mut Service) {
    trim_meta(&mut s.metadata);
    s.status = None;
}

fn trim_slice(s: &mut EndpointSlice) {
    trim_meta(&mut s.metadata);
    for e in &mut s.endpoints {
        e.hints = None;
        // Only the pod's UID is read: it tells a new pod on a reused IP.
        e.target_ref = e
            .target_ref
            .take()
            .map(|r| k8s_openapi::api::core::v1::ObjectReference {
                uid: r.uid,
                ..Default::default()
            });
    }
}

fn trim_policy(o: &mut DynamicObject) {
    trim_meta(&mut o.metadata);
}

/// Follows the cluster and serves what it holds until the process ends. With `pods_meshed`,
/// the injected pods are served as meshed workloads (callers originate mesh TLS to them);
/// with an `elector`, the policy objects' status is written while it holds the Lease.
pub async fn run(
    state: Arc<State>,
    client: Client,
    trust_domain: String,
    pods_meshed: bool,
    elector: Option<status::Elector>,
) {
    let changed = Arc::new(Notify::new());
    let mut tasks: Vec<Task> = Vec::new();
    let mut policy = Vec::new();
    for (kind, plural) in POLICY_KINDS {
        let gvk = GroupVersionKind::gvk(bulwark_api::policy::GROUP, "v1alpha1", kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        let writer = reflector::store::Writer::new(resource.clone());
        policy.push(writer.as_reader());
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        tasks.push(follow(plural, api, writer, changed.clone(), trim_policy));
    }
    let (services, w) = reflector::store();
    tasks.push(follow(
        "services",
        Api::all(client.clone()),
        w,
        changed.clone(),
        trim_service,
    ));
    let (slices, w) = reflector::store();
    tasks.push(follow(
        "endpointslices",
        Api::all(client.clone()),
        w,
        changed.clone(),
        trim_slice,
    ));
    let (pods, w) = reflector::store();
    tasks.push(follow(
        "pods",
        Api::all(client.clone()),
        w,
        changed.clone(),
        trim_pod,
    ));
    let stores = Stores {
        policy,
        services,
        slices,
        pods,
    };
    for t in tasks {
        tokio::spawn(t);
    }
    tracing::info!("listing the cluster's policy, Services, EndpointSlices and Pods");
    stores.ready().await;
    let mut served: Option<View> = None;
    let (views, _) = tokio::sync::watch::channel(Arc::new(View::default()));
    if let Some(elector) = elector {
        tokio::spawn(status::run(
            state.clone(),
            client,
            views.subscribe(),
            elector,
        ));
    }
    loop {
        let next = view::view(&stores.objects(), &trust_domain);
        if served.as_ref() != Some(&next) {
            apply(&state, served.as_ref(), &next, pods_meshed);
            views.send_replace(Arc::new(next.clone()));
            served = Some(next);
        }
        changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
    }
}

/// Serves `next`: a new policy version when its documents or Services changed, the meshed
/// pods when they did, and the refused objects logged and recorded.
fn apply(state: &State, served: Option<&View>, next: &View, pods_meshed: bool) {
    let policy_changed =
        served.is_none_or(|s| s.documents != next.documents || s.services != next.services);
    if policy_changed {
        let version = state.publish_with(next.documents.clone(), next.services.clone());
        let endpoints: usize = next
            .services
            .iter()
            .flat_map(|s| &s.ports)
            .map(|p| p.ready.len())
            .sum();
        tracing::info!(
            version,
            documents = next.documents.len(),
            services = next.services.len(),
            ready_endpoints = endpoints,
            "cluster state served"
        );
    }
    if pods_meshed && served.is_none_or(|s| s.members != next.members) {
        state.set_pod_members(next.members.clone());
    }
    if served.is_none_or(|s| s.invalid != next.invalid) {
        for p in &next.invalid {
            tracing::error!(problem = %p, "policy object refused; it is not pushed");
        }
        state.set_invalid(next.invalid.clone());
    }
}

#[cfg(test)]
mod tests;

//! Status written back to the policy objects, by one replica at a time: each object's
//! `Accepted` condition (True, or False with reason `Invalid` and every `field: reason`),
//! in the Gateway API style, and a summary of the proxies it concerns (connected, in sync,
//! rejecting, with the last rejection's reason).
//!
//! Every replica serves proxies; only the holder of the `coordination.k8s.io` Lease
//! [`LEASE_NAME`] writes. The holder renews it every [`RENEW_EVERY`]; another replica takes
//! it once it has not been renewed for [`LEASE_DURATION`]. A status is written only when it
//! differs from the one last written, and at most [`WRITES_PER_SECOND`] a second, so a
//! churning cluster cannot turn the control plane into an API-server load generator.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bulwark_api::wire;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::POLICY_KINDS;
use super::view::{Verdict, View};
use crate::state::State;

/// The Lease the writing replica holds, in the control plane's namespace.
pub const LEASE_NAME: &str = "bulwark-control-plane";
/// How long a Lease not renewed stays held.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews it (and a replica without it tries to take it).
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// The most status writes a second.
pub const WRITES_PER_SECOND: u64 = 10;

/// Takes and keeps the Lease for `holder`.
#[derive(Debug, Clone)]
pub struct Elector {
    api: Api<Lease>,
    holder: String,
}

impl Elector {
    /// An elector for the Lease in `namespace`.
    pub fn new(client: Client, namespace: &str, holder: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            holder,
        }
    }

    /// Takes or renews the Lease; whether this replica holds it now. Another replica's
    /// write in between (a conflict) means it does not.
    pub async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let current = match self.api.get_opt(LEASE_NAME).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..Default::default()
                    },
                    spec: Some(spec(0, None)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let s = current.spec.clone().unwrap_or_default();
        let ours = s.holder_identity.as_deref() == Some(self.holder.as_str());
        let held_for = Duration::from_secs(s.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let expired = match &s.renew_time {
            Some(MicroTime(t)) => now.duration_since(*t).unsigned_abs() > held_for,
            None => true,
        };
        if !ours && !expired && s.holder_identity.as_deref().is_some_and(|h| !h.is_empty()) {
            return Ok(false);
        }
        let transitions = s.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours { s.acquire_time.clone() } else { None };
        let mut next = current;
        next.spec = Some(spec(transitions, acquired));
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The status of one object: its verdict, and the proxies it concerns. `since` is when
/// the Accepted condition took the value it has.
pub fn status_of(v: &Verdict, proxies: &[wire::ProxyStatus], since: &str) -> Value {
    let accepted = v.problems.is_empty();
    let concerned: Vec<&wire::ProxyStatus> = proxies
        .iter()
        .filter(|p| v.namespace.as_deref().is_none_or(|ns| p.namespace == ns))
        .collect();
    let rejecting: Vec<&&wire::ProxyStatus> = concerned
        .iter()
        .filter(|p| p.nacked_version > 0 && p.nacked_version >= p.sent_version)
        .collect();
    let mut summary = json!({
        "connected": concerned.len(),
        "inSync": concerned.iter().filter(|p| p.in_sync).count(),
        "rejecting": rejecting.len(),
    });
    if let Some(p) = rejecting.first() {
        summary["lastRejection"] = json!(format!("{}: {}", p.workload, p.nack_reason));
    }
    let (status, reason, message) = if accepted {
        (
            "True",
            "Accepted",
            "valid; served to the proxies it concerns".to_string(),
        )
    } else {
        ("False", "Invalid", v.problems.join("; "))
    };
    json!({
        "observedGeneration": v.generation,
        "conditions": [{
            "type": "Accepted",
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": v.generation,
            "lastTransitionTime": since,
        }],
        "proxies": summary,
    })
}

type Key = (String, Option<String>, String);

/// Writes the statuses while this replica holds the Lease, until the process ends.
pub async fn run(
    state: Arc<State>,
    client: Client,
    mut views: watch::Receiver<Arc<View>>,
    elector: Elector,
) {
    let mut written: HashMap<Key, Value> = HashMap::new();
    let mut since: HashMap<Key, (bool, String)> = HashMap::new();
    let mut leader = false;
    let mut renewed = tokio::time::Instant::now() - RENEW_EVERY;
    let resources: HashMap<&str, ApiResource> = POLICY_KINDS
        .iter()
        .map(|(kind, plural)| {
            let gvk = GroupVersionKind::gvk(bulwark_api::policy::GROUP, "v1alpha1", kind);
            (*kind, ApiResource::from_gvk_with_plural(&gvk, plural))
        })
        .collect();
    loop {
        if renewed.elapsed() >= RENEW_EVERY {
            renewed = tokio::time::Instant::now();
            let now = match elector.try_hold().await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(error = %e, "the status Lease could not be read or renewed");
                    false
                }
            };
            if now != leader {
                tracing::info!(
                    holder = elector.holder,
                    writing = now,
                    "status writer {}",
                    if now { "elected" } else { "stood down" }
                );
                if !now {
                    written.clear(); // the next holder may have written since
                }
            }
            leader = now;
        }
        if leader {
            let view = views.borrow_and_update().clone();
            let proxies = state.status().proxies;
            for v in &view.verdicts {
                let key = (v.kind.clone(), v.namespace.clone(), v.name.clone());
                let accepted = v.problems.is_empty();
                let t = match since.get(&key) {
                    Some((a, t)) if *a == accepted => t.clone(),
                    _ => {
                        let t = Timestamp::now()
                            .round(k8s_openapi::jiff::Unit::Second)
                            .map(|t| t.to_string())
                            .unwrap_or_default();
                        since.insert(key.clone(), (accepted, t.clone()));
                        t
                    }
                };
                let status = status_of(v, &proxies, &t);
                if written.get(&key) == Some(&status) {
                    continue;
                }
                let Some(ar) = resources.get(v.kind.as_str()) else {
                    continue;
                };
                let api: Api<DynamicObject> = match &v.namespace {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
                    None => Api::all_with(client.clone(), ar),
                };
                let patch = Patch::Merge(json!({"status": status}));
                match api
                    .patch_status(&v.name, &PatchParams::default(), &patch)
                    .await
                {
                    Ok(_) => {
                        written.insert(key, status);
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {} // deleted meanwhile
                    Err(e) => {
                        tracing::warn!(kind = v.kind, namespace = ?v.namespace, name = v.name, error = %e, "status not written; retrying");
                    }
                }
                tokio::time::sleep(Duration::from_millis(1000 / WRITES_PER_SECOND)).await;
            }
            // Forget deleted objects (both maps), in one pass over a set of the live ones.
            let live: std::collections::HashSet<Key> = view
                .verdicts
                .iter()
                .map(|v| (v.kind.clone(), v.namespace.clone(), v.name.clone()))
                .collect();
            written.retain(|k, _| live.contains(k));
            since.retain(|k, _| live.contains(k));
        }
        // Look again when the view changes, or on the next renewal (proxies' ACKs change
        // the summaries without changing the view).
        let wait = RENEW_EVERY
            .saturating_sub(renewed.elapsed())
            .min(Duration::from_secs(1));
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

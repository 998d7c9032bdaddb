//! What `bulwarkctl status` reads: the policy served, the last rejection, and every proxy
//! with the versions it was sent, acknowledged or rejected.

use bulwark_api::wire;

use super::{State, lock};

impl State {
    /// What `bulwarkctl status` shows.
    pub fn status(&self) -> wire::StatusResponse {
        let policy = self.policy();
        let rejected = lock(&self.rejected);
        let proxies = lock(&self.proxies)
            .values()
            .map(|e| wire::ProxyStatus {
                workload: e.id.workload.clone(),
                namespace: e.id.namespace.clone(),
                pod_ips: e.id.pod_ips.clone(),
                pod: e.id.pod.clone(),
                proxy_version: e.id.proxy_version.clone(),
                sent_version: e.sent_version,
                acked_version: e.acked_version,
                nacked_version: e.nacked_version,
                nack_reason: e.nack_reason.clone(),
                connected_seconds: e.connected_at.elapsed().as_secs(),
                in_sync: e.sent_version > 0
                    && e.acked_version == e.sent_version
                    && e.checked_version == policy.version,
                identity: e
                    .id
                    .certified
                    .as_ref()
                    .map(|(id, _)| id.to_string())
                    .unwrap_or_default(),
                cert_not_after_unix: e.id.certified.as_ref().map_or(0, |(_, t)| *t),
            })
            .collect();
        wire::StatusResponse {
            policy_version: policy.version,
            policy_age_seconds: policy.loaded_at.elapsed().as_secs(),
            rejected_reason: rejected
                .as_ref()
                .map(|r| r.reason.clone())
                .unwrap_or_else(|| lock(&self.invalid).join("\n")),
            rejected_age_seconds: rejected
                .as_ref()
                .map(|r| r.at.elapsed().as_secs())
                .unwrap_or_default(),
            proxies,
            control_plane_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

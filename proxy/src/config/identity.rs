//! Mesh identity settings: the trust anchors, the bootstrap token and the names the
//! control plane and this proxy prove.

use serde::Serialize;

/// Mesh identity: how the proxy reaches the control plane over TLS and obtains its
/// certificate. With no trust anchors the control-plane channel is plaintext and the proxy
/// has no identity; with anchors but no token it verifies the control plane but has none.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityConfig {
    /// PEM bundle of the mesh's roots.
    pub trust_anchors: Option<std::path::PathBuf>,
    /// File holding the bootstrap token (re-read at every request for a certificate, so a
    /// rotated token is picked up).
    pub token_file: Option<std::path::PathBuf>,
    /// The mesh's SPIFFE trust domain.
    pub trust_domain: String,
    /// The control plane's namespace; it must prove
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/bulwark-control-plane`.
    pub control_plane_namespace: String,
}

impl IdentityConfig {
    /// Whether the proxy obtains a mesh identity.
    pub fn enabled(&self) -> bool {
        self.trust_anchors.is_some() && self.token_file.is_some()
    }
}

/// The service account of the control plane's own identity.
pub const CONTROL_PLANE_SERVICE_ACCOUNT: &str = "bulwark-control-plane";
/// Default namespace of the control plane.
pub const DEFAULT_CONTROL_PLANE_NAMESPACE: &str = "bulwark";

impl Default for IdentityConfig {
    /// Off: no anchors, no token.
    fn default() -> Self {
        Self {
            trust_anchors: None,
            token_file: None,
            trust_domain: bulwark_identity::DEFAULT_TRUST_DOMAIN.into(),
            control_plane_namespace: DEFAULT_CONTROL_PLANE_NAMESPACE.into(),
        }
    }
}

/// How a proxy carries HTTP/1 requests to a meshed peer. Pooled by default: measured side
/// by side, it costs both proxies less CPU per request and less latency than carrying the
/// requests as HTTP/2 streams (docs/benchmarks.md); multiplexing saves connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MeshHttp1 {
    /// As HTTP/2 streams on the one mesh connection the two proxies share; the peer's
    /// inbound proxy restores them to HTTP/1 for its app (upgrades stay HTTP/1).
    Multiplexed,
    /// On pooled HTTP/1 mesh connections, one request at a time each.
    Pooled,
}

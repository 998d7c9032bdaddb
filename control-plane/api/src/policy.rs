//! The policy kinds, as users write them in YAML (`apiVersion: bulwark.dev/v1alpha1`).
//!
//! Every struct rejects unknown fields, so a misspelt field is an error rather than a
//! silently ignored setting. Defaults are stated on each field and applied by the proxy;
//! an absent field means "the default", never "off".

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

mod authz;
mod mesh;
mod traffic;
pub mod validate;

pub use authz::{
    AuthorizationPolicySpec, AuthzAction, AuthzTarget, HttpRule, IdentityPattern,
    MeshAuthorization, Source,
};
pub use mesh::{MeshConfigSpec, MeshDefaults, MtlsMode, MtlsPort, MtlsSpec};
pub use traffic::*;

/// The one API version this release reads.
pub const API_VERSION: &str = "bulwark.dev/v1alpha1";

/// The group of every kind.
pub const GROUP: &str = "bulwark.dev";

/// Object metadata, as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Name, unique per kind and namespace; a DNS-1123 label.
    pub name: String,
    /// Namespace; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Metadata {
    /// The namespace, `default` when absent.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

macro_rules! kind {
    ($(#[$doc:meta])* $name:ident, $spec:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct $name {
            /// Always `bulwark.dev/v1alpha1`.
            pub api_version: String,
            /// The kind's name.
            pub kind: String,
            /// Name and namespace.
            pub metadata: Metadata,
            /// The settings.
            pub spec: $spec,
        }
    };
}

kind!(
    /// A destination outside Kubernetes service discovery: a fixed list of endpoints.
    Backend,
    BackendSpec
);
kind!(
    /// Client-side behaviour toward a Service or Backend: timeouts, retries, outlier
    /// detection, load balancing and limits, with per-route overrides.
    TrafficPolicy,
    TrafficPolicySpec
);
kind!(
    /// Mesh-wide settings: the trust domain and defaults for every TrafficPolicy.
    MeshConfig,
    MeshConfigSpec
);
kind!(
    /// Which callers may reach a workload's ports and HTTP routes.
    AuthorizationPolicy,
    AuthorizationPolicySpec
);

/// One parsed policy document.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Document {
    /// A `Backend`.
    Backend(Backend),
    /// A `TrafficPolicy`.
    TrafficPolicy(TrafficPolicy),
    /// A `MeshConfig`.
    MeshConfig(MeshConfig),
    /// An `AuthorizationPolicy`.
    AuthorizationPolicy(AuthorizationPolicy),
}

impl Document {
    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Document::Backend(_) => "Backend",
            Document::TrafficPolicy(_) => "TrafficPolicy",
            Document::MeshConfig(_) => "MeshConfig",
            Document::AuthorizationPolicy(_) => "AuthorizationPolicy",
        }
    }

    /// The document's metadata.
    pub fn metadata(&self) -> &Metadata {
        match self {
            Document::Backend(d) => &d.metadata,
            Document::TrafficPolicy(d) => &d.metadata,
            Document::MeshConfig(d) => &d.metadata,
            Document::AuthorizationPolicy(d) => &d.metadata,
        }
    }
}

/// The kinds this release reads.
pub const KINDS: [&str; 4] = [
    "Backend",
    "TrafficPolicy",
    "MeshConfig",
    "AuthorizationPolicy",
];

/// `Backend.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendSpec {
    /// Endpoints as `ip:port`, `[ipv6]:port` or `host:port` (hostnames are resolved and
    /// re-resolved when their DNS TTL expires). At least one.
    pub endpoints: Vec<String>,
    /// Ports the Backend's name is reached on (`api:8080`); every port when absent. Its
    /// endpoint hostnames and addresses match on their own ports whatever this says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 1, max = 65535)))]
    pub ports: Vec<u16>,
    /// The identity the endpoints must present under mTLS
    /// (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`); none means no identity check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

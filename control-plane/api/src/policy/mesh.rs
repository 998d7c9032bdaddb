//! `MeshConfig`: the mesh's trust domain, how inbound proxies treat plaintext, the
//! authorization default, and the defaults every TrafficPolicy starts from.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{LoadBalancer, OutlierDetection, Retries, Timeouts};

/// `MeshConfig.spec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshConfigSpec {
    /// SPIFFE trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// Settings every TrafficPolicy starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<MeshDefaults>,
    /// What inbound proxies accept besides mesh TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsSpec>,
    /// The authorization default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<super::MeshAuthorization>,
}

/// `MeshConfig.spec.mtls`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MtlsSpec {
    /// The mode of every inbound port. Default `permissive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
    /// Ports (the application's, as the inbound proxy sees them) that differ from `mode`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<MtlsPort>,
}

/// How an inbound proxy treats a connection that is not mesh TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MtlsMode {
    /// Plaintext (and TLS the client originates itself) is accepted beside mesh TLS.
    #[default]
    Permissive,
    /// Only mesh TLS is accepted: anything else is closed, counted and logged.
    Strict,
}

/// One port's mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MtlsPort {
    /// The port, 1 to 65535.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Its mode.
    pub mode: MtlsMode,
}

/// Mesh-wide defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshDefaults {
    /// Default timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Default retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Default outlier detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Default load balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
}

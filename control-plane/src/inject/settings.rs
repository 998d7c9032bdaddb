//! What injection is configured with: the cluster's [`Settings`] (from the chart, through
//! `--inject-config`) and the kinds of its values.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{DEFAULT_CONTROL_PLANE, DEFAULT_PROXY_IMAGE};

/// How the proxy runs beside the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always` (Kubernetes ≥ 1.29): started and ready
    /// before the app, stopped after it, and ended by the kubelet when a Job's containers end.
    #[default]
    Native,
    /// The first of `containers`, its postStart hook holding the app back until `/ready`; a
    /// Job's app ends it with `POST /shutdown` from loopback.
    Classic,
}

/// The proxy's resources, as a container spec writes them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// `cpu` and `memory` requests.
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    /// `cpu` and `memory` limits.
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

impl Default for Resources {
    fn default() -> Self {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Self {
            requests: map(&[("cpu", "10m"), ("memory", "32Mi")]),
            limits: map(&[("memory", "128Mi")]),
        }
    }
}

/// What injection is configured with: the cluster's defaults (the chart writes them into a
/// file the control plane reads with `--inject-config`; `bulwarkctl inject --config` reads
/// the same file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// The proxy image (it holds both `init` and `run`).
    pub proxy_image: String,
    /// Its pull policy; the cluster's default when absent.
    pub image_pull_policy: Option<String>,
    /// The control plane's gRPC address.
    pub control_plane: String,
    /// The control plane's namespace: the proxy expects its certificate to name
    /// `spiffe://<trustDomain>/ns/<namespace>/sa/bulwark-control-plane`.
    pub control_plane_namespace: String,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// Native or classic sidecar.
    pub sidecar: SidecarMode,
    /// The proxy's resources (annotations override them per pod).
    pub resources: Resources,
    /// The proxy's log filter (`BULWARK_LOG`).
    pub log_level: String,
    /// The proxy's access log (`BULWARK_ACCESS_LOG`): `off`, `text` or `json`.
    pub access_log: AccessLog,
    /// The OTLP collector of the proxies' spans (`BULWARK_OTLP_ENDPOINT`); empty: none.
    pub otlp_endpoint: String,
    /// How the proxies carry HTTP/1 to meshed peers (`BULWARK_MESH_HTTP1`).
    pub mesh_http1: MeshHttp1,
    /// Namespaces the webhook never injects, besides its own.
    pub excluded_namespaces: Vec<String>,
    /// Give the proxy its pod's service-account token, projected for the mesh's audience,
    /// to prove its identity with (the control plane checks it with a TokenReview: serve
    /// `--token-review`). Off, injected proxies get no identity.
    pub identity_token: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            proxy_image: DEFAULT_PROXY_IMAGE.into(),
            image_pull_policy: None,
            control_plane: DEFAULT_CONTROL_PLANE.into(),
            control_plane_namespace: "bulwark".into(),
            trust_domain: "cluster.local".into(),
            sidecar: SidecarMode::Native,
            resources: Resources::default(),
            log_level: "info".into(),
            access_log: AccessLog::Off,
            otlp_endpoint: String::new(),
            mesh_http1: MeshHttp1::Pooled,
            excluded_namespaces: ["kube-system", "kube-public", "kube-node-lease"]
                .map(String::from)
                .to_vec(),
            identity_token: true,
        }
    }
}

impl Settings {
    /// Reads settings from a YAML file; an unknown or mistyped key is an error naming it.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_saphyr::from_str(&text)
            .with_context(|| format!("{}: not valid injection settings", path.display()))
    }
}

/// The proxy's access-log format, as the chart and the annotation name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    /// None.
    Off,
    /// `key=value` lines.
    Text,
    /// JSON lines.
    Json,
}

impl AccessLog {
    /// The value of `BULWARK_ACCESS_LOG`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLog::Off => "off",
            AccessLog::Text => "text",
            AccessLog::Json => "json",
        }
    }
}

/// How a proxy carries HTTP/1 requests to a meshed peer, as the chart and the annotation
/// name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeshHttp1 {
    /// On pooled HTTP/1 mesh connections (the proxy's default).
    Pooled,
    /// As HTTP/2 streams on one mesh connection per peer.
    Multiplexed,
}

impl MeshHttp1 {
    /// The value of `BULWARK_MESH_HTTP1`.
    pub fn as_str(self) -> &'static str {
        match self {
            MeshHttp1::Pooled => "pooled",
            MeshHttp1::Multiplexed => "multiplexed",
        }
    }
}

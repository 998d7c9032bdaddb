//! The chart's values as Rust types: `cargo xtask codegen` writes
//! `charts/bulwark/values.schema.json` from them (Helm refuses values that do not fit it),
//! and a test reads `values.yaml` into them, so every key there is typed here and nothing
//! is typed that the file does not have. The descriptions are the `values.yaml` comments;
//! a test fails when the schema file is not what these types generate.

// Nothing reads the fields but serde (in a test) and schemars: the types are the schema.
#![allow(dead_code)]

use std::collections::BTreeMap;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Deserialize;

/// Values of the Bulwark chart.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Values of the Bulwark chart")]
pub struct Values {
    /// The control plane Deployment.
    #[serde(default)]
    pub control_plane: ControlPlane,
    /// Mesh-wide settings.
    #[serde(default)]
    pub mesh: Mesh,
    /// The mesh CA.
    #[serde(default)]
    pub identity: Identity,
    /// Policy documents served to the proxies, file name to YAML text. They are validated
    /// by the control plane at start and on every change; bulwarkctl validate checks them
    /// first.
    #[serde(default)]
    #[schemars(extend("propertyNames" = {"pattern": "^[A-Za-z0-9._-]+\\.ya?ml$"}))]
    pub policy: BTreeMap<String, String>,
    /// The injected containers.
    #[serde(default)]
    pub proxy: Proxy,
    /// The admission webhooks.
    #[serde(default)]
    pub webhook: Webhook,
    /// The Grafana dashboards.
    #[serde(default)]
    pub dashboards: Dashboards,
    /// The Prometheus alert rules.
    #[serde(default)]
    pub alerts: Alerts,
}

/// A duration as the binaries read it (250ms, 10s, 5m, 1h).
const DURATION: &str = "^[0-9]+(ms|s|m|h)$";

/// The control plane Deployment.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ControlPlane {
    /// Replicas of the control plane. Proxies reconnect to another one when theirs goes.
    #[schemars(range(min = 1))]
    pub replicas: u32,
    /// The control plane's image.
    pub image: Image,
    /// Resource requests and limits of the control plane container.
    pub resources: BTreeMap<String, serde_json::Value>,
    /// Log format: json (one object per line) or text.
    pub log_format: LogFormat,
    /// Where policy comes from. configmap: the policy values below, mounted as files.
    /// kubernetes: the Bulwark objects in the cluster (kubectl apply them), with every
    /// Service balanced across the endpoints of its EndpointSlices and injected pods meshed;
    /// the control plane may then list and watch those kinds, Services, EndpointSlices and
    /// Pods.
    pub source: Source,
    /// How often the policy directory is checked for changes (source configmap).
    #[schemars(regex(pattern = DURATION))]
    pub poll_interval: String,
    /// Lifetime of the workload certificates the control plane issues (Linkerd's and
    /// Istio's default: 24h).
    #[schemars(regex(pattern = DURATION))]
    pub cert_lifetime: String,
    /// Pods the PodDisruptionBudget keeps available; none when replicas is 1.
    pub min_available: u32,
    /// Node selector of the control plane pods.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the control plane pods.
    pub tolerations: Vec<BTreeMap<String, serde_json::Value>>,
    /// Extra affinity; a preferred anti-affinity spreading the replicas over nodes is
    /// always added.
    pub affinity: BTreeMap<String, serde_json::Value>,
}

/// Where the control plane reads policy.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// The chart's policy values, as a mounted ConfigMap.
    #[default]
    Configmap,
    /// The cluster's Bulwark objects, Services, EndpointSlices and Pods.
    Kubernetes,
}

/// An image reference.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Image {
    /// Image repository.
    #[schemars(length(min = 1))]
    pub repository: String,
    /// Image tag; the chart's appVersion when empty.
    #[serde(default)]
    pub tag: String,
    /// Image pull policy.
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

/// Kubernetes' image pull policies.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub enum PullPolicy {
    // Pull every time.
    Always,
    // Pull when the node does not have it.
    #[default]
    IfNotPresent,
    // Never pull.
    Never,
}

/// Log formats of the control plane.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    // One JSON object per line.
    #[default]
    Json,
    // Human-readable lines.
    Text,
}

/// Mesh-wide settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Mesh {
    /// SPIFFE trust domain of every workload identity.
    #[schemars(regex(
        pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"
    ))]
    pub trust_domain: String,
}

/// The mesh CA, from a Secret of the operator's.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Identity {
    /// Secret holding the mesh CA: trust-anchors.pem (the roots, several while one is
    /// rotated), issuer.pem and issuer.key (PKCS#8). The chart does not make one.
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// Key (in the same Secret) that signs bootstrap tokens for workloads outside
    /// Kubernetes (bulwarkctl token create); empty when there are none.
    pub token_key: String,
    /// Injected proxies prove their identity with their pod's service-account token,
    /// projected for the audience bulwark.dev; the control plane checks it with a
    /// TokenReview (a ClusterRole allowing only that is bound to it).
    pub token_review: bool,
}

/// The injected containers.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Proxy {
    /// The image of bulwark-proxy (it runs both the init container and the sidecar).
    pub image: Image,
    /// native: an init container with restartPolicy Always (Kubernetes 1.29 and later);
    /// classic: the first app container, holding the others back until it is ready.
    pub sidecar: Sidecar,
    /// The proxy's log filter (BULWARK_LOG); config.bulwark.dev/log-level overrides it
    /// per pod.
    #[schemars(regex(pattern = "^[A-Za-z0-9_=,:.-]+$"))]
    pub log_level: String,
    /// The proxy's resources; config.bulwark.dev/proxy-{cpu,memory}-{request,limit}
    /// override them per pod.
    pub resources: ProxyResources,
    /// The access log on the proxy's stdout (off, text or json);
    /// config.bulwark.dev/access-log overrides it per pod.
    pub access_log: AccessLog,
    /// The OTLP/gRPC collector the proxies send spans of sampled requests to
    /// (http://host:4317); empty: no spans.
    #[schemars(regex(pattern = "^(https?://[^\\s]+)?$"))]
    pub otlp_endpoint: String,
    /// How proxies carry HTTP/1 to meshed peers: pooled (pooled HTTP/1 mesh connections,
    /// the cheaper path) or multiplexed (HTTP/2 streams on one mesh connection per peer);
    /// config.bulwark.dev/mesh-http1 overrides it per pod.
    pub mesh_http1: MeshHttp1,
}

/// How proxies carry HTTP/1 to meshed peers.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MeshHttp1 {
    // Pooled HTTP/1 mesh connections.
    #[default]
    Pooled,
    // HTTP/2 streams on one mesh connection per peer.
    Multiplexed,
}

/// The proxy's access log.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    // None.
    #[default]
    Off,
    // key=value lines.
    Text,
    // JSON lines.
    Json,
}

/// How the sidecar is injected.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sidecar {
    // An init container with restartPolicy Always.
    #[default]
    Native,
    // The first app container.
    Classic,
}

/// The proxy's requests and limits.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ProxyResources {
    /// Requests.
    pub requests: CpuMemory,
    /// Limits.
    pub limits: CpuMemory,
}

/// CPU and memory quantities.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CpuMemory {
    /// CPU, e.g. 10m.
    pub cpu: String,
    /// Memory, e.g. 32Mi.
    pub memory: String,
}

/// The admission webhooks.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Webhook {
    /// Serve the admission webhooks: sidecar injection and policy validation.
    pub enabled: bool,
    /// How long the API server waits for an answer (1 to 30 seconds).
    #[schemars(range(min = 1, max = 30))]
    pub timeout_seconds: u32,
    /// The webhooks' serving certificate.
    pub certificate: Certificate,
    /// The injection webhook.
    pub injection: Injection,
    /// The validating webhook.
    pub validation: Validation,
}

/// Where the webhooks' certificate comes from.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
#[schemars(extend(
    "if" = {"properties": {"source": {"const": "secret"}}},
    "then" = {"properties": {"secretName": {"minLength": 1}, "caBundle": {"minLength": 1}}}
))]
pub struct Certificate {
    /// generate (made by the chart and kept across upgrades), secret (a kubernetes.io/tls
    /// Secret of yours) or certManager.
    pub source: CertificateSource,
    /// Validity, in days, of a generated certificate.
    #[schemars(range(min = 1))]
    pub validity_days: u32,
    /// With source secret: the Secret's name (tls.crt, tls.key) in the release namespace.
    pub secret_name: String,
    /// With source secret: the PEM of the CA that signed it, for the API server.
    pub ca_bundle: String,
    /// With source certManager: the issuer.
    pub cert_manager: CertManager,
}

/// Certificate sources.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CertificateSource {
    // Made by the chart.
    #[default]
    Generate,
    // A Secret of yours.
    Secret,
    // A cert-manager Certificate.
    CertManager,
}

/// cert-manager settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CertManager {
    /// Issuer or ClusterIssuer.
    pub issuer_kind: IssuerKind,
    /// The issuer's name.
    pub issuer_name: String,
    /// Lifetime of the certificate cert-manager issues (it renews it before the end).
    #[schemars(regex(pattern = "^[0-9]+(h|m|s)$"))]
    pub duration: String,
}

/// cert-manager issuer kinds.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub enum IssuerKind {
    // Namespaced.
    #[default]
    Issuer,
    // Cluster-wide.
    ClusterIssuer,
}

/// The injection webhook.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Injection {
    /// Fail refuses pods while no control plane answers (no pod starts unmeshed); Ignore
    /// lets them start without a sidecar.
    pub failure_policy: FailurePolicy,
    /// Namespaces never injected; the release namespace is always excluded too.
    #[schemars(inner(regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")))]
    pub excluded_namespaces: Vec<String>,
}

/// The validating webhook.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Validation {
    /// Fail refuses policy changes while no control plane answers; Ignore lets them in
    /// unchecked (the control plane still refuses an invalid policy, keeping the last good
    /// one).
    pub failure_policy: FailurePolicy,
}

/// Webhook failure policies.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub enum FailurePolicy {
    // Refuse the request.
    #[default]
    Fail,
    // Let it through.
    Ignore,
}

/// The Grafana dashboards of `dashboards/`, as ConfigMaps for Grafana's sidecar.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Dashboards {
    /// Install the dashboards (mesh, workload, policy target), one ConfigMap each, labelled
    /// grafana_dashboard: "1" for Grafana's dashboard sidecar. They expect the proxies
    /// scraped with the namespace and pod labels of Prometheus's Kubernetes service
    /// discovery.
    pub enabled: bool,
    /// Extra labels of the dashboard ConfigMaps, for a sidecar that selects on more than
    /// grafana_dashboard.
    pub labels: BTreeMap<String, String>,
}

/// The alert rules of `alerts/bulwark.rules.yaml`, as a PrometheusRule.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Alerts {
    /// Install the alert rules as a PrometheusRule (the Prometheus Operator's CRD must be
    /// installed).
    pub enabled: bool,
    /// Extra labels of the PrometheusRule, for the Prometheus ruleSelector that must pick
    /// it (kube-prometheus-stack's wants release: <its release name>).
    pub labels: BTreeMap<String, String>,
}

/// `values.schema.json`'s text: JSON Schema draft 7 (what Helm validates), inlined.
pub fn schema() -> String {
    let generator = SchemaSettings::draft07()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<Values>().to_value();
    tidy(&mut schema);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Drops what would mislead: the `default`s of the derived `Default` (the real defaults
/// are `values.yaml`'s) and Rust's integer formats (`uint32`), which are no JSON Schema
/// format and which a validator may refuse to know.
fn tidy(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.remove("default");
            if map
                .get("format")
                .and_then(|f| f.as_str())
                .is_some_and(|f| f.starts_with("int") || f.starts_with("uint"))
            {
                map.remove("format");
            }
            map.values_mut().for_each(tidy);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_values_yaml_is_typed() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/bulwark/values.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let values: Values = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(values.control_plane.replicas, 2);
        assert!(values.policy.contains_key("mesh.yaml"));
        let stray = text.replace("  enabled: true", "  enabled: true\n  enable: true");
        let err = serde_saphyr::from_str::<Values>(&stray).unwrap_err();
        assert!(err.to_string().contains("enable"), "{err}");
    }

    #[test]
    fn the_schema_file_is_generated_from_these_types() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/bulwark/values.schema.json"
        );
        assert!(
            std::fs::read_to_string(path).unwrap() == schema(),
            "{path} is out of date with the Rust types: run `cargo xtask codegen`"
        );
    }
}

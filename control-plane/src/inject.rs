//! Sidecar injection, decided on a pod template alone (no API server): what `bulwarkctl
//! inject` does to manifests offline, and what the injection webhook will answer.
//!
//! A pod gets two init containers, first in the list:
//! - `bulwark-init` runs `bulwark-proxy init` as root with NET_ADMIN and NET_RAW only (every
//!   other capability dropped): it writes the redirection rules and proves them;
//! - `bulwark-proxy` is a native sidecar (an init container with `restartPolicy: Always`,
//!   Kubernetes ≥ 1.29): UID 5102, every capability dropped, read-only root filesystem, no
//!   privilege escalation, and a startup probe on `/ready`, so the app's containers start
//!   once the proxy is ready and it outlives them.
//!
//! The proxy learns its pod from the downward API and the mesh's roots from the ConfigMap
//! `bulwark-trust-anchors` in the pod's namespace (trust-manager's Bundle can sync it to
//! every namespace). A pod that has `bulwark-proxy` already is left as it is (injection is
//! idempotent), and `bulwark.dev/inject: disabled` opts out. Mesh identity in a cluster
//! takes the projected service-account token (TokenReview), which comes with the Kubernetes
//! source; until then the sidecar verifies the control plane but holds no identity.

use serde_json::{Value, json};

/// The annotation that opts a pod out (`disabled`).
pub const INJECT_ANNOTATION: &str = "bulwark.dev/inject";
/// Name of the init container that writes the rules.
pub const INIT_CONTAINER: &str = "bulwark-init";
/// Name of the sidecar.
pub const PROXY_CONTAINER: &str = "bulwark-proxy";
/// The proxy's UID and GID (the rules exempt its traffic).
pub const PROXY_UID: u32 = 5102;
/// The proxy image when none is given.
pub const DEFAULT_PROXY_IMAGE: &str = "ghcr.io/bulwark-mesh/bulwark-proxy:0.1.0";
/// The control plane's address when none is given: the chart's Service.
pub const DEFAULT_CONTROL_PLANE: &str = "bulwark-control-plane.bulwark.svc:5170";
/// ConfigMap with the mesh's `trust-anchors.pem`, mounted into the sidecar.
pub const TRUST_ANCHORS_CONFIGMAP: &str = "bulwark-trust-anchors";
/// Where the sidecar finds it.
pub const TRUST_ANCHORS_DIR: &str = "/var/run/bulwark/trust-anchors";

/// What injection is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The proxy image (it holds both `init` and `run`).
    pub proxy_image: String,
    /// The control plane's gRPC address.
    pub control_plane: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            proxy_image: DEFAULT_PROXY_IMAGE.into(),
            control_plane: DEFAULT_CONTROL_PLANE.into(),
        }
    }
}

/// What injection did to one pod template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The sidecar was added.
    Injected,
    /// It was there already.
    AlreadyInjected,
    /// The pod opted out.
    OptedOut,
}

/// Why a manifest could not be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// A field that must be an object or a list is not.
    #[error("{0} is not shaped like a Kubernetes pod template")]
    Shape(&'static str),
}

fn env_field(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})
}

fn init_container(s: &Settings) -> Value {
    json!({
        "name": INIT_CONTAINER,
        "image": s.proxy_image,
        "args": ["init"],
        "env": [env_field("BULWARK_POD_IP", "status.podIP")],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
        },
    })
}

fn proxy_container(s: &Settings, workload: &str) -> Value {
    json!({
        "name": PROXY_CONTAINER,
        "image": s.proxy_image,
        "args": ["run"],
        "restartPolicy": "Always",
        "env": [
            env_field("BULWARK_POD_NAMESPACE", "metadata.namespace"),
            {"name": "BULWARK_WORKLOAD", "value": format!("$(BULWARK_POD_NAMESPACE)/{workload}")},
            env_field("BULWARK_SERVICE_ACCOUNT", "spec.serviceAccountName"),
            env_field("BULWARK_POD_IPS", "status.podIPs"),
            {"name": "BULWARK_CONTROL_PLANE", "value": s.control_plane},
            {"name": "BULWARK_TRUST_ANCHORS", "value": format!("{TRUST_ANCHORS_DIR}/trust-anchors.pem")},
            {"name": "BULWARK_LOG_FORMAT", "value": "json"},
        ],
        "ports": [{"name": "bulwark-admin", "containerPort": 5191}],
        "startupProbe": {
            "httpGet": {"path": "/ready", "port": 5191},
            "periodSeconds": 1,
            "failureThreshold": 120,
        },
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 5191}, "periodSeconds": 5},
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "bulwark-trust-anchors", "mountPath": TRUST_ANCHORS_DIR, "readOnly": true}],
    })
}

/// Injects the sidecar into the pod template whose metadata is `meta` and spec `spec`;
/// `workload` names it (the owner's name, or the pod's).
pub fn pod(
    meta: &Value,
    spec: &mut Value,
    s: &Settings,
    workload: &str,
) -> Result<Change, InjectError> {
    if meta["annotations"][INJECT_ANNOTATION] == "disabled" {
        return Ok(Change::OptedOut);
    }
    let spec = spec.as_object_mut().ok_or(InjectError::Shape("spec"))?;
    let inits = spec
        .entry("initContainers")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or(InjectError::Shape("spec.initContainers"))?;
    if inits.iter().any(|c| c["name"] == PROXY_CONTAINER) {
        return Ok(Change::AlreadyInjected);
    }
    inits.insert(0, proxy_container(s, workload));
    inits.insert(0, init_container(s));
    let volumes = spec
        .entry("volumes")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or(InjectError::Shape("spec.volumes"))?;
    volumes.push(json!({
        "name": "bulwark-trust-anchors",
        // Not optional: without the roots the proxy cannot verify the control plane, and
        // a pod waiting for its ConfigMap says why in its events.
        "configMap": {"name": TRUST_ANCHORS_CONFIGMAP},
    }));
    Ok(Change::Injected)
}

/// The pod templates of a manifest, as (metadata, spec, workload name) paths: a Pod's own,
/// a workload controller's `spec.template`, a CronJob's job template's.
fn templates(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

/// The workload name of a manifest: its name, or a `generateName` without the dash (the
/// pod template's `app.kubernetes.io/name` or `app` label wins over both).
fn name_of(doc: &Value) -> String {
    let m = &doc["metadata"];
    m["name"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            m["generateName"]
                .as_str()
                .map(|g| g.trim_end_matches('-').to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Injects every pod template in `doc` (a `List`'s items too); returns what happened to
/// each, in order. Kinds without pods are left alone.
pub fn manifest(doc: &mut Value, s: &Settings) -> Result<Vec<Change>, InjectError> {
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    if kind == "List" {
        let mut all = Vec::new();
        if let Some(items) = doc["items"].as_array_mut() {
            for item in items {
                all.extend(manifest(item, s)?);
            }
        }
        return Ok(all);
    }
    let Some(path) = templates(&kind) else {
        return Ok(Vec::new());
    };
    let workload = name_of(doc);
    let mut t = &mut *doc;
    for key in path {
        t = t
            .get_mut(*key)
            .ok_or(InjectError::Shape("the pod template"))?;
    }
    let meta = t["metadata"].clone();
    // The app's own name label says which workload it is better than a pod's generated name.
    let labels = &meta["labels"];
    let workload = labels["app.kubernetes.io/name"]
        .as_str()
        .or_else(|| labels["app"].as_str())
        .map_or(workload, str::to_string);
    let spec = t.get_mut("spec").ok_or(InjectError::Shape("spec"))?;
    Ok(vec![pod(&meta, spec, s, &workload)?])
}

#[cfg(test)]
mod tests;

//! Sidecar injection, decided on a pod template alone (no API server): what `bulwarkctl
//! inject` does to manifests offline, and what the injection webhook answers.
//!
//! Injection is a JSON patch ([`plan`]): the webhook returns it to the API server as it is,
//! and `bulwarkctl inject` applies the same patch with the same RFC 6902 implementation, so
//! the two cannot drift. A pod gets:
//! - `bulwark-init` first among its init containers: `bulwark-proxy init` as root with
//!   NET_ADMIN and NET_RAW only (every other capability dropped) writes the redirection rules
//!   and proves them;
//! - `bulwark-proxy` ([`containers`]): a native sidecar (an init container with
//!   `restartPolicy: Always`, Kubernetes ≥ 1.29) right after it, or with
//!   [`SidecarMode::Classic`] the first of `containers` with a postStart hook that waits for
//!   `/ready`. UID 5102, every capability dropped, read-only root filesystem, no privilege
//!   escalation;
//! - the volume with the mesh's roots, and the annotation `bulwark.dev/proxy-version`.
//!
//! The proxy learns its pod from the downward API and the mesh's roots from the ConfigMap
//! `bulwark-trust-anchors` in the pod's namespace. `config.bulwark.dev/*` annotations tune
//! one pod ([`annotations`]). A pod that has `bulwark-proxy` already is left as it is
//! (injection is idempotent), `bulwark.dev/inject: disabled` opts out, and [`uninject`]
//! takes it all back out.

use serde_json::{Value, json};

pub mod annotations;
mod containers;
mod probes;
mod settings;

pub use self::settings::{AccessLog, MeshHttp1, Resources, Settings, SidecarMode};

/// The annotation (or label) that opts a pod in (`enabled`) or out (`disabled`).
pub const INJECT_ANNOTATION: &str = "bulwark.dev/inject";
/// The annotation injection leaves: the proxy's version.
pub const VERSION_ANNOTATION: &str = "bulwark.dev/proxy-version";
/// Name of the init container that writes the rules.
pub const INIT_CONTAINER: &str = "bulwark-init";
/// Name of the sidecar.
pub const PROXY_CONTAINER: &str = "bulwark-proxy";
/// The proxy binary's path in its image.
pub const PROXY_BIN: &str = "/usr/local/bin/bulwark-proxy";
/// The proxy's UID and GID (the rules exempt its traffic).
pub const PROXY_UID: u32 = 5102;
/// The proxy's default listener ports (its own flags' defaults).
pub const INBOUND_PORT: u16 = 5143;
/// See [`INBOUND_PORT`].
pub const OUTBOUND_PORT: u16 = 5140;
/// See [`INBOUND_PORT`].
pub const ADMIN_PORT: u16 = 5191;
/// The proxy image when none is given.
pub const DEFAULT_PROXY_IMAGE: &str = "ghcr.io/bulwark-mesh/bulwark-proxy:0.1.0";
/// The control plane's address when none is given: the chart's Service.
pub const DEFAULT_CONTROL_PLANE: &str = "bulwark-control-plane.bulwark.svc:5170";
/// ConfigMap with the mesh's `trust-anchors.pem`, mounted into the sidecar.
pub const TRUST_ANCHORS_CONFIGMAP: &str = "bulwark-trust-anchors";
/// The pod volume that mounts it.
pub const TRUST_ANCHORS_VOLUME: &str = "bulwark-trust-anchors";
/// Where the sidecar finds it.
pub const TRUST_ANCHORS_DIR: &str = "/var/run/bulwark/trust-anchors";
/// The pod volume with the service-account token projected for the mesh.
pub const TOKEN_VOLUME: &str = "bulwark-token";
/// Where the sidecar finds it (`token` inside).
pub const TOKEN_DIR: &str = "/var/run/secrets/bulwark.dev/serviceaccount";
/// How long a projected token lives; the kubelet renews it at 80 % and the proxy reads the
/// file at each request (600 s is the least the API server accepts).
pub const TOKEN_EXPIRATION_SECONDS: u64 = 3600;

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
    /// A per-pod setting is wrong.
    #[error("annotation {key}={value:?}: {reason}")]
    Annotation {
        /// The annotation.
        key: String,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

/// What injecting one pod takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What it does.
    pub change: Change,
    /// The JSON patch (RFC 6902) against the pod (paths from `/metadata` and `/spec`); empty
    /// unless `change` is [`Change::Injected`].
    pub patch: json_patch::Patch,
}

fn add(path: String, value: Value) -> Value {
    json!({"op": "add", "path": path, "value": value})
}

/// A key as a JSON pointer segment (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn has_proxy(spec: &Value) -> bool {
    ["initContainers", "containers"].iter().any(|list| {
        spec[list]
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["name"] == PROXY_CONTAINER))
    })
}

/// Adds `item` first (or last) in the list at `/spec/{list}`, creating it when absent.
fn insert(
    spec: &Value,
    list: &str,
    items: Vec<Value>,
    first: bool,
    ops: &mut Vec<Value>,
) -> Result<(), InjectError> {
    match &spec[list] {
        Value::Null => ops.push(add(format!("/spec/{list}"), Value::Array(items))),
        Value::Array(_) => {
            for (i, item) in items.into_iter().enumerate() {
                let at = if first { i.to_string() } else { "-".into() };
                ops.push(add(format!("/spec/{list}/{at}"), item));
            }
        }
        _ => return Err(InjectError::Shape("a container or volume list")),
    }
    Ok(())
}

/// The patch that injects the sidecar into the pod whose metadata is `meta` and spec
/// `spec`; `workload` names it (the owner's name, or the pod's).
pub fn plan(meta: &Value, spec: &Value, s: &Settings, workload: &str) -> Result<Plan, InjectError> {
    let none = |change| Plan {
        change,
        patch: json_patch::Patch(Vec::new()),
    };
    if meta["annotations"][INJECT_ANNOTATION] == "disabled"
        || meta["labels"][INJECT_ANNOTATION] == "disabled"
    {
        return Ok(none(Change::OptedOut));
    }
    if !spec.is_object() {
        return Err(InjectError::Shape("spec"));
    }
    if has_proxy(spec) {
        return Ok(none(Change::AlreadyInjected));
    }
    if !spec["containers"].is_array() {
        return Err(InjectError::Shape("spec.containers"));
    }
    let o = annotations::parse(meta)?;
    let mut ops = Vec::new();
    let probes = probes::routes(spec);
    let (init, proxy) = (
        containers::init(s, &o),
        containers::proxy(s, &o, workload, &probes),
    );
    match s.sidecar {
        SidecarMode::Native => insert(spec, "initContainers", vec![init, proxy], true, &mut ops)?,
        SidecarMode::Classic => {
            insert(spec, "initContainers", vec![init], true, &mut ops)?;
            insert(spec, "containers", vec![proxy], true, &mut ops)?;
        }
    }
    // Not optional: without the roots the proxy cannot verify the control plane, and a pod
    // waiting for its ConfigMap says why in its events.
    let mut volumes =
        vec![json!({"name": TRUST_ANCHORS_VOLUME, "configMap": {"name": TRUST_ANCHORS_CONFIGMAP}})];
    if s.identity_token {
        volumes.push(json!({"name": TOKEN_VOLUME, "projected": {"sources": [{
            "serviceAccountToken": {
                "audience": crate::token_review::AUDIENCE,
                "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                "path": "token",
            },
        }]}}));
    }
    insert(spec, "volumes", volumes, false, &mut ops)?;
    let version = env!("CARGO_PKG_VERSION");
    ops.push(match (&meta, &meta["annotations"]) {
        (Value::Null, _) => add(
            "/metadata".into(),
            json!({"annotations": {VERSION_ANNOTATION: version}}),
        ),
        (_, Value::Null) => add(
            "/metadata/annotations".into(),
            json!({VERSION_ANNOTATION: version}),
        ),
        _ => add(
            format!("/metadata/annotations/{}", escape(VERSION_ANNOTATION)),
            json!(version),
        ),
    });
    let patch =
        serde_json::from_value(Value::Array(ops)).map_err(|_| InjectError::Shape("the patch"))?;
    Ok(Plan {
        change: Change::Injected,
        patch,
    })
}

/// Injects the pod template `t` (an object with `metadata` and `spec`) in place.
pub fn pod(t: &mut Value, s: &Settings, workload: &str) -> Result<Change, InjectError> {
    let plan = plan(&t["metadata"], &t["spec"], s, workload)?;
    json_patch::patch(t, &plan.patch).map_err(|_| InjectError::Shape("the pod template"))?;
    Ok(plan.change)
}

/// The pod templates of a manifest: a Pod is its own, a workload controller's is at
/// `spec.template`, a CronJob's at its job template's.
fn templates(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

/// The workload a pod belongs to: its `app.kubernetes.io/name` or `app` label; else the
/// controller that owns it (a ReplicaSet's pods are named after its Deployment, so the
/// template hash comes off); else the manifest's name or `generateName`.
pub fn workload_name(doc_meta: &Value, template_meta: &Value) -> String {
    let labels = &template_meta["labels"];
    let owner = || {
        let owners = doc_meta["ownerReferences"].as_array()?;
        let o = owners.iter().find(|o| o["controller"] == true)?;
        let name = o["name"].as_str().filter(|n| !n.is_empty())?;
        let hash = labels["pod-template-hash"].as_str().unwrap_or_default();
        let deployment = name
            .strip_suffix(hash)
            .and_then(|d| d.strip_suffix('-'))
            .filter(|d| o["kind"] == "ReplicaSet" && !hash.is_empty() && !d.is_empty());
        Some(deployment.unwrap_or(name).to_string())
    };
    labels["app.kubernetes.io/name"]
        .as_str()
        .or_else(|| labels["app"].as_str())
        .map(str::to_string)
        .or_else(owner)
        .or_else(|| {
            doc_meta["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .or_else(|| doc_meta["generateName"].as_str())
                .map(|g| g.trim_end_matches('-').to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Applies `f` to every pod template in `doc` (a `List`'s items too), in order, with its
/// workload name. Kinds without pods are left alone.
fn each_template<T>(
    doc: &mut Value,
    f: &mut impl FnMut(&mut Value, &str) -> Result<T, InjectError>,
) -> Result<Vec<T>, InjectError> {
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    if kind == "List" {
        let mut all = Vec::new();
        if let Some(items) = doc["items"].as_array_mut() {
            for item in items {
                all.extend(each_template(item, f)?);
            }
        }
        return Ok(all);
    }
    let Some(path) = templates(&kind) else {
        return Ok(Vec::new());
    };
    let doc_meta = doc["metadata"].clone();
    let mut t = &mut *doc;
    for key in path {
        t = t
            .get_mut(*key)
            .ok_or(InjectError::Shape("the pod template"))?;
    }
    if !t.is_object() {
        return Err(InjectError::Shape("the pod template"));
    }
    let workload = workload_name(&doc_meta, &t["metadata"]);
    Ok(vec![f(t, &workload)?])
}

/// Injects every pod template in `doc`; returns what happened to each, in order.
pub fn manifest(doc: &mut Value, s: &Settings) -> Result<Vec<Change>, InjectError> {
    each_template(doc, &mut |t, workload| pod(t, s, workload))
}

/// Takes the sidecar back out of every pod template in `doc`: both containers, the volume
/// the volumes and the version annotation. Returns, for each template, whether anything was removed.
pub fn uninject(doc: &mut Value) -> Result<Vec<bool>, InjectError> {
    each_template(doc, &mut |t, _| {
        let mut removed = false;
        let Some(spec) = t.get_mut("spec") else {
            return Ok(false);
        };
        for (list, names) in [
            ("initContainers", &[INIT_CONTAINER, PROXY_CONTAINER][..]),
            ("containers", &[PROXY_CONTAINER][..]),
            ("volumes", &[TRUST_ANCHORS_VOLUME, TOKEN_VOLUME][..]),
        ] {
            if let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) {
                let before = items.len();
                items.retain(|c| !names.iter().any(|n| c["name"] == *n));
                removed |= items.len() != before;
                if items.is_empty() && list != "containers" {
                    spec.as_object_mut().map(|s| s.remove(list));
                }
            }
        }
        if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut)
            && let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut)
        {
            removed |= a.remove(VERSION_ANNOTATION).is_some();
            if a.is_empty() {
                meta.remove("annotations");
            }
        }
        Ok(removed)
    })
}

#[cfg(test)]
mod tests;

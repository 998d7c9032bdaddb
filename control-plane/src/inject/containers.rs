//! The two containers injection adds: `bulwark-init` (the rules) and `bulwark-proxy` (the
//! sidecar), built from the cluster-wide [`Settings`] and the pod's [`Overrides`].

use serde_json::{Map, Value, json};

use super::annotations::Overrides;
use super::{
    ADMIN_PORT, AccessLog, INIT_CONTAINER, MeshHttp1, PROXY_BIN, PROXY_CONTAINER, PROXY_UID,
    Settings, SidecarMode, TOKEN_DIR, TOKEN_VOLUME, TRUST_ANCHORS_DIR, TRUST_ANCHORS_VOLUME,
};

fn env_field(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})
}

fn env_value(name: &str, value: impl Into<String>) -> Value {
    json!({"name": name, "value": value.into()})
}

/// The proxy's listener ports, for the environment of both containers (only those a pod
/// overrides: the defaults are the binaries' own).
fn port_env(o: &Overrides, env: &mut Vec<Value>) {
    for (name, port) in [
        ("BULWARK_INBOUND_PORT", o.inbound_port),
        ("BULWARK_OUTBOUND_PORT", o.outbound_port),
    ] {
        if let Some(p) = port {
            env.push(env_value(name, p.to_string()));
        }
    }
}

fn with_pull_policy(mut c: Value, s: &Settings) -> Value {
    if let Some(p) = &s.image_pull_policy {
        c["imagePullPolicy"] = json!(p);
    }
    c
}

/// `bulwark-init`: root with NET_ADMIN and NET_RAW only; writes the rules and proves them.
pub(super) fn init(s: &Settings, o: &Overrides) -> Value {
    let mut env = vec![env_field("BULWARK_POD_IP", "status.podIP")];
    port_env(o, &mut env);
    for (name, v) in [
        ("BULWARK_ADMIN_PORT", o.admin_port.map(|p| p.to_string())),
        ("BULWARK_SKIP_INBOUND_PORTS", o.skip_inbound_ports.clone()),
        ("BULWARK_SKIP_OUTBOUND_PORTS", o.skip_outbound_ports.clone()),
        ("BULWARK_SKIP_OUTBOUND_CIDRS", o.skip_outbound_cidrs.clone()),
    ] {
        if let Some(v) = v {
            env.push(env_value(name, v));
        }
    }
    with_pull_policy(
        json!({
            "name": INIT_CONTAINER,
            "image": s.proxy_image,
            "args": ["init"],
            "env": env,
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
            "securityContext": {
                "runAsUser": 0,
                "runAsNonRoot": false,
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
            },
        }),
        s,
    )
}

/// The proxy's resources: the cluster's, with the pod's annotations over them.
fn resources(s: &Settings, o: &Overrides) -> Value {
    let mut r = Map::new();
    for (class, values) in [
        ("requests", &s.resources.requests),
        ("limits", &s.resources.limits),
    ] {
        let mut m: Map<String, Value> = values.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        for ((c, k), v) in &o.resources {
            if *c == class {
                m.insert((*k).to_string(), json!(v));
            }
        }
        if !m.is_empty() {
            r.insert(class.into(), Value::Object(m));
        }
    }
    Value::Object(r)
}

/// `bulwark-proxy`: UID 5102, every capability dropped, read-only root filesystem. A native
/// sidecar (an init container that keeps running) or, on clusters older than 1.29, a classic
/// one first in `containers` whose postStart hook holds the app back until it is ready.
/// `probes` are the app's HTTP probes (`PORT:PATH`), admitted whatever the mTLS mode.
pub(super) fn proxy(s: &Settings, o: &Overrides, workload: &str, probes: &[String]) -> Value {
    let admin = o.admin_port.unwrap_or(ADMIN_PORT);
    let mut env = vec![
        env_field("BULWARK_POD_NAMESPACE", "metadata.namespace"),
        env_field("BULWARK_POD_NAME", "metadata.name"),
        env_value(
            "BULWARK_WORKLOAD",
            format!("$(BULWARK_POD_NAMESPACE)/{workload}"),
        ),
        env_field("BULWARK_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        env_field("BULWARK_POD_IPS", "status.podIPs"),
        env_value("BULWARK_CONTROL_PLANE", s.control_plane.clone()),
        env_value(
            "BULWARK_CONTROL_PLANE_NAMESPACE",
            s.control_plane_namespace.clone(),
        ),
        env_value("BULWARK_TRUST_DOMAIN", s.trust_domain.clone()),
        env_value(
            "BULWARK_TRUST_ANCHORS",
            format!("{TRUST_ANCHORS_DIR}/trust-anchors.pem"),
        ),
        env_value("BULWARK_LOG_FORMAT", "json"),
        env_value(
            "BULWARK_LOG",
            o.log_level.clone().unwrap_or_else(|| s.log_level.clone()),
        ),
    ];
    port_env(o, &mut env);
    if o.admin_port.is_some() {
        env.push(env_value("BULWARK_ADMIN_ADDR", format!("0.0.0.0:{admin}")));
    }
    let access_log = o.access_log.unwrap_or(s.access_log);
    if access_log != AccessLog::Off {
        env.push(env_value("BULWARK_ACCESS_LOG", access_log.as_str()));
    }
    let mesh_http1 = o.mesh_http1.unwrap_or(s.mesh_http1);
    if mesh_http1 != MeshHttp1::Pooled {
        env.push(env_value("BULWARK_MESH_HTTP1", mesh_http1.as_str()));
    }
    if !s.otlp_endpoint.is_empty() {
        env.push(env_value("BULWARK_OTLP_ENDPOINT", s.otlp_endpoint.clone()));
    }
    for (name, v) in [
        ("BULWARK_ACCESS_LOG_SAMPLE", &o.access_log_sample),
        ("BULWARK_OPAQUE_PORTS", &o.opaque_ports),
        ("BULWARK_DETECT_TIMEOUT", &o.detect_timeout),
        ("BULWARK_SHUTDOWN_GRACE", &o.shutdown_grace),
    ] {
        if let Some(v) = v {
            env.push(env_value(name, v.clone()));
        }
    }
    if !probes.is_empty() {
        env.push(env_value("BULWARK_INBOUND_PROBES", probes.join(",")));
    }
    let mut mounts = vec![
        json!({"name": TRUST_ANCHORS_VOLUME, "mountPath": TRUST_ANCHORS_DIR, "readOnly": true}),
    ];
    if s.identity_token {
        env.push(env_value(
            "BULWARK_IDENTITY_TOKEN_FILE",
            format!("{TOKEN_DIR}/token"),
        ));
        mounts.push(json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}));
    }
    if s.sidecar == SidecarMode::Classic {
        // A Job's main container ends the classic sidecar itself: POST /shutdown from
        // loopback (a native sidecar is ended by the kubelet).
        env.push(env_value("BULWARK_ADMIN_SHUTDOWN", "true"));
    }
    let ready = json!({"path": "/ready", "port": admin});
    let mut c = json!({
        "name": PROXY_CONTAINER,
        "image": s.proxy_image,
        "args": ["run"],
        "env": env,
        "ports": [{"name": "bulwark-admin", "containerPort": admin}],
        "readinessProbe": {"httpGet": ready, "periodSeconds": 5},
        "resources": resources(s, o),
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    });
    match s.sidecar {
        SidecarMode::Native => {
            c["restartPolicy"] = json!("Always");
            c["startupProbe"] =
                json!({"httpGet": ready, "periodSeconds": 1, "failureThreshold": 120});
        }
        SidecarMode::Classic => {
            // Every container gets SIGTERM at once here; preStop holds the proxy's back
            // until the app stops calling out, so its last calls still have a proxy.
            let local = format!("127.0.0.1:{admin}");
            c["lifecycle"] = json!({
                "postStart": {"exec": {"command": [
                    PROXY_BIN, "await", "--admin-addr", local, "--timeout", "120s",
                ]}},
                "preStop": {"exec": {"command": [PROXY_BIN, "linger", "--admin-addr", local]}},
            });
        }
    }
    with_pull_policy(c, s)
}

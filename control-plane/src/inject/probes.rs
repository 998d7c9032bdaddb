//! The app's HTTP probes, for its proxy. The kubelet probes from the node in plaintext and
//! has no mesh identity, so on a strict port the proxy would refuse it. Injection lists
//! every `httpGet` probe of the pod's containers as `PORT:PATH` in the proxy's
//! `BULWARK_INBOUND_PROBES`, and the proxy admits exactly those GET and HEAD requests
//! (Linkerd's way: the app's probes stay as written; Istio instead rewrites them to the
//! sidecar).

use std::collections::BTreeSet;

use serde_json::Value;

/// `PORT:PATH` of each plaintext `httpGet` probe in `spec`'s containers (and its sidecars
/// that are init containers), sorted and without repeats. A probe of another host, of
/// HTTPS, of a port name no container declares, or with a path the proxy's list cannot
/// carry (a comma, a space) is left out: it is not the kubelet's plaintext GET to this pod.
pub(super) fn routes(spec: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    let containers = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| spec[list].as_array().into_iter().flatten());
    for c in containers {
        for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
            let get = &c[kind]["httpGet"];
            if get.is_object()
                && let Some(route) = route(c, get)
            {
                out.insert(route);
            }
        }
    }
    out.into_iter().collect()
}

fn route(container: &Value, get: &Value) -> Option<String> {
    let scheme = get["scheme"].as_str().unwrap_or("HTTP");
    if !scheme.eq_ignore_ascii_case("HTTP") || get.get("host").is_some_and(|h| h != "") {
        return None;
    }
    let port = match &get["port"] {
        Value::Number(n) => n.as_u64()?,
        Value::String(name) => match name.parse::<u64>() {
            Ok(n) => n,
            Err(_) => container["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == name.as_str())?["containerPort"]
                .as_u64()?,
        },
        _ => return None,
    };
    if !(1..=65535).contains(&port) {
        return None;
    }
    // The kubelet sends the path as given, with a leading slash added when missing.
    let path = get["path"].as_str().unwrap_or("/");
    let path = match path.starts_with('/') {
        true => path.to_string(),
        false => format!("/{path}"),
    };
    if path.contains(|c: char| c == ',' || c.is_whitespace()) {
        return None;
    }
    Some(format!("{port}:{path}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_plaintext_http_get_probe_becomes_a_route() {
        let spec = json!({
            "containers": [
                {"name": "web", "ports": [{"name": "http", "containerPort": 8080}],
                 "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                 "readinessProbe": {"httpGet": {"path": "ready?full=1", "port": 8080}},
                 "startupProbe": {"httpGet": {"path": "/healthz", "port": 8080}}},
                {"name": "metrics",
                 "livenessProbe": {"httpGet": {"port": 9090}},
                 "readinessProbe": {"tcpSocket": {"port": 9090}}},
                {"name": "tls",
                 "livenessProbe": {"httpGet": {"path": "/h", "port": 8443, "scheme": "HTTPS"}},
                 "readinessProbe": {"httpGet": {"path": "/h", "port": 8081, "host": "10.0.0.9"}},
                 "startupProbe": {"httpGet": {"path": "/h", "port": "nameless"}}},
                {"name": "odd",
                 "livenessProbe": {"httpGet": {"path": "/a,b", "port": 7000}},
                 "readinessProbe": {"httpGet": {"path": "/x", "port": "7001"}}}
            ],
            "initContainers": [
                {"name": "agent", "restartPolicy": "Always",
                 "readinessProbe": {"httpGet": {"path": "/up", "port": 7100}}}
            ]
        });
        assert_eq!(
            routes(&spec),
            [
                "7001:/x",
                "7100:/up",
                "8080:/healthz",
                "8080:/ready?full=1",
                "9090:/"
            ]
        );
        assert!(routes(&json!({"containers": [{"name": "a"}]})).is_empty());
    }
}

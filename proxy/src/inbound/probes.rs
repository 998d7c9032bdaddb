//! Kubelet probes under strict mTLS. The kubelet probes an app's port from the node in
//! plaintext and has no mesh identity, so a strict port would refuse it and the pod would
//! never be ready. Injection hands the proxy the app's `httpGet` probes as `PORT:PATH`
//! (`BULWARK_INBOUND_PROBES`), and a plaintext GET or HEAD of exactly such a path on its
//! port is let through, in every mode and before authorization; any other plaintext request
//! on a strict port is answered 403. This is Linkerd's choice (probes are authorized), not
//! Istio's (probes rewritten to the sidecar): the pod spec keeps the app's own probes.

use std::collections::BTreeSet;

use crate::config::ProbeRoute;

/// The probe routes, looked up per request.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    routes: BTreeSet<(u16, String)>,
    ports: BTreeSet<u16>,
}

impl Probes {
    /// The routes the flags name.
    pub fn new(routes: &[ProbeRoute]) -> Self {
        Self {
            routes: routes.iter().map(|r| (r.port, r.path.clone())).collect(),
            ports: routes.iter().map(|r| r.port).collect(),
        }
    }

    /// Whether some probe targets `port` (so plaintext HTTP there is read, not closed).
    pub fn on_port(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }

    /// Whether a request of `method` for `target` (the path and query as sent) on `port` is
    /// a probe: GET or HEAD of a probe path, matched exactly.
    pub fn admits(&self, port: u16, method: &http::Method, target: &str) -> bool {
        (method == http::Method::GET || method == http::Method::HEAD)
            && self.on_port(port)
            && self.routes.contains(&(port, target.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_and_head_of_a_probe_path_on_its_port_is_a_probe() {
        let routes: Vec<ProbeRoute> = ["8080:/healthz", "8080:/ready?full=1", "9090:/"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let p = Probes::new(&routes);
        assert!(p.on_port(8080) && p.on_port(9090) && !p.on_port(8081));
        assert!(p.admits(8080, &http::Method::GET, "/healthz"));
        assert!(p.admits(8080, &http::Method::HEAD, "/healthz"));
        assert!(p.admits(8080, &http::Method::GET, "/ready?full=1"));
        assert!(p.admits(9090, &http::Method::GET, "/"));
        assert!(!p.admits(8080, &http::Method::POST, "/healthz"), "GET only");
        assert!(!p.admits(8080, &http::Method::GET, "/healthz/x"), "exact");
        assert!(
            !p.admits(8080, &http::Method::GET, "/healthz?x"),
            "query too"
        );
        assert!(!p.admits(8080, &http::Method::GET, "/ready"));
        assert!(
            !p.admits(9090, &http::Method::GET, "/healthz"),
            "its own port"
        );
        assert!(!Probes::default().admits(8080, &http::Method::GET, "/healthz"));
    }
}

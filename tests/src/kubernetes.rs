//! A recorded Kubernetes API in a pod: `tests/py/kube_api.py` serving the API objects kept
//! as JSON files in a directory (lists, watches, status patches, Leases), a kubeconfig
//! naming it, and `bulwark-control-plane serve --kubernetes` following it. API objects are
//! built with [`service`] and [`endpoint_slice`], or written whole with
//! [`RecordedApi::put`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::{Mesh, Pod, bin, py_script, python, wait_for};

/// See the module documentation.
#[derive(Debug)]
pub struct RecordedApi {
    /// The directory of objects, one JSON file each.
    pub dir: PathBuf,
    /// A kubeconfig naming the server.
    pub kubeconfig: PathBuf,
}

impl RecordedApi {
    /// Starts the server on 127.0.0.1:6443 in `pod`, over a fresh directory for `test`.
    pub fn start(mesh: &mut Mesh, pod: &Pod, test: &str) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("bulwark-kube-api-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut server = pod.cmd(python());
        server
            .arg(py_script("kube_api.py"))
            .arg("127.0.0.1:6443")
            .arg(&dir);
        mesh.spawn(pod, "api-server", server)?;
        mesh.wait_listening(pod, 6443)?;
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:6443'}}]\n\
             users: [{name: u, user: {token: control-plane}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
        )?;
        Ok(Self { dir, kubeconfig })
    }

    /// Writes one API object as the server keeps it: whole, then renamed, so it never reads
    /// half a file.
    pub fn put(&self, file: &str, obj: &Value) -> Result<()> {
        let tmp = self.dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(obj)?)?;
        std::fs::rename(&tmp, self.dir.join(format!("{file}.json")))?;
        Ok(())
    }

    /// The `.status` of the object in `file`, as the control plane wrote it.
    pub fn status_of(&self, file: &str) -> Result<Value> {
        let obj: Value =
            serde_json::from_slice(&std::fs::read(self.dir.join(format!("{file}.json")))?)?;
        Ok(obj["status"].clone())
    }

    /// Runs `serve --kubernetes` against the server in `pod` (JSON logs under the label
    /// `label`), with `extra` flags; returns once its admin port is ready on `admin`.
    pub fn start_control_plane(
        &self,
        mesh: &mut Mesh,
        pod: &Pod,
        label: &str,
        admin: &str,
        extra: &[&str],
    ) -> Result<u32> {
        let mut serve = pod.cmd(bin("bulwark-control-plane"));
        serve
            .args([
                "--log-format",
                "json",
                "serve",
                "--kubernetes=true",
                "--kubeconfig",
            ])
            .arg(&self.kubeconfig)
            .args(["--admin-addr", admin])
            .args(extra);
        let pid = mesh.spawn(pod, label, serve)?;
        let port = admin.rsplit(':').next().unwrap_or("5171");
        wait_for(
            "the control plane's first list",
            Duration::from_secs(15),
            || {
                Ok(pod.sh_ok(&format!(
                    "curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/ready || true"
                ))? == "200")
            },
        )
        .with_context(|| mesh.log_of(label))?;
        Ok(pid)
    }
}

impl Drop for RecordedApi {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A ClusterIP Service `ns/name` on `ip`, port 80 named `http` to the target port `http`.
pub fn service(ns: &str, name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ipFamilies": ["IPv4"], "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}
    })
}

/// The EndpointSlice `slice` of Service `ns/service`, port `http` on 8080, with
/// `(ip, ready, serving, terminating)` endpoints, each pod's UID `pod-uid-IP`.
pub fn endpoint_slice(
    ns: &str,
    service: &str,
    slice: &str,
    endpoints: &[(String, bool, bool, bool)],
) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": slice, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints.iter().map(|(ip, ready, serving, terminating)| json!({
            "addresses": [ip],
            "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
            "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{service}-{ip}"),
                          "uid": format!("pod-uid-{ip}")}
        })).collect::<Vec<_>>()
    })
}

/// `slice` with the endpoint at `ip` now another pod (UID `uid`) on the same address.
pub fn with_pod_uid(mut slice: Value, ip: &str, uid: &str) -> Value {
    if let Some(eps) = slice["endpoints"].as_array_mut() {
        for e in eps.iter_mut().filter(|e| e["addresses"][0] == ip) {
            e["targetRef"]["uid"] = json!(uid);
        }
    }
    slice
}

/// The endpoints `(ip, ready, serving, terminating)` of `pods`: those in `ready` ready,
/// those in `terminating` terminating but serving.
pub fn endpoints(
    pods: &[Pod],
    ready: &[usize],
    terminating: &[usize],
) -> Vec<(String, bool, bool, bool)> {
    let mut eps: Vec<(String, bool, bool, bool)> = ready
        .iter()
        .map(|&i| (pods[i].ip.to_string(), true, true, false))
        .collect();
    eps.extend(
        terminating
            .iter()
            .map(|&i| (pods[i].ip.to_string(), false, true, true)),
    );
    eps
}

/// A pod object for `pod`, named `name`, in `ns` with service account `sa`, running.
pub fn pod_object(ns: &str, name: &str, sa: &str, pod: &Pod) -> Value {
    let ip = pod.ip.to_string();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name.rsplit_once('-').map_or(name, |(a, _)| a)}},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    })
}

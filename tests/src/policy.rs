//! A mesh with policy: a control plane serving a directory of policy files, a client pod
//! whose proxy follows it, and replica pods running the test server on port 8080. The
//! policy is a [`Policy`] whose Backends may name the replicas by index.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::resources::Policy;
use crate::{Fault, Mesh, Pod, bin, wait_for};

/// The snapshot version the pod's proxy applied.
pub fn snapshot_version(pod: &Pod) -> Result<u64> {
    let (_, body) = pod.admin("/config_dump")?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    v["snapshot"]["version"]
        .as_u64()
        .context("config_dump has a snapshot version")
}

/// Starts `bulwark-control-plane serve` on `dir` in `pod` (polling every 100 ms), logging
/// JSON lines to the mesh's `control-plane` log.
pub fn start_control_plane(mesh: &mut Mesh, pod: &Pod, dir: &Path) -> Result<u32> {
    let mut cmd = pod.cmd(bin("bulwark-control-plane"));
    cmd.args([
        "--log-format",
        "json",
        "serve",
        "--poll-interval",
        "100ms",
        "--policy-dir",
    ])
    .arg(dir);
    let pid = mesh.spawn(pod, "control-plane", cmd)?;
    mesh.wait_listening(pod, 5170)?;
    Ok(pid)
}

/// A fresh policy directory for one test.
pub fn policy_dir(test: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bulwark-policy-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// See the module documentation.
#[derive(Debug)]
pub struct PolicyMesh {
    /// The pods and processes.
    pub mesh: Mesh,
    /// Control plane pod.
    pub cp: Pod,
    /// Client pod (workload `shop/client`), with a proxy.
    pub client: Pod,
    /// Upstream pods, test server on :8080.
    pub servers: Vec<Pod>,
    /// Server process IDs, by index.
    pub server_pids: Vec<u32>,
    /// The policy directory.
    pub dir: PathBuf,
}

/// What [`PolicyMesh::builder`] starts: see its methods.
#[derive(Debug)]
pub struct PolicyMeshBuilder {
    test: String,
    replicas: usize,
    faults: Vec<Fault>,
    banner: Option<String>,
    policy: Policy,
    proxy_flags: Vec<(String, OsString)>,
}

impl PolicyMeshBuilder {
    /// Runs `n` replicas, `s0` to `s{n-1}` (none by default).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Every replica starts with `fault` in force.
    pub fn replica_fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    /// Every replica also serves the banner service on `addr`.
    pub fn replica_banner(mut self, addr: &str) -> Self {
        self.banner = Some(addr.into());
        self
    }

    /// The policy the control plane starts with.
    pub fn policy(mut self, policy: impl Into<Policy>) -> Self {
        self.policy = policy.into();
        self
    }

    /// Adds `name value` to the client proxy's command line.
    pub fn proxy_flag(mut self, name: &str, value: impl AsRef<OsStr>) -> Self {
        self.proxy_flags.push((name.into(), value.as_ref().into()));
        self
    }

    /// Builds the mesh; returns once the client's proxy has applied the policy.
    pub fn start(self) -> Result<PolicyMesh> {
        let mut mesh = Mesh::new(&self.test)?;
        let cp = mesh.pod("cp")?;
        let client = mesh.pod("client")?;
        let mut servers = Vec::new();
        let mut server_pids = Vec::new();
        for i in 0..self.replicas {
            let name = format!("s{i}");
            let pod = mesh.pod(&name)?;
            let mut server = mesh.testserver(&pod).http("0.0.0.0:8080").name(&name);
            if let Some(addr) = &self.banner {
                server = server.banner(addr);
            }
            for f in &self.faults {
                server = server.fault(*f);
            }
            server_pids.push(server.start()?);
            servers.push(pod);
        }
        let mut pm = PolicyMesh {
            dir: policy_dir(&self.test)?,
            mesh,
            cp,
            client,
            servers,
            server_pids,
        };
        pm.write_policy(&self.policy)?;
        let cp = pm.cp.clone();
        start_control_plane(&mut pm.mesh, &cp, &pm.dir)?;
        let client = pm.client.clone();
        let mut proxy = pm
            .mesh
            .proxy(&client)
            // Bare host:port, as other address flags take it (control_plane.rs uses http://).
            .flag("--control-plane", format!("{}:5170", cp.ip))
            .flag("--workload", "shop/client")
            .flag("--pod-ips", client.ip.to_string());
        for (name, value) in &self.proxy_flags {
            proxy = proxy.flag(name, value);
        }
        proxy.start()?;
        Ok(pm)
    }
}

impl PolicyMesh {
    /// A mesh for the test `test`: say how many replicas, their faults and the policy, then
    /// [`PolicyMeshBuilder::start`] it.
    pub fn builder(test: &str) -> PolicyMeshBuilder {
        PolicyMeshBuilder {
            test: test.into(),
            replicas: 0,
            faults: Vec::new(),
            banner: None,
            policy: Policy::new(),
            proxy_flags: Vec::new(),
        }
    }

    fn write_policy(&self, policy: &Policy) -> Result<()> {
        let ips: Vec<_> = self.servers.iter().map(|p| p.ip).collect();
        std::fs::write(self.dir.join("policy.yaml"), policy.to_yaml(&ips)?)?;
        Ok(())
    }

    /// The address of upstream `i`.
    pub fn ep(&self, i: usize) -> String {
        format!("{}:8080", self.servers[i].ip)
    }

    /// Replaces the policy and waits until the client's proxy applied it.
    pub fn set_policy(&self, policy: impl Into<Policy>) -> Result<()> {
        let before = snapshot_version(&self.client)?;
        self.write_policy(&policy.into())?;
        wait_for(
            "the policy to reach the proxy",
            Duration::from_secs(10),
            || Ok(snapshot_version(&self.client)? > before),
        )
    }

    /// Sets a fault on replica `i` (`POST /_fault`, from its own pod, so no proxy sees it).
    pub fn fault(&self, i: usize, fault: Fault) -> Result<()> {
        self.servers[i].sh_ok(&format!(
            "curl -sf -m 5 -X POST 'http://127.0.0.1:8080/_fault?{fault}' >/dev/null"
        ))?;
        Ok(())
    }

    /// Requests upstream `i` received, by method (`"*"` for all).
    pub fn received(&self, i: usize, method: &str) -> Result<u64> {
        self.servers[i].served(method)
    }

    /// Requests every upstream received.
    pub fn received_all(&self) -> Result<Vec<u64>> {
        (0..self.servers.len())
            .map(|i| self.received(i, "*"))
            .collect()
    }

    /// The client proxy's `/outliers`.
    pub fn outliers(&self) -> Result<serde_json::Value> {
        let (_, body) = self.client.admin("/outliers")?;
        Ok(serde_json::from_str(&body)?)
    }

    /// One endpoint's entry in `/outliers`.
    pub fn outlier(&self, i: usize) -> Result<serde_json::Value> {
        let all = self.outliers()?;
        let ep = self.ep(i);
        all.as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["endpoints"].as_array().cloned().unwrap_or_default())
            .find(|e| e["address"] == ep.as_str())
            .with_context(|| format!("{ep} not in /outliers: {all}"))
    }

    /// Runs `h2load` from the client pod and returns (2xx, other responses, errored).
    pub fn h2load(&self, args: &str) -> Result<LoadResult> {
        let out = self.client.sh_ok(&format!("h2load {args}"))?;
        LoadResult::parse(&out).with_context(|| format!("h2load output: {out}"))
    }
}

impl Drop for PolicyMesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What an h2load run came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadResult {
    /// Requests sent.
    pub total: u64,
    /// 2xx responses.
    pub ok: u64,
    /// Responses that were not 2xx.
    pub non_2xx: u64,
    /// Requests that failed without a response.
    pub errored: u64,
}

impl LoadResult {
    /// Reads h2load's `requests:` and `status codes:` lines.
    pub fn parse(out: &str) -> Option<Self> {
        let num = |line: &str, after: &str| -> Option<u64> {
            let i = line.find(after)?;
            line[..i].split_whitespace().last()?.parse().ok()
        };
        let req = out.lines().find(|l| l.starts_with("requests:"))?;
        let codes = out.lines().find(|l| l.starts_with("status codes:"))?;
        let ok = num(codes, " 2xx")?;
        let total = num(req, " total")?;
        let errored = num(req, " errored")?;
        let (x3, x4, x5) = (
            num(codes, " 3xx")?,
            num(codes, " 4xx")?,
            num(codes, " 5xx")?,
        );
        Some(Self {
            total,
            ok,
            non_2xx: x3 + x4 + x5,
            errored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2load_summary_is_read() {
        let out = "finished in 1.2s, 100 req/s\nrequests: 1000 total, 1000 started, 1000 done, 990 succeeded, 10 failed, 3 errored, 0 timeout\nstatus codes: 990 2xx, 0 3xx, 0 4xx, 7 5xx\n";
        assert_eq!(
            LoadResult::parse(out),
            Some(LoadResult {
                total: 1000,
                ok: 990,
                non_2xx: 7,
                errored: 3
            })
        );
    }
}

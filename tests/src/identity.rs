//! A mesh with identity: a control plane that is its certificate authority (a local root
//! and issuer made in a state directory), bootstrap tokens made with `bulwarkctl`, and
//! proxies that obtain their certificates with them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{Mesh, Pod, ProxyStart, bin, check};

/// The control plane's state directory: its root, issuer and token key.
#[derive(Debug)]
pub struct MeshCa {
    /// The directory.
    pub dir: PathBuf,
}

impl MeshCa {
    /// A fresh, empty state directory for `test`.
    pub fn new(test: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("bulwark-ca-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Starts the control plane in `pod` on the policy in `policy`, issuing certificates of
    /// `lifetime` (e.g. `"1h"`), with `extra` arguments; returns its PID.
    pub fn start_control_plane(
        &self,
        mesh: &mut Mesh,
        pod: &Pod,
        policy: &Path,
        lifetime: &str,
        extra: &[&str],
    ) -> Result<u32> {
        let mut cmd = pod.cmd(bin("bulwark-control-plane"));
        cmd.args(["--log-format", "json", "serve", "--poll-interval", "100ms"])
            .arg("--policy-dir")
            .arg(policy)
            .arg("--state-dir")
            .arg(&self.dir)
            .args(["--cert-lifetime", lifetime])
            .args(extra);
        let pid = mesh.spawn(pod, "control-plane", cmd)?;
        mesh.wait_listening(pod, 5170)?;
        Ok(pid)
    }

    /// A policy directory inside the state directory (so it goes with it) holding the
    /// example MeshConfig.
    pub fn policy_dir(&self) -> Result<PathBuf> {
        let dir = self.dir.join("policy");
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(
            crate::workspace_root().join("control-plane/examples/policy/mesh.yaml"),
            dir.join("mesh.yaml"),
        )?;
        Ok(dir)
    }

    /// The trust anchors the control plane made.
    pub fn anchors(&self) -> PathBuf {
        self.dir.join("trust-anchors.pem")
    }

    /// A token file granting `namespace`/`service_account`, readable by the proxy's UID.
    pub fn token(&self, namespace: &str, service_account: &str) -> Result<PathBuf> {
        let out = check(
            std::process::Command::new(bin("bulwarkctl"))
                .args(["token", "create", "--namespace", namespace])
                .args(["--service-account", service_account, "--key"])
                .arg(self.dir.join("token.key")),
        )?;
        let path = self
            .dir
            .join(format!("{namespace}-{service_account}.token"));
        std::fs::write(&path, out.trim()).context("writing the token")?;
        Ok(path)
    }
}

impl Drop for MeshCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes a root and an issuer under it with openssl in `dir`: `root.pem`, `issuer.pem`,
/// `issuer.key` (PKCS#8), as an operator would with their own tooling.
pub fn openssl_ca(dir: &std::path::Path, name: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let script = format!(
        "set -e; cd {d}
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out root.key 2>/dev/null
openssl req -x509 -new -key root.key -subj '/CN={name} root' -days 30 \
  -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' -out root.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out issuer.key 2>/dev/null
openssl req -new -key issuer.key -subj '/CN={name} issuer' -out issuer.csr
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\\nkeyUsage=critical,keyCertSign,cRLSign\\n' > ext.cnf
openssl x509 -req -in issuer.csr -CA root.pem -CAkey root.key -CAcreateserial -days 30 -extfile ext.cnf -out issuer.pem 2>/dev/null
chmod 644 root.pem issuer.pem",
        d = dir.display()
    );
    crate::check(std::process::Command::new("sh").args(["-c", &script]))?;
    Ok(())
}

/// Waits until `pod`'s proxy has a snapshot naming `peer` as a meshed workload (so its
/// connections there are mesh TLS).
pub fn wait_meshed(pod: &Pod, peer: &Pod) -> Result<()> {
    let ip = peer.ip.to_string();
    crate::wait_for(
        &format!("{} to know {} is meshed", pod.ns, peer.ns),
        std::time::Duration::from_secs(10),
        || {
            let (_, dump) = pod.admin("/config_dump")?;
            let dump: serde_json::Value = serde_json::from_str(&dump)?;
            Ok(dump["snapshot"]["meshed"][&ip].is_string())
        },
    )
}

/// Flags that make `proxy` the meshed workload `namespace/name` with service account `sa`,
/// following the control plane in `cp`, trusting `anchors` and proving its identity with
/// `token`.
pub fn meshed<'m>(
    proxy: ProxyStart<'m>,
    pod: &Pod,
    cp: &Pod,
    anchors: &Path,
    (workload, sa): (&str, &str),
    token: &Path,
) -> ProxyStart<'m> {
    proxy
        .flag("--control-plane", format!("{}:5170", cp.ip))
        .flag("--workload", workload)
        .flag("--service-account", sa)
        .flag("--pod-ips", pod.ip.to_string())
        .flag("--trust-anchors", anchors)
        .flag("--identity-token-file", token)
}

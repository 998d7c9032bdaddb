//! The chart, checked by real Kubernetes tooling: its CRDs and the example policy against
//! them; lint, render and Pod Security with Helm's own SDK and Kubernetes' schemas; and the
//! control plane run exactly as the rendered Deployment says.

use std::time::Duration;

use anyhow::{Context, Result};
use bulwark_tests::identity::{MeshCa, openssl_ca};
use bulwark_tests::{Mesh, bin, py_script, python, workspace_root};

#[test]
fn crds_pass_kubernetes_validation_and_examples_conform() {
    let root = workspace_root();
    let out = std::process::Command::new(python())
        .arg(py_script("check_crds.py"))
        .arg(root.join("charts/bulwark/crds"))
        .arg(root.join("control-plane/examples/policy"))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("crd ok:").count(), 4, "{stdout}");
    assert!(stdout.contains("examples ok: 6 documents"), "{stdout}");
    assert!(stdout.contains("broken example rejected"), "{stdout}");
    assert_eq!(
        stdout.matches("out of range rejected").count(),
        2,
        "{stdout}"
    );
    // The cross-field checks, as CEL rules: each one seen to refuse its broken copy.
    assert!(
        stdout.contains("cel rules hold for the examples"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("cel rule refused").count(), 7, "{stdout}");
}

/// The container of the rendered control-plane Deployment.
fn control_plane(docs: &[serde_json::Value]) -> Result<(&serde_json::Value, &serde_json::Value)> {
    let d = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "bulwark-control-plane")
        .context("no control-plane Deployment rendered")?;
    let pod = &d["spec"]["template"]["spec"];
    Ok((pod, &pod["containers"][0]))
}

#[test]
fn the_chart_lints_renders_valid_restricted_manifests_and_what_it_says_runs() -> Result<()> {
    let root = workspace_root();
    let rendered = std::env::temp_dir().join(format!("bulwark-chart-{}.json", std::process::id()));
    let out = std::process::Command::new(python())
        .arg(py_script("check_chart.py"))
        .arg(root.join("charts/bulwark"))
        .arg("--emit")
        .arg(&rendered)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("lint ok"), "{stdout}");
    assert_eq!(stdout.matches("render ok:").count(), 7, "{stdout}");
    assert_eq!(
        stdout.matches("verifies against the caBundle").count(),
        4,
        "{stdout}"
    );
    assert_eq!(stdout.matches("bad values refused").count(), 5, "{stdout}");
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&rendered)?)?;
    let _ = std::fs::remove_file(&rendered);

    // Run the control plane the way the Deployment says: its args, its user, no
    // capabilities, the ConfigMap's files and a Secret's (made with openssl) where its
    // volumes mount them, and its readiness probe.
    let (pod_spec, container) = control_plane(&docs)?;
    let mut mesh = Mesh::new("chart-run")?;
    let cp = mesh.pod("cp")?;
    let ca = MeshCa::new("chart-run")?;
    let mounts: Vec<(String, String)> = container["volumeMounts"]
        .as_array()
        .context("volumeMounts")?
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["mountPath"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let uid = pod_spec["securityContext"]["runAsUser"]
        .as_u64()
        .context("runAsUser")?;
    let gid = pod_spec["securityContext"]["runAsGroup"]
        .as_u64()
        .context("runAsGroup")?;
    let mut local = Vec::new();
    for (name, path) in &mounts {
        let dir = ca.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        match name.as_str() {
            "policy" | "injection" => {
                let cm = rendered_volume(&docs, pod_spec, name, "configMap")?;
                for (file, text) in cm["data"].as_object().context("ConfigMap data")? {
                    std::fs::write(dir.join(file), text.as_str().unwrap_or(""))?;
                }
            }
            "webhook-tls" => {
                use base64::Engine as _;
                let secret = rendered_volume(&docs, pod_spec, name, "secret")?;
                for (file, b64) in secret["data"].as_object().context("Secret data")? {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64.as_str().unwrap_or(""))?;
                    std::fs::write(dir.join(file), bytes)?;
                }
            }
            "identity" => {
                openssl_ca(&dir, "chart")?;
                std::fs::copy(dir.join("root.pem"), dir.join("trust-anchors.pem"))?;
            }
            other => anyhow::bail!("a volume this test does not know: {other}"),
        }
        // The Secret's mode (0440) and fsGroup: readable by the pod's group only.
        cp.sh_ok(&format!(
            "chgrp -R {gid} {d} && chmod 750 {d} && chmod 440 {d}/*",
            d = dir.display()
        ))?;
        local.push((path.clone(), dir));
    }
    std::fs::set_permissions(&ca.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let args: Vec<String> = container["args"]
        .as_array()
        .context("args")?
        .iter()
        .map(|a| {
            let mut a = a.as_str().unwrap_or("").to_string();
            for (path, dir) in &local {
                a = a.replace(path.as_str(), &dir.display().to_string());
            }
            a
        })
        .collect();
    let mut cmd = cp.restricted(uid, gid, bin("bulwark-control-plane"));
    cmd.args(&args);
    // With TokenReview on, the kubelet gives the pod its service-account token and the API
    // server's address; a kubeconfig naming an address in the pod where nothing listens
    // stands for them (no review is made here: the client connects on first use).
    assert_eq!(pod_spec["automountServiceAccountToken"], true);
    assert!(args.iter().any(|a| a == "--token-review=true"), "{args:?}");
    let kubeconfig = ca.dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:6443'}}]\n\
         users: [{name: u, user: {token: placeholder}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )?;
    cmd.env("KUBECONFIG", &kubeconfig);
    mesh.spawn(&cp, "control-plane", cmd)?;
    let probe = &container["readinessProbe"]["httpGet"];
    let port = container["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == probe["port"]))
        .and_then(|p| p["containerPort"].as_u64())
        .context("the readiness probe's port")?;
    let url = format!(
        "http://127.0.0.1:{port}{}",
        probe["path"].as_str().unwrap_or("/")
    );
    cp.wait_probe(&url, Duration::from_secs(10))
        .with_context(|| mesh.log_of("control-plane"))?;

    // It serves TLS as the identity its namespace gives it.
    let anchors = ca.dir.join("identity/trust-anchors.pem");
    let status = cp.sh_ok(&format!(
        "{} status --control-plane 127.0.0.1:5170 --trust-anchors {} --control-plane-namespace bulwark",
        bin("bulwarkctl").display(),
        anchors.display()
    ))?;
    assert!(
        status.contains("policy: version 1") && status.contains("proxies: 0"),
        "{status}"
    );

    // The webhooks, as the API server calls them: through the Service's name, checked
    // against the caBundle the chart wrote, with the golden AdmissionReviews.
    let hook = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .context("no MutatingWebhookConfiguration")?;
    let svc = &hook["webhooks"][0]["clientConfig"]["service"];
    let host = format!(
        "{}.{}.svc",
        svc["name"].as_str().unwrap_or(""),
        svc["namespace"].as_str().unwrap_or("")
    );
    let bundle = {
        use base64::Engine as _;
        let b64 = hook["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .context("caBundle")?;
        let path = ca.dir.join("ca-bundle.pem");
        std::fs::write(
            &path,
            base64::engine::general_purpose::STANDARD.decode(b64)?,
        )?;
        path
    };
    let port = container["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "webhook"))
        .and_then(|p| p["containerPort"].as_u64())
        .context("the webhook port")?;
    let bless = if std::env::var_os("BULWARK_BLESS").is_some() {
        " --bless"
    } else {
        ""
    };
    let golden = cp.sh(&format!(
        "{} {} {} {host} {port} {}{bless}",
        python().display(),
        py_script("admission.py").display(),
        root.join("tests/golden/admission").display(),
        bundle.display()
    ))?;
    let out = String::from_utf8_lossy(&golden.stdout);
    anyhow::ensure!(
        golden.status.success(),
        "{out}{}\n{}",
        String::from_utf8_lossy(&golden.stderr),
        mesh.log_of("control-plane")
    );
    assert_eq!(out.matches("golden ok:").count(), 7, "{out}");
    assert_eq!(out.matches("re-injection a no-op").count(), 2, "{out}");
    let metrics = cp.sh_ok(&format!("curl -sS http://127.0.0.1:{}/metrics", 5171))?;
    for line in [
        r#"bulwark_cp_webhook_reviews_total{webhook="inject",outcome="injected"} 2"#,
        r#"bulwark_cp_webhook_reviews_total{webhook="inject",outcome="denied"} 1"#,
        r#"bulwark_cp_webhook_reviews_total{webhook="validate",outcome="denied"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    Ok(())
}

/// The ConfigMap or Secret (`source`) the pod's volume `name` refers to, from the render.
fn rendered_volume<'a>(
    docs: &'a [serde_json::Value],
    pod_spec: &serde_json::Value,
    name: &str,
    source: &str,
) -> Result<&'a serde_json::Value> {
    let volume = pod_spec["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
        .with_context(|| format!("no volume {name}"))?;
    let (kind, key) = if source == "secret" {
        ("Secret", "secretName")
    } else {
        ("ConfigMap", "name")
    };
    let wanted = volume[source][key].as_str().unwrap_or("");
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == wanted)
        .with_context(|| format!("volume {name}: no {kind} {wanted} rendered"))
}

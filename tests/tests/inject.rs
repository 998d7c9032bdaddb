//! The injected pod, executed: `bulwarkctl inject` adds the sidecar to a Deployment, the
//! result validates against the Kubernetes schemas, and the init container's and the
//! sidecar's own commands, environment (the downward API filled in as the kubelet would)
//! and security settings run in a network-namespace pod beside the app: the rules are
//! proven, the proxy proves its identity with the pod's projected service-account token
//! (reviewed by an API server's TokenReview endpoint) and becomes ready with no capability,
//! the app's traffic goes through it, and on a strict mesh the kubelet's plaintext probe of
//! the app still gets through.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use bulwark_tests::identity::MeshCa;
use bulwark_tests::{Mesh, Pod, bin, py_script, python, wait_for};
use serde_json::Value;

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout
  namespace: shop
spec:
  selector:
    matchLabels: {app: checkout}
  template:
    metadata:
      labels: {app: checkout}
    spec:
      serviceAccountName: checkout
      containers:
        - name: checkout
          image: checkout:1
          ports:
            - {name: http, containerPort: 8080}
          readinessProbe:
            httpGet: {path: /healthz, port: http}
";

/// The environment the kubelet would give `container` in `pod`: plain values, downward-API
/// fields, and `$(VAR)` references to earlier variables expanded.
fn environment(container: &Value, pod: &Pod) -> Result<BTreeMap<String, String>> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().context("env name")?.to_string();
        let value = if let Some(v) = e["value"].as_str() {
            let mut v = v.to_string();
            for (k, known) in &env {
                v = v.replace(&format!("$({k})"), known);
            }
            v
        } else {
            match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.namespace") => "shop".to_string(),
                Some("metadata.name") => "checkout-7d9f8c6b5d-x2x9k".into(),
                Some("spec.serviceAccountName") => "checkout".into(),
                Some("status.podIP") | Some("status.podIPs") => pod.ip.to_string(),
                other => anyhow::bail!("a downward-API field this test does not fill: {other:?}"),
            }
        };
        env.insert(name, value);
    }
    Ok(env)
}

#[test]
fn an_injected_pods_own_commands_run_capability_free_and_intercept() -> Result<()> {
    let mut mesh = Mesh::new("inject")?;
    let (cp, app, server) = (mesh.pod("cp")?, mesh.pod("app")?, mesh.pod("server")?);
    let ca = MeshCa::new("inject")?;
    let policy = ca.policy_dir()?;
    // Strict: nothing but mesh TLS reaches the app, except its probes.
    let mesh_yaml = policy.join("mesh.yaml");
    let strict = std::fs::read_to_string(&mesh_yaml)? + "  mtls:\n    mode: strict\n";
    std::fs::write(&mesh_yaml, strict)?;
    // The API server's TokenReview endpoint knows the token the kubelet will project into
    // the pod for the mesh's audience.
    let projected = format!(
        "eyJhbGciOiJSUzI1NiJ9.projected-for-checkout.{}",
        std::process::id()
    );
    let tokens = ca.dir.join("tokens");
    std::fs::write(&tokens, format!("{projected} shop checkout bulwark.dev\n"))?;
    let mut api = cp.cmd(python());
    api.arg(py_script("token_review_api.py"))
        .arg("127.0.0.1:6443")
        .arg(&tokens);
    mesh.spawn(&cp, "api-server", api)?;
    mesh.wait_listening(&cp, 6443)?;
    let kubeconfig = ca.dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:6443'}}]\n\
         users: [{name: u, user: {token: control-plane}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )?;
    let kubeconfig = kubeconfig.display().to_string();
    ca.start_control_plane(
        &mut mesh,
        &cp,
        &policy,
        "1h",
        &["--token-review=true", "--kubeconfig", &kubeconfig],
    )?;
    mesh.testserver(&server).http("0.0.0.0:8080").start()?;
    mesh.testserver(&app)
        .http("0.0.0.0:8080")
        .name("checkout")
        .start()?;

    // Inject, as an operator would before kubectl apply.
    let input = ca.dir.join("deployment.yaml");
    std::fs::write(&input, DEPLOYMENT)?;
    let out = std::process::Command::new(bin("bulwarkctl"))
        .arg("inject")
        .arg(&input)
        .args(["--control-plane", &format!("{}:5170", cp.ip)])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("injected 1 pod templates"));
    let injected = ca.dir.join("injected.yaml");
    std::fs::write(&injected, &out.stdout)?;
    let checked = std::process::Command::new(python())
        .arg(py_script("validate_manifests.py"))
        .arg(&injected)
        .output()?;
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("manifests ok: 1 documents"),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // Injecting the result again is a no-op.
    let again = std::process::Command::new(bin("bulwarkctl"))
        .arg("inject")
        .arg(&injected)
        .output()?;
    assert_eq!(again.stdout, out.stdout);
    let doc: Value = serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout))?;
    let spec = &doc["spec"]["template"]["spec"];
    let (init, proxy) = (&spec["initContainers"][0], &spec["initContainers"][1]);
    let env = environment(proxy, &app)?;
    assert_eq!(
        env.get("BULWARK_INBOUND_PROBES").map(String::as_str),
        Some("8080:/healthz"),
        "the app's readiness probe, its named port resolved"
    );

    // The trust anchors ConfigMap and the projected token, where the sidecar's volumes
    // mount them.
    let mount = |i: usize| {
        proxy["volumeMounts"][i]["mountPath"]
            .as_str()
            .context("mount")
            .map(String::from)
    };
    let (anchors_mount, token_mount) = (mount(0)?, mount(1)?);
    let anchors_dir = ca.dir.join("anchors");
    std::fs::create_dir_all(&anchors_dir)?;
    std::fs::copy(ca.anchors(), anchors_dir.join("trust-anchors.pem"))?;
    let token_dir = ca.dir.join("projected");
    std::fs::create_dir_all(&token_dir)?;
    std::fs::write(token_dir.join("token"), &projected)?;
    std::fs::set_permissions(
        token_dir.join("token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    let local = |v: &str| {
        v.replace(&anchors_mount, &anchors_dir.display().to_string())
            .replace(&token_mount, &token_dir.display().to_string())
    };

    // The init container: root, NET_ADMIN and NET_RAW only.
    let caps = init["securityContext"]["capabilities"]["add"]
        .as_array()
        .context("init capabilities")?
        .iter()
        .map(|c| format!("+{}", c.as_str().unwrap_or("").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",");
    let mut c = app.cmd("setpriv");
    c.args([
        "--bounding-set",
        &format!("-all,{caps}"),
        "--inh-caps",
        &format!("-all,{caps}"),
    ])
    .arg(bin("bulwark-proxy"))
    .args(
        init["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    )
    .envs(environment(init, &app)?);
    let ran = c.output()?;
    let said = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(said.contains("redirection verified"), "{said}");

    // The sidecar: its UID and group, nothing else.
    let sc = &proxy["securityContext"];
    let uid = sc["runAsUser"].as_u64().context("runAsUser")?;
    let gid = sc["runAsGroup"].as_u64().context("runAsGroup")?;
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    let mut c = app.restricted_read_only(uid, gid, bin("bulwark-proxy"));
    c.args(
        proxy["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    )
    .envs(env.into_iter().map(|(k, v)| (k, local(&v))));
    let sidecar = mesh.spawn(&app, "sidecar", c)?;
    let probe = &proxy["startupProbe"]["httpGet"];
    let url = format!(
        "http://127.0.0.1:{}{}",
        probe["port"],
        probe["path"].as_str().unwrap_or("/")
    );
    app.wait_probe(&url, Duration::from_secs(15))
        .with_context(|| mesh.log_of("sidecar"))?;
    // It runs on a read-only root, writing nothing.
    let mountinfo = std::fs::read_to_string(format!("/proc/{sidecar}/mountinfo"))?;
    let root = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .context("the root mount")?;
    assert!(
        root.split(' ')
            .nth(5)
            .is_some_and(|o| o.split(',').any(|f| f == "ro")),
        "{root}"
    );
    let status = std::fs::read_to_string(format!("/proc/{sidecar}/status"))?;
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    // Ready means it holds its identity: the one the API server said the token is.
    let (_, identity) = app.admin("/identity")?;
    assert!(
        identity.contains("spiffe://cluster.local/ns/shop/sa/checkout"),
        "{identity}"
    );
    let reviews = mesh.log_of("api-server");
    assert!(
        reviews.contains("\"audiences\": [\"bulwark.dev\"]")
            && reviews.contains("\"authenticated\": true"),
        "{reviews}"
    );

    // The app's traffic goes through it, and the control plane lists it by the workload
    // the downward API named.
    app.sh_ok(&format!("curl -sf -o /dev/null http://{}:8080/", server.ip))?;
    assert_eq!(
        app.requests("outbound", &format!("{}:8080", server.ip), "2xx")?,
        Some(1.0)
    );
    let status = cp.sh_ok(&format!(
        "{} status --control-plane 127.0.0.1:5170 --trust-anchors {}",
        bin("bulwarkctl").display(),
        ca.anchors().display()
    ))?;
    assert!(status.contains("shop/checkout"), "{status}");
    assert!(
        status.contains("pod checkout-7d9f8c6b5d-x2x9k"),
        "the pod's name, from the downward API: {status}"
    );

    // The kubelet probes from outside the mesh in plaintext: its GET of the probe path
    // reaches the app; any other plaintext request is refused, and so is a POST there.
    let from_node = |args: &str| {
        server.sh_ok(&format!(
            "curl -sS -m 5 -o /dev/null -w '%{{http_code}}' {args} http://{}:8080/healthz",
            app.ip
        ))
    };
    wait_for("the strict policy", Duration::from_secs(10), || {
        Ok(server.sh_ok(&format!(
            "curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://{}:8080/",
            app.ip
        ))? == "403")
    })?;
    assert_eq!(from_node("")?, "200");
    assert_eq!(from_node("-X POST")?, "403");
    assert_eq!(
        app.served("*")?,
        1,
        "the probe, and nothing else, reached the app"
    );
    Ok(())
}

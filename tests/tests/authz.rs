//! Authorization between meshed pods: the server's inbound proxy lets the identities its
//! AuthorizationPolicies name through and refuses others with 403 (HTTP), PERMISSION_DENIED
//! (grpcio) or a closed connection (opaque), a deny policy winning over an allow; every
//! denial is counted by policy and reason and explained on `/authz`.

use anyhow::Result;
use bulwark_tests::identity::{MeshCa, meshed, wait_meshed};
use bulwark_tests::{Mesh, Pod, py_command, py_script, python};

const CHECKOUT: &str = "spiffe://cluster.local/ns/shop/sa/checkout";
const ADS: &str = "spiffe://cluster.local/ns/ads/sa/ads";

const POLICY: &str = "\
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-callers, namespace: shop}
spec:
  target: {workload: web}
  ports: [8080, 50051, 6379]
  from:
    - identity: spiffe://cluster.local/ns/shop/sa/checkout
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-admin, namespace: shop}
spec:
  target: {workload: web}
  action: deny
  ports: [8080]
  http:
    - pathPrefix: /admin
  from:
    - identity: spiffe://cluster.local/ns/shop/*
";

/// Status and `x-bulwark-error` of a GET from `pod`.
fn get(pod: &Pod, url: &str) -> Result<(String, String)> {
    let out = pod.sh_ok(&format!(
        "curl -sS -m 5 -o /dev/null -D - -w '%{{http_code}}' {url}"
    ))?;
    let status = out.lines().last().unwrap_or_default().to_string();
    let reason = out
        .lines()
        .find_map(|l| l.strip_prefix("x-bulwark-error: "))
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok((status, reason))
}

#[test]
fn only_the_identities_a_policy_names_get_through_and_each_denial_is_explained() -> Result<()> {
    let mut mesh = Mesh::new("authz")?;
    let cp = mesh.pod("cp")?;
    let (server, checkout, ads) = (mesh.pod("server")?, mesh.pod("checkout")?, mesh.pod("ads")?);
    let ca = MeshCa::new("authz")?;
    let policy = ca.policy_dir()?;
    std::fs::write(policy.join("authz.yaml"), POLICY)?;
    ca.start_control_plane(&mut mesh, &cp, &policy, "1h", &[])?;

    mesh.testserver(&server)
        .http("0.0.0.0:8080")
        .banner("0.0.0.0:6379")
        .name("web")
        .start()?;
    let mut grpc = server.cmd(python());
    grpc.arg(py_script("grpc_check.py"))
        .args(["server", "50051"]);
    mesh.spawn(&server, "grpc-server", grpc)?;
    mesh.wait_listening(&server, 50051)?;
    let anchors = ca.anchors();
    for (pod, ns, sa) in [
        (&server, "shop", "web"),
        (&checkout, "shop", "checkout"),
        (&ads, "ads", "ads"),
    ] {
        let token = ca.token(ns, sa)?;
        let p = mesh.proxy(pod);
        meshed(p, pod, &cp, &anchors, (&format!("{ns}/{sa}"), sa), &token).start()?;
    }
    for pod in [&checkout, &ads] {
        wait_meshed(pod, &server)?;
    }
    let url = format!("http://{}:8080", server.ip);

    // HTTP: checkout is named, ads is not; /admin is denied even to checkout.
    assert_eq!(
        get(&checkout, &format!("{url}/"))?,
        ("200".into(), String::new())
    );
    assert_eq!(
        get(&checkout, &format!("{url}/admin/users"))?,
        ("403".into(), "unauthorized".into())
    );
    assert_eq!(
        get(&ads, &format!("{url}/"))?,
        ("403".into(), "unauthorized".into())
    );

    // gRPC with grpcio: PERMISSION_DENIED for ads, every call through for checkout.
    let target = format!("{}:50051", server.ip);
    let out = ads.sh_ok(&py_command("grpc_check.py", &format!("denied {target}")))?;
    assert!(out.contains("grpc denied ok"), "{out}");
    let out = checkout.sh_ok(&py_command("grpc_check.py", &format!("client {target}")))?;
    assert!(out.contains("grpc ok"), "{out}");

    // Opaque: ads's connection is closed before the banner, checkout's gets it.
    let probe = format!("banner {} 6379 1", server.ip);
    assert!(checkout.sh_ok(&py_command("tcp_probe.py", &probe)).is_ok());
    let refused = ads.sh(&py_command("tcp_probe.py", &probe))?;
    assert!(!refused.status.success(), "ads got the banner");

    // Counted by policy and reason.
    let denied = |policy: &str, reason: &str| {
        server
            .metric(&format!(
                "bulwark_authz_denied_total{{policy=\"{policy}\",reason=\"{reason}\"}}"
            ))
            .map(|v| v.unwrap_or(0.0))
    };
    assert_eq!(denied("shop/web-admin", "deny_rule")?, 1.0);
    assert!(denied("default", "no_allow_matched")? >= 3.0);

    // Explained: who, which port and route, which policy and rule.
    let (_, body) = server.admin("/authz")?;
    let authz: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(authz["workload"], "shop/web", "{authz}");
    let recent = authz["recent"].as_array().cloned().unwrap_or_default();
    let find = |client: &str, route: Option<&str>| {
        recent.iter().find(|e| {
            e["client"] == client && e["route"].as_str() == route && e["allowed"] == false
        })
    };
    let admin = find(CHECKOUT, Some("GET /admin/users")).expect("the /admin denial");
    assert_eq!(admin["policy"], "shop/web-admin", "{admin}");
    assert_eq!(admin["reason"], "deny_rule", "{admin}");
    assert_eq!(
        admin["rule"], "from[0] identity spiffe://cluster.local/ns/shop/*",
        "{admin}"
    );
    assert_eq!(admin["port"], 8080, "{admin}");
    let http = find(ADS, Some("GET /")).expect("ads's HTTP denial");
    assert_eq!(http["reason"], "no_allow_matched", "{http}");
    assert!(find(ADS, None).is_some(), "ads's opaque denial: {authz}");
    assert!(
        recent.iter().any(|e| e["client"] == CHECKOUT
            && e["allowed"] == true
            && e["policy"] == "shop/web-callers"),
        "{authz}"
    );
    let log = mesh.log_of(&format!("proxy-{}", server.ns));
    assert!(
        log.contains("denied by authorization") && log.contains(ADS),
        "{log}"
    );
    Ok(())
}

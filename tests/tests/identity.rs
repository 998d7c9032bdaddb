//! Mesh identity in network-namespace pods: the control plane issues each proxy the
//! certificate its token grants and nothing else, over a TLS channel the proxy verifies;
//! renewals ride on the certificate in force; a proxy that loses the control plane keeps
//! its certificate until expiry and says so.

use std::time::Duration;

use anyhow::{Context, Result};
use bulwark_tests::identity::{MeshCa, meshed};
use bulwark_tests::{Mesh, Pod, bin, wait_for};

fn identity(pod: &Pod) -> Result<serde_json::Value> {
    let (code, body) = pod.admin("/identity")?;
    anyhow::ensure!(code == 200, "/identity answered {code}: {body}");
    Ok(serde_json::from_str(&body)?)
}

fn cp_metric(cp: &Pod, series: &str) -> Result<f64> {
    let text = cp.sh_ok("curl -sf -m 5 http://127.0.0.1:5171/metrics")?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("{series} not in the control plane's metrics:\n{text}"))
}

#[test]
fn a_proxy_gets_the_identity_its_token_grants_over_a_verified_channel() -> Result<()> {
    let mut mesh = Mesh::new("id-issue")?;
    let (cp, a) = (mesh.pod("cp")?, mesh.pod("a")?);
    let ca = MeshCa::new("id-issue")?;
    let policy = ca.policy_dir()?;
    ca.start_control_plane(&mut mesh, &cp, &policy, "1h", &[])?;
    let token = ca.token("shop", "web")?;
    let proxy = mesh.proxy(&a);
    meshed(proxy, &a, &cp, &ca.anchors(), ("shop/web", "web"), &token).start()?;

    let id = identity(&a)?;
    assert_eq!(
        id["spiffe_id"], "spiffe://cluster.local/ns/shop/sa/web",
        "{id}"
    );
    assert_eq!(id["state"], "valid", "{id}");
    let left = id["expires_in_seconds"].as_i64().context("expiry")?;
    assert!((3500..=3600).contains(&left), "{id}");
    let (_, ready) = a.admin("/ready")?;
    assert!(ready.contains("\"awaiting_identity\": false"), "{ready}");
    let expiry = a
        .metric("bulwark_identity_cert_expiration_timestamp_seconds")?
        .context("expiry gauge")?;
    assert_eq!(
        expiry as i64,
        id["certificate"]["not_after"].as_i64().unwrap_or(0)
    );

    // The control plane's own certificate, as openssl sees it: it chains to the anchors and
    // names the control plane's SPIFFE ID.
    let anchors = ca.anchors();
    // s_client's own exit status depends on how the server ends a session that carried no
    // data; what it printed is the evidence.
    let shown = a.sh(&format!(
        "echo | openssl s_client -connect {}:5170 -alpn h2 -CAfile {} -showcerts 2>&1",
        cp.ip,
        anchors.display()
    ))?;
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("Verify return code: 0 (ok)"), "{shown}");
    let san = a.sh_ok(&format!(
        "echo | openssl s_client -connect {}:5170 -alpn h2 2>/dev/null | openssl x509 -noout -ext subjectAltName",
        cp.ip
    ))?;
    assert!(
        san.contains("URI:spiffe://cluster.local/ns/bulwark/sa/bulwark-control-plane"),
        "{san}"
    );

    // bulwarkctl shows who is connected, over the same verified TLS.
    let status = cp.sh_ok(&format!(
        "{} status --control-plane 127.0.0.1:5170 --trust-anchors {}",
        bin("bulwarkctl").display(),
        anchors.display()
    ))?;
    assert!(
        status.contains("identity spiffe://cluster.local/ns/shop/sa/web (certificate expires in"),
        "{status}"
    );
    let versions = cp.sh_ok(&format!(
        "{} version --control-plane 127.0.0.1:5170 --trust-anchors {}",
        bin("bulwarkctl").display(),
        anchors.display()
    ))?;
    let v = env!("CARGO_PKG_VERSION");
    assert!(
        versions.contains(&format!("bulwarkctl {v}"))
            && versions.contains(&format!("control plane {v} at http://127.0.0.1:5170")),
        "{versions}"
    );
    let plain = cp.sh(&format!(
        "{} status --control-plane 127.0.0.1:5170",
        bin("bulwarkctl").display()
    ))?;
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !plain.status.success() && err.contains("--trust-anchors"),
        "{err}"
    );
    assert_eq!(cp_metric(&cp, "bulwark_cp_certificates_issued_total")?, 1.0);

    // The snapshot names the meshed workloads: this one, by its pod IP.
    let (_, dump) = a.admin("/config_dump")?;
    let dump: serde_json::Value = serde_json::from_str(&dump)?;
    assert_eq!(
        dump["snapshot"]["meshed"][a.ip.to_string()],
        "spiffe://cluster.local/ns/shop/sa/web",
        "{}",
        dump["snapshot"]
    );
    Ok(())
}

#[test]
fn tokens_and_roots_that_do_not_fit_get_no_certificate() -> Result<()> {
    let mut mesh = Mesh::new("id-refuse")?;
    let cp = mesh.pod("cp")?;
    let (wrong_sa, wrong_root, forged) = (mesh.pod("b")?, mesh.pod("c")?, mesh.pod("d")?);
    let ca = MeshCa::new("id-refuse")?;
    let policy = ca.policy_dir()?;
    ca.start_control_plane(&mut mesh, &cp, &policy, "1h", &[])?;
    let web = ca.token("shop", "web")?;

    // A token for `web`, presented by a proxy that asks to be `admin`.
    let p = mesh.proxy(&wrong_sa);
    meshed(
        p,
        &wrong_sa,
        &cp,
        &ca.anchors(),
        ("shop/admin", "admin"),
        &web,
    )
    .spawn()?;

    // Roots of another mesh: the control plane's certificate does not verify.
    let other = ca.dir.join("other");
    std::fs::create_dir_all(&other)?;
    let other_root = other.join("root.pem");
    wrong_root.sh_ok(&format!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=other \
         -days 1 -keyout {0}/root.key -out {1} 2>&1",
        other.display(),
        other_root.display()
    ))?;
    let p = mesh.proxy(&wrong_root);
    meshed(p, &wrong_root, &cp, &other_root, ("shop/web", "web"), &web).spawn()?;

    // A token signed with another key.
    let forged_key = other.join("token.key");
    forged.sh_ok(&format!(
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {}",
        forged_key.display()
    ))?;
    let forged_token = other.join("forged.token");
    let out = forged.sh_ok(&format!(
        "{} token create --namespace shop --service-account web --key {}",
        bin("bulwarkctl").display(),
        forged_key.display()
    ))?;
    std::fs::write(&forged_token, out.trim())?;
    let p = mesh.proxy(&forged);
    meshed(
        p,
        &forged,
        &cp,
        &ca.anchors(),
        ("shop/web", "web"),
        &forged_token,
    )
    .spawn()?;

    let refused = |pod: &Pod, expect: &'static str| -> Result<()> {
        wait_for(expect, Duration::from_secs(15), || {
            let Ok(id) = identity(pod) else {
                return Ok(false);
            };
            let err = id["last_error"].as_str().unwrap_or_default().to_string();
            assert_eq!(id["state"], "pending", "{id}");
            Ok(err.contains(expect))
        })
        .with_context(|| format!("last /identity: {:?}", identity(pod).map(|v| v.to_string())))?;
        let (code, ready) = pod.admin("/ready")?;
        assert_eq!(code, 503, "{ready}");
        assert!(ready.contains("\"awaiting_identity\": true"), "{ready}");
        Ok(())
    };
    refused(
        &wrong_sa,
        "must ask for exactly spiffe://cluster.local/ns/shop/sa/web",
    )?;
    refused(&wrong_root, "not trusted")?;
    refused(&forged, "signature does not verify")?;
    assert!(
        cp_metric(
            &cp,
            "bulwark_cp_certificates_refused_total{reason=\"wrong_identity\"}"
        )? >= 1.0
    );
    assert!(
        cp_metric(
            &cp,
            "bulwark_cp_certificates_refused_total{reason=\"bad_token\"}"
        )? >= 1.0
    );
    assert_eq!(cp_metric(&cp, "bulwark_cp_certificates_issued_total")?, 0.0);
    Ok(())
}

#[test]
fn renewals_use_the_certificate_and_a_lost_control_plane_is_reported_before_expiry() -> Result<()> {
    let mut mesh = Mesh::new("id-renew")?;
    let (cp, a) = (mesh.pod("cp")?, mesh.pod("a")?);
    let ca = MeshCa::new("id-renew")?;
    let policy = ca.policy_dir()?;
    let cp_pid = ca.start_control_plane(&mut mesh, &cp, &policy, "20s", &[])?;
    let token = ca.token("shop", "web")?;
    let proxy = mesh.proxy(&a);
    meshed(proxy, &a, &cp, &ca.anchors(), ("shop/web", "web"), &token).start()?;
    // The token is gone: renewals must prove the identity with the certificate.
    std::fs::remove_file(&token)?;
    // Renewals come every 14 s or so; the bound leaves room for a loaded machine.
    wait_for("two renewals", Duration::from_secs(60), || {
        Ok(identity(&a)?["renewals"].as_u64().unwrap_or(0) >= 3)
    })
    .with_context(|| {
        format!(
            "last /identity: {:?}\n{}",
            identity(&a).map(|v| v.to_string()),
            mesh.log_of(&format!("proxy-{}", a.ns))
                .lines()
                .filter(|l| l.contains("bulwark_proxy::identity"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let id = identity(&a)?;
    assert_eq!(id["state"], "valid", "{id}");
    assert_eq!(id["failures"], 0, "{id}");

    mesh.kill(cp_pid)?;
    wait_for("renewal failing", Duration::from_secs(25), || {
        Ok(identity(&a)?["state"] == "renewal_failing")
    })?;
    let log = mesh.log_of(&format!("proxy-{}", a.ns));
    assert!(
        log.contains(
            "certificate renewal failed; serving on the current certificate until it expires"
        ),
        "{log}"
    );
    wait_for("expiry", Duration::from_secs(25), || {
        Ok(identity(&a)?["state"] == "expired")
    })?;
    wait_for("the expiry told in the log", Duration::from_secs(5), || {
        Ok(mesh
            .log_of(&format!("proxy-{}", a.ns))
            .contains("CERTIFICATE EXPIRED"))
    })?;
    assert!(
        a.metric("bulwark_identity_certify_total{result=\"failed\"}")?
            .unwrap_or(0.0)
            >= 1.0
    );
    Ok(())
}

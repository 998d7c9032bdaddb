//! Rotation under load: 20-second certificates renewed several times while two meshed pods
//! exchange HTTP on pooled mesh connections and opaque TCP on a fresh mesh connection each,
//! and, halfway, the control plane switched to an issuer under a second root (made with
//! openssl, as an operator's PKI would) through a bundle holding both roots. No request
//! and no connection may fail. Then the old root is retired from the bundle file, which the
//! proxies follow without a restart.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_tests::identity::{MeshCa, meshed, openssl_ca, wait_meshed};
use bulwark_tests::{Mesh, Pod, py_command, wait_for};

fn identity(pod: &Pod) -> Result<serde_json::Value> {
    let (_, body) = pod.admin("/identity")?;
    Ok(serde_json::from_str(&body)?)
}

#[test]
fn certificates_and_the_root_rotate_under_load_without_a_failed_request() -> Result<()> {
    let mut mesh = Mesh::new("rotation")?;
    let (cp, client, server) = (mesh.pod("cp")?, mesh.pod("client")?, mesh.pod("server")?);
    // The state directory keeps the token key; the CA itself comes from files.
    let ca = MeshCa::new("rotation")?;
    let (old, new) = (ca.dir.join("old"), ca.dir.join("new"));
    openssl_ca(&old, "old")?;
    openssl_ca(&new, "new")?;
    let both = ca.dir.join("both-roots.pem");
    let roots = std::fs::read_to_string(old.join("root.pem"))?
        + &std::fs::read_to_string(new.join("root.pem"))?;
    std::fs::write(&both, roots)?;
    let policy = ca.policy_dir()?;
    let issuer = |dir: &std::path::Path| -> Vec<String> {
        vec![
            "--trust-anchors".into(),
            both.display().to_string(),
            "--issuer-cert".into(),
            dir.join("issuer.pem").display().to_string(),
            "--issuer-key".into(),
            dir.join("issuer.key").display().to_string(),
        ]
    };
    let args = issuer(&old);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cp_pid = ca.start_control_plane(&mut mesh, &cp, &policy, "20s", &args)?;

    mesh.testserver(&server)
        .http("0.0.0.0:8080")
        .banner("0.0.0.0:6379")
        .name("web")
        .start()?;
    for (pod, sa) in [(&server, "web"), (&client, "checkout")] {
        let token = ca.token("shop", sa)?;
        let p = mesh.proxy(pod);
        meshed(p, pod, &cp, &both, (&format!("shop/{sa}"), sa), &token).start()?;
    }
    wait_meshed(&client, &server)?;
    for pod in [&client, &server] {
        let id = identity(pod)?;
        ensure!(
            id["certificate"]["issuer"]
                .as_str()
                .unwrap_or("")
                .contains("old issuer"),
            "{id}"
        );
    }

    // 45 s of load: HTTP/1 at 40 req/s on pooled mesh connections, and one opaque
    // connection a second, each its own mesh TLS connection.
    let h2load = format!(
        "h2load --h1 -c 4 --rps 10 -D 45 http://{}:8080/ 2>&1",
        server.ip
    );
    let opaque = format!(
        "ok=0; for i in $(seq 1 40); do {} >/dev/null 2>&1 && ok=$((ok+1)); sleep 1; done; echo opaque ok $ok",
        py_command("tcp_probe.py", &format!("banner {} 6379 1", server.ip))
    );
    let load = {
        let c = client.clone();
        std::thread::spawn(move || c.sh_ok(&h2load))
    };
    let probes = {
        let c = client.clone();
        std::thread::spawn(move || c.sh_ok(&opaque))
    };

    // Halfway through a certificate's life, the control plane moves to the new issuer.
    std::thread::sleep(Duration::from_secs(10));
    mesh.kill(cp_pid)?;
    let args = issuer(&new);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ca.start_control_plane(&mut mesh, &cp, &policy, "20s", &args)?;

    let load = load.join().expect("load thread")?;
    let probes = probes.join().expect("probe thread")?;
    let requests = load
        .lines()
        .find(|l| l.trim_start().starts_with("requests:"))
        .context("h2load printed no summary")?;
    assert!(
        requests.contains(" 0 failed, 0 errored, 0 timeout"),
        "{load}"
    );
    assert!(probes.contains("opaque ok 40"), "{probes}");

    // Both proxies now hold certificates from the new issuer, and renewed more than once.
    for pod in [&client, &server] {
        let id = identity(pod)?;
        let issuer = id["certificate"]["issuer"].as_str().unwrap_or("");
        assert!(issuer.contains("new issuer"), "{id}");
        assert!(id["renewals"].as_u64().unwrap_or(0) >= 3, "{id}");
        assert_eq!(id["state"], "valid", "{id}");
    }
    let log = mesh.log_of(&format!("proxy-{}", server.ns));
    assert!(!log.contains("handshake refused"), "{log}");

    // The old root retired: the bundle file now holds the new root alone, and the proxies
    // follow the file without a restart; new mesh connections still verify.
    let tmp = ca.dir.join(".both-roots.tmp");
    std::fs::copy(new.join("root.pem"), &tmp)?;
    std::fs::rename(&tmp, &both)?;
    for pod in [&client, &server] {
        wait_for(
            "the proxy to read the new bundle",
            Duration::from_secs(15),
            || {
                let id = identity(pod)?;
                Ok(id["trust_anchor_fingerprints"].as_array().map(Vec::len) == Some(1))
            },
        )?;
    }
    client.sh_ok(&py_command(
        "tcp_probe.py",
        &format!("banner {} 6379 2", server.ip),
    ))?;
    let ok = client.sh_ok(&format!(
        "curl -sS -m 5 -o /dev/null -w '%{{http_code}}' http://{}:8080/",
        server.ip
    ))?;
    assert_eq!(ok, "200");
    Ok(())
}

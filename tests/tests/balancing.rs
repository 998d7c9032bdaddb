//! Routing and load balancing through real proxies: a Backend's endpoints share the load,
//! peak-EWMA moves load off an endpoint made ten times slower, and hostname endpoints are
//! resolved over DNS and followed when the answer changes.

use std::time::Duration;

use anyhow::Result;
use bulwark_tests::policy::PolicyMesh;
use bulwark_tests::resources::Backend;
use bulwark_tests::{Fault, ProxyCommand, wait_for};

fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[test]
fn endpoints_share_load_and_peak_ewma_moves_it_off_a_slow_endpoint() -> Result<()> {
    let pm = PolicyMesh::builder("balance")
        .replicas(3)
        .replica_fault(Fault::Latency(Duration::from_millis(5)))
        .policy(Backend::new("api").replicas(0..3))
        .start()?;
    // Clients dial one endpoint's address; the Backend spreads the requests.
    let before = pm.received_all()?;
    let r = pm.h2load(&format!("--h1 -n 600 -c 4 -t 1 http://{}/", pm.ep(0)))?;
    assert_eq!((r.ok, r.errored), (600, 0), "{r:?}");
    let shares = delta(&pm.received_all()?, &before);
    assert_eq!(shares.iter().sum::<u64>(), 600, "{shares:?}");
    for s in &shares {
        assert!(*s >= 120, "every endpoint takes a fair part: {shares:?}");
    }

    // One endpoint becomes ten times slower, without failing.
    pm.fault(2, Fault::Latency(Duration::from_millis(50)))?;
    let before = pm.received_all()?;
    let r = pm.h2load(&format!("--h1 -n 600 -c 4 -t 1 http://{}/", pm.ep(0)))?;
    assert_eq!((r.ok, r.errored), (600, 0), "{r:?}");
    let shares = delta(&pm.received_all()?, &before);
    assert!(
        shares[2] < 60,
        "the slow endpoint gets under 10 %: {shares:?}"
    );
    let slow = pm.outlier(2)?;
    assert!(slow["ewma_ms"].as_f64().unwrap_or(0.0) >= 40.0, "{slow}");
    Ok(())
}

#[test]
fn hostname_endpoints_follow_dns_answers_on_their_ttl() -> Result<()> {
    let records = std::env::temp_dir().join(format!("bulwark-dns-{}", std::process::id()));
    // The DNS pod is the control plane's: it is on the mesh and answers from a file.
    let mut pm = PolicyMesh::builder("dns")
        .replicas(2)
        .policy(Backend::new("api").replicas(0..2))
        .proxy_flag("--dns-servers", "10.77.0.2")
        .start()?;
    std::fs::write(
        &records,
        format!("api.test.internal {} 1\n", pm.servers[0].ip),
    )?;
    let cp = pm.cp.clone();
    let mut cmd = cp.cmd(bulwark_tests::bin("bulwark-testserver"));
    cmd.args(["--dns", "10.77.0.2:53", "--dns-records"])
        .arg(&records);
    pm.mesh.spawn(&cp, "dns", cmd)?;
    wait_for("the DNS server", Duration::from_secs(5), || {
        Ok(cp.sh_ok("ss -Huln")?.contains(":53 "))
    })?;
    pm.set_policy(Backend::new("api").endpoint("api.test.internal:8080"))?;
    let url = "http://api.test.internal:8080/ --resolve api.test.internal:8080:10.77.0.250";
    let hello = |pm: &PolicyMesh| {
        pm.client
            .sh(&format!("curl -s -m 2 {url}"))
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    wait_for("the name to resolve to s0", Duration::from_secs(10), || {
        Ok(hello(&pm)?.contains("hello from s0"))
    })?;

    std::fs::write(
        &records,
        format!("api.test.internal {} 1\n", pm.servers[1].ip),
    )?;
    wait_for(
        "the proxy to follow the new answer",
        Duration::from_secs(10),
        || Ok(hello(&pm)?.contains("hello from s1")),
    )?;
    for _ in 0..5 {
        assert!(hello(&pm)?.contains("hello from s1"));
    }
    // An app that resolved the name itself dials the address: still the Backend's traffic.
    let before = pm.outlier(1)?["requests"].as_u64().unwrap_or(0);
    pm.client.sh_ok(&format!(
        "for i in $(seq 5); do curl -sf -o /dev/null http://{}:8080/ || exit 1; done",
        pm.servers[1].ip
    ))?;
    let after = pm.outlier(1)?["requests"].as_u64().unwrap_or(0);
    assert_eq!(after - before, 5, "routed by the resolved address");

    // The DNS server goes away: once a lookup has failed, the last answer keeps serving.
    std::fs::remove_file(&records)?;
    wait_for("a failed lookup", Duration::from_secs(10), || {
        let failures = pm
            .client
            .metric("bulwark_dns_failures_total{target=\"Backend/shop/api\",reason=\"lookup\"}")?;
        Ok(failures.is_some_and(|n| n >= 1.0))
    })?;
    assert!(hello(&pm)?.contains("hello from s1"));
    Ok(())
}

#[test]
fn opaque_connections_to_a_backend_are_balanced_and_a_crashed_endpoint_is_skipped() -> Result<()> {
    let mut pm = PolicyMesh::builder("opaque")
        .replicas(3)
        .replica_banner("0.0.0.0:25")
        .policy(Backend::new("mail").replicas_on(0..3, 25))
        .start()?;
    let probe = |pm: &PolicyMesh, n: usize| -> Result<Vec<String>> {
        let args = format!("names {} 25 {n}", pm.servers[0].ip);
        let out = pm
            .client
            .sh_ok(&bulwark_tests::py_command("tcp_probe.py", &args))?;
        Ok(serde_json::from_str(out.trim())?)
    };
    let seen = probe(&pm, 30)?;
    for name in ["s0", "s1", "s2"] {
        assert!(
            seen.iter().filter(|s| *s == name).count() >= 2,
            "connections are spread: {seen:?}"
        );
    }
    // s1 crashes: its port refuses connections; the connect is tried on another endpoint.
    let pid = pm.server_pids[1];
    pm.mesh.kill(pid)?;
    let seen = probe(&pm, 30)?;
    assert_eq!(seen.len(), 30);
    assert!(!seen.iter().any(|s| s == "s1"), "{seen:?}");
    Ok(())
}

#[test]
fn policy_files_work_without_a_control_plane_and_bad_ones_stop_the_proxy_with_the_reason()
-> Result<()> {
    let mut mesh = bulwark_tests::Mesh::new("localpolicy")?;
    let client = mesh.pod("client")?;
    let servers: Vec<_> = (0..2)
        .map(|i| mesh.pod(&format!("s{i}")))
        .collect::<Result<_>>()?;
    for (i, s) in servers.iter().enumerate() {
        mesh.testserver(s)
            .http("0.0.0.0:8080")
            .name(&format!("s{i}"))
            .start()?;
    }
    let dir = bulwark_tests::policy::policy_dir("localpolicy")?;
    let file = dir.join("api.yaml");
    // Written as YAML by hand, not from `resources`: the test is about where in a
    // hand-written file the proxy says a mistake is.
    std::fs::write(
        &file,
        format!(
            "apiVersion: bulwark.dev/v1alpha1\nkind: Backend\nmetadata: {{name: api, namespace: shop}}\nspec:\n  endpoints: [\"{}:8080\", \"{}:8080\"]\n",
            servers[0].ip, servers[1].ip
        ),
    )?;
    mesh.proxy(&client)
        .flag("--policy", &dir)
        .flag("--workload", "shop/client")
        .start()?;
    let out = client.sh_ok(&format!(
        "for i in $(seq 20); do curl -s http://{}:8080/; done",
        servers[0].ip
    ))?;
    assert!(
        out.contains("hello from s0") && out.contains("hello from s1"),
        "{out}"
    );

    // A mistake in the file: the proxy refuses to start and says where and why.
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)?.replace("endpoints:", "endpoint:"),
    )?;
    let run = ProxyCommand::new(&client)
        .flag("--policy", &dir)
        .flag("--admin-addr", "127.0.0.1:5192")
        .flag("--outbound-port", "5150")
        .flag("--inbound-port", "5153")
        .command()
        .output()?;
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(
        err.contains("api.yaml:5:3") && err.contains("endpoint"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

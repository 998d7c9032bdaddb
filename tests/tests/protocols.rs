//! gRPC, WebSocket and server-speaks-first TCP through both proxies, with real clients.

use std::time::Duration;

use anyhow::Result;
use bulwark_tests::resources::{Backend, OutlierDetection, Policy, Retries, TrafficPolicy};
use bulwark_tests::{Mesh, Pod, py_command, py_script, python, wait_for};

/// A mesh with a client pod and a server pod running the grpcio echo server on :50051.
fn grpc_pods(name: &str) -> Result<(Mesh, Pod, Pod)> {
    let mut mesh = Mesh::new(name)?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    let mut cmd = server.cmd(python());
    cmd.arg(py_script("grpc_check.py"))
        .args(["server", "50051"]);
    mesh.spawn(&server, "grpc-server", cmd)?;
    mesh.wait_listening(&server, 50051)?;
    Ok((mesh, client, server))
}

#[test]
fn grpcio_unary_and_streaming_calls_keep_trailers_and_status() -> Result<()> {
    let (mut mesh, client, server) = grpc_pods("grpc")?;
    mesh.proxy(&server).start()?;
    mesh.proxy(&client).start()?;
    let out = client.sh_ok(&py_command(
        "grpc_check.py",
        &format!("client {}:50051", server.ip),
    ))?;
    assert!(out.contains("grpc ok"), "{out}");
    let opened = |pod: &Pod, direction: &str| {
        pod.metric(&format!(
            "bulwark_connections_opened_total{{direction=\"{direction}\",protocol=\"http2\"}}"
        ))
    };
    assert!(opened(&client, "outbound")?.is_some_and(|n| n >= 1.0));
    assert!(opened(&server, "inbound")?.is_some_and(|n| n >= 1.0));
    // Every call counted by the status it ended with, on both proxies: 22 OK (20 unary, a
    // server stream, a bidi stream) and the FAILED_PRECONDITION (9), all HTTP 200.
    for (pod, direction) in [(&client, "outbound"), (&server, "inbound")] {
        let grpc = |code: &str| {
            pod.metric(&format!(
                "bulwark_grpc_responses_total{{direction=\"{direction}\",authority=\"{}:50051\",grpc_status=\"{code}\"}}",
                server.ip
            ))
        };
        wait_for("every call's status", Duration::from_secs(5), || {
            Ok(grpc("0")? == Some(22.0) && grpc("9")? == Some(1.0))
        })?;
    }
    Ok(())
}

#[test]
fn a_grpc_status_in_the_trailers_counts_against_the_endpoint() -> Result<()> {
    let (mut mesh, client, server) = grpc_pods("grpctrail")?;
    let dir = bulwark_tests::policy::policy_dir("grpctrail")?;
    let policy = Policy::new()
        .with(Backend::new("echo").endpoint(format!("{}:50051", server.ip)))
        .with(
            TrafficPolicy::for_backend("echo")
                .retries(Retries::attempts(1))
                .outlier(
                    OutlierDetection::new()
                        .consecutive_5xx(3)
                        .max_ejection_percent(100),
                ),
        );
    std::fs::write(dir.join("api.yaml"), policy.to_yaml(&[])?)?;
    mesh.proxy(&client)
        .flag("--policy", &dir)
        .flag("--workload", "shop/client")
        .start()?;
    // Each stream sends its messages, then UNAVAILABLE in the trailers: no trailers-only
    // response, so the status is only known when the body ends.
    let out = client.sh_ok(&py_command(
        "grpc_check.py",
        &format!("stream-fail {}:50051 3", server.ip),
    ))?;
    assert!(out.contains("stream-fail ok"), "{out}");
    // HTTP said 200 each time; the trailers said UNAVAILABLE, and that is what is counted.
    let unavailable = format!(
        "bulwark_grpc_responses_total{{direction=\"outbound\",authority=\"{}:50051\",grpc_status=\"14\"}}",
        server.ip
    );
    wait_for(
        "the UNAVAILABLE calls counted",
        Duration::from_secs(5),
        || Ok(client.metric(&unavailable)? == Some(3.0)),
    )?;
    // ...and the request counter calls them failures, on the policy's target and route.
    let (_, stats) = client.admin("/stats")?;
    let stats: serde_json::Value = serde_json::from_str(&stats)?;
    let failed: Vec<_> = stats["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["grpc_status"] == "14")
        .collect();
    assert_eq!(failed.len(), 1, "{stats}");
    let r = failed[0];
    assert_eq!(
        (
            &r["status_code"],
            &r["classification"],
            &r["route"],
            &r["count"]
        ),
        (
            &serde_json::json!("200"),
            &serde_json::json!("failure"),
            &serde_json::json!("default"),
            &serde_json::json!(3)
        ),
        "{stats}"
    );
    assert!(
        r["target"].as_str().is_some_and(|t| t.ends_with("/echo")),
        "{r}"
    );
    let (_, body) = client.admin("/outliers")?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let ep = &v[0]["endpoints"][0];
    assert_eq!(ep["state"], "ejected", "{v}");
    assert_eq!(ep["ejection"]["reason"], "consecutive_5xx", "{v}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn websocket_upgrade_is_tunnelled() -> Result<()> {
    let mut mesh = Mesh::new("ws")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    let mut cmd = server.cmd(python());
    cmd.arg(py_script("ws_check.py")).args(["server", "8765"]);
    mesh.spawn(&server, "ws-server", cmd)?;
    mesh.wait_listening(&server, 8765)?;
    mesh.proxy(&server).start()?;
    mesh.proxy(&client).start()?;
    let out = client.sh_ok(&py_command(
        "ws_check.py",
        &format!("client ws://{}:8765/ 200", server.ip),
    ))?;
    assert!(out.contains("ws ok: 200"), "{out}");
    let upgraded = client.requests("outbound", &format!("{}:8765", server.ip), "1xx")?;
    assert_eq!(
        upgraded,
        Some(1.0),
        "the 101 was seen by the proxy as an HTTP request"
    );
    assert!(
        client
            .metric("bulwark_tcp_bytes_total{direction=\"outbound\",from=\"client\"}")?
            .is_some_and(|n| n > 10_000.0),
        "tunnelled bytes are counted"
    );
    Ok(())
}

#[test]
fn server_speaks_first_waits_only_until_the_port_is_learned() -> Result<()> {
    let mut mesh = Mesh::new("banner")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    mesh.testserver(&server)
        .banner("0.0.0.0:7025")
        .banner("0.0.0.0:6379")
        .name("mail")
        .start()?;
    mesh.proxy(&server).start()?;
    mesh.proxy(&client).flag("--detect-timeout", "1s").start()?;

    // Port 7025 is unknown: the first two connections wait for detection to time out
    // (threshold 2), then the port is learned and later connections do not wait at all.
    let out = client.sh_ok(&py_command(
        "tcp_probe.py",
        &format!("banner {} 7025 5", server.ip),
    ))?;
    // Waits as the client sees them: opaque connections have no latency series in the
    // proxy, and the wait for the banner is the client's.
    let waits: Vec<f64> = serde_json::from_str(out.trim())?;
    // Each wait covers the client proxy's detection and, on the first connections, the
    // server proxy's too (both learn the port).
    for (i, w) in waits.iter().enumerate().take(2) {
        assert!(
            *w < 2.5,
            "connection {i} waited {w}s; bounded by the detection timeouts"
        );
    }
    assert!(
        waits[0] >= 0.9,
        "the first connection did wait for detection: {waits:?}"
    );
    for (i, w) in waits.iter().enumerate().skip(2) {
        assert!(
            *w < 0.3,
            "connection {i} waited {w}s after the port was learned: {waits:?}"
        );
    }
    let (_, learned) = client.admin("/detect")?;
    assert!(learned.contains("\"port\": 7025"), "{learned}");
    // The evidence: two connections on which the server spoke first, one of them the vote
    // that taught the port.
    assert_eq!(
        client.metric(
            "bulwark_detect_learn_evidence_total{direction=\"outbound\",first=\"server\"}"
        )?,
        Some(2.0)
    );
    assert_eq!(
        client.metric("bulwark_detect_ports_learned_total{direction=\"outbound\"}")?,
        Some(1.0)
    );
    assert_eq!(
        client.metric("bulwark_detect_learned_opaque_port{port=\"7025\"}")?,
        Some(1.0)
    );
    assert_eq!(
        client.metric("bulwark_detect_total{direction=\"outbound\",outcome=\"learned_opaque\"}")?,
        Some(3.0)
    );

    // 6379 (Redis) is on the default opaque list: no wait even the first time.
    let out = client.sh_ok(&py_command(
        "tcp_probe.py",
        &format!("banner {} 6379 2", server.ip),
    ))?;
    let waits: Vec<f64> = serde_json::from_str(out.trim())?;
    assert!(waits.iter().all(|w| *w < 0.3), "{waits:?}");
    assert_eq!(
        client
            .metric("bulwark_detect_total{direction=\"outbound\",outcome=\"configured_opaque\"}")?,
        Some(2.0)
    );
    // Byte counters are added to as a connection's copy ends, just after the client closed.
    wait_for(
        "the server's bytes to be counted",
        Duration::from_secs(5),
        || {
            let bytes =
                client.metric("bulwark_tcp_bytes_total{direction=\"outbound\",from=\"server\"}")?;
            Ok(bytes.is_some_and(|n| n > 0.0))
        },
    )?;
    Ok(())
}

/// Silence proves nothing: connections that say nothing to a port whose server does not
/// speak first either (an HTTP server) must not teach either proxy that the port is
/// server-speaks-first, or HTTP handling would be switched off there for everyone.
#[test]
fn silent_clients_do_not_teach_a_port_to_be_opaque() -> Result<()> {
    let mut mesh = Mesh::new("poison")?;
    let client = mesh.pod("client")?;
    let outside = mesh.pod("outside")?;
    let server = mesh.pod("server")?;
    mesh.testserver(&server).http("0.0.0.0:8080").start()?;
    mesh.proxy(&server).start()?;
    mesh.proxy(&client).start()?;
    // Three each (the threshold is two), each silent well past the 1 s detection timeout
    // (timers run late on a loaded machine): from the meshed client through both proxies,
    // and from outside straight to the inbound one, at the same time.
    let silent = py_command("tcp_probe.py", &format!("silent {} 8080 3 2.5", server.ip));
    std::thread::scope(|s| {
        let runs: Vec<_> = [&client, &outside]
            .into_iter()
            .map(|pod| s.spawn(|| pod.sh_ok(&silent)))
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("a probe thread"))
            .collect::<Result<Vec<_>>>()
    })?;
    // Both proxies saw the connections time out, so their learners were asked, and said no.
    for (pod, direction) in [(&client, "outbound"), (&server, "inbound")] {
        let (_, learned) = pod.admin("/detect")?;
        assert_eq!(learned.trim(), "[]", "{} learned: {learned}", pod.ns);
        let timeouts = pod.metric(&format!(
            "bulwark_detect_total{{direction=\"{direction}\",outcome=\"timeout\"}}"
        ))?;
        assert!(
            timeouts.is_some_and(|n| n >= 3.0),
            "the silent connections timed out at {}: {timeouts:?}",
            pod.ns
        );
        // Nobody spoke first on them, so no vote was cast either way.
        let server_first = pod.metric(&format!(
            "bulwark_detect_learn_evidence_total{{direction=\"{direction}\",first=\"server\"}}"
        ))?;
        assert_eq!(server_first, Some(0.0), "{}", pod.ns);
    }
    // HTTP still works there, detected as HTTP.
    let code = client.sh_ok(&format!(
        "curl -s -o /dev/null -w '%{{http_code}}' http://{}:8080/",
        server.ip
    ))?;
    assert_eq!(code, "200");
    Ok(())
}

#[test]
fn tls_is_passed_through_untouched() -> Result<()> {
    let mut mesh = Mesh::new("tls")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    let dir = std::env::temp_dir().join(format!("bulwark-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=server.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut cmd = server.cmd("openssl");
    cmd.args(["s_server", "-quiet", "-www", "-accept", "8443"])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key);
    mesh.spawn(&server, "tls-server", cmd)?;
    mesh.wait_listening(&server, 8443)?;
    mesh.proxy(&server).start()?;
    mesh.proxy(&client).start()?;
    let out = client.sh_ok(&format!(
        "curl -s --cacert {} --resolve server.test:8443:{} https://server.test:8443/",
        cert.display(),
        server.ip
    ))?;
    // The certificate verified against its own CA: the proxies did not touch the TLS bytes.
    assert!(out.contains("s_server"), "{out}");
    assert_eq!(
        client
            .metric("bulwark_connections_opened_total{direction=\"outbound\",protocol=\"tls\"}")?,
        Some(1.0)
    );
    assert_eq!(
        server
            .metric("bulwark_connections_opened_total{direction=\"inbound\",protocol=\"tls\"}")?,
        Some(1.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! The stream idle timeout: a connection whose open requests stop moving is closed when
//! `--stream-idle-timeout` passes, whether the client stops sending its body (HTTP/1) or
//! grants no flow-control window for the answer while it keeps pinging (HTTP/2, where
//! control frames do not count as movement). A body that keeps moving, however slowly, is
//! never cut.

use anyhow::{Context, Result};
use bulwark_tests::{Mesh, Pod, py_command};
use serde_json::Value;

fn json(pod: &Pod, script: &str, args: &str) -> Result<Value> {
    let out = pod.sh_ok(&py_command(script, args))?;
    serde_json::from_str(out.trim()).with_context(|| format!("{script} printed {out:?}"))
}

fn seconds(v: &Value) -> f64 {
    v["seconds"].as_f64().unwrap_or(f64::NAN)
}

#[test]
fn open_requests_that_stop_moving_are_closed_at_the_stream_idle_timeout() -> Result<()> {
    let mut mesh = Mesh::new("streamidle")?;
    let client = mesh.pod("client")?;
    let outside = mesh.pod("outside")?;
    let server = mesh.pod("server")?;
    // Each case crosses one proxy only, so that proxy's clock is the one that fires: the
    // uploads go from the meshed client to an unmeshed server, the HTTP/2 client from
    // outside the mesh to a meshed one.
    let plain = mesh.pod("plain")?;
    mesh.testserver(&server).http("0.0.0.0:8080").start()?;
    mesh.testserver(&plain).http("0.0.0.0:8080").start()?;
    mesh.proxy(&server)
        .flag("--stream-idle-timeout", "2s")
        .start()?;
    mesh.proxy(&client)
        .flag("--stream-idle-timeout", "2s")
        .start()?;
    let unmeshed = format!("{} 8080", plain.ip);
    let target = format!("{} 8080", server.ip);

    // The control: eight body bytes, one every 0.5 s, take twice the timeout and arrive.
    let slow = json(&client, "tcp_probe.py", &format!("body {unmeshed} 8 0.5"))?;
    assert!(
        slow["answer"]
            .as_str()
            .unwrap_or("")
            .starts_with("HTTP/1.1 200"),
        "a moving upload was cut: {slow}"
    );
    assert!(seconds(&slow) >= 3.5, "{slow}");

    // An upload that stops after its first byte: closed by the app's proxy after 2 s.
    let stalled = json(&client, "tcp_probe.py", &format!("body {unmeshed} 1000 30"))?;
    assert_eq!(stalled["answer"], "", "{stalled}");
    assert!((1.9..6.0).contains(&seconds(&stalled)), "{stalled}");
    assert_eq!(
        client.metric(
            "bulwark_http_connections_limited_total{direction=\"outbound\",reason=\"stream_idle\"}"
        )?,
        Some(1.0)
    );

    // HTTP/2 from outside the mesh: no window for the answer, a PING every 0.5 s.
    let zero = json(
        &outside,
        "h2_flood.py",
        &format!("zero-window {target} 100000"),
    )?;
    assert_eq!(zero["closed"], true, "{zero}");
    assert!((1.9..6.0).contains(&seconds(&zero)), "{zero}");
    assert_eq!(
        server.metric(
            "bulwark_http_connections_limited_total{direction=\"inbound\",reason=\"stream_idle\"}"
        )?,
        Some(1.0)
    );
    Ok(())
}

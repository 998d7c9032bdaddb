//! HTTP/2 clients that ask for nothing and cost the proxy work meet its limits: rapid reset
//! of streams the proxy has already forwarded, and floods of empty DATA, PRIORITY,
//! WINDOW_UPDATE, CONTINUATION and PING frames. Each attacking connection is closed (GOAWAY
//! ENHANCE_YOUR_CALM where the proxy decides), counted by reason, and the proxy goes on
//! serving everyone else. Controls show the same clients, well behaved, are served.

use anyhow::{Context, Result};
use bulwark_tests::{Mesh, Pod, py_command};
use serde_json::Value;

/// HTTP/2's ENHANCE_YOUR_CALM error code.
const ENHANCE_YOUR_CALM: u64 = 0xb;

/// A server pod with the test server on 8080 behind its proxy, and a client pod, with a
/// proxy when `client_proxy` (the outbound path) or without one (the inbound path, from
/// outside the mesh).
fn pods(mesh: &mut Mesh, client_proxy: bool) -> Result<(Pod, Pod)> {
    let client = mesh.pod("client")?;
    let server = mesh.server_pod("server")?;
    mesh.proxy(&server).start()?;
    if client_proxy {
        mesh.proxy(&client).start()?;
    }
    Ok((client, server))
}

fn rapid_reset(client: &Pod, server: &Pod, args: &str) -> Result<Value> {
    let tool = bulwark_tests::bin("bulwark-rapid-reset");
    let out = client.sh_ok(&format!("{} {}:8080 {args}", tool.display(), server.ip))?;
    serde_json::from_str(out.trim()).with_context(|| format!("rapid-reset printed {out:?}"))
}

/// Requests the test server has received (asked from inside its pod).
fn upstream_count(server: &Pod) -> Result<u64> {
    Ok(server
        .sh_ok("curl -sf -m 5 http://127.0.0.1:8080/count")?
        .trim()
        .parse()?)
}

/// Streams held open until forwarded, then reset, 50 at a time: the connection is closed
/// once its resets reach the limit (100, the concurrency limit), so the upstream sees about
/// 100 requests, not the 2,000 the client tried. Then a client that cancels a quarter of
/// its calls is served to the end, and so is plain traffic.
fn forwarded_resets_are_cut_off(client: &Pod, server: &Pod, proxy: &Pod, dir: &str) -> Result<()> {
    let r = rapid_reset(
        client,
        server,
        "--streams 2000 --batch 50 --hold-ms 300 --path /delay/2000",
    )?;
    assert!(
        r["refused"].is_string(),
        "the attacker was not cut off: {r}"
    );
    let seen = upstream_count(server)?;
    // At least one batch got through before the limit: the resets hit forwarded streams.
    assert!(
        (50..=110).contains(&seen),
        "{seen} of {} reset streams reached the upstream: {r}",
        r["opened"]
    );
    assert_eq!(
        proxy.metric(&format!(
            "bulwark_http_connections_limited_total{{direction=\"{dir}\",reason=\"premature_resets\"}}"
        ))?,
        Some(1.0)
    );
    let resets = proxy
        .metric(&format!(
            "bulwark_h2_client_resets_total{{direction=\"{dir}\"}}"
        ))?
        .unwrap_or(0.0);
    assert!(resets >= 100.0, "{resets} client resets counted");

    let r = rapid_reset(
        client,
        server,
        "--streams 400 --batch 20 --hold-ms 20 --cancel-percent 25 --path /delay/200",
    )?;
    assert!(
        r["refused"].is_null(),
        "a client with deadlines was cut off: {r}"
    );
    assert_eq!(
        (r["reset"].as_u64(), r["completed"].as_u64()),
        (Some(100), Some(300)),
        "{r}"
    );
    let code = client.sh_ok(&format!(
        "curl -s -o /dev/null -w '%{{http_code}}' --http2-prior-knowledge http://{}:8080/",
        server.ip
    ))?;
    assert_eq!(code, "200");
    let peak = proxy.proxy_peak_rss()?;
    assert!(peak < 64 * 1024 * 1024, "peak RSS {peak}");
    Ok(())
}

#[test]
fn rapid_reset_of_forwarded_streams_is_cut_off_by_the_apps_proxy() -> Result<()> {
    let mut mesh = Mesh::new("rapidreset-out")?;
    let (client, server) = pods(&mut mesh, true)?;
    forwarded_resets_are_cut_off(&client, &server, &client, "outbound")
}

#[test]
fn rapid_reset_of_forwarded_streams_is_cut_off_by_the_inbound_proxy() -> Result<()> {
    let mut mesh = Mesh::new("rapidreset-in")?;
    let (outside, server) = pods(&mut mesh, false)?;
    forwarded_resets_are_cut_off(&outside, &server, &server, "inbound")
}

fn flood(client: &Pod, server: &Pod, kind: &str, count: u32) -> Result<Value> {
    let cmd = py_command("h2_flood.py", &format!("{kind} {} 8080 {count}", server.ip));
    let out = client.sh_ok(&cmd)?;
    serde_json::from_str(out.trim()).with_context(|| format!("h2_flood printed {out:?}"))
}

#[test]
fn frame_floods_close_the_connection_and_others_are_served() -> Result<()> {
    let mut mesh = Mesh::new("h2floods")?;
    let (outside, server) = pods(&mut mesh, false)?;
    // The control: the script's framing is right, so what follows is the limits at work.
    let good = flood(&outside, &server, "good", 20)?;
    assert_eq!(
        (good["completed"].as_u64(), &good["closed"]),
        (Some(20), &Value::Bool(false)),
        "{good}"
    );

    // The empty-DATA client stops at the frame that breaks the limit and reads: it must see
    // the GOAWAY. The others go on flooding, and may have their socket reset first.
    for (kind, count, reason, told) in [
        ("empty-data", 2, "empty_frames", true),
        ("priority", 5_000, "priority_flood", false),
        ("window-update", 1_000, "window_update_flood", false),
    ] {
        let r = flood(&outside, &server, kind, count)?;
        assert_eq!(r["closed"], true, "{kind}: still open: {r}");
        let goaway = r["goaway"].as_u64();
        assert!(
            goaway == Some(ENHANCE_YOUR_CALM) || (!told && goaway.is_none()),
            "{kind}: {r}"
        );
        assert_eq!(
            server.metric(&format!(
                "bulwark_http_connections_limited_total{{direction=\"inbound\",reason=\"{reason}\"}}"
            ))?,
            Some(1.0),
            "{kind}"
        );
    }
    // h2's own bound: a header block that never ends is cut off at the header list limit
    // (64 KiB), long before the 3 MiB the client has to send.
    let r = flood(&outside, &server, "continuation", 200)?;
    assert_eq!(r["closed"], true, "continuation: still open: {r}");
    assert!(r["written"].as_u64().unwrap_or(0) < 200, "{r}");

    // PINGs whose answers are never read: h2 answers one at a time and reads no further
    // until it is written, so the flood stalls against TCP instead of growing a queue.
    let r = flood(&outside, &server, "ping", 5_000_000)?;
    assert!(
        r["written"].as_u64().unwrap_or(0) < 5_000_000,
        "nothing held the flood back: {r}"
    );
    let good = flood(&outside, &server, "good", 5)?;
    assert_eq!(good["completed"].as_u64(), Some(5), "{good}");
    let peak = server.proxy_peak_rss()?;
    assert!(peak < 64 * 1024 * 1024, "peak RSS {peak}");
    Ok(())
}

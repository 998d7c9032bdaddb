//! Spans over OTLP: a client proxy pointed at a collector (the test's OTLP sink in the
//! same pod) exports a span for a request whose trace is sampled, as a child of the
//! caller's, and hands the request on with its own span as the parent; other requests
//! pass untouched and are not exported.

use std::time::Duration;

use anyhow::Result;
use bulwark_tests::{Mesh, bin, wait_for};

#[test]
fn a_sampled_request_gets_a_proxy_span_exported_over_otlp() -> Result<()> {
    let mut mesh = Mesh::new("spans")?;
    let client = mesh.pod("client")?;
    let server = mesh.server_pod("server")?;
    mesh.proxy(&server).start()?;
    let mut sink = client.cmd(bin("bulwark-otlp-sink"));
    sink.arg("127.0.0.1:4317");
    mesh.spawn(&client, "otlp-sink", sink)?;
    mesh.wait_listening(&client, 4317)?;
    mesh.proxy(&client)
        .flag("--otlp-endpoint", "http://127.0.0.1:4317")
        .flag("--workload", "shop/frontend")
        .start()?;

    let url = format!("http://{}:8080/headers", server.ip);
    let seen = |traceparent: &str| -> Result<serde_json::Value> {
        let out = client.sh_ok(&format!(
            "curl -sS -m 10 -H 'traceparent: {traceparent}' {url}"
        ))?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v["headers"]["traceparent"].clone())
    };
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    // Not sampled: passed on as the app wrote it, and no span.
    let unsampled = format!("00-{trace}-{caller}-00");
    assert_eq!(seen(&unsampled)?, unsampled.as_str());
    client.sh_ok(&format!("curl -sS -m 10 -o /dev/null {url}"))?;
    // Sampled: the same trace, the proxy's span as the parent.
    let forwarded = seen(&format!("00-{trace}-{caller}-01"))?;
    let forwarded = forwarded.as_str().unwrap_or_default().to_string();
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts.len(), 4, "{forwarded}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", trace, "01"),
        "{forwarded}"
    );
    let proxy_span = parts[2];
    assert_ne!(
        proxy_span, caller,
        "the upstream's parent is the proxy's span"
    );

    let spans = || -> Vec<serde_json::Value> {
        mesh.log_of("otlp-sink")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    // The SDK's processor sends a batch every 5 s.
    wait_for("the span at the collector", Duration::from_secs(20), || {
        Ok(!spans().is_empty())
    })?;
    let spans = spans();
    assert_eq!(spans.len(), 1, "only the sampled request: {spans:?}");
    let s = &spans[0];
    assert_eq!(s["trace_id"], trace, "{s}");
    assert_eq!(s["parent_span_id"], caller, "{s}");
    assert_eq!(s["span_id"], proxy_span, "{s}");
    assert_eq!(s["name"], "outbound GET", "{s}");
    assert_eq!(s["kind"], 3, "SPAN_KIND_CLIENT: {s}");
    assert_eq!(s["service_name"], "bulwark-proxy", "{s}");
    let a = &s["attributes"];
    assert_eq!(a["http.response.status_code"], 200, "{s}");
    assert_eq!(a["server.address"], format!("{}:8080", server.ip), "{s}");
    assert_eq!(a["url.path"], "/headers", "{s}");
    assert_eq!(
        a["network.peer.address"],
        format!("{}:8080", server.ip),
        "{s}"
    );
    assert!(
        s["end_unix_nano"].as_u64() > s["start_unix_nano"].as_u64(),
        "{s}"
    );
    Ok(())
}

//! HTTP through real interception: curl, nghttp and h2load in client pods, the test server
//! behind a second proxy in a server pod.

use std::time::Duration;

use anyhow::Result;
use bulwark_tests::{Mesh, Pod};

/// A client pod and a server pod, each with a proxy; the server listens on 8080.
fn two_pods(mesh: &mut Mesh) -> Result<(Pod, Pod)> {
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    mesh.testserver(&server)
        .http("0.0.0.0:8080")
        .http("[::]:8081")
        .name("server")
        .start()?;
    mesh.proxy(&server).start()?;
    mesh.proxy(&client).start()?;
    Ok((client, server))
}

#[test]
fn curl_http1_keepalive_passes_both_proxies_and_both_count_it() -> Result<()> {
    let mut mesh = Mesh::new("curlh1")?;
    let (client, server) = two_pods(&mut mesh)?;
    let url = format!("http://{}:8080", server.ip);
    // Three requests on one connection: curl reuses it (keep-alive through the proxy).
    let out = client.sh_ok(&format!(
        "curl -sS -m 10 -H 'Connection: keep-alive, X-Hop' -H 'X-Hop: 1' -H 'X-End: 2' {url}/headers {url}/ {url}/status/404 -w '%{{http_code}} %{{num_connects}}\\n'"
    ))?;
    assert!(
        out.contains("\"x-end\":\"2\""),
        "end-to-end header forwarded: {out}"
    );
    assert!(
        !out.contains("x-hop"),
        "hop-by-hop header named in Connection is removed: {out}"
    );
    assert!(
        out.contains(&format!("\"host\":\"{}:8080\"", server.ip)),
        "Host is kept: {out}"
    );
    assert!(out.contains("hello from server"), "{out}");
    let codes: Vec<&str> = out
        .lines()
        .filter(|l| l.len() <= 6 && l.contains(' '))
        .collect();
    assert_eq!(
        codes,
        ["200 1", "200 0", "404 0"],
        "one connection, three requests: {out}"
    );

    let authority = format!("{}:8080", server.ip);
    let outbound_2xx = client.requests("outbound", &authority, "2xx")?;
    let outbound_4xx = client.requests("outbound", &authority, "4xx")?;
    let inbound_2xx = server.requests("inbound", &authority, "2xx")?;
    assert_eq!(
        (outbound_2xx, outbound_4xx, inbound_2xx),
        (Some(2.0), Some(1.0), Some(2.0))
    );
    assert_eq!(
        client.metric(
            "bulwark_connections_opened_total{direction=\"outbound\",protocol=\"http1\"}"
        )?,
        Some(1.0)
    );
    Ok(())
}

#[test]
fn h2c_with_nghttp_and_h2load_is_proxied_as_http2() -> Result<()> {
    let mut mesh = Mesh::new("h2c")?;
    let (client, server) = two_pods(&mut mesh)?;
    let url = format!("http://{}:8080", server.ip);
    let out = client.sh_ok(&format!("nghttp {url}/headers"))?;
    assert!(
        out.contains("\"version\":\"HTTP/2.0\""),
        "the upstream saw HTTP/2: {out}"
    );
    let out = client.sh_ok(&format!("h2load -n 2000 -c 4 -m 10 {url}/"))?;
    assert!(out.contains("2000 succeeded, 0 failed, 0 errored"), "{out}");
    assert!(out.contains("status codes: 2000 2xx"), "{out}");
    let h2_conns = client
        .metric("bulwark_connections_opened_total{direction=\"outbound\",protocol=\"http2\"}")?;
    assert_eq!(
        h2_conns,
        Some(5.0),
        "1 nghttp + 4 h2load connections detected as HTTP/2"
    );
    let inbound = server.requests("inbound", &format!("{}:8080", server.ip), "2xx")?;
    assert_eq!(inbound, Some(2001.0));
    Ok(())
}

#[test]
fn oversized_headers_get_431_and_the_connection_survives_limits() -> Result<()> {
    let mut mesh = Mesh::new("limits")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    mesh.testserver(&server).http("0.0.0.0:8080").start()?;
    mesh.proxy(&client)
        .flag("--max-headers", "20")
        .flag("--max-header-bytes", "16384")
        .start()?;
    let url = format!("http://{}:8080/", server.ip);
    let big = "a".repeat(20_000);
    let code = client.sh_ok(&format!(
        "curl -s -o /dev/null -w '%{{http_code}}' -H 'X-Big: {big}' {url}"
    ))?;
    assert_eq!(code, "431", "head over 16 KiB");
    let many: String = (0..30).map(|i| format!(" -H 'X-N{i}: v'")).collect();
    let code = client.sh_ok(&format!(
        "curl -s -o /dev/null -w '%{{http_code}}'{many} {url}"
    ))?;
    assert_eq!(code, "431", "more than 20 header fields");
    let code = client.sh_ok(&format!("curl -s -o /dev/null -w '%{{http_code}}' {url}"))?;
    assert_eq!(code, "200", "a normal request still passes");
    // HTTP/2 meets the same field count (its header list is otherwise bounded in bytes).
    let code = client.sh_ok(&format!(
        "curl -s --http2-prior-knowledge -o /dev/null -w '%{{http_code}}'{many} {url}"
    ))?;
    assert_eq!(code, "431", "more than 20 header fields over HTTP/2");
    let code = client.sh_ok(&format!(
        "curl -s --http2-prior-knowledge -o /dev/null -w '%{{http_code}}' {url}"
    ))?;
    assert_eq!(code, "200", "a normal HTTP/2 request still passes");
    Ok(())
}

#[test]
fn a_slow_request_head_is_cut_off_by_the_header_read_timeout() -> Result<()> {
    let mut mesh = Mesh::new("slowloris")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    mesh.testserver(&server).http("0.0.0.0:8080").start()?;
    mesh.proxy(&client)
        .flag("--header-read-timeout", "2s")
        .start()?;
    let py = bulwark_tests::python();
    let script = bulwark_tests::py_script("tcp_probe.py");
    let out = client.sh_ok(&format!(
        "{} {} slowloris {} 8080",
        py.display(),
        script.display(),
        server.ip
    ))?;
    // The client's clock: the proxy keeps no record of a request it never read, and it is
    // the client that must see the connection closed.
    let secs: f64 = out.trim().parse()?;
    assert!(
        (1.5..6.0).contains(&secs),
        "closed after {secs}s, expected about 2s"
    );
    Ok(())
}

#[test]
fn a_100_mib_upload_streams_with_bounded_proxy_memory() -> Result<()> {
    let mut mesh = Mesh::new("upload")?;
    let (client, server) = two_pods(&mut mesh)?;
    let out = client.sh_ok(&format!(
        "head -c 104857600 /dev/zero | curl -sS -m 60 -H 'Expect:' --data-binary @- http://{}:8080/upload",
        server.ip
    ))?;
    assert_eq!(out.trim(), "{\"bytes\":104857600}");
    let peak = client.proxy_peak_rss()?;
    assert!(
        peak < 48 * 1024 * 1024,
        "client proxy peak RSS {peak} bytes for a 100 MiB body"
    );
    let peak = server.proxy_peak_rss()?;
    assert!(
        peak < 48 * 1024 * 1024,
        "server proxy peak RSS {peak} bytes for a 100 MiB body"
    );
    Ok(())
}

#[test]
fn metrics_parse_with_the_prometheus_parser_and_stats_give_percentiles() -> Result<()> {
    let mut mesh = Mesh::new("metrics")?;
    let (client, server) = two_pods(&mut mesh)?;
    client.sh_ok(&format!(
        "for i in $(seq 50); do curl -s -o /dev/null http://{}:8080/; done",
        server.ip
    ))?;
    client.sh_ok(&format!(
        "curl -s -o /dev/null http://{}:8080/status/503",
        server.ip
    ))?;
    let py = bulwark_tests::python();
    let script = bulwark_tests::py_script("parse_metrics.py");
    let out = client.sh_ok(&format!(
        "curl -s http://127.0.0.1:5191/metrics | {} {}",
        py.display(),
        script.display()
    ))?;
    let parsed: serde_json::Value = serde_json::from_str(&out)?;
    let fam = &parsed["families"]["bulwark_request_duration_seconds"];
    assert_eq!(fam["type"], "histogram", "{out}");
    assert_eq!(
        parsed["buckets"][0], "0.00005",
        "lowest bucket is 50 µs: {out}"
    );
    assert_eq!(parsed["buckets"][1], "0.0001", "{out}");
    for family in [
        "bulwark_connections_opened",
        "bulwark_detect",
        "bulwark_tcp_bytes",
        "process_resident_memory_bytes",
    ] {
        assert!(
            parsed["families"].get(family).is_some(),
            "{family} missing: {out}"
        );
    }
    let (code, stats) = client.admin("/stats")?;
    assert_eq!(code, 200);
    let stats: serde_json::Value = serde_json::from_str(&stats)?;
    let rows = stats["latency"].as_array().cloned().unwrap_or_default();
    let ok = rows
        .iter()
        .find(|r| r["status_class"] == "2xx")
        .expect("a 2xx row");
    assert_eq!(ok["count"], 50);
    for p in ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] {
        assert!(ok[p].as_f64().is_some_and(|v| v > 0.0), "{p} in {ok}");
    }
    assert!(ok["p50_ms"].as_f64() <= ok["p99_ms"].as_f64());
    assert!(
        rows.iter()
            .any(|r| r["status_class"] == "5xx" && r["count"] == 1)
    );

    // The request counter by exact status, and the bytes.
    let authority = format!("{}:8080", server.ip);
    let counted = |status: &str, class: &str| {
        client.metric(&format!(
            "bulwark_requests_total{{direction=\"outbound\",authority=\"{authority}\",target=\"\",route=\"\",dst_namespace=\"\",dst_service_account=\"\",tls=\"false\",status_code=\"{status}\",grpc_status=\"\",classification=\"{class}\"}}"
        ))
    };
    assert_eq!(counted("200", "success")?, Some(50.0));
    assert_eq!(counted("503", "failure")?, Some(1.0));
    let sent = client.metric(&format!(
        "bulwark_response_bytes_total{{direction=\"outbound\",authority=\"{authority}\"}}"
    ))?;
    assert!(
        sent.is_some_and(|b| b >= 50.0 * "hello from server".len() as f64),
        "{sent:?}"
    );

    // OpenMetrics when asked: the strict parser takes it, and a traced request's latency
    // carries its trace id as an exemplar.
    client.sh_ok(&format!(
        "curl -s -o /dev/null -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' http://{authority}/"
    ))?;
    let out = client.sh_ok(&format!(
        "curl -s -D /tmp/om-headers -H 'Accept: application/openmetrics-text; version=1.0.0' http://127.0.0.1:5191/metrics | {} {} --openmetrics && grep -i '^content-type' /tmp/om-headers",
        py.display(),
        script.display()
    ))?;
    assert!(
        out.contains("application/openmetrics-text; version=1.0.0"),
        "{out}"
    );
    let json_line = out.lines().next().unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_str(json_line)?;
    assert_eq!(
        parsed["families"]["bulwark_requests"]["type"], "counter",
        "{out}"
    );
    assert_eq!(
        parsed["families"]["bulwark_request_duration_seconds"]["type"],
        "histogram"
    );
    let traced = parsed["exemplars"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["labels"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(traced, "the traced request is an exemplar: {out}");
    // Every documented family is exported by a running proxy, but for the three that need
    // mesh identity (tests/tests/mtls.rs checks those).
    assert_eq!(
        client.documented_but_missing()?,
        [
            "bulwark_identity_cert_expiration_timestamp_seconds",
            "bulwark_identity_certify_total",
            "bulwark_tls_handshakes_total",
        ]
    );
    Ok(())
}

#[test]
fn connection_failures_are_answered_by_the_proxy_with_a_reason() -> Result<()> {
    let mut mesh = Mesh::new("refused")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    mesh.proxy(&client).start()?;
    // Nothing listens on 9999 in the server pod: the upstream connect is refused.
    let out = client.sh_ok(&format!("curl -s -i http://{}:9999/", server.ip))?;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(
        out.to_lowercase()
            .contains("x-bulwark-error: connect_refused"),
        "{out}"
    );
    assert_eq!(
        client.metric(
            "bulwark_proxy_errors_total{direction=\"outbound\",reason=\"connect_refused\"}"
        )?,
        Some(1.0)
    );
    Ok(())
}

#[test]
fn trace_headers_pass_through_and_a_request_without_an_id_gets_one() -> Result<()> {
    let mut mesh = Mesh::new("reqid")?;
    let (client, server) = two_pods(&mut mesh)?;
    let asking = mesh.pod("asking")?;
    mesh.proxy(&asking).flag("--request-id", "on").start()?;
    let url = format!("http://{}:8080/headers", server.ip);
    let headers = |pod: &Pod, args: &str| -> Result<serde_json::Value> {
        let out = pod.sh_ok(&format!("curl -sS -m 10 {args} {url}"))?;
        let seen: serde_json::Value = serde_json::from_str(&out)?;
        Ok(seen["headers"].clone())
    };
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let seen = headers(
        &client,
        &format!(
            "-H 'traceparent: {traceparent}' -H 'X-B3-TraceId: 463ac35c9f6413ad' -H 'X-B3-SpanId: a2fb4a1d1a96d312'"
        ),
    )?;
    assert_eq!(seen["traceparent"], traceparent, "{seen}");
    assert_eq!(seen["x-b3-traceid"], "463ac35c9f6413ad", "{seen}");
    assert_eq!(seen["x-b3-spanid"], "a2fb4a1d1a96d312", "{seen}");
    // By default (no access log to read it) neither proxy adds an id.
    assert!(seen.get("x-request-id").is_none(), "{seen}");
    // Asked to, the first hop adds one; the server's proxy keeps it.
    let seen = headers(&asking, "")?;
    let id = seen["x-request-id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 36, "a UUID: {seen}");
    assert_eq!(&id[14..15], "4", "version 4: {seen}");
    assert_ne!(
        headers(&asking, "")?["x-request-id"],
        id,
        "one id per request"
    );
    // The app's own id is kept.
    let seen = headers(&asking, "-H 'X-Request-Id: from-the-app'")?;
    assert_eq!(seen["x-request-id"], "from-the-app", "{seen}");
    Ok(())
}

#[test]
fn the_access_log_has_a_line_per_request_in_json_or_text() -> Result<()> {
    let mut mesh = Mesh::new("accesslog")?;
    let client = mesh.pod("client")?;
    let server = mesh.server_pod("server")?;
    mesh.proxy(&server).flag("--access-log", "text").start()?;
    mesh.proxy(&client).flag("--access-log", "json").start()?;
    let base = format!("http://{}:8080", server.ip);
    client.sh_ok(&format!(
        "curl -sS -m 10 -o /dev/null {base}/bytes/1234 && \
         head -c 1000 /dev/zero | curl -sS -m 10 -o /dev/null --data-binary @- {base}/upload && \
         curl -sS -m 10 -o /dev/null -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' {base}/status/503"
    ))?;
    let json_lines = || -> Vec<serde_json::Value> {
        mesh.log_of(&format!("proxy-{}", client.ns))
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("duration_ms").is_some())
            .collect()
    };
    bulwark_tests::wait_for("three access-log lines", Duration::from_secs(5), || {
        Ok(json_lines().len() == 3)
    })?;
    let lines = json_lines();
    let authority = format!("{}:8080", server.ip);
    let (get, post, failed) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!(
        (&get["method"], &get["path"], &get["status"]),
        (&"GET".into(), &"/bytes/1234".into(), &200.into()),
        "{get}"
    );
    assert_eq!(get["authority"], authority.as_str(), "{get}");
    assert_eq!(get["direction"], "outbound");
    assert_eq!(get["response_bytes"], 1234, "{get}");
    assert_eq!(get["upstream"], authority.as_str(), "{get}");
    assert_eq!(get["attempts"], 1);
    assert_eq!(get["hedged"], false);
    assert!(
        get["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
        "{get}"
    );
    assert_eq!(get["request_id"].as_str().map(str::len), Some(36), "{get}");
    assert_eq!(
        (&post["method"], &post["request_bytes"]),
        (&"POST".into(), &1000.into()),
        "{post}"
    );
    assert_eq!(failed["status"], 503, "{failed}");
    assert_eq!(
        failed["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{failed}"
    );

    // The server's proxy logs the same requests inbound, as text, with the same ids.
    let text = mesh.log_of(&format!("proxy-{}", server.ns));
    let inbound: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("start=") && l.contains("direction=inbound"))
        .collect();
    assert_eq!(inbound.len(), 3, "{text}");
    assert!(
        inbound[0].contains("method=GET ") && inbound[0].contains(" path=/bytes/1234 status=200 "),
        "{}",
        inbound[0]
    );
    let id = get["request_id"].as_str().unwrap_or_default();
    assert!(
        inbound[0].contains(&format!("request_id={id}")),
        "{}",
        inbound[0]
    );
    Ok(())
}

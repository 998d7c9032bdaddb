//! HTTP through real interception: curl, nghttp and h2load in client pods, the test server
//! behind a second proxy in a server pod.

use anyhow::Result;
use bulwark_tests::{Mesh, Pod};

/// A client pod and a server pod, each with a proxy; the server listens on 8080.
fn two_pods(mesh: &mut Mesh) -> Result<(Pod, Pod)> {
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    mesh.testserver(&server, &["--http", "0.0.0.0:8080", "--http", "[::]:8081", "--name", "server"])?;
    mesh.wait_listening(&server, 8080)?;
    mesh.proxy(&server, &[])?;
    mesh.proxy(&client, &[])?;
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
    assert!(out.contains("\"x-end\":\"2\""), "end-to-end header forwarded: {out}");
    assert!(!out.contains("x-hop"), "hop-by-hop header named in Connection is removed: {out}");
    assert!(out.contains(&format!("\"host\":\"{}:8080\"", server.ip)), "Host is kept: {out}");
    assert!(out.contains("hello from server"), "{out}");
    let codes: Vec<&str> = out.lines().filter(|l| l.len() <= 6 && l.contains(' ')).collect();
    assert_eq!(codes, ["200 1", "200 0", "404 0"], "one connection, three requests: {out}");

    let authority = format!("{}:8080", server.ip);
    let outbound_2xx = client.metric(&format!(
        "bulwark_request_duration_seconds_count{{direction=\"outbound\",authority=\"{authority}\",status_class=\"2xx\"}}"
    ))?;
    let outbound_4xx = client.metric(&format!(
        "bulwark_request_duration_seconds_count{{direction=\"outbound\",authority=\"{authority}\",status_class=\"4xx\"}}"
    ))?;
    let inbound_2xx = server.metric(&format!(
        "bulwark_request_duration_seconds_count{{direction=\"inbound\",authority=\"{authority}\",status_class=\"2xx\"}}"
    ))?;
    assert_eq!((outbound_2xx, outbound_4xx, inbound_2xx), (2.0, 1.0, 2.0));
    assert_eq!(client.metric("bulwark_connections_opened_total{direction=\"outbound\",protocol=\"http1\"}")?, 1.0);
    Ok(())
}

//! A malformed or trickled HTTP/1 head meets the proxy's checks: it is answered 400, or
//! closed at the header-read timeout, and never reaches the application as raw bytes. On
//! the outbound path (the app's own proxy) and the inbound path (a client outside the mesh
//! dialling the pod), against an upstream that records every byte it receives.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use bulwark_tests::{Mesh, Pod, py_command, py_script, python, wait_for};

/// Heads that once fell back to opaque TCP and were forwarded untouched.
const MALFORMED: [(&str, &[u8]); 10] = [
    (
        "two Content-Lengths",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
    ),
    (
        "an invalid Content-Length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
    ),
    (
        "an unknown transfer coding",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    ),
    (
        "stacked transfer codings",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "a chunk size that overflows",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n",
    ),
    (
        "a bare LF in a chunk line",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    ),
    (
        "NUL in a header value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n",
    ),
    (
        "obs-fold",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n",
    ),
    (
        "whitespace before the colon",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    ),
    (
        "bare CR in a value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
    ),
];

fn probe(pod: &Pod, args: &str) -> Result<String> {
    Ok(pod
        .sh_ok(&py_command("tcp_probe.py", args))?
        .trim()
        .to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An upstream on port 8080 of `pod` that records what it receives and answers nothing.
fn recorder(mesh: &mut Mesh, pod: &Pod, test: &str) -> Result<PathBuf> {
    let file = std::env::temp_dir().join(format!("bulwark-recorded-{}-{test}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let mut c = pod.cmd(python());
    c.arg(py_script("tcp_probe.py"))
        .args(["record", "8080"])
        .arg(&file);
    mesh.spawn(pod, "recorder", c)?;
    mesh.wait_listening(pod, 8080)?;
    Ok(file)
}

fn recorded(file: &PathBuf) -> Vec<u8> {
    std::fs::read(file).unwrap_or_default()
}

/// Sends `bytes` from `client` to `target:8080` through the proxy and waits until the
/// recorder has `marker`; returns everything it has, lower-cased. The recorder never
/// answers, so the probe gives up after a few seconds.
fn forwarded(
    client: &Pod,
    target: &Pod,
    file: &PathBuf,
    bytes: &[u8],
    marker: &str,
) -> Result<String> {
    let raw = py_command(
        "tcp_probe.py",
        &format!("raw {} 8080 {}", target.ip, hex(bytes)),
    );
    let _ = client.sh(&format!("timeout 3 {raw}"));
    wait_for(
        &format!("{marker} at the upstream"),
        Duration::from_secs(10),
        || Ok(String::from_utf8_lossy(&recorded(file)).contains(marker)),
    )?;
    Ok(String::from_utf8_lossy(&recorded(file)).to_ascii_lowercase())
}

/// Every malformed head sent from `client` to `target:8080` gets 400 and nothing reaches
/// the recorder; then a well-formed one does reach it, so the check can fail.
fn malformed_heads_are_refused(
    client: &Pod,
    target: &Pod,
    proxy: &Pod,
    dir: &str,
    file: &PathBuf,
) -> Result<()> {
    for (what, head) in MALFORMED {
        let line = probe(client, &format!("raw {} 8080 {}", target.ip, hex(head)))?;
        assert!(
            line.starts_with("HTTP/1.1 400"),
            "{what}: answered {line:?}, expected 400"
        );
        assert!(
            recorded(file).is_empty(),
            "{what}: the upstream received {:?}",
            String::from_utf8_lossy(&recorded(file))
        );
    }
    // Each refusal is counted: hyper's (a head it cannot parse) as a limited connection,
    // the proxy's own (framing in doubt) as an error it answered.
    let counted = || -> Result<(Option<f64>, Option<f64>)> {
        Ok((
            proxy.metric(&format!(
                "bulwark_http_connections_limited_total{{direction=\"{dir}\",reason=\"malformed_head\"}}"
            ))?,
            proxy.metric(&format!(
                "bulwark_proxy_errors_total{{direction=\"{dir}\",reason=\"malformed_request\"}}"
            ))?,
        ))
    };
    let all = MALFORMED.len() as f64;
    let sum = |(h, o): (Option<f64>, Option<f64>)| h.unwrap_or(0.0) + o.unwrap_or(0.0);
    let waited = wait_for("every refusal counted", Duration::from_secs(5), || {
        Ok(sum(counted()?) == all)
    });
    let (hyper, ours) = counted()?;
    assert!(
        waited.is_ok(),
        "hyper's {hyper:?}, the proxy's {ours:?} of {all}"
    );
    let good = b"GET /good HTTP/1.1\r\nHost: a\r\n\r\n";
    forwarded(client, target, file, good, "GET /good HTTP/1.1").map(|_| ())
}

#[test]
fn a_malformed_head_from_the_app_is_refused_by_its_proxy() -> Result<()> {
    let mut mesh = Mesh::new("malformed-out")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    let file = recorder(&mut mesh, &server, "out")?;
    mesh.proxy(&client).start()?;
    malformed_heads_are_refused(&client, &server, &client, "outbound", &file)?;
    let _ = std::fs::remove_file(&file);
    Ok(())
}

#[test]
fn a_malformed_head_from_outside_the_mesh_is_refused_by_the_inbound_proxy() -> Result<()> {
    let mut mesh = Mesh::new("malformed-in")?;
    let outside = mesh.pod("outside")?;
    let server = mesh.pod("server")?;
    let file = recorder(&mut mesh, &server, "in")?;
    mesh.proxy(&server).start()?;
    malformed_heads_are_refused(&outside, &server, &server, "inbound", &file)?;
    let _ = std::fs::remove_file(&file);
    Ok(())
}

/// Content-Length with Transfer-Encoding (the CL.TE smuggling shape) is settled as RFC 9112
/// §6.3 says, by hyper: the chunked framing wins, the length is dropped, and the connection
/// closes after the response, so what follows the chunked body is never read as a second
/// request. Only one request reaches the upstream, without the length.
#[test]
fn content_length_with_transfer_encoding_smuggles_nothing() -> Result<()> {
    let mut mesh = Mesh::new("cl-te")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    let file = recorder(&mut mesh, &server, "clte")?;
    mesh.proxy(&client).start()?;
    let head = b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    forwarded(&client, &server, &file, head, "POST /first")?;
    // The smuggled request would have gone out on the same pooled connection at once.
    std::thread::sleep(Duration::from_millis(500));
    let seen = String::from_utf8_lossy(&recorded(&file)).to_ascii_lowercase();
    assert!(!seen.contains("/smuggled"), "smuggled: {seen:?}");
    assert!(
        !seen.contains("content-length"),
        "the length went on: {seen:?}"
    );
    let _ = std::fs::remove_file(&file);
    Ok(())
}

/// An absolute-form target wins over `Host` (RFC 9112 §3.2.2): the upstream is told the
/// authority the proxy routed and labelled the request by, not the other one.
#[test]
fn an_absolute_form_target_wins_over_host() -> Result<()> {
    let mut mesh = Mesh::new("absolute")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    let file = recorder(&mut mesh, &server, "absolute")?;
    mesh.proxy(&client).start()?;
    let head = b"GET http://routed.example/x HTTP/1.1\r\nHost: other.example\r\n\r\n";
    let seen = forwarded(&client, &server, &file, head, "GET /x")?;
    assert!(seen.contains("host: routed.example"), "{seen:?}");
    assert!(!seen.contains("other.example"), "{seen:?}");
    let _ = std::fs::remove_file(&file);
    Ok(())
}

#[test]
fn a_head_trickled_from_its_first_byte_meets_the_header_timeout() -> Result<()> {
    let mut mesh = Mesh::new("trickle")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    let file = recorder(&mut mesh, &server, "trickle")?;
    mesh.proxy(&client)
        .flag("--header-read-timeout", "3s")
        .start()?;
    // One byte every 0.4 s: the detection timeout (1 s) passes after "GE", long before
    // the head is whole. The client's clock: it is the client that must see the close.
    let out = probe(&client, &format!("trickle {} 8080 0.4", server.ip))?;
    let secs: f64 = out
        .parse()
        .map_err(|_| anyhow::anyhow!("the connection was still open after 20 s: {out}"))?;
    assert!(
        (2.5..9.0).contains(&secs),
        "closed after {secs}s, expected the 3 s header timeout after detection"
    );
    assert!(
        recorded(&file).is_empty(),
        "the trickled head reached the upstream as raw bytes: {:?}",
        String::from_utf8_lossy(&recorded(&file))
    );
    wait_for("the close counted", Duration::from_secs(5), || {
        Ok(client.metric(
            "bulwark_http_connections_limited_total{direction=\"outbound\",reason=\"header_timeout\"}",
        )? == Some(1.0))
    })?;
    let _ = std::fs::remove_file(&file);
    Ok(())
}

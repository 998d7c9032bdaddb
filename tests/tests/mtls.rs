//! Mesh TLS between network-namespace pods: two meshed proxies carry HTTP/1, HTTP/2 and
//! opaque TCP to each other over TLS 1.3 with each other's SPIFFE identities (a capture on
//! the bridge finds no plaintext), pooled so handshakes are rare; the inbound port shows
//! its chain to openssl; a strict port refuses a client outside the mesh, a permissive one
//! lets it in; multiplexed, HTTP/1 between the proxies rides their one HTTP/2 connection and
//! reaches the app as HTTP/1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use bulwark_tests::identity::{MeshCa, meshed, wait_meshed};
use bulwark_tests::{Mesh, Pod, py_command, wait_for, workspace_root};

const CHECKOUT: &str = "spiffe://cluster.local/ns/shop/sa/checkout";
const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

/// A policy directory holding the example MeshConfig, with `mtls` appended when given.
fn policy(ca: &MeshCa, mtls: Option<&str>) -> Result<PathBuf> {
    let dir = ca.policy_dir()?;
    write_mesh(&dir, mtls)?;
    Ok(dir)
}

fn write_mesh(dir: &Path, mtls: Option<&str>) -> Result<()> {
    let mut text =
        std::fs::read_to_string(workspace_root().join("control-plane/examples/policy/mesh.yaml"))?;
    if let Some(m) = mtls {
        text.push_str(m);
    }
    // Written whole, then renamed: the control plane never reads half a file.
    let tmp = dir.join(".mesh.yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join("mesh.yaml"))?;
    Ok(())
}

/// A control plane, a server pod (`web`, test server on 8080 and 8081, the second with a
/// kubelet probe of `/status/204`, and a banner on 6379) and a
/// client pod (`checkout`), both meshed; returns once the client knows the server is.
struct Meshed {
    mesh: Mesh,
    ca: MeshCa,
    policy: PathBuf,
    client: Pod,
    server: Pod,
    /// The control plane's PID.
    cp: u32,
}

fn meshed_pair(test: &str, mtls: Option<&str>) -> Result<Meshed> {
    meshed_pair_with(test, mtls, &[])
}

/// [`meshed_pair`] with these extra flags for the client's proxy.
fn meshed_pair_with(
    test: &str,
    mtls: Option<&str>,
    client_flags: &[(&str, &str)],
) -> Result<Meshed> {
    let mut mesh = Mesh::new(test)?;
    let (cp, client, server) = (mesh.pod("cp")?, mesh.pod("client")?, mesh.pod("server")?);
    let ca = MeshCa::new(test)?;
    let policy = policy(&ca, mtls)?;
    let cp_pid = ca.start_control_plane(&mut mesh, &cp, &policy, "1h", &[])?;
    mesh.testserver(&server)
        .http("0.0.0.0:8080")
        .http("0.0.0.0:8081")
        .banner("0.0.0.0:6379")
        .name("web")
        .start()?;
    let anchors = ca.anchors();
    let web = ca.token("shop", "web")?;
    let p = mesh.proxy(&server);
    // 8081 is probed by the kubelet, as injection would tell the proxy.
    meshed(p, &server, &cp, &anchors, ("shop/web", "web"), &web)
        .flag("--inbound-probe", "8081:/status/204")
        .start()?;
    let checkout = ca.token("shop", "checkout")?;
    let mut p = mesh.proxy(&client);
    for (name, value) in client_flags {
        p = p.flag(name, value);
    }
    meshed(
        p,
        &client,
        &cp,
        &anchors,
        ("shop/checkout", "checkout"),
        &checkout,
    )
    .start()?;
    wait_meshed(&client, &server)?;
    Ok(Meshed {
        mesh,
        ca,
        policy,
        client,
        server,
        cp: cp_pid,
    })
}

fn handshakes(pod: &Pod, side: &str, result: &str) -> Result<f64> {
    let series = format!("bulwark_tls_handshakes_total{{side=\"{side}\",result=\"{result}\"}}");
    pod.metric(&series)?
        .with_context(|| format!("{series} not exported"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn meshed_pods_speak_tls_with_each_others_identity_and_nothing_plain_crosses() -> Result<()> {
    let Meshed {
        mut mesh,
        ca: _ca,
        client,
        server,
        cp,
        ..
    } = meshed_pair("mtls-wire", None)?;
    let capture = mesh.capture()?;
    let url = format!("http://{}:8080", server.ip);
    // HTTP/1: twenty requests on separate curl runs (each its own downstream connection),
    // then HTTP/2 with prior knowledge, then opaque bytes to a server-speaks-first port.
    for i in 0..20 {
        let out = client.sh_ok(&format!(
            "curl -sS -m 5 -H 'X-Secret: plaintext-marker-{i}' {url}/headers"
        ))?;
        assert!(out.contains("plaintext-marker"), "{out}");
    }
    // The app learns who called from the server's proxy, and only from it.
    let told = client.sh_ok(&format!(
        "curl -sS -m 5 -H 'x-bulwark-client-id: spiffe://cluster.local/ns/shop/sa/admin' {url}/headers"
    ))?;
    let told: serde_json::Value = serde_json::from_str(told.trim())?;
    assert_eq!(told["headers"]["x-bulwark-client-id"], CHECKOUT, "{told}");
    let h2 = client.sh_ok(&format!(
        "curl -sS -m 5 --http2-prior-knowledge -H 'X-Secret: plaintext-marker-h2' {url}/headers"
    ))?;
    assert!(h2.contains("\"version\":\"HTTP/2.0\""), "{h2}");
    let banner = client.sh_ok(&py_command(
        "tcp_probe.py",
        &format!("banner {} 6379 1", server.ip),
    ))?;
    assert!(banner.trim().starts_with('['), "{banner}");
    let wire = capture.bytes(&mut mesh)?;

    // The capture saw the mesh handshakes (the ALPN is in the clear in a ClientHello) and
    // no request, header or response in plaintext.
    assert!(
        wire.len() > 4096,
        "the capture is nearly empty: {} bytes",
        wire.len()
    );
    for alpn in [
        &b"bulwark.dev/http1"[..],
        b"bulwark.dev/h2",
        b"bulwark.dev/opaque",
    ] {
        assert!(
            contains(&wire, alpn),
            "no {} ClientHello on the bridge",
            String::from_utf8_lossy(alpn)
        );
    }
    for plain in [
        &b"plaintext-marker"[..],
        b"GET /headers",
        b"HTTP/1.1 200",
        b"HELO mesh",
    ] {
        assert!(
            !contains(&wire, plain),
            "{:?} crossed the bridge in plaintext",
            String::from_utf8_lossy(plain)
        );
    }

    // Each side knew the other: the server terminated as `web` and saw `checkout`.
    let log = mesh.log_of(&format!("proxy-{}", server.ns));
    assert!(!log.contains("handshake refused"), "{log}");
    // Pooled (the default): twenty HTTP/1 requests took one handshake, HTTP/2 one, opaque
    // one.
    let full = handshakes(&client, "client", "full")?;
    let resumed = handshakes(&client, "client", "resumed")?;
    assert!(
        full >= 1.0 && full + resumed <= 4.0,
        "client handshakes: {full} full, {resumed} resumed"
    );
    assert_eq!(handshakes(&client, "client", "failed")?, 0.0);
    assert_eq!(
        handshakes(&server, "server", "full")? + handshakes(&server, "server", "resumed")?,
        full + resumed
    );
    let served = server
        .requests("inbound", &format!("{}:8080", server.ip), "2xx")?
        .unwrap_or(0.0);
    assert_eq!(
        served, 22.0,
        "the server's inbound proxy served every request"
    );

    let by_caller = server.metric(&format!(
        "bulwark_inbound_requests_total{{tls=\"true\",client_id=\"{CHECKOUT}\"}}"
    ))?;
    assert_eq!(
        by_caller,
        Some(22.0),
        "requests counted by the caller's identity"
    );
    // With mesh identity on, a proxy exports every family docs/operations.md lists.
    assert_eq!(client.documented_but_missing()?, Vec::<String>::new());
    // ...and the client's proxy counted them by the workload that answered.
    let to_web = client.counted(|r| {
        r["dst_namespace"] == "shop" && r["dst_service_account"] == "web" && r["tls"] == true
    })?;
    assert_eq!(
        to_web, 22,
        "requests counted by the destination workload, over mesh TLS"
    );
    // ...and the server's proxy counted them as having come over mesh TLS.
    let tls_in = server.counted(|r| r["direction"] == "inbound" && r["tls"] == true)?;
    assert_eq!(tls_in, 22, "inbound requests over mesh TLS");

    // From a pod outside the mesh, openssl sees the server's chain and its SPIFFE ID; with
    // no client certificate, the handshake goes no further.
    let outsider = mesh.pod("outsider")?;
    let anchors = _ca.anchors();
    let shown = outsider.sh(&format!(
        "echo | timeout 10 openssl s_client -connect {}:8080 -alpn bulwark.dev/http1 -CAfile {} -showcerts 2>&1",
        server.ip,
        anchors.display()
    ))?;
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(shown.contains("Verify return code: 0 (ok)"), "{shown}");
    let san = outsider.sh_ok(&format!(
        "echo | timeout 10 openssl s_client -connect {}:8080 -alpn bulwark.dev/http1 2>/dev/null | openssl x509 -noout -ext subjectAltName",
        server.ip
    ))?;
    assert!(san.contains(&format!("URI:{WEB}")), "{san}");

    // The control plane gone, the proxies go on with the certificates they hold: pooled
    // HTTP and a fresh mesh connection for opaque bytes both still work.
    mesh.kill(cp)?;
    let out = client.sh_ok(&format!("curl -sS -m 5 {url}/headers"))?;
    assert!(out.contains("\"version\""), "{out}");
    client.sh_ok(&py_command(
        "tcp_probe.py",
        &format!("banner {} 6379 2", server.ip),
    ))?;
    let id: serde_json::Value = serde_json::from_str(&client.admin("/identity")?.1)?;
    assert_eq!(id["state"], "valid", "{id}");
    Ok(())
}

/// An unmeshed pod: no proxy, so its curl is plaintext on the wire.
fn outsider_gets(outsider: &Pod, server: &Pod) -> Result<String> {
    let out = outsider.sh(&format!(
        "curl -sS -m 5 -o /dev/null -w '%{{http_code}}' http://{}:8080/",
        server.ip
    ))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn a_strict_port_refuses_clients_outside_the_mesh_and_a_permissive_one_admits_them() -> Result<()> {
    let strict = "  mtls:\n    mode: strict\n";
    let Meshed {
        mut mesh,
        ca: _ca,
        policy,
        client,
        server,
        ..
    } = meshed_pair("mtls-strict", Some(strict))?;
    let outsider = mesh.pod("outsider")?;
    let url = format!("http://{}:8080", server.ip);
    let refused = |server: &Pod| {
        server
            .metric(
                "bulwark_proxy_errors_total{direction=\"inbound\",reason=\"plaintext_refused\"}",
            )
            .map(|v| v.unwrap_or(0.0))
    };

    // Strict: the meshed client gets through, the outsider's connection is closed.
    assert_eq!(
        client.sh_ok(&format!(
            "curl -sS -m 5 -o /dev/null -w '%{{http_code}}' {url}/"
        ))?,
        "200"
    );
    assert_eq!(outsider_gets(&outsider, &server)?, "000");
    let log = mesh.log_of(&format!("proxy-{}", server.ns));
    // curl tries a closed connection more than once; each try is refused and counted.
    let refusals = refused(&server)?;
    assert!(refusals >= 1.0, "{log}");
    assert!(
        log.contains("not mesh TLS") && log.contains(&outsider.ip.to_string()),
        "the refusal is logged with the peer's address: {log}"
    );
    // The kubelet has no identity either: its plaintext GET of the probe path on the probed
    // port reaches the app, and nothing else plaintext does there.
    let probe = |flags: &str, path: &str| {
        outsider.sh_ok(&format!(
            "curl -sS -m 5 -o /dev/null -w '%{{http_code}}' {flags} http://{}:8081{path}",
            server.ip
        ))
    };
    let served = server.served("*")?;
    assert_eq!(probe("", "/status/204")?, "204");
    assert_eq!(probe("-I", "/status/204")?, "204", "HEAD too");
    assert_eq!(probe("", "/status/200")?, "403");
    assert_eq!(probe("-X POST", "/status/204")?, "403");
    assert_eq!(
        server.served("*")?,
        served + 2,
        "only the probes reached the app"
    );
    assert!(refused(&server)? >= refusals + 2.0);

    // A port override makes 8080 permissive while the mesh stays strict.
    let mtls =
        "  mtls:\n    mode: strict\n    ports:\n      - port: 8080\n        mode: permissive\n";
    write_mesh(&policy, Some(mtls))?;
    wait_for(
        "the outsider to be admitted",
        Duration::from_secs(10),
        || Ok(outsider_gets(&outsider, &server)? == "200"),
    )?;
    let after = refused(&server)?;
    // The meshed client still gets through, and nothing more was refused once 8080 was
    // permissive (the wait may have seen a refusal or two before the snapshot landed).
    assert_eq!(
        client.sh_ok(&format!(
            "curl -sS -m 5 -o /dev/null -w '%{{http_code}}' {url}/"
        ))?,
        "200"
    );
    assert_eq!(outsider_gets(&outsider, &server)?, "200");
    assert_eq!(refused(&server)?, after);
    // An unmeshed caller cannot claim an identity: the header it sends never reaches the app.
    let spoof = outsider.sh_ok(&format!(
        "curl -sS -m 5 -H 'x-bulwark-client-id: spiffe://cluster.local/ns/shop/sa/checkout' {url}/headers"
    ))?;
    let spoof: serde_json::Value = serde_json::from_str(spoof.trim())?;
    assert!(spoof["headers"]["x-bulwark-client-id"].is_null(), "{spoof}");
    Ok(())
}

fn app_saw(client: &Pod, curl: &str) -> Result<serde_json::Value> {
    let out = client.sh_ok(&format!("curl -sS -m 5 {curl}"))?;
    serde_json::from_str(out.trim()).with_context(|| out.clone())
}

#[test]
fn http1_between_proxies_rides_one_http2_connection_and_reaches_the_app_as_http1() -> Result<()> {
    let Meshed {
        mut mesh,
        client,
        server,
        ..
    } = meshed_pair_with("mtls-mux", None, &[("--mesh-http1", "multiplexed")])?;
    let mut ws = server.cmd(bulwark_tests::python());
    ws.arg(bulwark_tests::py_script("ws_check.py"))
        .args(["server", "8765"]);
    mesh.spawn(&server, "ws-server", ws)?;
    mesh.wait_listening(&server, 8765)?;
    let url = format!("http://{}:8080", server.ip);

    // Eight HTTP/1.1 connections at once from the app: one mesh connection carries them.
    let load = client.sh_ok(&format!("h2load --h1 -n 400 -c 8 {url}/bytes/100"))?;
    assert!(load.contains("400 succeeded"), "{load}");
    // The app gets HTTP/1 with the head it was sent; an app's own version header is
    // neither believed nor passed on.
    let seen = app_saw(
        &client,
        &format!("-H 'Host: web.shop:8080' -H 'x-bulwark-orig-proto: HTTP/1.0' {url}/headers"),
    )?;
    assert_eq!(seen["version"], "HTTP/1.1", "{seen}");
    assert_eq!(seen["uri"], "/headers", "{seen}");
    assert_eq!(seen["headers"]["host"], "web.shop:8080", "{seen}");
    assert!(seen["headers"]["x-bulwark-orig-proto"].is_null(), "{seen}");
    let old = app_saw(&client, &format!("-0 {url}/headers"))?;
    assert_eq!(old["version"], "HTTP/1.0", "{old}");
    let h2 = app_saw(
        &client,
        &format!("--http2-prior-knowledge -H 'x-bulwark-orig-proto: HTTP/1.0' {url}/headers"),
    )?;
    assert_eq!(h2["version"], "HTTP/2.0", "{h2}");
    assert!(h2["headers"]["x-bulwark-orig-proto"].is_null(), "{h2}");
    // A chunked upload arrives whole.
    let up = client.sh_ok(&format!(
        "head -c 300000 /dev/zero | curl -sS -m 10 -T - {url}/upload"
    ))?;
    assert_eq!(up.trim(), "{\"bytes\":300000}");
    let shared = handshakes(&server, "server", "full")? + handshakes(&server, "server", "resumed")?;
    assert_eq!(
        shared, 1.0,
        "every request above shared one mesh connection"
    );
    let served = server
        .requests("inbound", &format!("{}:8080", server.ip), "2xx")?
        .unwrap_or(0.0);
    assert_eq!(served, 403.0, "the server's proxy served each request");

    // An Upgrade keeps an HTTP/1 mesh connection: a WebSocket crosses, encrypted.
    let capture = mesh.capture()?;
    let out = client.sh_ok(&py_command(
        "ws_check.py",
        &format!("client ws://{}:8765/ 50", server.ip),
    ))?;
    assert!(out.contains("ws ok: 50"), "{out}");
    let wire = capture.bytes(&mut mesh)?;
    assert!(
        contains(&wire, b"bulwark.dev/http1"),
        "no HTTP/1 mesh connection"
    );
    assert!(
        !contains(&wire, b"Upgrade: websocket"),
        "the upgrade crossed in plaintext"
    );
    Ok(())
}

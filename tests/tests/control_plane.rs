//! The control plane and proxies in network-namespace pods: policy edits reach proxies under
//! load without a failed request, invalid edits are rejected and reported, and proxies keep
//! serving while the control plane is away.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bulwark_tests::policy::{policy_dir, snapshot_version, start_control_plane};
use bulwark_tests::resources::{Backend, Policy, Retries, RetryOn, TrafficPolicy};
use bulwark_tests::{Mesh, Pod, bin, wait_for, workspace_root};

fn example_policy_dir(test: &str) -> Result<PathBuf> {
    let dir = policy_dir(test)?;
    let examples = workspace_root().join("control-plane/examples/policy");
    for f in ["mesh.yaml", "web.yaml", "legacy-db.yaml"] {
        std::fs::copy(examples.join(f), dir.join(f))?;
    }
    Ok(dir)
}

/// A Backend for the test server, with a policy whose retry attempts the test edits.
fn api_policy(server: &Pod, attempts: u32) -> Result<String> {
    Policy::new()
        .with(Backend::new("api").endpoint(format!("{}:8080", server.ip)))
        .with(
            TrafficPolicy::for_backend("api")
                .retries(Retries::attempts(attempts).on([RetryOn::Status5xx])),
        )
        .to_yaml(&[])
}

/// The effective retry attempts of the proxy's `Backend/shop/api` target.
fn api_attempts(client: &Pod) -> Result<u64> {
    let (_, dump) = client.admin("/config_dump")?;
    let dump: serde_json::Value = serde_json::from_str(&dump)?;
    let t = dump["snapshot"]["routes"]["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["key"] == "Backend/shop/api")
        .cloned()
        .unwrap_or_default();
    Ok(t["default"]["retry"]["attempts"].as_u64().unwrap_or(0))
}

/// Requests the proxy has sent to the Backend's endpoint, from `/outliers`.
fn api_requests(client: &Pod) -> Result<u64> {
    let (_, body) = client.admin("/outliers")?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["target"] == "Backend/shop/api")
        .flat_map(|t| t["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| e["requests"].as_u64().unwrap_or(0))
        .sum())
}

/// Every request h2load completed went through the Backend's policy (h2load's duration
/// mode may also leave one started request per connection undone at the end).
fn assert_routed(h2load: &str, routed: u64) {
    let field = |name: &str| -> u64 {
        h2load
            .split(',')
            .find_map(|f| {
                f.trim()
                    .trim_start_matches("requests:")
                    .trim()
                    .strip_suffix(name)
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    let (done, started) = (field("total"), field("started"));
    assert!(
        done <= routed && routed <= started,
        "{routed} requests through the Backend: {h2load}"
    );
}

const OPENED: &str = "bulwark_connections_opened_total{direction=\"outbound\",protocol=\"http1\"}";

/// `bulwarkctl status -o json`, and its exit code.
fn status_json(cp: &Pod) -> Result<(serde_json::Value, Option<i32>)> {
    let out = cp
        .cmd(bin("bulwarkctl"))
        .args(["status", "-o", "json", "--control-plane", "127.0.0.1:5170"])
        .output()?;
    let doc = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("status -o json printed {:?}", out.stdout))?;
    Ok((doc, out.status.code()))
}

fn status(cp: &Pod) -> Result<String> {
    let out = cp
        .cmd(bin("bulwarkctl"))
        .args(["status", "--control-plane", "127.0.0.1:5170"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn wait(what: &str, f: impl FnMut() -> Result<bool>) -> Result<()> {
    wait_for(what, Duration::from_secs(10), f)
}

#[test]
fn policy_reaches_proxies_live_invalid_edits_are_rejected_and_proxies_outlive_the_control_plane()
-> Result<()> {
    let mut mesh = Mesh::new("cplane")?;
    let cp = mesh.pod("cp")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    mesh.testserver(&server).http("0.0.0.0:8080").start()?;
    let dir = example_policy_dir("live")?;
    let api = dir.join("api.yaml");
    std::fs::write(&api, api_policy(&server, 3)?)?;
    let cp_pid = start_control_plane(&mut mesh, &cp, &dir)?;
    mesh.proxy(&client)
        .flag("--control-plane", format!("http://{}:5170", cp.ip))
        .flag("--workload", "shop/web")
        .flag("--pod-ips", client.ip.to_string())
        // The example's three endpoints (two for legacy-db, one for api) and no more.
        .flag("--max-policy-endpoints", "3")
        .start()?;

    // The first snapshot: the shop namespace's documents (with api.yaml's two) and the
    // MeshConfig.
    let (_, dump) = client.admin("/config_dump")?;
    let dump: serde_json::Value = serde_json::from_str(&dump)?;
    let v1 = dump["snapshot"]["version"].as_u64().unwrap_or(0);
    assert!(v1 > 0, "{dump}");
    assert_eq!(
        dump["snapshot"]["documents"].as_array().map(Vec::len),
        Some(6),
        "{dump}"
    );
    assert_eq!(api_attempts(&client)?, 3);

    // A valid edit to the policy of the very traffic under load: it reaches the proxy, no
    // request fails and no connection is dropped (h2load does not reconnect; the proxy
    // accepts exactly its two connections).
    let opened = client
        .metric(OPENED)?
        .context("the proxy renders every protocol's connection counter")?;
    let sent = api_requests(&client)?;
    let load = {
        let client = client.clone();
        let url = format!("http://{}:8080/", server.ip);
        std::thread::spawn(move || {
            client.sh_ok(&format!(
                "h2load --h1 -c 2 -D 3 {url} | grep -E '^requests:'"
            ))
        })
    };
    wait("the load to flow", || Ok(api_requests(&client)? > sent))?;
    std::fs::write(&api, api_policy(&server, 2)?)?;
    wait("the edit to reach the proxy", || {
        Ok(snapshot_version(&client)? > v1)
    })?;
    let v2 = snapshot_version(&client)?;
    assert_eq!(api_attempts(&client)?, 2, "the edit is in force");
    let out = load.join().expect("load thread")?;
    assert!(out.contains(" 0 failed, 0 errored"), "{out}");
    assert_eq!(
        client.metric(OPENED)?.map(|n| n - opened),
        Some(2.0),
        "no connection was dropped"
    );
    assert_routed(&out, api_requests(&client)? - sent);
    let st = status(&cp)?;
    assert!(st.contains(&format!("policy: version {v2}")), "{st}");
    let line = st
        .lines()
        .find(|l| l.contains("shop/web"))
        .unwrap_or_default();
    assert_eq!(
        line.matches(&v2.to_string()).count(),
        2,
        "sent and acknowledged: {st}"
    );
    assert!(line.contains(" yes "), "in sync: {st}");
    let (doc, code) = status_json(&cp)?;
    assert_eq!(code, Some(0), "every proxy in sync: {doc}");
    assert_eq!(doc["policy"]["version"], v2, "{doc}");
    assert_eq!(doc["proxies"][0]["workload"], "shop/web", "{doc}");
    assert_eq!(doc["proxies"][0]["acked_version"], v2, "{doc}");
    assert_eq!(
        doc["proxies"][0]["nacked_version"],
        serde_json::Value::Null,
        "{doc}"
    );

    // The control plane's own admin port: ready, and its metrics parse with the reference
    // Prometheus parser, the push-to-ACK latency as a histogram with the push in it.
    let out = cp.sh_ok(&format!(
        "curl -sf http://127.0.0.1:5171/ready >/dev/null && curl -s http://127.0.0.1:5171/metrics | {} {}",
        bulwark_tests::python().display(),
        bulwark_tests::py_script("parse_metrics.py").display()
    ))?;
    let parsed: serde_json::Value = serde_json::from_str(&out)?;
    let fam = &parsed["families"];
    assert_eq!(
        fam["bulwark_cp_push_to_ack_seconds"]["type"], "histogram",
        "{out}"
    );
    assert!(
        fam["bulwark_cp_push_to_ack_seconds"]["samples"].as_u64() >= Some(16),
        "{out}"
    );
    assert_eq!(
        fam["bulwark_cp_connected_proxies"]["type"], "gauge",
        "{out}"
    );

    // An invalid edit: rejected with file, line and reason; the proxy keeps version v2.
    let web = dir.join("web.yaml");
    let text = std::fs::read_to_string(&web)?;
    std::fs::write(&web, text.replace("    attempts: 3", "    attempts: 30"))?;
    wait("the rejection", || Ok(status(&cp)?.contains("REJECTED")))?;
    let st = status(&cp)?;
    assert!(
        st.contains("web.yaml:20:5: spec.retries.attempts: must be between 1 and 10, got 30"),
        "{st}"
    );
    assert!(st.contains(&format!("policy: version {v2}")), "{st}");
    assert_eq!(snapshot_version(&client)?, v2);

    // The control plane is killed under load to the Backend: not one request fails, the
    // proxy stays ready and keeps routing by the policy it had.
    let sent = api_requests(&client)?;
    let load = {
        let client = client.clone();
        let url = format!("http://{}:8080/", server.ip);
        std::thread::spawn(move || {
            client.sh_ok(&format!(
                "h2load --h1 -c 2 -D 2 {url} | grep -E '^requests:'"
            ))
        })
    };
    wait("the load to flow", || Ok(api_requests(&client)? > sent))?;
    mesh.kill(cp_pid)?;
    let out = load.join().expect("load thread")?;
    assert!(out.contains(" 0 failed, 0 errored"), "{out}");
    assert_routed(&out, api_requests(&client)? - sent);
    let (code, _) = client.admin("/ready")?;
    assert_eq!(code, 200);
    client.sh_ok(&format!(
        "for i in $(seq 20); do curl -sf -o /dev/null http://{}:8080/ || exit 1; done",
        server.ip
    ))?;
    assert_eq!(snapshot_version(&client)?, v2);
    wait("the proxy to notice", || {
        Ok(client.metric("bulwark_discovery_connected")? == Some(0.0))
    })?;
    assert_eq!(
        client.metric("bulwark_discovery_snapshot_version")?,
        Some(v2 as f64)
    );

    // It comes back (with the file fixed): the proxy reconnects and takes the new version.
    std::fs::write(&web, &text)?;
    start_control_plane(&mut mesh, &cp, &dir)?;
    wait(
        "the proxy to resync",
        || Ok(snapshot_version(&client)? > v2),
    )?;
    let st = status(&cp)?;
    assert!(st.contains("proxies: 1") && st.contains("shop/web"), "{st}");

    // A valid policy this proxy cannot take (a fourth endpoint): it NACKs with the reason,
    // the control plane shows it, and the proxy keeps the snapshot it has.
    let v3 = snapshot_version(&client)?;
    let extra = Policy::from(Backend::new("extra").endpoint(format!("{}:9090", server.ip)));
    std::fs::write(dir.join("extra.yaml"), extra.to_yaml(&[])?)?;
    wait("the NACK", || {
        let rejected = client.metric("bulwark_discovery_snapshots_rejected_total")?;
        Ok(rejected.is_some_and(|n| n >= 1.0))
    })?;
    // The proxy counts the rejection just before it sends the NACK.
    wait("the control plane to hear of it", || {
        Ok(status(&cp)?.contains("--max-policy-endpoints 3"))
    })?;
    let st = status(&cp)?;
    assert!(
        st.contains(
            "the policy names 4 endpoints, more than this proxy takes (--max-policy-endpoints 3)"
        ),
        "{st}"
    );
    let line = st
        .lines()
        .find(|l| l.contains("shop/web"))
        .unwrap_or_default();
    assert!(line.contains(" no "), "not in sync: {st}");
    // A deploy gate: the proxy refused its policy, so status fails.
    let (doc, code) = status_json(&cp)?;
    assert_eq!(code, Some(3), "{doc}");
    assert_eq!(doc["healthy"], false, "{doc}");
    assert!(
        doc["proxies"][0]["nack_reason"]
            .as_str()
            .is_some_and(|r| r.contains("--max-policy-endpoints 3")),
        "{doc}"
    );
    assert_eq!(snapshot_version(&client)?, v3);
    // The control plane logged one JSON object per line, the rejection among them.
    let log = mesh.log_of("control-plane");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("control-plane log: {log}"))?;
    assert!(lines.len() >= 3, "{log}");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["fields"].is_object()),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

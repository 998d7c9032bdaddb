//! The control plane and proxies in network-namespace pods: policy edits reach proxies under
//! load without a failed request, invalid edits are rejected and reported, and proxies keep
//! serving while the control plane is away.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use bulwark_tests::policy::{policy_dir, snapshot_version, start_control_plane, wait_for};
use bulwark_tests::{Mesh, Pod, bin, workspace_root};

fn example_policy_dir(test: &str) -> Result<PathBuf> {
    let dir = policy_dir(test)?;
    let examples = workspace_root().join("control-plane/examples/policy");
    for f in ["mesh.yaml", "web.yaml", "legacy-db.yaml"] {
        std::fs::copy(examples.join(f), dir.join(f))?;
    }
    Ok(dir)
}

fn status(cp: &Pod) -> Result<String> {
    let out = cp
        .cmd(bin("bulwarkctl"))
        .args(["status", "--control-plane", "http://127.0.0.1:5170"])
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
    mesh.testserver(&server, &["--http", "0.0.0.0:8080"])?;
    let dir = example_policy_dir("live")?;
    let cp_pid = start_control_plane(&mut mesh, &cp, &dir)?;
    let endpoint = format!("http://{}:5170", cp.ip);
    let client_ip = client.ip.to_string();
    let flags = [
        "--control-plane",
        &endpoint,
        "--workload",
        "shop/web",
        "--pod-ips",
        &client_ip,
    ];
    mesh.proxy(&client, &flags)?;

    // The first snapshot: the shop namespace's documents and the MeshConfig.
    let (_, dump) = client.admin("/config_dump")?;
    let dump: serde_json::Value = serde_json::from_str(&dump)?;
    let v1 = dump["snapshot"]["version"].as_u64().unwrap_or(0);
    assert!(v1 > 0, "{dump}");
    assert_eq!(
        dump["snapshot"]["documents"].as_array().map(Vec::len),
        Some(4),
        "{dump}"
    );

    // A valid edit under load: it reaches the proxy and no request fails.
    let load = {
        let client = client.clone();
        let url = format!("http://{}:8080/", server.ip);
        std::thread::spawn(move || {
            client.sh_ok(&format!(
                "h2load --h1 -c 2 -D 3 {url} | grep -E '^requests:'"
            ))
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let web = dir.join("web.yaml");
    let text = std::fs::read_to_string(&web)?;
    std::fs::write(&web, text.replace("    attempts: 3", "    attempts: 2"))?;
    wait("the edit to reach the proxy", || {
        Ok(snapshot_version(&client)? > v1)
    })?;
    let v2 = snapshot_version(&client)?;
    let out = load.join().expect("load thread")?;
    assert!(out.contains(" 0 failed, 0 errored"), "{out}");
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

    // An invalid edit: rejected with file, line and reason; the proxy keeps version v2.
    std::fs::write(&web, text.replace("    attempts: 3", "    attempts: 30"))?;
    wait("the rejection", || Ok(status(&cp)?.contains("REJECTED")))?;
    let st = status(&cp)?;
    assert!(
        st.contains("web.yaml:20:5: spec.retries.attempts: must be between 1 and 10, got 30"),
        "{st}"
    );
    assert!(st.contains(&format!("policy: version {v2}")), "{st}");
    assert_eq!(snapshot_version(&client)?, v2);

    // The control plane is killed under load: not one request fails, the proxy stays ready.
    let load = {
        let client = client.clone();
        let url = format!("http://{}:8080/", server.ip);
        std::thread::spawn(move || {
            client.sh_ok(&format!(
                "h2load --h1 -c 2 -D 2 {url} | grep -E '^requests:'"
            ))
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    mesh.kill(cp_pid)?;
    let out = load.join().expect("load thread")?;
    assert!(out.contains(" 0 failed, 0 errored"), "{out}");
    let (code, _) = client.admin("/ready")?;
    assert_eq!(code, 200);
    client.sh_ok(&format!(
        "for i in $(seq 20); do curl -sf -o /dev/null http://{}:8080/ || exit 1; done",
        server.ip
    ))?;
    assert_eq!(snapshot_version(&client)?, v2);
    wait("the proxy to notice", || {
        Ok(client.metric("bulwark_discovery_connected")? == 0.0)
    })?;
    assert_eq!(
        client.metric("bulwark_discovery_snapshot_version")?,
        v2 as f64
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
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

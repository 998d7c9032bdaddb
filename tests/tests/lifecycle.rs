//! Readiness, `await`, admin shutdown and graceful drain under load.

use std::time::{Duration, Instant};

use anyhow::Result;
use bulwark_tests::{Mesh, bin};

#[test]
fn sigterm_lets_in_flight_requests_finish_and_refuses_new_ones() -> Result<()> {
    let mut mesh = Mesh::new("drain")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    mesh.testserver(&server, &["--http", "0.0.0.0:8080"])?;
    let proxy = mesh.proxy(&client, &["--shutdown-grace", "10s"])?;
    let url = format!("http://{}:8080", server.ip);
    // 30 slow requests in flight, plus h2load running over HTTP/2, when SIGTERM arrives.
    let load = {
        let client = client.clone();
        let url = url.clone();
        std::thread::spawn(move || {
            client.sh_ok(&format!(
                "for i in $(seq 30); do curl -s -o /dev/null -w '%{{http_code}}\\n' {url}/delay/1500 & done; \
                 h2load -n 300 -c 2 -m 4 {url}/delay/20 | grep -E '^(requests|status codes):'; wait"
            ))
        })
    };
    // SIGTERM only once the proxy has accepted all 30 slow requests (a connection still in
    // the kernel's accept queue when the listener closes is reset: that is not in flight).
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .metric("bulwark_connections_opened_total{direction=\"outbound\",protocol=\"http1\"}")?
        .is_none_or(|n| n < 30.0)
    {
        assert!(
            Instant::now() < deadline,
            "the 30 requests never reached the proxy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let status = mesh.terminate(proxy.0, Duration::from_secs(15))?;
    let drained_in = t0.elapsed();
    let out = load.join().expect("load thread")?;
    let ok = out.lines().filter(|l| *l == "200").count();
    assert_eq!(ok, 30, "every in-flight request completed: {out}");
    assert!(status.success(), "proxy exited cleanly: {status}");
    assert!(
        drained_in < Duration::from_secs(10),
        "drained in {drained_in:?}"
    );
    // h2load's requests either completed or were never started (GOAWAY, then the listener
    // closed): every request that started succeeded.
    let count = |word: &str| -> Option<u64> {
        let line = out.lines().find(|l| l.starts_with("requests:"))?;
        let before = line.split(&format!(" {word}")).next()?;
        before.rsplit(' ').next()?.parse().ok()
    };
    let (started, succeeded) = (count("started"), count("succeeded"));
    assert!(started.is_some_and(|n| n > 0), "{out}");
    assert_eq!(
        started, succeeded,
        "every started HTTP/2 request succeeded: {out}"
    );
    // With the proxy gone, redirected traffic has nowhere to go.
    let after = client.sh(&format!(
        "curl -s -m 3 -o /dev/null -w '%{{http_code}}' {url}/"
    ))?;
    assert_eq!(String::from_utf8_lossy(&after.stdout), "000");
    Ok(())
}

#[test]
fn ready_waits_for_the_rules_and_await_waits_for_ready() -> Result<()> {
    let mut mesh = Mesh::new("ready")?;
    let pod = mesh.pod("pod")?;
    let proxy_bin = bin("bulwark-proxy");
    // No proxy yet: await gives up after its timeout and does not run the command.
    let out = pod.sh(&format!(
        "{} await --timeout 1s -- echo started",
        proxy_bin.display()
    ))?;
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("started"));

    // Proxy started before init: /ready is 503 and names the missing rule.
    let cmd = bulwark_tests::proxy_command(&pod, None, &[]);
    let pid = mesh.spawn(&pod, "proxy-early", cmd)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let (code, body) = loop {
        let r = pod.admin("/ready");
        if let Ok((code, body)) = r {
            if code != 0 && !body.contains("not checked yet") {
                break (code, body);
            }
        }
        assert!(Instant::now() < deadline, "admin never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("REDIRECT --to-ports 5143"), "{body}");
    let waiter = {
        let pod = pod.clone();
        let proxy_bin = proxy_bin.clone();
        std::thread::spawn(move || {
            pod.sh_ok(&format!(
                "{} await --timeout 20s -- echo started",
                proxy_bin.display()
            ))
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    mesh.init(&pod, &[])?;
    let out = waiter.join().expect("await thread")?;
    assert_eq!(out.trim(), "started");
    mesh.wait_ready(&pod, pid)?;
    Ok(())
}

#[test]
fn admin_shutdown_is_off_by_default_and_loopback_only_when_on() -> Result<()> {
    let mut mesh = Mesh::new("adminshut")?;
    let pod = mesh.pod("pod")?;
    let other = mesh.pod("other")?;
    mesh.proxy(&pod, &[])?;
    let code =
        pod.sh_ok("curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:5191/shutdown")?;
    assert_eq!(code, "404", "disabled by default");
    let proxy = mesh.proxy(&other, &["--admin-shutdown", "true"])?;
    let (pod, other) = (other, pod);
    let remote = other.sh_ok(&format!(
        "curl -s -o /dev/null -w '%{{http_code}}' -X POST http://{}:5191/shutdown",
        pod.ip
    ))?;
    assert_eq!(remote, "403", "not from another pod");
    let get = pod.sh_ok("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5191/shutdown")?;
    assert_eq!(get, "405");
    let local =
        pod.sh_ok("curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:5191/shutdown")?;
    assert_eq!(local, "202");
    let status = mesh.terminate(proxy.0, Duration::from_secs(10))?;
    assert!(status.success());
    Ok(())
}

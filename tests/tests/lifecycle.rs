//! Readiness, `await`, `linger`, admin shutdown and graceful drain under load.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bulwark_tests::{Mesh, ProxyCommand, bin, wait_for};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_refuses_new_ones() -> Result<()> {
    let mut mesh = Mesh::new("drain")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    mesh.testserver(&server).http("0.0.0.0:8080").start()?;
    let proxy = mesh
        .proxy(&client)
        .flag("--shutdown-grace", "10s")
        .start()?;
    let url = format!("http://{}:8080", server.ip);
    let in_background = |script: String| {
        let client = client.clone();
        std::thread::spawn(move || client.sh_ok(&script))
    };
    // 30 slow requests in flight, plus h2load running over HTTP/2, when SIGTERM arrives.
    // In flight means the upstream has them: a connection still in the kernel's accept
    // queue when the listener closes is reset, and one whose request the proxy has not
    // read yet is idle and closed; neither is in flight.
    let slow = in_background(format!(
        "for i in $(seq 30); do curl -s -o /dev/null -w '%{{http_code}}\\n' {url}/delay/1500 & done; wait"
    ));
    wait_for(
        "the 30 slow requests to reach the upstream",
        secs(10),
        || Ok(server.served("*")? >= 30),
    )?;
    let h2 = in_background(format!(
        "h2load -n 300 -c 2 -m 4 {url}/delay/20 | grep -E '^(requests|status codes):'"
    ));
    // Past the slow 30 and h2load's first window (2 connections × 4 streams).
    wait_for("h2load's requests to reach the upstream", secs(10), || {
        Ok(server.served("*")? > 30 + 8)
    })?;
    let t0 = Instant::now();
    let status = mesh.terminate(proxy.0, secs(15))?;
    let drained_in = t0.elapsed();
    let slow = slow.join().expect("curl thread")?;
    let ok = slow.lines().filter(|l| *l == "200").count();
    assert_eq!(ok, 30, "every in-flight request completed: {slow}");
    assert!(status.success(), "proxy exited cleanly: {status}");
    assert!(drained_in < secs(10), "drained in {drained_in:?}");
    // HTTP/2: every request the proxy forwarded was answered. The only failures are the
    // streams still on the wire when the GOAWAY named the last stream it would process: the
    // proxy refused them unread (the client may retry them), at most one window of
    // 2 connections × 4 streams, and none of them reached the upstream.
    let out = h2.join().expect("h2load thread")?;
    let count = |word: &str| -> Result<u64> {
        let line = out.lines().find(|l| l.starts_with("requests:"));
        let n = line
            .and_then(|l| l.split(&format!(" {word}")).next())
            .and_then(|before| before.rsplit(' ').next())
            .and_then(|n| n.parse().ok());
        n.with_context(|| format!("h2load's {word} count: {out}"))
    };
    let (started, succeeded) = (count("started")?, count("succeeded")?);
    assert!(succeeded > 0, "{out}");
    let forwarded = server.served("*")? - 30;
    assert_eq!(
        forwarded, succeeded,
        "every HTTP/2 request that reached the upstream was answered: {out}"
    );
    assert!(
        started - succeeded <= 8,
        "only the streams in flight at the GOAWAY were refused: {out}"
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
    // Reading the rules back needs CAP_NET_ADMIN: this run keeps it and asks for it.
    let early = ProxyCommand::new(&pod)
        .with_net_admin()
        .flag("--verify-redirect", "true");
    let pid = mesh.spawn(&pod, "proxy-early", early.command())?;
    let mut ready = None;
    wait_for("the proxy to have checked its rules", secs(5), || {
        ready = pod
            .admin("/ready")
            .ok()
            .filter(|(code, body)| *code != 0 && !body.contains("not checked yet"));
        Ok(ready.is_some())
    })?;
    let (code, body) = ready.unwrap_or_default();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("REDIRECT --to-ports 5143"), "{body}");
    // `await` is running before the rules are in: it must wait for them.
    let running = std::env::temp_dir().join(format!("bulwark-await-{}", std::process::id()));
    let waiter = {
        let pod = pod.clone();
        let script = format!(
            "touch {} && exec {} await --timeout 20s -- echo started",
            running.display(),
            proxy_bin.display()
        );
        std::thread::spawn(move || pod.sh_ok(&script))
    };
    wait_for("await to start", secs(5), || Ok(running.exists()))?;
    let _ = std::fs::remove_file(&running);
    assert!(
        !waiter.is_finished(),
        "await returned before the rules were in"
    );
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
    mesh.proxy(&pod).start()?;
    let code =
        pod.sh_ok("curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:5191/shutdown")?;
    assert_eq!(code, "404", "disabled by default");
    let proxy = mesh
        .proxy(&other)
        .flag("--admin-shutdown", "true")
        .start()?;
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
    let status = mesh.terminate(proxy.0, secs(10))?;
    assert!(status.success());
    Ok(())
}

/// The runtime has the workers `--worker-threads` asks for (one by default), no more: a
/// sidecar limited to one core gains nothing from a worker per host CPU. The process says
/// when it started and which build it is, and logs to a file without colour escapes.
#[test]
fn the_runtime_runs_as_many_workers_as_asked_and_the_process_describes_itself() -> Result<()> {
    let workers = |pod: &bulwark_tests::Pod| -> Result<u64> {
        let (_, body) = pod.admin("/stats")?;
        let stats: serde_json::Value = serde_json::from_str(&body)?;
        stats["process"]["runtime_workers"]
            .as_u64()
            .context("/stats says how many workers run")
    };
    let mut mesh = Mesh::new("workers")?;
    let one = mesh.pod("one")?;
    let three = mesh.pod("three")?;
    mesh.proxy(&one).start()?;
    mesh.proxy(&three).flag("--worker-threads", "3").start()?;
    // The runtime's own count: not one per host CPU (this host has two).
    assert_eq!((workers(&one)?, workers(&three)?), (1, 3));
    let (_, dump) = three.admin("/config_dump")?;
    assert!(dump.contains("\"worker_threads\": 3"), "{dump}");
    // It says when it started and what it is.
    let started = one.metric("process_start_time_seconds")?.unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    assert!(
        (now - started).abs() < 120.0,
        "started {started}, now {now}"
    );
    let build = format!(
        "bulwark_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(one.metric(&build)?, Some(1.0));
    // Its log goes to a file, not a terminal: plain text, no colour escapes.
    let log = mesh.log_of(&format!("proxy-{}", one.ns));
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour escapes in a log file: {log:?}"
    );
    Ok(())
}

/// The log filter changes at run time from loopback (Linkerd's `/proxy-log-level`), never
/// from another pod, and a filter that does not parse is refused with the reason.
#[test]
fn the_log_level_changes_at_run_time_from_loopback_only() -> Result<()> {
    let mut mesh = Mesh::new("loglevel")?;
    let pod = mesh.pod("pod")?;
    let other = mesh.pod("other")?;
    mesh.proxy(&pod).start()?;
    let put = |from: &bulwark_tests::Pod, host: &str, level: &str| {
        from.sh_ok(&format!(
            "curl -s -w ' %{{http_code}}' -X PUT 'http://{host}:5191/log-level?level={level}'"
        ))
    };
    let level = || -> Result<String> { Ok(pod.admin("/log-level")?.1.trim().to_string()) };
    // The harness starts proxies with BULWARK_LOG=info,bulwark_proxy=debug; the filter
    // reads back as tracing writes it (most specific directive first).
    let started = "bulwark_proxy=debug,info";
    assert_eq!(level()?, started);
    let remote = put(&other, &pod.ip.to_string(), "info")?;
    assert!(remote.ends_with(" 403"), "{remote}");
    let bad = put(&pod, "127.0.0.1", "bulwark_proxy=loud")?;
    assert!(bad.ends_with(" 400") && bad.contains("loud"), "{bad}");
    assert_eq!(level()?, started);

    let log = || mesh.log_of(&format!("proxy-{}", pod.ns));
    // Dialling the proxy's own outbound port is refused with a debug line (not redirected).
    let poke = || pod.sh("curl -s -o /dev/null -m 2 http://127.0.0.1:5140/");
    let set = put(&pod, "127.0.0.1", "info")?;
    assert!(set.ends_with(" 200"), "{set}");
    assert_eq!(level()?, "info");
    let mark = log().len();
    poke()?;
    // A negative check: what the request would have logged at debug has had time to land.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!log()[mark..].contains("DEBUG"), "debug lines at info");
    let set = put(&pod, "127.0.0.1", "info,bulwark_proxy=debug")?;
    assert!(set.ends_with(" 200"), "{set}");
    poke()?;
    wait_for("debug lines again", secs(5), || {
        Ok(log()[mark..].contains("DEBUG"))
    })?;
    Ok(())
}

/// A classic sidecar's preStop hook: `linger` holds the proxy's SIGTERM back while the app
/// still has a call out through it, lets it go once the app has stopped calling out, and
/// never holds it past its timeout.
#[test]
fn linger_waits_for_the_apps_last_outbound_call_and_no_longer_than_its_timeout() -> Result<()> {
    let mut mesh = Mesh::new("linger")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    mesh.testserver(&server).http("0.0.0.0:8080").start()?;
    mesh.proxy(&client).start()?;
    let proxy_bin = bin("bulwark-proxy");
    // The app's last call is under way (the proxy counts its connection) when linger starts;
    // the log says in which order the two ended.
    let run = |delay_ms: u64, linger: &str| {
        client.sh_ok(&format!(
            "log=/tmp/bw-linger-$$; \
             (curl -s -o /dev/null -w 'call %{{http_code}}\\n' http://{}:8080/delay/{delay_ms} >> $log) & \
             for i in $(seq 50); do curl -s -m 1 http://127.0.0.1:5191/stats | grep -Eq '\"outbound\": ?[1-9]' && break; sleep 0.1; done; \
             {} linger {linger} >> $log; echo linger exit $? >> $log; wait; cat $log; rm -f $log",
            server.ip,
            proxy_bin.display()
        ))
    };
    let out = run(1500, "--quiet 500ms --timeout 20s")?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "call 200",
            "no outbound connection for 500ms: the app has stopped calling out",
            "linger exit 0"
        ],
        "{out}"
    );
    // A call that outlasts the timeout: linger gives up first, and still exits 0 so the
    // kubelet goes on to SIGTERM and the drain.
    let out = run(4000, "--quiet 500ms --timeout 1s")?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("gave up after 1s: 1 outbound"),
        "{out}"
    );
    assert_eq!(lines[1..], ["linger exit 0", "call 200"], "{out}");
    Ok(())
}

//! The iptables rules in real network namespaces: idempotence, --check, skips, loops, IPv6.

use anyhow::Result;
use bulwark_tests::{Mesh, bin};

#[test]
fn init_is_idempotent_and_check_fails_when_rules_are_missing() -> Result<()> {
    let mut mesh = Mesh::new("init")?;
    let pod = mesh.pod("pod")?;
    let flags = [
        "--skip-outbound-ports",
        "443",
        "--skip-outbound-cidrs",
        "169.254.169.254/32",
    ];
    mesh.init(&pod, &flags)?;
    mesh.init(&pod, &flags)?;
    let rules = pod.sh_ok("iptables-save -t nat | grep -c '^-A.*BULWARK'")?;
    assert_eq!(
        rules.trim(),
        "10",
        "running init twice leaves one set of rules"
    );
    let v6 = pod.sh_ok("ip6tables-save -t nat | grep -c '^-A.*BULWARK'")?;
    assert_eq!(v6.trim(), "9", "IPv6 rules too (no IPv4 CIDR skip)");
    let mut check = pod.cmd(bin("bulwark-proxy"));
    check.arg("init").arg("--check").args(flags);
    assert!(check.status()?.success());
    pod.sh_ok("iptables -t nat -F BULWARK_OUTPUT")?;
    let out = check.output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing `-A BULWARK_OUTPUT -p tcp -j REDIRECT --to-ports 5140`"),
        "{err}"
    );
    Ok(())
}

#[test]
fn dry_run_prints_rules_without_touching_the_tables() -> Result<()> {
    let mut mesh = Mesh::new("dryrun")?;
    let pod = mesh.pod("pod")?;
    let out = pod.sh_ok(&format!(
        "{} init --dry-run --skip-outbound-cidrs 10.96.0.0/12",
        bin("bulwark-proxy").display()
    ))?;
    assert!(
        out.contains("-A BULWARK_OUTPUT -d 10.96.0.0/12 -j RETURN"),
        "{out}"
    );
    assert!(
        out.contains("-A BULWARK_OUTPUT -d ::1/128 -o lo -j RETURN"),
        "{out}"
    );
    let rules = pod.sh("iptables-save -t nat | grep -c BULWARK")?;
    assert_eq!(String::from_utf8_lossy(&rules.stdout).trim(), "0");
    Ok(())
}

#[test]
fn skipped_cidrs_and_ports_bypass_the_proxy_and_the_rest_does_not() -> Result<()> {
    let mut mesh = Mesh::new("skips")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    let other = mesh.pod("other")?;
    for pod in [&server, &other] {
        mesh.testserver(pod)
            .http("0.0.0.0:8080")
            .http("0.0.0.0:9090")
            .start()?;
    }
    mesh.init(
        &client,
        &[
            "--skip-outbound-cidrs",
            &format!("{}/32", other.ip),
            "--skip-outbound-ports",
            "9090",
        ],
    )?;
    mesh.proxy(&client).without_init().start()?;
    for url in [
        format!("http://{}:8080/", server.ip),
        format!("http://{}:8080/", other.ip),
        format!("http://{}:9090/", server.ip),
    ] {
        client.sh_ok(&format!("curl -sf -o /dev/null {url}"))?;
    }
    let seen = |host: &str| client.requests("outbound", host, "2xx");
    assert_eq!(
        seen(&format!("{}:8080", server.ip))?,
        Some(1.0),
        "redirected"
    );
    assert_eq!(seen(&format!("{}:8080", other.ip))?, None, "skipped CIDR");
    assert_eq!(seen(&format!("{}:9090", server.ip))?, None, "skipped port");
    // Not one request the proxy saw is unaccounted for, whatever label it got.
    assert_eq!(
        client.requests_total("outbound")?,
        1.0,
        "only the redirected one"
    );
    Ok(())
}

#[test]
fn the_proxys_own_traffic_and_direct_connections_do_not_loop() -> Result<()> {
    let mut mesh = Mesh::new("loops")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    mesh.testserver(&server).http("0.0.0.0:8080").start()?;
    mesh.testserver(&client)
        .http("0.0.0.0:8080")
        .name("self")
        .start()?;
    mesh.proxy(&client).start()?;
    // An app connecting straight to the outbound port (not redirected) is refused rather
    // than forwarded back into the proxy.
    let out = client.sh("curl -s -m 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:5140/")?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");
    assert_eq!(
        client.metric(
            "bulwark_proxy_errors_total{direction=\"outbound\",reason=\"not_redirected\"}"
        )?,
        Some(1.0)
    );
    // 100 requests out: each is proxied exactly once (a loop would multiply them).
    client.sh_ok(&format!(
        "for i in $(seq 100); do curl -sf -o /dev/null http://{}:8080/; done",
        server.ip
    ))?;
    let count = client.sh_ok(&format!("curl -s http://{}:8080/count", server.ip))?;
    assert_eq!(count.trim(), "101");
    // Loopback to 127.0.0.1 bypasses the proxy; the pod's own IP goes through it.
    client.sh_ok("curl -sf -o /dev/null http://127.0.0.1:8080/")?;
    client.sh_ok(&format!("curl -sf -o /dev/null http://{}:8080/", client.ip))?;
    let own = client.requests("outbound", &format!("{}:8080", client.ip), "2xx")?;
    assert_eq!(own, Some(1.0));
    assert_eq!(client.requests("outbound", "127.0.0.1:8080", "2xx")?, None);
    // The 101 requests to the server and the one to the pod's own IP: nothing else.
    assert_eq!(client.requests_total("outbound")?, 102.0);
    Ok(())
}

#[test]
fn ipv6_traffic_is_intercepted_in_both_directions() -> Result<()> {
    let mut mesh = Mesh::new("ipv6")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    mesh.testserver(&server).http("[::]:8081").start()?;
    // `init --ipv6` values; `true`, the older spelling, still reads as `on`.
    mesh.proxy(&server).flag("--ipv6", "on").start()?;
    mesh.proxy(&client).flag("--ipv6", "true").start()?;
    let out = client.sh_ok(&format!(
        "curl -sf -g 'http://[{}]:8081/headers'",
        server.ip6
    ))?;
    assert!(out.contains(&format!("[{}]:8081", server.ip6)), "{out}");
    let authority = format!("[{}]:8081", server.ip6);
    for (pod, dir) in [(&client, "outbound"), (&server, "inbound")] {
        let n = pod.requests(dir, &authority, "2xx")?;
        assert_eq!(n, Some(1.0), "{dir}");
    }
    Ok(())
}

#[test]
fn init_proves_the_rules_redirect_and_the_proxy_needs_no_privilege() -> Result<()> {
    let mut mesh = Mesh::new("capfree")?;
    let (client, server) = (mesh.pod("client")?, mesh.pod("server")?);
    mesh.testserver(&server).http("0.0.0.0:8080").start()?;

    // init applies the rules, then proves them: its own connection to the pod's address
    // lands on the outbound port with the sentinel as its original destination.
    let out = mesh.init(&client, &[])?;
    assert!(
        out.contains(&format!(
            "redirection verified: a connection to {}:15999 arrived on the outbound port 5140",
            client.ip
        )),
        "{out}"
    );

    // The sidecar: UID 5102, no capability at all, no new privileges, and still ready and
    // intercepting.
    let pid = mesh.proxy(&client).without_init().start()?.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert!(field("Uid:").starts_with("5102"), "{status}");
    for caps in ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(caps), "0000000000000000", "{caps} {status}");
    }
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    client.sh_ok(&format!("curl -sf -o /dev/null http://{}:8080/", server.ip))?;
    assert_eq!(
        client.requests("outbound", &format!("{}:8080", server.ip), "2xx")?,
        Some(1.0)
    );

    // A rule ahead of ours that takes the sentinel's traffic away: init fails and names
    // the rule it depends on.
    let other = mesh.pod("other")?;
    other.sh_ok("iptables -t nat -I OUTPUT 1 -p tcp --dport 15999 -j ACCEPT")?;
    let failed = other.sh(&format!("{} init", bin("bulwark-proxy").display()))?;
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{err}");
    assert!(
        err.contains("outbound redirection does not work")
            && err.contains("-A BULWARK_OUTPUT -p tcp -j REDIRECT --to-ports 5140"),
        "{err}"
    );
    Ok(())
}

//! The local mesh demo: two pods in network namespaces with real iptables interception, a
//! server with an injected fault, real HTTP/1.1, HTTP/2 and server-speaks-first traffic,
//! then what each proxy saw, read from its admin port.

use std::time::Instant;

use anyhow::{Context, Result};
use bulwark_tests::{Mesh, Pod};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Requests per load phase.
    #[arg(long, default_value_t = 20_000)]
    requests: u32,
    /// Fraction of requests the server fails with 503 (the injected fault).
    #[arg(long, default_value_t = 0.02)]
    fail_rate: f64,
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

/// Runs one h2load phase in `pod` and prints its summary lines.
fn load_phase(pod: &Pod, n: u32, what: &str, cmd: &str) -> Result<()> {
    step(n, &format!("{what}: {cmd}"));
    let out = pod.sh_ok(cmd)?;
    let summary = ["finished in", "requests:", "status codes:"];
    for l in out
        .lines()
        .filter(|l| summary.iter().any(|p| l.starts_with(p)))
    {
        println!("    {l}");
    }
    Ok(())
}

fn print_stats(pod: &Pod, who: &str) -> Result<()> {
    let (_, body) = pod.admin("/stats")?;
    let stats: serde_json::Value = serde_json::from_str(&body).context("parsing /stats")?;
    println!("    {who} ({}), latency to response headers in ms:", pod.ip);
    println!(
        "      {:<9} {:<18} {:<6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "direction", "authority", "status", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for r in stats["latency"].as_array().into_iter().flatten() {
        println!(
            "      {:<9} {:<18} {:<6} {:>7} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3}",
            r["direction"].as_str().unwrap_or(""),
            r["authority"].as_str().unwrap_or(""),
            r["status_class"].as_str().unwrap_or(""),
            r["count"],
            r["p50_ms"].as_f64().unwrap_or(0.0),
            r["p90_ms"].as_f64().unwrap_or(0.0),
            r["p99_ms"].as_f64().unwrap_or(0.0),
            r["p999_ms"].as_f64().unwrap_or(0.0),
            r["max_ms"].as_f64().unwrap_or(0.0),
        );
    }
    let p = &stats["process"];
    println!(
        "      proxy process: RSS {:.1} MiB (peak {:.1} MiB), {} open fds, {:.2} s CPU",
        p["rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        p["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        p["open_fds"],
        p["cpu_seconds"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let t0 = Instant::now();
    let mut mesh = Mesh::new("demo")?;
    step(
        1,
        "creating pods 'control-plane', 'client' and 'server' (network namespaces on a bridge)",
    );
    let cp = mesh.pod("cp")?;
    let client = mesh.pod("client")?;
    let server = mesh.pod("server")?;
    println!(
        "    control plane {}  client {}  server {}",
        cp.ip, client.ip, server.ip
    );
    let examples = bulwark_tests::workspace_root().join("control-plane/examples/policy");
    let mut serve = cp.cmd(bulwark_tests::bin("bulwark-control-plane"));
    serve.args(["serve", "--policy-dir"]).arg(&examples);
    mesh.spawn(&cp, "control-plane", serve)?;
    mesh.wait_listening(&cp, 5170)?;
    println!(
        "    bulwark-control-plane serving the example policy ({})",
        examples.display()
    );

    step(
        2,
        "starting the server app: HTTP on :8080 with an injected fault, a server-speaks-first service on :7025",
    );
    let fail = format!("{}", args.fail_rate);
    mesh.testserver(
        &server,
        &[
            "--http",
            "0.0.0.0:8080",
            "--banner",
            "0.0.0.0:7025",
            "--name",
            "server",
            "--fail-rate",
            &fail,
        ],
    )?;
    println!(
        "    fault injected: {:.1}% of requests to / fail with 503",
        args.fail_rate * 100.0
    );

    step(
        3,
        "bulwark-proxy init (iptables REDIRECT) and bulwark-proxy run as UID 5102 in both pods",
    );
    let endpoint = format!("http://{}:5170", cp.ip);
    let (client_ip, server_ip) = (client.ip.to_string(), server.ip.to_string());
    mesh.proxy(
        &server,
        &[
            "--control-plane",
            &endpoint,
            "--workload",
            "shop/web",
            "--pod-ips",
            &server_ip,
        ],
    )?;
    mesh.proxy(
        &client,
        &[
            "--control-plane",
            &endpoint,
            "--workload",
            "shop/frontend",
            "--pod-ips",
            &client_ip,
        ],
    )?;
    let rules = client.sh_ok("iptables-save -t nat | grep -c '^-A.*BULWARK'")?;
    println!(
        "    {} nat rules per pod; both proxies have applied the control plane's snapshot and report /ready 200",
        rules.trim()
    );
    let status = cp
        .cmd(bulwark_tests::bin("bulwarkctl"))
        .args(["status", "--control-plane", "http://127.0.0.1:5170"])
        .output()?;
    for l in String::from_utf8_lossy(&status.stdout).lines() {
        println!("    {l}");
    }

    let url = format!("http://{}:8080/", server.ip);
    load_phase(
        &client,
        4,
        "HTTP/1.1 load from the client pod",
        &format!("h2load --h1 -n {} -c 8 {url}", args.requests),
    )?;
    load_phase(
        &client,
        5,
        "HTTP/2 (h2c) load",
        &format!("h2load -n {} -c 4 -m 16 {url}", args.requests),
    )?;

    step(
        6,
        "server-speaks-first: 4 connections to :7025 (unknown port, the server talks first)",
    );
    let py = bulwark_tests::python();
    let probe = if py.exists() {
        client.sh_ok(&format!(
            "{} {} banner {} 7025 4",
            py.display(),
            bulwark_tests::py_script("tcp_probe.py").display(),
            server.ip
        ))?
    } else {
        client.sh_ok(&format!(
            "python3 {} banner {} 7025 4",
            bulwark_tests::py_script("tcp_probe.py").display(),
            server.ip
        ))?
    };
    println!(
        "    seconds each connection waited for the banner: {}",
        probe.trim()
    );
    let (_, learned) = client.admin("/detect")?;
    let learned: serde_json::Value = serde_json::from_str(&learned)?;
    println!("    learned opaque ports (GET /detect): {learned}");

    step(7, "what the proxies saw (GET /stats on each admin port)");
    print_stats(&client, "client proxy")?;
    print_stats(&server, "server proxy")?;
    let failed = client.requests("outbound", &format!("{}:8080", server.ip), "5xx")?;
    println!(
        "\n    the injected fault is visible: {failed} responses in the 5xx class on the client side."
    );
    println!(
        "    (retries, budgets and outlier detection that absorb such faults are not built yet;"
    );
    println!("     this demo will show them absorbing the fault once they are.)");
    println!(
        "\ndone in {:.1}s; namespaces and processes cleaned up.",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

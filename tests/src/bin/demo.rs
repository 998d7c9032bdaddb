//! The local mesh demo: a control plane, a client and three replicas of a service in network
//! namespaces with real iptables interception, one replica with an injected fault. The same
//! load runs without and then with a resilience policy (pushed live), then the demo prints
//! what retries and outlier detection did, mesh TLS and authorization, the admission
//! webhooks, the control plane in cluster mode (following a recorded Kubernetes API), and
//! what each proxy saw.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bulwark_tests::identity::{MeshCa, meshed};
use bulwark_tests::policy::snapshot_version;
use bulwark_tests::resources::{
    Algorithm, Backend, OutlierDetection, Policy, Retries, RetryBudget, RetryOn, Timeouts,
    TrafficPolicy,
};
use bulwark_tests::{Fault, Mesh, Pod, wait_for};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Requests per load phase.
    #[arg(long, default_value_t = 20_000)]
    requests: u32,
    /// Fraction of its requests the faulty replica fails with 503 (the injected fault).
    #[arg(long, default_value_t = 1.0)]
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

/// The demo's policy: the Backend `checkout` over the replicas at `endpoints`, called with a
/// 2 s request timeout and `resilience`'s retries, outlier detection and balancing.
fn checkout_policy(endpoints: &[Ipv4Addr], resilience: TrafficPolicy) -> Result<String> {
    Policy::new()
        .with(Backend::new("checkout").replicas(0..endpoints.len()))
        .with(resilience.timeouts(Timeouts::new().request(Duration::from_secs(2))))
        .to_yaml(endpoints)
}

/// No retries, no outlier detection, round robin.
fn without_resilience() -> TrafficPolicy {
    TrafficPolicy::for_backend("checkout")
        .retries(Retries::attempts(1))
        .outlier(OutlierDetection::new().consecutive_5xx(0))
        .load_balancer(Algorithm::RoundRobin)
}

/// Retries on 5xx, resets and refused connects within a 20 % budget; ejection after two
/// 5xx in a row; still round robin, so it is the ejection that takes the bad replica out.
fn with_resilience() -> TrafficPolicy {
    let retries = Retries::attempts(3)
        .on([RetryOn::Status5xx, RetryOn::Reset, RetryOn::ConnectFailure])
        .budget(RetryBudget {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        });
    let outliers = OutlierDetection::new()
        .consecutive_5xx(2)
        .interval(Duration::from_secs(5))
        .base_ejection_time(Duration::from_secs(30));
    TrafficPolicy::for_backend("checkout")
        .retries(retries)
        .outlier(outliers)
        .load_balancer(Algorithm::RoundRobin)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let t0 = Instant::now();
    let mut mesh = Mesh::new("demo")?;
    step(
        1,
        "creating pods 'control-plane', 'client', three 'checkout' replicas, 'ads' and an unmeshed 'outsider' (network namespaces on a bridge)",
    );
    let cp = mesh.pod("cp")?;
    let client = mesh.pod("client")?;
    let replicas: Vec<Pod> = (0..3)
        .map(|i| mesh.pod(&format!("checkout{i}")))
        .collect::<Result<_>>()?;
    let ads = mesh.pod("ads")?;
    let outsider = mesh.pod("outsider")?;
    println!(
        "    control plane {}  client {}  checkout {}",
        cp.ip,
        client.ip,
        replicas
            .iter()
            .map(|p| p.ip.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    // The example policy, plus a Backend naming this demo's replicas.
    let dir = bulwark_tests::policy::policy_dir("demo")?;
    let examples = bulwark_tests::workspace_root().join("control-plane/examples/policy");
    for f in ["mesh.yaml", "web.yaml", "legacy-db.yaml"] {
        std::fs::copy(examples.join(f), dir.join(f))?;
    }
    let endpoints: Vec<Ipv4Addr> = replicas.iter().map(|p| p.ip).collect();
    let policy_file = dir.join("checkout.yaml");
    std::fs::write(
        &policy_file,
        checkout_policy(&endpoints, without_resilience())?,
    )?;
    // The control plane is the mesh's CA: a local root and issuer made in a state directory.
    let ca = MeshCa::new("demo")?;
    let hook = Webhook::new()?;
    let hook_args = hook.args();
    let hook_args: Vec<&str> = hook_args.iter().map(String::as_str).collect();
    ca.start_control_plane(&mut mesh, &cp, &dir, "24h", &hook_args)?;
    println!(
        "    bulwark-control-plane serving the example policy and a Backend 'checkout' with the three replicas,"
    );
    println!(
        "    over TLS, as the mesh's certificate authority (a local root and issuer made in its state directory)"
    );

    step(
        2,
        "starting the apps: HTTP on :8080 in each replica (replica 2 with an injected fault), a server-speaks-first service on :7025",
    );
    for (i, pod) in replicas.iter().enumerate() {
        let mut server = mesh
            .testserver(pod)
            .http("0.0.0.0:8080")
            .banner("0.0.0.0:7025")
            .name(&format!("checkout-{i}"));
        if i == 2 {
            server = server.fault(Fault::FailRate(args.fail_rate));
        }
        server.start()?;
    }
    println!(
        "    fault injected: checkout-2 answers {:.0}% of its requests with 503",
        args.fail_rate * 100.0
    );

    step(
        3,
        "bulwark-proxy init (iptables REDIRECT, then proven by a connection through it) and bulwark-proxy run as UID 5102 with every capability dropped in every pod, each with a bootstrap token (bulwarkctl token create)",
    );
    let tokens = [
        ca.token("shop", "checkout")?,
        ca.token("shop", "frontend")?,
        ca.token("shop", "ads")?,
    ];
    let anchors = ca.anchors();
    let others = [
        (&client, "shop/frontend", "frontend", &tokens[1]),
        (&ads, "shop/ads", "ads", &tokens[2]),
    ];
    for (pod, workload, sa, token) in replicas
        .iter()
        .map(|p| (p, "shop/checkout", "checkout", &tokens[0]))
        .chain(others)
    {
        let mut proxy = mesh.proxy(pod);
        if pod.ns == client.ns {
            // One request in 500 written to stdout, as an operator would sample a busy pod.
            proxy = proxy
                .flag("--access-log", "json")
                .flag("--access-log-sample", "500");
        }
        if pod.ns == ads.ns {
            // Its HTTP/1 requests ride one HTTP/2 mesh connection (step 10 shows it).
            proxy = proxy.flag("--mesh-http1", "multiplexed");
        }
        let pid = meshed(proxy, pod, &cp, &anchors, (workload, sa), token)
            .start()?
            .0;
        if pod.ns == client.ns {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
                    .unwrap_or_default()
            };
            println!(
                "    client proxy process: UID {}, effective capabilities {}, NoNewPrivs {}",
                field("Uid:"),
                field("CapEff:"),
                field("NoNewPrivs:")
            );
        }
    }
    for (pod, name) in [(&client, "client"), (&replicas[0], "checkout-0")] {
        let (_, body) = pod.admin("/identity")?;
        let id: serde_json::Value = serde_json::from_str(&body).context("parsing /identity")?;
        println!(
            "    {name} proxy is {} (GET /identity: {}, {}, expires in {} s, renews at 70 %)",
            id["spiffe_id"].as_str().unwrap_or(""),
            id["state"].as_str().unwrap_or(""),
            id["certificate"]["issuer"].as_str().unwrap_or(""),
            id["expires_in_seconds"]
        );
    }
    let rules = client.sh_ok("iptables-save -t nat | grep -c '^-A.*BULWARK'")?;
    println!(
        "    {} nat rules per pod; every proxy applied the control plane's snapshot and reports /ready 200",
        rules.trim()
    );
    print_status(&cp, &anchors)?;

    let url = format!("http://{}:8080/", replicas[0].ip);
    load_phase(
        &client,
        4,
        "without resilience (attempts: 1, no outlier detection, round robin): HTTP/1.1 load to checkout",
        &format!("h2load --h1 -n {} -c 8 {url}", args.requests),
    )?;

    step(
        5,
        "the policy is edited live: retries on 5xx within a 20 % budget and outlier detection (still round robin, so it is the ejection that takes the bad replica out)",
    );
    let before = snapshot_version(&client)?;
    std::fs::write(
        &policy_file,
        checkout_policy(&endpoints, with_resilience())?,
    )?;
    wait_for(
        "the client proxy to take the edit",
        Duration::from_secs(10),
        || Ok(snapshot_version(&client)? > before),
    )?;
    println!(
        "    the client proxy moved from version {before} to {} without dropping a connection",
        snapshot_version(&client)?
    );
    load_phase(
        &client,
        6,
        "with resilience: the same HTTP/1.1 load",
        &format!("h2load --h1 -n {} -c 8 {url}", args.requests),
    )?;
    load_phase(
        &client,
        7,
        "HTTP/2 (h2c) load",
        &format!("h2load -n {} -c 4 -m 16 {url}", args.requests),
    )?;
    print_resilience(&client)?;

    step(
        8,
        "server-speaks-first: 4 connections to :7025 (unknown port, the server talks first)",
    );
    let py = bulwark_tests::python();
    let py = if py.exists() {
        py.display().to_string()
    } else {
        "python3".into()
    };
    let probe = client.sh_ok(&format!(
        "{py} {} banner {} 7025 4",
        bulwark_tests::py_script("tcp_probe.py").display(),
        replicas[0].ip
    ))?;
    println!(
        "    seconds each connection waited for the banner: {}",
        probe.trim()
    );
    let (_, learned) = client.admin("/detect")?;
    let learned: serde_json::Value = serde_json::from_str(&learned)?;
    println!("    learned opaque ports (GET /detect): {learned}");

    step(
        9,
        "hostile clients meet the limits: a smuggling-shaped head, and an HTTP/2 rapid reset of streams already forwarded",
    );
    let smuggle = "504f5354202f20485454502f312e310d0a486f73743a20630d0a436f6e74656e742d4c656e6774683a20330d0a436f6e74656e742d4c656e6774683a20350d0a0d0a68656c6c6f";
    let answer = client.sh_ok(&format!(
        "{py} {} raw {} 8080 {smuggle}",
        bulwark_tests::py_script("tcp_probe.py").display(),
        replicas[0].ip
    ))?;
    println!("    two Content-Lengths: {}", answer.trim());
    let upstream_total = || -> Result<u64> {
        replicas
            .iter()
            .try_fold(0, |sum, r| Ok::<_, anyhow::Error>(sum + r.served("*")?))
    };
    let before = upstream_total()?;
    let attack = client.sh_ok(&format!(
        "{} {}:8080 --streams 2000 --batch 50 --hold-ms 300 --path /delay/2000",
        bulwark_tests::bin("bulwark-rapid-reset").display(),
        replicas[0].ip
    ))?;
    let attack: serde_json::Value = serde_json::from_str(attack.trim())?;
    println!(
        "    rapid reset: the client opened {} streams and reset {} before its proxy cut it off ({}); the replicas received {} of them",
        attack["opened"],
        attack["reset"],
        attack["refused"].as_str().unwrap_or("not cut off"),
        upstream_total()? - before
    );
    let (_, metrics) = client.admin("/metrics")?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("bulwark_http_connections_limited_total{"))
    {
        println!("    {line}");
    }

    mesh_tls(&mut mesh, [&client, &ads], &replicas[0])?;
    strict_and_authorized(
        &dir,
        [&client, &ads, &outsider],
        &replicas,
        &examples.join("mesh.yaml"),
    )?;

    hook.show(&cp)?;
    cluster_mode(&mut mesh, &cp)?;

    operate(&mesh, &client, &replicas[0])?;

    step(15, "what the proxies saw (GET /stats on each admin port)");
    print_stats(&client, "client proxy")?;
    print_stats(&replicas[2], "checkout-2 proxy (the faulty replica)")?;
    let _ = std::fs::remove_dir_all(&dir);
    hook.remove();
    println!(
        "\ndone in {:.1}s; namespaces and processes cleaned up.",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What an operator reads: the request counter by status and classification, a sampled
/// access-log line, an OpenMetrics exemplar tying a latency bucket to a trace, and the live
/// page.
fn operate(mesh: &Mesh, client: &Pod, replica: &Pod) -> Result<()> {
    step(
        14,
        "operating it: request counts by status, the access log, exemplars, validate, the live page",
    );
    let (_, metrics) = client.admin("/metrics")?;
    let authority = format!("authority=\"{}:8080\"", replica.ip);
    println!(
        "    bulwark_requests_total on the client proxy (every response, counted when it ended):"
    );
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("bulwark_requests_total{") && l.contains(&authority))
    {
        println!("      {line}");
    }
    let label = format!("proxy-{}", client.ns);
    let logged: Vec<String> = mesh
        .log_of(&label)
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("\"duration_ms\""))
        .map(str::to_string)
        .collect();
    println!(
        "    the client proxy's access log (--access-log json, one request in 500): {} lines; the last:",
        logged.len()
    );
    if let Some(last) = logged.last() {
        println!("      {last}");
    }
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    client.sh_ok(&format!(
        "curl -s -o /dev/null -H 'traceparent: 00-{trace}-00f067aa0ba902b7-01' http://{}:8080/",
        replica.ip
    ))?;
    let om = client
        .sh_ok("curl -s -H 'Accept: application/openmetrics-text' http://127.0.0.1:5191/metrics")?;
    if let Some(line) = om.lines().find(|l| l.contains(trace)) {
        println!("    a traced request, as the OpenMetrics exemplar of its latency bucket:");
        println!("      {line}");
    }
    let out = std::process::Command::new(bulwark_tests::bin("bulwarkctl"))
        .current_dir(bulwark_tests::workspace_root().join("tests/golden/validate"))
        .args(["validate", "several-mistakes.yaml"])
        .output()?;
    println!(
        "    bulwarkctl validate on a policy with six mistakes (exit {}): every one, in order",
        out.status.code().unwrap_or(-1)
    );
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        println!("      {line}");
    }
    let (code, page) = client.admin("/")?;
    println!(
        "    GET / on the admin port: {code}, the live page ({} KiB, no external assets): latency, rates and endpoints, refreshed every 2 s",
        page.len() / 1024
    );
    Ok(())
}

/// Requests each pod served since `before`.
fn served_since(pods: &[Pod], before: &[u64]) -> Result<Vec<u64>> {
    pods.iter()
        .zip(before)
        .map(|(p, b)| Ok(p.served("*")? - b))
        .collect()
}

/// Cluster mode: a second control plane follows a recorded Kubernetes API; a client pod
/// calls a Service's cluster IP and its proxy balances it over the EndpointSlice's pods,
/// drains one that turns terminating, and the policy's status says it was accepted.
fn cluster_mode(mesh: &mut Mesh, cp: &Pod) -> Result<()> {
    use bulwark_tests::kubernetes::{RecordedApi, endpoint_slice, endpoints, pod_object, service};
    step(
        13,
        "cluster mode: a second control plane runs `serve --kubernetes` against a recorded Kubernetes API (Service shop/web on 10.96.0.10, its EndpointSlice of three pods, a TrafficPolicy)",
    );
    let pods: Vec<Pod> = (0..3)
        .map(|i| mesh.pod(&format!("web{i}")))
        .collect::<Result<_>>()?;
    for (i, p) in pods.iter().enumerate() {
        mesh.testserver(p)
            .http("0.0.0.0:8080")
            .name(&format!("web-{i}"))
            .start()?;
    }
    let caller = mesh.pod("caller")?;
    let api = RecordedApi::start(mesh, cp, "demo")?;
    api.put("service-web", &service("shop", "web", "10.96.0.10"))?;
    let slice = |ready: &[usize], terminating: &[usize]| {
        endpoint_slice(
            "shop",
            "web",
            "web-x7k2p",
            &endpoints(&pods, ready, terminating),
        )
    };
    api.put("slice-web", &slice(&[0, 1, 2], &[]))?;
    for (i, p) in pods.iter().enumerate() {
        api.put(
            &format!("pod-{i}"),
            &pod_object("shop", &format!("web-{i}"), "web", p),
        )?;
    }
    api.put(
        "policy-web",
        &serde_json::json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TrafficPolicy",
            "metadata": {"name": "web", "namespace": "shop", "generation": 1},
            "spec": {"targetRef": {"kind": "Service", "name": "web"},
                     "loadBalancer": {"algorithm": "roundRobin"},
                     "retries": {"attempts": 2, "conditions": ["connect-failure"]}}
        }),
    )?;
    api.start_control_plane(
        mesh,
        cp,
        "control-plane-kubernetes",
        "0.0.0.0:5271",
        &["--grpc-addr", "0.0.0.0:5270"],
    )?;
    // The caller's node routes the Service CIDR; its proxy follows the cluster-mode control plane.
    caller.sh_ok("ip route add 10.96.0.0/16 dev eth0")?;
    mesh.proxy(&caller)
        .flag("--control-plane", format!("{}:5270", cp.ip))
        .flag("--workload", "shop/caller")
        .flag("--pod-ips", caller.ip.to_string())
        .start()?;
    wait_for(
        "the caller's first snapshot",
        Duration::from_secs(10),
        || Ok(snapshot_version(&caller)? > 0),
    )?;
    let load = |what: &str| -> Result<()> {
        let before: Vec<u64> = pods.iter().map(|p| p.served("*")).collect::<Result<_>>()?;
        let out = caller.sh_ok("h2load --h1 -n 300 -c 3 -t 1 http://10.96.0.10/")?;
        let r = bulwark_tests::policy::LoadResult::parse(&out).context("h2load")?;
        let shares = served_since(&pods, &before)?;
        println!(
            "    {what}: {} of 300 succeeded; web-0 {}, web-1 {}, web-2 {}",
            r.ok, shares[0], shares[1], shares[2]
        );
        Ok(())
    };
    load("300 requests to 10.96.0.10:80, balanced by the caller's proxy over the slice")?;
    let before = snapshot_version(&caller)?;
    api.put("slice-web", &slice(&[0, 2], &[1]))?;
    wait_for(
        "the scale-down to reach the proxy",
        Duration::from_secs(10),
        || Ok(snapshot_version(&caller)? > before),
    )?;
    load("web-1 turns terminating (a scale-down): 300 more")?;
    wait_for("the policy's status", Duration::from_secs(15), || {
        Ok(api.status_of("policy-web")?["proxies"]["inSync"] == 1)
    })?;
    let status = api.status_of("policy-web")?;
    let c = &status["conditions"][0];
    println!(
        "    TrafficPolicy shop/web .status (written by the replica holding the Lease): Accepted={} ({}), proxies {}",
        c["status"].as_str().unwrap_or("?"),
        c["message"].as_str().unwrap_or(""),
        status["proxies"]
    );
    Ok(())
}

/// The admission webhooks' serving certificate, as the chart's generated Secret holds one.
struct Webhook {
    dir: std::path::PathBuf,
}

/// The name the API server dials: the chart's Service.
const WEBHOOK_HOST: &str = "bulwark-control-plane.bulwark.svc";

impl Webhook {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("bulwark-demo-webhook-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=bulwark-webhook"])
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{WEBHOOK_HOST}"))
            .arg("-keyout")
            .arg(dir.join("tls.key"))
            .arg("-out")
            .arg(dir.join("tls.crt"))
            .output()
            .context("running openssl")?;
        anyhow::ensure!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Self { dir })
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--webhook-cert".into(),
            self.dir.join("tls.crt").display().to_string(),
            "--webhook-key".into(),
            self.dir.join("tls.key").display().to_string(),
        ]
    }

    /// POSTs a recorded AdmissionReview (as an API server sends it) to `path`; returns the
    /// response and its patch, decoded.
    fn review(
        &self,
        cp: &Pod,
        path: &str,
        request: &str,
    ) -> Result<(serde_json::Value, serde_json::Value)> {
        use base64::Engine;
        let file = bulwark_tests::workspace_root()
            .join("tests/golden/admission")
            .join(format!("{request}.request.json"));
        let out = cp.sh_ok(&format!(
            "curl -sS -m 5 --fail-with-body --cacert {} --resolve {WEBHOOK_HOST}:8443:127.0.0.1 -H 'content-type: application/json' --data-binary @{} https://{WEBHOOK_HOST}:8443{path}",
            self.dir.join("tls.crt").display(),
            file.display()
        ))?;
        let review: serde_json::Value = serde_json::from_str(&out)?;
        let response = review["response"].clone();
        let patch = match response["patch"].as_str() {
            Some(b64) => {
                serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(b64)?)?
            }
            None => serde_json::Value::Null,
        };
        Ok((response, patch))
    }

    /// Step 12: the injection and validation webhooks answer as the API server would ask.
    fn show(&self, cp: &Pod) -> Result<()> {
        step(
            12,
            "the admission webhooks (HTTPS on :8443), sent AdmissionReviews as the API server sends them",
        );
        let (response, patch) = self.review(cp, "/inject", "inject-deployment-pod")?;
        let ops = patch.as_array().map(Vec::as_slice).unwrap_or_default();
        let containers: Vec<&str> = ops
            .iter()
            .filter(|op| op["path"] == "/spec/initContainers")
            .flat_map(|op| op["value"].as_array().into_iter().flatten())
            .filter_map(|c| c["name"].as_str())
            .collect();
        println!(
            "    a Deployment's pod in a labelled namespace: allowed = {}, a JSON patch of {} add operations",
            response["allowed"],
            ops.len()
        );
        println!(
            "      init containers added: {}; then the volume with the mesh's roots and the annotation bulwark.dev/proxy-version",
            containers.join(", ")
        );
        // The app's readiness probe, handed to its proxy so strict mTLS lets the kubelet in.
        let probes = ops
            .iter()
            .filter(|op| op["path"] == "/spec/initContainers")
            .flat_map(|op| op["value"].as_array().into_iter().flatten())
            .flat_map(|c| c["env"].as_array().into_iter().flatten())
            .find(|e| e["name"] == "BULWARK_INBOUND_PROBES")
            .and_then(|e| e["value"].as_str())
            .unwrap_or("none");
        println!(
            "      the app's httpGet probes, admitted by its proxy even on a strict port: {probes}"
        );
        let audience = ops
            .iter()
            .filter_map(|op| {
                op["value"]["projected"]["sources"][0]["serviceAccountToken"]["audience"].as_str()
            })
            .next()
            .unwrap_or("none");
        println!(
            "      its identity: the pod's service-account token projected for audience {audience}, checked by the control plane with a TokenReview"
        );
        let (response, _) = self.review(cp, "/inject", "inject-bad-annotation")?;
        println!(
            "    a pod with a bad per-pod setting: allowed = {}, {}",
            response["allowed"], response["status"]["message"]
        );
        let (response, _) = self.review(cp, "/validate", "validate-invalid-policy")?;
        println!(
            "    kubectl apply of an invalid TrafficPolicy: allowed = {}, {}",
            response["allowed"], response["status"]["message"]
        );
        let metrics = cp.sh_ok("curl -s -m 5 http://127.0.0.1:5171/metrics")?;
        for line in metrics
            .lines()
            .filter(|l| l.starts_with("bulwark_cp_webhook_reviews_total{"))
        {
            println!("    {line}");
        }
        Ok(())
    }

    fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Step 10: requests between meshed pods cross the bridge encrypted; ads's proxy carries
/// HTTP/1 multiplexed over one HTTP/2 mesh connection.
fn mesh_tls(mesh: &mut Mesh, [client, ads]: [&Pod; 2], replica: &Pod) -> Result<()> {
    step(
        10,
        "mesh TLS on the wire: tcpdump on the bridge while the client makes 20 requests to checkout, and ads 40 over 4 connections at once",
    );
    let before = client_handshakes(client)?;
    let ads_before = client_handshakes(ads)?;
    let capture = mesh.capture()?;
    for i in 0..20 {
        client.sh_ok(&format!(
            "curl -sS -m 5 -o /dev/null -H 'X-Card: 4111-demo-{i}' http://{}:8080/",
            replica.ip
        ))?;
    }
    let url = format!("http://{}:8080", replica.ip);
    let load = ads.sh_ok(&format!("h2load --h1 -n 40 -c 4 {url}/"))?;
    let version = ads.sh_ok(&format!("curl -sS -m 5 {url}/headers"))?;
    let version: serde_json::Value = serde_json::from_str(version.trim())?;
    let wire = capture.bytes(mesh)?;
    let count = |needle: &[u8]| wire.windows(needle.len()).filter(|w| *w == needle).count();
    println!(
        "    {} bytes captured: {} TLS application-data records; plaintext 'X-Card' or 'GET /' seen: {}",
        wire.len(),
        count(b"\x17\x03\x03"),
        count(b"X-Card") + count(b"GET /") > 0
    );
    let after = client_handshakes(client)?;
    println!(
        "    TLS handshakes by the client proxy for those 20 requests: {} (pooled connections are reused)",
        after - before
    );
    let done = load
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .unwrap_or("?");
    // The client's pooled connections were open already: every mesh ClientHello here is ads's.
    println!(
        "    ads (--mesh-http1 multiplexed), h2load --h1 -c 4: {done}; {} TLS handshakes, at most one per checkout replica its balancer picked; its ClientHellos offered bulwark.dev/h2 only: {}",
        client_handshakes(ads)? - ads_before,
        count(b"bulwark.dev/http1") == 0 && count(b"bulwark.dev/h2") > 0,
    );
    println!(
        "      its HTTP/1 requests travelled as HTTP/2 streams between the proxies; checkout's app received {}",
        version["version"].as_str().unwrap_or("?")
    );
    Ok(())
}

fn client_handshakes(client: &Pod) -> Result<f64> {
    let mut n = 0.0;
    for result in ["full", "resumed"] {
        n += client
            .metric(&format!(
                "bulwark_tls_handshakes_total{{side=\"client\",result=\"{result}\"}}"
            ))?
            .unwrap_or(0.0);
    }
    Ok(n)
}

/// Step 11: the mesh goes strict and checkout gets an AuthorizationPolicy.
fn strict_and_authorized(
    dir: &std::path::Path,
    [client, ads, outsider]: [&Pod; 3],
    replicas: &[Pod],
    mesh_example: &std::path::Path,
) -> Result<()> {
    step(
        11,
        "the mesh goes strict (MeshConfig mtls.mode: strict) and checkout admits only shop/frontend on :8080 (an AuthorizationPolicy)",
    );
    let before = snapshot_version(&replicas[0])?;
    let mut mesh_yaml = std::fs::read_to_string(mesh_example)?;
    mesh_yaml.push_str("  mtls:\n    mode: strict\n");
    // Written whole, then renamed: the control plane never reads half a file.
    std::fs::write(dir.join(".mesh.yaml.tmp"), mesh_yaml)?;
    std::fs::rename(dir.join(".mesh.yaml.tmp"), dir.join("mesh.yaml"))?;
    std::fs::write(
        dir.join("checkout-authz.yaml"),
        "apiVersion: bulwark.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: checkout-callers, namespace: shop}\nspec:\n  target: {workload: checkout}\n  ports: [8080]\n  from:\n    - identity: spiffe://cluster.local/ns/shop/sa/frontend\n",
    )?;
    wait_for(
        "the replicas to take the edit",
        Duration::from_secs(10),
        || {
            let mut all = true;
            for r in replicas {
                all &= snapshot_version(r)? > before;
            }
            Ok(all)
        },
    )?;
    let url = format!("http://{}:8080/", replicas[0].ip);
    let status = |pod: &Pod| -> Result<String> {
        let out = pod.sh(&format!(
            "curl -sS -m 5 -o /dev/null -D - -w '%{{http_code}}' {url}"
        ))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let code = text.lines().last().unwrap_or_default().to_string();
        Ok(
            match text
                .lines()
                .find_map(|l| l.strip_prefix("x-bulwark-error: "))
            {
                Some(reason) => format!("{code} x-bulwark-error: {}", reason.trim()),
                None => code,
            },
        )
    };
    println!("    client (shop/frontend, meshed):  {}", status(client)?);
    println!("    ads (shop/ads, meshed):          {}", status(ads)?);
    println!(
        "    outsider (no proxy, plaintext):  {} (connection closed by checkout-0's proxy)",
        status(outsider)?
    );
    let refused = replicas[0]
        .metric("bulwark_proxy_errors_total{direction=\"inbound\",reason=\"plaintext_refused\"}")?
        .unwrap_or(0.0);
    println!("    checkout-0 counted {refused} plaintext connection(s) refused");
    // ads's request went to whichever replica its proxy's balancer picked.
    for (i, r) in replicas.iter().enumerate() {
        let (_, body) = r.admin("/authz")?;
        let authz: serde_json::Value = serde_json::from_str(&body)?;
        let Some(e) = authz["recent"]
            .as_array()
            .and_then(|r| r.iter().find(|e| e["allowed"] == false))
            .cloned()
        else {
            continue;
        };
        println!(
            "    GET /authz on checkout-{i} explains the 403: client {} from {} to port {} ({}): {} by {} ({})",
            e["client"].as_str().unwrap_or("-"),
            e["peer"].as_str().unwrap_or("-"),
            e["port"],
            e["route"].as_str().unwrap_or("-"),
            if e["allowed"] == true {
                "allowed"
            } else {
                "denied"
            },
            e["policy"].as_str().unwrap_or("-"),
            e["rule"].as_str().unwrap_or("-"),
        );
        break;
    }
    Ok(())
}

fn print_status(cp: &Pod, anchors: &std::path::Path) -> Result<()> {
    let status = cp
        .cmd(bulwark_tests::bin("bulwarkctl"))
        .args([
            "status",
            "--control-plane",
            "127.0.0.1:5170",
            "--trust-anchors",
        ])
        .arg(anchors)
        .output()?;
    for l in String::from_utf8_lossy(&status.stdout).lines() {
        println!("    {l}");
    }
    Ok(())
}

/// What the resilience features did, from the client proxy's metrics and `/outliers`.
fn print_resilience(client: &Pod) -> Result<()> {
    let (_, text) = client.admin("/metrics")?;
    println!("    what the resilience features did (client proxy /metrics):");
    for l in text.lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with("bulwark_retries_total")
                || l.starts_with("bulwark_retry_budget_exhausted_total")
                || l.starts_with("bulwark_outlier_"))
    }) {
        println!("      {l}");
    }
    let (_, body) = client.admin("/outliers")?;
    let v: serde_json::Value = serde_json::from_str(&body).context("parsing /outliers")?;
    println!("    endpoints (GET /outliers):");
    for t in v.as_array().into_iter().flatten() {
        for e in t["endpoints"].as_array().into_iter().flatten() {
            let why = match &e["ejection"] {
                serde_json::Value::Null => String::new(),
                j => {
                    let first = match &j["first"] {
                        serde_json::Value::Null => String::new(),
                        f => format!(
                            " (out first for {}: {})",
                            f["reason"].as_str().unwrap_or(""),
                            f["detail"].as_str().unwrap_or("")
                        ),
                    };
                    format!(
                        " — {}: {}{first}, next probe in {} ms",
                        j["reason"].as_str().unwrap_or(""),
                        j["detail"].as_str().unwrap_or(""),
                        j["next_probe_in_ms"]
                    )
                }
            };
            println!(
                "      {} {:<21} {:<9} {:>7} requests, peak-EWMA {:.2} ms{why}",
                t["target"].as_str().unwrap_or(""),
                e["address"].as_str().unwrap_or(""),
                e["state"].as_str().unwrap_or(""),
                e["requests"],
                e["ewma_ms"].as_f64().unwrap_or(0.0),
            );
        }
    }
    Ok(())
}

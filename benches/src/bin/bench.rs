//! Benchmark runner: the same load against the same upstream through each topology,
//! interleaved round by round (A B C D A B C D …), in network-namespace pods with real
//! iptables redirection. The load generator is pinned to CPU 0; upstreams and proxies to
//! CPU 1. Latency is pooled over rounds; CPU and memory come from /proc.
//!
//! A direct · B one Bulwark hop (client-side, outbound) · C the mesh hop (outbound proxy →
//! inbound proxy) · CM the mesh hop over mutual TLS (CMX: with HTTP/1 multiplexed over one
//! HTTP/2 mesh connection instead of pooled) · D one hop through HAProxy or nginx (when
//! installed), as references.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bulwark_benches::{Report, add_pairs, b2_policy, histogram};
use bulwark_tests::identity::{MeshCa, wait_meshed};
use bulwark_tests::{Mesh, Pod, ProxyCommand, bin};
use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser, Debug)]
struct Args {
    /// Seconds: one round of one short point, to prove the harness works.
    #[arg(long)]
    smoke: bool,
    /// Rounds of every point and topology.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Response body bytes.
    #[arg(long, default_value_t = 1024)]
    body: usize,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "bench-report.md")]
    out: PathBuf,
    /// Another build of the proxy to run beside this one (B0 and B20 repeat B and B2 with
    /// it), so two revisions compare in one interleaved run.
    #[arg(long)]
    baseline_proxy: Option<PathBuf>,
    /// Only these topologies (A, the direct connection, is always run: added latency is
    /// measured against it).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Debug, Clone)]
struct Topo {
    key: &'static str,
    name: &'static str,
    client: Pod,
    url: String,
    /// Proxy processes whose CPU and memory are measured.
    pids: Vec<u32>,
    h2: bool,
    /// Where HTTP/2 points go, when not `url` (HAProxy's h2c frontend).
    h2_url: Option<String>,
}

#[derive(Debug, Clone)]
struct Point {
    name: String,
    proto: &'static str,
    rate: Option<u64>,
    conns: usize,
}

impl Point {
    /// A load point; its name says what it is ("HTTP/1.1, 2,000 req/s, 16 conns").
    fn new(proto: &'static str, rate: Option<u64>, conns: usize) -> Self {
        let version = if proto == "h2" { "HTTP/2" } else { "HTTP/1.1" };
        let name = match rate {
            Some(r) if r >= 1000 => format!(
                "{version}, {},{:03} req/s, {conns} conns",
                r / 1000,
                r % 1000
            ),
            Some(r) => format!("{version}, {r} req/s, {conns} conns"),
            None => format!("{version} closed loop, {conns} conns (max throughput)"),
        };
        Self {
            name,
            proto,
            rate,
            conns,
        }
    }
}

#[derive(Debug)]
struct Acc {
    hist: Histogram<u64>,
    completed: u64,
    all: u64,
    errors: u64,
    cpu_s: f64,
    rejected: u32,
    runs: u32,
    achieved: f64,
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn installed(bin: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin"]
        .iter()
        .any(|d| std::path::Path::new(d).join(bin).exists())
}

fn pinned(pod: &Pod, cpu: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = pod.cmd("taskset");
    c.args(["-c", cpu]).arg(program);
    c
}

fn start_proxy(mesh: &mut Mesh, pod: &Pod, extra: &[(&str, &str)]) -> Result<u32> {
    start_build(mesh, pod, extra, None, ONE_WORKER)
}

/// Where a proxy runs and with how many workers.
#[derive(Debug, Clone, Copy)]
struct Placement {
    cpus: &'static str,
    workers: &'static str,
}

/// One worker on CPU 1, beside the upstream: the per-request cost, as a sidecar runs.
const ONE_WORKER: Placement = Placement {
    cpus: "1",
    workers: "1",
};
/// Two workers free to run on both CPUs: what a second worker adds at saturation.
const TWO_WORKERS: Placement = Placement {
    cpus: "0,1",
    workers: "2",
};

/// Starts `binary` (the workspace's proxy when `None`) in `pod`, placed as `at` says.
fn start_build(
    mesh: &mut Mesh,
    pod: &Pod,
    extra: &[(&str, &str)],
    binary: Option<&std::path::Path>,
    at: Placement,
) -> Result<u32> {
    mesh.init(pod, &[])?;
    let mut proxy = ProxyCommand::new(pod)
        .pinned_to(at.cpus)
        .flag("--worker-threads", at.workers);
    if let Some(b) = binary {
        proxy = proxy.binary(b);
    }
    for (name, value) in extra {
        proxy = proxy.flag(name, value);
    }
    let mut c = proxy.command();
    c.env("BULWARK_LOG", "warn");
    let pid = mesh.spawn(pod, &format!("proxy-{}", pod.ns), c)?;
    mesh.wait_ready(pod, pid)?;
    Ok(pid)
}

/// How the mTLS mesh hop carries HTTP/1 between its proxies.
#[derive(Clone, Copy)]
enum MeshHttp1 {
    /// CM, the default: on pooled HTTP/1 mesh connections.
    Pooled,
    /// CMX: as HTTP/2 streams on one shared mesh connection.
    Multiplexed,
}

/// CM and CMX: the mesh hop with identity on, so the two proxies speak mutual TLS 1.3. A
/// control plane in its own pod is the CA; each proxy proves its identity with a token.
/// Returns once the client proxy knows the server is meshed.
fn mesh_tls_hop(mesh: &mut Mesh, path: &str, ca: &MeshCa, http1: MeshHttp1) -> Result<Topo> {
    let (key, name, mode, pods) = match http1 {
        MeshHttp1::Pooled => (
            "CM",
            "Bulwark, mesh hop (2 proxies), mutual TLS 1.3",
            "pooled",
            ["cpm", "srvt", "cm"],
        ),
        MeshHttp1::Multiplexed => (
            "CMX",
            "Bulwark, mesh hop, mutual TLS 1.3, HTTP/1 multiplexed over HTTP/2",
            "multiplexed",
            ["cpx", "srvx", "cmx"],
        ),
    };
    let cp = mesh.pod(pods[0])?;
    let srv = mesh.pod(pods[1])?;
    let client = mesh.pod(pods[2])?;
    let policy = ca.policy_dir()?;
    ca.start_control_plane(mesh, &cp, &policy, "24h", &[])?;
    let mut c = pinned(&srv, "1", bin("bulwark-testserver"));
    c.args(["--http", "0.0.0.0:8080"]);
    mesh.spawn(&srv, "server-tls", c)?;
    mesh.wait_listening(&srv, 8080)?;
    let anchors = ca.anchors().display().to_string();
    let control_plane = format!("{}:5170", cp.ip);
    let mut pids = Vec::new();
    for (pod, sa) in [(&client, "client"), (&srv, "server")] {
        let token = ca.token("bench", sa)?.display().to_string();
        let workload = format!("bench/{sa}");
        let ip = pod.ip.to_string();
        let flags = [
            ("--control-plane", control_plane.as_str()),
            ("--workload", workload.as_str()),
            ("--service-account", sa),
            ("--pod-ips", ip.as_str()),
            ("--trust-anchors", anchors.as_str()),
            ("--identity-token-file", token.as_str()),
            ("--mesh-http1", mode),
        ];
        pids.push(start_proxy(mesh, pod, &flags)?);
    }
    wait_meshed(&client, &srv)?;
    Ok(Topo {
        key,
        name,
        client,
        url: format!("http://{}:8080{path}", srv.ip),
        pids,
        h2: true,
        h2_url: None,
    })
}

/// The client proxy's mesh TLS handshakes (full, resumed) and the requests it forwarded.
fn handshakes(client: &Pod) -> Result<(f64, f64, f64)> {
    let count = |result: &str| -> Result<f64> {
        Ok(client
            .metric(&format!(
                "bulwark_tls_handshakes_total{{side=\"client\",result=\"{result}\"}}"
            ))?
            .unwrap_or(0.0))
    };
    Ok((
        count("full")?,
        count("resumed")?,
        client.requests_total("outbound")?,
    ))
}

fn setup(
    mesh: &mut Mesh,
    body: usize,
    baseline: Option<&std::path::Path>,
    ca: &MeshCa,
) -> Result<Vec<Topo>> {
    let srv = mesh.pod("srv")?;
    let srvm = mesh.pod("srvm")?;
    for s in [&srv, &srvm] {
        let mut c = pinned(s, "1", bin("bulwark-testserver"));
        c.args(["--http", "0.0.0.0:8080"]);
        mesh.spawn(s, &format!("server-{}", s.ns), c)?;
        mesh.wait_listening(s, 8080)?;
    }
    let path = format!("/bytes/{body}");
    let direct = format!("http://{}:8080{path}", srv.ip);
    let a = mesh.pod("a")?;
    let b = mesh.pod("b")?;
    let c = mesh.pod("c")?;
    let bpid = start_proxy(mesh, &b, &[])?;
    let cpid = start_proxy(mesh, &c, &[])?;
    let spid = start_proxy(mesh, &srvm, &[])?;
    // B2: the same hop with the upstream as a Backend under a typical resilience policy, so
    // every request goes through routing, peak-EWMA, the retry budget, timeouts and outlier
    // accounting.
    let bp = mesh.pod("bp")?;
    let policy =
        std::env::temp_dir().join(format!("bulwark-bench-policy-{}.yaml", std::process::id()));
    std::fs::write(&policy, b2_policy(&format!("{}:8080", srv.ip)))?;
    let policy_arg = policy.display().to_string();
    let bppid = start_proxy(
        mesh,
        &bp,
        &[("--policy", &policy_arg), ("--workload", "bench/client")],
    )?;
    let bw = mesh.pod("bw")?;
    let bwpid = start_build(mesh, &bw, &[], None, TWO_WORKERS)?;
    let mut topos = vec![
        Topo {
            key: "A",
            name: "direct",
            client: a,
            url: direct.clone(),
            pids: vec![],
            h2: true,
            h2_url: None,
        },
        Topo {
            key: "B",
            name: "Bulwark, one hop",
            client: b,
            url: direct.clone(),
            pids: vec![bpid],
            h2: true,
            h2_url: None,
        },
        Topo {
            key: "B2",
            name: "Bulwark, one hop, Backend with retries, timeouts, outlier detection",
            client: bp,
            url: direct.clone(),
            pids: vec![bppid],
            h2: true,
            h2_url: None,
        },
        Topo {
            key: "BW2",
            name: "Bulwark, one hop, 2 workers on both CPUs (shared with the load generator and the upstream)",
            client: bw,
            url: direct.clone(),
            pids: vec![bwpid],
            h2: true,
            h2_url: None,
        },
        Topo {
            key: "C",
            name: "Bulwark, mesh hop (2 proxies)",
            client: c,
            url: format!("http://{}:8080{path}", srvm.ip),
            pids: vec![cpid, spid],
            h2: true,
            h2_url: None,
        },
    ];
    topos.push(mesh_tls_hop(mesh, &path, ca, MeshHttp1::Pooled)?);
    topos.push(mesh_tls_hop(mesh, &path, ca, MeshHttp1::Multiplexed)?);
    if let Some(base) = baseline {
        let b0 = mesh.pod("b0")?;
        let pid = start_build(mesh, &b0, &[], Some(base), ONE_WORKER)?;
        topos.push(Topo {
            key: "B0",
            name: "baseline build, one hop",
            client: b0,
            url: direct.clone(),
            pids: vec![pid],
            h2: true,
            h2_url: None,
        });
        let b20 = mesh.pod("b20")?;
        let policy = [
            ("--policy", policy_arg.as_str()),
            ("--workload", "bench/client"),
        ];
        let pid = start_build(mesh, &b20, &policy, Some(base), ONE_WORKER)?;
        topos.push(Topo {
            key: "B20",
            name: "baseline build, one hop, Backend with retries, timeouts, outlier detection",
            client: b20,
            url: direct.clone(),
            pids: vec![pid],
            h2: true,
            h2_url: None,
        });
    }
    let dir = std::env::temp_dir().join(format!("bulwark-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    if installed("haproxy") {
        let pod = mesh.pod("hap")?;
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend fe\n  bind 127.0.0.1:9000\n  default_backend be\nbackend be\n  http-reuse always\n  server s1 {ip}:8080\n\
             frontend fe2\n  bind 127.0.0.1:9002 proto h2\n  default_backend be2\nbackend be2\n  http-reuse always\n  server s1 {ip}:8080 proto h2\n",
                ip = srv.ip
            ),
        )?;
        let args = ["-db".into(), "-f".into(), cfg.into_os_string()];
        topos.push(reference(
            mesh,
            pod,
            ("D1", "HAProxy, one hop"),
            "haproxy",
            &args,
            (9000, Some(9002)),
            &path,
        )?);
    }
    if installed("nginx") {
        let pod = mesh.pod("ngx")?;
        let d = dir.display();
        let cfg = dir.join("nginx.conf");
        std::fs::write(
            &cfg,
            format!(
                "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
             events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/cb;\n  proxy_temp_path {d}/pt;\n\
               fastcgi_temp_path {d}/ft;\n  uwsgi_temp_path {d}/ut;\n  scgi_temp_path {d}/st;\n\
               upstream u {{ server {}:8080; keepalive 64; }}\n\
               server {{ listen 127.0.0.1:9001; location / {{ proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n}}\n",
                srv.ip
            ),
        )?;
        let args = [
            "-c".into(),
            cfg.into_os_string(),
            "-p".into(),
            dir.clone().into_os_string(),
        ];
        topos.push(reference(
            mesh,
            pod,
            ("D2", "nginx, one hop"),
            "nginx",
            &args,
            (9001, None),
            &path,
        )?);
    }
    Ok(topos)
}

/// Starts a reference reverse proxy in its own pod, pinned like ours, listening on
/// 127.0.0.1:`port` and forwarding to the direct upstream.
fn reference(
    mesh: &mut Mesh,
    pod: Pod,
    (key, name): (&'static str, &'static str),
    program: &str,
    args: &[std::ffi::OsString],
    (port, h2_port): (u16, Option<u16>),
    path: &str,
) -> Result<Topo> {
    let mut c = pinned(&pod, "1", program);
    c.args(args);
    let pid = mesh.spawn(&pod, program, c)?;
    mesh.wait_listening(&pod, port)?;
    Ok(Topo {
        key,
        name,
        client: pod,
        url: format!("http://127.0.0.1:{port}{path}"),
        pids: vec![pid],
        h2: h2_port.is_some(),
        h2_url: h2_port.map(|p| format!("http://127.0.0.1:{p}{path}")),
    })
}

fn run_load(topo: &Topo, p: &Point, seconds: f64, warmup: f64) -> Result<Report> {
    let mut c = pinned(&topo.client, "0", bin("bulwark-loadgen"));
    let url = match (&topo.h2_url, p.proto) {
        (Some(u), "h2") => u,
        _ => &topo.url,
    };
    c.args([
        "--url",
        url,
        "--proto",
        p.proto,
        "--connections",
        &p.conns.to_string(),
    ])
    .args([
        "--seconds",
        &seconds.to_string(),
        "--warmup",
        &warmup.to_string(),
    ]);
    if let Some(r) = p.rate {
        c.args(["--rate", &r.to_string()]);
    }
    let out = c.output().context("running the load generator")?;
    if !out.status.success() {
        bail!(
            "load generator failed for {}: {}",
            topo.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (rounds, seconds, warmup) = if args.smoke {
        (1, 1.0, 0.3)
    } else {
        (args.rounds, args.seconds, 1.0)
    };
    let closed_loop = Point::new("h1", None, 16);
    let points: Vec<Point> = if args.smoke {
        vec![Point::new("h1", Some(200), 4), closed_loop]
    } else {
        vec![
            Point::new("h1", Some(1000), 16),
            Point::new("h1", Some(2000), 16),
            Point::new("h2", Some(2000), 4),
            closed_loop,
        ]
    };
    let mut mesh = Mesh::new("bench")?;
    let ca = MeshCa::new("bench")?;
    let mut topos = setup(&mut mesh, args.body, args.baseline_proxy.as_deref(), &ca)?;
    topos.retain(|t| t.key == "A" || args.only.is_empty() || args.only.iter().any(|k| k == t.key));
    let idle_rss: BTreeMap<&str, Vec<u64>> = topos
        .iter()
        .map(|t| {
            (
                t.key,
                t.pids.iter().map(|&p| status_kib(p, "VmRSS:")).collect(),
            )
        })
        .collect();
    let mut acc: BTreeMap<(usize, &str), Acc> = BTreeMap::new();
    let total = rounds as usize
        * points
            .iter()
            .map(|p| topos.iter().filter(|t| p.proto == "h1" || t.h2).count())
            .sum::<usize>();
    let mut done = 0;
    for round in 1..=rounds {
        for (pi, p) in points.iter().enumerate() {
            for t in topos.iter().filter(|t| p.proto == "h1" || t.h2) {
                done += 1;
                eprintln!(
                    "[{done}/{total}] round {round}: {} — {} ({})",
                    p.name, t.key, t.name
                );
                let before: f64 = t.pids.iter().map(|&p| cpu_seconds(p)).sum();
                let r = run_load(t, p, seconds, warmup)?;
                let after: f64 = t.pids.iter().map(|&p| cpu_seconds(p)).sum();
                let a = acc.entry((pi, t.key)).or_insert_with(|| Acc {
                    hist: histogram(),
                    completed: 0,
                    all: 0,
                    errors: 0,
                    cpu_s: 0.0,
                    rejected: 0,
                    runs: 0,
                    achieved: 0.0,
                });
                let rejected = p
                    .rate
                    .is_some_and(|rate| r.achieved_rps < 0.99 * rate as f64);
                a.runs += 1;
                a.achieved += r.achieved_rps;
                if rejected {
                    a.rejected += 1;
                    eprintln!(
                        "    rejected: achieved {:.0} req/s of {} offered",
                        r.achieved_rps,
                        p.rate.unwrap_or(0)
                    );
                    continue;
                }
                add_pairs(&mut a.hist, &r.hist);
                a.completed += r.completed;
                a.all += r.all;
                a.errors += r.errors;
                // Warm-up requests also cost CPU: charge the whole run's requests.
                a.cpu_s += after - before;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {}. Rounds: {rounds}, {seconds} s measured per run after {warmup} s warm-up, interleaved. Load generator pinned to CPU 0; upstream and proxies to CPU 1; proxies run one worker thread (BW2: two workers, on both CPUs). Response body {} bytes. Latency from the request's scheduled send time (open loop, coordinated omission corrected).\n",
        machine(),
        args.body
    );
    for (pi, p) in points.iter().enumerate() {
        let _ = writeln!(md, "### {}\n", p.name);
        if p.rate.is_some() {
            let _ = writeln!(
                md,
                "| topology | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | added p50 µs | added p99 µs | proxy CPU µs/req | errors | rejected runs |"
            );
            let _ = writeln!(
                md,
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
        } else {
            let _ = writeln!(
                md,
                "| topology | req/s | p50 ms | p99 ms | proxy CPU µs/req | errors |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
        }
        let base = acc.get(&(pi, "A")).map(|a| {
            (
                a.hist.value_at_quantile(0.5),
                a.hist.value_at_quantile(0.99),
            )
        });
        for t in topos.iter().filter(|t| p.proto == "h1" || t.h2) {
            let Some(a) = acc.get(&(pi, t.key)) else {
                continue;
            };
            let h = &a.hist;
            // CPU is read around the whole run, so it is divided by every request of the run.
            let cpu = if t.pids.is_empty() || a.all == 0 {
                "—".to_string()
            } else {
                format!("{:.1}", a.cpu_s * 1e6 / a.all as f64)
            };
            if p.rate.is_some() {
                let (added50, added99) = match base {
                    Some((b50, b99)) if t.key != "A" => (
                        format!("{:+}", h.value_at_quantile(0.5) as i64 - b50 as i64),
                        format!("{:+}", h.value_at_quantile(0.99) as i64 - b99 as i64),
                    ),
                    _ => ("—".into(), "—".into()),
                };
                let _ = writeln!(
                    md,
                    "| {} {} | {} | {} | {} | {} | {} | {added50} | {added99} | {cpu} | {} | {} of {} |",
                    t.key,
                    t.name,
                    ms(h.value_at_quantile(0.5)),
                    ms(h.value_at_quantile(0.9)),
                    ms(h.value_at_quantile(0.99)),
                    ms(h.value_at_quantile(0.999)),
                    ms(h.max()),
                    a.errors,
                    a.rejected,
                    a.runs
                );
            } else {
                let _ = writeln!(
                    md,
                    "| {} {} | {:.0} | {} | {} | {cpu} | {} |",
                    t.key,
                    t.name,
                    a.achieved / a.runs.max(1) as f64,
                    ms(h.value_at_quantile(0.5)),
                    ms(h.value_at_quantile(0.99)),
                    a.errors
                );
            }
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "### Proxy memory and descriptors\n\n| topology | process | RSS idle MiB | peak RSS (VmHWM) MiB | open fds at end |\n|---|---|---:|---:|---:|"
    );
    for t in &topos {
        for (i, &pid) in t.pids.iter().enumerate() {
            let idle = idle_rss
                .get(t.key)
                .and_then(|v| v.get(i))
                .copied()
                .unwrap_or(0);
            let _ = writeln!(
                md,
                "| {} {} | #{} | {:.1} | {:.1} | {} |",
                t.key,
                t.name,
                i + 1,
                idle as f64 / 1024.0,
                status_kib(pid, "VmHWM:") as f64 / 1024.0,
                fds(pid)
            );
        }
    }
    for t in topos.iter().filter(|t| t.key.starts_with("CM")) {
        let (full, resumed, requests) = handshakes(&t.client)?;
        let _ = writeln!(
            md,
            "\n{}: the client proxy made {full:.0} full and {resumed:.0} resumed TLS handshakes for {requests:.0} requests ({:.1} per 10,000 requests).",
            t.key,
            (full + resumed) * 10_000.0 / requests.max(1.0)
        );
    }
    println!("{md}");
    std::fs::write(&args.out, &md).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("report written to {}", args.out.display());
    Ok(())
}

//! Control-plane benchmark, Kubernetes-shaped: `bulwark-control-plane serve --kubernetes`
//! follows an API server in this process (lists and chunked watch streams, as
//! kube-apiserver writes them) holding SERVICES Services with ENDPOINTS endpoints each in
//! their EndpointSlices, spread over NAMESPACES namespaces, and PODS pods. STREAMS
//! simulated proxies (spread evenly over the namespaces) follow the control plane. Churn:
//! RATE endpoint changes a second for SECONDS, each replacing one endpoint of one slice by
//! a new address that encodes the change's number; every simulated proxy records when each
//! change of its namespace first appears in its snapshot.
//!
//! Reported: change → every affected proxy p50/p99/max, the share within 1 s, the control
//! plane's CPU per change, and its memory: per Pod and per EndpointSlice (from runs with
//! only those objects) and per stream.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bulwark_api::wire::discovery_client::DiscoveryClient;
use bulwark_api::wire::{self, control_message, proxy_message};
use bulwark_benches::{histogram, raise_fd_limit, rss_kib};
use bulwark_tests::bin;
use bytes::Bytes;
use clap::Parser;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Namespaces.
    #[arg(long, default_value_t = 50)]
    namespaces: usize,
    /// Services (spread over the namespaces).
    #[arg(long, default_value_t = 500)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Pods (besides the endpoints' own addresses, listed and watched as a cluster's are).
    #[arg(long, default_value_t = 5000)]
    pods: usize,
    /// Simulated proxy streams.
    #[arg(long, default_value_t = 5000)]
    streams: usize,
    /// Endpoint changes a second.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The cluster the API server holds.
struct Cluster {
    args: Args,
    /// The slices, by Service index, as JSON.
    slices: Mutex<Vec<Value>>,
    /// Watch events of the slices.
    slice_events: broadcast::Sender<Bytes>,
    /// Newest resource version.
    version: Mutex<u64>,
    with_slices: bool,
    with_pods: bool,
}

fn ns_of(args: &Args, service: usize) -> String {
    format!("ns-{}", service % args.namespaces)
}

fn endpoint_ip(service: usize, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        1 + (service / 250) as u8,
        (service % 250) as u8,
        i as u8 + 1,
    )
}

/// The address that change `seq` puts in: 11.x.y.z encodes it.
fn change_ip(seq: u64) -> Ipv4Addr {
    Ipv4Addr::new(11, (seq >> 16) as u8, (seq >> 8) as u8, seq as u8)
}

fn slice(args: &Args, service: usize, ips: &[Ipv4Addr], version: u64) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{service}-abcde"), "namespace": ns_of(args, service),
                     "resourceVersion": version.to_string(),
                     "labels": {"kubernetes.io/service-name": format!("svc-{service}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": ips.iter().map(|ip| json!({
            "addresses": [ip.to_string()], "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "uid": format!("uid-{ip}")}})).collect::<Vec<_>>()
    })
}

impl Cluster {
    /// A list, a page at a time when the client asks for pages (`limit`, `continue`), as
    /// the API server pages them.
    fn page(&self, path: &str, query: &str) -> Option<Value> {
        let mut v = self.list(path)?;
        let param = |k: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .and_then(|x| x.parse::<usize>().ok())
        };
        if let Some(limit) = param("limit").filter(|&l| l > 0) {
            let start = param("continue").unwrap_or(0);
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let end = (start + limit).min(items.len());
            v["items"] = Value::Array(items[start.min(end)..end].to_vec());
            if end < items.len() {
                v["metadata"]["continue"] = json!(end.to_string());
            }
        }
        Some(v)
    }

    fn list(&self, path: &str) -> Option<Value> {
        let a = &self.args;
        let v = self
            .version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .to_string();
        let (kind, api_version, items): (&str, &str, Vec<Value>) = match path {
            "/api/v1/services" if self.with_slices => ("ServiceList", "v1", (0..a.services)
                .map(|s| json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": format!("svc-{s}"), "namespace": ns_of(a, s), "resourceVersion": "1"},
                    "spec": {"clusterIP": format!("10.96.{}.{}", s / 250, s % 250 + 1),
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}))
                .collect()),
            "/api/v1/services" => ("ServiceList", "v1", vec![]),
            "/apis/discovery.k8s.io/v1/endpointslices" => (
                "EndpointSliceList",
                "discovery.k8s.io/v1",
                if self.with_slices { self.slices.lock().unwrap_or_else(|e| e.into_inner()).clone() } else { vec![] },
            ),
            "/api/v1/pods" if self.with_pods => ("PodList", "v1", (0..a.pods)
                .map(|p| json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("pod-{p}"), "namespace": format!("ns-{}", p % a.namespaces),
                                 "uid": format!("uid-pod-{p}"), "resourceVersion": "1",
                                 "labels": {"app": format!("svc-{}", p % a.services.max(1)), "pod-template-hash": "7d9f8c6b5d"},
                                 "annotations": {"bulwark.dev/proxy-version": "0.1.0"}},
                    "spec": {"serviceAccountName": "default", "nodeName": "node-a",
                             "containers": [{"name": "app", "image": "registry.example/app:1.0",
                                             "ports": [{"containerPort": 8080}],
                                             "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
                    "status": {"phase": "Running", "podIP": format!("10.200.{}.{}", p / 250, p % 250 + 1),
                               "podIPs": [{"ip": format!("10.200.{}.{}", p / 250, p % 250 + 1)}],
                               "conditions": [{"type": "Ready", "status": "True"}]}}))
                .collect()),
            "/api/v1/pods" => ("PodList", "v1", vec![]),
            p if p.starts_with("/apis/bulwark.dev/v1alpha1/") => ("List", "bulwark.dev/v1alpha1", vec![]),
            _ => return None,
        };
        Some(
            json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": v}, "items": items}),
        )
    }

    async fn serve(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let path = req.uri().path().to_string();
        let watch = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .any(|kv| kv == "watch=true");
        if watch {
            // Only the slices change; the other watches stay open and quiet.
            let (tx, rx) = mpsc::channel::<Bytes>(1024);
            if path == "/apis/discovery.k8s.io/v1/endpointslices" {
                let mut events = self.slice_events.subscribe();
                tokio::spawn(async move {
                    while let Ok(e) = events.recv().await {
                        if tx.send(e).await.is_err() {
                            return;
                        }
                    }
                });
            } else {
                // Only the slices change; the other watches stay open and quiet.
                tokio::spawn(async move { tx.closed().await });
            }
            let events = ReceiverStream::new(rx);
            let body = StreamBody::new(events.map(|b| Ok::<_, Infallible>(Frame::data(b))));
            return Ok(Response::builder()
                .header("content-type", "application/json")
                .body(body.boxed_unsync())
                .expect("a response"));
        }
        let query = req.uri().query().unwrap_or("").to_string();
        let (status, v) = match self.page(&path, &query) {
            Some(v) => (200, v),
            None => (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404}),
            ),
        };
        let body = Full::new(Bytes::from(serde_json::to_vec(&v).expect("JSON"))).boxed_unsync();
        Ok(Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(body)
            .expect("a response"))
    }

    /// Change `seq`: one endpoint of one Service replaced by `change_ip(seq)`.
    fn change(&self, seq: u64) -> usize {
        let a = &self.args;
        let service = (seq as usize * 7919) % a.services;
        let mut version = self.version.lock().unwrap_or_else(|e| e.into_inner());
        *version += 1;
        let mut slices = self.slices.lock().unwrap_or_else(|e| e.into_inner());
        let mut ips: Vec<Ipv4Addr> = (0..a.endpoints).map(|i| endpoint_ip(service, i)).collect();
        ips[seq as usize % a.endpoints] = change_ip(seq);
        slices[service] = slice(a, service, &ips, *version);
        let event = json!({"type": "MODIFIED", "object": slices[service]});
        let mut line = serde_json::to_vec(&event).expect("JSON");
        line.push(b'\n');
        let _ = self.slice_events.send(Bytes::from(line));
        service
    }
}

async fn api_server(cluster: Arc<Cluster>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| cluster.clone().serve(req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks
        / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64
}

struct ControlPlane {
    child: std::process::Child,
    grpc: u16,
    dir: std::path::PathBuf,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a control plane following `api`; returns once it is ready.
async fn control_plane(api: SocketAddr, grpc: u16) -> Result<ControlPlane> {
    let dir = std::env::temp_dir().join(format!(
        "bulwark-cp-kube-bench-{}-{grpc}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'http://{api}'}}}}]\n\
                 users: [{{name: u, user: {{token: bench}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
        ),
    )?;
    let child = std::process::Command::new(bin("bulwark-control-plane"))
        .args([
            "serve",
            "--kubernetes=true",
            "--write-status=false",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .args([
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--admin-addr",
            &format!("127.0.0.1:{}", grpc + 1),
        ])
        .env("BULWARK_LOG", "warn")
        .spawn()
        .context("starting the control plane")?;
    let cp = ControlPlane { child, grpc, dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://127.0.0.1:{}/ready", grpc + 1),
            ])
            .output()
            .map(|o| o.stdout == b"200")
            .unwrap_or(false);
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("the control plane did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the allocator settle after the initial lists.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(cp)
}

/// One simulated proxy in `namespace`: ACKs every snapshot, and reports each change it
/// sees for the first time (by the address that encodes it).
async fn proxy(
    endpoint: String,
    namespace: String,
    seen_tx: mpsc::UnboundedSender<(u64, Instant)>,
    first: mpsc::UnboundedSender<()>,
    started: Arc<std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint)?
        .connect()
        .await?;
    let mut client = DiscoveryClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(wire::ProxyMessage {
        message: Some(proxy_message::Message::Hello(wire::Hello {
            workload: format!("{namespace}/sim"),
            namespace,
            ..Default::default()
        })),
    })
    .await?;
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    let mut seen = HashSet::new();
    while let Some(m) = inbound.message().await? {
        let Some(control_message::Message::Snapshot(s)) = m.message else {
            continue;
        };
        let now = Instant::now();
        for ip in s
            .services
            .iter()
            .flat_map(|s| &s.ports)
            .flat_map(|p| &p.ready)
        {
            if let Some(ip) = ip.strip_prefix("11.").and_then(|r| r.split(':').next()) {
                let o: Vec<u64> = ip.split('.').filter_map(|x| x.parse().ok()).collect();
                if o.len() == 3 {
                    let seq = (o[0] << 16) | (o[1] << 8) | o[2];
                    if seen.insert(seq) {
                        let _ = seen_tx.send((seq, now));
                    }
                }
            }
        }
        if !started.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let _ = first.send(());
        }
        let ack = proxy_message::Message::Ack(wire::Ack { version: s.version });
        if tx
            .send(wire::ProxyMessage { message: Some(ack) })
            .await
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

fn cluster(args: &Args, with_slices: bool, with_pods: bool) -> Arc<Cluster> {
    let slices = (0..args.services)
        .map(|s| {
            let ips: Vec<Ipv4Addr> = (0..args.endpoints).map(|i| endpoint_ip(s, i)).collect();
            slice(args, s, &ips, 1)
        })
        .collect();
    Arc::new(Cluster {
        args: args.clone(),
        slices: Mutex::new(slices),
        slice_events: broadcast::channel(4096).0,
        version: Mutex::new(1),
        with_slices,
        with_pods,
    })
}

/// RSS of a control plane following the cluster `c`, MiB.
async fn loaded_rss(c: Arc<Cluster>, grpc: u16) -> Result<f64> {
    let api = api_server(c).await?;
    let cp = control_plane(api, grpc).await?;
    Ok(rss_kib(cp.child.id()) as f64 / 1024.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    raise_fd_limit();
    eprintln!("measuring memory: an empty cluster, pods only, Services and slices only");
    let empty = loaded_rss(cluster(&args, false, false), 26170).await?;
    let pods = loaded_rss(cluster(&args, false, true), 26172).await?;
    let slices = loaded_rss(cluster(&args, true, false), 26174).await?;
    let per_pod_kib = (pods - empty) * 1024.0 / args.pods as f64;
    let per_slice_kib = (slices - empty) * 1024.0 / args.services as f64;

    let full = cluster(&args, true, true);
    let api = api_server(full.clone()).await?;
    let cp = control_plane(api, 26176).await?;
    let pid = cp.child.id();
    let loaded = rss_kib(pid);
    eprintln!("connecting {} streams", args.streams);
    let endpoint = format!("http://127.0.0.1:{}", cp.grpc);
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (first_tx, mut first) = mpsc::unbounded_channel();
    let per_ns = args.streams.div_ceil(args.namespaces);
    for i in 0..args.streams {
        let namespace = format!("ns-{}", i % args.namespaces);
        let (endpoint, seen_tx, first_tx) = (endpoint.clone(), seen_tx.clone(), first_tx.clone());
        tokio::spawn(async move {
            // A connection refused or reset before the first snapshot (the listen backlog
            // overflowing while thousands connect) is retried, as a proxy reconnects.
            let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
            for attempt in 0..5 {
                let r = proxy(
                    endpoint.clone(),
                    namespace.clone(),
                    seen_tx.clone(),
                    first_tx.clone(),
                    started.clone(),
                )
                .await;
                match r {
                    Err(_)
                        if attempt < 4 && !started.load(std::sync::atomic::Ordering::Relaxed) =>
                    {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => {
                        eprintln!("stream {i}: {e}");
                        return;
                    }
                    Ok(()) => return,
                }
            }
        });
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for got in 0..args.streams {
        tokio::time::timeout(Duration::from_secs(60), first.recv())
            .await
            .with_context(|| format!("only {got} of {} streams got a snapshot", args.streams))?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = rss_kib(pid);
    eprintln!(
        "churn: {} changes a second for {} s",
        args.rate, args.seconds
    );
    let total = args.rate * args.seconds;
    let mut at = Vec::with_capacity(total as usize);
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    for seq in 0..total {
        let due = t0 + Duration::from_secs_f64(seq as f64 / args.rate as f64);
        tokio::time::sleep_until(due.into()).await;
        full.change(seq);
        at.push(Instant::now());
    }
    // Every change is seen by the streams of its namespace: per_ns each.
    let expected = total as usize * per_ns;
    let mut hist = histogram();
    let mut within = 0usize;
    let mut worst = Duration::ZERO;
    let mut got = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < expected && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), seen.recv()).await {
            Ok(Some((seq, when))) => {
                let d = when.saturating_duration_since(at[seq as usize]);
                hist.saturating_record(d.as_micros().max(1) as u64);
                within += usize::from(d <= Duration::from_secs(1));
                worst = worst.max(d);
                got += 1;
            }
            _ => break,
        }
    }
    let cpu = cpu_seconds(pid) - cpu0;
    println!(
        "| services | endpoints | pods | streams | changes/s | change → proxy p50 ms | p99 ms | max ms | within 1 s | CP CPU ms per change | KiB per Pod | KiB per EndpointSlice | KiB per stream |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} % of {} | {:.2} | {:.2} | {:.2} | {:.1} |",
        args.services,
        args.services * args.endpoints,
        args.pods,
        args.streams,
        args.rate,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        worst.as_secs_f64() * 1000.0,
        within as f64 * 100.0 / expected as f64,
        expected,
        cpu * 1000.0 / total as f64,
        per_pod_kib,
        per_slice_kib,
        connected.saturating_sub(loaded) as f64 / args.streams as f64,
    );
    if got < expected {
        bail!("only {got} of {expected} (change, proxy) pairs were seen");
    }
    Ok(())
}

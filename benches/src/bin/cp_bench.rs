//! Control-plane push benchmark: N simulated proxy streams on loopback; a policy file is
//! changed and the time until every proxy has acknowledged the new version is measured,
//! with the control plane's memory per stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bulwark_api::wire::discovery_client::DiscoveryClient;
use bulwark_api::wire::{self, control_message, proxy_message};
use bulwark_benches::{histogram, raise_fd_limit, rss_kib};
use bulwark_tests::{bin, workspace_root};
use clap::Parser;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser, Debug)]
struct Args {
    /// Stream counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    streams: Vec<usize>,
    /// Policy changes measured per stream count.
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// The control plane's poll interval (part of the measured time).
    #[arg(long, default_value = "50ms")]
    poll: String,
}

/// One simulated proxy: Hello, then ACK every snapshot and record when.
async fn proxy(endpoint: String, acks: mpsc::UnboundedSender<(u64, Instant)>) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint)?
        .connect()
        .await?;
    let mut client = DiscoveryClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    let hello = wire::Hello {
        workload: "shop/sim".into(),
        namespace: "shop".into(),
        ..Default::default()
    };
    tx.send(wire::ProxyMessage {
        message: Some(proxy_message::Message::Hello(hello)),
    })
    .await?;
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(m) = inbound.message().await? {
        if let Some(control_message::Message::Snapshot(s)) = m.message {
            let _ = acks.send((s.version, Instant::now()));
            let ack = wire::ProxyMessage {
                message: Some(proxy_message::Message::Ack(wire::Ack {
                    version: s.version,
                })),
            };
            if tx.send(ack).await.is_err() {
                break;
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    raise_fd_limit();
    let dir = std::env::temp_dir().join(format!("bulwark-cp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let examples = workspace_root().join("control-plane/examples/policy");
    for f in ["mesh.yaml", "web.yaml", "legacy-db.yaml"] {
        std::fs::copy(examples.join(f), dir.join(f))?;
    }
    let web = dir.join("web.yaml");
    let original = std::fs::read_to_string(&web)?;
    println!(
        "| streams | changes | file change → all ACKed p50 ms | p99 ms | max ms | ACKs within 1 s | CP RSS idle MiB | CP RSS connected MiB | KiB per stream |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, &n) in args.streams.iter().enumerate() {
        // A fresh port per run: the previous control plane's port may still be held.
        let port = 25170 + 2 * i as u16;
        // Start from the original file: an "edit" to the content already served is no change
        // for the proxies (their scoped snapshot is the same, so none is sent).
        std::fs::write(&web, &original)?;
        let mut cp = std::process::Command::new(bin("bulwark-control-plane"))
            .args([
                "serve",
                "--poll-interval",
                &args.poll,
                "--grpc-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .args([
                "--admin-addr",
                &format!("127.0.0.1:{}", port + 1),
                "--policy-dir",
            ])
            .arg(&dir)
            .env("BULWARK_LOG", "warn")
            .spawn()
            .context("starting the control plane")?;
        let result = measure(&args, n, port, cp.id(), &web, &original).await;
        let _ = cp.kill();
        let _ = cp.wait();
        result?;
    }
    std::fs::write(&web, &original)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn measure(
    args: &Args,
    n: usize,
    port: u16,
    pid: u32,
    web: &std::path::Path,
    original: &str,
) -> Result<()> {
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("the control plane did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle = rss_kib(pid);
    let (acks_tx, mut acks) = mpsc::unbounded_channel();
    let errors = Arc::new(Mutex::new(Vec::new()));
    for i in 0..n {
        let (endpoint, acks_tx, errors) = (endpoint.clone(), acks_tx.clone(), errors.clone());
        tokio::spawn(async move {
            if let Err(e) = proxy(endpoint, acks_tx).await {
                errors.lock().await.push(format!("stream {i}: {e}"));
            }
        });
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Everyone has the first version.
    let mut first = 0;
    while first < n {
        match tokio::time::timeout(Duration::from_secs(30), acks.recv()).await {
            Ok(Some(_)) => first += 1,
            _ => bail!(
                "only {first} of {n} streams got a snapshot; errors: {:?}",
                errors.lock().await.first()
            ),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let with_streams = rss_kib(pid);
    let mut hist = histogram();
    let mut worst_all = Duration::ZERO;
    let mut within_1s = 0u64;
    for c in 0..args.changes {
        // Alternates 2 and 3 attempts (3 is the original): every edit changes the policy.
        let edited = original.replace("    attempts: 3", &format!("    attempts: {}", 2 + c % 2));
        let t0 = Instant::now();
        std::fs::write(web, edited)?;
        // Each change alters the policy every stream is scoped to: exactly one ACK per stream.
        for got in 0..n {
            let (_, at) = tokio::time::timeout(Duration::from_secs(30), acks.recv())
                .await
                .with_context(|| format!("change {c}: only {got} of {n} ACKs in 30 s"))?
                .context("streams ended")?;
            let d = at.duration_since(t0);
            hist.saturating_record(d.as_micros() as u64);
            within_1s += u64::from(d <= Duration::from_secs(1));
            worst_all = worst_all.max(d);
        }
        // Let the poller settle before the next change (mtime granularity, debounce).
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let total = (n * args.changes) as f64;
    println!(
        "| {n} | {} | {:.1} | {:.1} | {:.1} | {:.1} % | {:.1} | {:.1} | {:.1} |",
        args.changes,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        worst_all.as_secs_f64() * 1000.0,
        within_1s as f64 * 100.0 / total,
        idle as f64 / 1024.0,
        with_streams as f64 / 1024.0,
        (with_streams.saturating_sub(idle)) as f64 / n as f64,
    );
    Ok(())
}

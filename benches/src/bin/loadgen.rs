//! Open-loop HTTP load generator. Requests are due at fixed times (rate / s); latency is
//! measured from the time a request was due, not from when it was sent, so a slow response
//! that delays the next request is charged to that request too (coordinated omission
//! corrected, as wrk2 does). Without `--rate` it runs closed loop for maximum throughput.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_benches::{Report, histogram, to_pairs};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Target URL (http only).
    #[arg(long)]
    url: Uri,
    /// h1 or h2 (prior knowledge).
    #[arg(long, default_value = "h1")]
    proto: String,
    /// Offered rate in requests per second; omit for closed loop.
    #[arg(long)]
    rate: Option<u64>,
    /// Connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Measured duration in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up seconds before measuring (not recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

#[derive(Debug)]
enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

async fn connect(args: &Args) -> Result<Sender> {
    let host = args.url.host().context("url has no host")?;
    let port = args.url.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
    stream.set_nodelay(true)?;
    let io = TokioIo::new(stream);
    if args.proto == "h2" {
        let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok(Sender::H2(send))
    } else {
        let (send, conn) = http1::handshake(io).await?;
        tokio::spawn(conn);
        Ok(Sender::H1(send))
    }
}

/// Sends one GET and reads the whole body; true on a 2xx.
async fn one(sender: &mut Sender, uri: &Uri, authority: &str) -> bool {
    let req = match sender {
        Sender::H2(_) => Request::get(uri.clone()),
        Sender::H1(_) => Request::get(uri.path()).header("host", authority),
    };
    let Ok(req) = req.body(Empty::<Bytes>::new()) else {
        return false;
    };
    let resp = match sender {
        Sender::H1(s) => {
            if s.ready().await.is_err() {
                return false;
            }
            s.send_request(req).await
        }
        Sender::H2(s) => s.clone().send_request(req).await,
    };
    match resp {
        Ok(r) => r.status().is_success() && r.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

/// Sends one request; after a failure on a closed HTTP/1.1 connection (a server may close
/// after N requests), opens a new one so later requests are not all failures.
async fn one_or_reconnect(sender: &mut Sender, args: &Args, authority: &str) -> bool {
    let ok = one(sender, &args.url, authority).await;
    if let Sender::H1(s) = sender
        && !ok
        && s.is_closed()
        && let Ok(fresh) = connect(args).await
    {
        *sender = fresh;
    }
    ok
}

/// Waits until `due` precisely: tokio's timer has millisecond granularity, which would add up
/// to 1 ms of send delay to every request, so the last stretch is spent yielding (the load
/// generator has a CPU of its own).
async fn wait_until(due: Instant) {
    let coarse = due.checked_sub(Duration::from_millis(2));
    if let Some(c) = coarse.filter(|c| *c > Instant::now()) {
        tokio::time::sleep_until(c).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

struct Shared {
    hist: std::sync::Mutex<Histogram<u64>>,
    completed: AtomicU64,
    errors: AtomicU64,
    scheduled: AtomicU64,
    all: AtomicU64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.proto == "h1" || args.proto == "h2",
        "--proto is h1 or h2"
    );
    ensure!(args.connections > 0, "--connections must be at least 1");
    let authority = args
        .url
        .authority()
        .context("url has no authority")?
        .to_string();
    let mut senders = Vec::new();
    for _ in 0..args.connections {
        senders.push(
            connect(&args)
                .await
                .with_context(|| format!("connecting to {}", args.url))?,
        );
    }
    let shared = Arc::new(Shared {
        hist: std::sync::Mutex::new(histogram()),
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        scheduled: AtomicU64::new(0),
        all: AtomicU64::new(0),
    });
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.seconds);
    // Requests still unanswered this long after the end are counted as errors.
    let hard_end = end + Duration::from_secs(5);
    let record = {
        let shared = shared.clone();
        move |due: Instant, ok: bool| {
            if ok {
                shared.all.fetch_add(1, Ordering::Relaxed);
            }
            if due < measure_from || due >= end {
                return;
            }
            shared.scheduled.fetch_add(1, Ordering::Relaxed);
            if ok {
                let us = due.elapsed().as_micros() as u64;
                if let Ok(mut h) = shared.hist.lock() {
                    h.saturating_record(us.max(1));
                }
                shared.completed.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let mut tasks = Vec::new();
    match args.rate {
        Some(rate) => {
            let interval = 1.0 / rate as f64;
            let due_at = move |i: u64| start + Duration::from_secs_f64(i as f64 * interval);
            let c = args.connections as u64;
            if args.proto == "h1" {
                // Connection k owns requests k, k + c, k + 2c, …: one in flight per connection.
                for (k, mut sender) in senders.into_iter().enumerate() {
                    let (record, args, authority) =
                        (record.clone(), args.clone(), authority.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut i = k as u64;
                        loop {
                            let due = due_at(i);
                            if due >= end || Instant::now() > hard_end {
                                break;
                            }
                            wait_until(due).await;
                            let ok = one_or_reconnect(&mut sender, &args, &authority).await;
                            record(due, ok);
                            i += c;
                        }
                    }));
                }
            } else {
                // HTTP/2: every request is its own stream, sent when due.
                let (record, uri, authority) =
                    (record.clone(), args.url.clone(), authority.clone());
                tasks.push(tokio::spawn(async move {
                    let inflight = Arc::new(tokio::sync::Semaphore::new(10_000));
                    let mut i = 0u64;
                    loop {
                        let due = due_at(i);
                        if due >= end {
                            break;
                        }
                        wait_until(due).await;
                        let mut sender = match &senders[(i % c) as usize] {
                            Sender::H2(s) => Sender::H2(s.clone()),
                            Sender::H1(_) => unreachable!("HTTP/2 runs hold HTTP/2 senders"),
                        };
                        let (record, uri, authority) =
                            (record.clone(), uri.clone(), authority.clone());
                        i += 1;
                        let Ok(permit) = inflight.clone().try_acquire_owned() else {
                            record(due, false);
                            continue;
                        };
                        tokio::spawn(async move {
                            let ok = tokio::time::timeout_at(
                                hard_end,
                                one(&mut sender, &uri, &authority),
                            )
                            .await
                            .unwrap_or(false);
                            record(due, ok);
                            drop(permit);
                        });
                    }
                    let _ = inflight.acquire_many(10_000).await;
                }));
            }
        }
        None => {
            // Closed loop: each connection sends its next request as soon as the last returns.
            for mut sender in senders {
                let (record, args, authority) = (record.clone(), args.clone(), authority.clone());
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < end {
                        let due = Instant::now();
                        let ok = one_or_reconnect(&mut sender, &args, &authority).await;
                        record(due, ok);
                    }
                }));
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let hist = shared
        .hist
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| histogram());
    let completed = shared.completed.load(Ordering::Relaxed);
    let report = Report {
        proto: args.proto.clone(),
        rate: args.rate.unwrap_or(0),
        connections: args.connections,
        seconds: args.seconds,
        scheduled: shared.scheduled.load(Ordering::Relaxed),
        completed,
        all: shared.all.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        achieved_rps: completed as f64 / args.seconds,
        hist: to_pairs(&hist),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

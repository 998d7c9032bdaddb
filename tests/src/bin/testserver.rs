//! A small upstream for end-to-end tests and the demo: HTTP/1.1 and h2c on the same port,
//! plus a server-speaks-first TCP banner service.
//!
//! HTTP paths: `/` hello, `/status/N`, `/delay/MS`, `/echo` (streams the body back),
//! `/bytes/N` (N bytes), `/upload` (counts body bytes), `/headers` (received headers as JSON), `/count`.
//!
//! Faults, set at start with `--fault k=v&…` or at run time with `POST /_fault?k=v&…` (from
//! the server's own pod, so no proxy counts it): `latency_ms` added to every request,
//! `fail_rate` (503s), `burst` `N/M` (the first N of every M requests fail with 503),
//! `reset_rate` (the request is read whole, then the connection is closed with no
//! response), `hang_rate` (the request is held unanswered for up to an hour:
//! accept-and-hang). `GET /_stats` returns the requests received, by method, as JSON. Crash and restart is the harness's: kill the process and
//! start it again. `--dns ADDR --dns-records FILE` also answers A queries from FILE (lines
//! `name ip ttl`, read on every query, so a test edits DNS by rewriting it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
struct Args {
    /// HTTP listen addresses (HTTP/1.1 and h2c prior knowledge).
    #[arg(long)]
    http: Vec<SocketAddr>,
    /// Server-speaks-first TCP listen addresses: sends a banner, then echoes lines.
    #[arg(long)]
    banner: Vec<SocketAddr>,
    /// Name returned in responses.
    #[arg(long, default_value = "testserver")]
    name: String,
    /// Faults in force from the start, as `POST /_fault` takes them (`k=v&…`).
    #[arg(long)]
    fault: Vec<String>,
    /// UDP address to answer DNS A queries on.
    #[arg(long)]
    dns: Option<SocketAddr>,
    /// Records for `--dns`: lines of `name ip ttl`.
    #[arg(long)]
    dns_records: Option<std::path::PathBuf>,
}

/// Faults in force; changed at run time by `POST /_fault`.
#[derive(Debug, Clone, Default)]
struct Faults {
    latency_ms: u64,
    fail_rate: f64,
    burst: Option<(u64, u64)>,
    reset_rate: f64,
    hang_rate: f64,
}

impl Faults {
    fn set(&mut self, query: &str) -> Result<(), String> {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or(format!("{pair}: expected k=v"))?;
            let f = || v.parse::<f64>().map_err(|e| format!("{k}: {e}"));
            match k {
                "latency_ms" => self.latency_ms = v.parse().map_err(|e| format!("{k}: {e}"))?,
                "fail_rate" => self.fail_rate = f()?,
                "reset_rate" => self.reset_rate = f()?,
                "hang_rate" => self.hang_rate = f()?,
                "burst" => {
                    self.burst = match v.split_once('/') {
                        Some((n, m)) => Some((
                            n.parse().map_err(|e| format!("{k}: {e}"))?,
                            m.parse().map_err(|e| format!("{k}: {e}"))?,
                        )),
                        None if v == "off" => None,
                        None => return Err(format!("{k}: expected N/M")),
                    }
                }
                _ => return Err(format!("unknown fault {k}")),
            }
        }
        Ok(())
    }
}

/// Whether request `n` (from 1) falls in the `rate` share: spread evenly, not random, so
/// tests are repeatable.
fn hits(n: u64, rate: f64) -> bool {
    rate > 0.0 && (n as f64 * rate).floor() != ((n - 1) as f64 * rate).floor()
}

#[derive(Debug)]
struct State {
    name: String,
    requests: AtomicU64,
    faults: Mutex<Faults>,
    by_method: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// The service's error: the connection is dropped without a response.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected reset")
    }
}

impl std::error::Error for Reset {}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

fn faults(state: &State) -> Faults {
    state
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Reset> {
    let path = req.uri().path().to_string();
    if path == "/_fault" && req.method() == http::Method::POST {
        let q = req.uri().query().unwrap_or("").to_string();
        let r = state
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(&q);
        let resp = match r {
            Ok(()) => Response::new(full(format!("{:?}\n", faults(&state)))),
            Err(e) => Response::builder()
                .status(400)
                .body(full(e + "\n"))
                .unwrap_or_default(),
        };
        return Ok(resp);
    }
    if path == "/_stats" {
        let by = state
            .by_method
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let body = serde_json::json!({"requests": state.requests.load(Ordering::Relaxed), "by_method": by});
        return Ok(Response::new(full(format!("{body}\n"))));
    }
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    *state
        .by_method
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(req.method().to_string())
        .or_default() += 1;
    let f = faults(&state);
    if f.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
    }
    if hits(n, f.reset_rate) {
        // The whole request reaches the application first, then the connection dies: a
        // proxy that has sent more than it kept cannot replay it.
        let mut body = req.into_body();
        while let Some(Ok(_)) = body.frame().await {}
        return Err(Reset);
    }
    if hits(n, f.hang_rate) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let burst = f.burst.is_some_and(|(k, m)| m > 0 && (n - 1) % m < k);
    if burst || hits(n, f.fail_rate) {
        return Ok(Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(full(format!("injected failure from {}\n", state.name)))
            .unwrap_or_default());
    }
    let resp = if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        Response::builder()
            .status(status)
            .body(full(format!("status {status}\n")))
    } else if let Some(ms) = path.strip_prefix("/delay/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        Response::builder().body(full(format!("delayed {ms}ms by {}\n", state.name)))
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0).min(64 << 20);
        Response::builder().body(full(vec![b'x'; n]))
    } else if path == "/echo" {
        Response::builder().body(req.into_body().boxed())
    } else if path == "/upload" {
        let mut body = req.into_body();
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => total += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
                Err(_) => break,
            }
        }
        Response::builder().body(full(format!("{{\"bytes\":{total}}}\n")))
    } else if path == "/headers" {
        let map: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        let body = serde_json::json!({"version": format!("{:?}", req.version()), "uri": req.uri().to_string(), "headers": map});
        Response::builder()
            .header("content-type", "application/json")
            .body(full(format!("{body}\n")))
    } else if path == "/count" {
        Response::builder().body(full(format!("{n}\n")))
    } else {
        Response::builder().body(full(format!("hello from {}\n", state.name)))
    };
    Ok(resp.unwrap_or_else(|_| Response::new(full("bad response\n"))))
}

async fn serve_http(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn serve_banner(listener: TcpListener, name: String) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            if w.write_all(format!("220 {name} ready\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if w.write_all(format!("250 {line}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

/// Answers A queries from the records file (re-read on every query); NXDOMAIN otherwise.
async fn serve_dns(socket: tokio::net::UdpSocket, file: std::path::PathBuf) {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record, RecordType};
    let mut buf = vec![0u8; 1500];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let mut resp = Message::new(
            query.metadata.id,
            MessageType::Response,
            query.metadata.op_code,
        );
        resp.metadata.recursion_desired = query.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.metadata.authoritative = true;
        let records = std::fs::read_to_string(&file).unwrap_or_default();
        for q in &query.queries {
            resp.add_query(q.clone());
            let want = q
                .name()
                .to_string()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            for line in records.lines() {
                let mut f = line.split_whitespace();
                let (Some(name), Some(ip), ttl) = (f.next(), f.next(), f.next()) else {
                    continue;
                };
                let (Ok(ip), ttl) = (ip.parse(), ttl.and_then(|t| t.parse().ok()).unwrap_or(1))
                else {
                    continue;
                };
                if name.eq_ignore_ascii_case(&want) && q.query_type() == RecordType::A {
                    resp.add_answer(Record::from_rdata(q.name().clone(), ttl, RData::A(A(ip))));
                }
            }
        }
        let known = records.lines().any(|l| {
            query.queries.iter().any(|q| {
                l.split_whitespace().next().is_some_and(|n| {
                    n.eq_ignore_ascii_case(q.name().to_string().trim_end_matches('.'))
                })
            })
        });
        if !known {
            resp.metadata.response_code = ResponseCode::NXDomain;
        }
        if let Ok(bytes) = resp.to_vec() {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut faults = Faults::default();
    for f in &args.fault {
        faults
            .set(f)
            .map_err(|e| anyhow::anyhow!("--fault {f}: {e}"))?;
    }
    let state = Arc::new(State {
        name: args.name.clone(),
        requests: AtomicU64::new(0),
        faults: Mutex::new(faults),
        by_method: Mutex::new(Default::default()),
    });
    let mut tasks = Vec::new();
    for addr in &args.http {
        let l = TcpListener::bind(addr).await?;
        tasks.push(tokio::spawn(serve_http(l, state.clone())));
    }
    for addr in &args.banner {
        let l = TcpListener::bind(addr).await?;
        tasks.push(tokio::spawn(serve_banner(l, args.name.clone())));
    }
    if let Some(addr) = args.dns {
        let file = args
            .dns_records
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--dns needs --dns-records"))?;
        let socket = tokio::net::UdpSocket::bind(addr).await?;
        tasks.push(tokio::spawn(serve_dns(socket, file)));
    }
    anyhow::ensure!(
        !tasks.is_empty(),
        "give at least one --http or --banner address"
    );
    eprintln!("testserver {} listening", args.name);
    for t in tasks {
        t.await?;
    }
    Ok(())
}

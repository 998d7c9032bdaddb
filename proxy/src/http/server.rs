//! Serves one detected HTTP connection with hyper's server, HTTP/1.1 (keep-alive, Upgrade)
//! or HTTP/2 (h2c prior knowledge), within the configured limits, until the client closes
//! it or the proxy drains (HTTP/1 finishes its request and closes, HTTP/2 sends GOAWAY),
//! or its open requests stop moving for the stream idle timeout ([`super::activity`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Hop;
use super::activity::{self, Activity, Open};
use super::body::ProxyBody;
use super::h2_guard;
use crate::drain::Drain;
use crate::metrics::{Direction, Metrics};
use crate::pool::Version;

/// Serves `io` as `version` within `hop`'s limits, answering every request with `forward`
/// (which cannot fail: a failure is a response the proxy makes), given the guard that
/// holds the request open on the connection. `forward`'s future is hyper's service future
/// as it is, with no wrapper around it: a future is moved whole through every layer.
pub async fn serve<I, F, Fut>(io: I, version: Version, hop: &Hop, forward: F)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>, Open) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let (limits, drain) = (&hop.limits, &hop.drain);
    let activity = Arc::new(Activity::default());
    let opener = activity.clone();
    let svc = service_fn(move |req| forward(req, opener.open()));
    let idle = (activity.clone(), limits.stream_idle_timeout);
    let result = match version {
        Version::Http1 => {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_headers(limits.max_headers)
                .keep_alive(true);
            let io = activity::counted(io, activity);
            let conn = b.serve_connection(TokioIo::new(io), svc).with_upgrades();
            until_drained(conn, drain, idle, |c| c.graceful_shutdown()).await
        }
        Version::Http2 => {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .max_concurrent_streams(limits.h2_max_concurrent_streams)
                .max_pending_accept_reset_streams(limits.h2_max_pending_resets)
                .max_local_error_reset_streams(limits.h2_max_local_error_resets)
                .max_header_list_size(limits.max_header_bytes as u32);
            let (metrics, direction) = (hop.metrics.clone(), hop.direction);
            let io = h2_guard::guard(io, limits.h2_flood, metrics, direction, activity);
            let conn = b.serve_connection(TokioIo::new(io), svc);
            until_drained(conn, drain, idle, |c| c.graceful_shutdown()).await
        }
    };
    let Some(result) = result else {
        record_limited(&hop.metrics, hop.direction, "stream_idle");
        return;
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "downstream HTTP connection ended with an error");
        if let Some(reason) = limit_broken(&e) {
            record_limited(&hop.metrics, hop.direction, reason);
        }
    }
}

/// Which client limit, if any, ended a connection with `e`. The frame guard's own closes
/// are counted where they happen; what hyper and h2 refuse is counted here.
fn limit_broken(e: &hyper::Error) -> Option<&'static str> {
    if e.is_parse_too_large() {
        return Some("head_too_large");
    }
    if e.is_parse() {
        return Some("malformed_head");
    }
    if e.is_timeout() {
        return Some("header_timeout");
    }
    let h2 = std::error::Error::source(e)?.downcast_ref::<h2::Error>()?;
    // h2 ends a connection it chose to end with GOAWAY; one the client ended, or an I/O
    // error (the frame guard's among them), is not the client breaking h2's limits.
    if !(h2.is_go_away() && h2.is_library()) {
        return None;
    }
    Some(match h2.reason() {
        Some(h2::Reason::ENHANCE_YOUR_CALM) => "reset_flood",
        Some(h2::Reason::FRAME_SIZE_ERROR) | Some(h2::Reason::COMPRESSION_ERROR) => {
            "header_list_too_large"
        }
        _ => "protocol_error",
    })
}

fn record_limited(metrics: &Metrics, direction: Direction, reason: &'static str) {
    metrics.http_connection_limited(direction, reason);
    tracing::info!(
        ?direction,
        reason,
        "downstream HTTP connection closed for a limit"
    );
}

/// Runs `conn` to its end; when the drain starts, asks it to finish gracefully first.
/// `None` when its open requests stalled for the idle timeout: the connection is dropped.
async fn until_drained<C: Future>(
    conn: C,
    drain: &Drain,
    (activity, idle): (Arc<Activity>, Duration),
    graceful: impl FnOnce(Pin<&mut C>),
) -> Option<C::Output> {
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = activity.stalled(idle) => None,
        _ = drain.signaled() => {
            graceful(conn.as_mut());
            Some(conn.await)
        }
    }
}

//! L7 forwarding with hyper: HTTP/1.1 (keep-alive, Upgrade tunnels such as WebSocket) and
//! HTTP/2 (h2c prior knowledge, gRPC with trailers). Bodies stream in both directions; the
//! proxy never buffers a whole body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

pub use crate::body::ProxyBody;
use crate::listener::Shared;
use crate::metrics::Direction;
use crate::outbound::call::{self, Call, LocalError, Upstream};
use crate::outbound::retry::Failure;
use crate::pool::Version;
use crate::transport::copy;

/// Header naming the reason of a response the proxy made itself.
pub const ERROR_HEADER: &str = "x-bulwark-error";

/// One downstream connection's context.
#[derive(Debug)]
struct Conn {
    direction: Direction,
    dst: SocketAddr,
    version: Version,
    shared: Arc<Shared>,
}

/// Serves one detected HTTP connection until the client closes it or the proxy drains.
pub async fn serve<I>(
    io: I,
    version: Version,
    direction: Direction,
    dst: SocketAddr,
    shared: Arc<Shared>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let drain = shared.drain.clone();
    let limits = shared.cfg.http.clone();
    let conn = Arc::new(Conn {
        direction,
        dst,
        version,
        shared,
    });
    let svc = service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(forward(&conn, req).await) }
    });
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
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = drain.signaled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
        Version::Http2 => {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .max_concurrent_streams(limits.h2_max_concurrent_streams)
                .max_pending_accept_reset_streams(limits.h2_max_pending_resets)
                .max_local_error_reset_streams(limits.h2_max_local_error_resets)
                .max_header_list_size(limits.max_header_bytes as u32);
            let conn = b.serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = drain.signaled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %dst, "downstream HTTP connection ended with an error");
    }
}

/// Forwards one request: through its target's policy when the snapshot has one for it
/// (outbound only: policy is the client's), else straight to the original destination.
async fn forward(conn: &Conn, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let start = Instant::now();
    let metrics = &conn.shared.metrics;
    let authority = authority_of(&req).unwrap_or_else(|| conn.dst.to_string());
    let grpc = is_grpc(req.headers());
    let upgrade = match conn.version {
        Version::Http1 => upgrade_protocol(req.headers()),
        Version::Http2 => None,
    };
    strip_hop_by_hop(req.headers_mut());
    let downstream_upgrade = upgrade.map(|proto| {
        req.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        req.headers_mut().insert(UPGRADE, proto);
        hyper::upgrade::on(&mut req)
    });
    *req.uri_mut() = absolute_uri(std::mem::take(req.uri_mut()), &authority, conn.dst);

    let snapshot = conn.shared.snapshot.load();
    let found = match conn.direction {
        Direction::Outbound => snapshot.lookup(conn.dst, Some(&authority)),
        Direction::Inbound => None,
    };
    let result = match found {
        Some((target, state)) => {
            let c = Call {
                shared: &conn.shared,
                version: conn.version,
                dst: conn.dst,
                target,
                state,
                grpc,
                start,
                upgrade: downstream_upgrade.is_some(),
            };
            call::call(&c, req).await
        }
        None => passthrough(conn, req).await,
    };
    let up = match result {
        Ok(up) => up,
        Err(LocalError { status, reason }) => {
            metrics.error(conn.direction, reason);
            metrics.record_request(conn.direction, &authority, status.as_u16(), start.elapsed());
            tracing::info!(dst = %conn.dst, %authority, reason, "request failed");
            return error_response(status, reason, grpc);
        }
    };
    let mut resp = up.resp;
    metrics.record_request(
        conn.direction,
        &authority,
        resp.status().as_u16(),
        start.elapsed(),
    );
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(down) = downstream_upgrade {
            let up = hyper::upgrade::on(&mut resp);
            let shared = conn.shared.clone();
            let direction = conn.direction;
            conn.shared
                .drain
                .spawn(async move { tunnel(down, up, direction, shared).await });
        }
    } else {
        strip_hop_by_hop(resp.headers_mut());
    }
    resp.map(|b| ProxyBody::timed(b, up.deadline, up.idle, up.permit, up.outcome))
}

/// No policy: one attempt to the original destination with the proxy's own limits.
async fn passthrough(conn: &Conn, req: Request<Incoming>) -> Result<Upstream, LocalError> {
    let connect = conn.shared.cfg.tcp.connect_timeout;
    let client = conn.shared.pools.get(conn.dst, conn.version, connect);
    match client.request(req.map(Either::Left)).await {
        Ok(resp) => Ok(Upstream {
            resp,
            deadline: None,
            idle: None,
            permit: None,
            outcome: None,
        }),
        Err(e) => {
            let (failure, reason) = call::classify(&e);
            tracing::debug!(error = %error_chain(&e), dst = %conn.dst, "upstream request failed");
            let status = match (failure, reason) {
                (_, "connect_timeout") => StatusCode::GATEWAY_TIMEOUT,
                (Failure::RefusedStream, _) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            Err(LocalError { status, reason })
        }
    }
}

/// Joins the two upgraded halves of an HTTP/1.1 Upgrade (WebSocket) and copies bytes.
async fn tunnel(
    down: hyper::upgrade::OnUpgrade,
    up: hyper::upgrade::OnUpgrade,
    direction: Direction,
    shared: Arc<Shared>,
) {
    let (down, up) = match tokio::try_join!(down, up) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let idle = shared.cfg.tcp.idle_timeout;
    if let Err(e) = copy::bidirectional(
        TokioIo::new(down),
        TokioIo::new(up),
        idle,
        shared.metrics.bytes(direction),
    )
    .await
    {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}

/// The request's authority: `:authority` (HTTP/2, absolute-form) or the `Host` header.
fn authority_of<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The `Upgrade` value of an HTTP/1.1 upgrade request (`Connection: upgrade` + `Upgrade`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    if has_token(headers, CONNECTION, "upgrade") {
        headers.get(UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes hop-by-hop fields (RFC 9110 §7.6.1): `Connection` and every field it names,
/// `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, and `TE` unless it is
/// exactly `trailers` (which gRPC needs end to end).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) fields present instead of one hash lookup per hop-by-hop name:
    // most requests carry none, and then nothing is allocated or removed.
    let mut hop: Vec<HeaderName> = Vec::new();
    for (name, value) in headers.iter() {
        if name == CONNECTION {
            let listed = value.to_str().unwrap_or("").split(',');
            hop.extend(
                listed
                    .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                    .filter(|n| n != TE),
            );
            hop.push(CONNECTION);
        } else if name == TRANSFER_ENCODING
            || name == UPGRADE
            || name == "keep-alive"
            || name == "proxy-connection"
            || (name == TE && !value.as_bytes().eq_ignore_ascii_case(b"trailers"))
        {
            hop.push(name.clone());
        }
    }
    for name in hop {
        headers.remove(name);
    }
}

/// The pool needs an absolute URI; the authority keeps the client's `Host`, the connector
/// dials `dst` whatever it says. Reuses the parsed path rather than parsing it again.
fn absolute_uri(uri: Uri, authority: &str, dst: SocketAddr) -> Uri {
    let authority = Authority::try_from(authority)
        .or_else(|_| Authority::try_from(dst.to_string()))
        .ok();
    let mut parts = uri.into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).unwrap_or_default()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A response the proxy makes itself. gRPC callers get a trailers-only gRPC error their stubs
/// understand: DEADLINE_EXCEEDED for every 504, INTERNAL for a 400, else UNAVAILABLE.
fn error_response(status: StatusCode, reason: &'static str, grpc: bool) -> Response<ProxyBody> {
    let mut b = Response::builder().header(ERROR_HEADER, reason);
    if grpc {
        let code = match status {
            StatusCode::GATEWAY_TIMEOUT => "4",
            StatusCode::BAD_REQUEST => "13",
            _ => "14",
        };
        b = b
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "application/grpc")
            .header("grpc-status", code)
            .header("grpc-message", format!("bulwark: {reason}"));
        return b
            .body(ProxyBody::local(Bytes::new()))
            .expect("a response built from valid static parts");
    }
    b.status(status)
        .header(CONTENT_TYPE, "text/plain")
        .body(ProxyBody::local(format!("bulwark: {reason}\n")))
        .expect("a response built from valid static parts")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_fields_are_removed_and_end_to_end_kept() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("x-end", "2"),
            ("host", "web"),
        ]);
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-end", "host"]);
    }

    #[test]
    fn te_trailers_survives_for_grpc() {
        let mut h = headers(&[("te", "trailers"), ("content-type", "application/grpc")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get(TE).unwrap(), "trailers");
        assert!(is_grpc(&h));
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let h = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(upgrade_protocol(&h).unwrap(), "websocket");
        assert!(upgrade_protocol(&headers(&[("upgrade", "websocket")])).is_none());
    }

    #[test]
    fn absolute_uri_keeps_the_authority_or_falls_back_to_the_destination() {
        let dst: SocketAddr = "10.1.0.2:8080".parse().unwrap();
        let uri: Uri = "/a?b=1".parse().unwrap();
        assert_eq!(
            absolute_uri(uri.clone(), "web.svc:8080", dst).to_string(),
            "http://web.svc:8080/a?b=1"
        );
        assert_eq!(
            absolute_uri(uri, "bad host", dst).to_string(),
            "http://10.1.0.2:8080/a?b=1"
        );
    }

    #[test]
    fn grpc_errors_are_trailers_only_responses() {
        let r = error_response(StatusCode::GATEWAY_TIMEOUT, "connect_timeout", true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "4");
        let r = error_response(StatusCode::BAD_GATEWAY, "connect_refused", false);
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.headers()[ERROR_HEADER], "connect_refused");
    }
}

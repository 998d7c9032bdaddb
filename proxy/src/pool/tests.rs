use super::*;
use crate::config::Config;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A request whose body fails mid-upload with `kind`, sent over `version` by a real
/// hyper client to a real socket that reads everything: the error must say the client
/// failed.
async fn aborted_upload(version: Version, kind: std::io::ErrorKind) -> Error {
    use bytes::Bytes;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        // A server that reads the whole request body before it answers.
        let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
            use http_body_util::BodyExt;
            let _ = req.into_body().collect().await;
            Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<Bytes>::new()))
        });
        let io = TokioIo::new(s);
        let _ = match version {
            Version::Http1 => {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await
            }
            Version::Http2 => {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, svc)
                    .await
            }
        };
    });
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
        Ok(Frame::data(Bytes::from_static(b"part of an upload"))),
        Err(std::io::Error::new(kind, "client went away")),
    ];
    let body = AttemptBody::Streamed(StreamBody::new(tokio_stream::iter(frames)));
    let cfg = Config::default();
    let pools = Pools::new(cfg.http, cfg.tcp, None);
    let endpoint = Arc::new(Endpoint::new(
        pools.settings((addr, version, Duration::from_secs(1)), None),
    ));
    let req = Request::post(upstream_uri(version, addr, "/upload"))
        .body(body)
        .unwrap();
    let sent = endpoint.send(req);
    let result = tokio::time::timeout(Duration::from_secs(5), sent).await;
    sink.abort();
    match result {
        Ok(Err(e)) => e,
        other => panic!("expected a failed request, got {other:?}"),
    }
}

/// The URI a request to `addr` carries upstream: origin-form on HTTP/1, absolute on
/// HTTP/2.
fn upstream_uri(version: Version, addr: SocketAddr, path: &str) -> String {
    match version {
        Version::Http1 => path.to_string(),
        Version::Http2 => format!("http://{addr}{path}"),
    }
}

#[tokio::test]
async fn an_aborted_upload_is_the_clients_fault() {
    for version in [Version::Http1, Version::Http2] {
        let e = aborted_upload(version, std::io::ErrorKind::ConnectionReset).await;
        assert_eq!(e.kind, Kind::DownstreamAborted, "{version:?}");
        assert_eq!(e.side, crate::error::Side::Downstream);
    }
}

#[tokio::test]
async fn a_body_whose_framing_breaks_is_a_malformed_request() {
    // hyper's chunked decoder fails with InvalidInput or InvalidData.
    for kind in [
        std::io::ErrorKind::InvalidInput,
        std::io::ErrorKind::InvalidData,
    ] {
        let e = aborted_upload(Version::Http1, kind).await;
        assert_eq!(e.kind, Kind::MalformedRequest, "{kind:?}");
        assert_eq!(e.side, crate::error::Side::Downstream);
    }
}

#[tokio::test]
async fn pools_are_per_endpoint_and_bounded() {
    let mut cfg = Config::default();
    cfg.http.pool_max_endpoints = 2;
    let t = cfg.tcp.connect_timeout;
    let pools = Pools::new(cfg.http, cfg.tcp, None);
    let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let c: SocketAddr = "10.0.0.3:80".parse().unwrap();
    pools.get(a, Version::Http1, t, None, None);
    pools.get(b, Version::Http1, t, None, None);
    pools.get(a, Version::Http1, t, None, None);
    assert_eq!(pools.len(), 2);
    pools.get(c, Version::Http1, t, None, None);
    assert_eq!(pools.len(), 2);
    let map = &pools.clients.lock().unwrap().map;
    assert!(
        map.contains_key(&(a, Version::Http1, t)),
        "a was used most recently and stays"
    );
    assert!(!map.contains_key(&(b, Version::Http1, t)));
}

/// An HTTP/1 upstream that counts the connections it accepts: `/big` answers 1 MiB,
/// `/empty` 204, anything else a short body.
async fn counting_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use bytes::Bytes;
    use http_body_util::Full;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let resp = match req.uri().path() {
                    "/big" => Response::new(Full::new(Bytes::from(vec![b'x'; 1 << 20]))),
                    "/empty" => Response::builder()
                        .status(204)
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                    _ => Response::new(Full::new(Bytes::from_static(b"hello"))),
                };
                Ok::<_, std::convert::Infallible>(resp)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    (addr, accepted)
}

type NoBody = AttemptBody<http_body_util::Empty<bytes::Bytes>>;

fn get(path: &str) -> Request<NoBody> {
    Request::get(path)
        .header(http::header::HOST, "upstream")
        .body(AttemptBody::Streamed(http_body_util::Empty::new()))
        .unwrap()
}

fn endpoint(addr: SocketAddr, idle_timeout: Duration) -> Arc<Endpoint<NoBody>> {
    let mut cfg = Config::default();
    cfg.http.pool_idle_timeout = idle_timeout;
    let pools = Pools::new(cfg.http, cfg.tcp, None);
    Arc::new(Endpoint::new(
        pools.settings((addr, Version::Http1, Duration::from_secs(1)), None),
    ))
}

#[tokio::test]
async fn an_http1_connection_is_reused_once_its_body_is_read_out() {
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering;

    let (addr, accepted) = counting_upstream().await;
    let ep = endpoint(addr, Duration::from_secs(90));
    for _ in 0..5 {
        let resp = ep.clone().send(get("/")).await.unwrap();
        assert_eq!(ep.idle(), 0, "busy until its body ends");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
        assert_eq!(ep.idle(), 1);
    }
    // A body with nothing to read returns its connection without being polled.
    let resp = ep.clone().send(get("/empty")).await.unwrap();
    assert_eq!(resp.status(), 204);
    drop(resp);
    assert_eq!(ep.idle(), 1);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection for six requests"
    );
}

#[tokio::test]
async fn a_body_dropped_before_its_end_takes_its_connection_along() {
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering;

    let (addr, accepted) = counting_upstream().await;
    let ep = endpoint(addr, Duration::from_secs(90));
    let mut body = ep.clone().send(get("/big")).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    assert_eq!(ep.idle(), 0, "a half-read connection is never reused");
    let resp = ep.clone().send(get("/")).await.unwrap();
    resp.into_body().collect().await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idle_connections_past_the_idle_timeout_are_closed() {
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering;

    let (addr, accepted) = counting_upstream().await;
    let idle_timeout = Duration::from_secs(5);
    let ep = endpoint(addr, idle_timeout);
    let resp = ep.clone().send(get("/")).await.unwrap();
    resp.into_body().collect().await.unwrap();
    ep.sweep();
    assert_eq!(ep.idle(), 1, "not idle long enough yet");
    tokio::time::pause();
    tokio::time::advance(idle_timeout).await;
    ep.sweep();
    assert_eq!(ep.idle(), 0);
    tokio::time::resume();
    let resp = ep.clone().send(get("/")).await.unwrap();
    resp.into_body().collect().await.unwrap();
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a new connection after the sweep"
    );
}

//! The control plane's HTTP admin port: `/ready` (200 once a valid policy is served),
//! `/live`, `/metrics` (the webhooks' counts too).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::state::State;
use crate::webhook::Webhook;

fn route(state: &State, hook: Option<&Webhook>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.render_metrics() + &hook.map(Webhook::render_metrics).unwrap_or_default(),
        ),
        "/live" => (StatusCode::OK, "text/plain", "live\n".to_string()),
        "/ready" => match state.policy().version {
            0 => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "no valid policy loaded yet\n".to_string(),
            ),
            v => (
                StatusCode::OK,
                "text/plain",
                format!("ready: policy version {v}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "endpoints: /ready /live /metrics\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a response built from valid static parts")
}

/// Serves the admin port until the process exits.
pub async fn serve(listener: TcpListener, state: Arc<State>, hook: Option<Arc<Webhook>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (state, hook) = (state.clone(), hook.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (state, hook) = (state.clone(), hook.clone());
                async move { Ok::<_, Infallible>(route(&state, hook.as_deref(), &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

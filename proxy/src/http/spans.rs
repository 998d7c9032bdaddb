//! Spans over OTLP, off unless `--otlp-endpoint` is set. The proxy joins traces the app
//! already samples: a request whose W3C `traceparent` is sampled gets a span of its own
//! (a client span outbound, a server span inbound), a child of the caller's, and the
//! request goes on with the proxy's span as its parent, so the next hop's span hangs
//! under the proxy's. A request without a sampled `traceparent` passes untouched and costs
//! nothing. Spans are batched and exported by the OpenTelemetry SDK's processor on its
//! own thread; a collector that is down loses spans, never requests.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _,
    TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};

use super::access_log::Entry;
use crate::metrics::Direction;

/// Why span export could not start.
#[derive(Debug, thiserror::Error)]
#[error("OTLP span exporter for {endpoint}: {source}")]
pub struct SpansError {
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// The span exporter of one proxy.
#[derive(Debug)]
pub struct Spans {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Spans {
    /// Exports to the OTLP/gRPC collector at `endpoint` (`http://host:4317`), naming the
    /// proxy's workload `workload`. Must run inside the tokio runtime: the gRPC channel's
    /// connection task lives there.
    pub fn start(endpoint: &str, workload: &str) -> Result<Self, SpansError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|source| SpansError {
                endpoint: endpoint.to_string(),
                source,
            })?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("bulwark-proxy")
            .with_attribute(KeyValue::new("bulwark.workload", workload.to_string()))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("bulwark-proxy");
        Ok(Self { provider, tracer })
    }

    /// The request's span, if its `traceparent` is sampled; its `traceparent` then names the
    /// proxy's span as the parent.
    pub fn begin(&self, direction: Direction, headers: &mut HeaderMap) -> Option<Span> {
        let parent = sampled_parent(headers)?;
        let kind = match direction {
            Direction::Outbound => SpanKind::Client,
            Direction::Inbound => SpanKind::Server,
        };
        let name = match direction {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        };
        let cx = Context::new().with_remote_span_context(parent);
        let span = SpanBuilder::from_name(name)
            .with_kind(kind)
            .with_start_time(SystemTime::now())
            .start_with_context(&self.tracer, &cx);
        let sc = span.span_context();
        let value = format!("00-{}-{}-01", sc.trace_id(), sc.span_id());
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(TRACEPARENT, v);
        }
        Some(span)
    }

    /// Sends the spans still waiting (at shutdown).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::info!(error = %e, "spans not all exported at shutdown");
        }
    }
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The caller's span, when its `traceparent` is well-formed and sampled.
fn sampled_parent(headers: &HeaderMap) -> Option<SpanContext> {
    let t = super::trace::traceparent(headers.get(TRACEPARENT)?).filter(|t| t.sampled)?;
    Some(SpanContext::new(
        TraceId::from_bytes(t.trace),
        SpanId::from_bytes(t.span),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// Ends `span` with what the request came to.
pub fn end(mut span: Span, e: &Entry, failed: bool) {
    span.update_name(format!("{} {}", e.direction, e.method));
    let mut attributes = vec![
        KeyValue::new("http.request.method", e.method.clone()),
        KeyValue::new("server.address", e.authority.clone()),
        KeyValue::new("url.path", e.path.clone()),
        KeyValue::new("http.response.status_code", i64::from(e.status)),
        KeyValue::new("bulwark.attempts", i64::from(e.attempts)),
        KeyValue::new("bulwark.hedged", e.hedged),
        KeyValue::new("bulwark.request_bytes", e.request_bytes as i64),
        KeyValue::new("bulwark.response_bytes", e.response_bytes as i64),
    ];
    if let Some(g) = &e.grpc_status {
        attributes.push(KeyValue::new("rpc.grpc.status_code", g.clone()));
    }
    if let Some(u) = e.upstream {
        attributes.push(KeyValue::new("network.peer.address", u.to_string()));
    }
    if let Some(c) = &e.client_id {
        attributes.push(KeyValue::new("bulwark.client_id", c.to_string()));
    }
    if let Some(r) = e.error {
        attributes.push(KeyValue::new("bulwark.error", r));
    }
    span.set_attributes(attributes);
    if failed {
        span.set_status(Status::error(e.error.unwrap_or("failed")));
    }
    span.end_with_timestamp(SystemTime::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn only_a_sampled_well_formed_parent_is_joined() {
        let p = sampled_parent(&with(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .expect("sampled");
        assert_eq!(p.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id().to_string(), "00f067aa0ba902b7");
        assert!(p.is_remote());
        for v in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", // not sampled
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert!(sampled_parent(&with(v)).is_none(), "{v}");
        }
        assert!(sampled_parent(&HeaderMap::new()).is_none());
    }
}

//! An OTLP/gRPC trace collector for tests: `bulwark-otlp-sink ADDR` accepts
//! `ExportTraceServiceRequest`s on ADDR and prints each span as one JSON line on stdout
//! (ids in hex, the name, the kind, the attributes and the resource's `service.name`), so
//! a test reads what a proxy exported from the process's output.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};

#[derive(Debug, Default)]
struct Sink;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> serde_json::Map<String, serde_json::Value> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => serde_json::json!(s),
                Some(Value::BoolValue(b)) => serde_json::json!(b),
                Some(Value::IntValue(i)) => serde_json::json!(i),
                Some(Value::DoubleValue(d)) => serde_json::json!(d),
                other => serde_json::json!(format!("{other:?}")),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = std::io::stdout().lock();
        for rs in &request.get_ref().resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                let line = serde_json::json!({
                    "trace_id": hex(&span.trace_id),
                    "span_id": hex(&span.span_id),
                    "parent_span_id": hex(&span.parent_span_id),
                    "name": span.name,
                    "kind": span.kind,
                    "start_unix_nano": span.start_time_unix_nano,
                    "end_unix_nano": span.end_time_unix_nano,
                    "attributes": attributes(&span.attributes),
                    "service_name": resource.get("service.name"),
                    "status_code": span.status.as_ref().map(|s| s.code),
                });
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .context("usage: bulwark-otlp-sink ADDR")?
        .parse()
        .context("ADDR is ip:port")?;
    eprintln!("otlp sink listening on {addr}");
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Sink))
        .serve(addr)
        .await
        .context("serving OTLP")
}

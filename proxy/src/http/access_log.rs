//! The access log: one line per request (or per `--access-log-sample` requests) on stdout,
//! as `key=value` text or JSON, written when the response ends. Lines go through a bounded
//! queue to a writer thread, so a slow reader of stdout never holds up a request: past
//! [`ACCESS_LOG_QUEUE`] waiting lines, lines are dropped and counted
//! (`bulwark_access_log_dropped_total`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

use serde::Serialize;

use crate::config::{ACCESS_LOG_QUEUE, AccessLogFormat};
use crate::metrics::requests::{AfterTally, trace_hex};
use crate::metrics::{Direction, Metrics};

/// The access log of one proxy.
#[derive(Debug)]
pub struct AccessLog {
    format: AccessLogFormat,
    sample: u64,
    seen: AtomicU64,
    lines: SyncSender<String>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// The access log in `format`, one request in `sample` logged; `None` when off. Starts
    /// the writer thread, which writes to stdout.
    pub fn start(format: AccessLogFormat, sample: u32, metrics: Arc<Metrics>) -> Option<Arc<Self>> {
        Self::with_writer(format, sample, metrics, std::io::stdout())
    }

    /// [`Self::start`] writing to `out` (tests).
    pub fn with_writer(
        format: AccessLogFormat,
        sample: u32,
        metrics: Arc<Metrics>,
        out: impl std::io::Write + Send + 'static,
    ) -> Option<Arc<Self>> {
        if format == AccessLogFormat::Off {
            return None;
        }
        let (lines, rx) = sync_channel(ACCESS_LOG_QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out))
            .ok()?;
        Some(Arc::new(Self {
            format,
            sample: u64::from(sample.max(1)),
            seen: AtomicU64::new(0),
            lines,
            metrics,
        }))
    }

    /// Whether this request is one to log.
    pub fn sampled(&self) -> bool {
        self.seen
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(self.sample)
    }

    /// Queues the line of a finished request.
    pub fn write(&self, entry: &Entry) {
        let line = match self.format {
            AccessLogFormat::Json => serde_json::to_string(entry).unwrap_or_default(),
            _ => entry.text(),
        };
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics
                    .access_log_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Writes queued lines, flushing whenever the queue is momentarily empty.
fn write_lines(rx: Receiver<String>, out: impl std::io::Write) {
    let mut out = std::io::BufWriter::new(out);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        let _ = out.write_all(b"\n");
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }
}

/// One request as the access log writes it. Field names are the JSON keys and the text
/// format's keys alike.
#[derive(Debug, Serialize)]
pub struct Entry {
    /// When the request arrived (RFC 3339, UTC).
    pub start: String,
    /// inbound or outbound.
    pub direction: &'static str,
    /// Request method.
    pub method: String,
    /// Request authority.
    pub authority: String,
    /// Request path (no query: it may carry secrets).
    pub path: String,
    /// HTTP status sent downstream.
    pub status: u16,
    /// gRPC status (`0`–`16`, `reset`), for gRPC calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// From request arrival to the end of the response, in milliseconds.
    pub duration_ms: f64,
    /// Request body bytes read from the client.
    pub request_bytes: u64,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// The endpoint that answered (`None`: the proxy answered itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<SocketAddr>,
    /// Attempts made (1 unless retried).
    pub attempts: u32,
    /// Whether a hedged attempt was sent.
    pub hedged: bool,
    /// The caller's verified SPIFFE ID (inbound over mesh TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Arc<str>>,
    /// `x-request-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The trace id of `traceparent` or B3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The proxy's reason, when it answered itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

impl Entry {
    /// The `key=value` line: values with a space, a quote or `=` are quoted.
    pub fn text(&self) -> String {
        let mut o = String::with_capacity(256);
        let mut field = |k: &str, v: &dyn std::fmt::Display| {
            let v = v.to_string();
            if !o.is_empty() {
                o.push(' ');
            }
            if v.is_empty() || v.contains([' ', '"', '=']) {
                let _ = write!(o, "{k}={v:?}");
            } else {
                let _ = write!(o, "{k}={v}");
            }
        };
        field("start", &self.start);
        field("direction", &self.direction);
        field("method", &self.method);
        field("authority", &self.authority);
        field("path", &self.path);
        field("status", &self.status);
        field("grpc_status", &self.grpc_status.as_deref().unwrap_or("-"));
        field("duration_ms", &format_args!("{:.3}", self.duration_ms));
        field("request_bytes", &self.request_bytes);
        field("response_bytes", &self.response_bytes);
        let upstream = self.upstream.map(|a| a.to_string());
        field("upstream", &upstream.as_deref().unwrap_or("-"));
        field("attempts", &self.attempts);
        field("hedged", &self.hedged);
        field("client_id", &self.client_id.as_deref().unwrap_or("-"));
        field("request_id", &self.request_id.as_deref().unwrap_or("-"));
        field("trace_id", &self.trace_id.as_deref().unwrap_or("-"));
        field("error", &self.error.unwrap_or("-"));
        o
    }
}

/// What the access log and the request's span need of it, gathered from its head to its
/// end.
#[derive(Debug)]
pub struct Pending {
    /// Where the line goes, if it is one to log.
    pub log: Option<Arc<AccessLog>>,
    /// Its span, if its trace is sampled.
    pub span: Option<opentelemetry_sdk::trace::Span>,
    /// The line, its response fields filled in as they become known.
    pub entry: Entry,
    /// Request body bytes, counted by the request body as it streams.
    pub request_bytes: Arc<AtomicU64>,
    /// When the request arrived.
    pub started: tokio::time::Instant,
}

impl Pending {
    /// A pending line (and span) for the request `req`, read now.
    pub fn new<B>(
        log: Option<Arc<AccessLog>>,
        span: Option<opentelemetry_sdk::trace::Span>,
        direction: Direction,
        req: &http::Request<B>,
    ) -> Self {
        Self {
            log,
            span,
            entry: Entry {
                start: rfc3339(SystemTime::now()),
                direction: direction.as_str(),
                method: req.method().to_string(),
                authority: String::new(),
                path: req.uri().path().to_string(),
                status: 0,
                grpc_status: None,
                duration_ms: 0.0,
                request_bytes: 0,
                response_bytes: 0,
                upstream: None,
                attempts: 0,
                hedged: false,
                client_id: None,
                request_id: req
                    .headers()
                    .get(&super::trace::REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                trace_id: super::trace::trace_id(req.headers()).map(|id| trace_hex(&id)),
                error: None,
            },
            request_bytes: Arc::new(AtomicU64::new(0)),
            started: tokio::time::Instant::now(),
        }
    }
}

impl AfterTally for Pending {
    /// Writes the line.
    fn ended(mut self: Box<Self>, grpc_status: Option<String>, response_bytes: u64) {
        let e = &mut self.entry;
        e.grpc_status = grpc_status;
        e.response_bytes = response_bytes;
        e.request_bytes = self.request_bytes.load(Ordering::Relaxed);
        // Whole microseconds: a float of nanoseconds prints as 0.9977560000000001.
        e.duration_ms = self.started.elapsed().as_micros() as f64 / 1e3;
        if let Some(log) = &self.log {
            log.write(e);
        }
        if let Some(span) = self.span.take() {
            let grpc_failed = e.grpc_status.as_deref().is_some_and(|g| g != "0");
            super::spans::end(span, e, e.status >= 500 || grpc_failed);
        }
    }
}

/// RFC 3339 in UTC, to the millisecond: `2026-12-04T18:30:11.123Z`.
fn rfc3339(t: SystemTime) -> String {
    use time::format_description::{BorrowedFormatItem, parse_borrowed};
    static FORMAT: std::sync::LazyLock<Vec<BorrowedFormatItem<'static>>> =
        std::sync::LazyLock::new(|| {
            parse_borrowed::<2>(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z",
            )
            .expect("a valid format description")
        });
    time::OffsetDateTime::from(t)
        .format(&FORMAT[..])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(10))
    }

    fn entry() -> Entry {
        Entry {
            start: rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(1_733_337_011_123)),
            direction: "outbound",
            method: "GET".into(),
            authority: "api.shop:80".into(),
            path: "/items".into(),
            status: 200,
            grpc_status: None,
            duration_ms: 1.5,
            request_bytes: 0,
            response_bytes: 12,
            upstream: Some("10.0.0.7:8080".parse().unwrap()),
            attempts: 2,
            hedged: false,
            client_id: None,
            request_id: Some("a b".into()),
            trace_id: None,
            error: None,
        }
    }

    #[test]
    fn text_lines_are_key_value_with_quoted_values_where_needed() {
        assert_eq!(
            entry().text(),
            "start=2024-12-04T18:30:11.123Z direction=outbound method=GET authority=api.shop:80 \
             path=/items status=200 grpc_status=- duration_ms=1.500 request_bytes=0 \
             response_bytes=12 upstream=10.0.0.7:8080 attempts=2 hedged=false client_id=- \
             request_id=\"a b\" trace_id=- error=-"
        );
    }

    #[test]
    fn one_request_in_sample_is_logged_and_lines_reach_the_writer() {
        let sink = Sink::default();
        let log =
            AccessLog::with_writer(AccessLogFormat::Json, 3, metrics(), sink.clone()).unwrap();
        let logged = (0..9).filter(|_| log.sampled()).count();
        assert_eq!(logged, 3);
        log.write(&entry());
        for _ in 0..200 {
            if !sink.0.lock().unwrap().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["upstream"], "10.0.0.7:8080");
        assert_eq!(v["attempts"], 2);
        assert!(v.get("grpc_status").is_none(), "absent fields are left out");
        assert!(AccessLog::with_writer(AccessLogFormat::Off, 1, metrics(), sink).is_none());
    }

    #[test]
    fn times_are_rfc3339_to_the_millisecond() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_nanos(951_782_400_250_999_999);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.250Z");
    }
}

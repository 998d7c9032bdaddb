//! Every failure the proxy answers for itself, as one typed [`Error`]: what happened
//! ([`Kind`]), whose fault it was ([`Side`]) and whether a retry could help. The mapping to
//! an HTTP status, a gRPC status, the `x-bulwark-error` reason and the metric label is
//! written once, here.

use http::StatusCode;

/// Whose fault a failure is. Only an [`Side::Upstream`] failure says anything about an
/// endpoint's health: a client that gives up on its own upload, or a policy limit that
/// fired, must never get a healthy endpoint ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The endpoint (or the network to it) failed.
    Upstream,
    /// The client: it went away, aborted its body, or dialled the proxy port directly.
    Downstream,
    /// The proxy itself could not do what it should have.
    Internal,
    /// A limit of the policy fired (a timeout, the bulkhead), or it left nothing to call.
    Policy,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The endpoint refused the connection: the request never left.
    ConnectRefused,
    /// The connect did not complete in time: the request never left.
    ConnectTimeout,
    /// The mesh TLS handshake with a meshed endpoint failed: the request never left.
    TlsHandshake,
    /// HTTP/2 REFUSED_STREAM: the server did not process the request.
    RefusedStream,
    /// The upstream connection broke after the request may have been sent.
    UpstreamReset,
    /// One attempt's own timeout passed before its response headers.
    PerTryTimeout,
    /// The policy's request timeout passed.
    RequestTimeout,
    /// The policy's response-headers timeout passed.
    ResponseHeadersTimeout,
    /// The caller's own `grpc-timeout` passed.
    CallerDeadline,
    /// Every bulkhead slot busy and its queue full.
    BulkheadFull,
    /// No bulkhead slot within `queueTimeout`.
    BulkheadQueueTimeout,
    /// Every endpoint is gone (none resolved, none left to pick).
    NoEndpoints,
    /// The client's request body failed (an aborted upload, a client that went away).
    DownstreamAborted,
    /// A request head hyper accepted but whose framing a proxy must not pass on (a
    /// transfer coding stacked or repeated).
    MalformedRequest,
    /// An HTTP/2 request with more header fields than `--max-headers` (HTTP/1 heads are
    /// bounded by hyper itself).
    TooManyHeaders,
    /// A connection that dialled the proxy port directly: forwarding it would loop.
    NotRedirected,
    /// An opaque connection carried no bytes for the idle timeout.
    IdleTimeout,
    /// A connection to a strict inbound port that was not mesh TLS: closed unanswered.
    PlaintextRefused,
    /// Authorization denied the caller (403, PERMISSION_DENIED, or a closed connection).
    Unauthorized,
}

impl Kind {
    /// Every kind, for tests and documentation.
    pub const ALL: [Kind; 19] = [
        Kind::ConnectRefused,
        Kind::ConnectTimeout,
        Kind::TlsHandshake,
        Kind::RefusedStream,
        Kind::UpstreamReset,
        Kind::PerTryTimeout,
        Kind::RequestTimeout,
        Kind::ResponseHeadersTimeout,
        Kind::CallerDeadline,
        Kind::BulkheadFull,
        Kind::BulkheadQueueTimeout,
        Kind::NoEndpoints,
        Kind::DownstreamAborted,
        Kind::MalformedRequest,
        Kind::TooManyHeaders,
        Kind::NotRedirected,
        Kind::IdleTimeout,
        Kind::PlaintextRefused,
        Kind::Unauthorized,
    ];

    /// The reason sent in `x-bulwark-error`, logged, and used as the `reason` metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Kind::ConnectRefused => "connect_refused",
            Kind::ConnectTimeout => "connect_timeout",
            Kind::TlsHandshake => "tls_handshake",
            Kind::RefusedStream => "refused_stream",
            Kind::UpstreamReset => "upstream_reset",
            Kind::PerTryTimeout => "per_try_timeout",
            Kind::RequestTimeout => "request_timeout",
            Kind::ResponseHeadersTimeout => "response_headers_timeout",
            Kind::CallerDeadline => "caller_deadline",
            Kind::BulkheadFull => "bulkhead_full",
            Kind::BulkheadQueueTimeout => "bulkhead_queue_timeout",
            Kind::NoEndpoints => "no_endpoints",
            Kind::DownstreamAborted => "downstream_aborted",
            Kind::MalformedRequest => "malformed_request",
            Kind::TooManyHeaders => "too_many_headers",
            Kind::NotRedirected => "not_redirected",
            Kind::IdleTimeout => "idle_timeout",
            Kind::PlaintextRefused => "plaintext_refused",
            Kind::Unauthorized => "unauthorized",
        }
    }

    fn side(self) -> Side {
        match self {
            Kind::ConnectRefused
            | Kind::ConnectTimeout
            | Kind::TlsHandshake
            | Kind::RefusedStream
            | Kind::UpstreamReset
            | Kind::PerTryTimeout => Side::Upstream,
            Kind::CallerDeadline
            | Kind::DownstreamAborted
            | Kind::MalformedRequest
            | Kind::TooManyHeaders
            | Kind::NotRedirected
            | Kind::PlaintextRefused => Side::Downstream,
            Kind::RequestTimeout
            | Kind::ResponseHeadersTimeout
            | Kind::BulkheadFull
            | Kind::BulkheadQueueTimeout
            | Kind::NoEndpoints
            | Kind::IdleTimeout
            | Kind::Unauthorized => Side::Policy,
        }
    }

    /// Whether another attempt could succeed where this one failed. The policy still decides
    /// (its conditions, the method's replay safety, the budget).
    fn retryable(self) -> bool {
        matches!(
            self,
            Kind::ConnectRefused
                | Kind::ConnectTimeout
                | Kind::TlsHandshake
                | Kind::RefusedStream
                | Kind::UpstreamReset
                | Kind::PerTryTimeout
        )
    }
}

/// A failure the proxy answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", kind.reason())]
pub struct Error {
    /// What happened.
    pub kind: Kind,
    /// Whose fault it was.
    pub side: Side,
    /// Whether a retry could help.
    pub retryable: bool,
}

impl From<Kind> for Error {
    fn from(kind: Kind) -> Self {
        Self {
            kind,
            side: kind.side(),
            retryable: kind.retryable(),
        }
    }
}

impl Error {
    /// The reason (`x-bulwark-error`, logs, metric label).
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// Whether the connection must close after the proxy's answer: the request's framing
    /// is in doubt, so nothing after it may be read as another request.
    pub fn closes_connection(&self) -> bool {
        self.kind == Kind::MalformedRequest
    }

    /// The HTTP status of the response the proxy makes for it.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::ConnectRefused | Kind::TlsHandshake | Kind::UpstreamReset => {
                StatusCode::BAD_GATEWAY
            }
            Kind::ConnectTimeout
            | Kind::PerTryTimeout
            | Kind::RequestTimeout
            | Kind::ResponseHeadersTimeout
            | Kind::CallerDeadline => StatusCode::GATEWAY_TIMEOUT,
            Kind::RefusedStream
            | Kind::BulkheadFull
            | Kind::BulkheadQueueTimeout
            | Kind::NoEndpoints => StatusCode::SERVICE_UNAVAILABLE,
            Kind::DownstreamAborted | Kind::MalformedRequest => StatusCode::BAD_REQUEST,
            Kind::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Kind::NotRedirected | Kind::IdleTimeout => StatusCode::BAD_GATEWAY,
            Kind::PlaintextRefused | Kind::Unauthorized => StatusCode::FORBIDDEN,
        }
    }

    /// The gRPC status a gRPC caller gets: DEADLINE_EXCEEDED for every timeout, CANCELLED
    /// for a call the client abandoned, INTERNAL for a malformed request,
    /// RESOURCE_EXHAUSTED for too many headers, PERMISSION_DENIED for authorization, else
    /// UNAVAILABLE (which gRPC clients may retry).
    pub fn grpc_status(&self) -> u32 {
        match self.kind {
            Kind::DownstreamAborted => 1,
            Kind::MalformedRequest => 13,
            Kind::TooManyHeaders => 8,
            Kind::Unauthorized => 7,
            _ if self.status() == StatusCode::GATEWAY_TIMEOUT => 4,
            _ => 14,
        }
    }
}

/// An error with its causes, for a log line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_upstream_faults_are_retryable_and_reasons_are_unique() {
        let mut reasons = std::collections::HashSet::new();
        for k in Kind::ALL {
            let e = Error::from(k);
            assert!(reasons.insert(e.reason()), "{k:?} shares its reason");
            if e.retryable {
                assert_eq!(e.side, Side::Upstream, "{k:?}");
            }
        }
    }

    #[test]
    fn one_mapping_to_http_and_grpc() {
        let e = |k| Error::from(k);
        assert_eq!(
            e(Kind::ConnectTimeout).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(e(Kind::ConnectTimeout).grpc_status(), 4);
        assert_eq!(e(Kind::ConnectRefused).status(), StatusCode::BAD_GATEWAY);
        assert_eq!(e(Kind::ConnectRefused).grpc_status(), 14);
        assert_eq!(
            e(Kind::BulkheadFull).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(e(Kind::CallerDeadline).side, Side::Downstream);
        assert_eq!(e(Kind::DownstreamAborted).side, Side::Downstream);
        assert!(!e(Kind::DownstreamAborted).retryable);
        assert_eq!(e(Kind::DownstreamAborted).grpc_status(), 1);
    }
}

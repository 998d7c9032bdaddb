//! Responses the proxy makes itself, from one typed [`Error`]: the HTTP status and
//! `x-bulwark-error` reason for HTTP callers, a trailers-only `grpc-status` their stubs
//! understand for gRPC callers.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Response, StatusCode};

use super::body::ProxyBody;
use crate::error::Error;

/// Header naming the reason of a response the proxy made itself.
pub const ERROR_HEADER: &str = "x-bulwark-error";

/// The response for `e`, to a gRPC caller if `grpc`.
pub fn error_response(e: &Error, grpc: bool) -> Response<ProxyBody> {
    let reason = e.reason();
    let mut b = Response::builder().header(ERROR_HEADER, reason);
    if e.closes_connection() {
        b = b.header(http::header::CONNECTION, "close");
    }
    if grpc {
        return b
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "application/grpc")
            .header("grpc-status", e.grpc_status())
            .header("grpc-message", format!("bulwark: {reason}"))
            .body(ProxyBody::local(Bytes::new()))
            .expect("a response built from valid static parts");
    }
    b.status(e.status())
        .header(CONTENT_TYPE, "text/plain")
        .body(ProxyBody::local(format!("bulwark: {reason}\n")))
        .expect("a response built from valid static parts")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn grpc_errors_are_trailers_only_responses() {
        let r = error_response(&Kind::ConnectTimeout.into(), true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "4");
        assert_eq!(r.headers()[ERROR_HEADER], "connect_timeout");
        let r = error_response(&Kind::ConnectRefused.into(), false);
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.headers()[ERROR_HEADER], "connect_refused");
    }
}

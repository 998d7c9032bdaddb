//! HTTP/1 requests carried between two proxies as HTTP/2 streams on their one shared mesh
//! connection (Linkerd does the same between its proxies). The outbound proxy lifts a
//! request to HTTP/2 form, naming its version in [`ORIG_PROTO`]; the peer's inbound proxy
//! lowers it back to HTTP/1 for its app. Upgrades, `CONNECT` and `OPTIONS *` have no
//! HTTP/2 equivalent a plain stream can carry, so they keep their HTTP/1 mesh connection.
//! Pure.

use std::net::SocketAddr;

use http::header::{HOST, UPGRADE};
use http::uri::Authority;
use http::{HeaderName, HeaderValue, Method, Request, Version};

use crate::http::headers::{absolute_uri, origin_form};

/// The HTTP/1 version a lifted request came in; set by the outbound proxy, read and removed
/// by the inbound one, and never passed on from an app.
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("x-bulwark-orig-proto");

/// Whether an HTTP/1 request (head already prepared for the next hop) can travel as an
/// HTTP/2 stream.
pub fn liftable<B>(req: &Request<B>) -> bool {
    req.method() != Method::CONNECT
        && !req.headers().contains_key(UPGRADE)
        && req.uri().path_and_query().map(|p| p.as_str()) != Some("*")
}

/// Rewrites an HTTP/1 request (origin-form target, authority in `Host`) into the form an
/// HTTP/2 stream carries: the authority moves into the URI (`:authority`) and the version
/// into [`ORIG_PROTO`].
pub fn lift<B>(req: &mut Request<B>, dst: SocketAddr) {
    let proto = match req.version() {
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let headers = req.headers_mut();
    // A `Host` that is not a valid authority stays a field (HTTP/2 allows one) so the app
    // gets it as sent; `:authority` is then the destination.
    let moved = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| Authority::try_from(h).ok());
    if moved.is_some() {
        headers.remove(HOST);
    }
    headers.insert(ORIG_PROTO, HeaderValue::from_static(proto));
    let authority = moved.map_or_else(|| dst.to_string(), |a| a.as_str().to_string());
    *req.uri_mut() = absolute_uri(std::mem::take(req.uri_mut()), &authority, dst);
    *req.version_mut() = Version::HTTP_2;
}

/// Undoes [`lift`] on a request that came over a mesh connection: its version back, and
/// the target in origin-form when it kept a `Host` of its own (else the next hop's
/// preparation moves the authority into `Host`). Whether the request was lifted.
pub fn lower<B>(req: &mut Request<B>) -> bool {
    let Some(proto) = req.headers_mut().remove(ORIG_PROTO) else {
        return false;
    };
    *req.version_mut() = match proto.as_bytes() {
        b"HTTP/1.0" => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    if req.headers().contains_key(HOST) {
        *req.uri_mut() = origin_form(std::mem::take(req.uri_mut()));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dst() -> SocketAddr {
        "10.1.0.2:8080".parse().unwrap()
    }

    fn h1(target: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(target);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn a_lifted_request_carries_its_authority_and_version_and_lowers_back() {
        let mut req = h1("/a?b=1", Some("web.shop:8080"));
        *req.version_mut() = Version::HTTP_10;
        req.headers_mut()
            .insert("x-app", HeaderValue::from_static("1"));
        lift(&mut req, dst());
        assert_eq!(req.uri().to_string(), "http://web.shop:8080/a?b=1");
        assert_eq!(req.version(), Version::HTTP_2);
        assert!(req.headers().get(HOST).is_none());
        assert_eq!(req.headers()[ORIG_PROTO], "HTTP/1.0");

        assert!(lower(&mut req));
        assert_eq!(req.version(), Version::HTTP_10);
        assert!(req.headers().get(ORIG_PROTO).is_none());
        assert_eq!(req.headers()["x-app"], "1");
        // The inbound proxy's preparation for HTTP/1 puts the authority back in `Host`.
        assert_eq!(req.uri().authority().unwrap(), "web.shop:8080");
    }

    #[test]
    fn a_host_that_is_no_authority_reaches_the_app_as_sent() {
        let mut req = h1("/", Some("not an authority"));
        lift(&mut req, dst());
        assert_eq!(req.uri().to_string(), "http://10.1.0.2:8080/");
        assert!(lower(&mut req));
        assert_eq!(req.headers()[HOST], "not an authority");
        assert_eq!(req.uri().to_string(), "/");
        assert_eq!(req.version(), Version::HTTP_11);
    }

    #[test]
    fn upgrades_connect_and_asterisk_keep_http1() {
        let mut up = h1("/chat", Some("web"));
        up.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!liftable(&up));
        let mut connect = h1("web:443", None);
        *connect.method_mut() = Method::CONNECT;
        assert!(!liftable(&connect));
        let mut star = h1("*", Some("web"));
        *star.method_mut() = Method::OPTIONS;
        assert!(!liftable(&star));
        assert!(liftable(&h1("/", Some("web"))));
    }

    #[test]
    fn a_request_never_lifted_is_left_alone() {
        let mut req = h1("http://web/x", None);
        *req.version_mut() = Version::HTTP_2;
        assert!(!lower(&mut req));
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.uri().to_string(), "http://web/x");
    }
}

//! HTTP/1 and HTTP/2 heads as a proxy must treat them: the authority a request is for,
//! the hop-by-hop fields that stop at each hop (RFC 9110 §7.6.1), Upgrade requests, and
//! and the request target each HTTP version wants upstream. Pure.

use std::net::SocketAddr;

use http::header::{CONNECTION, CONTENT_TYPE, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};

/// The request's authority: `:authority` (HTTP/2, absolute-form) or the `Host` header.
pub fn authority_of<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

/// gRPC's UNKNOWN: what clients make of a call that ended without a status.
pub const GRPC_UNKNOWN: u32 = 2;

/// The status a gRPC call ended with, from its trailers: UNKNOWN when they carry none.
pub fn grpc_status_at_end(trailers: &HeaderMap) -> u32 {
    grpc_status(trailers).unwrap_or(GRPC_UNKNOWN)
}

/// The `grpc-status` of a response's headers or trailers.
pub fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Whether the request is gRPC (`content-type: application/grpc…`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
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
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    if has_token(headers, CONNECTION, "upgrade") {
        headers.get(UPGRADE).cloned()
    } else {
        None
    }
}

/// Why a request head hyper accepted must still not be forwarded: its body's framing is
/// in doubt. `Transfer-Encoding` must say `chunked` once and nothing else (hyper refuses a
/// final coding other than chunked; a stacked or repeated coding it passes, and two hops
/// could read the body differently). Hyper itself settles `Content-Length` with
/// `Transfer-Encoding` as RFC 9112 §6.3 says: the chunked framing wins, the length is
/// dropped, and the connection closes after the response.
pub fn framing_doubt(headers: &HeaderMap) -> Option<&'static str> {
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    let first = codings.next()?;
    if codings.next().is_some() {
        return Some("Transfer-Encoding given twice");
    }
    let value = first.to_str().unwrap_or("");
    if !value.trim().eq_ignore_ascii_case("chunked") {
        return Some("a transfer coding other than a single chunked");
    }
    None
}

/// Removes hop-by-hop fields (RFC 9110 §7.6.1): `Connection` and every field it names,
/// `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, and `TE` unless it is
/// exactly `trailers` (which gRPC needs end to end).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
pub fn absolute_uri(uri: Uri, authority: &str, dst: SocketAddr) -> Uri {
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

/// The request target in origin-form (RFC 9112 §3.2.1), what an HTTP/1 origin server
/// expects; the authority goes in `Host`. An origin-form target is kept as it came.
pub fn origin_form(uri: Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri;
    }
    match uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
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
    fn transfer_codings_must_be_one_chunked() {
        assert_eq!(framing_doubt(&headers(&[("host", "a")])), None);
        assert_eq!(
            framing_doubt(&headers(&[("transfer-encoding", "Chunked")])),
            None
        );
        for bad in [
            &[("transfer-encoding", "chunked, chunked")][..],
            &[("transfer-encoding", "gzip, chunked")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
        ] {
            assert!(framing_doubt(&headers(bad)).is_some(), "{bad:?}");
        }
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
    fn origin_form_drops_scheme_and_authority_and_keeps_the_query() {
        let cases = [
            ("http://web.svc:8080/a?b=1", "/a?b=1"),
            ("http://web.svc", "/"),
            ("/already?x", "/already?x"),
            ("*", "*"),
        ];
        for (given, want) in cases {
            let uri: Uri = given.parse().unwrap();
            assert_eq!(origin_form(uri).to_string(), want, "{given}");
        }
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
}

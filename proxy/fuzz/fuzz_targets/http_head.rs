//! The head handling around hyper: any request head hyper could hand over (parsed here by
//! httparse, as hyper does) goes through authority extraction, the framing check, the
//! Upgrade check, hop-by-hop stripping and the absolute URI without panicking, and what is
//! stripped is really gone.
#![no_main]

use std::net::SocketAddr;

use bulwark_proxy::http::headers;
use http::{HeaderName, HeaderValue, Request};
use libfuzzer_sys::fuzz_target;

fn request(data: &[u8]) -> Option<Request<()>> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut fields);
    parsed.parse(data).ok()?;
    let mut b = Request::builder().method(parsed.method?).uri(parsed.path?);
    for h in parsed.headers.iter() {
        b = b.header(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    b.body(()).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(mut req) = request(data) else {
        return;
    };
    let dst: SocketAddr = "10.0.0.7:8080".parse().unwrap();
    let authority = headers::authority_of(&req).unwrap_or_else(|| dst.to_string());
    let _ = headers::framing_doubt(req.headers());
    let _ = headers::upgrade_protocol(req.headers());
    let _ = headers::is_grpc(req.headers());
    let named: Vec<HeaderName> = req
        .headers()
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| n != http::header::TE)
        .collect();
    headers::strip_hop_by_hop(req.headers_mut());
    let h = req.headers();
    for gone in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(!h.contains_key(gone), "{gone} survived");
    }
    for n in &named {
        assert!(!h.contains_key(n), "{n}, named by Connection, survived");
    }
    for te in h.get_all(http::header::TE) {
        assert!(
            te.as_bytes().eq_ignore_ascii_case(b"trailers"),
            "TE {te:?} survived"
        );
    }
    let uri = headers::absolute_uri(std::mem::take(req.uri_mut()), &authority, dst);
    assert!(uri.authority().is_some(), "{uri} has no authority");
});

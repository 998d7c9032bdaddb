//! `grpc-timeout` parsing: any header value parses or is refused without panicking, and a
//! timeout the proxy formats for the next hop parses back.
#![no_main]

use bulwark_proxy::outbound::deadline::{format_grpc_timeout, parse_grpc_timeout};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut h = HeaderMap::new();
    h.insert("grpc-timeout", v);
    let Some(d) = parse_grpc_timeout(&h) else {
        return;
    };
    let formatted = format_grpc_timeout(d);
    assert!(
        formatted.len() <= 9,
        "{formatted} is over 8 digits and a unit"
    );
    h.insert("grpc-timeout", HeaderValue::from_str(&formatted).unwrap());
    assert!(
        parse_grpc_timeout(&h).is_some(),
        "{formatted} does not parse back"
    );
});

//! Protocol detection on any first bytes: never panics, and a connection that begins with
//! a known method and a space is HTTP/1 whatever follows (so hyper's limits answer it; it is
//! never forwarded as raw bytes).
#![no_main]

use bulwark_proxy::transport::detect::{Protocol, Verdict, begins_like_http1, classify};
use libfuzzer_sys::fuzz_target;

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

fuzz_target!(|data: &[u8]| {
    let verdict = classify(data);
    let _ = begins_like_http1(data);
    if METHODS.iter().any(|m| data.starts_with(m)) {
        assert_eq!(verdict, Verdict::Known(Protocol::Http1), "{data:?}");
    }
    // Every prefix of a decided buffer is decided the same way or still needs more: the
    // detector, reading in pieces, reaches the same answer.
    if let Verdict::Known(p) = verdict {
        for cut in [1, data.len() / 2] {
            if let Verdict::Known(q) = classify(&data[..cut.min(data.len())]) {
                assert_eq!(p, q, "{data:?} cut at {cut}");
            }
        }
    }
});

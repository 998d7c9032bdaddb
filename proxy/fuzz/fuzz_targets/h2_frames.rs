//! The HTTP/2 frame guard's decision on any client byte stream, handed over in pieces of
//! any size: never panics, and the pieces do not change the verdict.
#![no_main]

use bulwark_proxy::config::Config;
use bulwark_proxy::http::h2_guard::first_flood;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let mut limits = Config::default().http.h2_flood;
    // Small limits, so short inputs reach them.
    limits.max_premature_resets = 3;
    let whole = first_flood(limits, stream, stream.len().max(1));
    let pieces = first_flood(limits, stream, usize::from(piece % 17) + 1);
    assert_eq!(whole, pieces);
});

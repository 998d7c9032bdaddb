//! The policy loader on any text: never panics, and every problem it reports names a
//! position inside the text (a line that exists).
#![no_main]

use std::path::Path;

use bulwark_api::load::{Loaded, load_str};
use bulwark_api::policy::validate::validate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut loaded = Loaded::default();
    load_str(Path::new("fuzz.yaml"), text, &mut loaded);
    // YAML breaks lines at LF, CR and CRLF (YAML 1.2 §5.4), and so do positions.
    let lines = text
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .split('\n')
        .count()
        + 1;
    for d in &loaded.diagnostics {
        if let Some(p) = d.position {
            assert!(p.line <= lines, "{d:?} is past the last line ({lines})");
        }
    }
    for doc in &loaded.documents {
        let _ = validate(&doc.document);
    }
});

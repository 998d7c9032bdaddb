//! A snapshot as it arrives from the control plane, protobuf bytes of any shape: decoding
//! and building it never panics; a bad one is rejected with a reason, a good one builds.
#![no_main]

use std::sync::{Arc, LazyLock};

use bulwark_api::wire;
use bulwark_proxy::config::Config;
use bulwark_proxy::discovery::build;
use bulwark_proxy::metrics::Metrics;
use bulwark_proxy::outbound::registry::Registry;
use bulwark_proxy::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;
use prost::Message;

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let c = Config::default();
    Registry::new(c.dns, 1_000, Arc::new(Metrics::new(16)))
});

fuzz_target!(|data: &[u8]| {
    let Ok(received) = wire::Snapshot::decode(data) else {
        return;
    };
    let current = Snapshot::default();
    if let Err(rejected) = build(&received, &current, &REGISTRY) {
        assert!(!rejected.0.is_empty(), "a rejection without a reason");
    }
});

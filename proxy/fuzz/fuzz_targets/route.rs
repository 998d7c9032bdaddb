//! Route matching: any authority, destination, method, path and headers find a target (or
//! none) and a policy without panicking, against the example policy's table.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::LazyLock;

use bulwark_api::load::{Loaded, load_str};
use bulwark_proxy::outbound::build;
use bulwark_proxy::outbound::route::{RouteTable, route_matches};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

static TABLE: LazyLock<RouteTable> = LazyLock::new(|| {
    let mut loaded = Loaded::default();
    for (file, text) in [
        (
            "web.yaml",
            include_str!("../../../control-plane/examples/policy/web.yaml"),
        ),
        (
            "mesh.yaml",
            include_str!("../../../control-plane/examples/policy/mesh.yaml"),
        ),
        (
            "legacy-db.yaml",
            include_str!("../../../control-plane/examples/policy/legacy-db.yaml"),
        ),
    ] {
        load_str(Path::new(file), text, &mut loaded);
    }
    let documents: Vec<_> = loaded.documents.into_iter().map(|s| s.document).collect();
    build::table(&documents, &[])
});

fuzz_target!(|data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    let dst = SocketAddr::from((
        Ipv4Addr::new(data[0], data[1], data[2], data[3]),
        u16::from_be_bytes([data[4], data[5]]),
    ));
    let text = String::from_utf8_lossy(&data[7..]);
    let mut parts = text.split('\n');
    let authority = parts.next().filter(|a| !a.is_empty());
    let path = parts.next().unwrap_or("/");
    let method =
        Method::from_bytes(parts.next().unwrap_or("GET").as_bytes()).unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    for line in parts {
        if let Some((n, v)) = line.split_once(':') {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.as_bytes()),
                HeaderValue::from_str(v.trim()),
            ) {
                headers.append(n, v);
            }
        }
    }
    let _ = bulwark_proxy::outbound::route::names_a_host(authority);
    if let Some(target) = TABLE.lookup(dst, authority) {
        let _ = target.request_policy(&method, path, &headers);
        for r in &target.routes {
            let _ = route_matches(&r.matches, &method, path, &headers);
        }
    }
});

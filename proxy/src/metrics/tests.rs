use super::*;

#[test]
fn buckets_are_cumulative_and_resolve_tenths_of_a_millisecond() {
    let m = Metrics::new(10);
    m.record_request(
        Direction::Outbound,
        "web:80",
        200,
        Duration::from_micros(40),
    );
    m.record_request(
        Direction::Outbound,
        "web:80",
        200,
        Duration::from_micros(90),
    );
    m.record_request(Direction::Outbound, "web:80", 200, Duration::from_millis(3));
    let text = m.render(&[], &ProcessStats::default(), &[]);
    let l = "direction=\"outbound\",authority=\"web:80\",status_class=\"2xx\"";
    assert!(
        text.contains(&format!(
            "bulwark_request_duration_seconds_bucket{{{l},le=\"0.00005\"}} 1"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "bulwark_request_duration_seconds_bucket{{{l},le=\"0.0001\"}} 2"
    )));
    assert!(text.contains(&format!(
        "bulwark_request_duration_seconds_bucket{{{l},le=\"0.0025\"}} 2"
    )));
    assert!(text.contains(&format!(
        "bulwark_request_duration_seconds_bucket{{{l},le=\"0.005\"}} 3"
    )));
    assert!(text.contains(&format!(
        "bulwark_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} 3"
    )));
    assert!(text.contains(&format!("bulwark_request_duration_seconds_count{{{l}}} 3")));
}

#[test]
fn authority_labels_are_bounded_and_escaped() {
    let m = Metrics::new(2);
    for a in ["a", "b\"q", "c", "d"] {
        m.record_request(Direction::Inbound, a, 503, Duration::from_millis(1));
    }
    let stats = m.stats();
    let names: Vec<&str> = stats.iter().map(|s| s.authority.as_str()).collect();
    assert_eq!(names, ["a", "b\"q", "other"]);
    assert_eq!(stats[2].count, 2);
    assert!(
        m.render(&[], &ProcessStats::default(), &[])
            .contains("authority=\"b\\\"q\"")
    );
}

#[test]
fn percentiles_come_from_the_histogram() {
    let m = Metrics::new(10);
    for i in 1..=1000 {
        m.record_request(Direction::Outbound, "x", 200, Duration::from_micros(i * 10));
    }
    let s = &m.stats()[0];
    assert_eq!(s.count, 1000);
    assert!((s.p50_ms - 5.0).abs() < 0.1, "{}", s.p50_ms);
    assert!((s.p99_ms - 9.9).abs() < 0.15, "{}", s.p99_ms);
    assert!((s.max_ms - 10.0).abs() < 0.1, "{}", s.max_ms);
}

/// One name, one family: a counter `x_total` is the family `x`, so a gauge `x` beside it is
/// a second family of the same name, which the OpenMetrics parser refuses.
#[test]
fn no_two_families_share_a_name() {
    let m = Metrics::new(10);
    m.record_request(Direction::Outbound, "web:80", 200, Duration::from_millis(1));
    for name in Resilience::ALL {
        m.count(name, "Backend/shop/api", "reason");
    }
    let gauges = [TargetGauges {
        target: "Backend/shop/api".into(),
        endpoints: Some([1, 0, 1]),
        panic: true,
        bulkhead_active: Some(1),
    }];
    let text = m.render(&[], &ProcessStats::default(), &gauges);
    let mut families = std::collections::BTreeMap::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = line.split_once(' ').expect("a TYPE line names a kind");
        let family = match kind {
            "counter" => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        if let Some(other) = families.insert(family.to_string(), name.to_string()) {
            panic!("{name} and {other} are both the family {family}");
        }
    }
    assert!(
        families.contains_key("bulwark_balancer_panic"),
        "{families:?}"
    );
    assert!(
        families.contains_key("bulwark_balancer_in_panic"),
        "{families:?}"
    );
}

#[test]
fn grpc_calls_are_counted_by_status_and_authorities_stay_bounded() {
    let m = Metrics::new(2);
    m.record_grpc(Direction::Outbound, "echo:50051", Some(0));
    m.record_grpc(Direction::Outbound, "echo:50051", Some(14));
    m.record_grpc(Direction::Outbound, "echo:50051", Some(99));
    m.record_grpc(Direction::Outbound, "echo:50051", None);
    for a in ["b", "c", "d"] {
        m.record_grpc(Direction::Outbound, a, Some(0));
    }
    let text = m.render(&[], &ProcessStats::default(), &[]);
    let line = |a: &str, s: &str| {
        format!(
            "bulwark_grpc_responses_total{{direction=\"outbound\",authority=\"{a}\",grpc_status=\"{s}\"}}"
        )
    };
    for (a, s, n) in [
        ("echo:50051", "0", 1),
        ("echo:50051", "14", 1),
        ("echo:50051", "2", 1), // 99 is no gRPC code: UNKNOWN
        ("echo:50051", "reset", 1),
        ("b", "0", 1),
        ("other", "0", 2),
    ] {
        assert!(
            text.contains(&format!("{} {n}\n", line(a, s))),
            "{a} {s}: {text}"
        );
    }
}

fn route(target: &str, route: &str) -> requests::Labels {
    requests::Labels {
        route: Some(Arc::new(requests::RouteLabel {
            target: target.into(),
            route: route.into(),
        })),
        dst: None,
        tls: false,
    }
}

#[test]
fn requests_count_by_status_grpc_status_and_route_when_they_end() {
    use requests::Tally;
    let m = Metrics::new(10);
    let a = m.authority("api:80");
    let d = Direction::Outbound;
    let api = route("Backend/shop/api", "reads");
    // A gRPC call that failed UNAVAILABLE behind HTTP 200, twice: one sample, a failure.
    for _ in 0..2 {
        let mut t = Tally::new(a.clone(), d, 200, true, api.clone());
        t.bytes(5);
        t.end(Some(14));
        t.end(Some(0)); // only the first end counts
    }
    Tally::new(a.clone(), d, 200, true, api.clone()).end(Some(0));
    drop(Tally::new(a.clone(), d, 200, true, api.clone())); // given up before its status
    let checkout = requests::Labels {
        route: None,
        dst: Some(Arc::new(requests::DstLabel {
            namespace: "shop".into(),
            service_account: "checkout".into(),
        })),
        tls: true,
    };
    Tally::new(a.clone(), d, 503, false, checkout).end(None);
    drop(Tally::new(a.clone(), d, 404, false, Default::default()));
    a.add_bytes(d, false, 7);
    let text = m.render(&[], &ProcessStats::default(), &[]);
    let l = |target: &str,
             route: &str,
             dst: &str,
             status: &str,
             grpc: &str,
             class: &str,
             n: u64| {
        let (ns, sa) = dst.split_once('/').unwrap_or_default();
        let tls = !dst.is_empty();
        format!(
            "bulwark_requests_total{{direction=\"outbound\",authority=\"api:80\",target=\"{target}\",route=\"{route}\",dst_namespace=\"{ns}\",dst_service_account=\"{sa}\",tls=\"{tls}\",status_code=\"{status}\",grpc_status=\"{grpc}\",classification=\"{class}\"}} {n}\n"
        )
    };
    for want in [
        l("Backend/shop/api", "reads", "", "200", "14", "failure", 2),
        l("Backend/shop/api", "reads", "", "200", "0", "success", 1),
        l("Backend/shop/api", "reads", "", "200", "reset", "failure", 1),
        l("", "", "shop/checkout", "503", "", "failure", 1),
        l("", "", "", "404", "", "success", 1),
        "bulwark_response_bytes_total{direction=\"outbound\",authority=\"api:80\"} 10\n".into(),
        "bulwark_request_bytes_total{direction=\"outbound\",authority=\"api:80\"} 7\n".into(),
        // The Tally counts the gRPC outcome too.
        "bulwark_grpc_responses_total{direction=\"outbound\",authority=\"api:80\",grpc_status=\"14\"} 2\n".into(),
        "bulwark_grpc_responses_total{direction=\"outbound\",authority=\"api:80\",grpc_status=\"reset\"} 1\n".into(),
    ] {
        assert!(text.contains(&want), "{want}in:\n{text}");
    }
    let rows = m.request_counts();
    assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 6);
}

#[test]
fn request_counters_of_one_authority_are_bounded() {
    let m = Metrics::new(10);
    let a = m.authority("api:80");
    for i in 0..(requests::MAX_COUNTS_PER_AUTHORITY as u16 + 50) {
        let r = route("Backend/shop/api", &format!("r{i}"));
        requests::Tally::new(a.clone(), Direction::Inbound, 200, false, r).end(None);
    }
    let rows = m.request_counts();
    assert_eq!(rows.len(), requests::MAX_COUNTS_PER_AUTHORITY + 1);
    let other = rows
        .iter()
        .find(|r| r.status_code == "other")
        .expect("an overflow row");
    assert_eq!((other.count, other.route.as_str()), (50, ""));
}

#[test]
fn openmetrics_names_counter_families_without_total_and_carries_exemplars() {
    let m = Metrics::new(10);
    let a = m.authority("web:80");
    let trace = [0xab; 16];
    a.record_latency(
        Direction::Outbound,
        200,
        Duration::from_micros(700),
        Some(&trace),
    );
    a.record_latency(Direction::Outbound, 200, Duration::from_micros(80), None);
    let plain = m.render(&[], &ProcessStats::default(), &[]);
    assert!(
        !plain.contains("trace_id"),
        "no exemplars in Prometheus text"
    );
    let om = encode::to_openmetrics(&m.render_as(
        encode::Format::OpenMetrics,
        &[],
        &ProcessStats::default(),
        &[],
    ));
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE bulwark_requests counter\n"), "{om}");
    assert!(om.contains("# TYPE bulwark_request_duration_seconds histogram\n"));
    let id = "ab".repeat(16);
    let bucket = om
        .lines()
        .find(|l| l.contains("le=\"0.001\""))
        .expect("the 1 ms bucket");
    assert!(
        bucket.contains(&format!("}} 2 # {{trace_id=\"{id}\"}} 0.0007")),
        "{bucket}"
    );
    assert!(
        om.lines()
            .filter(|l| l.contains("le=\"0.0001\""))
            .all(|l| !l.contains('#')),
        "the bucket of the untraced request has no exemplar"
    );
    assert_eq!(
        encode::Format::from_accept(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )),
        encode::Format::OpenMetrics
    );
    assert_eq!(
        encode::Format::from_accept(Some("*/*")),
        encode::Format::Prometheus
    );
}

/// docs/operations.md lists every family the proxy exports, and nothing else.
#[test]
fn every_exported_family_is_documented_and_every_documented_one_exported() {
    let doc = include_str!("../../../docs/operations.md");
    let documented: std::collections::BTreeSet<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name))
        .filter(|name| name.starts_with("bulwark_") || name.starts_with("process_"))
        .collect();
    let mut text = Metrics::new(10).render(&[], &ProcessStats::default(), &[]);
    // With mesh identity on, its families follow.
    let bundle =
        bulwark_identity::verify::TrustBundle::from_pem(TEST_ROOT.as_bytes()).expect("a test root");
    let id = "spiffe://cluster.local/ns/shop/sa/web"
        .parse()
        .expect("an identity");
    let identity = crate::identity::Identity::new(id, bundle);
    identity.render(&mut text);
    crate::transport::mesh::MeshTls::new(identity.bundle.clone(), identity.certs.clone())
        .render(&mut text);
    crate::inbound::authz::Journal::default().render(&mut text);
    crate::inbound::callers::Callers::default().render(&mut text);
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(
        exported.difference(&documented).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "exported but not in docs/operations.md"
    );
    assert_eq!(
        documented.difference(&exported).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "in docs/operations.md but not exported"
    );
}

/// A self-signed P-256 root, only to build a trust bundle.
const TEST_ROOT: &str = "-----BEGIN CERTIFICATE-----
MIIBfzCCASWgAwIBAgIUD7sy2ZXE+8lItA6tOkeC3/E1GfgwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJdGVzdC1yb290MCAXDTI2MTIwMjEzMDcxN1oYDzIxMjYxMTA4
MTMwNzE3WjAUMRIwEAYDVQQDDAl0ZXN0LXJvb3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAATrhxf4BsrKODtOyqE8XgxIVOvKHmg7rO0FvSJwuo2xV65Diaai4LUm
qj6QZSCG/E0C3dpb2++h5fAvEeRBHD8Ao1MwUTAdBgNVHQ4EFgQUpE+d2aMuN588
yaooU3W/FZWvA1kwHwYDVR0jBBgwFoAUpE+d2aMuN588yaooU3W/FZWvA1kwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiATx9WSxvXuMlEpS/MnPfTM
uBi4CVZc7LO5vnafXb8o0QIhAKljZ65J3ATTPPKU+VxkiWBtgzB/MBJvsCRuS8sU
F+Gc
-----END CERTIFICATE-----
";

use super::metrics::render_histogram;
use super::*;

#[test]
fn push_to_ack_is_a_cumulative_histogram() {
    let mut h = Histogram::new_with_bounds(1, 600_000_000, 2).unwrap();
    h.record(800).unwrap(); // 0.8 ms
    h.record(40_000).unwrap(); // 40 ms
    h.record(3_000_000).unwrap(); // 3 s
    let mut o = String::new();
    render_histogram(&mut o, "x_seconds", "help", &h);
    assert!(o.contains("# TYPE x_seconds histogram"), "{o}");
    assert!(o.contains("x_seconds_bucket{le=\"0.001\"} 1\n"), "{o}");
    assert!(o.contains("x_seconds_bucket{le=\"0.05\"} 2\n"), "{o}");
    assert!(o.contains("x_seconds_bucket{le=\"2.5\"} 2\n"), "{o}");
    assert!(o.contains("x_seconds_bucket{le=\"5\"} 3\n"), "{o}");
    assert!(o.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{o}");
    assert!(o.contains("x_seconds_count 3\n"), "{o}");
    let sum: f64 = o
        .lines()
        .find_map(|l| l.strip_prefix("x_seconds_sum "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((sum - 3.0408).abs() < 0.05, "{sum}");
}

#[test]
fn versions_count_up_and_rejections_clear_on_the_next_good_policy() {
    let s = State::new();
    assert_eq!(s.policy().version, 0);
    let v1 = s.publish(vec![]);
    assert!(v1 > 0);
    s.reject("web.yaml:3:1: kind: ...".into());
    assert_eq!(s.status().rejected_reason, "web.yaml:3:1: kind: ...");
    assert_eq!(
        s.policy().version,
        v1,
        "a rejected change keeps the served policy"
    );
    let v2 = s.publish(vec![]);
    assert!(v2 > v1);
    assert!(s.status().rejected_reason.is_empty());
}

#[test]
fn the_registry_tracks_sent_acked_and_nacked_versions() {
    let s = State::new();
    let k = s.register(ProxyIdentity {
        workload: "shop/web".into(),
        namespace: "shop".into(),
        ..Default::default()
    });
    s.sent(k, 3);
    s.acked(k, 3);
    s.sent(k, 4);
    s.nacked(k, 4, "spec.retries: bad".into());
    let st = s.status();
    let p = &st.proxies[0];
    assert_eq!(
        (p.sent_version, p.acked_version, p.nacked_version),
        (4, 3, 4)
    );
    assert_eq!(p.nack_reason, "spec.retries: bad");
    assert!(!p.in_sync, "a NACKed proxy is behind");
    let v = s.publish(Vec::new());
    s.sent(k, v);
    s.acked(k, v);
    assert!(s.status().proxies[0].in_sync);
    let v = s.publish(Vec::new());
    assert!(!s.status().proxies[0].in_sync, "not yet compared");
    s.unchanged(k, v);
    assert!(
        s.status().proxies[0].in_sync,
        "a version that changes nothing for it"
    );
    assert!(
        s.render_metrics()
            .contains("bulwark_cp_push_to_ack_seconds_count 2")
    );
    s.unregister(k);
    assert!(s.status().proxies.is_empty());
}

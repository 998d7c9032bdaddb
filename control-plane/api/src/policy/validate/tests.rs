use super::*;

fn policy(spec: TrafficPolicySpec) -> Document {
    Document::TrafficPolicy(TrafficPolicy {
        api_version: API_VERSION.into(),
        kind: "TrafficPolicy".into(),
        metadata: Metadata {
            name: "web".into(),
            namespace: None,
            labels: Default::default(),
            annotations: Default::default(),
        },
        spec,
    })
}

fn target() -> TargetRef {
    TargetRef {
        kind: TargetKind::Service,
        name: "web".into(),
        port: None,
    }
}

fn problems(doc: &Document) -> Vec<String> {
    validate(doc)
        .into_iter()
        .map(|p| format!("{}: {}", p.path, p.reason))
        .collect()
}

#[test]
fn a_minimal_policy_is_valid() {
    assert!(
        validate(&policy(TrafficPolicySpec {
            target_ref: target(),
            ..Default::default()
        }))
        .is_empty()
    );
}

#[test]
fn timeouts_must_be_positive_and_per_try_within_request() {
    let t = Timeouts {
        connect: Some(Duration::from_millis(0)),
        request: Some(Duration::from_secs(1)),
        per_try: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let p = problems(&policy(TrafficPolicySpec {
        target_ref: target(),
        timeouts: Some(t),
        ..Default::default()
    }));
    assert_eq!(
        p,
        [
            "spec.timeouts.connect: must be greater than zero",
            "spec.timeouts.perTry: 2s is longer than the request timeout 1s: no attempt could use it",
        ]
    );
}

#[test]
fn retries_are_bounded() {
    let r = Retries {
        attempts: Some(0),
        conditions: vec![RetryCondition::Reset, RetryCondition::Reset],
        status_codes: vec![503, 700],
        backoff: Some(Backoff {
            base: Some(Duration::from_secs(1)),
            max: Some(Duration::from_millis(250)),
        }),
        budget: Some(RetryBudget {
            ratio: Some(1.5),
            min_per_second: None,
            window: Some(Duration::from_secs(600)),
        }),
        ..Default::default()
    };
    let p = problems(&policy(TrafficPolicySpec {
        target_ref: target(),
        retries: Some(r),
        ..Default::default()
    }));
    assert_eq!(
        p,
        [
            "spec.retries.attempts: must be between 1 and 10, got 0",
            "spec.retries.statusCodes[1]: must be an HTTP status (100-599), got 700",
            "spec.retries.conditions[1]: appears twice",
            "spec.retries.backoff.base: 1s is longer than backoff.max 250ms",
            "spec.retries.budget.ratio: must be between 0 and 1, got 1.5",
            "spec.retries.budget.window: must be between 1s and 1m, got 10m",
        ]
    );
}

#[test]
fn outlier_detection_percentages_and_times() {
    let o = OutlierDetection {
        max_ejection_percent: Some(150),
        base_ejection_time: Some(Duration::from_secs(600)),
        max_ejection_time: Some(Duration::from_secs(300)),
        latency: Some(LatencyOutlier {
            factor: Some(0.5),
            request_volume: None,
        }),
        ..Default::default()
    };
    let p = problems(&policy(TrafficPolicySpec {
        target_ref: target(),
        outlier_detection: Some(o),
        ..Default::default()
    }));
    assert_eq!(
        p,
        [
            "spec.outlierDetection.maxEjectionPercent: must be between 0 and 100, got 150",
            "spec.outlierDetection.baseEjectionTime: 10m is longer than maxEjectionTime 5m",
            "spec.outlierDetection.latency.factor: must be greater than 1, got 0.5",
        ]
    );
}

#[test]
fn peak_ewma_settings_need_peak_ewma() {
    let lb = LoadBalancer {
        algorithm: Some(Algorithm::RoundRobin),
        default_rtt: Some(Duration::from_millis(30)),
        decay: None,
        slow_start: Some(Duration::from_secs(900)),
    };
    let p = problems(&policy(TrafficPolicySpec {
        target_ref: target(),
        load_balancer: Some(lb),
        ..Default::default()
    }));
    assert_eq!(
        p,
        [
            "spec.loadBalancer.slowStart: 15m is longer than 10m: a new endpoint would idle that long",
            "spec.loadBalancer.defaultRtt: applies to the peakEwma algorithm only"
        ]
    );
}

#[test]
fn routes_need_a_criterion_and_well_formed_ones() {
    let routes = vec![
        Route::default(),
        Route {
            matches: RouteMatch {
                path_prefix: Some("api".into()),
                method: Some("get".into()),
                ..Default::default()
            },
            hedging: Some(Hedging {
                delay: None,
                budget_ratio: Some(0.0),
            }),
            ..Default::default()
        },
    ];
    let p = problems(&policy(TrafficPolicySpec {
        target_ref: target(),
        routes,
        ..Default::default()
    }));
    assert_eq!(
        p,
        [
            "spec.routes[0].match: needs at least one of pathPrefix, method, headers, grpc",
            "spec.routes[1].match.pathPrefix: must start with '/', got \"api\"",
            "spec.routes[1].match.method: must be an upper-case HTTP method like GET, got \"get\"",
            "spec.routes[1].hedging.budgetRatio: must be greater than 0 (and at most 1), got 0",
        ]
    );
}

#[test]
fn backend_endpoints_and_names() {
    let doc = Document::Backend(Backend {
        api_version: API_VERSION.into(),
        kind: "Backend".into(),
        metadata: Metadata {
            name: "Legacy_DB".into(),
            namespace: None,
            labels: Default::default(),
            annotations: Default::default(),
        },
        spec: BackendSpec {
            endpoints: vec![
                "10.0.0.1:5432".into(),
                "[fd00::1]:5432".into(),
                "db.internal:5432".into(),
                "fd00::1:5432".into(),
                "db".into(),
                "bad host:1".into(),
            ],
            ports: vec![8080, 0, 8080],
            identity: Some("web".into()),
        },
    });
    assert_eq!(
        problems(&doc),
        [
            "metadata.name: must be a DNS-1123 label (lowercase letters, digits, '-'; at most 63), got \"Legacy_DB\"",
            "spec.endpoints[3]: \"fd00::1:5432\": IPv6 addresses go in brackets, like [fd00::1]:8080",
            "spec.endpoints[4]: \"db\" has no port: write host:port or ip:port",
            "spec.endpoints[5]: \"bad host:1\" has host \"bad host\", which is neither an IP address nor a DNS name",
            "spec.ports[1]: must be between 1 and 65535, got 0",
            "spec.ports[2]: port 8080 is listed twice",
            "spec.identity: must be a SPIFFE ID (spiffe://...), got \"web\"",
        ]
    );
}

#[test]
fn settings_the_proxy_could_not_honour_are_rejected() {
    let p = problems(&policy(TrafficPolicySpec {
        target_ref: target(),
        limits: Some(Limits {
            max_pending: Some(10),
            queue_timeout: Some(Duration::from_millis(100)),
            ..Default::default()
        }),
        outlier_detection: Some(OutlierDetection {
            latency: Some(LatencyOutlier {
                request_volume: Some(1000),
                ..Default::default()
            }),
            ..Default::default()
        }),
        routes: vec![Route {
            matches: RouteMatch {
                path_prefix: Some("/a".into()),
                ..Default::default()
            },
            retries: Some(Retries {
                budget: Some(RetryBudget::default()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }));
    assert_eq!(
        p,
        [
            "spec.outlierDetection.latency.requestVolume: must be between 1 and 256, got 1000",
            "spec.limits.maxPending: has no effect without maxConcurrentRequests: nothing queues until the concurrency is limited",
            "spec.limits.queueTimeout: has no effect without maxConcurrentRequests: nothing queues until the concurrency is limited",
            "spec.routes[0].retries.budget: the retry budget belongs to the target, shared by its routes: set it in spec.retries",
        ]
    );
}

#[test]
fn mtls_ports_are_real_and_listed_once() {
    let port = |port, mode| MtlsPort { port, mode };
    let doc = Document::MeshConfig(MeshConfig {
        api_version: API_VERSION.into(),
        kind: "MeshConfig".into(),
        metadata: Metadata {
            name: "mesh".into(),
            namespace: None,
            labels: Default::default(),
            annotations: Default::default(),
        },
        spec: MeshConfigSpec {
            trust_domain: "cluster.local".into(),
            defaults: None,
            authorization: None,
            mtls: Some(MtlsSpec {
                mode: Some(MtlsMode::Strict),
                ports: vec![
                    port(9090, MtlsMode::Permissive),
                    port(0, MtlsMode::Strict),
                    port(9090, MtlsMode::Strict),
                ],
            }),
        },
    });
    assert_eq!(
        problems(&doc),
        [
            "spec.mtls.ports[1].port: must be 1 to 65535, got 0",
            "spec.mtls.ports[2].port: port 9090 is listed twice",
        ]
    );
}

//! The rules of a `TrafficPolicy` (and the MeshConfig defaults it starts from) a schema
//! cannot say: ranges, cross-field rules, routes.

use super::*;

pub(super) fn timeouts(c: &mut Check, p: &str, t: &Timeouts) {
    for (name, v) in [
        ("connect", t.connect),
        ("request", t.request),
        ("perTry", t.per_try),
        ("responseHeaders", t.response_headers),
        ("idle", t.idle),
    ] {
        c.positive(&format!("{p}.{name}"), v);
    }
    if let (Some(per_try), Some(request)) = (t.per_try, t.request)
        && per_try > request
    {
        c.fail(
            format!("{p}.perTry"),
            format!(
                "{per_try} is longer than the request timeout {request}: no attempt could use it"
            ),
        );
    }
}

pub(super) fn retries(c: &mut Check, p: &str, r: &Retries) {
    c.range(&format!("{p}.attempts"), r.attempts, 1, 10);
    for (i, s) in r.status_codes.iter().enumerate() {
        if !(100..=599).contains(s) {
            c.fail(
                format!("{p}.statusCodes[{i}]"),
                format!("must be an HTTP status (100-599), got {s}"),
            );
        }
    }
    for (i, cond) in r.conditions.iter().enumerate() {
        if r.conditions[..i].contains(cond) {
            c.fail(format!("{p}.conditions[{i}]"), "appears twice");
        }
    }
    if let Some(b) = &r.backoff {
        c.positive(&format!("{p}.backoff.base"), b.base);
        c.positive(&format!("{p}.backoff.max"), b.max);
        if let (Some(base), Some(max)) = (b.base, b.max)
            && base > max
        {
            c.fail(
                format!("{p}.backoff.base"),
                format!("{base} is longer than backoff.max {max}"),
            );
        }
    }
    if let Some(b) = &r.budget {
        c.ratio(&format!("{p}.budget.ratio"), b.ratio);
        c.range(
            &format!("{p}.budget.minPerSecond"),
            b.min_per_second,
            0,
            10_000,
        );
        c.range(
            &format!("{p}.budget.window"),
            b.window,
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
    }
    c.range(
        &format!("{p}.maxBufferedBodyBytes"),
        r.max_buffered_body_bytes,
        0,
        16 << 20,
    );
}

pub(super) fn outliers(c: &mut Check, p: &str, o: &OutlierDetection) {
    c.range(
        &format!("{p}.maxEjectionPercent"),
        o.max_ejection_percent,
        0,
        100,
    );
    c.range(&format!("{p}.panicThreshold"), o.panic_threshold, 0, 100);
    c.positive(&format!("{p}.interval"), o.interval);
    c.positive(&format!("{p}.baseEjectionTime"), o.base_ejection_time);
    if let (Some(base), Some(max)) = (o.base_ejection_time, o.max_ejection_time)
        && base > max
    {
        c.fail(
            format!("{p}.baseEjectionTime"),
            format!("{base} is longer than maxEjectionTime {max}"),
        );
    }
    if let Some(s) = &o.success_rate {
        if s.stdev_factor.is_some_and(|f| f <= 0.0 || !f.is_finite()) {
            c.fail(
                format!("{p}.successRate.stdevFactor"),
                format!(
                    "must be greater than 0, got {}",
                    s.stdev_factor.unwrap_or_default()
                ),
            );
        }
        c.range(&format!("{p}.successRate.minHosts"), s.min_hosts, 1, 10_000);
    }
    if let Some(f) = &o.failure_percentage {
        c.range(
            &format!("{p}.failurePercentage.threshold"),
            f.threshold,
            0,
            100,
        );
    }
    if let Some(l) = &o.latency {
        if l.factor.is_some_and(|f| f <= 1.0 || !f.is_finite()) {
            c.fail(
                format!("{p}.latency.factor"),
                format!(
                    "must be greater than 1, got {}",
                    l.factor.unwrap_or_default()
                ),
            );
        }
        // The latency detector keeps 256 samples per endpoint and interval.
        c.range(
            &format!("{p}.latency.requestVolume"),
            l.request_volume,
            1,
            256,
        );
    }
}

pub(super) fn load_balancer(c: &mut Check, p: &str, lb: &LoadBalancer) {
    c.positive(&format!("{p}.defaultRtt"), lb.default_rtt);
    c.positive(&format!("{p}.decay"), lb.decay);
    c.positive(&format!("{p}.slowStart"), lb.slow_start);
    if let Some(w) = lb.slow_start
        && w.0 > std::time::Duration::from_secs(600)
    {
        c.fail(
            format!("{p}.slowStart"),
            format!("{w} is longer than 10m: a new endpoint would idle that long"),
        );
    }
    let peak = matches!(lb.algorithm, None | Some(Algorithm::PeakEwma));
    for (name, v) in [
        ("defaultRtt", lb.default_rtt.is_some()),
        ("decay", lb.decay.is_some()),
    ] {
        if v && !peak {
            c.fail(
                format!("{p}.{name}"),
                "applies to the peakEwma algorithm only",
            );
        }
    }
}

pub(super) fn limits(c: &mut Check, p: &str, l: &Limits) {
    c.range(
        &format!("{p}.maxConcurrentRequests"),
        l.max_concurrent_requests,
        1,
        1_000_000,
    );
    c.range(&format!("{p}.maxPending"), l.max_pending, 0, 1_000_000);
    c.positive(&format!("{p}.queueTimeout"), l.queue_timeout);
    if l.max_concurrent_requests.is_none() {
        for (name, set) in [
            ("maxPending", l.max_pending.is_some()),
            ("queueTimeout", l.queue_timeout.is_some()),
        ] {
            if set {
                c.fail(
                    format!("{p}.{name}"),
                    "has no effect without maxConcurrentRequests: nothing queues until the concurrency is limited",
                );
            }
        }
    }
}

pub(super) fn route(c: &mut Check, p: &str, r: &Route) {
    let m = &r.matches;
    if m.path_prefix.is_none() && m.method.is_none() && m.headers.is_empty() && m.grpc.is_none() {
        c.fail(
            format!("{p}.match"),
            "needs at least one of pathPrefix, method, headers, grpc",
        );
    }
    if let Some(pp) = &m.path_prefix
        && !pp.starts_with('/')
    {
        c.fail(
            format!("{p}.match.pathPrefix"),
            format!("must start with '/', got {pp:?}"),
        );
    }
    if let Some(method) = &m.method
        && (method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()))
    {
        c.fail(
            format!("{p}.match.method"),
            format!("must be an upper-case HTTP method like GET, got {method:?}"),
        );
    }
    if let Some(g) = &m.grpc
        && (g.service.is_empty() || g.service.contains('/'))
    {
        c.fail(
            format!("{p}.match.grpc.service"),
            format!(
                "must be a fully qualified service like shop.v1.Cart, got {:?}",
                g.service
            ),
        );
    }
    c.section(p, "timeouts", &r.timeouts, timeouts);
    c.section(p, "retries", &r.retries, retries);
    if r.retries.as_ref().is_some_and(|r| r.budget.is_some()) {
        c.fail(
            format!("{p}.retries.budget"),
            "the retry budget belongs to the target, shared by its routes: set it in spec.retries",
        );
    }
    if let Some(h) = &r.hedging {
        c.positive(&format!("{p}.hedging.delay"), h.delay);
        c.ratio(&format!("{p}.hedging.budgetRatio"), h.budget_ratio);
    }
}

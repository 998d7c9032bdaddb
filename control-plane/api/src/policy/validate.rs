//! The rules a schema cannot say: ranges, cross-field rules, names. Pure functions over one
//! document; each problem names the field path (`spec.retries.budget.ratio`) and the reason.

use std::net::SocketAddr;

use super::*;

mod authz;

/// One thing wrong with a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path from the document root, e.g. `spec.routes[0].match.pathPrefix`.
    pub path: String,
    /// Why it is wrong, with the value found.
    pub reason: String,
}

#[derive(Default)]
struct Check {
    problems: Vec<Problem>,
}

impl Check {
    /// Runs `f` on an optional section, with its path.
    fn section<T>(&mut self, parent: &str, name: &str, v: &Option<T>, f: fn(&mut Check, &str, &T)) {
        if let Some(v) = v {
            let path = if parent.is_empty() {
                name.to_string()
            } else {
                format!("{parent}.{name}")
            };
            f(self, &path, v);
        }
    }

    fn fail(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            reason: reason.into(),
        });
    }

    fn range<T: PartialOrd + std::fmt::Display + Copy>(
        &mut self,
        path: &str,
        v: Option<T>,
        lo: T,
        hi: T,
    ) {
        if let Some(v) = v {
            if v < lo || v > hi {
                self.fail(path, format!("must be between {lo} and {hi}, got {v}"));
            }
        }
    }

    fn ratio(&mut self, path: &str, v: Option<f64>) {
        if let Some(v) = v {
            if v <= 0.0 {
                // 0 itself is out: a ratio of nothing would switch the feature off unsaid.
                self.fail(
                    path,
                    format!("must be greater than 0 (and at most 1), got {v}"),
                );
            } else if v > 1.0 || v.is_nan() {
                self.fail(path, format!("must be between 0 and 1, got {v}"));
            }
        }
    }

    fn positive(&mut self, path: &str, d: Option<Duration>) {
        if d.is_some_and(|d| d.is_zero()) {
            self.fail(path, "must be greater than zero");
        }
    }
}

/// Whether `s` is a DNS-1123 label (what Kubernetes names must be).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Checks `host:port` or `ip:port` (`[v6]:port`).
fn endpoint_problem(e: &str) -> Option<String> {
    if e.parse::<SocketAddr>().is_ok() {
        return None;
    }
    let Some((host, port)) = e.rsplit_once(':') else {
        return Some(format!("{e:?} has no port: write host:port or ip:port"));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Some(format!("{e:?} has port {port:?}: must be 1-65535")),
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Some(format!(
            "{e:?}: IPv6 addresses go in brackets, like [fd00::1]:8080"
        ));
    }
    if !is_dns_name(&host.to_ascii_lowercase()) {
        return Some(format!(
            "{e:?} has host {host:?}, which is neither an IP address nor a DNS name"
        ));
    }
    None
}

fn metadata(c: &mut Check, m: &Metadata) {
    if !is_dns_label(&m.name) {
        c.fail(
            "metadata.name",
            format!(
                "must be a DNS-1123 label (lowercase letters, digits, '-'; at most 63), got {:?}",
                m.name
            ),
        );
    }
    if let Some(ns) = &m.namespace {
        if !is_dns_label(ns) {
            c.fail(
                "metadata.namespace",
                format!("must be a DNS-1123 label, got {ns:?}"),
            );
        }
    }
}

fn header(c: &mut Check, api_version: &str, kind: &str, expected: &str) {
    if api_version != API_VERSION {
        c.fail(
            "apiVersion",
            format!("must be {API_VERSION}, got {api_version:?}"),
        );
    }
    if kind != expected {
        c.fail("kind", format!("must be {expected}, got {kind:?}"));
    }
}

fn timeouts(c: &mut Check, p: &str, t: &Timeouts) {
    for (name, v) in [
        ("connect", t.connect),
        ("request", t.request),
        ("perTry", t.per_try),
        ("responseHeaders", t.response_headers),
        ("idle", t.idle),
    ] {
        c.positive(&format!("{p}.{name}"), v);
    }
    if let (Some(per_try), Some(request)) = (t.per_try, t.request) {
        if per_try > request {
            c.fail(format!("{p}.perTry"), format!("{per_try} is longer than the request timeout {request}: no attempt could use it"));
        }
    }
}

fn retries(c: &mut Check, p: &str, r: &Retries) {
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
        if let (Some(base), Some(max)) = (b.base, b.max) {
            if base > max {
                c.fail(
                    format!("{p}.backoff.base"),
                    format!("{base} is longer than backoff.max {max}"),
                );
            }
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

fn outliers(c: &mut Check, p: &str, o: &OutlierDetection) {
    c.range(
        &format!("{p}.maxEjectionPercent"),
        o.max_ejection_percent,
        0,
        100,
    );
    c.range(&format!("{p}.panicThreshold"), o.panic_threshold, 0, 100);
    c.positive(&format!("{p}.interval"), o.interval);
    c.positive(&format!("{p}.baseEjectionTime"), o.base_ejection_time);
    if let (Some(base), Some(max)) = (o.base_ejection_time, o.max_ejection_time) {
        if base > max {
            c.fail(
                format!("{p}.baseEjectionTime"),
                format!("{base} is longer than maxEjectionTime {max}"),
            );
        }
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

fn load_balancer(c: &mut Check, p: &str, lb: &LoadBalancer) {
    c.positive(&format!("{p}.defaultRtt"), lb.default_rtt);
    c.positive(&format!("{p}.decay"), lb.decay);
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

fn limits(c: &mut Check, p: &str, l: &Limits) {
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

fn route(c: &mut Check, p: &str, r: &Route) {
    let m = &r.matches;
    if m.path_prefix.is_none() && m.method.is_none() && m.headers.is_empty() && m.grpc.is_none() {
        c.fail(
            format!("{p}.match"),
            "needs at least one of pathPrefix, method, headers, grpc",
        );
    }
    if let Some(pp) = &m.path_prefix {
        if !pp.starts_with('/') {
            c.fail(
                format!("{p}.match.pathPrefix"),
                format!("must start with '/', got {pp:?}"),
            );
        }
    }
    if let Some(method) = &m.method {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            c.fail(
                format!("{p}.match.method"),
                format!("must be an upper-case HTTP method like GET, got {method:?}"),
            );
        }
    }
    if let Some(g) = &m.grpc {
        if g.service.is_empty() || g.service.contains('/') {
            c.fail(
                format!("{p}.match.grpc.service"),
                format!(
                    "must be a fully qualified service like shop.v1.Cart, got {:?}",
                    g.service
                ),
            );
        }
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

/// Every problem of one document, in field order.
pub fn validate(doc: &Document) -> Vec<Problem> {
    let mut c = Check::default();
    match doc {
        Document::Backend(b) => {
            header(&mut c, &b.api_version, &b.kind, "Backend");
            metadata(&mut c, &b.metadata);
            if b.spec.endpoints.is_empty() {
                c.fail("spec.endpoints", "needs at least one endpoint");
            }
            for (i, e) in b.spec.endpoints.iter().enumerate() {
                if let Some(reason) = endpoint_problem(e) {
                    c.fail(format!("spec.endpoints[{i}]"), reason);
                }
            }
            for (i, p) in b.spec.ports.iter().enumerate() {
                if *p == 0 {
                    c.fail(
                        format!("spec.ports[{i}]"),
                        "must be between 1 and 65535, got 0",
                    );
                } else if b.spec.ports[..i].contains(p) {
                    c.fail(
                        format!("spec.ports[{i}]"),
                        format!("port {p} is listed twice"),
                    );
                }
            }
            if let Some(id) = &b.spec.identity {
                if !id.starts_with("spiffe://") {
                    c.fail(
                        "spec.identity",
                        format!("must be a SPIFFE ID (spiffe://...), got {id:?}"),
                    );
                }
            }
        }
        Document::TrafficPolicy(t) => {
            header(&mut c, &t.api_version, &t.kind, "TrafficPolicy");
            metadata(&mut c, &t.metadata);
            let s = &t.spec;
            if !is_dns_label(&s.target_ref.name) {
                c.fail(
                    "spec.targetRef.name",
                    format!(
                        "must name a Service or Backend (a DNS-1123 label), got {:?}",
                        s.target_ref.name
                    ),
                );
            }
            c.range("spec.targetRef.port", s.target_ref.port, 1, 65535);
            c.section("spec", "timeouts", &s.timeouts, timeouts);
            c.section("spec", "retries", &s.retries, retries);
            c.section("spec", "outlierDetection", &s.outlier_detection, outliers);
            c.section("spec", "loadBalancer", &s.load_balancer, load_balancer);
            c.section("spec", "limits", &s.limits, limits);
            for (i, r) in s.routes.iter().enumerate() {
                route(&mut c, &format!("spec.routes[{i}]"), r);
            }
        }
        Document::MeshConfig(m) => {
            header(&mut c, &m.api_version, &m.kind, "MeshConfig");
            metadata(&mut c, &m.metadata);
            if !is_dns_name(&m.spec.trust_domain) {
                c.fail(
                    "spec.trustDomain",
                    format!(
                        "must be a DNS name like cluster.local, got {:?}",
                        m.spec.trust_domain
                    ),
                );
            }
            if let Some(d) = &m.spec.defaults {
                c.section("spec.defaults", "timeouts", &d.timeouts, timeouts);
                c.section("spec.defaults", "retries", &d.retries, retries);
                c.section(
                    "spec.defaults",
                    "outlierDetection",
                    &d.outlier_detection,
                    outliers,
                );
                c.section(
                    "spec.defaults",
                    "loadBalancer",
                    &d.load_balancer,
                    load_balancer,
                );
            }
            c.section("spec", "mtls", &m.spec.mtls, mtls);
        }
        Document::AuthorizationPolicy(a) => {
            header(&mut c, &a.api_version, &a.kind, "AuthorizationPolicy");
            metadata(&mut c, &a.metadata);
            authz::spec(&mut c, &a.spec);
        }
    }
    c.problems
}

fn mtls(c: &mut Check, path: &str, m: &super::MtlsSpec) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in m.ports.iter().enumerate() {
        if p.port == 0 {
            c.fail(
                format!("{path}.ports[{i}].port"),
                "must be 1 to 65535, got 0",
            );
        } else if !seen.insert(p.port) {
            c.fail(
                format!("{path}.ports[{i}].port"),
                format!("port {} is listed twice", p.port),
            );
        }
    }
}

#[cfg(test)]
mod tests;

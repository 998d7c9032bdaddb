//! The rules a schema cannot say: ranges, cross-field rules, names. Pure functions over one
//! document; each problem names the field path (`spec.retries.budget.ratio`) and the reason.

use std::net::SocketAddr;

use super::*;

mod authz;
mod traffic;

use traffic::{limits, load_balancer, outliers, retries, route, timeouts};

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
        if let Some(v) = v
            && (v < lo || v > hi)
        {
            self.fail(path, format!("must be between {lo} and {hi}, got {v}"));
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
    if let Some(ns) = &m.namespace
        && !is_dns_label(ns)
    {
        c.fail(
            "metadata.namespace",
            format!("must be a DNS-1123 label, got {ns:?}"),
        );
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
            if let Some(id) = &b.spec.identity
                && !id.starts_with("spiffe://")
            {
                c.fail(
                    "spec.identity",
                    format!("must be a SPIFFE ID (spiffe://...), got {id:?}"),
                );
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

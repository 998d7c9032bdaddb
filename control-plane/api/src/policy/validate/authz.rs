//! The rules of an `AuthorizationPolicy` a schema cannot say.

use super::Check;
use crate::policy::{AuthorizationPolicySpec, IdentityPattern, Source};

/// Method tokens (RFC 9110 §9.1: case-sensitive; the registered ones are upper case).
fn is_method(m: &str) -> bool {
    !m.is_empty()
        && m.bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

pub(super) fn spec(c: &mut Check, s: &AuthorizationPolicySpec) {
    if !super::is_dns_label(&s.target.workload) {
        c.fail(
            "spec.target.workload",
            format!("must be a DNS-1123 label, got {:?}", s.target.workload),
        );
    }
    for (i, p) in s.ports.iter().enumerate() {
        if *p == 0 {
            c.fail(format!("spec.ports[{i}]"), "must be 1 to 65535, got 0");
        }
    }
    for (i, r) in s.http.iter().enumerate() {
        if let Some(pp) = &r.path_prefix
            && !pp.starts_with('/')
        {
            c.fail(
                format!("spec.http[{i}].pathPrefix"),
                format!("must start with /, got {pp:?}"),
            );
        }
        for (j, m) in r.methods.iter().enumerate() {
            if !is_method(m) {
                c.fail(
                    format!("spec.http[{i}].methods[{j}]"),
                    format!("must be an upper-case method like GET, got {m:?}"),
                );
            }
        }
    }
    for (i, f) in s.from.iter().enumerate() {
        source(c, &format!("spec.from[{i}]"), f);
    }
}

fn source(c: &mut Check, path: &str, f: &Source) {
    let set = [
        f.identity.is_some(),
        f.unauthenticated.is_some(),
        f.cidr.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        c.fail(
            path,
            "must set exactly one of identity, unauthenticated, cidr",
        );
        return;
    }
    if let Some(id) = &f.identity
        && let Err(e) = IdentityPattern::parse(id)
    {
        c.fail(format!("{path}.identity"), e);
    }
    if f.unauthenticated == Some(false) {
        c.fail(
            format!("{path}.unauthenticated"),
            "must be true when set (leave it out to name no one)",
        );
    }
    if let Some(cidr) = &f.cidr
        && cidr.parse::<ipnet::IpNet>().is_err()
    {
        c.fail(
            format!("{path}.cidr"),
            format!("must be a CIDR like 10.0.0.0/8 or fd00::/8, got {cidr:?}"),
        );
    }
}

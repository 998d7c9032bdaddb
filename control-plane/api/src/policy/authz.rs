//! `AuthorizationPolicy`: which callers may reach a workload's ports and HTTP routes.
//!
//! A policy targets one workload in its namespace and, optionally, some of its ports and
//! HTTP routes. `deny` policies are checked first and win; then, on a port that any `allow`
//! policy covers, a request must match one of them; on a port no `allow` policy covers, the
//! mesh default (`MeshConfig.spec.authorization.default`) decides.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `AuthorizationPolicy.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// The workload the policy protects.
    pub target: AuthzTarget,
    /// `allow` (default) or `deny`.
    #[serde(default)]
    pub action: AuthzAction,
    /// The workload's ports it covers (as the inbound proxy sees them); every port when
    /// absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 1, max = 65535)))]
    pub ports: Vec<u16>,
    /// HTTP routes it covers, any of them; every request when absent. On a port with HTTP
    /// routes, a connection that is not HTTP is denied, never forwarded raw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRule>,
    /// The callers it names, any of them; every caller when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Source>,
}

/// `spec.target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzTarget {
    /// The workload's name in the policy's namespace (the proxy's `--workload` name).
    pub workload: String,
}

/// Whether matching requests are allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AuthzAction {
    /// Matching requests are allowed.
    #[default]
    Allow,
    /// Matching requests are denied, whatever any `allow` policy says.
    Deny,
}

/// One HTTP route: a path prefix and, optionally, methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRule {
    /// Path prefix, segment-wise (`/api` matches `/api` and `/api/x`, not `/apix`); `/` when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Methods (upper case); any when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// One caller. Exactly one field is set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    /// A mesh identity, `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`, or every identity of a
    /// namespace, `spiffe://<trust-domain>/ns/<ns>/*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// `true`: callers without a mesh identity (plaintext, on a permissive port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unauthenticated: Option<bool>,
    /// Callers whose address is in this CIDR (`10.0.0.0/8`, `fd00::/8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
}

/// `MeshConfig.spec.authorization`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshAuthorization {
    /// What a request gets on a port no `allow` policy covers. Default `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<AuthzAction>,
}

/// A parsed `from[].identity`: one identity, or every identity of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentityPattern {
    /// Exactly this SPIFFE ID.
    Exact(String),
    /// Every service account of a namespace: the ID up to and including `/ns/<ns>/`.
    Namespace(String),
}

impl IdentityPattern {
    /// Parses `spiffe://<td>/ns/<ns>/sa/<sa>` or `spiffe://<td>/ns/<ns>/*`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "must be spiffe://<trust-domain>/ns/<namespace>/sa/<service-account> or spiffe://<trust-domain>/ns/<namespace>/*, got {s:?}"
            )
        };
        let rest = s.strip_prefix("spiffe://").ok_or_else(bad)?;
        let (td, path) = rest.split_once('/').ok_or_else(bad)?;
        let parts: Vec<&str> = path.split('/').collect();
        let label = super::validate::is_dns_label;
        let td_ok = !td.is_empty() && td.split('.').all(label);
        match parts.as_slice() {
            ["ns", ns, "sa", sa] if td_ok && label(ns) && label(sa) => Ok(Self::Exact(s.into())),
            ["ns", ns, "*"] if td_ok && label(ns) => {
                Ok(Self::Namespace(s.trim_end_matches('*').into()))
            }
            _ => Err(bad()),
        }
    }

    /// Whether the identity `id` (a SPIFFE ID as text) matches.
    pub fn matches(&self, id: &str) -> bool {
        match self {
            Self::Exact(e) => e == id,
            Self::Namespace(prefix) => id
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with("sa/")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_patterns_are_exact_or_a_whole_namespace() {
        let web = IdentityPattern::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        assert!(web.matches("spiffe://cluster.local/ns/shop/sa/web"));
        assert!(!web.matches("spiffe://cluster.local/ns/shop/sa/web2"));
        let shop = IdentityPattern::parse("spiffe://cluster.local/ns/shop/*").unwrap();
        assert!(shop.matches("spiffe://cluster.local/ns/shop/sa/web"));
        assert!(!shop.matches("spiffe://cluster.local/ns/shopping/sa/web"));
        assert!(!shop.matches("spiffe://other.local/ns/shop/sa/web"));
        for bad in [
            "spiffe://cluster.local/ns/shop",
            "spiffe://cluster.local/ns/*",
            "spiffe://cluster.local/ns/shop/sa/*",
            "spiffe://cluster.local/ns/Shop/sa/web",
            "http://cluster.local/ns/shop/sa/web",
            "spiffe:///ns/shop/sa/web",
        ] {
            assert!(IdentityPattern::parse(bad).is_err(), "{bad}");
        }
    }
}

//! SPIFFE IDs of workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//! The only form the mesh issues or accepts; anything else in a certificate is not a mesh
//! identity.

use std::fmt;
use std::str::FromStr;

/// A workload identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a workload SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    /// It does not start with `spiffe://`.
    #[error("`{0}` is not a SPIFFE ID: it must start with spiffe://")]
    Scheme(String),
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error(
        "`{0}` is not a workload identity: the form is spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    Shape(String),
    /// The trust domain has characters SPIFFE does not allow.
    #[error("trust domain `{0}` may hold only lowercase letters, digits, `.`, `-` and `_`")]
    TrustDomain(String),
    /// A namespace or service account is not a Kubernetes name.
    #[error(
        "{what} `{value}` is not a Kubernetes name (lowercase letters, digits and `-`, at most 63, starting and ending alphanumeric)"
    )]
    Name {
        /// `namespace` or `service account`.
        what: &'static str,
        /// The value.
        value: String,
    },
}

/// Whether `td` is a valid SPIFFE trust domain name.
pub fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

/// Whether `s` is a DNS-1123 label, the form of Kubernetes namespace and service-account
/// names.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl SpiffeId {
    /// The identity of `service_account` in `namespace`, checked.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeError> {
        if !valid_trust_domain(trust_domain) {
            return Err(SpiffeError::TrustDomain(trust_domain.into()));
        }
        for (what, value) in [
            ("namespace", namespace),
            ("service account", service_account),
        ] {
            if !valid_name(value) {
                return Err(SpiffeError::Name {
                    what,
                    value: value.into(),
                });
            }
        }
        Ok(Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    fn from_str(s: &str) -> Result<Self, SpiffeError> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeError::Scheme(s.into()))?;
        let mut parts = rest.split('/');
        let shape = || SpiffeError::Shape(s.into());
        let (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(shape());
        };
        Self::new(td, ns, sa)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_workload_identity() {
        let s = "spiffe://cluster.local/ns/shop/sa/web";
        let id: SpiffeId = s.parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "web");
        assert_eq!(id.to_string(), s);
    }

    #[test]
    fn refuses_what_is_not_a_workload_identity() {
        for bad in [
            "http://cluster.local/ns/shop/sa/web",
            "spiffe://cluster.local/ns/shop",
            "spiffe://cluster.local/ns/shop/sa/web/extra",
            "spiffe://cluster.local/ns/shop/sa/",
            "spiffe://cluster.local/sa/web/ns/shop",
            "spiffe://Cluster.Local/ns/shop/sa/web",
            "spiffe:///ns/shop/sa/web",
            "spiffe://cluster.local/ns/Shop/sa/web",
            "spiffe://cluster.local/ns/-shop/sa/web",
            "spiffe://cluster.local/ns/shop/sa/web%2f..",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn errors_say_which_part_is_wrong() {
        let e = "spiffe://td/ns/shop/sa/Web"
            .parse::<SpiffeId>()
            .unwrap_err();
        assert!(e.to_string().contains("service account `Web`"), "{e}");
    }
}

//! Authorization: whether a caller may reach this workload's port (and HTTP route), decided
//! from the snapshot's AuthorizationPolicies and the MeshConfig default, and every decision
//! kept explainable ([`Journal`], `/authz`).
//!
//! The rules, in order: on a port where a policy names HTTP routes, a connection that is
//! not HTTP is denied; a matching `deny` policy denies; on a port some `allow` policy
//! covers, a request must match one of them; on any other port the mesh default decides.
//! Allow policies are scoped by port, not by workload (Istio denies every port of a
//! workload once one `allow` policy selects it; here a port no `allow` policy covers keeps
//! the mesh default, as a Linkerd Server without an authorization does not).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bulwark_api::policy::{AuthzAction, Document, IdentityPattern};
use ipnet::IpNet;
use serde::Serialize;

use crate::lock::lock;

/// Decisions kept for `/authz`.
pub const JOURNAL_LEN: usize = 128;

/// A caller, as one source of a policy can name it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A mesh identity or every identity of a namespace.
    Identity(IdentityPattern),
    /// No mesh identity.
    Unauthenticated,
    /// An address range.
    Cidr(IpNet),
}

impl Source {
    fn matches(&self, r: &Request<'_>) -> bool {
        match self {
            Source::Identity(p) => r.client.is_some_and(|c| p.matches(c)),
            Source::Unauthenticated => r.client.is_none(),
            Source::Cidr(net) => net.contains(&r.peer),
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Identity(IdentityPattern::Exact(id)) => format!("identity {id}"),
            Source::Identity(IdentityPattern::Namespace(ns)) => format!("identity {ns}*"),
            Source::Unauthenticated => "unauthenticated".into(),
            Source::Cidr(net) => format!("cidr {net}"),
        }
    }
}

/// One HTTP route of a policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// Segment-wise path prefix.
    pub path_prefix: String,
    /// Methods; any when empty.
    pub methods: Vec<String>,
}

impl Route {
    fn matches(&self, method: &str, path: &str) -> bool {
        let prefix = self.path_prefix.trim_end_matches('/');
        let on_path = prefix.is_empty()
            || path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'));
        on_path && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }
}

/// One AuthorizationPolicy, compiled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// `namespace/name`.
    pub name: String,
    /// The target workload's namespace and name.
    pub workload: (String, String),
    /// Allow or deny.
    pub action: AuthzAction,
    /// Ports covered; all when empty.
    pub ports: Vec<u16>,
    /// Routes covered; every request when empty.
    pub http: Vec<Route>,
    /// Callers named; everyone when empty.
    pub from: Vec<Source>,
}

impl Policy {
    /// The index of the first source matching `r` (`None` when `from` is empty: everyone).
    fn source_of(&self, r: &Request<'_>) -> Option<Option<usize>> {
        if self.from.is_empty() {
            return Some(None);
        }
        self.from.iter().position(|s| s.matches(r)).map(Some)
    }

    fn on_route(&self, r: &Request<'_>) -> bool {
        match r.http {
            _ if self.http.is_empty() => true,
            Some((method, path)) => self.http.iter().any(|h| h.matches(method, path)),
            None => false,
        }
    }

    /// What decided, for the journal: the source that matched.
    fn rule(&self, source: Option<usize>) -> String {
        match source {
            Some(i) => format!("from[{i}] {}", self.from[i].describe()),
            None => "every caller".into(),
        }
    }
}

/// The policies in scope and the mesh default.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Authz {
    /// What a port no `allow` policy covers gets.
    pub default: AuthzAction,
    /// Every AuthorizationPolicy in scope.
    pub policies: Vec<Policy>,
}

/// What is asked.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The workload's port (the original destination's).
    pub port: u16,
    /// The caller's address.
    pub peer: IpAddr,
    /// The caller's mesh identity, if it proved one.
    pub client: Option<&'a str>,
    /// Method and path, for an HTTP request; `None` for a connection that is not HTTP.
    pub http: Option<(&'a str, &'a str)>,
}

/// Why a decision went the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A `deny` policy matched.
    DenyRule,
    /// An `allow` policy matched.
    AllowRule,
    /// `allow` policies cover the port and none matched.
    NoAllowMatched,
    /// No `allow` policy covers the port: the mesh default.
    MeshDefault,
    /// Not HTTP, on a port where a policy names HTTP routes.
    NotHttp,
}

impl Reason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DenyRule => "deny_rule",
            Reason::AllowRule => "allow_rule",
            Reason::NoAllowMatched => "no_allow_matched",
            Reason::MeshDefault => "mesh_default",
            Reason::NotHttp => "not_http",
        }
    }
}

/// A decision and what made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the caller gets through.
    pub allowed: bool,
    /// The policy that decided (`namespace/name`), or `default`.
    pub policy: String,
    /// Why.
    pub reason: Reason,
    /// The rule within it (which source matched), for people.
    pub rule: String,
}

impl Authz {
    /// The policies among `documents` and the MeshConfig's default.
    pub fn from_documents(documents: &[Document]) -> Self {
        let mut authz = Self::default();
        for d in documents {
            match d {
                Document::MeshConfig(m) => {
                    authz.default = m
                        .spec
                        .authorization
                        .as_ref()
                        .and_then(|a| a.default)
                        .unwrap_or_default();
                }
                Document::AuthorizationPolicy(p) => authz.policies.push(compile(p)),
                _ => {}
            }
        }
        authz
    }

    /// Whether a request to `workload` could be anything but allowed by default: when not,
    /// nothing needs deciding or recording.
    pub fn applies(&self, workload: (&str, &str)) -> bool {
        self.default == AuthzAction::Deny
            || self
                .policies
                .iter()
                .any(|p| (p.workload.0.as_str(), p.workload.1.as_str()) == workload)
    }

    /// Decides `r` for `workload` (namespace, name).
    pub fn decide(&self, workload: (&str, &str), r: &Request<'_>) -> Decision {
        let applicable: Vec<&Policy> = self
            .policies
            .iter()
            .filter(|p| (p.workload.0.as_str(), p.workload.1.as_str()) == workload)
            .filter(|p| p.ports.is_empty() || p.ports.contains(&r.port))
            .collect();
        let deny = |policy: &str, reason, rule: String| Decision {
            allowed: false,
            policy: policy.into(),
            reason,
            rule,
        };
        if r.http.is_none()
            && let Some(p) = applicable.iter().find(|p| !p.http.is_empty())
        {
            let rule = format!("port {} has HTTP routes", r.port);
            return deny(&p.name, Reason::NotHttp, rule);
        }
        for p in applicable.iter().filter(|p| p.action == AuthzAction::Deny) {
            if let Some(source) = p.source_of(r).filter(|_| p.on_route(r)) {
                return deny(&p.name, Reason::DenyRule, p.rule(source));
            }
        }
        let mut allows = applicable
            .iter()
            .filter(|p| p.action == AuthzAction::Allow)
            .peekable();
        if allows.peek().is_some() {
            for p in allows {
                if let Some(source) = p.source_of(r).filter(|_| p.on_route(r)) {
                    return Decision {
                        allowed: true,
                        policy: p.name.clone(),
                        reason: Reason::AllowRule,
                        rule: p.rule(source),
                    };
                }
            }
            let rule = format!("no allow policy on port {} matched", r.port);
            return deny("default", Reason::NoAllowMatched, rule);
        }
        Decision {
            allowed: self.default == AuthzAction::Allow,
            policy: "default".into(),
            reason: Reason::MeshDefault,
            rule: format!("mesh default {:?}", self.default).to_lowercase(),
        }
    }
}

fn compile(p: &bulwark_api::policy::AuthorizationPolicy) -> Policy {
    let s = &p.spec;
    // The documents were validated: a source that does not parse cannot be here, and is
    // dropped rather than widened if it somehow is.
    let from = s
        .from
        .iter()
        .filter_map(|f| {
            if let Some(id) = &f.identity {
                IdentityPattern::parse(id).ok().map(Source::Identity)
            } else if f.unauthenticated == Some(true) {
                Some(Source::Unauthenticated)
            } else {
                f.cidr.as_deref()?.parse().ok().map(Source::Cidr)
            }
        })
        .collect();
    Policy {
        name: format!("{}/{}", p.metadata.namespace(), p.metadata.name),
        workload: (p.metadata.namespace().into(), s.target.workload.clone()),
        action: s.action,
        ports: s.ports.clone(),
        http: s
            .http
            .iter()
            .map(|h| Route {
                path_prefix: h.path_prefix.clone().unwrap_or_else(|| "/".into()),
                methods: h.methods.clone(),
            })
            .collect(),
        from,
    }
}

/// One decision, as `/authz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// When, Unix milliseconds.
    pub at_unix_ms: u64,
    /// The caller's address.
    pub peer: SocketAddr,
    /// The caller's mesh identity (none: not mesh TLS).
    pub client: Option<String>,
    /// The port.
    pub port: u16,
    /// `METHOD /path` for HTTP; none for a connection.
    pub route: Option<String>,
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
}

/// Recent decisions and the denial counters.
#[derive(Debug, Default)]
pub struct Journal {
    recent: Mutex<VecDeque<Entry>>,
    denied: Mutex<BTreeMap<(String, &'static str), u64>>,
    allowed: Mutex<BTreeMap<String, u64>>,
}

impl Journal {
    /// Records a decision; a denial is logged too.
    pub fn record(&self, peer: SocketAddr, r: &Request<'_>, d: &Decision) {
        let route = r.http.map(|(m, p)| format!("{m} {p}"));
        if d.allowed {
            *lock(&self.allowed).entry(d.policy.clone()).or_default() += 1;
        } else {
            *lock(&self.denied)
                .entry((d.policy.clone(), d.reason.as_str()))
                .or_default() += 1;
            tracing::info!(
                %peer,
                client = r.client.unwrap_or("-"),
                port = r.port,
                route = route.as_deref().unwrap_or("-"),
                policy = %d.policy,
                reason = d.reason.as_str(),
                rule = %d.rule,
                "denied by authorization"
            );
        }
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_millis() as u64);
        let mut recent = lock(&self.recent);
        if recent.len() >= JOURNAL_LEN {
            recent.pop_front();
        }
        recent.push_back(Entry {
            at_unix_ms,
            peer,
            client: r.client.map(str::to_string),
            port: r.port,
            route,
            decision: d.clone(),
        });
    }

    /// The recent decisions, newest first.
    pub fn recent(&self) -> Vec<Entry> {
        lock(&self.recent).iter().rev().cloned().collect()
    }

    /// Appends the authorization counters in Prometheus text form.
    pub fn render(&self, o: &mut String) {
        o.push_str(
            "# HELP bulwark_authz_denied_total Inbound requests and connections denied by authorization, by the policy that decided (or default) and why.\n\
             # TYPE bulwark_authz_denied_total counter\n",
        );
        for ((policy, reason), n) in lock(&self.denied).iter() {
            let _ = writeln!(
                o,
                "bulwark_authz_denied_total{{policy=\"{policy}\",reason=\"{reason}\"}} {n}"
            );
        }
        o.push_str(
            "# HELP bulwark_authz_allowed_total Inbound requests and connections a policy (or a deny default's absence) decided to allow, by policy.\n\
             # TYPE bulwark_authz_allowed_total counter\n",
        );
        for (policy, n) in lock(&self.allowed).iter() {
            let _ = writeln!(o, "bulwark_authz_allowed_total{{policy=\"{policy}\"}} {n}");
        }
    }
}

#[cfg(test)]
mod tests;

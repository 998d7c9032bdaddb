//! Hostname endpoints: resolved with hickory-resolver and resolved again when the answer's
//! TTL runs out (within a floor and a ceiling). A failed lookup keeps the last good
//! addresses and is retried with backoff, so a DNS outage does not empty a Backend.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio_util::sync::CancellationToken;

use super::policy::{EndpointSpec, Target};
use super::target::TargetState;
use crate::lock::lock;

/// Addresses kept from one name's answer: each is an endpoint with its own state, pool and
/// metric series, and `--max-policy-endpoints` counts a hostname once. A UDP answer holds
/// a few hundred at most; a larger one over TCP is cut to this.
pub const MAX_ADDRESSES_PER_NAME: usize = 256;

/// Why the resolver could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up DNS resolution: {0}")]
pub struct ResolverError(String);

/// A lookup that failed.
#[derive(Debug, thiserror::Error)]
#[error("{host}: {reason}")]
pub struct LookupError {
    /// The hostname.
    pub host: String,
    /// What the resolver said.
    pub reason: String,
}

/// The proxy's DNS client.
#[derive(Debug, Clone)]
pub struct Resolver {
    inner: TokioResolver,
    /// Shortest time between two lookups of a name, whatever its TTL.
    pub min_refresh: Duration,
    /// Longest time a lookup is trusted, whatever its TTL.
    pub max_refresh: Duration,
}

impl Resolver {
    /// A resolver using `servers` (port 53), or the system's configuration
    /// (`/etc/resolv.conf`) when the list is empty.
    pub fn new(
        servers: &[IpAddr],
        min_refresh: Duration,
        max_refresh: Duration,
    ) -> Result<Self, ResolverError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| ResolverError(format!("reading the system configuration: {e}")))?
        } else {
            let config = ResolverConfig::from_parts(
                None,
                Vec::new(),
                servers
                    .iter()
                    .map(|ip| NameServerConfig::udp_and_tcp(*ip))
                    .collect(),
            );
            TokioResolver::builder_with_config(config, provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = Duration::from_secs(2);
        // The refresh loop owns the timing; the cache would only serve stale answers.
        opts.cache_size = 0;
        let inner = builder.build().map_err(|e| ResolverError(e.to_string()))?;
        Ok(Self {
            inner,
            min_refresh,
            max_refresh,
        })
    }

    /// The addresses of `host` with `port`, and when to look again.
    pub async fn lookup(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(Vec<SocketAddr>, Instant), LookupError> {
        let err = |reason: String| LookupError {
            host: host.to_string(),
            reason,
        };
        // A trailing dot stops the search-domain expansion: endpoint names are absolute.
        let fqdn = if host.ends_with('.') {
            host.to_string()
        } else {
            format!("{host}.")
        };
        let answer = self
            .inner
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut addrs: Vec<SocketAddr> =
            answer.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(err("no A or AAAA records".into()));
        }
        if addrs.len() > MAX_ADDRESSES_PER_NAME {
            // Sorted first, so the same answer keeps the same endpoints on every refresh.
            tracing::warn!(
                host,
                addresses = addrs.len(),
                kept = MAX_ADDRESSES_PER_NAME,
                "DNS answer larger than the proxy keeps per name"
            );
            addrs.truncate(MAX_ADDRESSES_PER_NAME);
        }
        let now = Instant::now();
        // The resolver's answer carries a std instant: the one place the proxy reads that
        // clock, to turn the answer's validity into a TTL.
        #[allow(clippy::disallowed_types)]
        let ttl = answer
            .valid_until()
            .saturating_duration_since(std::time::Instant::now());
        Ok((addrs, now + ttl.clamp(self.min_refresh, self.max_refresh)))
    }
}

/// Starts (or restarts) the refresh of `state`'s hostname endpoints; `resolver` is `None`
/// when none could be built.
pub fn start(resolver: Option<Resolver>, state: &Arc<TargetState>) {
    let specs = specs(&state.target.load());
    if let Some(old) = lock(&state.dns).take() {
        old.cancel();
    }
    if specs.is_empty() {
        return;
    }
    let Some(resolver) = resolver else {
        tracing::error!(target = %state.target.load().key, "hostname endpoints but no DNS resolver; they are skipped");
        return;
    };
    let token = CancellationToken::new();
    *lock(&state.dns) = Some(token.clone());
    for (host, port) in specs {
        let weak = Arc::downgrade(state);
        let (resolver, token) = (resolver.clone(), token.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = refresh(resolver, host, port, weak) => {}
                _ = token.cancelled() => {}
            }
        });
    }
}

/// The hostname endpoints of `t`.
pub fn specs(t: &Target) -> Vec<(String, u16)> {
    t.endpoints
        .iter()
        .filter_map(|e| match e {
            EndpointSpec::Dns { host, port } => Some((host.clone(), *port)),
            EndpointSpec::Addr(_) => None,
        })
        .collect()
}

/// Resolves `host` for as long as its target lives: again when the TTL runs out, with
/// backoff (2 s doubling to 30 s) while lookups fail, keeping the last good answer.
async fn refresh(resolver: Resolver, host: String, port: u16, state: Weak<TargetState>) {
    let mut failures = 0u32;
    loop {
        let result = resolver.lookup(&host, port).await;
        let Some(s) = state.upgrade() else { return };
        let key = s.target.load().key.clone();
        let wait = match result {
            Ok((addrs, until)) => {
                failures = 0;
                if s.set_resolved(&host, port, addrs.clone()) {
                    tracing::info!(target = %key, %host, addresses = ?addrs, "hostname endpoint resolved");
                }
                until.saturating_duration_since(Instant::now())
            }
            Err(e) => {
                failures += 1;
                s.metrics
                    .count(crate::metrics::Resilience::DnsFailures, &key, "lookup");
                tracing::warn!(target = %key, error = %e, "DNS lookup failed; keeping the last addresses");
                Duration::from_secs(1 << failures.min(5)).min(Duration::from_secs(30))
            }
        };
        drop(s);
        tokio::time::sleep(wait.max(resolver.min_refresh)).await;
    }
}

//! Inbound requests by caller: whether they came over mesh TLS and the client's identity,
//! bounded in the identities it names. A connection looks its counter up once; each of its
//! requests then costs one atomic increment.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::lock::lock;

/// Most distinct client identities labelled; past it, requests count under `other`.
pub const MAX_CLIENT_IDS: usize = 100;

/// Counters by (mesh TLS, client identity).
#[derive(Debug, Default)]
pub struct Callers {
    counts: Mutex<BTreeMap<(bool, String), Arc<AtomicU64>>>,
}

impl Callers {
    /// The counter of requests from `client` (none: not mesh TLS).
    pub fn counter(&self, client: Option<&str>) -> Arc<AtomicU64> {
        let tls = client.is_some();
        let id = client.unwrap_or_default();
        let mut counts = lock(&self.counts);
        if let Some(c) = counts.get(&(tls, id.to_string())) {
            return c.clone();
        }
        let label = if counts.len() < MAX_CLIENT_IDS {
            id
        } else {
            "other"
        };
        counts.entry((tls, label.to_string())).or_default().clone()
    }

    /// Appends the counters in Prometheus text form.
    pub fn render(&self, o: &mut String) {
        o.push_str(
            "# HELP bulwark_inbound_requests_total Inbound HTTP requests by whether they came over mesh TLS and the client's verified identity (empty without mesh TLS; at most 100 identities, then other).\n\
             # TYPE bulwark_inbound_requests_total counter\n",
        );
        for ((tls, id), n) in lock(&self.counts).iter() {
            let _ = writeln!(
                o,
                "bulwark_inbound_requests_total{{tls=\"{tls}\",client_id=\"{}\"}} {}",
                crate::metrics::encode::escape(id),
                n.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_bounded_and_plaintext_is_its_own_series() {
        let c = Callers::default();
        c.counter(None).fetch_add(1, Ordering::Relaxed);
        for i in 0..MAX_CLIENT_IDS + 10 {
            let id = format!("spiffe://cluster.local/ns/shop/sa/a{i}");
            c.counter(Some(&id)).fetch_add(1, Ordering::Relaxed);
        }
        let mut text = String::new();
        c.render(&mut text);
        assert!(
            text.contains("bulwark_inbound_requests_total{tls=\"false\",client_id=\"\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("client_id=\"spiffe://cluster.local/ns/shop/sa/a0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bulwark_inbound_requests_total{tls=\"true\",client_id=\"other\"} 11"),
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| !l.starts_with('#')).count(),
            MAX_CLIENT_IDS + 1
        );
    }
}

//! Destinations the proxy's traffic went to that its snapshot had no target for, noted for
//! the control plane (when it discovers Services) so it can add the Services they name to
//! this proxy's scope. The first connections to such a Service go to the address the app
//! dialled, as before; once the snapshot with the Service arrives they are balanced. Bounded:
//! at most [`MAX_NOTED`] destinations are ever noted.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::RwLock;

use tokio::sync::Notify;

/// The most destinations noted: a proxy calling more distinct unknown destinations than
/// this (scanners, a client of many external hosts) stops reporting new ones.
pub const MAX_NOTED: usize = 1024;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Interest {
    noted: RwLock<Noted>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Noted {
    addrs: HashSet<SocketAddr>,
    hosts: HashSet<String>,
    /// Destinations in the order noted, as reported.
    order: Vec<Destination>,
}

#[derive(Debug)]
enum Destination {
    Addr(SocketAddr),
    Host(String),
}

impl Noted {
    fn full(&self) -> bool {
        self.order.len() >= MAX_NOTED
    }

    /// Whether there is nothing to add: the common case on the request path, decided under
    /// a read lock and without allocating.
    fn knows(&self, dst: SocketAddr, host: Option<&str>) -> bool {
        self.full() || (self.addrs.contains(&dst) && host.is_none_or(|h| self.hosts.contains(h)))
    }
}

impl Interest {
    /// Notes a destination with no target: its address and the authority's host name.
    pub fn note(&self, dst: SocketAddr, authority: Option<&str>) {
        let host = authority
            .map(host_of)
            .filter(|h| !h.is_empty() && h.parse::<std::net::IpAddr>().is_err());
        let lower;
        let host = match host {
            Some(h) if h.bytes().any(|b| b.is_ascii_uppercase()) => {
                lower = h.to_ascii_lowercase();
                Some(lower.as_str())
            }
            h => h,
        };
        if self
            .noted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .knows(dst, host)
        {
            return;
        }
        let mut n = self.noted.write().unwrap_or_else(|e| e.into_inner());
        let mut added = false;
        if !n.full() && n.addrs.insert(dst) {
            n.order.push(Destination::Addr(dst));
            added = true;
        }
        if let Some(h) = host
            && !n.full()
            && !n.hosts.contains(h)
        {
            n.hosts.insert(h.to_string());
            n.order.push(Destination::Host(h.to_string()));
            added = true;
        }
        drop(n);
        if added {
            self.changed.notify_one();
        }
    }

    /// The noted destinations from index `from` on (addresses, hosts), and the next index.
    pub fn since(&self, from: usize) -> (Vec<String>, Vec<String>, usize) {
        let n = self.noted.read().unwrap_or_else(|e| e.into_inner());
        let (mut addrs, mut hosts) = (Vec::new(), Vec::new());
        for d in n.order.iter().skip(from) {
            match d {
                Destination::Addr(a) => addrs.push(a.to_string()),
                Destination::Host(h) => hosts.push(h.clone()),
            }
        }
        (addrs, hosts, n.order.len())
    }

    /// Resolves when something new was noted.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

/// The host of an HTTP authority (`host:port`, `[v6]:port` or a bare host), without a
/// trailing dot.
fn host_of(authority: &str) -> &str {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) if !h.contains(':') => h,
            _ => authority,
        }
    };
    host.trim_end_matches('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_destination_is_noted_once_and_the_set_is_bounded() {
        let i = Interest::default();
        let a: SocketAddr = "10.96.0.20:80".parse().unwrap();
        i.note(a, Some("API.billing.svc:80"));
        i.note(a, Some("api.billing.svc"));
        i.note("10.96.0.21:443".parse().unwrap(), Some("10.96.0.21"));
        let (addrs, hosts, next) = i.since(0);
        assert_eq!(addrs, ["10.96.0.20:80", "10.96.0.21:443"]);
        assert_eq!(hosts, ["api.billing.svc"], "an IP authority is not a host");
        assert_eq!(i.since(next).2, next);
        for n in 0..(MAX_NOTED as u32 * 2) {
            i.note(SocketAddr::from((std::net::Ipv4Addr::from(n), 80)), None);
        }
        assert_eq!(i.since(0).2, MAX_NOTED);
    }
}

//! Proving the rules work, from the init container that wrote them (Istio's validation
//! container does the same): a connection made by this process, which is not the proxy's
//! UID, to a sentinel address must land on a listener bound where the outbound rule sends
//! it, with the sentinel as its original destination. The proxy then needs no privilege to
//! know its redirection is in place: the pod does not start unless this passed.
//!
//! The sentinel is the pod's own address on [`SENTINEL_PORT`]: if the rules were missing,
//! the connection would go to the pod itself and be refused, so nothing ever leaves the pod.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::{InitSpec, OUTBOUND_CHAIN};
use crate::transport::orig_dst;

/// The port the validation connects to on the pod's own address.
pub const SENTINEL_PORT: u16 = 15_999;

/// How long the connection may take to arrive.
pub const VALIDATE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the validation found.
#[derive(Debug, PartialEq, Eq)]
pub enum Validation {
    /// A connection to the sentinel arrived on the outbound listener's address.
    Verified(SocketAddr),
    /// It could not be tried, and why.
    Skipped(String),
}

/// Why the rules do not work.
#[derive(Debug, thiserror::Error)]
#[error(
    "outbound redirection does not work: a connection to {sentinel} did not reach {listener} ({reason}); the rule that sends it there is `-A {OUTBOUND_CHAIN} -p tcp -j REDIRECT --to-ports {port}`, reached from `-A OUTPUT -p tcp -j {OUTBOUND_CHAIN}` in the nat table"
)]
pub struct ValidateError {
    sentinel: SocketAddr,
    listener: SocketAddr,
    port: u16,
    reason: String,
}

/// The sentinel for `pod_ip`, unless the rules deliberately leave it alone (a skipped
/// port or network), in which case there is nothing to prove with it.
pub fn sentinel(spec: &InitSpec, pod_ip: IpAddr) -> Result<SocketAddr, String> {
    if spec
        .skip_outbound_ports
        .iter()
        .any(|p| (p.start..=p.end).contains(&SENTINEL_PORT))
    {
        return Err(format!("port {SENTINEL_PORT} is a skipped outbound port"));
    }
    if spec.skip_outbound_cidrs.iter().any(|n| n.contains(&pod_ip)) {
        return Err(format!(
            "the pod's address {pod_ip} is in a skipped outbound network"
        ));
    }
    Ok(SocketAddr::new(pod_ip, SENTINEL_PORT))
}

/// The pod's first address of `family` on an interface other than loopback.
pub fn pod_address(v6: bool) -> Option<IpAddr> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    addrs
        .filter(|a| !a.interface_name.starts_with("lo"))
        .filter_map(|a| {
            let sa = a.address?;
            if v6 {
                sa.as_sockaddr_in6()
                    .map(|s| IpAddr::V6(s.ip()))
                    .filter(|ip| !ip.is_loopback() && !is_link_local(ip))
            } else {
                sa.as_sockaddr_in().map(|s| IpAddr::V4(s.ip()))
            }
        })
        .next()
}

fn is_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// Connects to the sentinel for `pod_ip` and checks the connection lands on a listener
/// bound where REDIRECT sends locally made connections (loopback, the outbound port).
pub fn validate(spec: &InitSpec, pod_ip: IpAddr) -> Result<Validation, ValidateError> {
    let sentinel = match sentinel(spec, pod_ip) {
        Ok(s) => s,
        Err(why) => return Ok(Validation::Skipped(why)),
    };
    let loopback = match pod_ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let at = SocketAddr::new(loopback, spec.outbound_port);
    let listener = match TcpListener::bind(at) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            return Ok(Validation::Skipped(format!(
                "{at} is in use (the proxy already runs)"
            )));
        }
        Err(e) => {
            return Ok(Validation::Skipped(format!(
                "could not listen on {at}: {e}"
            )));
        }
    };
    let fail = |reason: String| ValidateError {
        sentinel,
        listener: at,
        port: spec.outbound_port,
        reason,
    };
    let _client = TcpStream::connect_timeout(&sentinel, VALIDATE_TIMEOUT)
        .map_err(|e| fail(format!("connect: {e}")))?;
    let arrived =
        accept_within(&listener, VALIDATE_TIMEOUT).map_err(|e| fail(format!("accept: {e}")))?;
    match orig_dst::original_dst_blocking(&arrived) {
        Ok(dst) if dst == sentinel => Ok(Validation::Verified(sentinel)),
        Ok(dst) => Err(fail(format!("it arrived for {dst}"))),
        Err(e) => Err(fail(format!(
            "it arrived without an original destination: {e}"
        ))),
    }
}

fn accept_within(listener: &TcpListener, timeout: Duration) -> io::Result<TcpStream> {
    // Linux applies SO_RCVTIMEO to accept(2).
    socket2::SockRef::from(listener).set_read_timeout(Some(timeout))?;
    match listener.accept() {
        Ok((s, _)) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("nothing arrived within {timeout:?}"),
        )),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::PortRange;

    fn spec() -> InitSpec {
        InitSpec {
            skip_inbound_ports: vec![],
            skip_outbound_ports: vec![],
            skip_outbound_cidrs: vec![],
            ..crate::init::tests::spec()
        }
    }

    #[test]
    fn the_sentinel_is_the_pods_own_address_unless_the_rules_skip_it() {
        let ip: IpAddr = "10.77.0.3".parse().unwrap();
        assert_eq!(
            sentinel(&spec(), ip),
            Ok(SocketAddr::new(ip, SENTINEL_PORT))
        );
        let mut s = spec();
        s.skip_outbound_ports = vec![PortRange {
            start: 15_000,
            end: 16_000,
        }];
        assert!(
            sentinel(&s, ip)
                .unwrap_err()
                .contains("skipped outbound port")
        );
        let mut s = spec();
        s.skip_outbound_cidrs = vec!["10.77.0.0/24".parse().unwrap()];
        assert!(
            sentinel(&s, ip)
                .unwrap_err()
                .contains("skipped outbound network")
        );
    }
}

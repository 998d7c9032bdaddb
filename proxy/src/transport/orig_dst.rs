//! Recovers where a redirected connection was going before iptables REDIRECT rewrote it.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

/// Reads `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST` (IPv6) from an accepted socket.
///
/// Fails with `NotFound`-like errors when the connection was not redirected by netfilter
/// (no conntrack entry), which callers treat as "connected to the proxy port directly".
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    of(stream, stream.local_addr()?)
}

/// [`original_dst`] of a blocking socket (the init container's validation).
pub fn original_dst_blocking(stream: &std::net::TcpStream) -> io::Result<SocketAddr> {
    of(stream, stream.local_addr()?)
}

fn of(stream: &impl std::os::fd::AsFd, local: SocketAddr) -> io::Result<SocketAddr> {
    match local {
        SocketAddr::V4(_) => {
            let sa = getsockopt(stream, sockopt::OriginalDst).map_err(io::Error::from)?;
            let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sa.sin_port),
            )))
        }
        SocketAddr::V6(_) => {
            let sa = getsockopt(stream, sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
            let ip = Ipv6Addr::from(sa.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sa.sin6_port),
                sa.sin6_flowinfo,
                sa.sin6_scope_id,
            )))
        }
    }
}

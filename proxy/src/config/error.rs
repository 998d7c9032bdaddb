//! Why a configuration is refused.

use std::net::SocketAddr;

/// A cross-field rule that a configuration breaks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Two listeners on the same address would steal each other's traffic.
    #[error("{a} and {b} are both {addr}: every listener needs its own port")]
    PortClash {
        /// First listener.
        a: &'static str,
        /// Second listener.
        b: &'static str,
        /// The shared address.
        addr: SocketAddr,
    },
    /// Policy from two sources at once.
    #[error("--policy and --control-plane are exclusive: policy comes from one source")]
    TwoPolicySources,
    /// An identity token with no control plane to present it to.
    #[error(
        "--identity-token-file needs --control-plane: the control plane issues the certificate"
    )]
    TokenWithoutControlPlane,
    /// A value of zero would disable a bound that must exist.
    #[error("{field} must be greater than zero")]
    Zero {
        /// The field's flag name.
        field: &'static str,
    },
}

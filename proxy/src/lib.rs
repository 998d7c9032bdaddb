//! Bulwark's per-pod sidecar proxy.
//!
//! # Layout
//!
//! The modules in the order a connection meets them:
//!
//! - [`init`] writes the iptables rules that send the pod's TCP traffic to the proxy
//!   (`bulwark-proxy init`, run once as an init container would).
//! - [`app`] binds the listeners and the admin port, wires the directions, then serves
//!   until drained ([`drain`]).
//! - [`accept`] accepts a redirected connection, recovers its original destination
//!   ([`transport::orig_dst`]), detects its protocol ([`transport::detect`]) and hands it
//!   to its direction.
//! - [`inbound`] and [`outbound`] are the two directions. Each forwards HTTP through the
//!   shared plumbing of [`http`] (server, head rewriting, bodies, proxy-made responses) and
//!   the upstream connection pools of [`pool`], and opaque TCP through [`tcp`]. Outbound
//!   requests for a target with policy run through [`outbound::engine`]; the files of
//!   [`outbound`] are its stages, in request order.
//! - Every proxy-made failure is one [`error::Error`] that says whose fault it was.
//! - [`metrics`] records what happened; [`admin`] serves it with readiness, the config,
//!   the outlier reports and the log filter ([`logging`]).
//!
//! The proxy's mesh identity (its certificate, renewed before expiry, and the trust
//! bundle) lives in [`identity`].
//!
//! Policy arrives as one [`snapshot::Snapshot`], built whole and read per connection from
//! an `ArcSwap`; [`discovery`] keeps it current from the control plane.

pub mod accept;
pub mod admin;
pub mod app;
pub mod config;
pub mod discovery;
pub mod drain;
pub mod error;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod init;
pub mod lock;
pub mod logging;
pub mod map;
pub mod metrics;
pub mod outbound;
pub mod pool;
pub mod random;
pub mod snapshot;
pub mod tcp;
pub mod transport;

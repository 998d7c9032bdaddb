//! Bulwark's per-pod sidecar proxy.
//!
//! # Layout
//!
//! A connection flows through the modules in this order:
//!
//! - [`init`] writes the iptables rules that send the pod's TCP traffic to the proxy
//!   (`bulwark-proxy init`, run once as an init container would).
//! - [`app`] binds the listeners and the admin port, then serves until drained.
//! - [`listener`] accepts a redirected connection, recovers its original destination
//!   ([`transport::orig_dst`]) and detects its protocol ([`transport::detect`]).
//! - [`http`] forwards HTTP/1.1 and HTTP/2 (gRPC, WebSocket upgrades) with hyper, through the
//!   per-endpoint connection pools of [`pool`]; [`transport::copy`] forwards everything else
//!   as opaque TCP.
//! - [`outbound`] applies a target's policy to outbound traffic: [`outbound::route`]
//!   decides the target and its effective policy, [`outbound::call`] runs a request through
//!   balancing ([`outbound::balance`]), timeouts, retries ([`outbound::retry`]), hedging and
//!   outlier detection ([`outbound::outlier`]) with replayable bodies
//!   ([`outbound::replay`]); hostname endpoints come from
//!   [`outbound::resolve`]. Opaque connections to a Backend are balanced as a whole.
//! - [`metrics`] records what happened; [`admin`] serves it with readiness and the config.
//! - [`drain`] is the shutdown signal every task watches.
//!
//! Policy arrives through one [`snapshot::Snapshot`] read per connection from an `ArcSwap`;
//! [`discovery`] keeps it current from the control plane.

pub mod admin;
pub mod app;
pub mod body;
pub mod config;
pub mod discovery;
pub mod drain;
pub mod http;
pub mod init;
pub mod listener;
pub mod metrics;
pub mod outbound;
pub mod pool;
pub mod snapshot;
pub mod transport;

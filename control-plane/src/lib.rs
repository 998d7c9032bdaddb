//! Bulwark's control plane.
//!
//! # Layout
//!
//! - `bulwarkctl` (src/bin/bulwarkctl.rs): the operator CLI. `bulwarkctl validate PATH...`
//!   checks policy files and directories with the same loader the control plane uses
//!   ([`bulwark_api::load`]), so what passes here is what the control plane accepts.
//!
//! The `serve` process (policy source, streaming push with ACK/NACK, identity) builds on
//! these pieces.

pub use bulwark_api as api;

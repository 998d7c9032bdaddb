//! What the control plane and the proxy agree on.
//!
//! # Layout
//!
//! - [`codec`]: the gRPC codec of the services (prost's, with small starting buffers).
//! - [`duration`]: durations written `250ms`, `10s`, `5m` in flags and YAML.
//! - [`endpoint`]: the control plane's address as the binaries' flags take it.
//! - [`policy`]: the policy kinds users write (`apiVersion: bulwark.dev/v1alpha1`): one Rust
//!   type per kind, with serde (unknown fields rejected) and schemars (the CRD schemas are
//!   generated from these types), and [`policy::validate`] for the rules a schema cannot say.
//! - [`load`]: reading policy files and directories into validated documents, with errors
//!   that name the file, line and column, the field path and the reason.
//! - [`locate`]: where each field of a YAML document is, so semantic errors point at it.

pub mod codec;
pub mod crd;
pub mod duration;
pub mod endpoint;
pub mod load;
pub mod locate;
pub mod policy;

/// The wire types and gRPC services (`proto/bulwark/discovery/v1/discovery.proto`). They stop
/// at the API edge: both sides convert to domain types right after receiving.
pub mod wire {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("bulwark.discovery.v1");
}

/// The identity service's wire types (`proto/bulwark/identity/v1/identity.proto`).
pub mod identity_wire {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("bulwark.identity.v1");
}

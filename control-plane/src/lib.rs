//! Bulwark's control plane.
//!
//! # Layout
//!
//! - [`source`]: the policy directory: loaded whole, polled for changes, a change applied
//!   only when every document in it is valid (otherwise the last good policy stays, and the
//!   rejection is recorded with its reasons).
//! - [`state`]: the current policy (one `watch` channel every stream follows) and the
//!   registry of connected proxies with their sent, acknowledged and rejected versions.
//! - [`kubernetes`]: the Kubernetes source: reflectors over the policy CRDs, Services,
//!   EndpointSlices and Pods, turned (purely, in [`kubernetes::view`]) into the documents,
//!   the Services' endpoints and the meshed pods that are served.
//! - [`scope`]: which documents and Services a proxy gets (pure).
//! - [`service`]: the gRPC services: `Discovery.Stream` (Hello, scoped snapshots, ACK/NACK)
//!   and `Admin.Status` (what `bulwarkctl status` prints).
//! - [`admin`]: the HTTP admin port: `/ready` and `/metrics`.
//! - [`ca`]: the mesh's certificate authority (an issuer under the trust anchors) and the
//!   checks a CSR must pass.
//! - [`identity`]: the gRPC `Identity.Certify` service: a token or the current certificate
//!   proves an identity, the CA signs a certificate for exactly it.
//! - [`tls`]: the gRPC listener's TLS, which tells the services who the peer is.
//! - [`inject`]: sidecar injection as a JSON patch on a pod (pure), with the per-pod
//!   `config.bulwark.dev/*` annotations, and uninjection.
//! - [`webhook`]: the admission webhooks over TLS: `/inject` answers pods with that patch,
//!   `/validate` runs `bulwarkctl validate`'s checks on a policy object.
//!
//! `bulwarkctl` (src/bin/bulwarkctl/) validates policy with the same loader and reads
//! `Admin.Status`.

pub mod admin;
pub mod ca;
pub mod identity;
pub mod inject;
pub mod kubernetes;
pub mod scope;
pub mod service;
pub mod source;
pub mod state;
pub mod stream;
pub mod tls;
pub mod token_review;
pub mod webhook;

pub use bulwark_api as api;

//! Mesh identity, shared by the control plane (which issues it) and the proxy (which proves
//! and checks it).
//!
//! # Layout
//!
//! - [`spiffe`]: workload identities, `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
//! - [`csr`]: the proxy's private key and certificate request.
//! - [`token`]: bootstrap tokens that grant one identity, signed by the control plane's key.
//! - [`verify`]: trust bundles, and reading the identity a certificate proves.
//! - [`tls`]: rustls configurations for proxy-to-proxy and proxy-to-control-plane TLS.
//! - [`channel`]: a gRPC channel to the control plane over that TLS.
//! - `testing` (feature `test-util`): a throwaway CA for tests.
//!
//! The crypto provider is ring's: TLS 1.3 with AES-GCM and ChaCha20-Poly1305, X25519 and
//! P-256 key exchange, ECDSA P-256 certificates. It builds from crates.io alone with a C
//! compiler (aws-lc-rs needs a larger C build and brings FIPS and ML-KEM, which a mesh
//! between pods of one cluster does not need yet), and it is what rcgen signs with.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

pub mod channel;
pub mod csr;
pub mod spiffe;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod tls;
pub mod token;
pub mod verify;

pub use spiffe::SpiffeId;

/// ALPN a proxy offers when it carries HTTP/2 to another proxy.
pub const ALPN_H2: &[u8] = b"bulwark.dev/h2";
/// ALPN a proxy offers when it carries HTTP/1 to another proxy.
pub const ALPN_HTTP1: &[u8] = b"bulwark.dev/http1";
/// ALPN a proxy offers when it carries an opaque TCP stream to another proxy.
pub const ALPN_OPAQUE: &[u8] = b"bulwark.dev/opaque";
/// Every mesh ALPN; a ClientHello offering one of these is a mesh connection.
pub const MESH_ALPNS: [&[u8]; 3] = [ALPN_H2, ALPN_HTTP1, ALPN_OPAQUE];
/// What the control plane's gRPC listener negotiates.
pub const ALPN_GRPC: &[u8] = b"h2";

/// The default trust domain, Kubernetes' cluster domain as Istio uses it.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Whether `alpn` is one of the mesh's protocols.
pub fn is_mesh_alpn(alpn: &[u8]) -> bool {
    MESH_ALPNS.contains(&alpn)
}

/// The crypto provider every configuration uses (see the crate documentation).
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A certificate chain (leaf first) with its PKCS#8 private key, ready for rustls.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    pkcs8: Vec<u8>,
) -> Result<Arc<CertifiedKey>, rustls::Error> {
    let key = provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(pkcs8.into()))?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}
